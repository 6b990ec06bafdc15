package longpoll

import (
	"testing"
	"time"
)

// WaitFor is waitFor for the external tests.
var WaitFor = waitFor

// waitFor polls cond until it holds; the deadline only guards against a hang.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// WakeAll wakes every poll held by every store in the pool, as the Redis
// store does when its connection comes back, and returns how many.
func WakeAll() int {
	n := 0
	pool.Range(func(_, v any) bool {
		n += v.(*shared).poller.WakeAll()
		return true
	})
	return n
}

// Parked is the number of parked polls of every store in the pool.
func Parked() int {
	n := 0
	pool.Range(func(_, v any) bool {
		p := v.(*shared).parked
		p.mu.Lock()
		n += len(p.polls)
		p.mu.Unlock()
		return true
	})
	return n
}
