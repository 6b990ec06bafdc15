package longpoll_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
)

// authApp is the web app behind Caddy in the forward_auth tests. It knows
// sessions by their cookie, answers forward_auth's sub-requests, serves any
// other path as a page, and counts every request it sees by path.
type authApp struct {
	srv  *httptest.Server
	addr string

	mu       sync.Mutex
	seen     map[string]int // requests by path
	lastAuth http.Header    // headers of the latest auth sub-request
	method   string         // and its method
}

// appSessions are the channels each session may poll.
var appSessions = map[string][]string{"ann": {"chat-lobby", "chat-1"}, "bob": {"chat-lobby"}}

// startWithApp starts the app and a Caddy in front of it, configured with
// pollSite.
func startWithApp(t *testing.T, park string) (*authApp, *server) {
	a := &authApp{seen: map[string]int{}}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	a.addr = a.srv.Listener.Addr().String()
	s := start(t, "", a.pollSite(park), "longpoll_publish /publish/*")
	checkLeaks(t, s)
	// Runs before checkLeaks' check: Caddy does not close the idle
	// connections of a reverse_proxy's default transport when its config is
	// unloaded (they outlive it by up to the 2 min idle_timeout), so the app
	// closes them.
	t.Cleanup(a.srv.CloseClientConnections)
	return a, s
}

func (a *authApp) serve(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.seen[r.URL.Path]++
	if strings.HasPrefix(r.URL.Path, "/auth/") {
		a.lastAuth, a.method = r.Header.Clone(), r.Method
	}
	a.mu.Unlock()
	var user string
	if c, err := r.Cookie("session"); err == nil {
		user = c.Value
	}
	refuse := func(status int, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": msg})
	}
	switch r.URL.Path {
	case "/auth/poll":
		switch rooms, ok := appSessions[user]; {
		case !ok:
			refuse(http.StatusUnauthorized, "no session")
		case !slices.Contains(rooms, r.URL.Query().Get("channel")):
			refuse(http.StatusForbidden, "not your room")
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	case "/auth/me":
		if _, ok := appSessions[user]; !ok {
			refuse(http.StatusUnauthorized, "no session")
			return
		}
		w.Header().Set("X-User", user)
		w.WriteHeader(http.StatusNoContent)
	default:
		fmt.Fprintf(w, "page %s", r.URL.Path)
	}
}

func (a *authApp) count(path string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen[path]
}

// pollSite is the README's example: the app decides who polls a room, and
// names the user whose own channel /me/poll is.
func (a *authApp) pollSite(park string) string {
	return fmt.Sprintf(`forward_auth /chat/poll %[1]s {
		uri /auth/poll?channel=chat-{query.room}
	}
	longpoll /chat/poll {
		channel chat-{query.room}
		%[2]s
	}
	forward_auth /me/poll %[1]s {
		uri /auth/me
		copy_headers X-User
	}
	longpoll /me/poll {
		channel user-{header.X-User}
	}
	reverse_proxy %[1]s`, a.addr, park)
}

// The app's session decides: a poll it allows is held and answered by
// Caddy; its refusals reach the client as it wrote them. It sees one auth
// sub-request per poll, and never the poll. Held or parked.
func TestForwardAuthAppDecidesWhoPolls(t *testing.T) {
	for name, park := range map[string]string{"held": "", "parked": "park"} {
		t.Run(name, func(t *testing.T) { forwardAuthAppDecides(t, park) })
	}
}

func forwardAuthAppDecides(t *testing.T, park string) {
	app, s := startWithApp(t, park)
	polls := 0
	for _, tc := range []struct{ user, room string }{{"ann", "1"}, {"ann", "lobby"}, {"bob", "lobby"}} {
		ch := "chat-" + tc.room
		cursor := s.info(ch)["cursor"].(string)
		got := s.pollAsync(context.Background(), s.poll+"/chat/poll?room="+tc.room+"&since="+cursor, "Cookie", "session="+tc.user)
		polls++
		s.waitHeld(ch, 1)
		pub := s.publish(ch, "text/plain", "for "+tc.user)
		if r := <-got; r.status != 200 || r.header.Get("ETag") != `"`+pub["id"].(string)+`"` || !strings.Contains(r.body, "for "+tc.user) {
			t.Errorf("%s in %s: %d %s", tc.user, ch, r.status, r.body)
		}
		// The app is asked with the poll's own URI, cursor and all: it must
		// decide on the channel parameter alone.
		app.mu.Lock()
		fwd := app.lastAuth.Get("X-Forwarded-Uri")
		app.mu.Unlock()
		if want := "/chat/poll?room=" + tc.room + "&since=" + cursor; fwd != want {
			t.Errorf("%s in %s: X-Forwarded-Uri %q, want %q", tc.user, ch, fwd, want)
		}
	}

	for _, tc := range []struct {
		name, method, room string
		hdr                []string
		status             int
		body               string
	}{
		{"bob in room 1", "GET", "1", []string{"Cookie", "session=bob"}, 403, `{"error":"not your room"}` + "\n"},
		{"no session", "GET", "1", nil, 401, `{"error":"no session"}` + "\n"},
		{"unknown session", "GET", "lobby", []string{"Cookie", "session=eve"}, 401, `{"error":"no session"}` + "\n"},
		{"bob in room 1, HEAD", "HEAD", "1", []string{"Cookie", "session=bob"}, 403, ""},
	} {
		r := s.must(tc.method, s.poll+"/chat/poll?room="+tc.room, "", tc.hdr...)
		polls++
		if r.status != tc.status || r.body != tc.body || r.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %q (%s), want %d %q as the app wrote it", tc.name, r.status, r.body, r.header.Get("Content-Type"), tc.status, tc.body)
		}
		if n := s.info("chat-" + tc.room)["subscribers"]; n != float64(0) {
			t.Errorf("%s: %v polls held on chat-%s", tc.name, n, tc.room)
		}
	}
	// forward_auth asks with GET whatever the poll's method, and says which.
	app.mu.Lock()
	if app.method != "GET" || app.lastAuth.Get("X-Forwarded-Method") != "HEAD" {
		t.Errorf("the auth sub-request of a HEAD poll: %s with X-Forwarded-Method %q", app.method, app.lastAuth.Get("X-Forwarded-Method"))
	}
	app.mu.Unlock()

	if r := s.must("GET", s.poll+"/rooms", ""); r.status != 200 || r.body != "page /rooms" {
		t.Errorf("a page of the app: %d %q", r.status, r.body)
	}
	if n := app.count("/auth/poll"); n != polls {
		t.Errorf("the app answered %d auth sub-requests for %d polls", n, polls)
	}
	if n := app.count("/chat/poll"); n != 0 {
		t.Errorf("the app saw %d polls", n)
	}
}

