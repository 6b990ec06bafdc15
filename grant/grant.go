// Package grant checks signed channel grants: JWTs an app signs to say which
// channels their bearer may poll (claim "channels") or publish to (claim
// "publish"), as lists of patterns where "*" stands for any run of
// characters. Caddy checks a grant on every request, with no round trip to
// the app. Signatures and registered claims are checked by
// github.com/golang-jwt/jwt/v5; this package picks the key, maps failures
// to short reasons and matches channels. It imports nothing from Caddy.
package grant

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claim is the claim of a grant that lists channel patterns.
type Claim string

const (
	// Poll lists the channels the bearer may poll.
	Poll Claim = "channels"
	// Publish lists the channels the bearer may publish to, describe and
	// delete.
	Publish Claim = "publish"
)

// MaxTokenLen is the longest grant accepted, in bytes. Cookies stop at
// about 4 KiB; a longer token is refused before it is decoded.
const MaxTokenLen = 8 << 10

// Options tune a Verifier.
type Options struct {
	// Audience, when set, is what a grant's aud claim must name (one of
	// them); grants without aud are then refused.
	Audience []string
	// Leeway is the clock skew allowed when checking exp and nbf.
	Leeway time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// CacheBytes bounds the verified grants remembered (by the length of
	// their tokens); 0 is DefaultCacheBytes, negative remembers none.
	CacheBytes int
}

// Verifier checks grants against a set of keys. It is safe for concurrent
// use and never changes once made.
type Verifier struct {
	keys   []Key
	byID   map[string]Key
	parser *jwt.Parser
	leeway time.Duration
	now    func() time.Time
	cache  *cache
}

// NewVerifier returns a Verifier for keys; their IDs must differ.
func NewVerifier(keys []Key, o Options) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, errors.New("no keys to check grants with")
	}
	v := &Verifier{keys: keys, byID: make(map[string]Key, len(keys)), leeway: o.Leeway, now: o.Now}
	if v.now == nil {
		v.now = time.Now
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = DefaultCacheBytes
	}
	v.cache = newCache(o.CacheBytes)
	for _, k := range keys {
		if prev, dup := v.byID[k.id]; dup {
			return nil, fmt.Errorf("%v and %v have the same kid %q: name one of them", prev, k, k.id)
		}
		v.byID[k.id] = k
	}
	opts := []jwt.ParserOption{jwt.WithLeeway(o.Leeway)}
	if len(o.Audience) > 0 {
		opts = append(opts, jwt.WithAudience(o.Audience...))
	}
	opts = append(opts, jwt.WithTimeFunc(v.now))
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// Grant is a verified grant.
type Grant struct {
	// Subject is the grant's sub claim, the only part of a grant that is
	// logged.
	Subject string
	claims  claims
}

// Allows reports whether the grant's claim c lists a pattern matching
// channel.
func (g *Grant) Allows(c Claim, channel string) bool {
	patterns := g.claims.Channels
	if c == Publish {
		patterns = g.claims.Publish
	}
	for _, p := range patterns {
		if Match(p, channel) {
			return true
		}
	}
	return false
}

type claims struct {
	Channels patterns `json:"channels"`
	Publish  patterns `json:"publish"`
	jwt.RegisteredClaims
}

// patterns is a claim listing channel patterns.
type patterns []string

func (p *patterns) UnmarshalJSON(b []byte) error {
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return refusal("the channels and publish claims of a grant must be lists of strings")
	}
	*p = list
	return nil
}

// refusal is a reason to refuse a grant, worded for the client.
type refusal string

func (r refusal) Error() string { return string(r) }

// Verify checks a token's signature, exp, nbf and aud, and returns the
// grant. Its errors are short reasons that never contain the token. A
// grant verified before is taken from the cache, its exp and nbf checked
// again. The grant returned is shared: it must not be changed.
func (v *Verifier) Verify(token string) (*Grant, error) {
	if len(token) > MaxTokenLen {
		return nil, refusal(fmt.Sprintf("grant is longer than %d bytes", MaxTokenLen))
	}
	if g, ok := v.cache.get(token, v.now(), v.leeway); ok {
		return g, nil
	}
	var c claims
	if _, err := v.parser.ParseWithClaims(token, &c, v.keyFor); err != nil {
		return nil, reason(err)
	}
	g := &Grant{Subject: c.Subject, claims: c}
	e := cached{g: g}
	if c.ExpiresAt != nil {
		e.exp = c.ExpiresAt.Time
	}
	if c.NotBefore != nil {
		e.nbf = c.NotBefore.Time
	}
	v.cache.put(token, e)
	return g, nil
}

// keyFor picks the key a token names by its kid, or every key that fits
// its algorithm.
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if alg == jwt.SigningMethodNone.Alg() {
		return nil, refusal("grant is not signed (alg none)")
	}
	if kid, named := t.Header["kid"]; named {
		id, _ := kid.(string)
		k, ok := v.byID[id]
		if !ok {
			return nil, refusal("grant names an unknown key (kid)")
		}
		if !k.fits(alg) {
			return nil, refusal(fmt.Sprintf("grant's algorithm %s does not fit its key (kid)", alg))
		}
		return k.key, nil
	}
	var set jwt.VerificationKeySet
	for _, k := range v.keys {
		if k.fits(alg) {
			set.Keys = append(set.Keys, k.key)
		}
	}
	if len(set.Keys) == 0 {
		return nil, refusal(fmt.Sprintf("no key here checks grants signed with %s", alg))
	}
	return set, nil
}

// reason maps the JWT library's error to a short reason.
func reason(err error) error {
	var r refusal
	switch {
	case errors.As(err, &r):
		return r
	case errors.Is(err, jwt.ErrTokenMalformed):
		return refusal("malformed grant")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return refusal("grant signature does not verify")
	case errors.Is(err, jwt.ErrTokenExpired):
		return refusal("grant expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return refusal("grant not valid yet (nbf)")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return refusal("grant is for another audience (aud)")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return refusal("grant has no aud claim, and this route requires one")
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return refusal("grant's algorithm is not supported")
	}
	return refusal("invalid grant")
}

// Match reports whether channel matches pattern, where each "*" stands for
// any run of characters (none included) and everything else for itself.
func Match(pattern, channel string) bool {
	first, rest, wild := strings.Cut(pattern, "*")
	if !wild {
		return pattern == channel
	}
	if !strings.HasPrefix(channel, first) {
		return false
	}
	channel = channel[len(first):]
	parts := strings.Split(rest, "*")
	last := parts[len(parts)-1]
	// Leftmost match of each middle part: a later match leaves less
	// room for the parts after it, never more.
	for _, mid := range parts[:len(parts)-1] {
		i := strings.Index(channel, mid)
		if i < 0 {
			return false
		}
		channel = channel[i+len(mid):]
	}
	return strings.HasSuffix(channel, last)
}
