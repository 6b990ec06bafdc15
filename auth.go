package longpoll

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-longpoll/longpoll/grant"
)

func init() {
	caddy.RegisterModule(JWTAuth{})
}

// Authorizer decides who may poll, or publish to, which channel. Modules in
// the longpoll.auth namespace implement it; a poll or publish route uses
// one with "auth".
type Authorizer interface {
	// Authorize checks the request's credentials for channel: claim says
	// whether it polls or publishes. It returns the subject to log (""
	// when there is none) and, when the request is refused, an
	// *AuthError.
	Authorize(r *http.Request, claim grant.Claim, channel string) (subject string, err error)
}

// AuthError is a refused request: 401 when the credentials are missing or
// not valid, 403 when they are valid but do not cover the channel.
type AuthError struct {
	Status int
	// Reason says what was wrong, for the client; it never repeats the
	// credentials.
	Reason string
	// Missing is true when no credentials came at all.
	Missing bool
}

func (e *AuthError) Error() string { return e.Reason }

// refuse answers a request an Authorizer refused, with the JSON error body
// and the WWW-Authenticate challenge of RFC 6750. reason is the metric
// label it is counted under.
func refuse(w http.ResponseWriter, err error) (reason string, _ error) {
	var ae *AuthError
	if !errors.As(err, &ae) {
		return "auth", caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("checking credentials: %w", err))
	}
	challenge := `Bearer realm="longpoll"`
	reason = "unauthorized"
	switch {
	case ae.Status == http.StatusForbidden:
		challenge += `, error="insufficient_scope"`
		reason = "forbidden"
	case !ae.Missing:
		challenge += `, error="invalid_token"`
	}
	w.Header().Set("WWW-Authenticate", challenge)
	return reason, writeError(w, ae.Status, "%s", ae.Reason)
}

// DefaultLeeway is the clock skew allowed when checking a grant's exp and
// nbf.
const DefaultLeeway = 5 * time.Second

// JWTAuth checks signed channel grants: JWTs the app signs listing the
// channels their bearer may poll (claim "channels") or publish to (claim
// "publish"), as names or patterns where "*" stands for any run of
// characters ("chat-*", "user-42-*"; "*" alone is every channel). The
// signature, exp and nbf (and aud, when Audience is set) are checked on
// every request, with no request to the app. alg "none", an algorithm that
// does not fit the key, an unknown kid and a malformed token are refused.
//
// A request with no grant gets 401 and "WWW-Authenticate: Bearer"; a bad,
// expired or unverifiable grant 401; a valid grant that does not list the
// channel 403. Nothing about a grant is logged except its sub.
type JWTAuth struct {
	// Keys check grants' signatures; at least one. Several allow
	// rotation: a grant naming a key (kid) is checked with that key only,
	// one without a kid with each key that fits its algorithm.
	Keys []JWTKey `json:"keys,omitempty"`

	// Cookie names a cookie the grant may come in when there is no
	// "Authorization: Bearer" header (EventSource and plain browser
	// requests cannot set headers). Default: none.
	Cookie string `json:"cookie,omitempty"`

	// Query names a query parameter the grant may come in, when there is
	// neither header nor cookie. Off unless set: a URL ends up in access
	// logs and Referer headers, so prefer the cookie.
	Query string `json:"query,omitempty"`

	// Audience, if set, is what a grant's aud claim must name (one of
	// these); grants without aud are then refused.
	Audience []string `json:"audience,omitempty"`

	// Leeway is the clock skew allowed when checking exp and nbf.
	// Default 5s.
	Leeway caddy.Duration `json:"leeway,omitempty"`

	verifier *grant.Verifier
}

