package grant

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	mrand "math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

// Generating RSA keys is slow: one per test binary.
var rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func pemOf(t testing.TB, typ string, der []byte) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pubPEM(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pemOf(t, "PUBLIC KEY", der)
}

// must is for keys a test makes: they are valid, or the test is wrong.
func must(k Key, err error) Key {
	if err != nil {
		panic(err)
	}
	return k
}

// sign makes a token; kid "" leaves the header without one.
func sign(t testing.TB, m jwt.SigningMethod, key any, kid string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMatchIsAGlobOfStars(t *testing.T) {
	for _, tc := range []struct {
		pattern, channel string
		want             bool
	}{
		{"chat-42", "chat-42", true},
		{"chat-42", "chat-420", false},
		{"*", "anything", true},
		{"*", "", true},
		{"chat-*", "chat-", true},
		{"chat-*", "chat-lobby", true},
		{"chat-*", "chats-lobby", false},
		{"user-42-*", "user-42-inbox", true},
		{"user-42-*", "user-420-inbox", false},
		{"*-inbox", "user-42-inbox", true},
		{"*-inbox", "user-42-inbox2", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxcyyb", false},
		{"a*bc*bc", "abcbc", true},
		{"a*bc*bc", "abcb", false},
		{"a**a", "a", false},
		{"a**a", "aa", true},
		{"", "", true},
		{"", "x", false},
	} {
		if got := Match(tc.pattern, tc.channel); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.pattern, tc.channel, got, tc.want)
		}
	}
}

// Match agrees with the regular expression the pattern stands for, on
// random patterns and channels over a small alphabet (so that they meet).
func TestMatchAgreesWithRegexp(t *testing.T) {
	r := mrand.New(mrand.NewPCG(1, 2))
	word := func(alphabet string, n int) string {
		var b strings.Builder
		for range r.IntN(n) {
			b.WriteByte(alphabet[r.IntN(len(alphabet))])
		}
		return b.String()
	}
	for range 20000 {
		p, c := word("ab*", 7), word("ab", 8)
		re := regexp.MustCompile("^" + strings.ReplaceAll(regexp.QuoteMeta(p), `\*`, ".*") + "$")
		if got, want := Match(p, c), re.MatchString(c); got != want {
			t.Fatalf("Match(%q, %q) = %v, the regexp says %v", p, c, got, want)
		}
	}
}

// RFC 7638, section 3.1: the example RSA key and its thumbprint.
func TestThumbprintIsRFC7638s(t *testing.T) {
	n, _ := base64.RawURLEncoding.DecodeString("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAt" +
		"VT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn6" +
		"4tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FD" +
		"W2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n9" +
		"1CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINH" +
		"aQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537}
	k := must(PublicKey(pubPEM(t, pub), ""))
	if k.ID() != "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs" {
		t.Errorf("thumbprint %s", k.ID())
	}
	if named := must(PublicKey(pubPEM(t, pub), "app-2026")); named.ID() != "app-2026" {
		t.Errorf("a named key's kid is %s", named.ID())
	}
}

func TestPublicKeyReadsEachKindAndRefusesTheRest(t *testing.T) {
	ec256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ec521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	ed, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "app"}, NotAfter: time.Now().Add(time.Hour)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, ec256.Public(), ec256)
	if err != nil {
		t.Fatal(err)
	}
	privDER, _ := x509.MarshalPKCS8PrivateKey(edPriv)
	for _, tc := range []struct {
		name    string
		pem     []byte
		methods string // "": refused
		err     string
	}{
		{name: "RSA PKIX", pem: pubPEM(t, &rsaKey().PublicKey), methods: "RS256 RS384 RS512 PS256 PS384 PS512"},
		{name: "RSA PKCS1", pem: pemOf(t, "RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsaKey().PublicKey)), methods: "RS256 RS384 RS512 PS256 PS384 PS512"},
		{name: "P-256", pem: pubPEM(t, ec256.Public()), methods: "ES256"},
		{name: "P-384", pem: pubPEM(t, ec384.Public()), methods: "ES384"},
		{name: "P-521", pem: pubPEM(t, ec521.Public()), methods: "ES512"},
		{name: "Ed25519", pem: pubPEM(t, ed), methods: "EdDSA"},
		{name: "certificate", pem: pemOf(t, "CERTIFICATE", certDER), methods: "ES256"},
		{name: "private key", pem: pemOf(t, "PRIVATE KEY", privDER), err: "give the public key"},
		{name: "RSA 1024", pem: pubPEM(t, &small.PublicKey), err: "1024 bits, want at least 2048"},
		{name: "not PEM", pem: []byte("-----BEGIN nothing"), err: "no PEM block"},
		{name: "two keys", pem: append(pubPEM(t, ec256.Public()), pubPEM(t, ed)...), err: "more than one PEM block"},
		{name: "other block", pem: pemOf(t, "DH PARAMETERS", []byte{1}), err: `"DH PARAMETERS", not a public key`},
		{name: "broken DER", pem: pemOf(t, "PUBLIC KEY", []byte{1, 2, 3}), err: "parsing PUBLIC KEY"},
	} {
		k, err := PublicKey(tc.pem, "")
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %v, want an error about %q", tc.name, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err == "" && strings.Join(k.methods, " ") != tc.methods:
			t.Errorf("%s: algorithms %v, want %s", tc.name, k.methods, tc.methods)
		}
	}
	if _, err := Secret(secret[:31], ""); err == nil || !strings.Contains(err.Error(), "31 bytes, want at least 32") {
		t.Errorf("a 31-byte secret: %v", err)
	}
}

