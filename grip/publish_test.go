package grip

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestParsePublish(t *testing.T) {
	resp := func(code int, reason string, h http.Header, body string) *HTTPResponse {
		if h == nil {
			h = http.Header{}
		}
		return &HTTPResponse{Code: code, Reason: reason, Header: h, Body: []byte(body)}
	}
	tests := []struct {
		name string
		body string
		want []Item
	}{
		{
			name: "the brief's example",
			body: `{"items":[{"channel":"chat-42","id":"1042","prev-id":"1041","formats":{"http-response":` +
				`{"code":200,"reason":"OK","headers":{"Content-Type":"application/json"},"body":"[1]"}}}]}`,
			want: []Item{{Channel: "chat-42", ID: "1042", PrevID: "1041", Size: -1, Formats: []string{"http-response"},
				HTTPResponse: resp(200, "OK", hdr("Content-Type", "application/json"), "[1]")}},
		},
		{
			// Pushpin's publishformattest.cpp responseFormat: other fields implied.
			name: "code and reason default, no headers",
			body: `{"items":[{"channel":"c","formats":{"http-response":{"body":"other fields implied"}}}]}`,
			want: []Item{{Channel: "c", Size: -1, Formats: []string{"http-response"},
				HTTPResponse: resp(200, "OK", nil, "other fields implied")}},
		},
		{
			name: "headers as pairs, body-bin decoded and preferred, code without reason",
			body: `{"items":[{"channel":"c","formats":{"http-response":{"code":404,"headers":[["X-A","1"],["X-A","2"]],` +
				`"body":"no","body-bin":"AAEC/w=="}}}]}`,
			want: []Item{{Channel: "c", Size: -1, Formats: []string{"http-response"},
				HTTPResponse: &HTTPResponse{Code: 404, Reason: "Not Found", Header: hdr("X-A", "1", "X-A", "2"), Body: []byte{0, 1, 2, 255}}}},
		},
		{
			name: "Grip-* published headers removed, Grip-Expose-Headers kept aside",
			body: `{"items":[{"channel":"c","formats":{"http-response":{"headers":{"Grip-Expose-Headers":"X-A, X-B","grip-foo":"1","X-C":"3"},"body":""}}}]}`,
			want: []Item{{Channel: "c", Size: -1, Formats: []string{"http-response"},
				HTTPResponse: &HTTPResponse{Code: 200, Reason: "OK", Header: hdr("X-C", "3"), Body: []byte{}, ExposeHeaders: []string{"X-A", "X-B"}}}},
		},
		{
			name: "hint carries no response",
			body: `{"items":[{"channel":"c","formats":{"http-response":{"action":"hint"}}}]}`,
			want: []Item{{Channel: "c", Size: -1, Formats: []string{"http-response"}, HTTPResponse: &HTTPResponse{Action: ActionHint}}},
		},
		{
			// Pushpin's publishitemtest.cpp parseItemJsonStyle: an http-stream item.
			name: "http-stream only: valid, reaches no held poll",
			body: `{"items":[{"channel":"apple","id":"item1","prev-id":"item0","meta":{"foo":"bar","bar":"baz"},` +
				`"formats":{"http-stream":{"content":"hello world"}}}]}`,
			want: []Item{{Channel: "apple", ID: "item1", PrevID: "item0", Size: -1, Formats: []string{"http-stream"},
				Meta: map[string]string{"foo": "bar", "bar": "baz"}}},
		},
		{
			name: "formats on the item itself (the older form), all three, size, no-seq",
			body: `{"items":[{"channel":"c","http-response":{"body":"r"},"http-stream":{"action":"close"},` +
				`"ws-message":{"type":"ping"},"size":12,"no-seq":true}]}`,
			want: []Item{{Channel: "c", Size: 12, NoSeq: true, Formats: []string{"http-response", "http-stream", "ws-message"},
				HTTPResponse: resp(200, "OK", nil, "r")}},
		},
		{
			name: "content filters",
			body: `{"items":[{"channel":"c","formats":{"http-response":{"body":"x","content-filters":["build-id"]}}}]}`,
			want: []Item{{Channel: "c", Size: -1, Formats: []string{"http-response"},
				HTTPResponse: &HTTPResponse{Code: 200, Reason: "OK", Header: http.Header{}, Body: []byte("x"),
					ContentFilters: []string{"build-id"}, HasContentFilters: true}}},
		},
		{
			name: "unknown formats only: accepted, nothing to deliver",
			body: `{"items":[{"channel":"c","formats":{"sse":{}}}]}`,
			want: []Item{{Channel: "c", Size: -1}},
		},
		{
			name: "several items, in order",
			body: `{"items":[{"channel":"a","id":"1","formats":{"http-response":{"body":"1"}}},` +
				`{"channel":"b","id":"2","prev-id":"1","formats":{"http-response":{"body":"2"}}}]}`,
			want: []Item{
				{Channel: "a", ID: "1", Size: -1, Formats: []string{"http-response"}, HTTPResponse: resp(200, "OK", nil, "1")},
				{Channel: "b", ID: "2", PrevID: "1", Size: -1, Formats: []string{"http-response"}, HTTPResponse: resp(200, "OK", nil, "2")},
			},
		},
		{name: "no items", body: `{"items":[]}`, want: []Item{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePublish([]byte(tt.body))
			if err != nil {
				t.Fatalf("ParsePublish: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got\n %+v\nwant\n %+v", got, tt.want)
				for i := range got {
					if got[i].HTTPResponse != nil {
						t.Logf("got[%d].HTTPResponse = %+v", i, *got[i].HTTPResponse)
					}
				}
			}
		})
	}
}

