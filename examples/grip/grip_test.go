package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/caddy-longpoll/longpoll/grip"

	"github.com/caddy-longpoll/longpoll/examples/internal/freeport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Caddy's storage clean-up lock: refreshed every 5 s until it
		// sees the lock is gone. Caddy's, not ours.
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"))
}

// example is the running example: Caddy in front of the app.
type example struct {
	t      *testing.T
	app    *app
	base   string // Caddy, where clients connect
	pub    string // Caddy's publish site
	appURL string // the app, behind Caddy
	client *http.Client
}

// startExample runs the example as `go run ./examples/grip` does, on free
// ports; hold, if set, is the app's beforeHold.
func startExample(t *testing.T, hold func()) *example {
	addrs := freeport.Addrs(t, 3)
	o := options{Addr: addrs[0], App: addrs[1], Publish: addrs[2]}
	a := newApp("http://"+o.Publish+"/publish/", []byte(rand.Text()))
	// The shortest hold Pushpin allows: a hold that should have been
	// answered fails its test at once, not a minute later.
	a.timeout = 5
	a.beforeHold = hold
	e := &example{t: t, app: a, base: "http://" + o.Addr, pub: "http://" + o.Publish, appURL: "http://" + o.App,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- run(ctx, o, a, func(string) { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("the example did not start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the example stopped with %v", err)
		}
		e.client.CloseIdleConnections()
		a.http.CloseIdleConnections()
	})
	return e
}

// poll is one GET /api/feed?since=since through Caddy, checked to be a feed
// whose items follow since one by one and end at its last.
func (e *example) poll(ctx context.Context, since int) (feed, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/api/feed?since=%d", e.base, since), nil)
	if err != nil {
		return feed{}, err
	}
	res, err := e.client.Do(req)
	if err != nil {
		return feed{}, err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var f feed
	if res.StatusCode != http.StatusOK || json.Unmarshal(body, &f) != nil {
		return feed{}, fmt.Errorf("poll since %d: %d %s", since, res.StatusCode, body)
	}
	for k, h := range res.Header {
		if strings.HasPrefix(k, "Grip-") {
			return feed{}, fmt.Errorf("poll since %d: the answer carries %s: %s", since, k, h)
		}
	}
	want := since
	for _, it := range f.Items {
		if want++; it.ID != strconv.Itoa(want) {
			return f, fmt.Errorf("poll since %d: items %v: want id %d next (a gap or a duplicate)", since, ids(f.Items), want)
		}
	}
	if f.Last != strconv.Itoa(want) {
		return f, fmt.Errorf("poll since %d: items %v, last %q: want last %d", since, ids(f.Items), f.Last, want)
	}
	return f, nil
}

func ids(items []item) []string {
	var out []string
	for _, it := range items {
		out = append(out, it.ID)
	}
	return out
}

// post posts an item through Caddy; the app has published it when it
// answers.
func (e *example) post(text string) {
	e.t.Helper()
	res, err := e.client.Post(e.base+"/api/post", "text/plain", strings.NewReader(text))
	if err != nil {
		e.t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		e.t.Fatalf("post %q: %d %s", text, res.StatusCode, body)
	}
}

// waitHeld waits until Caddy holds n requests on the channel.
func (e *example) waitHeld(n int) {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute) // guards against a hang only
	for {
		res, err := e.client.Get(e.pub + "/publish/" + channel)
		if err != nil {
			e.t.Fatal(err)
		}
		var info struct{ Subscribers int }
		json.NewDecoder(res.Body).Decode(&info)
		res.Body.Close()
		if info.Subscribers == n {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("gave up waiting for %d held requests (%d)", n, info.Subscribers)
		}
		time.Sleep(time.Millisecond)
	}
}

// gate stops the app's hold answers on their way to Caddy: between arm and
// release, every poll the app answers with a hold waits, the app's lock not
// held, so that items can be posted before Caddy holds it — what prev-id
// and Grip-Last are for.
type gate struct {
	mu      sync.Mutex
	open    chan struct{} // nil: not armed
	arrived chan struct{} // a hold answer is waiting (this arming's)
}

// arm makes hold answers wait; the channel it returns gets a value once one
// does.
func (g *gate) arm() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open, g.arrived = make(chan struct{}), make(chan struct{}, 1)
	return g.arrived
}

