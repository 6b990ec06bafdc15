package longpoll

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/caddy-longpoll/longpoll/poller"
	"github.com/caddy-longpoll/longpoll/store"
)

// hookedStore is a real memory store whose Since calls a hook first (to
// fail, or to act in the middle of an await).
type hookedStore struct {
	store.Store
	calls  atomic.Int32
	before func(call int) error // may be nil
}

func (s *hookedStore) Since(ctx context.Context, channel, cursor string) (store.Result, error) {
	n := int(s.calls.Add(1))
	if s.before != nil {
		if err := s.before(n); err != nil {
			return store.Result{}, err
		}
	}
	return s.Store.Since(ctx, channel, cursor)
}

// testRunner is a stepRunner owning its goroutines, as parkedPolls does.
type testRunner struct{ wg sync.WaitGroup }

func (r *testRunner) start(f func()) bool {
	r.wg.Go(f)
	return true
}

// awaitRun is one await under test, in either form.
type awaitRun struct {
	end  chan verdict // the verdict, once
	exit func()       // the process exits
	gone func()       // the client goes away
}

// awaitForms are the two forms of an await: held (a goroutine blocks in
// wait) and async (callbacks, as a parked poll).
var awaitForms = map[string]func(a await, timeout time.Duration, r *testRunner) awaitRun{
	"held": func(a await, timeout time.Duration, _ *testRunner) awaitRun {
		ctx, cancel := context.WithCancel(context.Background())
		exiting := make(chan struct{})
		run := awaitRun{end: make(chan verdict, 1), exit: sync.OnceFunc(func() { close(exiting) }), gone: cancel}
		go func() {
			defer cancel()
			v := a.wait(ctx, timeout, exiting)
			v.result.Cursor = resultCursor(v, a.subs[0].cursor)
			run.end <- v
		}()
		return run
	},
	"async": func(a await, timeout time.Duration, r *testRunner) awaitRun {
		run := awaitRun{end: make(chan verdict, 1)}
		var x *asyncAwait
		x = newAsyncAwait(a, r, func(v verdict) {
			v.result.Cursor = resultCursor(v, x.a.subs[0].cursor)
			run.end <- v
		})
		run.exit = func() { x.finish(evExit) }
		run.gone = func() { x.event(evGone) }
		if v := x.begin(context.Background()); v.outcome != waiting {
			v.result.Cursor = resultCursor(v, x.a.subs[0].cursor)
			run.end <- v
		} else {
			x.park(timeout)
		}
		return run
	},
}

// resultCursor is the cursor an answer of v carries: the result's, or the
// await's for answers without a result.
func resultCursor(v verdict, awaitCursor string) string {
	if v.outcome == answered {
		return v.result.Cursor
	}
	return awaitCursor
}

