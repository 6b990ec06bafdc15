package longpoll_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"
)

const (
	pollRoute = `longpoll /poll/* {
		timeout 1m
	}`
	pubRoute = `longpoll_publish /publish/*`
)

func etag(c string) string { return `"` + c + `"` }

func TestPollAnsweredWhenMessagePublished(t *testing.T) {
	s := start(t, "", pollRoute, pubRoute)
	checkLeaks(t, s)
	got := s.pollAsync(context.Background(), s.poll+"/poll/news")
	s.waitHeld("news", 1)
	pub := s.publish("news", "application/json", `{"headline": "hello"}`)
	if pub["subscribers"] != 1.0 || pub["channel"] != "news" || pub["id"] == "" {
		t.Fatalf("publish answer = %v, want 1 subscriber woken on news", pub)
	}
	if _, err := time.Parse(time.RFC3339, pub["time"].(string)); err != nil {
		t.Fatalf("publish time %q is not RFC 3339", pub["time"])
	}
	r := <-got
	if r.status != 200 {
		t.Fatalf("poll = %d %s", r.status, r.body)
	}
	ans := r.json(t)
	msgs := ans["messages"].([]any)
	if len(msgs) != 1 {
		t.Fatalf("got %d messages, want 1: %s", len(msgs), r.body)
	}
	m := msgs[0].(map[string]any)
	if m["id"] != pub["id"] || m["channel"] != "news" || m["time"] != pub["time"] || m["type"] != "application/json" {
		t.Fatalf("message = %v, want the published one %v", m, pub)
	}
	if d, ok := m["data"].(map[string]any); !ok || d["headline"] != "hello" {
		t.Fatalf("data = %#v, want the JSON value", m["data"])
	}
	if ans["cursor"] != pub["id"] || r.header.Get("ETag") != etag(pub["id"].(string)) {
		t.Fatalf("cursor %v, ETag %q; want both %v", ans["cursor"], r.header.Get("ETag"), pub["id"])
	}
	if r.header.Get("Cache-Control") != "no-store" || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("headers = %v", r.header)
	}
	if _, gap := ans["gap"]; gap || r.header.Get("Longpoll-Gap") != "" {
		t.Fatalf("a fresh poll reported a gap: %s", r.body)
	}
}

func TestPollWithOlderCursorGetsEverythingAtOnceInOrder(t *testing.T) {
	s := start(t, "", pollRoute, pubRoute)
	cursor := s.info("c")["cursor"].(string)
	var ids []any
	for i := range 3 {
		ids = append(ids, s.publish("c", "text/plain", fmt.Sprint("line ", i))["id"])
	}
	r := s.must("GET", s.poll+"/poll/c?since="+cursor, "")
	if r.status != 200 {
		t.Fatalf("poll = %d %s", r.status, r.body)
	}
	msgs := r.json(t)["messages"].([]any)
	if len(msgs) != 3 {
		t.Fatalf("got %s", r.body)
	}
	for i, m := range msgs {
		m := m.(map[string]any)
		if m["id"] != ids[i] || m["data"] != fmt.Sprint("line ", i) {
			t.Fatalf("message %d = %v", i, m)
		}
	}
	if r.header.Get("ETag") != etag(ids[2].(string)) {
		t.Fatalf("ETag %q, want the last id", r.header.Get("ETag"))
	}
}

func TestPollTimesOutWith304AndItsCursorMissesNothing(t *testing.T) {
	s := start(t, "", `longpoll /poll/* {
		timeout 50ms
	}`, pubRoute)
	r := s.must("GET", s.poll+"/poll/quiet", "")
	if r.status != 304 || r.body != "" {
		t.Fatalf("poll on a quiet channel = %d %q, want 304 without body", r.status, r.body)
	}
	tag := r.header.Get("ETag")
	if !strings.HasPrefix(tag, `"`) || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("304 headers = %v", r.header)
	}
	// Published between the 304 and the next poll: the next poll gets it.
	pub := s.publish("quiet", "text/plain", "meanwhile")
	r = s.must("GET", s.poll+"/poll/quiet", "", "If-None-Match", tag)
	if r.status != 200 || r.json(t)["messages"].([]any)[0].(map[string]any)["id"] != pub["id"] {
		t.Fatalf("re-poll with the 304's ETag = %d %s", r.status, r.body)
	}
	// A timeout with a cursor keeps that cursor.
	r = s.must("GET", s.poll+"/poll/quiet?since="+pub["id"].(string), "")
	if r.status != 304 || r.header.Get("ETag") != etag(pub["id"].(string)) {
		t.Fatalf("timeout with cursor = %d, ETag %q", r.status, r.header.Get("ETag"))
	}
}

