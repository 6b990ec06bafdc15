package longpoll

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/caddy-longpoll/longpoll/poller"
	"github.com/caddy-longpoll/longpoll/store"
)

// The wire format, without a server: every verdict in both formats, the
// cursor and channel a request names, and the error answers.

var (
	msgA = store.Message{ID: "c-1", Channel: "news", Time: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC), Type: "application/json", Data: []byte(`{ "n": 1 }`)}
	msgB = store.Message{ID: "c-2", Channel: "news", Time: time.Date(2026, 12, 2, 10, 0, 1, 5, time.UTC), Type: "text/plain; charset=utf-8", Data: []byte("hé")}
)

// counter is a metric's value.
func counter(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestRespondAnswersEveryVerdictInBothFormats(t *testing.T) {
	type want struct {
		status  int               // 0: nothing written
		headers map[string]string // "" means absent
		body    string            // exact; "" means empty
		err     int               // status of a returned caddyhttp.HandlerError
		metric  string            // the counter that went up
	}
	jsonAnswer := func(res store.Result) string { return string(encodeAnswer(res)) }
	two := store.Result{Messages: []store.Message{msgA, msgB}, Cursor: "c-2"}
	gapEmpty := store.Result{Cursor: "c-9", Gap: true}
	gapTwo := store.Result{Messages: []store.Message{msgA, msgB}, Cursor: "c-2", Gap: true}
	tooMany := fmt.Errorf("holding: %w", poller.ErrTooMany)
	cases := []struct {
		name string
		v    verdict
		json want
		raw  want // zero: same as json
	}{
		{
			name: "answered",
			v:    verdict{outcome: answered, result: two},
			json: want{status: 200, headers: map[string]string{"ETag": `"c-2"`, "Content-Type": "application/json", "Cache-Control": "no-store", "Longpoll-Gap": ""}, body: jsonAnswer(two), metric: "answered"},
			raw:  want{status: 200, headers: map[string]string{"ETag": `"c-1"`, "Content-Type": "application/json", "Content-Length": "10", "Cache-Control": "no-store", "Longpoll-Gap": ""}, body: `{ "n": 1 }`, metric: "answered"},
		},
		{
			name: "answered with a gap",
			v:    verdict{outcome: answered, result: gapTwo},
			json: want{status: 200, headers: map[string]string{"ETag": `"c-2"`, "Longpoll-Gap": "true"}, body: jsonAnswer(gapTwo), metric: "answered"},
			raw:  want{status: 200, headers: map[string]string{"ETag": `"c-1"`, "Longpoll-Gap": "true"}, body: `{ "n": 1 }`, metric: "answered"},
		},
		{
			name: "a gap and nothing retained",
			v:    verdict{outcome: answered, result: gapEmpty},
			json: want{status: 200, headers: map[string]string{"ETag": `"c-9"`, "Longpoll-Gap": "true"}, body: `{"cursor":"c-9","messages":[],"gap":true}` + "\n", metric: "answered"},
			raw:  want{status: 204, headers: map[string]string{"ETag": `"c-9"`, "Longpoll-Gap": "true", "Cache-Control": "no-store"}, metric: "answered"},
		},
		{
			name: "timed out",
			v:    verdict{outcome: notModified, timeout: true},
			json: want{status: 304, headers: map[string]string{"ETag": `"c-0"`, "Cache-Control": "no-store"}, metric: "timeouts"},
		},
		{
			name: "not modified (exit, poller closed)",
			v:    verdict{outcome: notModified},
			json: want{status: 304, headers: map[string]string{"ETag": `"c-0"`}},
		},
		{
			name: "deleted",
			v:    verdict{outcome: deleted},
			json: want{status: 410, headers: map[string]string{"ETag": `"c-0"`, "Content-Type": "application/json"}, body: `{"error":"channel \"news\" was deleted"}` + "\n"},
		},
		{
			name: "refused: max_held",
			v:    verdict{outcome: refused, err: tooMany},
			json: want{status: 503, headers: map[string]string{"Retry-After": "1", "ETag": ""}, body: `{"error":"too many held polls, retry later"}` + "\n", metric: "too_many"},
		},
		{
			name: "refused: shutting down",
			v:    verdict{outcome: refused, err: poller.ErrClosed},
			json: want{status: 503, headers: map[string]string{"Retry-After": "1"}, body: `{"error":"shutting down, retry later"}` + "\n", metric: "shutting_down"},
		},
		{
			name: "store unreachable",
			v:    verdict{outcome: failed, err: fmt.Errorf("redis: %w", store.ErrUnavailable)},
			json: want{headers: map[string]string{"Retry-After": "1"}, err: 503, metric: "store"},
		},
		{
			name: "store failed otherwise",
			v:    verdict{outcome: failed, err: errors.New("WRONGTYPE")},
			json: want{headers: map[string]string{"Retry-After": ""}, err: 500, metric: "store"},
		},
		{name: "client gone", v: verdict{outcome: gone}, json: want{}},
	}
	for _, tc := range cases {
		for _, f := range []Format{FormatJSON, FormatRaw} {
			t.Run(tc.name+"/"+string(f), func(t *testing.T) {
				w := tc.json
				if f == FormatRaw && tc.raw.status != 0 {
					w = tc.raw
				}
				m := newMetrics(nil, nil)
				an := answerer{format: f, answers: newAnswerCache(), metrics: m}
				rec := httptest.NewRecorder()
				err := an.respond(rec, "news", "c-0", tc.v)

				var he caddyhttp.HandlerError
				switch {
				case w.err == 0 && err != nil:
					t.Fatalf("respond returned %v", err)
				case w.err != 0 && !errors.As(err, &he):
					t.Fatalf("respond returned %v, want a caddyhttp.HandlerError", err)
				case w.err != 0 && (he.StatusCode != w.err || !strings.Contains(he.Error(), `polling "news"`)):
					t.Fatalf("respond returned %d %v, want %d about polling \"news\"", he.StatusCode, he, w.err)
				}
				if w.status == 0 {
					if rec.Body.Len() != 0 || rec.Header().Get("Content-Type") != "" {
						t.Fatalf("wrote an answer: %d %q", rec.Code, rec.Body.String())
					}
				} else if rec.Code != w.status {
					t.Fatalf("status %d, want %d (body %q)", rec.Code, w.status, rec.Body.String())
				}
				for k, v := range w.headers {
					if got := rec.Header().Get(k); got != v {
						t.Errorf("%s: %q, want %q", k, got, v)
					}
				}
				if got := rec.Body.String(); got != w.body {
					t.Errorf("body %q, want %q", got, w.body)
				}
				if cl := rec.Header().Get("Content-Length"); cl != "" && cl != fmt.Sprint(rec.Body.Len()) {
					t.Errorf("Content-Length %s for a body of %d bytes", cl, rec.Body.Len())
				}
				counters := map[string]prometheus.Metric{
					"answered":      m.answered,
					"timeouts":      m.timeouts,
					"too_many":      m.pollsRejected.WithLabelValues("too_many"),
					"shutting_down": m.pollsRejected.WithLabelValues("shutting_down"),
					"store":         m.pollsRejected.WithLabelValues("store"),
				}
				for name, c := range counters {
					want := 0.0
					if name == w.metric {
						want = 1
					}
					if got := counter(t, c); got != want {
						t.Errorf("counter %s = %v, want %v", name, got, want)
					}
				}
			})
		}
	}
}

// A json answer is one document: the cursor, the messages with their data
// as JSON, text or base64, and the gap.
func TestEncodeAnswerShapesEachKindOfData(t *testing.T) {
	bin := store.Message{ID: "c-3", Channel: "news", Time: msgA.Time, Type: "application/octet-stream", Data: []byte{0xff, 0x00}}
	bad := store.Message{ID: "c-4", Channel: "news", Time: msgA.Time, Type: "application/problem+json", Data: []byte(`{"unterminated`)}
	res := store.Result{Messages: []store.Message{msgA, msgB, bin, bad}, Cursor: "c-4", Gap: true}
	var got struct {
		Cursor   string `json:"cursor"`
		Gap      bool   `json:"gap"`
		Messages []struct {
			ID, Channel, Time, Type, Encoding string
			Data                              json.RawMessage
		} `json:"messages"`
	}
	body := encodeAnswer(res)
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%v in %s", err, body)
	}
	if got.Cursor != "c-4" || !got.Gap || len(got.Messages) != 4 {
		t.Fatalf("answer %s", body)
	}
	for i, w := range []struct{ data, encoding string }{
		{`{"n":1}`, ""},           // JSON, compacted
		{`"hé"`, ""},              // UTF-8 text as a string
		{`"/wA="`, "base64"},      // binary
		{`"{\"unterminated"`, ""}, // invalid JSON is text
	} {
		m := got.Messages[i]
		if string(m.Data) != w.data || m.Encoding != w.encoding || m.ID != res.Messages[i].ID || m.Channel != "news" || m.Type != res.Messages[i].Type {
			t.Errorf("message %d: %+v, want data %s encoding %q", i, m, w.data, w.encoding)
		}
	}
	if got.Messages[1].Time != "2026-12-02T10:00:01.000000005Z" {
		t.Errorf("time %q, want RFC 3339 with nanoseconds in UTC", got.Messages[1].Time)
	}
	if !strings.HasSuffix(string(encodeAnswer(store.Result{Cursor: "c-1"})), `"messages":[]}`+"\n") {
		t.Errorf("no gap: %s", encodeAnswer(store.Result{Cursor: "c-1"}))
	}
}

