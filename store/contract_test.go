package store

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Harness opens a fresh, empty store for one contract test. Advance moves
// the store's clock forward by d (far enough for messages and idempotency
// keys older than d to expire).
type Harness struct {
	Open func(t *testing.T, buffer int, ttl time.Duration) (s Store, advance func(d time.Duration))
}

// RunContract runs the behaviour every Store implementation must have.
func RunContract(t *testing.T, h Harness) {
	ctx := context.Background()
	pub := func(t *testing.T, s Store, ch, data, key string) (Message, bool) {
		t.Helper()
		m, dup, err := s.Append(ctx, ch, Message{Type: "text/plain", Data: []byte(data)}, key)
		if err != nil {
			t.Fatalf("Append(%q, %q): %v", ch, data, err)
		}
		return m, dup
	}
	since := func(t *testing.T, s Store, ch, cursor string) Result {
		t.Helper()
		r, err := s.Since(ctx, ch, cursor)
		if err != nil {
			t.Fatalf("Since(%q, %q): %v", ch, cursor, err)
		}
		return r
	}
	info := func(t *testing.T, s Store, ch string) Info {
		t.Helper()
		i, err := s.Info(ctx, ch)
		if err != nil {
			t.Fatalf("Info(%q): %v", ch, err)
		}
		return i
	}
	datas := func(r Result) []string {
		out := make([]string, len(r.Messages))
		for i, m := range r.Messages {
			out[i] = string(m.Data)
		}
		return out
	}
	want := func(t *testing.T, r Result, gap bool, data ...string) {
		t.Helper()
		if got := datas(r); fmt.Sprint(got) != fmt.Sprint(data) || r.Gap != gap {
			t.Fatalf("got messages %q gap %v, want %q gap %v", got, r.Gap, data, gap)
		}
		if !ValidCursor(r.Cursor) {
			t.Fatalf("result cursor %q is not a valid cursor", r.Cursor)
		}
		if len(r.Messages) > 0 && r.Cursor != r.Messages[len(r.Messages)-1].ID {
			t.Fatalf("result cursor %q is not the last message's ID %q", r.Cursor, r.Messages[len(r.Messages)-1].ID)
		}
	}

	t.Run("EmptyCursorMeansFromNowOn", func(t *testing.T) {
		s, _ := h.Open(t, 10, time.Hour)
		pub(t, s, "a", "old", "")
		r := since(t, s, "a", "")
		want(t, r, false)
		pub(t, s, "a", "new", "")
		want(t, since(t, s, "a", r.Cursor), false, "new")
	})

	t.Run("InfoCursorOfEmptyChannelMissesNothing", func(t *testing.T) {
		s, _ := h.Open(t, 10, time.Hour)
		i := info(t, s, "fresh")
		if i.Messages != 0 || !ValidCursor(i.Cursor) || i.Channel != "fresh" {
			t.Fatalf("Info of an unknown channel = %+v", i)
		}
		pub(t, s, "other", "x", "")
		m, _ := pub(t, s, "fresh", "first", "")
		want(t, since(t, s, "fresh", i.Cursor), false, "first")
		if i := info(t, s, "fresh"); i.Messages != 1 || i.Cursor != m.ID {
			t.Fatalf("Info after one message = %+v, want 1 message and cursor %q", i, m.ID)
		}
		want(t, since(t, s, "fresh", m.ID), false)
	})

	t.Run("MessagesInOrderWithFieldsKept", func(t *testing.T) {
		s, _ := h.Open(t, 100, time.Hour)
		start := info(t, s, "c").Cursor
		var ids []string
		for i := range 10 {
			m, _, _ := s.Append(ctx, "c", Message{Type: "application/json", Data: fmt.Appendf(nil, `{"n":%d}`, i)}, "")
			if m.Channel != "c" || m.Type != "application/json" || m.Time.IsZero() || !ValidCursor(m.ID) {
				t.Fatalf("stored message = %+v", m)
			}
			ids = append(ids, m.ID)
		}
		r := since(t, s, "c", start)
		if len(r.Messages) != 10 || r.Gap {
			t.Fatalf("got %d messages gap %v, want 10", len(r.Messages), r.Gap)
		}
		for i, m := range r.Messages {
			if m.ID != ids[i] || string(m.Data) != fmt.Sprintf(`{"n":%d}`, i) || m.Type != "application/json" {
				t.Fatalf("message %d = %+v, want id %s", i, m, ids[i])
			}
		}
		want(t, since(t, s, "c", ids[6]), false, `{"n":7}`, `{"n":8}`, `{"n":9}`)
	})

	t.Run("ChannelsAreSeparate", func(t *testing.T) {
		s, _ := h.Open(t, 10, time.Hour)
		a, b := info(t, s, "a").Cursor, info(t, s, "b").Cursor
		pub(t, s, "a", "for a", "")
		pub(t, s, "b", "for b", "")
		want(t, since(t, s, "a", a), false, "for a")
		want(t, since(t, s, "b", b), false, "for b")
	})

	t.Run("BufferEvictionIsAGap", func(t *testing.T) {
		s, _ := h.Open(t, 3, time.Hour)
		start := info(t, s, "c").Cursor
		var ms []Message
		for i := range 5 {
			m, _ := pub(t, s, "c", fmt.Sprint(i), "")
			ms = append(ms, m)
		}
		want(t, since(t, s, "c", start), true, "2", "3", "4")
		want(t, since(t, s, "c", ms[0].ID), true, "2", "3", "4")
		// The newest dropped message was seen: nothing was lost.
		want(t, since(t, s, "c", ms[1].ID), false, "2", "3", "4")
		if n := info(t, s, "c").Messages; n != 3 {
			t.Fatalf("Info.Messages = %d, want 3", n)
		}
	})

	t.Run("ExpiredMessagesAreAGap", func(t *testing.T) {
		s, advance := h.Open(t, 10, time.Minute)
		start := info(t, s, "c").Cursor
		m, _ := pub(t, s, "c", "old", "")
		advance(2 * time.Minute)
		want(t, since(t, s, "c", start), true)
		want(t, since(t, s, "c", m.ID), false)
		if n := info(t, s, "c").Messages; n != 0 {
			t.Fatalf("Info.Messages after ttl = %d, want 0", n)
		}
		pub(t, s, "c", "new", "")
		want(t, since(t, s, "c", m.ID), false, "new")
	})

	t.Run("UnknownCursorIsAGapWithWhatIsRetained", func(t *testing.T) {
		s, _ := h.Open(t, 10, time.Hour)
		pub(t, s, "c", "kept", "")
		for _, c := range []string{"zzzz-1", "not:ours", "0-0", "9999999999999-0"} {
			r := since(t, s, "c", c)
			want(t, r, true, "kept")
		}
		// On an empty channel too: a gap, not a hang.
		want(t, since(t, s, "empty", "zzzz-1"), true)
	})

	t.Run("IdempotencyKeyStoresOnce", func(t *testing.T) {
		s, _ := h.Open(t, 10, time.Hour)
		start := info(t, s, "c").Cursor
		first, dup := pub(t, s, "c", "once", "key-1")
		if dup {
			t.Fatal("first publish reported as duplicate")
		}
		again, dup := pub(t, s, "c", "once", "key-1")
		if !dup || again.ID != first.ID || !again.Time.Equal(first.Time) {
			t.Fatalf("retry = %+v dup %v, want the first message %+v as duplicate", again, dup, first)
		}
		if _, dup := pub(t, s, "other", "once", "key-1"); dup {
			t.Fatal("same key on another channel reported as duplicate")
		}
		want(t, since(t, s, "c", start), false, "once")
	})

	t.Run("IdempotencyKeyExpiresWithTTL", func(t *testing.T) {
		s, advance := h.Open(t, 10, time.Minute)
		pub(t, s, "c", "a", "key")
		advance(2 * time.Minute)
		if _, dup := pub(t, s, "c", "b", "key"); dup {
			t.Fatal("key remembered after the ttl")
		}
	})

	t.Run("DeleteDropsChannel", func(t *testing.T) {
		s, _ := h.Open(t, 10, time.Hour)
		start := info(t, s, "c").Cursor
		m, _ := pub(t, s, "c", "gone", "")
		had, err := s.Delete(ctx, "c")
		if err != nil || !had {
			t.Fatalf("Delete = %v, %v; want true", had, err)
		}
		if i := info(t, s, "c"); i.Messages != 0 {
			t.Fatalf("Info after delete = %+v", i)
		}
		want(t, since(t, s, "c", start), true)
		had, err = s.Delete(ctx, "c")
		if err != nil || had {
			t.Fatalf("second Delete = %v, %v; want false", had, err)
		}
		after := info(t, s, "c").Cursor
		pub(t, s, "c", "again", "")
		want(t, since(t, s, "c", after), false, "again")
		want(t, since(t, s, "c", m.ID), false, "again")
	})

	t.Run("PubIDAndResponseKeptAndLastPubIDOfTheNewest", func(t *testing.T) {
		s, advance := h.Open(t, 10, time.Minute)
		start := info(t, s, "g").Cursor
		if i := info(t, s, "g"); i.LastPubID != "" {
			t.Fatalf("LastPubID of an empty channel = %q", i.LastPubID)
		}
		resp := &Response{Code: 201, Reason: "Made", Header: map[string][]string{"X-A": {"1", "2"}, "Content-Type": {"text/plain"}}}
		for _, m := range []Message{
			{Type: "text/plain", Data: []byte("grip"), PubID: "1041", Response: resp},
			{Type: "text/plain", Data: []byte("id only"), PubID: "1042", PrevPubID: "1041"},
		} {
			if _, _, err := s.Append(ctx, "g", m, ""); err != nil {
				t.Fatal(err)
			}
		}
		if i := info(t, s, "g"); i.LastPubID != "1042" {
			t.Fatalf("LastPubID = %q, want 1042", i.LastPubID)
		}
		r := since(t, s, "g", start)
		want(t, r, false, "grip", "id only")
		if m := r.Messages[0]; m.PubID != "1041" || m.PrevPubID != "" || m.Response == nil || fmt.Sprint(*m.Response) != fmt.Sprint(*resp) {
			t.Fatalf("first message: PubID %q, Response %+v; want 1041, %+v", m.PubID, m.Response, resp)
		}
		if m := r.Messages[1]; m.PubID != "1042" || m.PrevPubID != "1041" || m.Response != nil {
			t.Fatalf("second message: PubID %q, Response %+v", m.PubID, m.Response)
		}
		pub(t, s, "g", "plain", "")
		if i := info(t, s, "g"); i.LastPubID != "" {
			t.Fatalf("LastPubID after a message without one = %q", i.LastPubID)
		}
		if m := since(t, s, "g", r.Cursor).Messages[0]; m.PubID != "" || m.Response != nil {
			t.Fatalf("a plain message has PubID %q, Response %+v", m.PubID, m.Response)
		}
		s.Append(ctx, "g", Message{Type: "text/plain", Data: []byte("last"), PubID: "1043"}, "")
		advance(2 * time.Minute)
		if i := info(t, s, "g"); i.LastPubID != "" {
			t.Fatalf("LastPubID after its message expired = %q", i.LastPubID)
		}
	})

	t.Run("ConcurrentAppendsKeepEachPublishersOrder", func(t *testing.T) {
		const publishers, each = 8, 50
		s, _ := h.Open(t, publishers*each, time.Hour)
		start := info(t, s, "c").Cursor
		var wg sync.WaitGroup
		for p := range publishers {
			wg.Go(func() {
				for i := range each {
					if _, _, err := s.Append(ctx, "c", Message{Type: "text/plain", Data: fmt.Appendf(nil, "%d/%d", p, i)}, ""); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		r := since(t, s, "c", start)
		if len(r.Messages) != publishers*each || r.Gap {
			t.Fatalf("got %d messages gap %v, want %d", len(r.Messages), r.Gap, publishers*each)
		}
		next := make([]int, publishers)
		seen := map[string]bool{}
		for _, m := range r.Messages {
			var p, i int
			fmt.Sscanf(string(m.Data), "%d/%d", &p, &i)
			if i != next[p] {
				t.Fatalf("publisher %d: message %d came when %d was due", p, i, next[p])
			}
			next[p]++
			if seen[m.ID] {
				t.Fatalf("duplicate id %s", m.ID)
			}
			seen[m.ID] = true
		}
	})
}
