package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// TestTLSPollers checks that over https each poller has a connection of
// its own, kept across its polls, speaking the protocol -proto asks for.
func TestTLSPollers(t *testing.T) {
	for _, c := range []struct{ proto, want string }{{"h2", "HTTP/2.0"}, {"h1", "HTTP/1.1"}} {
		t.Run(c.proto, func(t *testing.T) {
			var mu sync.Mutex
			protos, conns := map[string]int{}, map[string]bool{}
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				protos[r.Proto]++
				conns[r.RemoteAddr] = true
				mu.Unlock()
				io.WriteString(w, "m")
			}))
			srv.EnableHTTP2 = true
			srv.StartTLS()
			defer srv.Close()
			l := newLoader(options{pollURL: srv.URL + "/sub/{ch}", insecure: true, proto: c.proto, sources: "127.0.0.1"}, bareProfile{})
			for range 2 { // each poller polls twice
				for i := range 3 {
					if _, err := l.poll(context.Background(), l.pollClient(i), "c", cursor{}, nil, ""); err != nil {
						t.Fatal(err)
					}
				}
			}
			if protos[c.want] != 6 || len(conns) != 3 {
				t.Errorf("protocols %v over %d connections; want 6 polls over %s on 3", protos, len(conns), c.want)
			}
		})
	}
}
