package store

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func openMemory(t *testing.T, buffer int, ttl time.Duration) (*Memory, *fakeClock) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := NewMemory(MemoryConfig{Buffer: buffer, TTL: ttl, Now: clock.Now})
	t.Cleanup(func() { m.Close() })
	return m, clock
}

func TestMemoryContract(t *testing.T) {
	RunContract(t, Harness{Open: func(t *testing.T, buffer int, ttl time.Duration) (Store, func(time.Duration)) {
		m, clock := openMemory(t, buffer, ttl)
		return m, clock.Advance
	}})
}

func TestMemoryFreesIdleChannelsAndStillReportsTheGap(t *testing.T) {
	ctx := context.Background()
	m, clock := openMemory(t, 10, time.Minute)
	start, _ := m.Info(ctx, "c")
	if _, _, err := m.Append(ctx, "c", Message{Data: []byte("x")}, ""); err != nil {
		t.Fatal(err)
	}
	if n := m.Channels(); n != 1 {
		t.Fatalf("Channels = %d, want 1", n)
	}
	clock.Advance(time.Minute) // the message expires
	m.Sweep()
	if n := m.Channels(); n != 1 {
		t.Fatalf("Channels right after expiry = %d, want 1 (the drop mark is kept one ttl)", n)
	}
	clock.Advance(time.Minute)
	m.Sweep()
	if n := m.Channels(); n != 0 {
		t.Fatalf("Channels after two ttls idle = %d, want 0", n)
	}
	r, _ := m.Since(ctx, "c", start.Cursor)
	if !r.Gap {
		t.Fatal("a cursor from before the freed channel's messages got no gap")
	}
}

func TestMemoryPollOnlyChannelsLeaveNoState(t *testing.T) {
	ctx := context.Background()
	m, _ := openMemory(t, 10, time.Minute)
	for _, ch := range []string{"a", "b", "c"} {
		m.Info(ctx, ch)
		m.Since(ctx, ch, "")
	}
	if n := m.Channels(); n != 0 {
		t.Fatalf("Channels = %d after only reads, want 0", n)
	}
}

func TestMemoryCursorFromAnotherStoreIsAGap(t *testing.T) {
	ctx := context.Background()
	a, _ := openMemory(t, 10, time.Hour)
	b, _ := openMemory(t, 10, time.Hour)
	old, _, _ := a.Append(ctx, "c", Message{Data: []byte("in a")}, "")
	b.Append(ctx, "c", Message{Data: []byte("in b")}, "")
	r, _ := b.Since(ctx, "c", old.ID)
	if !r.Gap || len(r.Messages) != 1 || string(r.Messages[0].Data) != "in b" {
		t.Fatalf("Since(cursor of another store) = %+v, want a gap with what b retains", r)
	}
}

func TestMemoryIdempotencyKeysAreCapped(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Now()}
	m := NewMemory(MemoryConfig{Buffer: 10, TTL: time.Hour, MaxIdempotencyKeys: 3, Now: clock.Now})
	defer m.Close()
	for _, k := range []string{"k1", "k2", "k3", "k4"} {
		m.Append(ctx, "c", Message{Data: []byte(k)}, k)
	}
	if _, dup, _ := m.Append(ctx, "c", Message{}, "k1"); dup {
		t.Fatal("oldest key kept beyond the cap")
	}
	if _, dup, _ := m.Append(ctx, "c", Message{}, "k4"); !dup {
		t.Fatal("newest key forgotten")
	}
}

func TestMemoryBufferStaysBounded(t *testing.T) {
	ctx := context.Background()
	m, _ := openMemory(t, 5, time.Hour)
	for range 10000 {
		m.Append(ctx, "c", Message{Data: []byte("x")}, "")
	}
	m.mu.Lock()
	ch := m.channels["c"]
	n, c := ch.len(), cap(ch.msgs)
	m.mu.Unlock()
	if n != 5 || c > 128 {
		t.Fatalf("retained %d messages in a slice of cap %d; want 5 in a small slice", n, c)
	}
}

func TestValidChannelAndCursor(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"chat-1", true}, {"", false}, {string(make([]byte, 257)), false},
		{"a\nb", false}, {"a\x7fb", false}, {"ünïcode ok", true},
	} {
		if err := ValidChannel(tc.name); (err == nil) != tc.ok {
			t.Errorf("ValidChannel(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	long := make([]byte, 129)
	for i := range long {
		long[i] = 'a'
	}
	for _, tc := range []struct {
		c  string
		ok bool
	}{
		{"abc-12", true}, {"1700000000000-0", true}, {"a.b_c~d:e-f", true},
		{"", false}, {string(long), false}, {string(long[:128]), true},
		{`a"b`, false}, {"a b", false}, {"a/b", false}, {"ä", false},
	} {
		if got := ValidCursor(tc.c); got != tc.ok {
			t.Errorf("ValidCursor(%q) = %v, want %v", tc.c, got, tc.ok)
		}
	}
}
