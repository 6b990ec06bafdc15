package longpoll_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/caddy-longpoll/longpoll/grip"
	"github.com/caddy-longpoll/longpoll/internal/redistest"
)

// gripProc is the config of a Caddy process with a longpoll_grip route in
// front of the app at appAddr, its store keeping buffer messages a channel.
func gripProc(appAddr string, buffer int) procConfig {
	return procConfig{buffer: buffer, pollSite: fmt.Sprintf(`longpoll_grip /api/* {
		sig_key %s
	}
	reverse_proxy %s`, gripKey, appAddr)}
}

// startGripProcs starts a Redis and two Caddy processes sharing it, each
// with gripProc's sites in front of app.
func startGripProcs(t *testing.T, app *httptest.Server, buffer int) (a, b *caddyProc) {
	srv := redistest.Start(t)
	bin := buildCaddy(t)
	ports := freePorts(t, 4)
	cfg := gripProc(app.Listener.Addr().String(), buffer)
	return startCaddyProcWith(t, bin, srv.Addr(), cfg, ports[0], ports[1]), startCaddyProcWith(t, bin, srv.Addr(), cfg, ports[2], ports[3])
}

// checkTestLeaks checks, once everything the test started is stopped (its
// clean-ups registered after this one have run), that no goroutine of the
// test process is left: the Caddys are processes, the app and the clients
// are here.
func checkTestLeaks(t *testing.T) {
	opts := leakOptions()
	t.Cleanup(func() {
		if !t.Failed() {
			goleak.VerifyNone(t, opts...)
		}
	})
}

// newGripApp starts gripApp on its own, for Caddy processes to proxy to.
func newGripApp(t *testing.T) *gripApp {
	a := &gripApp{}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	return a
}

// guard bounds a request the test waits for; it only guards against a hang.
func guard(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Two Caddy processes share one Redis, each with longpoll_grip in front of
// one app: a hold on one is answered by a Pushpin-format publish through
// the other, with the published code, headers and body over the app's
// response, and no Grip-* header.
func TestGripRedisHoldAnsweredAcrossInstances(t *testing.T) {
	checkTestLeaks(t)
	app := newGripApp(t)
	a, b := startGripProcs(t, app.srv, 1000)
	for _, tc := range []struct {
		name, ch string
		hold, by *caddyProc
	}{{"held on A, published through B", "ab", a, b}, {"held on B, published through A", "ba", b, a}} {
		// Grip-Timeout 1h: an answer is the publish's, never the timeout's.
		held := tc.hold.pollAsync(guard(t), tc.hold.poll+"/api/hold?ch="+tc.ch+"&prev=7&timeout=3600", "Grip-Sig", "forged-by-the-client")
		tc.hold.waitHeld(tc.ch, 1)
		tc.by.publishItem(tc.ch, "8", "7", `{"code":201,"headers":{"X-Pub":"8"},"body":"item 8"}`)
		r := <-held
		if r.status != 201 || r.body != "item 8" || r.header.Get("X-Pub") != "8" || r.header.Get("X-App") != "held" ||
			r.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %q %v", tc.name, r.status, r.body, r.header)
		}
		for k := range r.header {
			if strings.HasPrefix(k, "Grip-") {
				t.Errorf("%s: the answer carries %s", tc.name, k)
			}
		}
	}
	app.mu.Lock()
	defer app.mu.Unlock()
	if len(app.sigs) != 2 || app.sigErrs[0] != nil || app.sigErrs[1] != nil || fmt.Sprint(app.lasts) != "[ ]" {
		t.Errorf("the app saw Grip-Sig %q (%v) and Grip-Last %q, want 2 requests signed with the key and no Grip-Last", app.sigs, app.sigErrs, app.lasts)
	}
}

// feedItem is an item of feedApp's feeds.
type feedItem struct {
	ID   string `json:"id"`
	Text string `json:"text"`
}

// feedAnswer is what every answer of feedApp's GET /api/feed carries,
// whoever sends it: the app, Caddy with a published item, or Caddy with the
// app's held response.
type feedAnswer struct {
	Items []feedItem `json:"items"`
	Last  string     `json:"last"` // the since of the client's next poll
}

// feedApp is an app written for Pushpin with a numbered feed per channel,
// as GRIP apps are written: GET /api/feed?ch=<channel>&since=<id> answers
// the items after since, or holds on the channel with prev-id its newest
// item's id when there are none; Grip-Last replaces since. post saves an
// item, then publishes it, chained to the one before by prev-id.
type feedApp struct {
	srv     *httptest.Server
	retries atomic.Int64 // requests sent back with Grip-Last

	mu    sync.Mutex
	feeds map[string][]feedItem
}

