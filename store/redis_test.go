package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-longpoll/longpoll/internal/redistest"
)

// countingNotifier reports every call of the store on ch, in order.
type countingNotifier struct {
	ch chan string
}

func newCountingNotifier() *countingNotifier {
	return &countingNotifier{ch: make(chan string, 1000)}
}

// send reports a call without ever blocking the store's listener.
func (n *countingNotifier) send(s string) {
	select {
	case n.ch <- s:
	default:
	}
}

func (n *countingNotifier) Wake(c string) int { n.send("wake " + c); return 0 }
func (n *countingNotifier) Gone(c string) int { n.send("gone " + c); return 0 }
func (n *countingNotifier) WakeAll() int      { n.send("all"); return 0 }

func openRedis(t *testing.T, srv *redistest.Server, prefix string, buffer int, ttl time.Duration, now func() time.Time, n Notifier) *Redis {
	if n == nil {
		n = newCountingNotifier()
	}
	r := NewRedis(RedisConfig{Options: &redis.Options{Addr: srv.Addr(), MaxRetries: -1}, Prefix: prefix, Buffer: buffer, TTL: ttl, Now: now}, n)
	t.Cleanup(func() { r.Close() })
	return r
}

func TestRedisContract(t *testing.T) {
	srv := redistest.Start(t)
	i := 0
	RunContract(t, Harness{Open: func(t *testing.T, buffer int, ttl time.Duration) (Store, func(time.Duration)) {
		i++
		clock := &fakeClock{now: time.Now()}
		return openRedis(t, srv, fmt.Sprintf("test%d:", i), buffer, ttl, clock.Now, nil), clock.Advance
	}})
}

// await waits for the notifier to report want, failing after a generous
// deadline (a hang, not a timing assertion).
func (n *countingNotifier) await(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case got := <-n.ch:
			if got == want {
				return
			}
		case <-deadline:
			t.Fatalf("notifier never told %q", want)
		}
	}
}

var ctx = context.Background()

// quietRedis silences go-redis's own log of failed dials (the fault tests
// cause them on purpose).
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func init() { redis.SetLogger(quietRedis{}) }

// waitLive waits until s's subscription is up, so that notifications from
// here on reach it.
func waitLive(t *testing.T, s *Redis) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !s.Live() {
		if time.Now().After(deadline) {
			t.Fatal("the store never subscribed")
		}
		time.Sleep(time.Millisecond)
	}
}

// scriptCalls is how many scripts Redis has run: one per store round trip.
func scriptCalls(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	s, err := srv.Client().Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, line := range strings.Split(s, "\n") {
		for _, cmd := range []string{"cmdstat_evalsha:", "cmdstat_eval:"} {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), cmd); ok {
				var n int
				fmt.Sscanf(rest, "calls=%d", &n)
				total += n
			}
		}
	}
	return total
}

func TestRedisTwoInstancesShareChannels(t *testing.T) {
	srv := redistest.Start(t)
	na, nb := newCountingNotifier(), newCountingNotifier()
	a := openRedis(t, srv, "lp:", 10, time.Hour, nil, na)
	b := openRedis(t, srv, "lp:", 10, time.Hour, nil, nb)
	waitLive(t, a)
	waitLive(t, b)

	start, err := b.Since(ctx, "c", "")
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := a.Append(ctx, "c", Message{Data: []byte("hi")}, "")
	if err != nil {
		t.Fatal(err)
	}
	nb.await(t, "wake c")
	na.await(t, "wake c") // A hears its own publish too
	r, err := b.Since(ctx, "c", start.Cursor)
	if err != nil || len(r.Messages) != 1 || string(r.Messages[0].Data) != "hi" || r.Messages[0].ID != m.ID || r.Gap {
		t.Fatalf("B after A's publish: %+v, %v", r, err)
	}
	// A poll on B with the current cursor costs no round trip: B's tail
	// came from the notification.
	before := scriptCalls(t, srv)
	r, err = b.Since(ctx, "c", m.ID)
	if err != nil || len(r.Messages) != 0 || r.Cursor != m.ID {
		t.Fatalf("B with current cursor: %+v, %v", r, err)
	}
	if after := scriptCalls(t, srv); after != before {
		t.Fatalf("a poll with the current cursor ran %d scripts, want 0", after-before)
	}
	// A cursor from B is valid on A. A sees B's publish once B's
	// notification reached it (until then A's tail says nothing is new,
	// which is safe: a held poll is registered before it reads, so the
	// notification wakes it).
	m2, _, _ := b.Append(ctx, "c", Message{Data: []byte("two")}, "")
	na.await(t, "wake c")
	r, err = a.Since(ctx, "c", m.ID)
	if err != nil || len(r.Messages) != 1 || r.Messages[0].ID != m2.ID {
		t.Fatalf("A resuming B's cursor: %+v, %v", r, err)
	}
	// Delete through A tells B.
	if _, err := a.Delete(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	nb.await(t, "gone c")
}

func TestRedisOutage(t *testing.T) {
	srv := redistest.Start(t)
	n := newCountingNotifier()
	s := openRedis(t, srv, "lp:", 10, time.Hour, nil, n)
	waitLive(t, s)
	m, _, err := s.Append(ctx, "c", Message{Data: []byte("before")}, "")
	if err != nil {
		t.Fatal(err)
	}

	srv.Kill()
	if _, _, err := s.Append(ctx, "c", Message{Data: []byte("lost?")}, "k1"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Append with Redis down = %v, want ErrUnavailable", err)
	}
	if _, err := s.Since(ctx, "c", "x-1-0"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Since with Redis down = %v, want ErrUnavailable", err)
	}

	// Redis comes back empty: the store reconnects and wakes every held
	// poll, and a cursor from before is a gap, not a hang.
	srv.Restart()
	n.await(t, "all")
	r, err := s.Since(ctx, "c", m.ID)
	if err != nil || !r.Gap || len(r.Messages) != 0 {
		t.Fatalf("Since(old cursor) after Redis lost its data = %+v, %v; want a gap", r, err)
	}
	// The failed publish did not land; retrying it with its key works once.
	if _, dup, err := s.Append(ctx, "c", Message{Data: []byte("lost?")}, "k1"); err != nil || dup {
		t.Fatalf("retried publish = dup %v, %v", dup, err)
	}
	if _, dup, err := s.Append(ctx, "c", Message{Data: []byte("lost?")}, "k1"); err != nil || !dup {
		t.Fatalf("second retry = dup %v, %v; want a duplicate", dup, err)
	}
	r, err = s.Since(ctx, "c", r.Cursor)
	if err != nil || len(r.Messages) != 1 || string(r.Messages[0].Data) != "lost?" {
		t.Fatalf("after retry: %+v, %v", r, err)
	}
}
