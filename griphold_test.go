package longpoll_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/caddy-longpoll/longpoll/grip"
)

const gripKey = "grip-test-key-0123456789"

// gripApp is an app written for Pushpin: it answers polls of
// /api/hold?ch=<channel>[&prev=<prev-id>][&timeout=<seconds, default 5>]
// with GRIP hold instructions, unless Grip-Last says the client is behind.
type gripApp struct {
	srv *httptest.Server

	mu      sync.Mutex
	sigs    []string // the Grip-Sig of each request, "" if none
	sigErrs []error
	lasts   []string // the Grip-Last of each request to /api/hold
}

func startGripApp(t *testing.T, park ...string) (*gripApp, *server) {
	t.Setenv("LP_TEST_GRIP_KEY", gripKey)
	a := &gripApp{}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	s := start(t, "", fmt.Sprintf(`longpoll_grip /api/* {
		sig_key {env.LP_TEST_GRIP_KEY}
		%s
	}
	longpoll /poll/*
	reverse_proxy %s`, strings.Join(park, ""), a.srv.Listener.Addr()), "longpoll_publish /publish/*")
	checkLeaks(t, s)
	// Before checkLeaks' check: reverse_proxy's idle connections to the
	// app outlive the config (see forwardauth_test.go).
	t.Cleanup(a.srv.CloseClientConnections)
	return a, s
}

