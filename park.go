package longpoll

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-longpoll/longpoll/internal/connwatch"
	"github.com/caddy-longpoll/longpoll/internal/handback"
	"github.com/caddy-longpoll/longpoll/internal/writenow"
)

// Parking: with the handler's Park option, an HTTP/1.x poll that has to
// wait is taken over from net/http (hijacked). Its request goroutine, its
// buffers, its request and context are let go; what stays is the
// connection, a timer, the poller's waiter and the poll's place in the
// connection watcher, which notices when the client goes away. The poll is
// an asyncAwait: the same rules as a held poll, driven by callbacks. Its
// answer is written straight to the connection, which then goes back to
// the server of its address (internal/handback) to read the client's
// next request, as any keep-alive connection (after a reload, to the new
// server on the same address): Caddy's handlers, timeouts and shutdown
// apply to it as before. The answer closes the connection
// instead ("Connection: close") when the client asked for that or is on
// HTTP/1.0, sent more after the poll (pipelining), when the poll ends
// because its store closed or the process exits, when no server serves its
// address any more, or when the connection watcher cannot let go of it.

// handbacks gives parked polls' connections back to the servers of their
// addresses. Its goroutines (one per server that parked a poll) belong to
// those servers: each ends when its server shuts down.
var handbacks handback.Servers

// parker parks the polls of one handler: a native poll route, or a GRIP
// hold (whose answer differs).
type parker struct {
	shared *shared
	logger *zap.Logger
	// respond writes the answer of an await that ended with v, as the
	// handler answers a held poll (a store failure is returned, as a
	// caddyhttp.Error, with nothing written).
	respond func(w http.ResponseWriter, a *await, v verdict) error
}

// servePark serves a poll in park mode, for at most timeout. It returns
// false, having written nothing, when the connection cannot be taken over:
// then the poll is held the ordinary way.
func (p parker) servePark(w http.ResponseWriter, r *http.Request, a await, timeout time.Duration) (bool, error) {
	sh := p.shared
	// Every poll of the route, parked or not, tells handbacks which server
	// serves its address now: after a reload, the new one.
	srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
	if srv != nil {
		if addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			handbacks.Note(srv, addr)
		}
	}
	pk := &parkedPoll{p: p, head: r.Method == http.MethodHead}
	x := newAsyncAwait(a, sh.parked, pk.done)
	pk.x = x
	if v := x.begin(r.Context()); v.outcome != waiting {
		return true, p.respond(w, &x.a, v)
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		x.abandon()
		return false, nil
	}
	// The request was a GET without a body; anything the client sent
	// after it is dropped with the connection after the answer.
	pk.conn = conn
	pk.keepAlive = srv != nil && r.ProtoAtLeast(1, 1) && !r.Close && brw.Reader.Buffered() == 0
	if !sh.parked.add(pk) { // the store is closing: answer now
		x.abandon()
		pk.done(verdict{outcome: notModified})
		return true, nil
	}
	pk.token = sh.watch.Watch(conn, pk.clientGone)
	sh.release.parked()
	x.park(timeout)
	return true, nil
}

// parkedPoll is one parked poll: its connection and its await.
type parkedPoll struct {
	p     parker
	x     *asyncAwait
	conn  net.Conn
	token connwatch.Token
	head  bool // a HEAD poll: no body
	// keepAlive: the connection may go back to a server after the answer.
	keepAlive bool
}

// clientGone is the connection watcher's callback.
func (pk *parkedPoll) clientGone() { pk.x.event(evGone) }

// parkedWriteTimeout bounds writing a parked poll's answer to a client
// that does not take it at once.
const parkedWriteTimeout = 10 * time.Second

