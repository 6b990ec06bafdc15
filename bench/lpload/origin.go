package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// gripOrigin is the tiny GRIP origin behind Pushpin (lpload grip-origin).
// It speaks this plugin's HTTP contract, so the longpoll profile drives
// Pushpin through it unchanged:
//
//   - GET /sub/<ch>?since=N: the messages after N at once, else a GRIP hold
//     instruction (Grip-Hold: response, Grip-Channel <ch> with prev-id N, and
//     Grip-Link rel=next so Pushpin re-asks when it missed a publish);
//   - GET /pub/<ch>: {"cursor": <last id>};
//   - POST /pub/<ch>: appends the body, then publishes it to Pushpin's
//     publish endpoint with id and prev-id, under the channel's lock so
//     Pushpin sees a channel's publishes in order;
//   - GET /stats: {"poll_requests": N, "distinct_polls": D, "publishes":
//     M}, the polls (GET /sub/...) and publishes it has served since it
//     started; the proxy in front sends it one poll request per hold and
//     per retry. D counts a client's poll once however often the proxy
//     asks for it: by its Lpload-Poll header (lpload's -window paces on
//     it, since Pushpin re-asks for held polls by itself), or each request
//     without one.
//
// Messages are kept in memory (the last 1000 per channel), as the other
// servers keep theirs. The publish URL may be Pushpin's or a
// longpoll_publish route's root: both take Pushpin's JSON format.
type gripOrigin struct {
	pushpin string // the GRIP proxy's publish URL
	client  *http.Client

	polls     atomic.Int64 // GET /sub/... served
	publishes atomic.Int64 // POST /pub/... served

	seenMu   sync.Mutex
	seen     map[string]struct{} // Lpload-Poll values of the polls served
	distinct atomic.Int64        // polls served counted once (by Lpload-Poll)

	mu       sync.Mutex
	channels map[string]*originChannel
}

type originChannel struct {
	mu   sync.Mutex
	last int      // id of the newest message
	msgs []string // the newest messages, ids last-len(msgs)+1 .. last
}

const originKeep = 1000

func runOrigin(args []string) error {
	fs := flag.NewFlagSet("grip-origin", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:9190", "address to serve on")
	pushpin := fs.String("pushpin", "http://127.0.0.1:5561/publish/", "the GRIP proxy's publish URL (Pushpin's, or the root of a longpoll_publish route)")
	fs.Parse(args)
	o := &gripOrigin{pushpin: *pushpin, channels: map[string]*originChannel{},
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}, Timeout: 10 * time.Second}}
	srv := &http.Server{Addr: *listen, Handler: o}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); srv.Close() }()
	progress("grip-origin on %s, publishing to %s", *listen, *pushpin)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		return err
	}
	return nil
}

func (o *gripOrigin) channel(name string) *originChannel {
	o.mu.Lock()
	defer o.mu.Unlock()
	c, ok := o.channels[name]
	if !ok {
		c = new(originChannel)
		o.channels[name] = c
	}
	return c
}

type originMessage struct {
	ID   string `json:"id"`
	Data string `json:"data"`
}

type originAnswer struct {
	Cursor   string          `json:"cursor"`
	Messages []originMessage `json:"messages"`
	Gap      bool            `json:"gap,omitempty"`
}

func answerFrom(c *originChannel, since int) originAnswer {
	a := originAnswer{Cursor: strconv.Itoa(c.last)}
	first := c.last - len(c.msgs) + 1
	from := since + 1
	if from < first {
		a.Gap, from = true, first
	}
	for id := from; id <= c.last; id++ {
		a.Messages = append(a.Messages, originMessage{strconv.Itoa(id), c.msgs[id-first]})
	}
	return a
}

// originStats is GET /stats: what the origin has served since it started.
type originStats struct {
	PollRequests  int64 `json:"poll_requests"`
	DistinctPolls int64 `json:"distinct_polls"`
	Publishes     int64 `json:"publishes"`
}

// pollHeader carries a client poll's own name (lpload's hold and fan-out
// polls): the origin counts a poll once, however often it is asked for.
const pollHeader = "Lpload-Poll"

// countPoll counts a poll request, and the poll once by its pollHeader.
func (o *gripOrigin) countPoll(r *http.Request) {
	o.polls.Add(1)
	tag := r.Header.Get(pollHeader)
	if tag == "" {
		o.distinct.Add(1)
		return
	}
	o.seenMu.Lock()
	defer o.seenMu.Unlock()
	if _, ok := o.seen[tag]; ok {
		return
	}
	if o.seen == nil {
		o.seen = map[string]struct{}{}
	}
	o.seen[tag] = struct{}{}
	o.distinct.Add(1)
}

func (o *gripOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/stats" && r.Method == "GET" {
		writeOriginJSON(w, originStats{o.polls.Load(), o.distinct.Load(), o.publishes.Load()})
		return
	}
	kind, name, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if name == "" || (kind != "sub" && kind != "pub") {
		http.NotFound(w, r)
		return
	}
	c := o.channel(name)
	switch {
	case kind == "pub" && r.Method == "GET":
		c.mu.Lock()
		last := c.last
		c.mu.Unlock()
		writeOriginJSON(w, originAnswer{Cursor: strconv.Itoa(last)})
	case kind == "pub" && r.Method == "POST":
		o.publishes.Add(1)
		body, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		defer c.mu.Unlock()
		id := c.last + 1
		one := originChannel{last: id, msgs: []string{string(body)}}
		item, _ := json.Marshal(answerFrom(&one, id-1))
		pub, _ := json.Marshal(map[string]any{"items": []any{map[string]any{
			"channel": name, "id": strconv.Itoa(id), "prev-id": strconv.Itoa(id - 1),
			"formats": map[string]any{"http-response": map[string]any{
				"headers": [][2]string{{"Content-Type", "application/json"}, {"ETag", `"` + strconv.Itoa(id) + `"`}},
				"body":    string(item) + "\n",
			}},
		}}})
		res, err := o.client.Post(o.pushpin, "application/json", bytes.NewReader(pub))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			http.Error(w, "pushpin: "+res.Status, http.StatusBadGateway)
			return
		}
		c.last = id
		c.msgs = append(c.msgs, string(body))
		if len(c.msgs) > originKeep {
			c.msgs = c.msgs[len(c.msgs)-originKeep:]
		}
		writeOriginJSON(w, map[string]string{"id": strconv.Itoa(id)})
	case kind == "sub" && r.Method == "GET":
		o.countPoll(r)
		since, err := strconv.Atoi(r.URL.Query().Get("since"))
		c.mu.Lock()
		if err != nil {
			since = c.last // no cursor: from now on
		}
		a := answerFrom(c, since)
		c.mu.Unlock()
		if len(a.Messages) > 0 || a.Gap {
			w.Header().Set("ETag", `"`+a.Cursor+`"`)
			writeOriginJSON(w, a)
			return
		}
		// Hold. What Pushpin answers on timeout is this body.
		cur := strconv.Itoa(since)
		h := w.Header()
		h.Set("Grip-Hold", "response")
		h.Set("Grip-Channel", fmt.Sprintf("%s; prev-id=%s", name, cur))
		h.Set("Grip-Timeout", "300")
		h.Set("Grip-Link", fmt.Sprintf("</sub/%s?since=%s>; rel=next", name, cur))
		h.Set("ETag", `"`+cur+`"`)
		writeOriginJSON(w, originAnswer{Cursor: cur})
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func writeOriginJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