func TestCursorFromQueryThenIfNoneMatchThenLastEventID(t *testing.T) {
	s := start(t, "", `longpoll /poll/* {
		cursor_param after
		timeout 50ms
	}`, pubRoute)
	a := s.publish("c", "text/plain", "a")["id"].(string)
	b := s.publish("c", "text/plain", "b")["id"].(string)
	s.publish("c", "text/plain", "c")
	count := func(r resp) int {
		t.Helper()
		if r.status != 200 {
			t.Fatalf("poll = %d %s", r.status, r.body)
		}
		return len(r.json(t)["messages"].([]any))
	}
	for _, tc := range []struct {
		name string
		url  string
		hdr  []string
		want int
	}{
		{"query", "?after=" + a, nil, 2},
		{"query wins over If-None-Match", "?after=" + b, []string{"If-None-Match", etag(a)}, 1},
		{"If-None-Match", "", []string{"If-None-Match", etag(a)}, 2},
		{"weak If-None-Match list", "", []string{"If-None-Match", `W/"` + b + `", "x"`}, 1},
		{"If-None-Match wins over Last-Event-ID", "", []string{"If-None-Match", etag(b), "Last-Event-ID", a}, 1},
		{"Last-Event-ID", "", []string{"Last-Event-ID", a}, 2},
		{"default name since is not read", "?since=" + a, []string{"Last-Event-ID", b}, 1},
	} {
		if got := count(s.must("GET", s.poll+"/poll/c"+tc.url, "", tc.hdr...)); got != tc.want {
			t.Errorf("%s: got %d messages, want %d", tc.name, got, tc.want)
		}
	}
}

func TestBadPollsGetClearErrors(t *testing.T) {
	s := start(t, "", pollRoute, pubRoute)
	long := strings.Repeat("a", 129)
	for _, tc := range []struct {
		name, method, url string
		hdr               []string
		status            int
		says              string
	}{
		{"bad cursor characters", "GET", "/poll/c?since=a%2Fb", nil, 400, "malformed cursor"},
		{"cursor too long", "GET", "/poll/c?since=" + long, nil, 400, "malformed cursor"},
		{"bad If-None-Match", "GET", "/poll/c", []string{"If-None-Match", `"a b"`}, 400, "If-None-Match"},
		{"bad Last-Event-ID", "GET", "/poll/c", []string{"Last-Event-ID", "x/y"}, 400, "Last-Event-ID"},
		{"channel with control bytes", "GET", "/poll/a%01b", nil, 400, "control"},
		{"channel too long", "GET", "/poll/" + strings.Repeat("x", 257), nil, 400, "longer than 256"},
		{"empty channel", "GET", "/poll/", nil, 400, "empty"},
		{"POST", "POST", "/poll/c", nil, 405, "method POST"},
		{"DELETE", "DELETE", "/poll/c", nil, 405, "method DELETE"},
	} {
		r := s.must(tc.method, s.poll+tc.url, "", tc.hdr...)
		if r.status != tc.status || !strings.Contains(r.json(t)["error"].(string), tc.says) {
			t.Errorf("%s: %d %s; want %d saying %q", tc.name, r.status, r.body, tc.status, tc.says)
		}
		if tc.status == 405 && r.header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: Allow = %q", tc.name, r.header.Get("Allow"))
		}
	}
}

// A channel template with a placeholder the request does not know (here
// {http.auth.user.id} on a route no authentication handler guards) is the
// route's error: 500 for polls and publishes, never one channel shared by
// all of them.
func TestUnknownPlaceholderInChannelIs500(t *testing.T) {
	s := start(t, "", `longpoll /poll/* {
		channel user-{http.auth.user.id}
	}`, `longpoll_publish /publish/* {
		channel user-{http.auth.user.id}
	}`)
	if r := s.must("GET", s.poll+"/poll/x", ""); r.status != 500 {
		t.Errorf("poll: %d %q, want 500", r.status, r.body)
	}
	if r := s.must("POST", s.pub+"/publish/x", "hi"); r.status != 500 {
		t.Errorf("publish: %d %q, want 500", r.status, r.body)
	}
	s.assertMetrics(`caddy_longpoll_polls_rejected_total{reason="channel_template"} 1`,
		`caddy_longpoll_publishes_rejected_total{reason="channel_template"} 1`)
}