func TestCursorOfReadsQueryThenIfNoneMatchThenLastEventID(t *testing.T) {
	for _, tc := range []struct {
		query, inm, lastID string
		want, err          string // err: a substring of the error
	}{
		{want: ""},
		{query: "since=c-1", inm: `"c-2"`, lastID: "c-3", want: "c-1"},
		{inm: `"c-2"`, lastID: "c-3", want: "c-2"},
		{lastID: "c-3", want: "c-3"},
		{inm: `W/"c-2"`, want: "c-2"},
		{inm: `"c-2", "c-5"`, want: "c-2"},
		{inm: `c-2, c-5`, want: "c-2"},
		{query: "since=", inm: `"c-2"`, want: "c-2"},            // an empty parameter is no cursor
		{inm: `"c-2-gzip"`, want: "c-2-gzip"},                   // kept: the await retries without it
		{query: "since=c-2-br", want: "c-2-br"},                 // copied from an ETag
		{inm: `"c-2`, err: "malformed cursor in If-None-Match"}, // unterminated
		{query: "since=a%20b", err: "malformed cursor in query parameter since"},
		{lastID: strings.Repeat("x", store.MaxCursorLen+1), err: "malformed cursor in Last-Event-ID"},
		{inm: "*", err: "malformed cursor in If-None-Match"},
	} {
		r := httptest.NewRequest(http.MethodGet, "/poll/news?"+tc.query, nil)
		if tc.inm != "" {
			r.Header.Set("If-None-Match", tc.inm)
		}
		if tc.lastID != "" {
			r.Header.Set("Last-Event-ID", tc.lastID)
		}
		got, err := cursorOf(r, "since")
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%+v: error %v, want one about %q", tc, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("%+v: %q, %v; want %q", tc, got, err, tc.want)
		}
	}
}