func TestVerifyAcceptsGoodGrantsAndSaysWhyItRefusesTheRest(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	hmacKey := must(Secret(secret, ""))
	rsaPub := must(PublicKey(pubPEM(t, &rsaKey().PublicKey), "app-2026"))
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	edKey := must(PublicKey(pubPEM(t, edPub), ""))
	ecPriv, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ecKey := must(PublicKey(pubPEM(t, ecPriv.Public()), ""))
	v, err := NewVerifier([]Key{hmacKey, rsaPub, edKey, ecKey}, Options{Leeway: 5 * time.Second, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	vAud, err := NewVerifier([]Key{hmacKey}, Options{Audience: []string{"chat"}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	claims := func(extra jwt.MapClaims) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "ann", "channels": []string{"chat-*"}, "exp": now.Add(time.Hour).Unix()}
		for k, v := range extra {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	hs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, secret, "", c) }
	// The classic confusion: HS256 with the RSA public key's PEM as secret.
	confused := sign(t, jwt.SigningMethodHS256, pubPEM(t, &rsaKey().PublicKey), "app-2026", claims(nil))
	ok := sign(t, jwt.SigningMethodHS256, secret, "", claims(nil))
	for _, tc := range []struct {
		name  string
		v     *Verifier
		token string
		err   string // "": accepted
	}{
		{name: "HS256", token: ok},
		{name: "HS512 by thumbprint", token: sign(t, jwt.SigningMethodHS512, secret, hmacKey.ID(), claims(nil))},
		{name: "RS256 by name", token: sign(t, jwt.SigningMethodRS256, rsaKey(), "app-2026", claims(nil))},
		{name: "PS384 without kid", token: sign(t, jwt.SigningMethodPS384, rsaKey(), "", claims(nil))},
		{name: "EdDSA", token: sign(t, jwt.SigningMethodEdDSA, edPriv, edKey.ID(), claims(nil))},
		{name: "ES384 without kid", token: sign(t, jwt.SigningMethodES384, ecPriv, "", claims(nil))},
		{name: "no exp", token: hs(claims(jwt.MapClaims{"exp": nil}))},
		{name: "expired within the leeway", token: hs(claims(jwt.MapClaims{"exp": now.Add(-4 * time.Second).Unix()}))},
		{name: "aud matches", v: vAud, token: hs(claims(jwt.MapClaims{"aud": []string{"other", "chat"}}))},

		{name: "alg none", token: none, err: "not signed (alg none)"},
		{name: "unknown kid", token: sign(t, jwt.SigningMethodHS256, secret, "nobody", claims(nil)), err: "unknown key (kid)"},
		{name: "HS256 with the RSA key's kid", token: confused, err: "HS256 does not fit its key"},
		{name: "ES256 without a P-256 key", token: func() string {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			return sign(t, jwt.SigningMethodES256, k, "", claims(nil))
		}(), err: "no key here checks grants signed with ES256"},
		{name: "another secret", token: sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 32)), "", claims(nil)), err: "signature does not verify"},
		{name: "a kid naming another key", token: sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("y", 32)), hmacKey.ID(), claims(nil)), err: "signature does not verify"},
		{name: "expired", token: hs(claims(jwt.MapClaims{"exp": now.Add(-6 * time.Second).Unix()})), err: "grant expired"},
		{name: "not yet", token: hs(claims(jwt.MapClaims{"nbf": now.Add(time.Minute).Unix()})), err: "not valid yet"},
		{name: "aud differs", v: vAud, token: hs(claims(jwt.MapClaims{"aud": "dashboard"})), err: "another audience"},
		{name: "aud missing", v: vAud, token: ok, err: "no aud claim"},
		{name: "channels a string", token: hs(claims(jwt.MapClaims{"channels": "chat-*"})), err: "must be lists of strings"},
		{name: "garbage", token: "not.a.jwt", err: "malformed grant"},
		{name: "empty", token: "", err: "malformed grant"},
		{name: "unknown alg", token: "eyJhbGciOiJYWTEyMyJ9.e30.c2ln", err: "algorithm is not supported"},
		{name: "too long", token: ok + strings.Repeat("A", MaxTokenLen), err: "longer than 8192 bytes"},
	} {
		ver := tc.v
		if ver == nil {
			ver = v
		}
		g, err := ver.Verify(tc.token)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.err == "" && (g.Subject != "ann" || !g.Allows(Poll, "chat-1")):
			t.Errorf("%s: grant %+v", tc.name, g)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %v, want a refusal about %q", tc.name, err, tc.err)
		case err != nil && strings.Contains(err.Error(), tc.token[:min(len(tc.token), 20)]) && tc.token != "":
			t.Errorf("%s: the reason %q repeats the token", tc.name, err)
		}
	}
}

