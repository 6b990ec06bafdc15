package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-longpoll/longpoll/grip"
)

const (
	channel  = "feed" // the one GRIP channel the app holds requests on
	maxItems = 1000   // items kept; a client further behind gets those
	maxText  = 1000   // bytes per item
)

type item struct {
	ID   string `json:"id"`
	Text string `json:"text"`
}

// feed is what every answer of GET /api/feed carries, whoever sends it: the
// app at once, Caddy with a published item, or Caddy at a hold's timeout.
type feed struct {
	Items []item `json:"items"`
	Last  string `json:"last"` // the since of the client's next poll
}

// app is an origin written for Pushpin, as GRIP libraries' examples are: it
// speaks GRIP headers and Pushpin's publish format and nothing else of the
// proxy in front of it. Its feed is a list of numbered items:
//
//	GET  /api/feed?since=<id>  the items after id (0, or none: every item
//	                           kept); none yet: a GRIP hold on "feed"
//	POST /api/post             the body is a new item; it is published
//
// Each request must carry a valid Grip-Sig: the app is reached through
// Caddy only.
type app struct {
	publishURL string // Caddy's longpoll_publish root, where Pushpin's would be
	key        []byte // Grip-Sig's key (Pushpin's sig_key)
	timeout    int    // Grip-Timeout, seconds
	http       *http.Client

	// mu is held from a post's publish to its append, and by a poll's
	// read: a poll never sees an item Caddy has not stored, and a poll
	// Caddy sends back (Grip-Last) waits for the item it was sent back for.
	// (Pushpin copes without, checking each item's prev-id against the
	// hold's; longpoll_grip does not yet: see grip_test.go.)
	mu    sync.Mutex
	items []item // the newest maxItems, oldest first
	last  int    // the newest item's id, 0 if none

	retries    atomic.Int64 // polls that came back with Grip-Last
	beforeHold func()       // tests only: the app holds, Caddy does not know yet
}

func newApp(publishURL string, key []byte) *app {
	return &app{publishURL: publishURL, key: key, timeout: 55, http: &http.Client{Timeout: 10 * time.Second}}
}

func (a *app) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/feed", a.feed)
	mux.HandleFunc("POST /api/post", a.post)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Caddy signs every request it passes on with the key both know.
		if err := grip.Verify(r.Header.Get(grip.SigHeader), a.key); err != nil {
			http.Error(w, "this app is reached through its GRIP proxy only", http.StatusForbidden)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// feed answers the items after since, or holds when there are none.
func (a *app) feed(w http.ResponseWriter, r *http.Request) {
	since := 0
	if s := r.URL.Query().Get("since"); s != "" {
		var err error
		if since, err = strconv.Atoi(s); err != nil || since < 0 {
			http.Error(w, "since: an item id", http.StatusBadRequest)
			return
		}
	}
	// Caddy sends a poll back when the channel moved on between our hold
	// answer and Caddy holding it; Grip-Last says where the client was.
	if last, ok := grip.ParseLast(r.Header)[channel]; ok {
		a.retries.Add(1)
		if id, err := strconv.Atoi(last); err == nil {
			since = id
		}
	}
	a.mu.Lock()
	f := a.after(since)
	a.mu.Unlock()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if len(f.Items) == 0 {
		// Nothing new: Caddy holds the request until an item is published
		// on the channel (the client gets that), or for timeout seconds
		// (the client gets this answer). prev-id: our newest item, so
		// Caddy sends the request back if it has a newer one.
		h.Set("Grip-Hold", "response")
		h.Set("Grip-Channel", channel+"; prev-id="+f.Last)
		h.Set("Grip-Timeout", strconv.Itoa(a.timeout))
		if a.beforeHold != nil {
			a.beforeHold()
		}
	}
	json.NewEncoder(w).Encode(f)
}

// after is the feed after since. A since ahead of the feed (the app was
// restarted) gets it all.
func (a *app) after(since int) feed {
	if since > a.last {
		since = 0
	}
	n := min(a.last-since, len(a.items))
	return feed{Items: append([]item{}, a.items[len(a.items)-n:]...), Last: strconv.Itoa(a.last)}
}

// post publishes the body as the next item, then keeps it.
func (a *app) post(w http.ResponseWriter, r *http.Request) {
	text, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxText))
	if err != nil {
		http.Error(w, fmt.Sprintf("an item is at most %d bytes", maxText), http.StatusRequestEntityTooLarge)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	it := item{ID: strconv.Itoa(a.last + 1), Text: string(text)}
	// Not cancelled with the post: a publish half done is worse.
	if err := a.publish(context.WithoutCancel(r.Context()), it, strconv.Itoa(a.last)); err != nil {
		// Kept anyway: held clients get it when they poll again.
		log.Printf("grip: publishing item %s: %v", it.ID, err)
	}
	a.append(it)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]string{"id": it.ID})
}

func (a *app) append(it item) {
	a.items = append(a.items, it)
	if len(a.items) > maxItems {
		a.items = append([]item(nil), a.items[len(a.items)-maxItems:]...)
	}
	a.last, _ = strconv.Atoi(it.ID)
}

// publish sends one item to Caddy in Pushpin's publish format, as a GRIP
// library does: an http-response, the answer a held request gets.
func (a *app) publish(ctx context.Context, it item, prevID string) error {
	body, err := json.Marshal(feed{Items: []item{it}, Last: it.ID})
	if err != nil {
		return err
	}
	pub, err := json.Marshal(map[string]any{"items": []any{map[string]any{
		"channel": channel, "id": it.ID, "prev-id": prevID,
		"formats": map[string]any{"http-response": map[string]any{
			"headers": map[string]string{"Content-Type": "application/json"},
			"body":    string(body) + "\n",
		}},
	}}})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", a.publishURL, bytes.NewReader(pub))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := a.http.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(res.Body, 1000))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", res.Status, bytes.TrimSpace(answer))
	}
	return nil
}
