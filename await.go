package longpoll

import (
	"context"
	"sync"
	"time"

	"github.com/caddy-longpoll/longpoll/poller"
	"github.com/caddy-longpoll/longpoll/store"
)

// An await is one poll waiting for messages on its channel, or on several:
// the one hold-then-read loop that every way of serving a poll uses. Its
// rules:
//
//  1. Hold before reading the store. The poll is registered with the
//     poller first and the store read second, so a message appended after
//     the read wakes the poll: nothing falls between the two.
//  2. A woken poll reads before holding again. After a publish the store
//     almost always has the message; holding again first would only cost
//     a round trip through the poller's lock. Only when the read finds
//     nothing new (a wake-up for every poll, such as after a Redis outage)
//     is the poll held again and the store read once more (rule 1).
//  3. Messages after the cursor, or a gap, are answered at once, whether
//     or not the poll could be held: a poll refused by max_held still gets
//     what is waiting for it.
//  4. Nothing new and the poller refuses to hold the poll (max_held
//     reached, or the poller is closing): refused, 503. The same after a
//     wake-up as for a new poll.
//  5. A read that finds nothing new moves the cursor to the store's tail
//     (a poll without a cursor then waits for the next message; a 304
//     carries that tail).
//  6. Deleted while held: 410. The poller closed (shutdown, or the store
//     replaced by a reload): 304, so the client polls again into whatever
//     replaced it. The timeout, or the process exiting: 304.
//  7. A cursor the store cannot place (a gap) that ends in the suffix
//     Caddy's encode handler appends to an ETag ("-gzip") is placed
//     without it, if that places it (see encodingSuffixes).
//  8. A store failure is answered as such (503 when the store could not be
//     reached); when the client has gone meanwhile nothing is answered.
//  9. A poll on several channels is held once, on all of them (the first
//     publish or deletion on any answers it), and each read reads the
//     channels in order: the first with messages after its cursor, or a
//     gap, is the answer (rule 3); the others' cursors move to their
//     tails (rule 5). A deletion of any of them is rule 6's 410.
//
// Two forms share these steps: wait, for a goroutine that blocks until the
// verdict (held polls), and asyncAwait, driven by events and callbacks, for
// a poll no goroutine waits on (parked polls).
type await struct {
	poller *poller.Poller
	store  store.Store
	// subs are the channels the poll waits on, at least one, each with
	// its cursor.
	subs   []sub
	waiter *poller.Waiter // nil when not held
	woken  bool           // by a publish: read before holding again
	// notify, if set, makes holds callbacks (HoldFunc) instead of
	// channels: the async form.
	notify func(poller.Reason)
}

// sub is one channel of an await and the poll's place in it.
type sub struct {
	channel string
	// cursor is the poll's cursor; after a read with nothing new, the
	// store's tail.
	cursor string
}

// newAwait returns the await of a poll on one channel from cursor.
func newAwait(p *poller.Poller, st store.Store, channel, cursor string) await {
	return await{poller: p, store: st, subs: []sub{{channel, cursor}}}
}

// outcome is how an await ended.
type outcome uint8

const (
	waiting     outcome = iota // held; not an end
	answered                   // Result has messages or a gap
	refused                    // the poller would not hold it: Err
	failed                     // the store failed: Err
	deleted                    // the channel was deleted
	notModified                // timeout, poller closed, or process exit
	gone                       // the client went away: answer nothing
)

// verdict is the end of an await: how the poll is to be answered.
type verdict struct {
	outcome outcome
	result  store.Result // answered
	sub     int          // answered: the index of the sub result is of
	err     error        // refused, failed
	timeout bool         // notModified because the poll's time was up
}

// hold registers the poll with the poller.
func (a *await) hold() error {
	var err error
	switch {
	case len(a.subs) > 1:
		channels := make([]string, len(a.subs))
		for i, s := range a.subs {
			channels[i] = s.channel
		}
		if a.notify != nil {
			a.waiter, err = a.poller.HoldAllFunc(channels, a.notify)
		} else {
			a.waiter, err = a.poller.HoldAll(channels)
		}
	case a.notify != nil:
		a.waiter, err = a.poller.HoldFunc(a.subs[0].channel, a.notify)
	default:
		a.waiter, err = a.poller.Hold(a.subs[0].channel)
	}
	return err
}

