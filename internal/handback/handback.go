// Package handback gives connections taken over from an *http.Server
// (hijacked) back to an *http.Server, so that it reads their next request as
// on any keep-alive connection: its handlers, timeouts, connection hooks and
// shutdown apply as before.
//
// The server is the newest one seen serving the connection's local address
// (Note): after a config reload, a connection taken over by the old server
// goes to the new one. Each server gets a listener of this package's own,
// which it Serves (http.Server.Serve takes any number of listeners); its
// Accept returns the connections handed back. The server owns that Serve
// goroutine as it owns its other listeners': Shutdown and Close close the
// listener, and the goroutine returns.
package handback

import (
	"net"
	"net/http"
	"sync"
)

// Servers hands connections back to servers. The zero value is ready to
// use.
type Servers struct {
	mu     sync.RWMutex      // read on every poll and answer, written when servers change
	byAddr map[string]*entry // local address → the newest server there
}

type entry struct {
	srv *http.Server
	l   *listener
}

// Note records that srv serves the local address addr (it took a
// connection there): connections of that address go back to srv from now
// on. Cheap when srv is already the one recorded.
func (s *Servers) Note(srv *http.Server, addr net.Addr) {
	key := addr.String()
	s.mu.RLock()
	e := s.byAddr[key]
	s.mu.RUnlock()
	if e != nil && e.srv == srv {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.byAddr[key]; e != nil && e.srv == srv {
		return // noted meanwhile
	}
	if s.byAddr == nil {
		s.byAddr = map[string]*entry{}
	}
	e = &entry{srv: srv, l: newListener(addr)}
	s.byAddr[key] = e
	go s.serve(key, e)
}

// Serving reports whether a server is recorded for addr: Give would take a
// connection of that address.
func (s *Servers) Serving(addr net.Addr) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byAddr[addr.String()] != nil
}

// Give hands conn back to the newest server of its local address to serve
// its next request. It reports false, with conn untouched, when there is
// none (it shut down): the caller closes conn. After true the caller must
// not use conn again.
func (s *Servers) Give(conn net.Conn) bool {
	s.mu.RLock()
	e := s.byAddr[conn.LocalAddr().String()]
	s.mu.RUnlock()
	return e != nil && e.l.give(conn)
}

// serve runs e's server on its listener until the server closes it (or
// was shut down already), then forgets e; connections still queued are
// closed.
func (s *Servers) serve(key string, e *entry) {
	e.srv.Serve(e.l)
	e.l.Close()
	s.mu.Lock()
	if s.byAddr[key] == e {
		delete(s.byAddr, key)
	}
	s.mu.Unlock()
}

// Count is how many addresses have a server recorded (for tests).
func (s *Servers) Count() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.byAddr)
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

// Addr implements net.Listener: the local address the server serves.
func (l *listener) Addr() net.Addr { return l.addr }

var _ net.Listener = (*listener)(nil)
