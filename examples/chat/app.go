package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
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

// app is the upstream chat app. It knows one thing about long polling: the
// URL it POSTs new lines to.
type app struct {
	publish string // base URL of Caddy's longpoll_publish site
	http    *http.Client

	mu       sync.Mutex
	rooms    map[string]*room
	requests map[string]int // path → requests received
}

func newApp(publish string) *app {
	return &app{publish: publish, http: &http.Client{Timeout: 10 * time.Second},
		rooms: map[string]*room{}, requests: map[string]int{}}
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

// page renders a room with its lines and the cursor after the last of them,
// read together under the room's lock: the page's first poll then misses
// nothing and repeats nothing.
func (a *app) page(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("room")
	if !roomName.MatchString(name) {
		http.Error(w, "room names are 1 to 32 of a-z, 0-9 and -", http.StatusNotFound)
		return
	}
	rm, ok := a.room(name)
	if !ok {
		http.Error(w, "too many rooms", http.StatusServiceUnavailable)
		return
	}
	rm.mu.Lock()
	cursor, err := a.cursor(r.Context(), name)
	lines := append([]line(nil), rm.lines...)
	rm.mu.Unlock()
	if err != nil {
		http.Error(w, "chat unavailable: "+err.Error(), http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	page.Execute(w, map[string]any{"Room": name, "Lines": lines, "Cursor": cursor})
}

// cursor asks Caddy for the room channel's current cursor.
func (a *app) cursor(ctx context.Context, room string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", a.publish+"/publish/"+url.PathEscape("chat-"+room), nil)
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
// room's channel and keeps it.
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
		req, _ := http.NewRequestWithContext(ctx, "POST", a.publish+"/publish/"+url.PathEscape("chat-"+room), bytes.NewReader(body))
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
