package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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

	var st originStats
	res, err = http.Get(origin.URL + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil || st != (originStats{PollRequests: 2, Publishes: 1}) {
		t.Fatalf("stats = %+v, %v; want 2 polls, 1 publish", st, err)
	}
}
