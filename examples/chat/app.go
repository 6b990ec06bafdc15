package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/caddy-longpoll/longpoll/client"
)

//go:embed page.html
var pageFS embed.FS

var page = template.Must(template.ParseFS(pageFS, "page.html"))

// The app keeps at most this many lines per room and this many rooms.
const (
	maxLines = 100
	maxRooms = 1000
	maxPaths = 1000
)

var roomName = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// line is one thing said in a room. ID is the message's cursor in Caddy.
type line struct {
	ID   string    `json:"id"`
	User string    `json:"user"`
	Text string    `json:"text"`
	Time time.Time `json:"time"`
}

type room struct {
	mu    sync.Mutex // held across publish+append and cursor+snapshot
	lines []line
}

// app is the upstream chat app. It knows two things about long polling: the
// URL it POSTs new lines to, and the key it signs grants with (grants.go).
type app struct {
	publish string // base URL of Caddy's longpoll_publish site
	secret  []byte // HMAC key of the grants; Caddy has it too
	http    *http.Client

	mu       sync.Mutex
	rooms    map[string]*room
	sessions map[string]*session // session cookie → the browser's rooms
	requests map[string]int      // path → requests received
}

func newApp(publish string, secret []byte) *app {
	return &app{publish: publish, secret: secret, http: &http.Client{Timeout: 10 * time.Second},
		rooms: map[string]*room{}, sessions: map[string]*session{}, requests: map[string]int{}}
}

func (a *app) room(name string) (*room, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.rooms[name]
	if !ok {
		if len(a.rooms) >= maxRooms {
			return nil, false
		}
		r = new(room)
		a.rooms[name] = r
	}
	return r, true
}

func (a *app) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/r/lobby", http.StatusFound)
	})
	mux.HandleFunc("GET /r/{room}", a.page)
	mux.HandleFunc("POST /join", a.join)
	mux.HandleFunc("POST /say", a.say)
	mux.HandleFunc("GET /stats", a.stats)
	mux.HandleFunc("GET /client/longpoll.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Write(client.JS)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.count(r.URL.Path)
		mux.ServeHTTP(w, r)
	})
}

// count records a request; /stats shows them, so anyone can check that no
// poll ever reaches the app.
func (a *app) count(path string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.requests[path]; !ok && len(a.requests) >= maxPaths {
		path = "(other)"
	}
	a.requests[path]++
}

func (a *app) stats(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	reqs := make(map[string]int, len(a.requests))
	polls := 0
	for p, n := range a.requests {
		reqs[p] = n
		if strings.HasPrefix(p, "/chat/poll") {
			polls += n
		}
	}
	a.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"requests": reqs, "poll_requests": polls})
}

// page renders a room and sets a fresh grant for the rooms the browser
// joined. A room it joined comes with its lines and the cursor after them;
// one it did not comes empty, and its poll gets 403 from Caddy: the page
// then offers to join.
func (a *app) page(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("room")
	if !roomName.MatchString(name) {
		http.Error(w, "room names are 1 to 32 of a-z, 0-9 and -", http.StatusNotFound)
		return
	}
	v, _ := a.visit(w, r, "")
	var lines []line
	var cursor string
	if v.joined(name) {
		var status int
		var err error
		if lines, cursor, status, err = a.snapshot(r.Context(), name); err != nil {
			http.Error(w, err.Error(), status)
			return
		}
	}
	if err := a.grant(w, r, v); err != nil {
		http.Error(w, "signing the grant: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	page.Execute(w, map[string]any{"Room": name, "Lines": lines, "Cursor": cursor, "Rooms": v.rooms})
}

// join adds {room} (JSON or a form) to the browser's rooms, sets a new
// grant listing it and answers with what a page of the room shows:
// {room, lines, cursor, rooms}. The page then polls the room again, and
// Caddy lets it in.
func (a *app) join(w http.ResponseWriter, r *http.Request) {
	var in struct{ Room string }
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body is not JSON {room}"})
			return
		}
	} else {
		in.Room = r.FormValue("room")
	}
	if !roomName.MatchString(in.Room) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "room: 1 to 32 of a-z, 0-9 and -"})
		return
	}
	v, ok := a.visit(w, r, in.Room)
	if !ok {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": fmt.Sprintf("you have joined %d rooms, the most there may be", maxJoined)})
		return
	}
	lines, cursor, status, err := a.snapshot(r.Context(), in.Room)
	if err != nil {
		writeJSON(w, status, map[string]string{"error": err.Error()})
		return
	}
	if err := a.grant(w, r, v); err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "signing the grant: " + err.Error()})
		return
	}
	if lines == nil {
		lines = []line{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"room": in.Room, "lines": lines, "cursor": cursor, "rooms": v.rooms})
}

