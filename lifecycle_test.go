package longpoll_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	longpoll "github.com/caddy-longpoll/longpoll"
)

// follow polls channel from cursor until it has want messages and returns
// them; a gap or an unexpected status fails the test.
func (s *server) follow(ctx context.Context, path, cursor string, want int) ([]map[string]any, error) {
	var got []map[string]any
	for len(got) < want {
		r, err := s.do(ctx, "GET", s.poll+path+"?since="+cursor, "")
		if err != nil {
			return got, err
		}
		switch r.status {
		case 304:
		case 200:
			var ans struct {
				Cursor   string           `json:"cursor"`
				Messages []map[string]any `json:"messages"`
				Gap      bool             `json:"gap"`
			}
			if err := json.Unmarshal([]byte(r.body), &ans); err != nil {
				return got, err
			}
			if ans.Gap {
				return got, fmt.Errorf("gap after %d messages", len(got))
			}
			got = append(got, ans.Messages...)
		default:
			return got, fmt.Errorf("poll answered %d %s", r.status, r.body)
		}
		cursor = strings.Trim(r.header.Get("ETag"), `"`)
	}
	return got, nil
}

// Every poller receives every message of its channel exactly once, in the
// same order, while many publishers publish at once.
func TestManyPollersAndPublishersExactlyOnceInOrder(t *testing.T) {
	exactlyOnceInOrder(t, pollRoute)
}

// The same with parked polls (each answer closes its connection).
func TestParkedPollsExactlyOnceInOrder(t *testing.T) {
	exactlyOnceInOrder(t, parkSite)
}

func exactlyOnceInOrder(t *testing.T, pollSite string) {
	const channels, pollersPerChannel, publishers, perPublisher = 4, 25, 4, 100
	s := start(t, `longpoll {
		store memory {
			buffer 1000
		}
	}`, pollSite, pubRoute)
	checkLeaks(t, s)
	want := publishers * perPublisher // per channel
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	results := make([][][]map[string]any, channels)
	var wg sync.WaitGroup
	for c := range channels {
		results[c] = make([][]map[string]any, pollersPerChannel)
		ch := fmt.Sprint("room-", c)
		cursor := s.info(ch)["cursor"].(string)
		for p := range pollersPerChannel {
			wg.Go(func() {
				got, err := s.follow(ctx, "/poll/"+ch, cursor, want)
				if err != nil {
					t.Errorf("poller %d of %s: %v", p, ch, err)
				}
				results[c][p] = got
			})
		}
	}
	var pubs sync.WaitGroup
	for p := range publishers {
		pubs.Go(func() {
			for i := range perPublisher {
				for c := range channels {
					r, err := s.do(ctx, "POST", fmt.Sprintf("%s/publish/room-%d", s.pub, c),
						fmt.Sprintf(`{"p":%d,"i":%d}`, p, i), "Content-Type", "application/json")
					if err != nil || r.status != 200 {
						t.Errorf("publish: %v %d %s", err, r.status, r.body)
						return
					}
				}
			}
		})
	}
	pubs.Wait()
	wg.Wait()
	if t.Failed() {
		return
	}
	for c := range channels {
		var first []string
		for p, got := range results[c] {
			if len(got) != want {
				t.Fatalf("room-%d poller %d got %d messages, want %d", c, p, len(got), want)
			}
			next := make([]int, publishers)
			var ids []string
			for _, m := range got {
				d := m["data"].(map[string]any)
				pub, i := int(d["p"].(float64)), int(d["i"].(float64))
				if i != next[pub] {
					t.Fatalf("room-%d poller %d: publisher %d's message %d came when %d was due", c, p, pub, i, next[pub])
				}
				next[pub]++
				ids = append(ids, m["id"].(string))
			}
			if first == nil {
				first = ids
			} else if fmt.Sprint(ids) != fmt.Sprint(first) {
				t.Fatalf("room-%d pollers saw different orders", c)
			}
		}
	}
}

func TestPollWithoutCursorWaitsForTheNextMessage(t *testing.T) {
	s := start(t, "", `longpoll /poll/* {
		timeout 50ms
	}`, pubRoute)
	s.publish("c", "text/plain", "before the poll")
	if r := s.must("GET", s.poll+"/poll/c", ""); r.status != 304 {
		t.Fatalf("poll without cursor got an older message: %d %s", r.status, r.body)
	}
}

// A reload keeps the store and the held polls: a message published through
// the new config reaches polls held by the old one.
func TestReloadKeepsHeldPollsAndMessages(t *testing.T) {
	const n = 2000
	s := start(t, "", pollRoute, pubRoute)
	checkLeaks(t, s)
	before := s.publish("c", "text/plain", "before reload")["id"].(string)
	cursor := before
	ctx := context.Background()
	var polls []<-chan resp
	for range n {
		polls = append(polls, s.pollAsync(ctx, s.poll+"/poll/c?since="+cursor))
	}
	s.waitHeld("c", n)

	began := time.Now()
	s.reload("", `longpoll /poll/* {
		timeout 45s
	}
	respond /hello "new config"`, pubRoute)
	t.Logf("reload with %d held polls took %v", n, time.Since(began))
	if r := s.must("GET", s.poll+"/hello", ""); r.body != "new config" {
		t.Fatalf("new config not serving: %q", r.body)
	}
	if i := s.info("c"); i["subscribers"] != float64(n) || i["messages"] != 1.0 {
		t.Fatalf("after reload: %v, want %d held polls and the message kept", i, n)
	}
	pub := s.publish("c", "text/plain", "after reload")
	if pub["subscribers"] != float64(n) {
		t.Fatalf("publish after reload woke %v of %d", pub["subscribers"], n)
	}
	for _, p := range polls {
		r := <-p
		if r.status != 200 || !strings.Contains(r.body, `"after reload"`) || strings.Contains(r.body, `"before reload"`) {
			t.Fatalf("held poll after reload = %d %s", r.status, r.body)
		}
	}
}