// release unregisters the poll, if it is held.
func (a *await) release() {
	if a.waiter != nil {
		a.poller.Release(a.waiter)
		a.waiter = nil
	}
}

// read is rules 1 to 5, 7, 8 and 9: it ends with a verdict, or waiting with
// the poll held.
func (a *await) read(ctx context.Context) verdict {
	for {
		var holdErr error
		if !a.woken && a.waiter == nil {
			holdErr = a.hold()
		}
		for i := range a.subs {
			s := &a.subs[i]
			res, err := a.store.Since(ctx, s.channel, s.cursor)
			if err != nil {
				a.release()
				if ctx.Err() != nil {
					return verdict{outcome: gone}
				}
				return verdict{outcome: failed, err: err}
			}
			if res.Gap {
				if c, ok := withoutEncoding(s.cursor); ok {
					if r2, err := a.store.Since(ctx, s.channel, c); err == nil && !r2.Gap {
						s.cursor, res = c, r2
					}
				}
			}
			if len(res.Messages) > 0 || res.Gap {
				a.release()
				return verdict{outcome: answered, result: res, sub: i}
			}
			s.cursor = res.Cursor
		}
		if a.woken { // nothing new after all: hold, and read again
			a.woken = false
			continue
		}
		if holdErr != nil {
			return verdict{outcome: refused, err: holdErr}
		}
		return verdict{outcome: waiting}
	}
}

// wake takes the wake-up of a held poll (rule 6): the verdict, or for a
// publish waiting, meaning "read again".
func (a *await) wake(r poller.Reason) verdict {
	a.release()
	switch r {
	case poller.Published:
		a.woken = true
		return verdict{outcome: waiting}
	case poller.Deleted:
		return verdict{outcome: deleted}
	default: // closed
		return verdict{outcome: notModified}
	}
}

// wait is the blocking form: it holds the poll until its verdict, for at
// most timeout, or until exiting is closed or ctx is done.
func (a *await) wait(ctx context.Context, timeout time.Duration, exiting <-chan struct{}) verdict {
	v := a.read(ctx)
	if v.outcome != waiting {
		return v
	}
	timer := time.NewTimer(timeout) // made only when the poll waits
	defer timer.Stop()
	for {
		select {
		case <-a.waiter.Done():
			if v := a.wake(a.waiter.Reason()); v.outcome != waiting {
				return v
			}
			if v := a.read(ctx); v.outcome != waiting {
				return v
			}
		case <-exiting:
			a.release()
			return verdict{outcome: notModified}
		case <-timer.C:
			a.release()
			return verdict{outcome: notModified, timeout: true}
		case <-ctx.Done():
			a.release()
			return verdict{outcome: gone}
		}
	}
}

// event is what can happen to an async await, lowest priority first: when
// several arrive while a step runs, the highest is handled next.
type event uint8

const (
	evNone event = iota
	evPublished
	evTimeout
	evClosed
	evDeleted
	evExit
	evGone
)

// asyncAwait is the callback form of an await. Events (wake-ups from the
// poller, the timer, the client going away, the process exiting) may come
// from any goroutine at any time; one step runs at a time, on a goroutine
// of start's, and events arriving meanwhile are handled after it. done is
// called once, with the verdict, on that goroutine.
type asyncAwait struct {
	a     await
	owner stepRunner
	done  func(verdict)

	mu       sync.Mutex
	running  bool  // a step runs (or the first read, before park)
	pending  event // arrived while running
	finished bool
	timer    *time.Timer
}

// stepRunner runs the steps of async awaits on goroutines it owns, stops
// them and waits for them.
type stepRunner interface {
	// start runs f on a goroutine of the runner's; false (f not run) once
	// the runner is closing.
	start(f func()) bool
}

// newAsyncAwait returns an await in the callback form, running: its first
// read is the caller's (begin), in the request's goroutine.
func newAsyncAwait(a await, owner stepRunner, done func(verdict)) *asyncAwait {
	x := &asyncAwait{a: a, owner: owner, done: done, running: true}
	x.a.notify = x.wakeUp
	return x
}

