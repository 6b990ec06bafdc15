package poller

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func answered(w *Waiter) bool {
	select {
	case <-w.Done():
		return true
	default:
		return false
	}
}

func TestWakeAnswersOnlyThatChannel(t *testing.T) {
	p := New(0)
	a1, _ := p.Hold("a")
	a2, _ := p.Hold("a")
	b, _ := p.Hold("b")
	if n := p.Waiting("a"); n != 2 {
		t.Fatalf("Waiting(a) = %d, want 2", n)
	}
	if n := p.Wake("a"); n != 2 {
		t.Fatalf("Wake(a) = %d, want 2", n)
	}
	for _, w := range []*Waiter{a1, a2} {
		if !answered(w) || w.Reason() != Published {
			t.Fatalf("waiter on a: answered %v reason %v", answered(w), w.Reason())
		}
	}
	if answered(b) {
		t.Fatal("waiter on b answered by a wake of a")
	}
	if n := p.Wake("a"); n != 0 {
		t.Fatalf("second Wake(a) = %d, want 0", n)
	}
	for _, w := range []*Waiter{a1, a2, b} {
		p.Release(w)
	}
	if p.Held() != 0 {
		t.Fatalf("Held = %d after releasing all", p.Held())
	}
}

func TestGoneAndCloseReasons(t *testing.T) {
	p := New(0)
	a, _ := p.Hold("a")
	b, _ := p.Hold("b")
	if n := p.Gone("a"); n != 1 || a.Reason() != Deleted {
		t.Fatalf("Gone(a) = %d, reason %v", n, a.Reason())
	}
	p.Close()
	if !answered(b) || b.Reason() != Closed {
		t.Fatalf("after Close: answered %v reason %v", answered(b), b.Reason())
	}
	if _, err := p.Hold("c"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Hold after Close = %v, want ErrClosed", err)
	}
	p.Close() // idempotent
	p.Release(a)
	p.Release(b)
	if p.Held() != 0 {
		t.Fatalf("Held = %d", p.Held())
	}
}

func TestMaxHeldRefusesAndReleaseFreesASlot(t *testing.T) {
	p := New(2)
	w1, _ := p.Hold("a")
	w2, _ := p.Hold("b")
	if _, err := p.Hold("c"); !errors.Is(err, ErrTooMany) {
		t.Fatalf("third Hold = %v, want ErrTooMany", err)
	}
	p.Release(w1)
	p.Release(w1) // a second release must not free another slot
	w3, err := p.Hold("c")
	if err != nil {
		t.Fatalf("Hold after Release = %v", err)
	}
	if _, err := p.Hold("d"); !errors.Is(err, ErrTooMany) {
		t.Fatalf("Hold over the limit after a double release = %v, want ErrTooMany", err)
	}
	p.SetMaxHeld(0)
	w4, err := p.Hold("d")
	if err != nil {
		t.Fatalf("Hold with no limit = %v", err)
	}
	for _, w := range []*Waiter{w2, w3, w4} {
		p.Release(w)
	}
	if p.Held() != 0 {
		t.Fatalf("Held = %d", p.Held())
	}
}

func TestReleasedWaitersLeaveNoChannelState(t *testing.T) {
	p := New(0)
	var ws []*Waiter
	for _, ch := range []string{"a", "b", "c", "a"} {
		w, _ := p.Hold(ch)
		ws = append(ws, w)
	}
	p.Wake("b")
	for _, w := range ws {
		p.Release(w)
	}
	for i := range p.shards {
		if n := len(p.shards[i].channels); n != 0 {
			t.Fatalf("shard %d keeps %d channels after every waiter left", i, n)
		}
	}
}

// Every poll held before a wake is answered by it, however the two race.
func TestConcurrentHoldWakeRelease(t *testing.T) {
	p := New(0)
	const polls = 2000
	var wg sync.WaitGroup
	held := make(chan *Waiter, polls)
	for i := range polls {
		wg.Go(func() {
			w, err := p.Hold([]string{"a", "b"}[i%2])
			if err != nil {
				t.Error(err)
				return
			}
			held <- w
		})
	}
	wg.Wait()
	close(held)
	var woken int
	wg.Go(func() { woken += p.Wake("a") })
	wg.Go(func() {
		for range 100 {
			p.Waiting("b")
		}
	})
	wg.Wait()
	woken += p.Wake("b")
	if woken != polls {
		t.Fatalf("woke %d of %d", woken, polls)
	}
	for w := range held {
		<-w.Done()
		p.Release(w)
	}
	if p.Held() != 0 {
		t.Fatalf("Held = %d", p.Held())
	}
}

func BenchmarkHoldWake(b *testing.B) {
	p := New(0)
	b.ReportAllocs()
	for b.Loop() {
		w, _ := p.Hold("bench")
		p.Wake("bench")
		p.Release(w)
	}
}