func newFeedApp(t *testing.T) *feedApp {
	a := &feedApp{feeds: map[string][]feedItem{}}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *feedApp) serve(w http.ResponseWriter, r *http.Request) {
	if err := grip.Verify(r.Header.Get(grip.SigHeader), []byte(gripKey)); err != nil || r.URL.Path != "/api/feed" {
		http.Error(w, fmt.Sprintf("%s: %v", r.URL.Path, err), http.StatusForbidden)
		return
	}
	ch := r.URL.Query().Get("ch")
	since, _ := strconv.Atoi(r.URL.Query().Get("since"))
	if last, ok := grip.ParseLast(r.Header)[ch]; ok {
		a.retries.Add(1)
		since, _ = strconv.Atoi(last)
	}
	a.mu.Lock()
	feed := a.feeds[ch]
	a.mu.Unlock()
	ans := feedAnswer{Items: []feedItem{}, Last: strconv.Itoa(len(feed))}
	if since < len(feed) {
		ans.Items = feed[since:]
	}
	w.Header().Set("Content-Type", "application/json")
	if len(ans.Items) == 0 {
		w.Header().Set("Grip-Hold", "response")
		w.Header().Set("Grip-Channel", ch+"; prev-id="+ans.Last)
		w.Header().Set("Grip-Timeout", "55")
	}
	json.NewEncoder(w).Encode(ans)
}