func (a *gripApp) serve(w http.ResponseWriter, r *http.Request) {
	sig := r.Header.Get("Grip-Sig")
	a.mu.Lock()
	a.sigs = append(a.sigs, sig)
	a.sigErrs = append(a.sigErrs, grip.Verify(sig, []byte(gripKey)))
	a.mu.Unlock()
	q := r.URL.Query()
	h := w.Header()
	switch r.URL.Path {
	case "/api/hold":
		last := r.Header.Get("Grip-Last")
		a.mu.Lock()
		a.lasts = append(a.lasts, last)
		a.mu.Unlock()
		if last != "" {
			fmt.Fprintf(w, "caught up from %s", grip.ParseLast(r.Header)[q.Get("ch")])
			return
		}
		h.Set("Grip-Hold", "response")
		ch := q.Get("ch")
		if p := q.Get("prev"); p != "" {
			ch += "; prev-id=" + p
		}
		h.Set("Grip-Channel", ch)
		timeout := q.Get("timeout")
		if timeout == "" {
			timeout = "5"
		}
		h.Set("Grip-Timeout", timeout)
		h.Set("X-App", "held")
		h.Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"messages":[]}`)
	case "/api/instruct":
		h.Set("Content-Type", "application/grip-instruct")
		fmt.Fprintf(w, `{"hold":{"mode":"response","timeout":5,"channels":[{"name":%q}]},"response":{"code":200,"headers":{"X-App":"instructed"},"body":"timeout body"}}`, q.Get("ch"))
	case "/api/multi": // chs=m1:1,m2:2: Grip-Channel: m1; prev-id=1, m2; prev-id=2
		last := r.Header.Values("Grip-Last")
		a.mu.Lock()
		a.lasts = append(a.lasts, strings.Join(last, " | "))
		a.mu.Unlock()
		if len(last) > 0 {
			fmt.Fprintf(w, "caught up from %s", strings.Join(last, " | "))
			return
		}
		var chs []string
		for c := range strings.SplitSeq(q.Get("chs"), ",") {
			name, prev, _ := strings.Cut(c, ":")
			if prev != "" {
				name += "; prev-id=" + prev
			}
			chs = append(chs, name)
		}
		h.Set("Grip-Hold", "response")
		h.Set("Grip-Channel", strings.Join(chs, ", "))
		h.Set("Grip-Timeout", "60")
		fmt.Fprint(w, "held")
	case "/api/many": // one channel more than Pushpin subscribes
		h.Set("Grip-Hold", "response")
		for i := range grip.MaxChannelsPerHold + 1 {
			h.Add("Grip-Channel", fmt.Sprintf("c%d", i))
		}
	case "/api/bad":
		h.Set("Grip-Hold", "response")
		h.Set("Grip-Channel", "a")
		h.Set("Grip-Timeout", "soon")
	case "/api/big":
		h.Set("Grip-Hold", "response")
		h.Set("Grip-Channel", "a")
		w.Write(make([]byte, grip.MaxInstructBody+1))
	default:
		h.Set("X-App", "plain")
		fmt.Fprintf(w, "page %s", r.URL.Path)
	}
}

// publishItem publishes one item in Pushpin's format: its id and prev-id
// (each left out when ""), and its http-response format, a JSON object.
func (s *server) publishItem(channel, id, prev, format string) {
	s.t.Helper()
	item := map[string]any{"channel": channel, "formats": map[string]json.RawMessage{"http-response": json.RawMessage(format)}}
	if id != "" {
		item["id"] = id
	}
	if prev != "" {
		item["prev-id"] = prev
	}
	body, err := json.Marshal(map[string]any{"items": []any{item}})
	if err != nil {
		s.t.Fatal(err)
	}
	if r := s.must("POST", s.pub+"/publish/", string(body), "Content-Type", "application/json"); r.status != 200 || r.body != "Published\n" {
		s.t.Fatalf("publish of %q to %s: %d %s", id, channel, r.status, r.body)
	}
}

// A hold the app asks for is answered by a publish on its channel: the
// published status, headers and body over the app's headers, no Grip-*
// header. A native poll on the same channel gets the same message. The app
// sees Caddy's Grip-Sig, never the client's. Held or parked.
func TestGripHoldAnsweredByPublish(t *testing.T) {
	for name, park := range map[string]string{"held": "", "parked": "park"} {
		t.Run(name, func(t *testing.T) { gripHoldAnsweredByPublish(t, park) })
	}
}

func gripHoldAnsweredByPublish(t *testing.T, park string) {
	app, s := startGripApp(t, park)
	held := s.pollAsync(context.Background(), s.poll+"/api/hold?ch=g1", "Grip-Sig", "forged-by-the-client")
	native := s.pollAsync(context.Background(), s.poll+"/poll/g1")
	s.waitHeld("g1", 2)
	s.publishItem("g1", "1", "", `{"code":201,"headers":{"X-Pub":"1"},"body":"hello"}`)
	r := <-held
	if r.status != 201 || r.body != "hello" || r.header.Get("X-Pub") != "1" || r.header.Get("X-App") != "held" ||
		r.header.Get("Content-Type") != "application/json" {
		t.Errorf("held GRIP request: %d %q %v", r.status, r.body, r.header)
	}
	for k := range r.header {
		if strings.HasPrefix(k, "Grip-") {
			t.Errorf("the answer carries %s", k)
		}
	}
	if park != "" {
		// Parked, it was: asked to, its answer closes the connection.
		conn := s.dial()
		defer conn.Close()
		fmt.Fprintf(conn, "GET /api/hold?ch=g1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
		s.waitHeld("g1", 1)
		s.publishItem("g1", "2", "", `{"body":"raw"}`)
		all, err := io.ReadAll(conn) // to EOF: the connection closes
		if err != nil || !strings.Contains(string(all), "\r\nConnection: close\r\n") || !strings.HasSuffix(string(all), "\r\n\r\nraw") {
			t.Errorf("a parked GRIP hold's answer: %v\n%s", err, all)
		}
	}
	if r := <-native; r.status != 200 || !strings.Contains(r.body, `"data":"hello"`) {
		t.Errorf("native poll on the same channel: %d %s", r.status, r.body)
	}
	app.mu.Lock()
	want := 1 + len(park)/len("park") // parked: the raw request too
	if len(app.sigs) != want || app.sigErrs[0] != nil || app.sigs[0] == "forged-by-the-client" {
		t.Errorf("the app saw Grip-Sig %q (%v), want %d signed with the key", app.sigs, app.sigErrs, want)
	}
	app.mu.Unlock()
}

// At its timeout a hold is answered with the app's own response, Grip-*
// headers removed; instructions in a grip-instruct body work the same.
// Held or parked.
func TestGripHoldTimesOutWithTheAppsResponse(t *testing.T) {
	for name, park := range map[string]string{"held": "", "parked": "park"} {
		t.Run(name, func(t *testing.T) { gripHoldTimesOut(t, park) })
	}
}

func gripHoldTimesOut(t *testing.T, park string) {
	_, s := startGripApp(t, park)
	held := s.pollAsync(context.Background(), s.poll+"/api/hold?ch=t1")
	instructed := s.pollAsync(context.Background(), s.poll+"/api/instruct?ch=t1")
	s.waitHeld("t1", 2)
	if r := <-held; r.status != 200 || r.body != `{"messages":[]}` || r.header.Get("X-App") != "held" || r.header.Get("Grip-Hold") != "" || r.header.Get("Grip-Channel") != "" {
		t.Errorf("at the timeout: %d %q %v", r.status, r.body, r.header)
	}
	if r := <-instructed; r.status != 200 || r.body != "timeout body" || r.header.Get("X-App") != "instructed" {
		t.Errorf("grip-instruct at the timeout: %d %q %v", r.status, r.body, r.header)
	}
}

// A hold whose prev-id is behind the channel's last published id goes back
// to the app at once, with Grip-Last, so nothing published between the
// app's answer and the hold is missed.
func TestGripPrevIDBehindGoesBackToTheApp(t *testing.T) {
	app, s := startGripApp(t)
	s.publishItem("g2", "1042", "", `{"body":"the one the app had not seen"}`)
	if r := s.must("GET", s.poll+"/api/hold?ch=g2&prev=1041", ""); r.status != 200 || r.body != "caught up from 1041" {
		t.Errorf("behind: %d %q", r.status, r.body)
	}
	app.mu.Lock()
	lasts := fmt.Sprint(app.lasts)
	app.mu.Unlock()
	if lasts != "[ g2; last-id=1041]" {
		t.Errorf("the app saw Grip-Last %s", lasts)
	}
	held := s.pollAsync(context.Background(), s.poll+"/api/hold?ch=g2&prev=1042")
	s.waitHeld("g2", 1)
	s.publishItem("g2", "1043", "1042", `{"body":"next"}`)
	if r := <-held; r.status != 200 || r.body != "next" {
		t.Errorf("up to date, then published to: %d %q", r.status, r.body)
	}
	// A message that does not follow the hold's prev-id (its own prev-id
	// is another) is not delivered: the app is asked again.
	held = s.pollAsync(context.Background(), s.poll+"/api/hold?ch=g2&prev=1043")
	s.waitHeld("g2", 1)
	s.publishItem("g2", "1045", "1044", `{"body":"skips 1044"}`)
	if r := <-held; r.status != 200 || r.body != "caught up from 1043" {
		t.Errorf("a message whose prev-id is not the hold's: %d %q, want the app asked again", r.status, r.body)
	}
	// Nor is one without a prev-id (as Pushpin: it differs), such as a
	// native publish; a hold without prev-id takes it.
	held = s.pollAsync(context.Background(), s.poll+"/api/hold?ch=g2&prev=1045")
	anyHold := s.pollAsync(context.Background(), s.poll+"/api/hold?ch=g2")
	s.waitHeld("g2", 2)
	s.publish("g2", "text/plain", "native")
	if r := <-held; r.status != 200 || r.body != "caught up from 1045" {
		t.Errorf("a message without prev-id, to a hold with one: %d %q, want the app asked again", r.status, r.body)
	}
	if r := <-anyHold; r.status != 200 || r.body != "native" {
		t.Errorf("a message without prev-id, to a hold without one: %d %q", r.status, r.body)
	}
}

// Answers without instructions pass through as the app wrote them; bad
// instructions are a 502, and nothing is held.
func TestGripPassThroughAndBadInstructions(t *testing.T) {
	_, s := startGripApp(t)
	if r := s.must("GET", s.poll+"/api/plain", ""); r.status != 200 || r.body != "page /api/plain" || r.header.Get("X-App") != "plain" {
		t.Errorf("a plain answer: %d %q %v", r.status, r.body, r.header)
	}
	for _, path := range []string{"/api/bad", "/api/big", "/api/many"} {
		if r := s.must("GET", s.poll+path, ""); r.status != 502 {
			t.Errorf("%s: %d %q", path, r.status, r.body)
		}
	}
	if n := s.info("a")["subscribers"]; n != float64(0) {
		t.Errorf("%v requests held on a", n)
	}
}

// A hold on several channels is answered by the first publish on any of
// them, and leaves none of them held; an item whose prev-id is not its
// channel's in the hold sends the request back with the Grip-Last of every
// channel. Held or parked.
func TestGripHoldOnSeveralChannels(t *testing.T) {
	for name, park := range map[string]string{"held": "", "parked": "park"} {
		t.Run(name, func(t *testing.T) {
			app, s := startGripApp(t, park)
			held := s.pollAsync(context.Background(), s.poll+"/api/multi?chs=m1,m2,m3")
			for _, ch := range []string{"m1", "m2", "m3"} {
				s.waitHeld(ch, 1)
			}
			s.assertMetrics("caddy_longpoll_held_polls 1") // one poll, on 3 channels
			s.publishItem("m2", "1", "", `{"body":"on m2"}`)
			if r := <-held; r.status != 200 || r.body != "on m2" {
				t.Errorf("hold on m1, m2, m3 after a publish on m2: %d %q", r.status, r.body)
			}
			for _, ch := range []string{"m1", "m2", "m3"} {
				s.waitHeld(ch, 0)
			}

			// m1's last id is now 7, m2's 1: the hold says so (not
			// behind), then m1 gets an item that does not follow 7.
			s.publishItem("m1", "7", "", `{"body":"seven"}`)
			held = s.pollAsync(context.Background(), s.poll+"/api/multi?chs=m1:7,m2:1")
			s.waitHeld("m1", 1)
			s.publishItem("m1", "9", "8", `{"body":"nine"}`)
			r := <-held
			want := "caught up from m1; last-id=7 | m2; last-id=1"
			if park != "" {
				want = "held" // a parked hold is not sent back: the app's own answer
			}
			if r.status != 200 || r.body != want {
				t.Errorf("hold on m1:7, m2:1 after m1 got 9 (prev 8): %d %q, want %q", r.status, r.body, want)
			}
			app.mu.Lock()
			defer app.mu.Unlock()
			if park == "" && app.lasts[len(app.lasts)-1] != "m1; last-id=7 | m2; last-id=1" {
				t.Errorf("the app saw Grip-Last %q", app.lasts)
			}
		})
	}
}

// A held GRIP request survives a reload that keeps the store, and counts
// in max_held like a native poll: past it, 503.
func TestGripHoldSurvivesReloadAndCountsInMaxHeld(t *testing.T) {
	app, s := startGripApp(t)
	held := s.pollAsync(context.Background(), s.poll+"/api/hold?ch=r1")
	s.waitHeld("r1", 1)
	site := fmt.Sprintf(`longpoll_grip /api/* {
		sig_key {env.LP_TEST_GRIP_KEY}
	}
	longpoll /poll/*
	reverse_proxy %s`, app.srv.Listener.Addr())
	s.reload("", site, "longpoll_publish /publish/*")
	s.publishItem("r1", "", "", `{"body":"after the reload"}`)
	if r := <-held; r.status != 200 || r.body != "after the reload" {
		t.Errorf("held across a reload: %d %q", r.status, r.body)
	}

	s.reload("longpoll {\n\t\tmax_held 1\n\t}", site, "longpoll_publish /publish/*")
	first := s.pollAsync(context.Background(), s.poll+"/api/hold?ch=r2")
	s.waitHeld("r2", 1)
	if r := s.must("GET", s.poll+"/api/hold?ch=r2", ""); r.status != 503 || r.header.Get("Retry-After") == "" {
		t.Errorf("past max_held: %d %q", r.status, r.body)
	}
	s.publishItem("r2", "", "", `{"body":"to the first"}`)
	if r := <-first; r.status != 200 || r.body != "to the first" {
		t.Errorf("the held one: %d %q", r.status, r.body)
	}
}

// A sig_key written base64:… signs with the decoded bytes, as Pushpin's
// (one that is not base64 is refused at load: caddyfile_test.go).
func TestGripSigKeyBase64(t *testing.T) {
	app, s := startGripApp(t)
	t.Setenv("LP_TEST_GRIP_KEY", "base64:"+base64.StdEncoding.EncodeToString([]byte(gripKey)))
	site := fmt.Sprintf(`longpoll_grip /api/* {
		sig_key {env.LP_TEST_GRIP_KEY}
	}
	reverse_proxy %s`, app.srv.Listener.Addr())
	s.reload("", site, "longpoll_publish /publish/*")
	if r := s.must("GET", s.poll+"/api/plain", ""); r.status != 200 {
		t.Fatalf("through the app: %d %q", r.status, r.body)
	}
	app.mu.Lock()
	if err := app.sigErrs[len(app.sigErrs)-1]; err != nil {
		t.Errorf("Grip-Sig signed with the base64 key does not verify with its bytes: %v", err)
	}
	app.mu.Unlock()

}
