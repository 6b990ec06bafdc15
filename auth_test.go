package longpoll_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testSecret is the HMAC key the auth tests' Caddyfiles take from the
// environment, as a deployment would.
const testSecret = "auth-test-secret-0123456789abcdef"

// keyring is what an app signing grants holds: the HMAC secret and an
// Ed25519 key whose public half Caddy reads from a file.
type keyring struct {
	edPriv ed25519.PrivateKey
	edFile string
}

func newKeyring(t *testing.T) keyring {
	t.Setenv("LP_TEST_JWT_SECRET", testSecret)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "app-ed.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return keyring{edPriv: priv, edFile: file}
}

// hs signs claims with the HMAC secret; extra header fields (kid) go in hdr.
func hs(t *testing.T, claims jwt.MapClaims, hdr ...string) string {
	return signed(t, jwt.SigningMethodHS256, []byte(testSecret), claims, hdr...)
}

func signed(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims, hdr ...string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	for i := 0; i+1 < len(hdr); i += 2 {
		tok.Header[hdr[i]] = hdr[i+1]
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// grantFor is a grant to poll channels, valid for an hour.
func grantFor(channels ...string) jwt.MapClaims {
	return jwt.MapClaims{"sub": "user-42", "channels": channels, "exp": time.Now().Add(time.Hour).Unix()}
}

func (k keyring) pollSite(park string) string {
	return fmt.Sprintf(`longpoll /poll/* {
		%s
		auth jwt {
			key {env.LP_TEST_JWT_SECRET}
			key_file %s app-ed
			cookie lp_grant
			query grant
		}
	}`, park, k.edFile)
}

const grantPublishSite = `longpoll_publish /publish/* {
		token static-publish-token
		auth jwt {
			key {env.LP_TEST_JWT_SECRET}
		}
	}`

// Every refusal of a poll, with its status, challenge and reason; the
// answer never repeats the token.
func TestGrantRefusalsSayWhatWasWrong(t *testing.T) {
	k := newKeyring(t)
	s := start(t, "", k.pollSite(""), grantPublishSite)
	checkLeaks(t, s)
	expired := grantFor("room-*")
	expired["exp"] = time.Now().Add(-time.Minute).Unix()
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, grantFor("room-*")).SignedString(jwt.UnsafeAllowNoneSignatureType)
	for _, tc := range []struct {
		name      string
		hdr       []string
		status    int
		challenge string
		says      string
	}{
		{"no grant", nil, 401, `Bearer realm="longpoll"`, "no grant: send one in an Authorization: Bearer header or the cookie lp_grant or the query parameter grant"},
		{"not a JWT", []string{"Authorization", "Bearer not-a-jwt"}, 401, `Bearer realm="longpoll", error="invalid_token"`, "malformed grant"},
		{"expired", []string{"Authorization", "Bearer " + hs(t, expired)}, 401, `error="invalid_token"`, "grant expired"},
		{"alg none", []string{"Authorization", "Bearer " + none}, 401, `error="invalid_token"`, "not signed (alg none)"},
		{"unknown kid", []string{"Authorization", "Bearer " + hs(t, grantFor("room-*"), "kid", "app-2019")}, 401, `error="invalid_token"`, "unknown key (kid)"},
		{"HS256 naming the Ed25519 key", []string{"Authorization", "Bearer " + hs(t, grantFor("room-*"), "kid", "app-ed")}, 401, `error="invalid_token"`, "HS256 does not fit its key"},
		{"other secret", []string{"Authorization", "Bearer " + signed(t, jwt.SigningMethodHS256, []byte(strings.Repeat("s", 32)), grantFor("room-*"))}, 401, `error="invalid_token"`, "signature does not verify"},
		{"another channel", []string{"Authorization", "Bearer " + hs(t, grantFor("room-1", "lobby"))}, 403, `Bearer realm="longpoll", error="insufficient_scope"`, `grant does not allow to poll channel "room-2"`},
		{"publish grant only", []string{"Authorization", "Bearer " + hs(t, jwt.MapClaims{"publish": []string{"*"}})}, 403, `error="insufficient_scope"`, `grant does not allow to poll channel "room-2"`},
		{"Basic is no grant", []string{"Authorization", "Basic dXNlcjpwYXNz"}, 401, `Bearer realm="longpoll"`, "no grant"},
	} {
		r := s.must("GET", s.poll+"/poll/room-2", "", tc.hdr...)
		if r.status != tc.status || !strings.Contains(r.header.Get("WWW-Authenticate"), tc.challenge) ||
			!strings.Contains(r.json(t)["error"].(string), tc.says) {
			t.Errorf("%s: %d, WWW-Authenticate %q, %s; want %d, %q, %q", tc.name, r.status, r.header.Get("WWW-Authenticate"), r.body, tc.status, tc.challenge, tc.says)
		}
		if tc.status == 401 && tc.name == "no grant" && strings.Contains(r.header.Get("WWW-Authenticate"), "error=") {
			t.Errorf("no grant: the challenge names an error: %q", r.header.Get("WWW-Authenticate"))
		}
		if len(tc.hdr) == 2 && strings.Contains(r.body, strings.TrimPrefix(tc.hdr[1], "Bearer ")) {
			t.Errorf("%s: the answer repeats the token: %s", tc.name, r.body)
		}
	}
	s.assertMetrics(
		`caddy_longpoll_polls_rejected_total{reason="unauthorized"} 8`,
		`caddy_longpoll_polls_rejected_total{reason="forbidden"} 2`)
}

// A grant from each source (header, cookie, query) and each key (the HMAC
// secret, the Ed25519 key by kid and without) lets a poll in: held, then
// answered, in both held and parked modes; the same grant is refused for a
// channel it does not list.
func TestGrantFromEachSourceAndKeyLetsAPollIn(t *testing.T) {
	for name, park := range map[string]string{"held": "", "parked": "park"} {
		t.Run(name, func(t *testing.T) {
			k := newKeyring(t)
			s := start(t, "", k.pollSite(park), "longpoll_publish /publish/*")
			checkLeaks(t, s)
			hsGrant := hs(t, grantFor("room-*"))
			edGrant := signed(t, jwt.SigningMethodEdDSA, k.edPriv, grantFor("room-1"), "kid", "app-ed")
			edNoKid := signed(t, jwt.SigningMethodEdDSA, k.edPriv, grantFor("room-1"))
			for _, tc := range []struct {
				name  string
				query string
				hdr   []string
			}{
				{"bearer", "", []string{"Authorization", "Bearer " + hsGrant}},
				{"cookie", "", []string{"Cookie", "other=1; lp_grant=" + hsGrant}},
				{"query", "grant=" + url.QueryEscape(hsGrant), nil},
				{"ed25519 by kid", "", []string{"Authorization", "Bearer " + edGrant}},
				{"ed25519 without kid", "", []string{"Cookie", "lp_grant=" + edNoKid}},
			} {
				cursor := s.info("room-1")["cursor"].(string)
				got := s.pollAsync(context.Background(), s.poll+"/poll/room-1?since="+cursor+"&"+tc.query, tc.hdr...)
				s.waitHeld("room-1", 1)
				pub := s.publish("room-1", "text/plain", "for "+tc.name)
				r := <-got
				if r.status != 200 || r.header.Get("ETag") != `"`+pub["id"].(string)+`"` || !strings.Contains(r.body, "for "+tc.name) {
					t.Errorf("%s: %d %s", tc.name, r.status, r.body)
				}
				if r := s.must("GET", s.poll+"/poll/other?"+tc.query, "", tc.hdr...); r.status != 403 {
					t.Errorf("%s: the grant for room-* let a poll into other: %d %s", tc.name, r.status, r.body)
				}
			}
			// The header comes first: a bad one is not rescued by a good cookie.
			if r := s.must("GET", s.poll+"/poll/room-1", "", "Authorization", "Bearer bad", "Cookie", "lp_grant="+hsGrant); r.status != 401 {
				t.Errorf("bad header, good cookie: %d %s", r.status, r.body)
			}
		})
	}
}

// The publish endpoint takes the static token for any channel, or a grant
// whose publish claim lists the channel.
func TestPublishWithGrantOrToken(t *testing.T) {
	k := newKeyring(t)
	s := start(t, "", k.pollSite(""), grantPublishSite)
	checkLeaks(t, s)
	pubGrant := hs(t, jwt.MapClaims{"sub": "billing-app", "publish": []string{"billing-*"}})
	for _, tc := range []struct {
		name, method, channel, auth string
		status                      int
		says                        string
	}{
		{"static token", "POST", "anything", "Bearer static-publish-token", 200, ""},
		{"grant, its channel", "POST", "billing-7", "Bearer " + pubGrant, 200, ""},
		{"grant, describe", "GET", "billing-7", "Bearer " + pubGrant, 200, ""},
		{"grant, delete", "DELETE", "billing-7", "Bearer " + pubGrant, 200, ""},
		{"grant, other channel", "POST", "chat-1", "Bearer " + pubGrant, 403, `grant does not allow to publish to channel "chat-1"`},
		{"poll grant", "POST", "billing-7", "Bearer " + hs(t, grantFor("*")), 403, "does not allow to publish"},
		{"wrong token", "POST", "billing-7", "Bearer not-the-token", 401, "malformed grant"},
		{"nothing", "POST", "billing-7", "", 401, "no grant"},
	} {
		var hdr []string
		if tc.auth != "" {
			hdr = []string{"Authorization", tc.auth}
		}
		r := s.must(tc.method, s.pub+"/publish/"+tc.channel, "x", hdr...)
		if r.status != tc.status || (tc.says != "" && !strings.Contains(r.json(t)["error"].(string), tc.says)) {
			t.Errorf("%s: %d %s; want %d %q", tc.name, r.status, r.body, tc.status, tc.says)
		}
	}
	// Pushpin's format: every item's channel must be granted.
	items := func(chs ...string) string {
		var its []string
		for _, ch := range chs {
			its = append(its, `{"channel":"`+ch+`","formats":{"http-response":{"body":"x"}}}`)
		}
		return `{"items":[` + strings.Join(its, ",") + `]}`
	}
	if r := s.must("POST", s.pub+"/publish/", items("billing-1", "billing-2"), "Authorization", "Bearer "+pubGrant); r.status != 200 {
		t.Errorf("items on granted channels: %d %s", r.status, r.body)
	}
	if r := s.must("POST", s.pub+"/publish/", items("billing-3", "chat-1"), "Authorization", "Bearer "+pubGrant); r.status != 403 ||
		!strings.Contains(r.body, `publish to channel \"chat-1\"`) {
		t.Errorf("an item on a channel not granted: %d %s", r.status, r.body)
	}
	if r := s.must("GET", s.pub+"/publish/billing-3", "", "Authorization", "Bearer "+pubGrant); r.json(t)["messages"] != float64(0) {
		t.Errorf("a refused publish stored some of its items: %s", r.body)
	}
	s.assertMetrics(
		`caddy_longpoll_publishes_rejected_total{reason="forbidden"} 3`,
		`caddy_longpoll_publishes_rejected_total{reason="unauthorized"} 2`)
}

// A reload with new keys applies to new polls; a poll let in before it
// stays held and gets its message.
func TestReloadWithNewKeysAppliesToNewPolls(t *testing.T) {
	k := newKeyring(t)
	s := start(t, "", k.pollSite(""), "longpoll_publish /publish/*")
	checkLeaks(t, s)
	hsGrant := hs(t, grantFor("room-*"))
	cursor := s.info("room-1")["cursor"].(string)
	held := s.pollAsync(context.Background(), s.poll+"/poll/room-1?since="+cursor, "Authorization", "Bearer "+hsGrant)
	s.waitHeld("room-1", 1)

	// The HMAC secret is retired: only the Ed25519 key is left.
	s.reload("", fmt.Sprintf(`longpoll /poll/* {
		auth jwt {
			key_file %s
		}
	}`, k.edFile), "longpoll_publish /publish/*")
	if r := s.must("GET", s.poll+"/poll/room-1", "", "Authorization", "Bearer "+hsGrant); r.status != 401 ||
		!strings.Contains(r.body, "no key here checks grants signed with HS256") {
		t.Errorf("a grant signed with the retired secret: %d %s", r.status, r.body)
	}
	pub := s.publish("room-1", "text/plain", "after the reload")
	if r := <-held; r.status != 200 || r.header.Get("ETag") != `"`+pub["id"].(string)+`"` {
		t.Errorf("the poll held across the reload: %d %s", r.status, r.body)
	}
	edGrant := signed(t, jwt.SigningMethodEdDSA, k.edPriv, grantFor("room-1"))
	if r := s.must("GET", s.poll+"/poll/room-1?since="+cursor, "", "Authorization", "Bearer "+edGrant); r.status != 200 || !strings.Contains(r.body, "after the reload") {
		t.Errorf("a grant signed with the kept key: %d %s", r.status, r.body)
	}
}