// wait is the app's beforeHold.
func (g *gate) wait() {
	g.mu.Lock()
	open, arrived := g.open, g.arrived
	g.mu.Unlock()
	if open == nil {
		return
	}
	select {
	case arrived <- struct{}{}:
	default:
	}
	<-open
}

// release lets the waiting hold answers go on to Caddy.
func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.open)
	g.open = nil
}

// Several clients poll the feed, each with the last id of its previous
// answer, while items are posted through the app, one after another: when
// the clients are held in Caddy; while one is between polls; and while
// the app's hold answers are on their way to Caddy (Caddy then sends them
// back with Grip-Last). Every client gets every item once, in order.
func TestEveryClientGetsEveryItemOnceInOrder(t *testing.T) {
	const clients, items = 5, 200
	var g gate
	e := startExample(t, g.wait)

	// A client that fails stops the others and the publisher.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	until := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		case <-ctx.Done():
			return false
		}
	}
	type client struct {
		pause  chan chan struct{} // stop after the next answer, until closed
		paused chan struct{}
	}
	cs := make([]client, clients)
	errs := make(chan error, clients)
	for c := range cs {
		cs[c] = client{pause: make(chan chan struct{}, 1), paused: make(chan struct{}, 1)}
		go func() {
			since := 0
			for since < items {
				f, err := e.poll(ctx, since)
				if err != nil {
					if ctx.Err() != nil {
						break // another one failed
					}
					stop()
					errs <- fmt.Errorf("client %d: %v", c, err)
					return
				}
				since += len(f.Items)
				select {
				case resume := <-cs[c].pause:
					cs[c].paused <- struct{}{}
					until(resume)
				default:
				}
			}
			errs <- nil
		}()
	}

	gated, paused := 0, 0
	for round, i := 0, 1; i <= items && ctx.Err() == nil; round, i = round+1, i+1 {
		switch {
		case round%3 == 1 && i+2 <= items:
			// Posted while a client is between polls: it gets them on
			// its next poll, from the app.
			c := cs[paused%clients]
			paused++
			resume := make(chan struct{})
			c.pause <- resume
			e.post(strconv.Itoa(i)) // the client gets an answer...
			if until(c.paused) {    // ...and stops
				e.post(strconv.Itoa(i + 1))
				e.post(strconv.Itoa(i + 2))
			}
			close(resume)
			i += 2
		case round%3 == 2 && i+1 <= items:
			// Posted while a hold answer is on its way to Caddy: the
			// hold's prev-id is behind when Caddy gets it.
			gated++
			arrived := g.arm()
			e.post(strconv.Itoa(i)) // every client comes back for more...
			if until(arrived) {     // ...and one at least is answered with a hold
				e.post(strconv.Itoa(i + 1))
			}
			g.release()
			i++
		default:
			e.post(strconv.Itoa(i))
		}
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		return
	}
	// Each gated round sends one hold back at least.
	if n := e.app.retries.Load(); n < int64(gated) {
		t.Errorf("%d polls came back with Grip-Last, want at least %d (one per gated round)", n, gated)
	}
	t.Logf("%d clients got %d items; %d rounds with a client between polls, %d with holds behind; %d polls came back with Grip-Last",
		clients, items, paused, gated, e.app.retries.Load())
}

// A hold the app answers with a prev-id that is behind by the time Caddy
// gets it is sent back to the app with Grip-Last, and the client gets what
// it missed at once.
func TestHoldBehindGetsWhatItMissed(t *testing.T) {
	var g gate
	e := startExample(t, g.wait)
	for i := 1; i <= 3; i++ {
		e.post(fmt.Sprint("item ", i))
	}
	arrived := g.arm()
	answer := make(chan feed, 1)
	go func() {
		f, err := e.poll(context.Background(), 3)
		if err != nil {
			t.Error(err)
		}
		answer <- f
	}()
	<-arrived // the app answered: hold, prev-id=3
	e.post("item 4")
	e.post("item 5")
	g.release()
	f := <-answer
	if got := fmt.Sprint(ids(f.Items)); got != "[4 5]" || f.Items[1].Text != "item 5" {
		t.Errorf("the client behind got %s (%+v), want [4 5]", got, f.Items)
	}
	if n := e.app.retries.Load(); n != 1 {
		t.Errorf("%d polls came back with Grip-Last, want 1", n)
	}
	// A client behind before it polls gets it from the app, no hold.
	if f, err := e.poll(context.Background(), 1); err != nil || fmt.Sprint(ids(f.Items)) != "[2 3 4 5]" {
		t.Errorf("since 1: %v %v", ids(f.Items), err)
	}
}

