package grant

import (
	"sync"
	"time"
)

// DefaultCacheBytes bounds the grants a Verifier remembers, by the length
// of their tokens: 8 MiB holds some 20,000 grants of 400 bytes.
const DefaultCacheBytes = 8 << 20

// cache remembers grants already verified, by their token, so that a
// client's next poll with the same grant costs a map lookup instead of a
// signature check (an ECDSA or Ed25519 check costs more than the rest of
// the poll). A Verifier's keys and options never change, so a token that
// verified once verifies again until its exp: the cache checks exp (and
// nbf) on every hit and forgets expired grants. When full, it forgets
// grants at random.
type cache struct {
	mu    sync.Mutex
	m     map[string]cached
	bytes int // the length of the tokens in m
	max   int
}

type cached struct {
	g        *Grant
	nbf, exp time.Time // zero: not bounded
}

func newCache(max int) *cache {
	if max <= 0 {
		return nil
	}
	return &cache{m: make(map[string]cached), max: max}
}

// get returns the grant of token if it was verified and is still valid at
// now, with leeway.
func (c *cache) get(token string, now time.Time, leeway time.Duration) (*Grant, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[token]
	if !ok {
		return nil, false
	}
	if (!e.exp.IsZero() && now.After(e.exp.Add(leeway))) || (!e.nbf.IsZero() && now.Before(e.nbf.Add(-leeway))) {
		c.drop(token)
		return nil, false // verified again, for the reason
	}
	return e.g, true
}

// put remembers a verified grant.
func (c *cache) put(token string, e cached) {
	if c == nil || len(token) > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[token]; ok {
		return
	}
	for k := range c.m { // map order: random enough to forget by
		if c.bytes+len(token) <= c.max {
			break
		}
		c.drop(k)
	}
	c.m[token] = e
	c.bytes += len(token)
}

func (c *cache) drop(token string) {
	delete(c.m, token)
	c.bytes -= len(token)
}