// begin is the first read, in the caller's goroutine. A verdict other than
// waiting ends the await (done is not called: the caller answers it).
func (x *asyncAwait) begin(ctx context.Context) verdict {
	v := x.a.read(ctx)
	if v.outcome != waiting {
		x.mu.Lock()
		x.finished, x.running = true, false
		x.mu.Unlock()
	}
	return v
}

// abandon ends an await that began waiting but will not be parked; the
// caller serves the poll another way.
func (x *asyncAwait) abandon() {
	x.mu.Lock()
	x.finished, x.running = true, false
	x.mu.Unlock()
	x.a.release()
}

// park lets events through once the first read found nothing: from now on
// the await runs on its own, for at most timeout.
func (x *asyncAwait) park(timeout time.Duration) {
	x.mu.Lock()
	x.timer = time.AfterFunc(timeout, x.timedOut)
	x.running = false
	e := x.pending
	x.pending = evNone
	x.mu.Unlock()
	if e != evNone {
		x.event(e)
	}
}

func (x *asyncAwait) timedOut() { x.event(evTimeout) }

// wakeUp is the poller's callback; it runs in a publisher's goroutine.
func (x *asyncAwait) wakeUp(r poller.Reason) {
	switch r {
	case poller.Published:
		x.event(evPublished)
	case poller.Deleted:
		x.event(evDeleted)
	default:
		x.event(evClosed)
	}
}

// event hands e to the await without blocking: a step is started for it,
// or it waits for the running one.
func (x *asyncAwait) event(e event) {
	x.mu.Lock()
	if x.finished {
		x.mu.Unlock()
		return
	}
	if x.running {
		x.pending = max(x.pending, e)
		x.mu.Unlock()
		return
	}
	// Under x.mu, so that whoever sees running also sees a started step.
	if x.owner.start(func() { x.step(e) }) {
		x.running = true
		x.mu.Unlock()
		return
	}
	// The owner is closing and starts no more steps: the process exits or
	// the store closes; end here, as finish would.
	x.finished = true
	if x.timer != nil {
		x.timer.Stop()
	}
	x.mu.Unlock()
	x.done(x.apply(evExit))
}

// step handles e and the events that arrive while it runs, until the poll
// is answered or waits again.
func (x *asyncAwait) step(e event) {
	for {
		v := x.apply(e)
		x.mu.Lock()
		if v.outcome == waiting {
			if x.pending != evNone {
				e, x.pending = x.pending, evNone
				x.mu.Unlock()
				continue
			}
			x.running = false
			x.mu.Unlock()
			return
		}
		x.finished, x.running = true, false
		if x.timer != nil {
			x.timer.Stop()
		}
		x.mu.Unlock()
		x.done(v)
		return
	}
}

// finish ends the await now with e (evExit or evGone) unless a step runs,
// which then handles e next; it reports whether it ended the await, in
// which case done was called.
func (x *asyncAwait) finish(e event) bool {
	x.mu.Lock()
	if x.finished {
		x.mu.Unlock()
		return false
	}
	if x.running {
		x.pending = max(x.pending, e)
		x.mu.Unlock()
		return false
	}
	x.finished = true
	if x.timer != nil {
		x.timer.Stop()
	}
	x.mu.Unlock()
	x.done(x.apply(e))
	return true
}

// apply is one event's effect on the await, by the rules of await.
func (x *asyncAwait) apply(e event) verdict {
	a := &x.a
	switch e {
	case evPublished:
		a.wake(poller.Published)
		// No request waits, so no context but the background: the
		// store's own timeouts bound the read (go-redis's read and
		// pool timeouts; the memory store does not block). A context
		// with a deadline per woken poll was a tenth of a fan-out.
		return a.read(context.Background())
	case evDeleted:
		return a.wake(poller.Deleted)
	case evClosed:
		return a.wake(poller.Closed)
	case evTimeout:
		a.release()
		return verdict{outcome: notModified, timeout: true}
	case evExit:
		a.release()
		return verdict{outcome: notModified}
	}
	a.release()
	return verdict{outcome: gone}
}
