package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// stuckServer answers the longpoll profile's cursor request but holds
// every poll until the client goes away, and, if stuckPublish, every
// publish too: a server that neither answers nor fails.
func stuckServer(t *testing.T, stuckPublish bool) *httptest.Server {
	release := make(chan struct{}) // the test is over: let the handlers go
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/pub/") && r.Method == "GET":
			io.WriteString(w, `{"cursor":"0"}`)
		case strings.HasPrefix(r.URL.Path, "/pub/") && !stuckPublish:
			io.WriteString(w, "ok")
		default:
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	return srv
}

// TestDeadlinesEndStuckScenarios checks that a fan-out round whose polls
// are never answered fails at -round-deadline, and a scenario whose
// publishes never return fails at -deadline, each soon after, with an
// error saying which.
func TestDeadlinesEndStuckScenarios(t *testing.T) {
	for _, tc := range []struct {
		name, scenario string
		stuckPublish   bool
		o              options
		want           string
	}{
		{"round", "fanout", false, options{n: 3, rounds: 2, roundDeadline: 300 * time.Millisecond, deadline: time.Minute}, "fanout round 0: gave up at -round-deadline"},
		{"whole", "latency", true, options{count: 5, every: 10 * time.Millisecond, roundDeadline: time.Minute, deadline: 300 * time.Millisecond}, "gave up at -deadline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := stuckServer(t, tc.stuckPublish)
			o := tc.o
			o.profile, o.channels = "longpoll", 1
			o.pollURL, o.pubURL, o.sources = srv.URL+"/poll/{ch}", srv.URL+"/pub/{ch}", "127.0.0.1"
			l := newLoader(o, longpollProfile{})
			began := time.Now()
			_, err := l.run(context.Background(), tc.scenario)
			if took := time.Since(began); took > 5*time.Second {
				t.Errorf("%s took %v", tc.scenario, took)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%s: err %v, want one saying %q", tc.scenario, err, tc.want)
			}
			if tc.name == "whole" && !errors.Is(err, errDeadline) {
				t.Errorf("err %v is not errDeadline", err)
			}
		})
	}
}