// JWTKey is one key grants may be signed with: Secret or File.
type JWTKey struct {
	// Secret is an HMAC secret (HS256, HS384, HS512) of at least 32 bytes,
	// usually a placeholder such as {env.LONGPOLL_JWT_SECRET}, expanded
	// once at load.
	Secret string `json:"secret,omitempty"`

	// File is a PEM file with one public key (RSA of at least 2048 bits:
	// RS*, PS*; ECDSA: ES256 on P-256, ES384 on P-384, ES512 on P-521;
	// Ed25519: EdDSA), or a certificate holding one. Read at load.
	File string `json:"file,omitempty"`

	// ID is the key's kid, as grants name it. Default: the key's RFC 7638
	// JWK thumbprint (SHA-256).
	ID string `json:"id,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (JWTAuth) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "longpoll.auth.jwt",
		New: func() caddy.Module { return new(JWTAuth) },
	}
}

// Provision reads the keys. A reload reads them again: new keys apply to
// the polls that arrive after it.
func (a *JWTAuth) Provision(caddy.Context) error {
	if a.Leeway == 0 {
		a.Leeway = caddy.Duration(DefaultLeeway)
	}
	if a.Leeway < 0 {
		return fmt.Errorf("auth jwt: leeway must not be negative, got %v", time.Duration(a.Leeway))
	}
	if len(a.Keys) == 0 {
		return errors.New("auth jwt: no keys: give at least one key or key_file")
	}
	keys := make([]grant.Key, 0, len(a.Keys))
	for i, k := range a.Keys {
		key, err := k.load()
		if err != nil {
			return fmt.Errorf("auth jwt: keys[%d]: %v", i, err)
		}
		keys = append(keys, key)
	}
	v, err := grant.NewVerifier(keys, grant.Options{Audience: a.Audience, Leeway: time.Duration(a.Leeway)})
	if err != nil {
		return fmt.Errorf("auth jwt: %v", err)
	}
	a.verifier = v
	return nil
}

// load reads the key, expanding placeholders ({env.*}, {file.*}).
func (k JWTKey) load() (grant.Key, error) {
	repl := caddy.NewReplacer()
	switch {
	case k.Secret != "" && k.File != "":
		return grant.Key{}, errors.New("a key is a secret or a file, not both")
	case k.Secret != "":
		secret := repl.ReplaceKnown(k.Secret, "")
		if secret == "" {
			return grant.Key{}, fmt.Errorf("secret %q is empty once its placeholders are replaced (is the environment variable set?)", k.Secret)
		}
		return grant.Secret([]byte(secret), k.ID)
	case k.File != "":
		path := repl.ReplaceKnown(k.File, "")
		data, err := os.ReadFile(path)
		if err != nil {
			return grant.Key{}, err
		}
		key, err := grant.PublicKey(data, k.ID)
		if err != nil {
			return grant.Key{}, fmt.Errorf("%s: %v", path, err)
		}
		return key, nil
	}
	return grant.Key{}, errors.New("a key needs a secret or a file")
}

// Authorize implements Authorizer.
func (a *JWTAuth) Authorize(r *http.Request, claim grant.Claim, channel string) (string, error) {
	token, ok := a.token(r)
	if !ok {
		return "", &AuthError{Status: http.StatusUnauthorized, Missing: true, Reason: a.missing()}
	}
	g, err := a.verifier.Verify(token)
	if err != nil {
		return "", &AuthError{Status: http.StatusUnauthorized, Reason: err.Error()}
	}
	if !g.Allows(claim, channel) {
		verb := "poll"
		if claim == grant.Publish {
			verb = "publish to"
		}
		return g.Subject, &AuthError{Status: http.StatusForbidden, Reason: fmt.Sprintf("grant does not allow to %s channel %q", verb, channel)}
	}
	return g.Subject, nil
}

// token finds the grant: Authorization: Bearer, else the cookie, else the
// query parameter.
func (a *JWTAuth) token(r *http.Request) (string, bool) {
	if scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		if tok = strings.TrimSpace(tok); tok != "" {
			return tok, true
		}
	}
	if a.Cookie != "" {
		if c, err := r.Cookie(a.Cookie); err == nil && c.Value != "" {
			return c.Value, true
		}
	}
	if a.Query != "" {
		if tok := queryParam(r.URL.RawQuery, a.Query); tok != "" {
			return tok, true
		}
	}
	return "", false
}

// missing says where a grant was looked for.
func (a *JWTAuth) missing() string {
	where := []string{"an Authorization: Bearer header"}
	if a.Cookie != "" {
		where = append(where, fmt.Sprintf("the cookie %s", a.Cookie))
	}
	if a.Query != "" {
		where = append(where, fmt.Sprintf("the query parameter %s", a.Query))
	}
	return "no grant: send one in " + strings.Join(where, " or ")
}

// UnmarshalCaddyfile parses:
//
//	auth jwt {
//		key      <secret> [<kid>]   # HMAC secret, e.g. {env.LONGPOLL_JWT_SECRET}; repeatable
//		key_file <path> [<kid>]     # PEM public key or certificate; repeatable
//		cookie   <name>             # also read the grant from this cookie
//		query    <name>             # also from this query parameter (off unless set)
//		audience <aud...>           # require aud to name one of these
//		leeway   <duration>         # clock skew for exp and nbf (default 5s)
//	}
//
// Keys are read here too, so that a missing file, a PEM that is not a
// public key or a secret that expands to nothing is an error with its line.
func (a *JWTAuth) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // "jwt"
	if d.NextArg() {
		return d.ArgErr()
	}
	var keys []grant.Key
	for d.NextBlock(0) {
		switch opt := d.Val(); opt {
		case "key", "key_file":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.ArgErr()
			}
			k := JWTKey{Secret: args[0]}
			if opt == "key_file" {
				k = JWTKey{File: args[0]}
			}
			if len(args) == 2 {
				k.ID = args[1]
			}
			key, err := k.load()
			if err != nil {
				return d.Errf("%s: %v", opt, err)
			}
			keys = append(keys, key)
			if _, err := grant.NewVerifier(keys, grant.Options{}); err != nil {
				return d.Errf("%s: %v", opt, err)
			}
			a.Keys = append(a.Keys, k)
		case "cookie":
			if !d.AllArgs(&a.Cookie) {
				return d.ArgErr()
			}
		case "query":
			if !d.AllArgs(&a.Query) {
				return d.ArgErr()
			}
		case "audience":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			a.Audience = append(a.Audience, args...)
		case "leeway":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil || dur < 0 {
				return d.Errf("leeway must be a duration such as 5s, got %q", s)
			}
			a.Leeway = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized auth jwt option %q", opt)
		}
	}
	if len(a.Keys) == 0 {
		d.Reset()
		d.Next() // the error's line is that of "jwt"
		return d.Err("auth jwt needs at least one key or key_file")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner     = (*JWTAuth)(nil)
	_ caddyfile.Unmarshaler = (*JWTAuth)(nil)
	_ Authorizer            = (*JWTAuth)(nil)
)