// snapshot reads a room's lines and the cursor after the last of them
// together, under the room's lock: a page that shows the lines and polls
// from the cursor misses nothing and repeats nothing. On error, status is
// the HTTP status to answer.
func (a *app) snapshot(ctx context.Context, name string) (lines []line, cursor string, status int, err error) {
	rm, ok := a.room(name)
	if !ok {
		return nil, "", http.StatusServiceUnavailable, errors.New("too many rooms")
	}
	rm.mu.Lock()
	cursor, err = a.cursor(ctx, name)
	lines = append([]line(nil), rm.lines...)
	rm.mu.Unlock()
	if err != nil {
		return nil, "", http.StatusBadGateway, fmt.Errorf("chat unavailable: %v", err)
	}
	return lines, cursor, http.StatusOK, nil
}

// cursor asks Caddy for the room channel's current cursor.
func (a *app) cursor(ctx context.Context, room string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", a.publish+"/publish/"+url.PathEscape(channel(room)), nil)
	res, err := a.http.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	var info struct{ Cursor, Error string }
	if err := json.NewDecoder(res.Body).Decode(&info); err != nil || res.StatusCode != 200 {
		return "", fmt.Errorf("channel info: %d %s", res.StatusCode, info.Error)
	}
	return info.Cursor, nil
}

// say takes {room, user, text} (JSON or a form), publishes the line to the
// room's channel and keeps it. Only a browser that joined the room may.
func (a *app) say(w http.ResponseWriter, r *http.Request) {
	var in struct{ Room, User, Text string }
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body is not JSON {room, user, text}"})
			return
		}
	} else {
		in.Room, in.User, in.Text = r.FormValue("room"), r.FormValue("user"), r.FormValue("text")
	}
	in.User, in.Text = strings.TrimSpace(in.User), strings.TrimSpace(in.Text)
	switch {
	case !roomName.MatchString(in.Room):
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "room: 1 to 32 of a-z, 0-9 and -"})
		return
	case in.User == "" || utf8.RuneCountInString(in.User) > 32:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "user: 1 to 32 characters"})
		return
	case in.Text == "" || utf8.RuneCountInString(in.Text) > 500:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "text: 1 to 500 characters"})
		return
	}
	if v, _ := a.visit(w, r, ""); !v.joined(in.Room) {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "join #" + in.Room + " to say something there"})
		return
	}
	rm, ok := a.room(in.Room)
	if !ok {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "too many rooms"})
		return
	}
	l := line{User: in.User, Text: in.Text, Time: time.Now().UTC()}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	id, err := a.publishLine(r.Context(), in.Room, l)
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": "could not publish: " + err.Error()})
		return
	}
	l.ID = id
	rm.lines = append(rm.lines, l)
	if len(rm.lines) > maxLines {
		rm.lines = rm.lines[len(rm.lines)-maxLines:]
	}
	writeJSON(w, http.StatusOK, l)
}

// publishLine POSTs the line to Caddy, retrying a refused publish with the
// same Idempotency-Key so that it is stored once.
func (a *app) publishLine(ctx context.Context, room string, l line) (string, error) {
	body, _ := json.Marshal(l)
	var k [12]byte
	rand.Read(k[:])
	key := hex.EncodeToString(k[:])
	var last error
	for try := range 3 {
		if try > 0 {
			time.Sleep(time.Duration(try) * 200 * time.Millisecond)
		}
		req, _ := http.NewRequestWithContext(ctx, "POST", a.publish+"/publish/"+url.PathEscape(channel(room)), bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		res, err := a.http.Do(req)
		if err != nil {
			last = err
			continue
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		var out struct{ ID, Error string }
		json.Unmarshal(b, &out)
		if res.StatusCode == 200 {
			return out.ID, nil
		}
		last = fmt.Errorf("%d %s", res.StatusCode, out.Error)
		if res.StatusCode != http.StatusServiceUnavailable {
			break
		}
	}
	return "", last
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