func TestHeadPollGetsHeadersOnly(t *testing.T) {
	s := start(t, "", pollRoute, pubRoute)
	start := s.info("c")["cursor"].(string)
	id := s.publish("c", "text/plain", "x")["id"].(string)
	r := s.must("HEAD", s.poll+"/poll/c?since="+start, "")
	if r.status != 200 || r.body != "" || r.header.Get("ETag") != etag(id) {
		t.Fatalf("HEAD = %d %q ETag %q", r.status, r.body, r.header.Get("ETag"))
	}
}

func TestMessageDataByContentType(t *testing.T) {
	s := start(t, "", pollRoute, pubRoute)
	start := s.info("c")["cursor"].(string)
	bin := []byte{0xff, 0x00, 0xfe}
	s.publish("c", "application/json; charset=utf-8", `[1, 2]`)
	s.publish("c", "application/ld+json", `{"@id":"x"}`)
	s.publish("c", "text/plain", "héllo")
	s.publish("c", "image/png", string(bin))
	s.publish("c", "", "no type")
	msgs := s.must("GET", s.poll+"/poll/c?since="+start, "").json(t)["messages"].([]any)
	m := func(i int) map[string]any { return msgs[i].(map[string]any) }
	if fmt.Sprint(m(0)["data"]) != "[1 2]" || m(0)["type"] != "application/json; charset=utf-8" {
		t.Errorf("json message = %v", m(0))
	}
	if d, ok := m(1)["data"].(map[string]any); !ok || d["@id"] != "x" {
		t.Errorf("+json message = %v", m(1))
	}
	if m(2)["data"] != "héllo" || m(2)["encoding"] != nil {
		t.Errorf("text message = %v", m(2))
	}
	if m(3)["encoding"] != "base64" || m(3)["data"] != base64.StdEncoding.EncodeToString(bin) {
		t.Errorf("binary message = %v", m(3))
	}
	if m(4)["type"] != "application/octet-stream" || m(4)["data"] != "no type" {
		t.Errorf("message without type = %v", m(4))
	}
}

func TestRawFormatOneMessagePerAnswer(t *testing.T) {
	s := start(t, "", `longpoll /poll/* {
		format raw
		timeout 1m
	}`, pubRoute)
	cursor := s.info("c")["cursor"].(string)
	s.publish("c", "text/csv", "a,b")
	s.publish("c", "application/json", `{"n":2}`)
	var bodies []string
	for range 2 {
		r := s.must("GET", s.poll+"/poll/c?since="+cursor, "")
		if r.status != 200 {
			t.Fatalf("raw poll = %d %s", r.status, r.body)
		}
		bodies = append(bodies, r.header.Get("Content-Type")+" "+r.body)
		cursor = strings.Trim(r.header.Get("ETag"), `"`)
	}
	if fmt.Sprint(bodies) != `[text/csv a,b application/json {"n":2}]` {
		t.Fatalf("raw answers = %q", bodies)
	}
	got := s.pollAsync(context.Background(), s.poll+"/poll/c?since="+cursor)
	s.waitHeld("c", 1)
	s.publish("c", "text/plain", "third")
	if r := <-got; r.status != 200 || r.body != "third" {
		t.Fatalf("held raw poll = %d %q", r.status, r.body)
	}
}

