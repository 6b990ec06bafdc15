package longpoll_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

func TestPublishRejectsBadInputWithJSONErrors(t *testing.T) {
	t.Setenv("LONGPOLL_TEST_TOKEN", "s3cret")
	s := start(t, "", pollRoute, `longpoll_publish /publish/* {
		max_size 16B
	}
	longpoll_publish /tok/* {
		token {env.LONGPOLL_TEST_TOKEN}
	}
	longpoll_publish /far/* {
		allow 10.0.0.0/8 192.0.2.7
	}`)
	for _, tc := range []struct {
		name, method, path, body string
		hdr                      []string
		status                   int
		says                     string
	}{
		{"empty channel", "POST", "/publish/", "x", nil, 400, "no channel named, and the body is not Pushpin's publish format"},
		{"empty channel, GET", "GET", "/publish/", "", nil, 400, "empty"},
		{"channel too long", "POST", "/publish/" + strings.Repeat("x", 257), "x", nil, 400, "longer than 256"},
		{"control bytes", "POST", "/publish/a%0Ab", "x", nil, 400, "control"},
		{"JSON type, not JSON", "POST", "/publish/c", "{nope", []string{"Content-Type", "application/json"}, 400, "not valid JSON"},
		{"+json type, not JSON", "POST", "/publish/c", "nope", []string{"Content-Type", "application/cloudevents+json"}, 400, "not valid JSON"},
		{"too large", "POST", "/publish/c", strings.Repeat("x", 17), nil, 413, "max_size"},
		{"bad idempotency key", "POST", "/publish/c", "x", []string{"Idempotency-Key", strings.Repeat("k", 257)}, 400, "Idempotency-Key"},
		{"PUT", "PUT", "/publish/c", "x", nil, 405, "method PUT"},
		{"no token", "POST", "/tok/c", "x", nil, 401, "token"},
		{"wrong token", "POST", "/tok/c", "x", []string{"Authorization", "Bearer nope"}, 401, "token"},
		{"not on allow list", "POST", "/far/c", "x", nil, 403, "not allowed"},
		{"not on allow list, GET", "GET", "/far/c", "", nil, 403, "not allowed"},
	} {
		r := s.must(tc.method, s.pub+tc.path, tc.body, tc.hdr...)
		if r.status != tc.status || r.header.Get("Content-Type") != "application/json" || !strings.Contains(r.json(t)["error"].(string), tc.says) {
			t.Errorf("%s: %d %s; want %d saying %q", tc.name, r.status, r.body, tc.status, tc.says)
		}
	}
	if r := s.must("PUT", s.pub+"/publish/c", ""); r.header.Get("Allow") != "GET, HEAD, POST, DELETE" {
		t.Errorf("405 Allow = %q", r.header.Get("Allow"))
	}
	if r := s.must("POST", s.pub+"/tok/c", "x"); r.header.Get("WWW-Authenticate") == "" {
		t.Errorf("401 without WWW-Authenticate")
	}
	// Nothing refused was stored.
	if i := s.info("c"); i["messages"] != 0.0 {
		t.Fatalf("refused publishes stored messages: %v", i)
	}
	// The right token and a body at the limit pass.
	if r := s.must("POST", s.pub+"/tok/c", "ok", "Authorization", "Bearer s3cret"); r.status != 200 {
		t.Errorf("with the token: %d %s", r.status, r.body)
	}
	if r := s.must("POST", s.pub+"/publish/c", strings.Repeat("x", 16)); r.status != 200 {
		t.Errorf("body of exactly max_size: %d %s", r.status, r.body)
	}
}

func TestPublishIdempotencyKeyStoresOnce(t *testing.T) {
	s := start(t, "", pollRoute, pubRoute)
	cursor := s.info("c")["cursor"].(string)
	first := s.must("POST", s.pub+"/publish/c", "once", "Idempotency-Key", "order-42")
	again := s.must("POST", s.pub+"/publish/c", "once", "Idempotency-Key", "order-42")
	a, b := first.json(t), again.json(t)
	if first.status != 200 || again.status != 200 || a["id"] != b["id"] || a["time"] != b["time"] {
		t.Fatalf("first %d %v, retry %d %v: want the same message", first.status, a, again.status, b)
	}
	if again.header.Get("Idempotent-Replayed") != "true" || first.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("Idempotent-Replayed: first %q, retry %q", first.header.Get("Idempotent-Replayed"), again.header.Get("Idempotent-Replayed"))
	}
	if i := s.info("c"); i["messages"] != 1.0 {
		t.Fatalf("stored %v messages, want 1", i["messages"])
	}
	if r := s.must("GET", s.poll+"/poll/c?since="+cursor, ""); len(r.json(t)["messages"].([]any)) != 1 {
		t.Fatalf("poll got %s", r.body)
	}
	other := s.must("POST", s.pub+"/publish/d", "once", "Idempotency-Key", "order-42").json(t)
	if other["id"] == a["id"] {
		t.Fatal("same key on another channel was treated as a retry")
	}
}

func TestChannelInfoCursorMissesNothing(t *testing.T) {
	s := start(t, "", pollRoute, pubRoute)
	i := s.info("room")
	if i["channel"] != "room" || i["messages"] != 0.0 || i["subscribers"] != 0.0 || i["cursor"] == "" {
		t.Fatalf("info of a new channel = %v", i)
	}
	// Someone speaks between page render and the first poll.
	id := s.publish("room", "text/plain", "early")["id"]
	r := s.must("GET", s.poll+"/poll/room?since="+i["cursor"].(string), "")
	if m := r.json(t)["messages"].([]any); len(m) != 1 || m[0].(map[string]any)["id"] != id {
		t.Fatalf("first poll with the rendered cursor = %s", r.body)
	}
	if i := s.info("room"); i["cursor"] != id || i["messages"] != 1.0 {
		t.Fatalf("info after one message = %v", i)
	}
}

func TestPublishWakesEveryHeldPollOnTheChannel(t *testing.T) {
	s := start(t, "", pollRoute, pubRoute)
	checkLeaks(t, s)
	const n = 200
	var polls []<-chan resp
	for i := range n {
		ch := "a"
		if i%2 == 1 {
			ch = "b"
		}
		polls = append(polls, s.pollAsync(context.Background(), s.poll+"/poll/"+ch))
	}
	s.waitHeld("a", n/2)
	s.waitHeld("b", n/2)
	if got := s.publish("a", "text/plain", "to a")["subscribers"]; got != float64(n/2) {
		t.Fatalf("publish woke %v, want %d", got, n/2)
	}
	if got := s.publish("b", "text/plain", "to b")["subscribers"]; got != float64(n/2) {
		t.Fatalf("publish woke %v, want %d", got, n/2)
	}
	for i, p := range polls {
		r := <-p
		want := []string{"to a", "to b"}[i%2]
		if r.status != 200 || !strings.Contains(r.body, fmt.Sprintf("%q", want)) {
			t.Fatalf("poll %d = %d %s, want %q", i, r.status, r.body, want)
		}
	}
}
