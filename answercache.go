package longpoll

import (
	"hash/maphash"
	"strconv"
	"sync"

	"github.com/caddy-longpoll/longpoll/store"
)

// answerCache keeps recently encoded json answers, so that when one publish
// wakes many polls with the same cursor the answer is encoded once and its
// bytes shared. It is direct-mapped: a fixed number of slots, a collision
// replaces the slot, so its memory is bounded by slots × maxCachedAnswer.
//
// An entry is used only if the store's result for the same channel and
// cursor has as many messages, ends at the same cursor and has the same gap
// flag: messages are immutable, so the last n messages up to a cursor are
// always the same ones. The store stays the only source of truth; the cache
// only saves the encoding.
type answerCache struct {
	seed  maphash.Seed
	slots [answerSlots]answerSlot
}

const (
	answerSlots     = 1024
	maxCachedAnswer = 64 << 10 // larger answers are encoded per poll
)

type answerSlot struct {
	mu      sync.Mutex
	channel string
	from    string // the poll's cursor
	to      string // the result's cursor
	n       int    // the result's number of messages
	gap     bool
	answer  *encodedAnswer
}

// encodedAnswer is a json answer with the header values that go with it.
// Shared between polls: never modified once made.
type encodedAnswer struct {
	body   []byte
	etag   string // the ETag header: the result's cursor, quoted
	length string // the Content-Length header
}

func newEncodedAnswer(res store.Result) *encodedAnswer {
	body := encodeAnswer(res)
	return &encodedAnswer{body: body, etag: `"` + res.Cursor + `"`, length: strconv.Itoa(len(body))}
}

func newAnswerCache() *answerCache { return &answerCache{seed: maphash.MakeSeed()} }

func (c *answerCache) slot(channel, from string) *answerSlot {
	var h maphash.Hash
	h.SetSeed(c.seed)
	h.WriteString(channel)
	h.WriteByte(0)
	h.WriteString(from)
	return &c.slots[h.Sum64()%answerSlots]
}

// encode returns the json answer of res, the result of polling channel from
// cursor from.
func (c *answerCache) encode(channel, from string, res store.Result) *encodedAnswer {
	s := c.slot(channel, from)
	s.mu.Lock()
	if s.answer != nil && s.channel == channel && s.from == from && s.to == res.Cursor && s.n == len(res.Messages) && s.gap == res.Gap {
		a := s.answer
		s.mu.Unlock()
		return a
	}
	s.mu.Unlock()
	a := newEncodedAnswer(res)
	if len(a.body) <= maxCachedAnswer {
		s.mu.Lock()
		s.channel, s.from, s.to, s.n, s.gap, s.answer = channel, from, res.Cursor, len(res.Messages), res.Gap, a
		s.mu.Unlock()
	}
	return a
}
