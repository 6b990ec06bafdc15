package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestOriginCountsPollRequests checks that GET /stats counts the polls
// (held or answered) and the publishes the origin served.
func TestOriginCountsPollRequests(t *testing.T) {
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "Published\n")
	}))
	defer proxy.Close()
	origin := httptest.NewServer(&gripOrigin{pushpin: proxy.URL + "/publish/", client: proxy.Client(), channels: map[string]*originChannel{}})
	defer origin.Close()

	get := func(path string) *http.Response {
		t.Helper()
		res, err := http.Get(origin.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	if res := get("/sub/a?since=0"); res.Header.Get("Grip-Hold") != "response" {
		t.Fatalf("a poll with nothing new: Grip-Hold %q, want response", res.Header.Get("Grip-Hold"))
	}
	res, err := http.Post(origin.URL+"/pub/a", "text/plain", strings.NewReader("hi"))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("publish: %v %v", res, err)
	}
	res.Body.Close()
	if res := get("/sub/a?since=0"); res.Header.Get("Grip-Hold") != "" {
		t.Fatal("a poll behind the channel was held, want the message at once")
	}
	get("/pub/a") // the cursor: not a poll
	for range 2 { // one poll asked for twice (a proxy's retry): one distinct poll
		req, _ := http.NewRequest("GET", origin.URL+"/sub/a?since=1", nil)
		req.Header.Set(pollHeader, "p1")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}

	var st originStats
	res, err = http.Get(origin.URL + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil || st != (originStats{PollRequests: 4, DistinctPolls: 3, Publishes: 1}) {
		t.Fatalf("stats = %+v, %v; want 4 poll requests, 3 distinct polls, 1 publish", st, err)
	}
}

// TestPaceWindowWaitsForTheOrigin checks that under -window a poll is
// opened only once the origin has taken in (or the loader has seen fail)
// enough of the polls before it.
func TestPaceWindowWaitsForTheOrigin(t *testing.T) {
	var polls atomic.Int64
	stats := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeOriginJSON(w, originStats{PollRequests: polls.Load(), DistinctPolls: polls.Load()})
	}))
	defer stats.Close()
	l := newLoader(options{origin: stats.URL, window: 2}, longpollProfile{})
	ctx := context.Background()
	b, err := l.newBurst(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // within the window
		if err := l.pace(ctx, i, b); err != nil {
			t.Fatal(err)
		}
	}
	paced := make(chan error)
	go func() { paced <- l.pace(ctx, 2, b) }()
	select {
	case err := <-paced:
		t.Fatalf("poll 2 opened with 2 on their way (err %v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	polls.Add(1) // poll 0 reached the origin
	if err := <-paced; err != nil {
		t.Fatal(err)
	}
	go func() { paced <- l.pace(ctx, 3, b) }()
	b.ended.Add(1) // poll 1 failed on the way: it is not on its way any more
	if err := <-paced; err != nil {
		t.Fatal(err)
	}
}