// The rules of await, each case run in both forms: both answer every case
// the same way.
func TestAwaitRulesHeldAndAsync(t *testing.T) {
	// Goroutines from before (the in-process Caddy other tests start) are
	// not this test's.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const ch = "c"
	type env struct {
		t      *testing.T
		st     *hookedStore
		p      *poller.Poller
		tail   string // the channel's cursor before the case's own publishes
		cursor string // the poll's cursor, set by setup (default tail)
		other  *poller.Waiter
	}
	publish := func(e *env, data string) string {
		m, _, err := e.st.Append(context.Background(), ch, store.Message{Type: "text/plain", Data: []byte(data)}, "")
		if err != nil {
			e.t.Fatal(err)
		}
		e.p.Wake(ch)
		return m.ID
	}
	held := func(e *env, n int) {
		waitFor(e.t, "the poll held", func() bool { return e.p.Waiting(ch) == n })
	}
	fillMaxHeld := func(e *env) {
		e.p.SetMaxHeld(1)
		w, err := e.p.Hold("other")
		if err != nil {
			e.t.Fatal(err)
		}
		e.other = w
	}
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		setup   func(e *env)
		act     func(e *env, run awaitRun)
		outcome outcome
		data    []string // the answer's messages
		gap     bool
		err     error
		timeup  bool
		cursor  func(e *env) string // the answer's cursor; nil: not checked
	}{
		{name: "messages waiting are answered at once", setup: func(e *env) { publish(e, "a"); publish(e, "b") },
			outcome: answered, data: []string{"a", "b"}},
		{name: "a cursor the store cannot place is a gap", setup: func(e *env) { publish(e, "a"); e.cursor = "zz-1" },
			outcome: answered, data: []string{"a"}, gap: true},
		{name: "a cursor with an encoding's suffix is placed without it", setup: func(e *env) {
			e.cursor = publish(e, "a") + "-gzip"
			publish(e, "b")
		}, outcome: answered, data: []string{"b"}},
		{name: "a publish answers the held poll",
			act:     func(e *env, _ awaitRun) { held(e, 1); publish(e, "new") },
			outcome: answered, data: []string{"new"}},
		{name: "without a cursor only what comes next", setup: func(e *env) { publish(e, "old"); e.cursor = "" },
			act:     func(e *env, _ awaitRun) { held(e, 1); publish(e, "new") },
			outcome: answered, data: []string{"new"}},
		{name: "woken with nothing new stays held", act: func(e *env, _ awaitRun) {
			held(e, 1)
			if n := e.p.WakeAll(); n != 1 {
				e.t.Errorf("WakeAll woke %d", n)
			}
			held(e, 1)
			publish(e, "after")
		}, outcome: answered, data: []string{"after"}},
		{name: "deleted while held: 410", act: func(e *env, _ awaitRun) {
			held(e, 1)
			e.st.Delete(context.Background(), ch)
			e.p.Gone(ch)
		}, outcome: deleted},
		{name: "poller closed: 304", act: func(e *env, _ awaitRun) { held(e, 1); e.p.Close() },
			outcome: notModified, cursor: func(e *env) string { return e.tail }},
		{name: "timeout: 304 with the tail", timeout: time.Millisecond, setup: func(e *env) { e.cursor = "" },
			outcome: notModified, timeup: true, cursor: func(e *env) string { return e.tail }},
		{name: "process exit: 304", act: func(e *env, run awaitRun) { held(e, 1); run.exit() },
			outcome: notModified, cursor: func(e *env) string { return e.tail }},
		{name: "client gone: nothing", act: func(e *env, run awaitRun) { held(e, 1); run.gone() },
			outcome: gone},
		{name: "max_held reached, nothing new: 503", setup: fillMaxHeld,
			outcome: refused, err: poller.ErrTooMany},
		{name: "max_held reached, messages waiting: answered", setup: func(e *env) { fillMaxHeld(e); publish(e, "a") },
			outcome: answered, data: []string{"a"}},
		{name: "max_held reached while woken with nothing new: 503", setup: func(e *env) {
			e.p.SetMaxHeld(1)
			e.st.before = func(call int) error {
				if call == 2 { // the read after the wake: another poll takes the place
					w, err := e.p.Hold("other")
					e.other = w
					return err
				}
				return nil
			}
		}, act: func(e *env, _ awaitRun) { held(e, 1); e.p.WakeAll() },
			outcome: refused, err: poller.ErrTooMany},
		{name: "store failure", setup: func(e *env) {
			e.st.before = func(int) error { return store.ErrUnavailable }
		}, outcome: failed, err: store.ErrUnavailable},
		{name: "store failure after a wake", setup: func(e *env) {
			e.st.before = func(call int) error {
				if call > 1 {
					return store.ErrUnavailable
				}
				return nil
			}
		}, act: func(e *env, _ awaitRun) { held(e, 1); publish(e, "x") },
			outcome: failed, err: store.ErrUnavailable},
	} {
		for form, start := range awaitForms {
			t.Run(form+"/"+tc.name, func(t *testing.T) {
				mem := store.NewMemory(store.MemoryConfig{Buffer: 10, TTL: time.Hour})
				defer mem.Close()
				e := &env{t: t, st: &hookedStore{Store: mem}, p: poller.New(0)}
				info, _ := mem.Info(context.Background(), ch)
				e.tail, e.cursor = info.Cursor, info.Cursor
				if tc.setup != nil {
					tc.setup(e)
				}
				timeout := tc.timeout
				if timeout == 0 {
					timeout = time.Hour
				}
				var runner testRunner
				run := start(newAwait(e.p, e.st, ch, e.cursor), timeout, &runner)
				if tc.act != nil {
					tc.act(e, run)
				}
				v := <-run.end
				runner.wg.Wait()
				if v.outcome != tc.outcome || v.timeout != tc.timeup || (tc.err != nil) != (v.err != nil) ||
					(tc.err != nil && !errors.Is(v.err, tc.err)) || v.result.Gap != tc.gap {
					t.Fatalf("verdict %+v, want outcome %d timeout %v err %v gap %v", v, tc.outcome, tc.timeup, tc.err, tc.gap)
				}
				var data []string
				for _, m := range v.result.Messages {
					data = append(data, string(m.Data))
				}
				if len(data) != len(tc.data) || (len(data) > 0 && data[len(data)-1] != tc.data[len(tc.data)-1]) || (len(data) > 0 && data[0] != tc.data[0]) {
					t.Fatalf("messages %q, want %q", data, tc.data)
				}
				if tc.cursor != nil && v.result.Cursor != tc.cursor(e) {
					t.Fatalf("cursor %q, want %q", v.result.Cursor, tc.cursor(e))
				}
				if e.other != nil {
					e.p.Release(e.other)
				}
				if n := e.p.Held(); n != 0 {
					t.Fatalf("%d polls still held after the verdict", n)
				}
			})
		}
	}
}