// done is the end of the poll's await: its answer is written (none when
// the client went away) and the connection goes back to its server, or is
// closed.
func (pk *parkedPoll) done(v verdict) {
	p := pk.p
	// Only a poll answered for its own sake keeps its connection: a 304
	// that is not a timeout means the store closed or the process exits,
	// and the server that would read the next request is likely going
	// too. The watcher lets go first, so that it does not take the
	// client's next request for its going away.
	keep := pk.keepAlive && v.outcome != gone && (v.outcome != notModified || v.timeout) &&
		handbacks.Serving(pk.conn.LocalAddr()) && p.shared.watch.Release(pk.token)
	if v.outcome == gone {
		pk.finish(false)
		return
	}
	w := newBufferedResponse()
	if err := p.respond(w, &pk.x.a, v); err != nil {
		// A store failure: its status, as a held poll gets it from
		// Caddy when the site has no handle_errors (which cannot run
		// for a connection taken over from the server).
		var he caddyhttp.HandlerError
		if errors.As(err, &he) {
			w.WriteHeader(he.StatusCode)
		}
		p.logger.Debug("parked poll failed", zap.String("channel", pk.x.a.subs[0].channel), zap.Error(err))
	}
	answer := w.bytes(pk.head, keep)
	n, err := writenow.Write(pk.conn, answer)
	switch {
	case err == nil && n == len(answer):
		pk.finish(keep)
	case err != nil && err != writenow.ErrWouldBlock:
		p.logger.Debug("writing a parked poll's answer", zap.String("channel", pk.x.a.subs[0].channel), zap.Error(err))
		pk.finish(false)
	default:
		// The client does not take the answer at once (or the
		// connection cannot be written without blocking, such as
		// TLS): the rest is written by a goroutine of its own, within
		// parkedWriteTimeout, so that it stalls no other poll.
		rest := answer[n:]
		p.shared.parked.wg.Go(func() {
			pk.conn.SetWriteDeadline(time.Now().Add(parkedWriteTimeout))
			_, err := pk.conn.Write(rest)
			if err != nil {
				p.logger.Debug("writing a parked poll's answer", zap.String("channel", pk.x.a.subs[0].channel), zap.Error(err))
			}
			pk.conn.SetWriteDeadline(time.Time{}) // the server sets its own
			pk.finish(keep && err == nil)
		})
	}
}

// finish takes the poll out of the registry and gives its connection back
// to its server (keep), or closes it.
func (pk *parkedPoll) finish(keep bool) {
	sh := pk.p.shared
	sh.parked.remove(pk)
	if keep && handbacks.Give(pk.conn) {
		return
	}
	sh.watch.Forget(pk.token)
	pk.conn.Close()
}

// parkedPolls is the registry of one store's parked polls. It owns the
// goroutines that run their steps and write their answers: a fixed set of
// step workers, started with the first step, and a goroutine for each
// answer that could not be written at once (a slow client), bounded by
// parkedWriteTimeout. On process exit and when the store closes, drain
// answers every parked poll (304) and waits for those goroutines.
type parkedPolls struct {
	mu     sync.Mutex
	polls  map[*parkedPoll]struct{}
	closed bool
	steps  stepQueue
	wg     sync.WaitGroup // slow answers' writers
}

func newParkedPolls() *parkedPolls {
	r := &parkedPolls{polls: map[*parkedPoll]struct{}{}}
	r.steps.cond.L = &r.steps.mu
	return r
}

// start implements stepRunner.
func (r *parkedPolls) start(f func()) bool { return r.steps.push(f) }

// stepQueue runs the steps of parked polls on a fixed set of worker
// goroutines, so that a publish that wakes thousands of them does not
// start a goroutine (and grow its stack) for each. Its length is bounded
// by the number of parked polls: an await has at most one step queued or
// running at a time.
type stepQueue struct {
	mu      sync.Mutex
	cond    sync.Cond
	queue   []func()
	head    int // queue[head:] waits
	idle    int // workers waiting in cond.Wait
	started bool
	closed  bool
	workers sync.WaitGroup
}

// stepWorkers is how many goroutines run steps: a step reads the store
// (with the Redis store, a round trip; go-redis's pool has 10 connections
// per CPU) and writes the answer without blocking.
var stepWorkers = max(8, 4*runtime.GOMAXPROCS(0))

// push queues f; false once the queue is closed.
func (q *stepQueue) push(f func()) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	if !q.started {
		q.started = true
		for range stepWorkers {
			q.workers.Go(q.work)
		}
	}
	q.queue = append(q.queue, f)
	if q.idle > 0 {
		q.cond.Signal()
	}
	return true
}