func TestGrantAllowsWhatItsClaimLists(t *testing.T) {
	v, err := NewVerifier([]Key{must(Secret(secret, ""))}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	g, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, "", jwt.MapClaims{
		"channels": []string{"chat-lobby", "user-42-*"}, "publish": []string{"chat-*"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		c       Claim
		channel string
		want    bool
	}{
		{Poll, "chat-lobby", true}, {Poll, "chat-42", false}, {Poll, "user-42-inbox", true}, {Poll, "user-4-inbox", false},
		{Publish, "chat-42", true}, {Publish, "user-42-inbox", false},
	} {
		if g.Allows(tc.c, tc.channel) != tc.want {
			t.Errorf("Allows(%s, %q) = %v", tc.c, tc.channel, !tc.want)
		}
	}
	if g.Subject != "" {
		t.Errorf("subject %q of a grant without sub", g.Subject)
	}
}

func TestNewVerifierRefusesNoKeysAndTwoKeysWithOneKid(t *testing.T) {
	if _, err := NewVerifier(nil, Options{}); err == nil {
		t.Error("no keys accepted")
	}
	a := must(Secret(secret, "k"))
	b := must(Secret([]byte(strings.Repeat("z", 32)), "k"))
	if _, err := NewVerifier([]Key{a, b}, Options{}); err == nil || !strings.Contains(err.Error(), `same kid "k"`) {
		t.Errorf("two keys named k: %v", err)
	}
	if _, err := NewVerifier([]Key{must(Secret(secret, "")), must(Secret(secret, ""))}, Options{}); err == nil {
		t.Error("the same secret twice accepted")
	}
}

// What checking a grant costs per poll, by algorithm.
func BenchmarkVerify(b *testing.B) {
	ecPriv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	c := jwt.MapClaims{"sub": "ann", "channels": []string{"chat-lobby", "user-42-*"}, "exp": time.Now().Add(time.Hour).Unix()}
	for _, bc := range []struct {
		name string
		key  Key
		m    jwt.SigningMethod
		sk   any
	}{
		{"HS256", must(Secret(secret, "")), jwt.SigningMethodHS256, secret},
		{"RS256", must(PublicKey(pubPEM(b, &rsaKey().PublicKey), "")), jwt.SigningMethodRS256, rsaKey()},
		{"ES256", must(PublicKey(pubPEM(b, ecPriv.Public()), "")), jwt.SigningMethodES256, ecPriv},
		{"EdDSA", must(PublicKey(pubPEM(b, edPub), "")), jwt.SigningMethodEdDSA, edPriv},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for _, cb := range []struct {
				name  string
				bytes int
			}{{"checked", -1}, {"cached", 0}} {
				b.Run(cb.name, func(b *testing.B) {
					v, err := NewVerifier([]Key{bc.key}, Options{CacheBytes: cb.bytes})
					if err != nil {
						b.Fatal(err)
					}
					tok := sign(b, bc.m, bc.sk, "", c)
					b.ReportAllocs()
					for b.Loop() {
						g, err := v.Verify(tok)
						if err != nil || !g.Allows(Poll, "user-42-inbox") {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}

// A verified grant is remembered until its exp (with the leeway): then it
// is refused, for the right reason, and forgotten. Refused grants are not
// remembered, and the cache stays within its bytes.
func TestVerifierRemembersGrantsUntilTheyExpire(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	v, err := NewVerifier([]Key{must(Secret(secret, ""))}, Options{Leeway: 5 * time.Second, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, jwt.SigningMethodHS256, secret, "", jwt.MapClaims{"channels": []string{"a"}, "exp": now.Add(time.Minute).Unix()})
	g1, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if g2, err := v.Verify(tok); err != nil || g2 != g1 {
		t.Fatalf("second check: %v, %v; want the remembered grant", g2, err)
	}
	now = now.Add(time.Minute + 4*time.Second) // within the leeway
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("within the leeway: %v", err)
	}
	now = now.Add(2 * time.Second)
	if _, err := v.Verify(tok); err == nil || err.Error() != "grant expired" {
		t.Fatalf("after exp and the leeway: %v, want grant expired", err)
	}
	if _, ok := v.cache.m[tok]; ok {
		t.Error("an expired grant is still remembered")
	}
	bad := sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("q", 32)), "", jwt.MapClaims{})
	for range 2 {
		if _, err := v.Verify(bad); err == nil {
			t.Fatal("a badly signed grant was accepted")
		}
	}
	if _, ok := v.cache.m[bad]; ok {
		t.Error("a refused grant is remembered")
	}

	small, err := NewVerifier([]Key{must(Secret(secret, ""))}, Options{CacheBytes: 3 * len(tok)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		tk := sign(t, jwt.SigningMethodHS256, secret, "", jwt.MapClaims{"channels": []string{"a"}, "n": 1000 + i})
		if _, err := small.Verify(tk); err != nil {
			t.Fatal(err)
		}
		if small.cache.bytes > small.cache.max || len(small.cache.m) > 3 || len(small.cache.m) == 0 {
			t.Fatalf("after %d grants: %d tokens, %d bytes, over %d", i+1, len(small.cache.m), small.cache.bytes, small.cache.max)
		}
	}
	off, err := NewVerifier([]Key{must(Secret(secret, ""))}, Options{CacheBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := off.Verify(sign(t, jwt.SigningMethodHS256, secret, "", jwt.MapClaims{"channels": []string{"a"}})); err != nil || off.cache != nil {
		t.Errorf("without a cache: %v, cache %v", err, off.cache)
	}
}