func BenchmarkWake1000(b *testing.B) {
	p := New(0)
	ws := make([]*Waiter, 1000)
	b.ReportAllocs()
	for b.Loop() {
		for i := range ws {
			ws[i], _ = p.Hold("bench")
		}
		p.Wake("bench")
		for _, w := range ws {
			p.Release(w)
		}
	}
}

// A HoldFunc waiter is answered by a call, once, with the reason; it counts
// against MaxHeld like any other and Release frees its slot.
func TestHoldFuncCallsBackOnce(t *testing.T) {
	p := New(2)
	var got []Reason
	a, err := p.HoldFunc("c", func(r Reason) { got = append(got, r) })
	if err != nil || a.Done() != nil {
		t.Fatalf("HoldFunc = %v, %v; want a waiter without a done channel", a, err)
	}
	b, _ := p.HoldFunc("d", func(r Reason) { got = append(got, r) })
	if _, err := p.HoldFunc("e", func(Reason) {}); err != ErrTooMany {
		t.Fatalf("third HoldFunc over MaxHeld 2 = %v, want ErrTooMany", err)
	}
	if n := p.Wake("c"); n != 1 || len(got) != 1 || got[0] != Published || a.Reason() != Published {
		t.Fatalf("Wake = %d, calls %v", n, got)
	}
	if n := p.Wake("c"); n != 0 || len(got) != 1 {
		t.Fatalf("second Wake = %d, calls %v: called twice", n, got)
	}
	p.Release(a)
	p.Close()
	if len(got) != 2 || got[1] != Closed {
		t.Fatalf("Close: calls %v", got)
	}
	p.Release(b)
	if p.Held() != 0 {
		t.Fatalf("Held = %d after releasing both", p.Held())
	}
}

// A waiter on several channels is answered once, by the first channel
// that fires, counts as one held poll, and leaves no state behind.
func TestHoldAllAnsweredOnceByAnyChannel(t *testing.T) {
	p := New(2)
	w, err := p.HoldAll([]string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Held() != 1 || p.Waiting("a") != 1 || p.Waiting("c") != 1 {
		t.Fatalf("Held = %d, Waiting a/c = %d/%d; want 1, 1/1", p.Held(), p.Waiting("a"), p.Waiting("c"))
	}
	if n := p.Wake("b"); n != 1 {
		t.Fatalf("Wake(b) = %d, want 1", n)
	}
	<-w.Done()
	if w.Reason() != Published {
		t.Fatalf("Reason = %v", w.Reason())
	}
	if n := p.Gone("c"); n != 0 {
		t.Fatalf("Gone(c) after b answered it = %d, want 0 (answered once)", n)
	}
	p.Release(w)
	p.Release(w)
	if p.Held() != 0 || p.Waiting("a") != 0 {
		t.Fatalf("after Release: Held = %d, Waiting(a) = %d", p.Held(), p.Waiting("a"))
	}
	for i := range p.shards {
		if n := len(p.shards[i].channels); n != 0 {
			t.Fatalf("shard %d keeps %d channels after Release", i, n)
		}
	}

	var got []Reason
	f, _ := p.HoldAllFunc([]string{"x", "y"}, func(r Reason) { got = append(got, r) })
	g, _ := p.HoldAll([]string{"y", "z"})
	if _, err := p.HoldAll([]string{"q", "r"}); err != ErrTooMany {
		t.Fatalf("third poll over MaxHeld 2 = %v, want ErrTooMany", err)
	}
	p.Close()
	<-g.Done()
	if len(got) != 1 || got[0] != Closed || g.Reason() != Closed {
		t.Fatalf("Close: calls %v, g %v", got, g.Reason())
	}
	p.Release(f)
	p.Release(g)
	if _, err := p.HoldAll([]string{"a", "b"}); err != ErrClosed {
		t.Fatalf("HoldAll after Close = %v", err)
	}
	if p.Held() != 0 {
		t.Fatalf("Held = %d", p.Held())
	}
}

// Publishes on every channel of many multi-channel waiters, concurrently
// with a wake-up of every poll: each waiter answered exactly once (race
// detector, and fire's count).
func TestHoldAllConcurrentWakes(t *testing.T) {
	p := New(0)
	const n = 200
	var calls atomic.Int64
	ws := make([]*Waiter, n)
	for i := range ws {
		ws[i], _ = p.HoldAllFunc([]string{"a", "b", "c"}, func(Reason) { calls.Add(1) })
	}
	var wg sync.WaitGroup
	var woken atomic.Int64
	for _, c := range []string{"a", "b", "c"} {
		wg.Go(func() { woken.Add(int64(p.Wake(c))) })
	}
	wg.Go(func() { woken.Add(int64(p.WakeAll())) })
	wg.Wait()
	if calls.Load() != n || woken.Load() != n {
		t.Fatalf("%d callbacks, %d counted answers; want %d each", calls.Load(), woken.Load(), n)
	}
	for _, w := range ws {
		p.Release(w)
	}
	if p.Held() != 0 {
		t.Fatalf("Held = %d", p.Held())
	}
}
