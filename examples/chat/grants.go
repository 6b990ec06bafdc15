package main

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Who may read which room. The app remembers, per browser (a session
// cookie), the rooms it joined, and hands the browser a grant for them: a
// JWT listing their channels, in the cookie the Caddyfile's auth jwt reads.
// Caddy checks it on every poll, so a room's lines reach only the browsers
// that joined it, and the app still sees no poll.
const (
	sessionCookie = "chat_session"
	grantCookie   = "lp_grant" // the Caddyfile's "cookie lp_grant"
	grantTTL      = time.Hour  // a page open longer gets 401 and reloads
	firstRoom     = "lobby"    // every browser has joined it
	maxSessions   = 10000
	maxJoined     = 50 // rooms per browser: the grant stays far under Caddy's 8 KiB
)

// channel is a room's channel in Caddy: the Caddyfile polls
// chat-{query.room}.
func channel(room string) string { return "chat-" + room }

// session is what the app knows of one browser.
type session struct {
	sub   string // the grant's sub, which Caddy logs; not the session cookie
	rooms []string
}

// visitor is a snapshot of a browser's session.
type visitor struct {
	sub   string
	rooms []string // sorted
}

func (v visitor) joined(room string) bool {
	_, ok := slices.BinarySearch(v.rooms, room)
	return ok
}

// grantClaims are a grant's claims: channels is the claim auth jwt checks.
type grantClaims struct {
	Channels []string `json:"channels"`
	jwt.RegisteredClaims
}

// visit finds the browser's session, starting one (in the lobby) for a
// browser the app does not know, and joins room if it is not "". It
// returns false when the browser has joined too many rooms.
func (a *app) visit(w http.ResponseWriter, r *http.Request, room string) (visitor, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var s *session
	if c, err := r.Cookie(sessionCookie); err == nil {
		s = a.sessions[c.Value]
	}
	if s == nil {
		if len(a.sessions) >= maxSessions {
			for id := range a.sessions { // forget one: that browser starts again in the lobby
				delete(a.sessions, id)
				break
			}
		}
		id := randomHex(16)
		s = &session{sub: "visitor-" + randomHex(4), rooms: []string{firstRoom}}
		a.sessions[id] = s
		http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/",
			HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: secure(r)})
	}
	if i, found := slices.BinarySearch(s.rooms, room); room != "" && !found {
		if len(s.rooms) >= maxJoined {
			return visitor{s.sub, slices.Clone(s.rooms)}, false
		}
		s.rooms = slices.Insert(s.rooms, i, room)
	}
	return visitor{s.sub, slices.Clone(s.rooms)}, true
}

// grant sets the grant cookie: the channels of the rooms v joined, for
// grantTTL. A page sets it when it is served and when its browser joins a
// room, so it never lists less than the page shows.
func (a *app) grant(w http.ResponseWriter, r *http.Request, v visitor) error {
	channels := make([]string, len(v.rooms))
	for i, room := range v.rooms {
		channels[i] = channel(room)
	}
	now := time.Now()
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, grantClaims{
		Channels: channels,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   v.sub,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(grantTTL)),
		},
	}).SignedString(a.secret)
	if err != nil {
		return err
	}
	// HttpOnly: the page's scripts never need it, the browser sends it
	// with each poll. SameSite=Lax: other sites' requests go without it.
	http.SetCookie(w, &http.Cookie{Name: grantCookie, Value: token, Path: "/", MaxAge: int(grantTTL / time.Second),
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: secure(r)})
	return nil
}

// secure says whether the browser reached Caddy over HTTPS (Caddy's
// reverse_proxy sets X-Forwarded-Proto); cookies are then Secure.
func secure(r *http.Request) bool {
	return r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
