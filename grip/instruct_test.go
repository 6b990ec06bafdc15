package grip

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// hdr builds a header from name, value pairs, repeats allowed.
func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestParseResponseIgnoresResponsesWithoutGrip(t *testing.T) {
	for _, h := range []http.Header{
		hdr("Content-Type", "text/plain"),
		hdr("Content-Type", "application/json", "X-Grip", "1"),
		hdr("Content-Type", "Application/Grip-Instruct"), // compared case-sensitively, as Pushpin
	} {
		in, err := ParseResponse(200, h, []byte("hello"))
		if in != nil || err != nil {
			t.Errorf("%v: got %+v, %v; want nil, nil", h, in, err)
		}
		if IsInstruct(h) {
			t.Errorf("IsInstruct(%v) = true", h)
		}
	}
	for _, h := range []http.Header{
		hdr("grip-channel", "x"), // any Grip-* header, any case
		{"GRIP-STATUS": {"404"}},
		hdr("Content-Type", "application/grip-instruct; charset=utf-8"),
	} {
		if !IsInstruct(h) {
			t.Errorf("IsInstruct(%v) = false", h)
		}
	}
}

// The cases of Pushpin's handler/instructtest.cpp first, then ours.
func TestParseResponse(t *testing.T) {
	tests := []struct {
		name   string
		code   int
		header http.Header
		body   string
		want   Instruct
	}{
		{
			name:   "pushpin noHold: Grip-Channel alone answers now, header stripped",
			code:   200,
			header: hdr("Content-Type", "text/plain", "Grip-Channel", "test"),
			body:   "hello world",
			want: Instruct{Hold: NoHold, Channels: []Channel{{Name: "test"}}, Timeout: DefaultTimeout,
				Response: Response{200, "OK", hdr("Content-Type", "text/plain"), []byte("hello world")}},
		},
		{
			name:   "pushpin noHold: Grip-Status code only",
			code:   200,
			header: hdr("Content-Type", "text/plain", "Grip-Channel", "test", "Grip-Status", "404"),
			body:   "hello world",
			want: Instruct{Channels: []Channel{{Name: "test"}}, Timeout: DefaultTimeout,
				Response: Response{404, "Not Found", hdr("Content-Type", "text/plain"), []byte("hello world")}},
		},
		{
			name:   "pushpin noHold: Grip-Status with reason",
			code:   200,
			header: hdr("Content-Type", "text/plain", "Grip-Channel", "test", "Grip-Status", "404 Nothing To See Here"),
			body:   "hello world",
			want: Instruct{Channels: []Channel{{Name: "test"}}, Timeout: DefaultTimeout,
				Response: Response{404, "Nothing To See Here", hdr("Content-Type", "text/plain"), []byte("hello world")}},
		},
		{
			name:   "pushpin noHold: grip-instruct with a response only",
			code:   200,
			header: hdr("Content-Type", "application/grip-instruct"),
			body:   `{"response":{"code": 200,"headers":{"Content-Type":"text/plain"},"body":"hello world"}}`,
			want: Instruct{Timeout: DefaultTimeout,
				Response: Response{200, "OK", hdr("Content-Type", "text/plain"), []byte("hello world")}},
		},
		{
			name: "pushpin responseHold: repeated and comma-listed channels, timeout, meta",
			code: 200,
			header: hdr("Content-Type", "text/plain", "Grip-Hold", "response", "Grip-Channel", "apple",
				"Grip-Channel", "banana, cherry", "Grip-Timeout", "120", "Grip-Set-Meta", "foo=bar, bar=baz"),
			body: "hello world",
			want: Instruct{Hold: ResponseHold, Channels: []Channel{{Name: "apple"}, {Name: "banana"}, {Name: "cherry"}},
				Timeout: 120 * time.Second, Meta: map[string]string{"foo": "bar", "bar": "baz"},
				Response: Response{200, "OK", hdr("Content-Type", "text/plain"), []byte("hello world")}},
		},
		{
			name:   "pushpin responseHold: grip-instruct",
			code:   200,
			header: hdr("Content-Type", "application/grip-instruct"),
			body: `{"hold":{"mode":"response","channels":[{"name":"test"}],"timeout":120,"meta":{"foo":"bar","bar":"baz"}},` +
				`"response":{"code": 200,"headers":{"Content-Type":"text/plain"},"body":"hello world"}}`,
			want: Instruct{Hold: ResponseHold, Channels: []Channel{{Name: "test"}}, Timeout: 120 * time.Second,
				Meta:     map[string]string{"foo": "bar", "bar": "baz"},
				Response: Response{200, "OK", hdr("Content-Type", "text/plain"), []byte("hello world")}},
		},
		{
			name: "pushpin responseHoldChannelParams: prev-id and filters",
			code: 200,
			header: hdr("Content-Type", "text/plain", "Grip-Hold", "response",
				"Grip-Channel", "apple; prev-id=item1; filter=f1",
				"Grip-Channel", "banana; filter=f2, cherry; filter=f1; filter=f2"),
			body: "hello world",
			want: Instruct{Hold: ResponseHold, Timeout: DefaultTimeout, Channels: []Channel{
				{Name: "apple", PrevID: "item1", Filters: []string{"f1"}},
				{Name: "banana", Filters: []string{"f2"}},
				{Name: "cherry", Filters: []string{"f1", "f2"}}},
				Response: Response{200, "OK", hdr("Content-Type", "text/plain"), []byte("hello world")}},
		},
		{
			name:   "pushpin responseHoldChannelParams: grip-instruct",
			code:   200,
			header: hdr("Content-Type", "application/grip-instruct"),
			body: `{"hold":{"mode":"response","channels":[{"name":"apple","prev-id":"item1","filters":["f1"]},` +
				`{"name":"banana","filters":["f2"]},{"name":"cherry","filters":["f1","f2"]}]},` +
				`"response":{"code": 200,"headers":{"Content-Type":"text/plain"},"body":"hello world"}}`,
			want: Instruct{Hold: ResponseHold, Timeout: DefaultTimeout, Channels: []Channel{
				{Name: "apple", PrevID: "item1", Filters: []string{"f1"}},
				{Name: "banana", Filters: []string{"f2"}},
				{Name: "cherry", Filters: []string{"f1", "f2"}}},
				Response: Response{200, "OK", hdr("Content-Type", "text/plain"), []byte("hello world")}},
		},
		{
			name: "pushpin streamHold",
			code: 200,
			header: hdr("Content-Type", "text/plain", "Grip-Hold", "stream", "Grip-Channel", "apple",
				"Grip-Channel", "banana, cherry"),
			body: "hello world",
			want: Instruct{Hold: StreamHold, Channels: []Channel{{Name: "apple"}, {Name: "banana"}, {Name: "cherry"}},
				Timeout:  DefaultTimeout,
				Response: Response{200, "OK", hdr("Content-Type", "text/plain"), []byte("hello world")}},
		},
		{
			name:   "the brief's example: prev-id, timeout, app headers kept, hop headers and Grip-* gone",
			code:   200,
			header: hdr("Content-Type", "application/json", "Grip-Hold", "response", "Grip-Channel", "chat-42; prev-id=1041", "Grip-Timeout", "30", "Cache-Control", "no-store", "Content-Length", "2", "Connection", "close", "Content-Encoding", "gzip", "Grip-Foo", "x"),
			body:   "[]",
			want: Instruct{Hold: ResponseHold, Channels: []Channel{{Name: "chat-42", PrevID: "1041"}},
				Timeout:  30 * time.Second,
				Response: Response{200, "OK", hdr("Content-Type", "application/json", "Cache-Control", "no-store"), []byte("[]")}},
		},
		{
			name:   "Grip-Timeout below the minimum is raised to 5 s",
			code:   200,
			header: hdr("Grip-Hold", "response", "Grip-Channel", "c", "Grip-Timeout", "0"),
			want: Instruct{Hold: ResponseHold, Channels: []Channel{{Name: "c"}}, Timeout: MinTimeout,
				Response: Response{200, "OK", http.Header{}, nil}},
		},
		{
			name:   "Grip-Timeout with spaces and a plus sign",
			code:   200,
			header: hdr("Grip-Hold", "response", "Grip-Channel", "c", "Grip-Timeout", " +9 "),
			want: Instruct{Hold: ResponseHold, Channels: []Channel{{Name: "c"}}, Timeout: 9 * time.Second,
				Response: Response{200, "OK", http.Header{}, nil}},
		},
		{
			name:   "Grip-Status on a hold sets the timeout response's status",
			code:   200,
			header: hdr("Grip-Hold", "response", "Grip-Channel", "c", "Grip-Status", "304"),
			want: Instruct{Hold: ResponseHold, Channels: []Channel{{Name: "c"}}, Timeout: DefaultTimeout,
				Response: Response{304, "Not Modified", http.Header{}, nil}},
		},
		{
			name:   "unknown code gets Pushpin's reason",
			code:   200,
			header: hdr("Grip-Status", "599"),
			want:   Instruct{Timeout: DefaultTimeout, Response: Response{599, "Undefined Reason", http.Header{}, nil}},
		},
		{
			name:   "Grip-Expose-Headers keeps only the listed app headers",
			code:   200,
			header: hdr("Grip-Hold", "response", "Grip-Channel", "c", "Grip-Expose-Headers", "content-type, X-A", "Content-Type", "text/plain", "X-A", "1", "X-B", "2"),
			want: Instruct{Hold: ResponseHold, Channels: []Channel{{Name: "c"}}, Timeout: DefaultTimeout,
				ExposeHeaders: []string{"content-type", "X-A"},
				Response:      Response{200, "OK", hdr("Content-Type", "text/plain", "X-A", "1"), nil}},
		},
		{
			name:   "duplicate channels: one subscription, last prev-id wins",
			code:   200,
			header: hdr("Grip-Hold", "response", "Grip-Channel", "a; prev-id=1, b, a; prev-id=2"),
			want: Instruct{Hold: ResponseHold, Channels: []Channel{{Name: "a", PrevID: "2"}, {Name: "b"}},
				Timeout: DefaultTimeout, Response: Response{200, "OK", http.Header{}, nil}},
		},
		{
			name:   "quoted prev-id; unparsable channel part dropped as Pushpin drops it",
			code:   200,
			header: hdr("Grip-Hold", "response", "Grip-Channel", `a; prev-id="x;y", b; prev-id="open`),
			want: Instruct{Hold: ResponseHold, Channels: []Channel{{Name: "a", PrevID: "x;y"}},
				Timeout: DefaultTimeout, Response: Response{200, "OK", http.Header{}, nil}},
		},
		{
			name:   "grip-instruct: hold without mode is a response hold; app headers and body dropped",
			code:   200,
			header: hdr("Content-Type", "application/grip-instruct", "X-App", "1"),
			body:   `{"hold":{"channels":[{"name":"c","prev-id":"7"}],"timeout":3}}`,
			want: Instruct{Hold: ResponseHold, Channels: []Channel{{Name: "c", PrevID: "7"}}, Timeout: MinTimeout,
				Response: Response{200, "OK", http.Header{}, nil}},
		},
		{
			name:   "grip-instruct: body-bin wins over body, headers as pairs, code without reason",
			code:   200,
			header: hdr("Content-Type", "application/grip-instruct"),
			body: `{"hold":{"channels":[{"name":"c"}]},"response":{"code":"404","headers":[["X-A","1"],["x-a","2"]],` +
				`"body":"ignored","body-bin":"AAEC/w=="}}`,
			want: Instruct{Hold: ResponseHold, Channels: []Channel{{Name: "c"}}, Timeout: DefaultTimeout,
				Response: Response{404, "Not Found", hdr("X-A", "1", "X-A", "2"), []byte{0, 1, 2, 255}}},
		},
		{
			name:   "grip-instruct: Grip-Status header applies, then response.reason",
			code:   200,
			header: hdr("Content-Type", "application/grip-instruct", "Grip-Status", "202 Taken"),
			body:   `{"hold":{"channels":[{"name":"c"}]},"response":{"reason":"Later"}}`,
			want: Instruct{Hold: ResponseHold, Channels: []Channel{{Name: "c"}}, Timeout: DefaultTimeout,
				Response: Response{202, "Later", http.Header{}, nil}},
		},
		{
			name:   "grip-instruct channels add to Grip-Channel's; null counts as absent",
			code:   200,
			header: hdr("Content-Type", "application/grip-instruct", "Grip-Channel", "h"),
			body:   `{"hold":{"mode":null,"channels":[{"name":"j","prev-id":null}],"timeout":null},"response":{"body":"x"}}`,
			want: Instruct{Hold: ResponseHold, Channels: []Channel{{Name: "h"}, {Name: "j"}}, Timeout: DefaultTimeout,
				Response: Response{200, "OK", http.Header{}, []byte("x")}},
		},
		{
			name:   "Grip-Link parsed (Pushpin uses it for streams)",
			code:   200,
			header: hdr("Grip-Hold", "response", "Grip-Channel", "c", "Grip-Link", "</sub/c?since=3>; rel=next, </gone>; rel=gone, <ignored>"),
			want: Instruct{Hold: ResponseHold, Channels: []Channel{{Name: "c"}}, Timeout: DefaultTimeout,
				NextLink: "/sub/c?since=3", NextLinkTimeout: DefaultNextLinkTimeout, GoneLink: "/gone",
				Response: Response{200, "OK", http.Header{}, nil}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseResponse(tt.code, tt.header, []byte(tt.body))
			if err != nil {
				t.Fatalf("ParseResponse: %v", err)
			}
			if len(got.Response.Body) == 0 && len(tt.want.Response.Body) == 0 {
				got.Response.Body, tt.want.Response.Body = nil, nil
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got\n %+v\nwant\n %+v", *got, tt.want)
			}
		})
	}
}

