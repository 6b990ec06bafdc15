package connwatch

import (
	"net"
	"testing"

	"go.uber.org/goleak"
)

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	return server, client
}

func TestWatcherReportsClientGoneOnceAndStopsCleanly(t *testing.T) {
	defer goleak.VerifyNone(t)
	epoll, err := New()
	if err != nil {
		t.Fatal(err)
	}
	for name, w := range map[string]Watcher{"best": epoll, "fallback": NewFallback()} {
		t.Run(name, func(t *testing.T) {
			// A client that closes is reported, once.
			srv, cli := pair(t)
			gone := make(chan struct{}, 2)
			w.Watch(srv, func() { gone <- struct{}{} })
			cli.Close()
			<-gone
			srv.Close()

			// A client that sends something is reported too.
			srv, cli = pair(t)
			w.Watch(srv, func() { gone <- struct{}{} })
			cli.Write([]byte("x"))
			<-gone
			srv.Close()
			cli.Close()

			// A forgotten connection closed by the server side: the
			// watcher lets go of it (Close below would wait forever on
			// the fallback's goroutine otherwise).
			srv, cli = pair(t)
			tok := w.Watch(srv, func() {})
			w.Forget(tok)
			srv.Close()
			cli.Close()
			w.Forget(tok) // twice: harmless
			if len(gone) != 0 {
				t.Fatalf("gone called %d times too many", len(gone))
			}
		})
		w.Close()
	}
}

// A released connection is not watched any more and can be watched again
// and read by its new owner; the epoll watcher releases it (the fallback,
// whose goroutine reads it, does not), and never one already reported.
func TestReleaseLetsTheConnectionBeReadAgain(t *testing.T) {
	defer goleak.VerifyNone(t)
	epoll, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer epoll.Close()
	srv, cli := pair(t)
	defer cli.Close()
	defer srv.Close()
	gone := make(chan string, 4)
	for round := range 3 { // watched, released, watched again...
		tok := epoll.Watch(srv, func() { gone <- "watched" })
		if tok&fallbackBit != 0 {
			t.Fatal("a TCP connection went to the fallback: watched again without leaving the epoll set?")
		}
		if !epoll.Release(tok) {
			t.Fatalf("round %d: Release = false", round)
		}
		cli.Write([]byte{byte('a' + round)})
		b := make([]byte, 1)
		if _, err := srv.Read(b); err != nil || b[0] != byte('a'+round) {
			t.Fatalf("round %d: the new owner read %q, %v", round, b, err)
		}
	}
	// Reported, then released: false.
	tok := epoll.Watch(srv, func() { gone <- "reported" })
	cli.Write([]byte("z"))
	if g := <-gone; g != "reported" {
		t.Fatalf("a released watch fired: %s", g)
	}
	if epoll.Release(tok) {
		t.Fatal("Release after gone = true")
	}
	if len(gone) != 0 {
		t.Fatalf("%d more gone calls", len(gone))
	}

	fb := NewFallback()
	s2, c2 := pair(t)
	if fb.Release(fb.Watch(s2, func() {})) {
		t.Fatal("the fallback released a connection its goroutine reads")
	}
	s2.Close()
	c2.Close()
	fb.Close()
}