// A held client gets the next item from Caddy. The app answers only
// requests with Caddy's Grip-Sig: asked directly, with a Grip-Sig of its
// key, it answers the hold instructions Caddy acts on.
func TestHeldClientGetsThePublishedItem(t *testing.T) {
	e := startExample(t, nil)
	answer := make(chan feed, 1)
	go func() {
		f, err := e.poll(context.Background(), 0)
		if err != nil {
			t.Error(err)
		}
		answer <- f
	}()
	e.waitHeld(1)
	e.post("hello")
	if f := <-answer; len(f.Items) != 1 || f.Items[0].Text != "hello" {
		t.Errorf("the held client got %+v", f)
	}

	sign := func(key []byte) string {
		sig, err := grip.Sign(key, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	for _, c := range []struct {
		sig    string
		status int
		hold   string
	}{
		{"", http.StatusForbidden, ""},
		{sign([]byte("not the app's key")), http.StatusForbidden, ""},
		{sign(e.app.key), http.StatusOK, "feed; prev-id=1"},
	} {
		req, _ := http.NewRequest("GET", e.appURL+"/api/feed?since=1", nil)
		req.Header.Set(grip.SigHeader, c.sig)
		res, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != c.status || res.Header.Get("Grip-Channel") != c.hold {
			t.Errorf("the app, asked directly with Grip-Sig %.20q: %d, Grip-Channel %q; want %d, %q",
				c.sig, res.StatusCode, res.Header.Get("Grip-Channel"), c.status, c.hold)
		}
	}
}

// An app that saves an item and then publishes it (the usual order), with
// a client polling in between: the client gets the item from the app, and
// holds with prev-id = that item, which Caddy has not seen yet. When the
// item's publish arrives (prev-id = the one before), Pushpin does not
// deliver it to that hold: the item's prev-id is not the hold's. The client
// must not get it twice.
func TestItemSavedBeforeItsPublishIsNotDeliveredTwice(t *testing.T) {
	e := startExample(t, nil)
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		e.post(fmt.Sprint("item ", i))
	}
	it := item{ID: "4", Text: "item 4"}
	e.app.mu.Lock()
	e.app.append(it) // saved; its publish is on its way
	e.app.mu.Unlock()
	if f, err := e.poll(ctx, 3); err != nil || len(f.Items) != 1 {
		t.Fatalf("since 3: %v %v", ids(f.Items), err)
	}
	answer := make(chan error, 1)
	go func() {
		_, err := e.poll(ctx, 4) // held with prev-id=4, ahead of Caddy's 3
		answer <- err
	}()
	e.waitHeld(1)
	if err := e.app.publish(ctx, it, "3"); err != nil {
		t.Fatal(err)
	}
	e.post("item 5")
	if err := <-answer; err != nil {
		t.Errorf("the client that had item 4: %v (%d polls came back with Grip-Last)", err, e.app.retries.Load())
	}
}

// An app that publishes an item and then saves it, with a client polling
// in between: the app holds with prev-id = the item before, Caddy sends the
// request back (Grip-Last) until it gives up and holds it after the item.
// The next item's publish (prev-id = the item) is not the hold's prev-id:
// Pushpin sends the request back to the app, which answers both. The
// client must not miss the first.
func TestItemPublishedBeforeItIsSavedIsNotMissed(t *testing.T) {
	e := startExample(t, nil)
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		e.post(fmt.Sprint("item ", i))
	}
	it := item{ID: "4", Text: "item 4"}
	if err := e.app.publish(ctx, it, "3"); err != nil { // published; not saved yet
		t.Fatal(err)
	}
	answer := make(chan error, 1)
	go func() {
		_, err := e.poll(ctx, 3) // held with prev-id=3, behind Caddy's 4
		answer <- err
	}()
	e.waitHeld(1)
	e.app.mu.Lock()
	e.app.append(it)
	e.app.mu.Unlock()
	e.post("item 5")
	if err := <-answer; err != nil {
		t.Errorf("the client at item 3: %v (%d polls came back with Grip-Last)", err, e.app.retries.Load())
	}
}
