// Package poller knows which polls are held on which channel and wakes them:
// when a message is published, when a channel is deleted, or when the whole
// poller closes. It imports nothing from Caddy or the store.
//
// A held poll costs one small Waiter and no goroutine: the request goroutine
// that holds it selects on Waiter.Done with its own timer and context.
package poller

import (
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// Reason says why a waiter was answered.
type Reason uint8

const (
	// Published: something was published to the channel.
	Published Reason = iota + 1
	// Deleted: the channel was deleted.
	Deleted
	// Closed: the poller closed (shutdown, or its store was replaced).
	Closed
)

func (r Reason) String() string {
	switch r {
	case Published:
		return "published"
	case Deleted:
		return "deleted"
	case Closed:
		return "closed"
	}
	return "unknown"
}

var (
	// ErrTooMany is returned by Hold when MaxHeld polls are held already.
	ErrTooMany = errors.New("too many held polls")
	// ErrClosed is returned by Hold after Close.
	ErrClosed = errors.New("poller closed")
)

// Waiter is one held poll, on one channel or several. Its owner must call
// Poller.Release exactly once.
type Waiter struct {
	channel string
	more    []string      // the further channels of a poll on several
	done    chan struct{} // nil for a waiter made by HoldFunc
	notify  func(Reason)  // HoldFunc's callback
	reason  Reason        // written once, before done is closed
	fired   atomic.Bool   // answered: a waiter on several channels is answered once
	// released is guarded by the lock of the shard of channel.
	released bool
}

// fire answers w, unless it was answered already (through another of its
// channels): closes done, or calls the HoldFunc callback. It reports
// whether it answered w.
func (w *Waiter) fire(r Reason) bool {
	if !w.fired.CompareAndSwap(false, true) {
		return false
	}
	w.reason = r
	if w.notify != nil {
		w.notify(r)
		return true
	}
	close(w.done)
	return true
}

// Done is closed when the waiter is answered; Reason then says why.
func (w *Waiter) Done() <-chan struct{} { return w.done }

// Reason says why Done was closed; valid only after it was.
func (w *Waiter) Reason() Reason { return w.reason }

// Channel is the channel the waiter waits on (the first, for a waiter on
// several).
func (w *Waiter) Channel() string { return w.channel }

// channels calls f with each of the waiter's channels.
func (w *Waiter) channels(f func(string)) {
	f(w.channel)
	for _, c := range w.more {
		f(c)
	}
}

const shardCount = 64

// Poller is the registry of held polls. The zero value is not usable; use New.
type Poller struct {
	seed    maphash.Seed
	maxHeld atomic.Int64 // 0: no limit
	held    atomic.Int64
	closed  atomic.Bool
	shards  [shardCount]shard
}

type shard struct {
	mu       sync.Mutex
	channels map[string]map[*Waiter]struct{}
}

// New returns a poller that holds at most maxHeld polls at once (0: no limit).
func New(maxHeld int) *Poller {
	p := &Poller{seed: maphash.MakeSeed()}
	p.maxHeld.Store(int64(maxHeld))
	for i := range p.shards {
		p.shards[i].channels = make(map[string]map[*Waiter]struct{})
	}
	return p
}

// SetMaxHeld changes the limit on held polls (0: no limit). Polls already
// held stay held.
func (p *Poller) SetMaxHeld(n int) { p.maxHeld.Store(int64(n)) }

// Held is the number of polls held now.
func (p *Poller) Held() int { return int(p.held.Load()) }

func (p *Poller) shard(channel string) *shard {
	return &p.shards[maphash.String(p.seed, channel)%shardCount]
}

// Hold registers a poll on channel. The caller must call Release when done
// with the waiter, whether or not it was answered.
func (p *Poller) Hold(channel string) (*Waiter, error) {
	return p.hold(&Waiter{channel: channel, done: make(chan struct{})})
}

// HoldFunc is Hold for a poll that no goroutine waits on: when the poll is
// answered, notify is called once with the reason, from the goroutine that
// answers it (a publisher's): it must not block. Done is nil for such a
// waiter. The caller must still call Release.
func (p *Poller) HoldFunc(channel string, notify func(Reason)) (*Waiter, error) {
	return p.hold(&Waiter{channel: channel, notify: notify})
}

// HoldAll is Hold for a poll on several channels (at least one, each
// once): the waiter is answered once, by the first publish (or deletion)
// on any of them, and counts as one held poll.
func (p *Poller) HoldAll(channels []string) (*Waiter, error) {
	return p.hold(&Waiter{channel: channels[0], more: channels[1:], done: make(chan struct{})})
}

// HoldAllFunc is HoldFunc for a poll on several channels, as HoldAll.
func (p *Poller) HoldAllFunc(channels []string, notify func(Reason)) (*Waiter, error) {
	return p.hold(&Waiter{channel: channels[0], more: channels[1:], notify: notify})
}

func (p *Poller) hold(w *Waiter) (*Waiter, error) {
	limit := p.maxHeld.Load()
	if n := p.held.Add(1); limit > 0 && n > limit {
		p.held.Add(-1)
		return nil, ErrTooMany
	}
	// closed is checked under each shard lock: Close marks closed before
	// it sweeps the shards, so a waiter registered in a shard where
	// closed was false is answered by Close's sweep of that shard. Refused
	// if that is not so on its first channel; on a later one, closed is
	// seen after it was registered on the first: Close answers it there.
	first := true
	refused := false
	w.channels(func(channel string) {
		if refused {
			return
		}
		s := p.shard(channel)
		s.mu.Lock()
		defer s.mu.Unlock()
		if p.closed.Load() {
			refused = first
			return
		}
		first = false
		set := s.channels[channel]
		if set == nil {
			set = make(map[*Waiter]struct{})
			s.channels[channel] = set
		}
		set[w] = struct{}{}
	})
	if refused {
		p.held.Add(-1)
		return nil, ErrClosed
	}
	return w, nil
}

// Release unregisters w. It is safe to call after w was answered, and only
// the first call counts.
func (p *Poller) Release(w *Waiter) {
	s := p.shard(w.channel)
	s.mu.Lock()
	if w.released {
		s.mu.Unlock()
		return
	}
	w.released = true
	s.forget(w, w.channel)
	s.mu.Unlock()
	for _, c := range w.more {
		s := p.shard(c)
		s.mu.Lock()
		s.forget(w, c)
		s.mu.Unlock()
	}
	p.held.Add(-1)
}

// forget removes w from channel's set, if it is there. The caller holds
// s.mu.
func (s *shard) forget(w *Waiter, channel string) {
	if set := s.channels[channel]; set != nil {
		if _, ok := set[w]; ok {
			delete(set, w)
			if len(set) == 0 {
				delete(s.channels, channel)
			}
		}
	}
}

// Wake answers every poll held on channel with Published and returns how
// many (a poll on several channels answered through another one already
// is not counted).
func (p *Poller) Wake(channel string) int { return p.answer(channel, Published) }

// Gone answers every poll held on channel with Deleted and returns how many.
func (p *Poller) Gone(channel string) int { return p.answer(channel, Deleted) }

func (p *Poller) answer(channel string, r Reason) int {
	s := p.shard(channel)
	s.mu.Lock()
	set := s.channels[channel]
	delete(s.channels, channel)
	s.mu.Unlock()
	// The set is ours now. A waiter on several channels may also be in
	// another channel's set: fire answers it once.
	n := 0
	for w := range set {
		if w.fire(r) {
			n++
		}
	}
	return n
}

// WakeAll answers every held poll with Published, so that each reads the
// store again, and returns how many.
func (p *Poller) WakeAll() int { return p.answerAll(Published) }

// Waiting is the number of polls held on channel.
func (p *Poller) Waiting(channel string) int {
	s := p.shard(channel)
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.channels[channel])
}

// Close answers every held poll with Closed and refuses new ones. It is
// idempotent.
func (p *Poller) Close() {
	p.closed.Store(true)
	p.answerAll(Closed)
}

func (p *Poller) answerAll(r Reason) int {
	n := 0
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.Lock()
		channels := s.channels
		s.channels = make(map[string]map[*Waiter]struct{})
		s.mu.Unlock()
		for _, set := range channels {
			for w := range set {
				if w.fire(r) {
					n++
				}
			}
		}
	}
	return n
}