// post saves the next item of ch's feed, then publishes it through s.
func (a *feedApp) post(s *server, ch, text string) error {
	a.mu.Lock()
	prev := len(a.feeds[ch])
	it := feedItem{ID: strconv.Itoa(prev + 1), Text: text}
	a.feeds[ch] = append(a.feeds[ch], it)
	a.mu.Unlock()
	body, _ := json.Marshal(feedAnswer{Items: []feedItem{it}, Last: it.ID})
	pub, _ := json.Marshal(map[string]any{"items": []any{map[string]any{
		"channel": ch, "id": it.ID, "prev-id": strconv.Itoa(prev),
		"formats": map[string]any{"http-response": map[string]any{
			"headers": map[string]string{"Content-Type": "application/json"},
			"body":    string(body),
		}},
	}}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // guards against a hang
	defer cancel()
	r, err := s.do(ctx, "POST", s.pub+"/publish/", string(pub), "Content-Type", "application/json")
	if err == nil && r.status != 200 {
		err = fmt.Errorf("%d %s", r.status, r.body)
	}
	if err != nil {
		return fmt.Errorf("publishing %s/%s: %v", ch, it.ID, err)
	}
	return nil
}

// Several clients on both instances get a feed's items exactly once and in
// order, while the app publishes them through both instances, chained by
// prev-id, saving each before publishing it (so a client may get an item
// from the app before its publish reaches Caddy: that hold goes back to
// the app with Grip-Last).
func TestGripRedisStreamAcrossInstances(t *testing.T) {
	checkTestLeaks(t)
	app := newFeedApp(t)
	a, b := startGripProcs(t, app.srv, 1000)
	procs := []*caddyProc{a, b}
	const channels, clients, items = 2, 4, 100
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // guards against a hang
	defer cancel()

	var wg sync.WaitGroup
	errs := make(chan error, channels*(clients+1))
	for c := range channels {
		ch := fmt.Sprintf("feed%d", c)
		for n := range clients {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(c), uint64(n)))
				var got []string
				since, polls := "0", 0
				for len(got) < items {
					// Half the clients start on A, half on B; then anywhere.
					proc := procs[n%2]
					if polls++; polls > 1 {
						proc = procs[rng.IntN(2)]
					}
					r, err := proc.do(ctx, "GET", proc.poll+"/api/feed?ch="+ch+"&since="+since, "")
					var ans feedAnswer
					if err == nil && r.status == 200 {
						err = json.Unmarshal([]byte(r.body), &ans)
					}
					if err != nil || r.status != 200 {
						errs <- fmt.Errorf("client %s/%d after %d items: %v %d %s", ch, n, len(got), err, r.status, r.body)
						return
					}
					for _, it := range ans.Items {
						if want := strconv.Itoa(len(got) + 1); it.ID != want || it.Text != ch+"-"+want {
							errs <- fmt.Errorf("client %s/%d: got item %+v when %s was due (answer %s)", ch, n, it, want, r.body)
							return
						}
						got = append(got, it.ID)
					}
					since = ans.Last
				}
			})
		}
		wg.Go(func() {
			for i := 1; i <= items; i++ {
				if err := app.post(procs[i%2].server, ch, fmt.Sprintf("%s-%d", ch, i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d requests sent back to the app with Grip-Last", app.retries.Load())
}

// A hold on A finds a gap: A is frozen (SIGSTOP) while more is published on
// its channel through B than the store keeps (buffer 2), then resumed
// (SIGCONT). With a prev-id the request goes back to the app with Grip-Last
// (the hold's prev-id) and the client gets the app's second answer, whether
// or not the items carry prev-ids; without one the client gets the app's
// own held response, not the oldest retained message. Each hold has a 1 h
// Grip-Timeout: its answer comes from the gap.
func TestGripRedisGapWhileInstanceFrozen(t *testing.T) {
	checkTestLeaks(t)
	app := newGripApp(t)
	a, b := startGripProcs(t, app.srv, 2)
	// frozen publishes with A stopped, once the hold on ch is held on A,
	// and returns the hold's answer. The hold read its cursor before it
	// was held, so whether or not A stopped before its first read, the
	// read after SIGCONT is from before the three publishes: a gap.
	frozen := func(ch string, held <-chan resp, publish func()) resp {
		t.Helper()
		a.waitHeld(ch, 1)
		if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		// kill returns before every thread has stopped: one still
		// running could read a publish below.
		waitStopped(t, a.cmd.Process.Pid)
		publish() // each answered by B: in Redis before A runs again
		if n := b.info(ch)["messages"]; n != float64(2) {
			t.Errorf("%s keeps %v messages, want 2 (buffer 2)", ch, n)
		}
		if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		return <-held
	}

	for _, tc := range []struct {
		name, ch, prev string
		chained        bool   // the items published carry prev-ids
		want           string // the answer's body
		lasts          string // the Grip-Last of each request the app saw
	}{
		// The first retained item (12) does not follow 10 by its prev-id
		// either.
		{"prev-id, items chained", "gc", "10", true, "caught up from 10", `["" "gc; last-id=10"]`},
		// Only the gap says that 11 was missed.
		{"prev-id, items with ids only", "gi", "10", false, "caught up from 10", `["" "gi; last-id=10"]`},
		{"no prev-id", "gn", "", false, `{"messages":[]}`, `[""]`},
	} {
		if tc.prev != "" {
			b.publishItem(tc.ch, tc.prev, "", `{"body":"the app's newest"}`)
		}
		asked := app.asked()
		held := a.pollAsync(guard(t), a.poll+"/api/hold?ch="+tc.ch+"&prev="+tc.prev+"&timeout=3600")
		r := frozen(tc.ch, held, func() {
			for id := 11; id <= 13; id++ {
				prev := ""
				if tc.chained {
					prev = strconv.Itoa(id - 1)
				}
				b.publishItem(tc.ch, strconv.Itoa(id), prev, fmt.Sprintf(`{"code":201,"body":"item %d"}`, id))
			}
		})
		if r.status != 200 || r.body != tc.want || (tc.prev == "" && r.header.Get("X-App") != "held") {
			t.Errorf("%s: the hold that found a gap: %d %q %v, want %q", tc.name, r.status, r.body, r.header, tc.want)
		}
		if got := app.lastsFrom(asked); got != tc.lasts {
			t.Errorf("%s: the app saw Grip-Last %s, want %s", tc.name, got, tc.lasts)
		}
	}
}

// asked is how many requests to /api/hold the app has seen.
func (a *gripApp) asked() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.lasts)
}

// lastsFrom is the Grip-Last of each request to /api/hold from the i-th on.
func (a *gripApp) lastsFrom(i int) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return fmt.Sprintf("%q", a.lasts[i:])
}

// waitStopped waits until every thread of process pid is stopped (state T
// in /proc/<pid>/task/<tid>/stat).
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("process %d stopped", pid), func() bool {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil || len(tasks) == 0 {
			return false
		}
		for _, task := range tasks {
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			if err != nil {
				return false
			}
			// pid (comm) state ...: comm may hold spaces, so after the last ')'.
			i := bytes.LastIndexByte(stat, ')')
			if i < 0 || i+2 >= len(stat) || stat[i+2] != 'T' {
				return false
			}
		}
		return true
	})
}