// A poll on several channels (rule 9), in both forms: held once on all of
// them; a publish on any answers it with that channel's messages, even
// after a wake-up with nothing new; a deletion of any answers 410; none of
// them stays held.
func TestAwaitOnSeveralChannels(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	channels := []string{"a", "b", "c"}
	for form, start := range awaitForms {
		for _, tc := range []struct {
			name    string
			act     func(st store.Store, p *poller.Poller)
			outcome outcome
			sub     int
			data    string
		}{
			{name: "published on the last", act: func(st store.Store, p *poller.Poller) {
				p.WakeAll() // nothing new: held again on all
				waitFor(t, "held again", func() bool { return p.Waiting("a") == 1 && p.Waiting("c") == 1 })
				st.Append(context.Background(), "c", store.Message{Data: []byte("on c")}, "")
				p.Wake("c")
			}, outcome: answered, sub: 2, data: "on c"},
			{name: "published on two: the first in order", act: func(st store.Store, p *poller.Poller) {
				st.Append(context.Background(), "c", store.Message{Data: []byte("on c")}, "")
				st.Append(context.Background(), "b", store.Message{Data: []byte("on b")}, "")
				p.Wake("c")
				p.Wake("b")
			}, outcome: answered, sub: 1, data: "on b"},
			{name: "one deleted: 410", act: func(st store.Store, p *poller.Poller) {
				st.Delete(context.Background(), "b")
				p.Gone("b")
			}, outcome: deleted},
		} {
			t.Run(form+"/"+tc.name, func(t *testing.T) {
				mem := store.NewMemory(store.MemoryConfig{Buffer: 10, TTL: time.Hour})
				defer mem.Close()
				p := poller.New(0)
				a := await{poller: p, store: mem}
				for _, ch := range channels {
					info, _ := mem.Info(context.Background(), ch)
					a.subs = append(a.subs, sub{ch, info.Cursor})
				}
				var runner testRunner
				run := start(a, time.Hour, &runner)
				waitFor(t, "held on every channel", func() bool {
					return p.Waiting("a") == 1 && p.Waiting("b") == 1 && p.Waiting("c") == 1
				})
				if p.Held() != 1 {
					t.Fatalf("Held = %d, want 1 for one poll on 3 channels", p.Held())
				}
				tc.act(mem, p)
				v := <-run.end
				runner.wg.Wait()
				if v.outcome != tc.outcome || v.sub != tc.sub {
					t.Fatalf("verdict %+v, want outcome %d sub %d", v, tc.outcome, tc.sub)
				}
				if tc.data != "" && (len(v.result.Messages) != 1 || string(v.result.Messages[0].Data) != tc.data) {
					t.Fatalf("messages %v, want %q", v.result.Messages, tc.data)
				}
				for _, ch := range channels {
					if n := p.Waiting(ch); n != 0 {
						t.Fatalf("%d still held on %s", n, ch)
					}
				}
				if p.Held() != 0 {
					t.Fatalf("Held = %d after the verdict", p.Held())
				}
			})
		}
	}
}
