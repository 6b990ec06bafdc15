package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MemoryConfig configures a Memory store.
type MemoryConfig struct {
	// Buffer is how many messages each channel keeps (at least 1).
	Buffer int
	// TTL is how long a message is kept (more than 0).
	TTL time.Duration
	// MaxIdempotencyKeys bounds the idempotency keys remembered per
	// channel; the oldest is forgotten first. Default 4096.
	MaxIdempotencyKeys int
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Memory is a Store that keeps messages in this process. Its cursors are
// "<epoch>-<seq>": epoch is random per store, so cursors from another store
// or from before a restart are recognised and answered as a gap; seq counts
// every message of the store, so a cursor orders against any channel.
type Memory struct {
	cfg   MemoryConfig
	epoch string

	mu        sync.Mutex
	seq       uint64 // last sequence number handed out
	forgotten uint64 // newest dropped seq of any channel whose state was freed
	channels  map[string]*memChannel

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

type memChannel struct {
	msgs      []memMessage // retained, oldest first, from index head
	head      int
	dropped   uint64    // seq of the newest message dropped (evicted, expired, deleted); 0 if none
	droppedAt time.Time // when the last drop happened
	idem      map[string]idemEntry
	idemOrder []string // keys oldest first, for expiry and the cap
}

type memMessage struct {
	seq uint64
	msg Message
}

type idemEntry struct {
	msg     Message // without Data: only the answer is kept
	expires time.Time
}

// NewMemory returns a memory store and starts its janitor, which expires
// messages and frees idle channels; Close stops it.
func NewMemory(cfg MemoryConfig) *Memory {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxIdempotencyKeys <= 0 {
		cfg.MaxIdempotencyKeys = 4096
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	m := &Memory{
		cfg:      cfg,
		epoch:    strconv.FormatUint(binary.BigEndian.Uint64(b[:])>>24, 36),
		channels: make(map[string]*memChannel),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go m.janitor(sweepInterval(cfg.TTL))
	return m
}

func sweepInterval(ttl time.Duration) time.Duration {
	return min(max(ttl/4, 100*time.Millisecond), 30*time.Second)
}

func (m *Memory) janitor(every time.Duration) {
	defer close(m.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.Sweep()
		}
	}
}

// Sweep expires old messages and idempotency keys in every channel and frees
// the state of idle channels. The janitor calls it; tests call it directly.
func (m *Memory) Sweep() {
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, ch := range m.channels {
		m.expire(ch, now)
		if ch.len() > 0 || len(ch.idemOrder) > 0 {
			continue
		}
		// Keep an emptied channel's drop mark for one more ttl, so that
		// a cursor from before the drop still gets its gap; then fold it
		// into the store-wide mark and free the channel.
		if ch.dropped != 0 && now.Sub(ch.droppedAt) < m.cfg.TTL {
			continue
		}
		m.forgotten = max(m.forgotten, ch.dropped)
		delete(m.channels, name)
	}
}

// Close stops the janitor. The store must not be used afterwards.
func (m *Memory) Close() error {
	m.closeOnce.Do(func() { close(m.stop) })
	<-m.done
	return nil
}

// Channels is how many channels have state.
func (m *Memory) Channels() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.channels)
}

func (m *Memory) cursor(seq uint64) string {
	return m.epoch + "-" + strconv.FormatUint(seq, 36)
}

// parse returns the seq a cursor names, or false if this store did not issue it.
func (m *Memory) parse(c string) (uint64, bool) {
	epoch, s, ok := strings.Cut(c, "-")
	if !ok || epoch != m.epoch {
		return 0, false
	}
	seq, err := strconv.ParseUint(s, 36, 64)
	if err != nil || seq > m.seq {
		return 0, false
	}
	return seq, true
}

func (ch *memChannel) len() int { return len(ch.msgs) - ch.head }

func (ch *memChannel) dropFront(now time.Time) {
	ch.dropped = ch.msgs[ch.head].seq
	ch.droppedAt = now
	ch.msgs[ch.head] = memMessage{}
	ch.head++
	if ch.head == len(ch.msgs) {
		ch.msgs, ch.head = ch.msgs[:0], 0
	} else if ch.head >= 32 && ch.head*2 >= len(ch.msgs) {
		n := copy(ch.msgs, ch.msgs[ch.head:])
		clear(ch.msgs[n:])
		ch.msgs, ch.head = ch.msgs[:n], 0
	}
}

// expire drops messages and idempotency keys older than the ttl. m.mu is held.
func (m *Memory) expire(ch *memChannel, now time.Time) {
	for ch.len() > 0 && now.Sub(ch.msgs[ch.head].msg.Time) >= m.cfg.TTL {
		ch.dropFront(now)
	}
	for len(ch.idemOrder) > 0 {
		k := ch.idemOrder[0]
		if e := ch.idem[k]; now.Before(e.expires) && len(ch.idemOrder) <= m.cfg.MaxIdempotencyKeys {
			break
		}
		delete(ch.idem, k)
		ch.idemOrder = ch.idemOrder[1:]
	}
}

// tail is the cursor a poll sends to get the next message of ch. m.mu is held.
func (m *Memory) tail(ch *memChannel) string {
	if ch != nil && ch.len() > 0 {
		return ch.msgs[len(ch.msgs)-1].msg.ID
	}
	return m.cursor(m.seq)
}

// Append implements Store.
func (m *Memory) Append(_ context.Context, channel string, msg Message, key string) (Message, bool, error) {
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	ch := m.channels[channel]
	if ch == nil {
		ch = &memChannel{}
		m.channels[channel] = ch
	}
	m.expire(ch, now)
	if key != "" {
		if e, ok := ch.idem[key]; ok {
			return e.msg, true, nil
		}
	}
	m.seq++
	msg.ID = m.cursor(m.seq)
	msg.Channel = channel
	msg.Time = now
	ch.msgs = append(ch.msgs, memMessage{seq: m.seq, msg: msg})
	for ch.len() > m.cfg.Buffer {
		ch.dropFront(now)
	}
	if key != "" {
		if ch.idem == nil {
			ch.idem = make(map[string]idemEntry)
		}
		answer := msg
		answer.Data = nil
		ch.idem[key] = idemEntry{msg: answer, expires: now.Add(m.cfg.TTL)}
		ch.idemOrder = append(ch.idemOrder, key)
		m.expire(ch, now) // applies the cap
	}
	return msg, false, nil
}

// Since implements Store.
func (m *Memory) Since(_ context.Context, channel, cursor string) (Result, error) {
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	ch := m.channels[channel]
	if ch != nil {
		m.expire(ch, now)
	}
	if cursor == "" {
		return Result{Cursor: m.tail(ch)}, nil
	}
	seq, known := m.parse(cursor)
	var res Result
	switch {
	case !known:
		res.Gap = true
	case ch == nil:
		res.Gap = seq < m.forgotten
	default:
		res.Gap = seq < ch.dropped
	}
	if ch != nil {
		retained := ch.msgs[ch.head:]
		// First retained message after the cursor (all of them when the
		// cursor cannot be placed).
		i := 0
		if known {
			i = sort.Search(len(retained), func(i int) bool { return retained[i].seq > seq })
		}
		if n := len(retained) - i; n > 0 {
			res.Messages = make([]Message, n)
			for j := range n {
				res.Messages[j] = retained[i+j].msg
			}
		}
	}
	switch {
	case len(res.Messages) > 0:
		res.Cursor = res.Messages[len(res.Messages)-1].ID
	case res.Gap:
		res.Cursor = m.tail(ch)
	default:
		res.Cursor = cursor
	}
	return res, nil
}

// Info implements Store.
func (m *Memory) Info(_ context.Context, channel string) (Info, error) {
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	ch := m.channels[channel]
	n := 0
	if ch != nil {
		m.expire(ch, now)
		n = ch.len()
	}
	info := Info{Channel: channel, Cursor: m.tail(ch), Messages: n}
	if n > 0 {
		info.LastPubID = ch.msgs[len(ch.msgs)-1].msg.PubID
	}
	return info, nil
}

// Delete implements Store. The channel keeps a drop mark for one ttl, so
// that polls with cursors from before the delete get a gap.
func (m *Memory) Delete(_ context.Context, channel string) (bool, error) {
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	ch := m.channels[channel]
	if ch == nil {
		return false, nil
	}
	had := ch.len() > 0
	mark := &memChannel{dropped: ch.dropped, droppedAt: ch.droppedAt}
	if had {
		mark.dropped, mark.droppedAt = ch.msgs[len(ch.msgs)-1].seq, now
	}
	m.channels[channel] = mark
	return had, nil
}

var _ Store = (*Memory)(nil)