func TestParsePublishRefusesWithPushpinsMessages(t *testing.T) {
	item := func(s string) string {
		return `{"items":[{"channel":"ok","formats":{"http-response":{"body":""}}},` + s + `]}`
	}
	hr := func(s string) string { return item(`{"channel":"c","formats":{"http-response":` + s + `}}`) }
	tests := []struct{ body, want string }{
		{`not json`, "Body is not valid JSON."},
		{``, "Body is not valid JSON."},
		{`{} {}`, "Body is not valid JSON."},
		{`{} }`, "Body is not valid JSON."},
		{`null`, "Body is not valid JSON."},
		{`"items"`, "Body is not valid JSON."},
		{`[]`, "Invalid format."},
		{`{"item":[]}`, "Invalid format: object does not contain 'items'"},
		{`{"items":{}}`, "Invalid format: object contains 'items' with wrong type"},
		{item(`"c"`), "Invalid format: items[1]: publish item object is not an object"},
		{item(`{"formats":{}}`), "Invalid format: items[1]: publish item object does not contain 'channel'"},
		{item(`{"channel":7}`), "Invalid format: items[1]: publish item object contains 'channel' with wrong type"},
		{item(`{"channel":""}`), "Invalid format: items[1]: empty channel name"},
		{item(`{"channel":"c","id":5}`), "items[1]: publish item object contains 'id' with wrong type"},
		{item(`{"channel":"c","prev-id":[]}`), "items[1]: publish item object contains 'prev-id' with wrong type"},
		{item(`{"channel":"c"}`), "items[1]: no formats specified"},
		{item(`{"channel":"c","formats":{}}`), "items[1]: no formats specified"},
		{item(`{"channel":"c","formats":[]}`), "items[1]: publish item object contains 'formats' with wrong type"},
		{hr(`"hi"`), "items[1]: 'http-response' is not an object"},
		{hr(`{"action":"shout","body":""}`), "items[1]: 'http-response' contains 'action' with unknown value"},
		{hr(`{"code":"x","body":""}`), "'http-response' contains 'code' with wrong type"},
		{hr(`{"code":-1,"body":""}`), "'http-response' contains 'code' with invalid value"},
		{hr(`{"code":1000,"body":""}`), "'http-response' contains 'code' with invalid value"},
		{hr(`{"code":0,"body":""}`), "'http-response': status code 0 cannot be sent"},
		{hr(`{"reason":false,"body":""}`), "'http-response' contains 'reason' with wrong type"},
		{hr(`{"headers":"x","body":""}`), "'http-response' contains 'headers' with wrong type"},
		{hr(`{"headers":[["a","b","c"]],"body":""}`), "headers contains list with wrong number of elements"},
		{hr(`{"headers":{"X":2},"body":""}`), "headers contains 'X' with wrong type"},
		{hr(`{"content-filters":"f","body":""}`), "'http-response' contains 'content-filters' with wrong type"},
		{hr(`{"content-filters":[1],"body":""}`), "content-filters contains element with wrong type"},
		{hr(`{}`), "'http-response' does not contain 'body', 'body-bin', or 'body-patch'"},
		{hr(`{"body":{}}`), "'http-response' contains 'body' with wrong type"},
		{hr(`{"body-bin":"%%"}`), "'http-response' contains 'body-bin' that is not valid base64"},
		{hr(`{"body-patch":[]}`), "'http-response' contains 'body-patch', which is not supported"},
		{item(`{"channel":"c","formats":{"http-stream":{}}}`), "'http-stream' does not contain 'content' or 'content-bin'"},
		{item(`{"channel":"c","formats":{"http-stream":{"content":1}}}`), "'http-stream' contains 'content' with wrong type"},
		{item(`{"channel":"c","formats":{"ws-message":{"type":"blob","content":""}}}`), "'ws-message' contains 'type' with unknown value"},
		{item(`{"channel":"c","formats":{"ws-message":{}}}`), "'ws-message' does not contain 'content' or 'content-bin'"},
		{item(`{"channel":"c","formats":{"ws-message":{"action":"close","code":-3}}}`), "'ws-message' contains 'code' with invalid value"},
		{item(`{"channel":"c","formats":{"http-response":{"body":""}},"meta":[]}`), "publish item object contains 'meta' with wrong type"},
		{item(`{"channel":"c","formats":{"http-response":{"body":""}},"meta":{"k":1}}`), "'meta' contains 'k' with wrong type"},
		{item(`{"channel":"c","formats":{"http-response":{"body":""}},"size":-1}`), "publish item object contains 'size' with invalid value"},
		{item(`{"channel":"c","formats":{"http-response":{"body":""}},"size":"big"}`), "publish item object contains 'size' with wrong type"},
		{item(`{"channel":"c","formats":{"http-response":{"body":""}},"no-seq":"yes"}`), "publish item object contains 'no-seq' with wrong type"},
		{`{"items":[],"pad":"` + strings.Repeat("x", MaxPublishBody) + `"}`, "Request body too large."},
	}
	for _, tt := range tests {
		items, err := ParsePublish([]byte(tt.body))
		if err == nil {
			t.Errorf("%.120s: no error, got %+v", tt.body, items)
			continue
		}
		var pe *PublishError
		if !errors.As(err, &pe) {
			t.Errorf("%.120s: error %T, want *PublishError", tt.body, err)
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%.120s: error %q, want it to contain %q", tt.body, err, tt.want)
		}
	}
}

