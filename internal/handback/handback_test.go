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
// by the same server; after Shutdown the server's address is forgotten and
// a connection handed back is refused.
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
		servers.Note(s, conn.LocalAddr())
		body := "answer to " + r.URL.Path
		fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		if !servers.Give(conn) {
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
	if servers.Count() != 1 {
		t.Fatalf("Count = %d, want 1", servers.Count())
	}
	tr.CloseIdleConnections()
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-served
	// serve forgets the listener just after Serve returns.
	waitFor(t, func() bool { return servers.Count() == 0 })
	// Its address is forgotten: a connection from there is refused.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if servers.Serving(ln.Addr()) {
		t.Fatal("Serving an address whose server shut down")
	}
	if servers.Give(&localConn{a, ln.Addr()}) {
		t.Fatal("Give after Shutdown = true")
	}
	// Noted after it shut down (a request of the old server still
	// running after a reload): its Serve returns at once and the address
	// is forgotten again.
	servers.Note(srv, ln.Addr())
	waitFor(t, func() bool { return servers.Count() == 0 })
	select {
	case <-refused:
		t.Fatal("a connection was refused while the server served")
	default:
	}
}

// localConn is a conn with the local address of another.
type localConn struct {
	net.Conn
	addr net.Addr
}

func (c *localConn) LocalAddr() net.Addr { return c.addr }

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
