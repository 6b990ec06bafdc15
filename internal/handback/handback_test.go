package handback

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A handler takes every connection over, answers on it itself and hands
// it back: the client's next requests arrive on the same connection, served
// by the same server; after Shutdown the listener is gone and a connection
// handed back is refused.
func TestGiveServesTheNextRequest(t *testing.T) {
	var servers Servers
	var srv *http.Server
	refused := make(chan bool, 1)
	srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := r.Context().Value(http.ServerContextKey).(*http.Server)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		body := "answer to " + r.URL.Path
		fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		if !servers.Give(s, conn) {
			conn.Close()
			refused <- true
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { srv.Serve(ln); close(served) }()

	tr := &http.Transport{MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var conns []string
	for i := range 3 {
		var local string
		trace := &httptrace.ClientTrace{GotConn: func(c httptrace.GotConnInfo) { local = c.Conn.LocalAddr().String() }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", fmt.Sprintf("http://%s/%d", ln.Addr(), i), nil)
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != fmt.Sprintf("answer to /%d", i) {
			t.Fatalf("request %d: %q", i, b)
		}
		conns = append(conns, local)
	}
	if conns[0] != conns[1] || conns[1] != conns[2] {
		t.Fatalf("requests on connections %v, want one", conns)
	}
	if servers.Serving() != 1 {
		t.Fatalf("Serving = %d, want 1", servers.Serving())
	}
	tr.CloseIdleConnections()
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-served
	// serve forgets the listener just after Serve returns.
	waitFor(t, func() bool { return servers.Serving() == 0 })
	// A connection handed back to a server that is shut down: the
	// listener made for it is closed at once, and so is the connection.
	a, b := net.Pipe()
	defer b.Close()
	if servers.Give(srv, a) {
		if _, err := b.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("a connection given to a shut-down server: read %v, want EOF", err)
		}
	}
	waitFor(t, func() bool { return servers.Serving() == 0 })
	select {
	case <-refused:
		t.Fatal("a connection was refused while the server served")
	default:
	}
}

// waitFor polls cond until it holds; the deadline only guards against a
// hang.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("gave up waiting")
		}
		time.Sleep(time.Millisecond)
	}
}