func TestMergeOverFollowsPushpinsRule(t *testing.T) {
	held := Response{Code: 200, Reason: "OK",
		Header: hdr("Content-Type", "application/json", "Cache-Control", "no-store", "X-Multi", "1", "X-Multi", "2", "Content-Length", "2"),
		Body:   []byte("[]")}
	tests := []struct {
		name string
		pub  HTTPResponse
		want Response
	}{
		{
			name: "status and body published, held headers kept",
			pub:  HTTPResponse{Code: 200, Reason: "OK", Header: http.Header{}, Body: []byte("[1]")},
			want: Response{200, "OK", hdr("Content-Type", "application/json", "Cache-Control", "no-store", "X-Multi", "1", "X-Multi", "2"), []byte("[1]")},
		},
		{
			name: "a published header replaces all held values of that name",
			pub:  HTTPResponse{Code: 201, Reason: "Created", Header: hdr("X-Multi", "3", "Content-Type", "text/plain"), Body: []byte("x")},
			want: Response{201, "Created", hdr("Content-Type", "text/plain", "Cache-Control", "no-store", "X-Multi", "3"), []byte("x")},
		},
		{
			name: "the held status is not inherited",
			pub:  HTTPResponse{Code: 200, Reason: "OK", Header: http.Header{}, Body: nil},
			want: Response{200, "OK", hdr("Content-Type", "application/json", "Cache-Control", "no-store", "X-Multi", "1", "X-Multi", "2"), nil},
		},
		{
			name: "published Grip-Expose-Headers removes those names, as Pushpin's code does",
			pub:  HTTPResponse{Code: 200, Reason: "OK", Header: hdr("X-New", "1"), ExposeHeaders: []string{"cache-control", "x-new"}},
			want: Response{200, "OK", hdr("Content-Type", "application/json", "X-Multi", "1", "X-Multi", "2"), nil},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := held.Header.Clone()
			got := tt.pub.MergeOver(held)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got\n %+v\nwant\n %+v", got, tt.want)
			}
			if !reflect.DeepEqual(held.Header, before) {
				t.Errorf("held header changed: %v", held.Header)
			}
		})
	}
}

func TestMergeOverAnInstructsTimeoutResponse(t *testing.T) {
	// End to end: what a held poll gets, from the app's hold to the publish.
	in, err := ParseResponse(200, hdr("Grip-Hold", "response", "Grip-Channel", "chat-42; prev-id=1041",
		"Content-Type", "application/json", "X-Poll", "held"), []byte(`{"messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	items, err := ParsePublish([]byte(`{"items":[{"channel":"chat-42","id":"1042","prev-id":"1041",` +
		`"formats":{"http-response":{"body":"{\"messages\":[1]}","headers":[["X-Id","1042"]]}}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	got := items[0].HTTPResponse.MergeOver(in.Response)
	want := Response{200, "OK", hdr("Content-Type", "application/json", "X-Poll", "held", "X-Id", "1042"), []byte(`{"messages":[1]}`)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestPublishContentType(t *testing.T) {
	tests := []struct {
		accept []string
		want   string
		ok     bool
	}{
		{nil, "text/plain", true},
		{[]string{"*/*"}, "text/plain", true},
		{[]string{"application/json"}, "application/json", true},
		{[]string{"application/json, text/plain"}, "text/plain", true}, // the last listed wins, as in Pushpin
		{[]string{"text/plain;q=1", "application/*;q=0.1"}, "application/json", true},
		{[]string{"text/html"}, "", false},
	}
	for _, tt := range tests {
		got, ok := PublishContentType(tt.accept)
		if got != tt.want || ok != tt.ok {
			t.Errorf("PublishContentType(%q) = %q, %v; want %q, %v", tt.accept, got, ok, tt.want, tt.ok)
		}
	}
	if b := string(PublishedBody("text/plain")); b != "Published\n" {
		t.Errorf("text body %q", b)
	}
	if b := string(PublishedBody("application/json")); b != "{\"message\":\"Published\"}\n" {
		t.Errorf("json body %q", b)
	}
}
