// Package connwatch tells when the client of a connection taken over from
// net/http goes away, without a goroutine per connection where the platform
// allows it (epoll on Linux). A watched connection is reported once, when it
// becomes readable: the client closed it, reset it, or sent something.
package connwatch

import (
	"crypto/tls"
	"net"
	"sync"
)

// A Watcher watches connections. Watch, Forget and Close are safe for
// concurrent use.
type Watcher interface {
	// Watch calls gone once, from the watcher's own goroutine, when conn
	// becomes readable; gone must not block. The returned Token is for
	// Forget. Close conn only after Forget, or after gone was called.
	Watch(conn net.Conn, gone func()) Token
	// Forget stops watching the connection of t. A gone already on its
	// way may still be called once, so gone must tolerate a late call.
	// Forgetting twice, or after gone, is harmless.
	Forget(t Token)
	// Release is Forget for a connection that is to be read again by
	// someone else (handed back to net/http): it reports whether that is
	// safe, the watcher having stopped watching it and read nothing from
	// it. False when gone was called (or is on its way) or when the
	// watcher reads the connection itself (the fallback): then close it.
	Release(t Token) bool
	// Close stops the watcher and waits for its goroutines. Connections
	// still watched must have been closed (or forgotten) first: a watching
	// goroutine of the fallback ends only when its connection closes.
	Close()
}

// Token names one watched connection.
type Token uint64

// New returns the best watcher of the platform: one epoll set and one
// goroutine on Linux (with a goroutine per connection for a connection
// without a file descriptor); a goroutine per connection elsewhere.
func New() (Watcher, error) { return newWatcher() }

// NewFallback returns the portable watcher: a goroutine per connection,
// blocked in a one-byte Read.
func NewFallback() Watcher { return &readWatcher{registry: newRegistry()} }

// registry holds the gone callbacks of the watched connections by token.
type registry struct {
	mu   sync.Mutex
	next Token
	gone map[Token]func()
}

func newRegistry() registry { return registry{gone: map[Token]func(){}} }

// fire calls the callback of t and forgets it, unless t was forgotten.
func (r *registry) fire(t Token) {
	r.mu.Lock()
	f := r.gone[t]
	delete(r.gone, t)
	r.mu.Unlock()
	if f != nil {
		f()
	}
}

// forget drops t.
func (r *registry) forget(t Token) {
	r.mu.Lock()
	delete(r.gone, t)
	r.mu.Unlock()
}

// netConn unwraps a TLS connection to the connection under it: readable
// there means the client sent something or went away.
func netConn(conn net.Conn) net.Conn {
	if tc, ok := conn.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return conn
}

// readWatcher watches each connection with a goroutine blocked in Read.
type readWatcher struct {
	registry
	wg sync.WaitGroup
}

func (w *readWatcher) Watch(conn net.Conn, gone func()) Token {
	w.mu.Lock()
	w.next++
	t := w.next
	w.gone[t] = gone
	w.wg.Add(1)
	w.mu.Unlock()
	go func() {
		defer w.wg.Done()
		var b [1]byte
		netConn(conn).Read(b[:])
		w.fire(t)
	}()
	return t
}

func (w *readWatcher) Forget(t Token) { w.forget(t) }

// Release is false: the watching goroutine reads the connection until it
// closes.
func (w *readWatcher) Release(t Token) bool {
	w.forget(t)
	return false
}

func (w *readWatcher) Close() { w.wg.Wait() }