func TestGapIsSignalledNeverSilent(t *testing.T) {
	s := start(t, `longpoll {
		store memory {
			buffer 2
		}
	}`, pollRoute+"\n"+`longpoll /raw/* {
		format raw
	}`, pubRoute)
	start := s.info("c")["cursor"].(string)
	for i := range 4 {
		s.publish("c", "text/plain", fmt.Sprint(i))
	}
	r := s.must("GET", s.poll+"/poll/c?since="+start, "")
	ans := r.json(t)
	if r.status != 200 || ans["gap"] != true || r.header.Get("Longpoll-Gap") != "true" || len(ans["messages"].([]any)) != 2 {
		t.Fatalf("poll behind the buffer = %d %v %s", r.status, r.header, r.body)
	}
	// A cursor this store never issued (say from before a restart).
	r = s.must("GET", s.poll+"/poll/c?since=abc-1", "")
	if r.status != 200 || r.json(t)["gap"] != true {
		t.Fatalf("unknown cursor = %d %s", r.status, r.body)
	}
	r = s.must("GET", s.poll+"/poll/empty?since=abc-1", "")
	if r.status != 200 || r.json(t)["gap"] != true || r.header.Get("ETag") == "" {
		t.Fatalf("unknown cursor on an empty channel = %d %v %s", r.status, r.header, r.body)
	}
	// raw: the oldest retained message, flagged.
	r = s.must("GET", s.poll+"/raw/c?since="+start, "")
	if r.status != 200 || r.body != "2" || r.header.Get("Longpoll-Gap") != "true" {
		t.Fatalf("raw poll behind the buffer = %d %q %v", r.status, r.body, r.header)
	}
	r = s.must("GET", s.poll+"/raw/empty?since=abc-1", "")
	if r.status != 204 || r.header.Get("Longpoll-Gap") != "true" {
		t.Fatalf("raw unknown cursor on an empty channel = %d %v", r.status, r.header)
	}
}

func TestDeleteAnswersHeldPollsWith410(t *testing.T) {
	s := start(t, "", pollRoute, pubRoute)
	checkLeaks(t, s)
	cursor := s.info("c")["cursor"].(string)
	s.publish("c", "text/plain", "x")
	got := s.pollAsync(context.Background(), s.poll+"/poll/c")
	s.waitHeld("c", 1)
	r := s.must("DELETE", s.pub+"/publish/c", "")
	if r.status != 200 || r.json(t)["deleted"] != true || r.json(t)["subscribers"] != 1.0 {
		t.Fatalf("DELETE = %d %s", r.status, r.body)
	}
	if p := <-got; p.status != 410 || !strings.Contains(p.body, "deleted") {
		t.Fatalf("held poll after delete = %d %s", p.status, p.body)
	}
	if i := s.info("c"); i["messages"] != 0.0 {
		t.Fatalf("info after delete = %v", i)
	}
	// A cursor from before the delete is told of the gap.
	if r := s.must("GET", s.poll+"/poll/c?since="+cursor, ""); r.status != 200 || r.json(t)["gap"] != true {
		t.Fatalf("poll with a cursor from before the delete = %d %s", r.status, r.body)
	}
}

func TestMaxHeldRefusesWith503ButServesWaitingMessages(t *testing.T) {
	s := start(t, `longpoll {
		max_held 2
	}`, pollRoute, pubRoute)
	checkLeaks(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := s.pollAsync(ctx, s.poll+"/poll/a")
	b := s.pollAsync(ctx, s.poll+"/poll/b")
	s.waitHeld("a", 1)
	s.waitHeld("b", 1)
	r := s.must("GET", s.poll+"/poll/c", "")
	if r.status != 503 || r.header.Get("Retry-After") == "" || !strings.Contains(r.body, "too many") {
		t.Fatalf("third poll = %d %v %s", r.status, r.header, r.body)
	}
	cursor := s.info("c")["cursor"].(string)
	s.publish("c", "text/plain", "waiting")
	if r := s.must("GET", s.poll+"/poll/c?since="+cursor, ""); r.status != 200 {
		t.Fatalf("poll with messages waiting, at the limit = %d %s", r.status, r.body)
	}
	cancel()
	<-a
	<-b
	s.waitHeld("a", 0)
	s.waitHeld("b", 0)
	got := s.pollAsync(context.Background(), s.poll+"/poll/c?since="+cursor+"x")
	if r := <-got; r.status != 200 {
		t.Fatalf("poll after the held ones left = %d %s", r.status, r.body)
	}
}

func TestClientGoneReleasesHeldPoll(t *testing.T) {
	s := start(t, "", pollRoute, pubRoute)
	checkLeaks(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	var polls []<-chan resp
	for range 20 {
		polls = append(polls, s.pollAsync(ctx, s.poll+"/poll/c"))
	}
	s.waitHeld("c", 20)
	cancel()
	for _, p := range polls {
		<-p
	}
	s.waitHeld("c", 0)
	if n := s.publish("c", "text/plain", "nobody")["subscribers"]; n != 0.0 {
		t.Fatalf("publish after the clients left woke %v", n)
	}
}
