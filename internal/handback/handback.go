// Package handback gives connections taken over from an *http.Server
// (hijacked) back to it, so that it reads their next request as on any
// keep-alive connection: its handlers, timeouts, connection hooks and
// shutdown apply as before.
//
// Each server gets a listener of this package's own, which the server
// Serves (http.Server.Serve takes any number of listeners); its Accept
// returns the connections handed back. The server owns that Serve
// goroutine as it owns its other listeners': Shutdown and Close close the
// listener, and the goroutine returns.
package handback

import (
	"net"
	"net/http"
	"sync"
)

// Servers hands connections back to their servers. The zero value is
// ready to use.
type Servers struct {
	mu        sync.Mutex
	listeners map[*http.Server]*listener
}

// Give hands conn, taken over from srv, back to it to serve its next
// request. It reports false, with conn untouched, when srv no longer
// serves (it is shutting down): the caller closes conn. After true the
// caller must not use conn again.
func (s *Servers) Give(srv *http.Server, conn net.Conn) bool {
	s.mu.Lock()
	l := s.listeners[srv]
	if l == nil {
		if s.listeners == nil {
			s.listeners = map[*http.Server]*listener{}
		}
		l = newListener(conn.LocalAddr())
		s.listeners[srv] = l
		go s.serve(srv, l)
	}
	s.mu.Unlock()
	return l.give(conn)
}

// serve runs srv on l until srv closes l (or was shut down already), then
// forgets l; connections still queued are closed.
func (s *Servers) serve(srv *http.Server, l *listener) {
	srv.Serve(l)
	l.Close()
	s.mu.Lock()
	if s.listeners[srv] == l {
		delete(s.listeners, srv)
	}
	s.mu.Unlock()
}

// Serving is how many servers have a listener of s now (for tests).
func (s *Servers) Serving() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.listeners)
}

// listener is a net.Listener whose Accept returns the connections given
// to it. The queue grows only while the server's accept loop lags behind.
type listener struct {
	addr  net.Addr
	ready chan struct{} // a connection was queued (capacity 1)
	done  chan struct{} // closed by Close

	mu     sync.Mutex
	queue  []net.Conn
	closed bool
}

func newListener(addr net.Addr) *listener {
	return &listener{addr: addr, ready: make(chan struct{}, 1), done: make(chan struct{})}
}

func (l *listener) give(conn net.Conn) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.queue = append(l.queue, conn)
	l.mu.Unlock()
	select {
	case l.ready <- struct{}{}:
	default:
	}
	return true
}

// Accept implements net.Listener.
func (l *listener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, net.ErrClosed
		}
		if len(l.queue) > 0 {
			c := l.queue[0]
			l.queue[0] = nil
			l.queue = l.queue[1:]
			if len(l.queue) == 0 {
				l.queue = nil // let the backing array go
			}
			l.mu.Unlock()
			return c, nil
		}
		l.mu.Unlock()
		select {
		case <-l.ready:
		case <-l.done:
		}
	}
}

// Close implements net.Listener: Accept returns net.ErrClosed, give
// false, and the connections queued are closed. Idempotent.
func (l *listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	queued := l.queue
	l.queue = nil
	l.mu.Unlock()
	close(l.done)
	for _, c := range queued {
		c.Close()
	}
	return nil
}

// Addr implements net.Listener: the address of the first connection
// given, the server's own.
func (l *listener) Addr() net.Addr { return l.addr }

var _ net.Listener = (*listener)(nil)