// work runs queued steps until the queue is closed and empty.
func (q *stepQueue) work() {
	q.mu.Lock()
	for {
		for q.head == len(q.queue) && !q.closed {
			q.idle++
			q.cond.Wait()
			q.idle--
		}
		if q.head == len(q.queue) {
			q.mu.Unlock()
			return
		}
		f := q.queue[q.head]
		q.queue[q.head] = nil
		q.head++
		if q.head == len(q.queue) { // empty: reuse the array
			q.queue, q.head = q.queue[:0], 0
		}
		q.mu.Unlock()
		f()
		q.mu.Lock()
	}
}

// close refuses new steps; the workers run the queued ones and return.
func (q *stepQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}

// wait waits for the workers to return, after close.
func (q *stepQueue) wait() { q.workers.Wait() }

// add registers pk; false once the registry is draining.
func (r *parkedPolls) add(pk *parkedPoll) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.polls[pk] = struct{}{}
	return true
}

func (r *parkedPolls) remove(pk *parkedPoll) {
	r.mu.Lock()
	delete(r.polls, pk)
	r.mu.Unlock()
}

// exit answers the parked polls when the process exits, as held polls are.
func (r *parkedPolls) exit() { r.drain() }

// drainWorkers answer parked polls at once when the registry drains.
const drainWorkers = 8

// drain refuses new parked polls, answers every parked one 304 and waits
// until every goroutine of the registry has returned. Idempotent.
func (r *parkedPolls) drain() {
	r.mu.Lock()
	r.closed = true
	polls := make([]*parkedPoll, 0, len(r.polls))
	for pk := range r.polls {
		polls = append(polls, pk)
	}
	r.mu.Unlock()
	// A poll whose step is queued or runs is answered by that step, which
	// the workers run before they return; an event for any other poll
	// now ends it at once (start refuses).
	r.steps.close()
	var next atomic.Int64
	var workers sync.WaitGroup
	for range min(drainWorkers, len(polls)) {
		workers.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(polls)); i = next.Add(1) - 1 {
				polls[i].x.finish(evExit)
			}
		})
	}
	workers.Wait()
	r.steps.wait()
	r.wg.Wait()
}

// bufferedResponse is an http.ResponseWriter that keeps the answer, for a
// parked connection.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newBufferedResponse() *bufferedResponse {
	return &bufferedResponse{header: make(http.Header)}
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	return b.body.Write(p)
}

// bytes is the whole HTTP/1.1 response, headers sorted, with
// "Connection: close" unless keepAlive. It is on the path of every parked
// answer of a fan-out, so it appends rather than formats.
func (b *bufferedResponse) bytes(head, keepAlive bool) []byte {
	noBody := b.status == http.StatusNotModified || b.status == http.StatusNoContent
	// Written below: Connection, Date and (with a body) Content-Length.
	b.header.Del("Content-Length")
	b.header.Del("Connection")
	b.header.Del("Date")
	keys := make([]string, 0, len(b.header)+3)
	for k := range b.header {
		keys = append(keys, k)
	}
	keys = append(keys, "Date")
	if !keepAlive {
		keys = append(keys, "Connection")
	}
	if !noBody {
		keys = append(keys, "Content-Length")
	}
	slices.Sort(keys)
	out := make([]byte, 0, 256+b.body.Len())
	out = append(out, "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(b.status), 10)
	out = append(out, ' ')
	out = append(out, http.StatusText(b.status)...)
	out = append(out, "\r\n"...)
	for _, k := range keys {
		switch k {
		case "Connection":
			out = append(out, "Connection: close\r\n"...)
		case "Date":
			out = append(out, "Date: "...)
			out = time.Now().UTC().AppendFormat(out, http.TimeFormat)
			out = append(out, "\r\n"...)
		case "Content-Length":
			out = append(out, "Content-Length: "...)
			out = strconv.AppendInt(out, int64(b.body.Len()), 10)
			out = append(out, "\r\n"...)
		default:
			for _, v := range b.header[k] {
				out = append(out, k...)
				out = append(out, ": "...)
				out = append(out, v...)
				out = append(out, "\r\n"...)
			}
		}
	}
	out = append(out, "\r\n"...)
	if !head && !noBody {
		out = append(out, b.body.Bytes()...)
	}
	return out
}

var _ http.ResponseWriter = (*bufferedResponse)(nil)