func TestWithoutEncodingCutsWhatCaddysEncodeAppends(t *testing.T) {
	for in, want := range map[string]string{
		"c-1-gzip": "c-1", "c-1-zstd": "c-1", "c-1-br": "c-1",
		"c-1": "", "abr": "", "-br": "", "-gzip": "", "c-1-deflate": "", "c-1-gzip-": "",
	} {
		got, ok := withoutEncoding(in)
		if ok != (want != "") || (ok && got != want) || (!ok && got != in) {
			t.Errorf("withoutEncoding(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestChannelOfExpandsTheTemplateWithTheRequest(t *testing.T) {
	for _, tc := range []struct {
		target, template string
		want, err        string
	}{
		{"/poll/news", DefaultChannel, "news", ""},
		{"/poll/chat?room=a", "chat-{http.request.uri.query.room}", "chat-a", ""},
		{"/poll/x", "{http.request.method}:{http.request.uri.path.dir}", "GET:/poll/", ""},
		{"/poll/chat", "{http.request.uri.query.room}", "", "channel name is empty"},
		// A placeholder the request does not know is the route's error,
		// never a channel shared by every poll.
		{"/poll/chat", "{nonsense}", "", "unrecognized placeholder {nonsense}"},
		{"/poll/chat", "user-{http.auth.user.id}", "", "unrecognized placeholder {http.auth.user.id}"},
		{"/poll/chat?room=a%01", "{http.request.uri.query.room}", "", "control bytes"},
		{"/poll/chat?room=" + strings.Repeat("a", store.MaxChannelLen+1), "{http.request.uri.query.room}", "", "longer than"},
	} {
		r := httptest.NewRequest(http.MethodGet, tc.target, nil)
		caddyhttp.NewTestReplacer(r)
		got, err := channelOf(r, tc.template)
		if he, ok := channelFailure(err); ok != strings.Contains(tc.err, "unrecognized") || (ok && he.StatusCode != 500) {
			t.Errorf("%s with %s: channelFailure(%v) = %v, %v; want 500 for the template's fault only", tc.target, tc.template, err, he, ok)
		}
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s with %s: %q, %v; want an error about %q", tc.target, tc.template, got, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("%s with %s: %q, %v; want %q", tc.target, tc.template, got, err, tc.want)
		}
	}
}

func TestWriteErrorIsOneJSONLine(t *testing.T) {
	rec := httptest.NewRecorder()
	if err := writeError(rec, http.StatusBadRequest, "channel %q: %v", "a<b", errors.New("bad")); err != nil {
		t.Fatal(err)
	}
	var body struct{ Error string }
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 400 || body.Error != `channel "a<b": bad` || rec.Header().Get("Content-Type") != "application/json" ||
		rec.Header().Get("Cache-Control") != "no-store" || rec.Header().Get("Content-Length") != fmt.Sprint(rec.Body.Len()) ||
		strings.Count(rec.Body.String(), "\n") != 1 {
		t.Errorf("%d %v %q", rec.Code, rec.Header(), rec.Body.String())
	}
}

func TestStoreFailureIsACaddyError(t *testing.T) {
	for _, tc := range []struct {
		err        error
		status     int
		retryAfter string
	}{
		{fmt.Errorf("publishing to %q: %w", "d", store.ErrUnavailable), 503, "1"},
		{errors.New("publishing: OOM command not allowed"), 500, ""},
	} {
		hdr := http.Header{}
		err := storeFailure(hdr, tc.err)
		var he caddyhttp.HandlerError
		if !errors.As(err, &he) || he.StatusCode != tc.status || !errors.Is(err, tc.err) || hdr.Get("Retry-After") != tc.retryAfter {
			t.Errorf("storeFailure(%v) = %#v, Retry-After %q; want %d, Retry-After %q", tc.err, err, hdr.Get("Retry-After"), tc.status, tc.retryAfter)
		}
	}
}