// The app can name the user: copy_headers puts its X-User on the poll,
// which then polls that user's own channel. An X-User sent by the client is
// dropped, not trusted.
func TestForwardAuthPassesTheUserToTheChannel(t *testing.T) {
	app, s := startWithApp(t, "")
	got := s.pollAsync(context.Background(), s.poll+"/me/poll", "Cookie", "session=ann", "X-User", "bob")
	s.waitHeld("user-ann", 1)
	if n := s.info("user-bob")["subscribers"]; n != float64(0) {
		t.Errorf("%v polls held on user-bob", n)
	}
	s.publish("user-ann", "text/plain", "for ann")
	if r := <-got; r.status != 200 || !strings.Contains(r.body, `"channel":"user-ann"`) || !strings.Contains(r.body, "for ann") {
		t.Errorf("ann's poll: %d %s", r.status, r.body)
	}
	if r := s.must("GET", s.poll+"/me/poll", "", "X-User", "ann"); r.status != 401 || r.body != `{"error":"no session"}`+"\n" {
		t.Errorf("no session, X-User ann: %d %q", r.status, r.body)
	}
	if n := app.count("/auth/me"); n != 2 {
		t.Errorf("the app answered %d auth sub-requests for 2 polls", n)
	}
}

// Caddy counts a poll held behind forward_auth as an active request to the
// app until the poll is answered, in the count every reverse_proxy to the
// same address shares (README: "Upstream counts").
// A parked poll does not: forward_auth's call returns when the poll is
// parked.
func TestForwardAuthHeldPollCountsAsAnAppRequest(t *testing.T) {
	for _, tc := range []struct {
		name, park string
		active     float64
	}{{"held", "", 2}, {"parked", "park", 0}} {
		t.Run(tc.name, func(t *testing.T) { heldPollsAsAppRequests(t, tc.park, tc.active) })
	}
}

func heldPollsAsAppRequests(t *testing.T, park string, want float64) {
	app, s := startWithApp(t, park)
	active := func() float64 {
		var ups []map[string]any
		r := s.must("GET", fmt.Sprintf("http://localhost:%d/reverse_proxy/upstreams", adminPort), "")
		if err := json.Unmarshal([]byte(r.body), &ups); err != nil {
			t.Fatalf("upstreams: %v: %s", err, r.body)
		}
		for _, u := range ups {
			if u["address"] == app.addr {
				return u["num_requests"].(float64)
			}
		}
		t.Fatalf("upstreams lack %s: %s", app.addr, r.body)
		return 0
	}
	var held []<-chan resp
	for range 2 {
		held = append(held, s.pollAsync(context.Background(), s.poll+"/chat/poll?room=lobby", "Cookie", "session=bob"))
	}
	s.waitHeld("chat-lobby", 2)
	if want == 0 {
		// A poll counts as held before it is parked; forward_auth's call
		// returns when parking is done.
		waitFor(t, "no active app request while the polls are parked", func() bool { return active() == 0 })
		s.waitHeld("chat-lobby", 2)
	} else if n := active(); n != want {
		t.Errorf("2 polls held: the app has %v active requests, want %v", n, want)
	}
	s.publish("chat-lobby", "text/plain", "hi")
	for _, got := range held {
		if r := <-got; r.status != 200 {
			t.Errorf("held poll: %d %s", r.status, r.body)
		}
	}
	waitFor(t, "no active request to the app", func() bool { return active() == 0 })
}