// Pushpin's handler/instructtest.cpp streamHoldKeepAlive, and the JSON form.
func TestParseResponseKeepAlive(t *testing.T) {
	tests := []struct {
		header string
		body   string
		want   *KeepAlive
	}{
		{"", "", nil},
		{`ping1\n; timeout=10`, "", &KeepAlive{KeepAliveIdle, []byte(`ping1\n`), 10 * time.Second}},
		{`ping2\n; format=cstring`, "", &KeepAlive{KeepAliveIdle, []byte("ping2\n"), DefaultKeepAliveTimeout}},
		{`cGluZzMK; format=base64`, "", &KeepAlive{KeepAliveIdle, []byte("ping3\n"), DefaultKeepAliveTimeout}},
		{`ping4\n; mode=interval`, "", &KeepAlive{KeepAliveInterval, []byte(`ping4\n`), DefaultKeepAliveTimeout}},
		{`a\x41\\\t; format=cstring; timeout=0`, "", &KeepAlive{KeepAliveIdle, []byte(`aA\`), time.Second}},
		{"", `{"hold":{"mode":"stream","channels":[],"keep-alive":{"content":"ka","timeout":20}}}`,
			&KeepAlive{KeepAliveInterval, []byte("ka"), 20 * time.Second}},
		{"x; mode=idle", `{"hold":{"mode":"stream","channels":[],"keep-alive":{"content-bin":"AA=="}}}`,
			&KeepAlive{KeepAliveIdle, []byte{0}, DefaultKeepAliveTimeout}},
	}
	for _, tt := range tests {
		h := hdr("Grip-Hold", "stream", "Grip-Channel", "test")
		if tt.header != "" {
			h.Set("Grip-Keep-Alive", tt.header)
		}
		if tt.body != "" {
			h.Set("Content-Type", InstructContentType)
		}
		in, err := ParseResponse(200, h, []byte(tt.body))
		if err != nil {
			t.Errorf("%q %s: %v", tt.header, tt.body, err)
			continue
		}
		if !reflect.DeepEqual(in.KeepAlive, tt.want) {
			t.Errorf("%q %s: keep-alive %+v, want %+v", tt.header, tt.body, in.KeepAlive, tt.want)
		}
	}
}

func TestParseResponseRefusesMalformedInstructions(t *testing.T) {
	ct := "application/grip-instruct"
	tests := []struct {
		code   int
		header http.Header
		body   string
		want   string
	}{
		{200, hdr("Grip-Hold", "long"), "", "Grip-Hold must be set to either 'response' or 'stream'"},
		{200, hdr("Grip-Hold", ""), "", "Grip-Hold must be set"},
		{200, hdr("Grip-Hold", "response", "Grip-Timeout", "soon"), "", "failed to parse Grip-Timeout"},
		{200, hdr("Grip-Hold", "response", "Grip-Timeout", "-1"), "", "Grip-Timeout has invalid value"},
		{200, hdr("Grip-Hold", "response", "Grip-Timeout", "99999999999"), "", "failed to parse Grip-Timeout"},
		{200, hdr("Grip-Hold", "response", "Grip-Channel", "a; filter=1; filter=2; filter=3; filter=4; filter=5; filter=6"), "", "too many filters for channel 'a'"},
		{200, hdr("Grip-Hold", "response", "Grip-Channel", "a,,b"), "", "empty channel name"},
		{200, hdr("Grip-Status", "abc"), "", "Grip-Status contains invalid status code"},
		{200, hdr("Grip-Status", "1000"), "", "Grip-Status contains invalid status code"},
		{200, hdr("Grip-Status", "42"), "", "status code 42 cannot be sent"},
		{200, hdr("Grip-Keep-Alive", "; timeout=3"), "", "Grip-Keep-Alive cannot be empty"},
		{200, hdr("Grip-Keep-Alive", "x; mode=sometimes"), "", "no such Grip-Keep-Alive mode 'sometimes'"},
		{200, hdr("Grip-Keep-Alive", "x; format=hex"), "", "no such Grip-Keep-Alive format 'hex'"},
		{200, hdr("Grip-Keep-Alive", `x\; format=cstring`), "", "failed to parse Grip-Keep-Alive cstring format"},
		{200, hdr("Grip-Keep-Alive", "x; timeout=-2"), "", "Grip-Keep-Alive timeout has invalid value"},
		{200, hdr("Grip-Set-Meta", "a=1,,b=2"), "", "Grip-Set-Meta cannot be empty"},
		{200, hdr("Grip-Link", "/next; rel=next"), "", "failed to parse Grip-Link value"},
		{200, hdr("Grip-Link", "</n>; rel=next; timeout=x"), "", "failed to parse Grip-Link timeout value"},
		{404, hdr("Content-Type", ct), `{}`, "response code for application/grip-instruct content must be 200"},
		{200, hdr("Content-Type", ct), `{"hold":`, "failed to parse application/grip-instruct content as JSON"},
		{200, hdr("Content-Type", ct), `[]`, "instruct must be an object"},
		{200, hdr("Content-Type", ct), `7`, "failed to parse application/grip-instruct content as JSON"},
		{200, hdr("Content-Type", ct), `{"hold":{"channels":[]}}}`, "failed to parse application/grip-instruct content as JSON"},
		{200, hdr("Content-Type", ct), `{"hold":[]}`, "instruct contains 'hold' with wrong type"},
		{200, hdr("Content-Type", ct), `{"hold":{"mode":"wait","channels":[]}}`, "hold 'mode' must be set to either 'response' or 'stream'"},
		{200, hdr("Content-Type", ct), `{"hold":{"mode":5,"channels":[]}}`, "hold contains 'mode' with wrong type"},
		{200, hdr("Content-Type", ct), `{"hold":{}}`, "hold does not contain 'channels'"},
		{200, hdr("Content-Type", ct), `{"hold":{"channels":"c"}}`, "hold contains 'channels' with wrong type"},
		{200, hdr("Content-Type", ct), `{"hold":{"channels":["c"]}}`, "channel is not an object"},
		{200, hdr("Content-Type", ct), `{"hold":{"channels":[{}]}}`, "channel does not contain 'name'"},
		{200, hdr("Content-Type", ct), `{"hold":{"channels":[{"name":1}]}}`, "channel contains 'name' with wrong type"},
		{200, hdr("Content-Type", ct), `{"hold":{"channels":[{"name":"c","prev-id":1041}]}}`, "channel contains 'prev-id' with wrong type"},
		{200, hdr("Content-Type", ct), `{"hold":{"channels":[{"name":"c","filters":[1]}]}}`, "filters contains value with wrong type"},
		{200, hdr("Content-Type", ct), `{"hold":{"channels":[],"timeout":"soon"}}`, "hold contains 'timeout' with wrong type"},
		{200, hdr("Content-Type", ct), `{"hold":{"channels":[],"timeout":1.5}}`, "hold contains 'timeout' with wrong type"},
		{200, hdr("Content-Type", ct), `{"hold":{"channels":[],"timeout":-1}}`, "hold contains 'timeout' with invalid value"},
		{200, hdr("Content-Type", ct), `{"hold":{"channels":[],"keep-alive":1}}`, "hold contains 'keep-alive' with wrong type"},
		{200, hdr("Content-Type", ct), `{"hold":{"channels":[],"meta":{"a":1}}}`, "'meta' contains 'a' with wrong type"},
		{200, hdr("Content-Type", ct), `{"response":"hi"}`, "instruct contains 'response' with wrong type"},
		{200, hdr("Content-Type", ct), `{"response":{"code":true}}`, "response contains 'code' with wrong type"},
		{200, hdr("Content-Type", ct), `{"response":{"code":1000}}`, "response contains 'code' with invalid value"},
		{200, hdr("Content-Type", ct), `{"response":{"code":101}}`, "status code 101 cannot be sent"},
		{200, hdr("Content-Type", ct), `{"response":{"reason":1}}`, "response contains 'reason' with wrong type"},
		{200, hdr("Content-Type", ct), `{"response":{"headers":"x"}}`, "response contains 'headers' with wrong type"},
		{200, hdr("Content-Type", ct), `{"response":{"headers":[["a"]]}}`, "headers contains list with wrong number of elements"},
		{200, hdr("Content-Type", ct), `{"response":{"headers":["a"]}}`, "headers contains element with wrong type"},
		{200, hdr("Content-Type", ct), `{"response":{"headers":[[1,"a"]]}}`, "header contains name element with wrong type"},
		{200, hdr("Content-Type", ct), `{"response":{"headers":[["a",1]]}}`, "header contains value element with wrong type"},
		{200, hdr("Content-Type", ct), `{"response":{"headers":{"a":1}}}`, "headers contains 'a' with wrong type"},
		{200, hdr("Content-Type", ct), `{"response":{"headers":{"a b":"1"}}}`, `header name "a b" is not a valid HTTP header name`},
		{200, hdr("Content-Type", ct), `{"response":{"headers":{"a":"1\r\nb: 2"}}}`, `header "a" has a value with CR, LF or NUL`},
		{200, hdr("Content-Type", ct), `{"response":{"body":1}}`, "response contains 'body' with wrong type"},
		{200, hdr("Content-Type", ct), `{"response":{"body-bin":"*"}}`, "response contains 'body-bin' that is not valid base64"},
	}
	for _, tt := range tests {
		in, err := ParseResponse(tt.code, tt.header, []byte(tt.body))
		if err == nil {
			t.Errorf("%v %s: no error, got %+v", tt.header, tt.body, in)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v %s: error %q, want it to contain %q", tt.header, tt.body, err, tt.want)
		}
	}
}

func TestStripRequestHeadersRemovesEveryClientGripHeader(t *testing.T) {
	h := hdr("Grip-Sig", "forged", "grip-last", "c; last-id=1", "GRIP-FEATURE", "x", "Accept-Encoding", "gzip",
		"Accept", "application/json", "X-Grip", "kept")
	StripRequestHeaders(h)
	want := hdr("Accept", "application/json", "X-Grip", "kept")
	if !reflect.DeepEqual(h, want) {
		t.Errorf("got %v, want %v", h, want)
	}
}

func TestStripResponseHeaders(t *testing.T) {
	h := hdr("Grip-Hold", "response", "grip-channel", "c", "Content-Type", "text/plain", "Content-Length", "5",
		"Transfer-Encoding", "chunked", "Keep-Alive", "timeout=5", "Connection", "keep-alive", "Content-Encoding", "gzip", "Vary", "Accept")
	StripResponseHeaders(h)
	want := hdr("Content-Type", "text/plain", "Vary", "Accept")
	if !reflect.DeepEqual(h, want) {
		t.Errorf("got %v, want %v", h, want)
	}
}

func TestParseResponseDoesNotChangeItsInput(t *testing.T) {
	h := hdr("Grip-Hold", "response", "Grip-Channel", "c", "Content-Type", "text/plain")
	before := h.Clone()
	if _, err := ParseResponse(200, h, nil); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(h, before) {
		t.Errorf("header changed: %v", h)
	}
}