// When a reload changes the store, polls held on the old one are answered
// at once (304 with their cursor), and their next poll is told of the gap.
func TestReloadWithNewStoreAnswersHeldPollsAndSignalsTheGap(t *testing.T) {
	s := start(t, "", pollRoute, pubRoute)
	checkLeaks(t, s)
	cursor := s.publish("c", "text/plain", "old store")["id"].(string)
	got := s.pollAsync(context.Background(), s.poll+"/poll/c?since="+cursor)
	s.waitHeld("c", 1)
	s.reload(`longpoll {
		store memory {
			buffer 50
		}
	}`, pollRoute, pubRoute)
	r := <-got
	if r.status != 304 || r.header.Get("ETag") != etag(cursor) {
		t.Fatalf("held poll on the replaced store = %d %v", r.status, r.header)
	}
	r = s.must("GET", s.poll+"/poll/c?since="+cursor, "")
	if r.status != 200 || r.json(t)["gap"] != true {
		t.Fatalf("poll with the old store's cursor = %d %s", r.status, r.body)
	}
}

// Stopping the server answers held polls at once instead of holding the
// shutdown for their timeout.
func TestShutdownAnswersHeldPolls(t *testing.T) {
	s := start(t, "", `longpoll /poll/* {
		timeout 1h
	}`, pubRoute)
	checkLeaks(t, s)
	var polls []<-chan resp
	for range 50 {
		polls = append(polls, s.pollAsync(context.Background(), s.poll+"/poll/c"))
	}
	s.waitHeld("c", 50)
	s.tc.InitServer(emptyConfig, "caddyfile")
	for _, p := range polls {
		if r := <-p; r.status != 304 || r.header.Get("ETag") == "" {
			t.Fatalf("held poll at shutdown = %d %v", r.status, r.header)
		}
	}
}

func TestMetricsThroughCaddysRegistry(t *testing.T) {
	// /poll/ holds for a minute (answered by the publish, however slow the
	// machine), /short/ for 50 ms (times out).
	s := start(t, "", `longpoll /poll/*
	longpoll /short/* {
		timeout 50ms
	}`, pubRoute)
	got := s.pollAsync(context.Background(), s.poll+"/poll/m")
	s.waitHeld("m", 1)
	s.assertMetrics("caddy_longpoll_held_polls 1")
	s.publish("m", "text/plain", "x")
	<-got
	s.must("GET", s.poll+"/short/m", "")                 // times out
	s.must("GET", s.poll+"/poll/m?since=bad/cursor", "") // rejected
	s.must("POST", s.pub+"/publish/m", "{", "Content-Type", "application/json")
	s.assertMetrics(
		"caddy_longpoll_held_polls 0",
		"caddy_longpoll_messages_published_total 1",
		"caddy_longpoll_polls_answered_total 1",
		"caddy_longpoll_poll_timeouts_total 1",
		`caddy_longpoll_polls_rejected_total{reason="bad_cursor"} 1`,
		`caddy_longpoll_publishes_rejected_total{reason="bad_request"} 1`,
		"caddy_longpoll_channels 1")
}

func grepLongpoll(m string) string {
	var out []string
	for _, l := range strings.Split(m, "\n") {
		if strings.HasPrefix(l, "caddy_longpoll") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A poll woken with nothing new for it (a reconnected Redis store wakes
// every poll) stays held and gets the next message, held or parked.
func TestWokenWithNothingNewStaysHeld(t *testing.T) {
	for name, site := range map[string]string{"held": "longpoll /poll/*", "parked": parkSite} {
		t.Run(name, func(t *testing.T) {
			s := start(t, "", site, "longpoll_publish /publish/*")
			checkLeaks(t, s)
			cursor := s.info("w")["cursor"].(string)
			got := s.pollAsync(context.Background(), s.poll+"/poll/w?since="+cursor)
			s.waitHeld("w", 1)
			if n := longpoll.WakeAll(); n != 1 {
				t.Fatalf("WakeAll woke %d polls, want 1", n)
			}
			s.waitHeld("w", 1)
			pub := s.publish("w", "text/plain", "after the wake")
			r := <-got
			if r.status != 200 || r.header.Get("ETag") != `"`+pub["id"].(string)+`"` || !strings.Contains(r.body, "after the wake") {
				t.Fatalf("poll woken with nothing new, then published to: %d %v %s", r.status, r.header, r.body)
			}
		})
	}
}
