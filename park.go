package longpoll

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-longpoll/longpoll/poller"
)

// Parking: with the handler's Park option, an HTTP/1.x poll that has to
// wait is taken over from net/http (hijacked). Its request goroutine, its
// buffers, its request and context are let go; what stays is the connection,
// a timer, the poller's waiter and one small goroutine blocked in a one-byte
// Read, which notices when the client goes away. When the poll is answered
// the answer is written straight to the connection, with "Connection:
// close": the client opens a new connection for its next poll.

// servePark serves a poll in park mode. It returns false, having written
// nothing, when the connection cannot be taken over: then the poll is held
// the ordinary way.
func (h *Poll) servePark(w http.ResponseWriter, r *http.Request, channel, cursor string) (bool, error) {
	m := h.shared.metrics
	pk := &parkedPoll{h: h, channel: channel, cursor: cursor, head: r.Method == http.MethodHead, m: m}
	release := func() {
		if pk.waiter != nil {
			h.shared.poller.Release(pk.waiter)
		}
	}
	// Hold before reading the store, as in ServeHTTP.
	holdErr := pk.hold()
	res, err := h.shared.store.Since(r.Context(), channel, cursor)
	switch {
	case err != nil:
		release()
		if r.Context().Err() != nil {
			return true, nil // client gone
		}
		m.pollsRejected.WithLabelValues("store").Inc()
		return true, storeError(w, h.logger, channel, err)
	case len(res.Messages) > 0 || res.Gap:
		release()
		m.answered.Inc()
		return true, h.answer(w, channel, cursor, res)
	case holdErr != nil:
		return true, holdRefused(w, m, holdErr)
	}
	pk.cursor = res.Cursor
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		release()
		return false, nil
	}
	// The request was a GET without a body; anything the client sent
	// after it is dropped with the connection after the answer.
	pk.park(conn, time.Duration(h.Timeout))
	return true, nil
}

// parkedPoll is one parked poll. Its lifetime: park → (wake → answer |
// timeout → 304 | client gone) → finish, exactly once.
type parkedPoll struct {
	h       *Poll
	channel string
	cursor  string
	head    bool // a HEAD poll: no body
	m       *metrics

	mu      sync.Mutex
	conn    net.Conn // nil until parked
	waiter  *poller.Waiter
	timer   *time.Timer
	pending bool          // woken before the connection was parked
	reason  poller.Reason // of a pending or repeated wake-up
	waking  bool          // a wake is running
	again   bool          // woken again while waking
	done    bool

	token uint64  // in the close watcher; 0: watched by a goroutine
	buf   [1]byte // the watching goroutine's read buffer
}

// hold registers pk on its channel with the poller; pk.mu is held, or pk
// is not parked yet.
func (pk *parkedPoll) hold() error {
	w, err := pk.h.shared.poller.HoldFunc(pk.channel, pk.notify)
	pk.waiter = w
	return err
}

// notify is the poller's callback: it runs in the publisher's goroutine, so
// the answer is written from a goroutine of its own.
func (pk *parkedPoll) notify(r poller.Reason) {
	pk.mu.Lock()
	if pk.conn == nil { // not parked yet: park picks it up
		pk.pending, pk.reason = true, r
		pk.mu.Unlock()
		return
	}
	pk.mu.Unlock()
	go pk.wake(r)
}

// park takes over conn, whose request has been read and found nothing new.
func (pk *parkedPoll) park(conn net.Conn, timeout time.Duration) {
	pk.mu.Lock()
	pk.conn = conn
	pk.timer = time.AfterFunc(timeout, pk.timeout)
	pending, r := pk.pending, pk.reason
	if tok, ok := pk.h.shared.watcher.add(conn, pk); ok {
		pk.token = tok
	} else {
		go pk.watch()
	}
	pk.mu.Unlock()
	pk.h.shared.release.parked()
	if pending {
		go pk.wake(r)
	}
}

// watch ends the poll when the client closes the connection (or sends
// anything: a parked connection is closed after its answer anyway), where
// the close watcher cannot.
func (pk *parkedPoll) watch() {
	pk.conn.Read(pk.buf[:])
	pk.finish(nil)
}

func (pk *parkedPoll) timeout() {
	w := newBufferedResponse()
	pk.mu.Lock()
	if pk.done { // answered while the timer fired: not a timeout
		pk.mu.Unlock()
		return
	}
	setCursor(w, pk.cursor)
	pk.mu.Unlock()
	pk.m.timeouts.Inc()
	w.WriteHeader(http.StatusNotModified)
	pk.finish(w)
}

// wake answers the poll after the poller did: one wake runs at a time; a
// wake-up arriving meanwhile makes the running one look again.
func (pk *parkedPoll) wake(r poller.Reason) {
	pk.mu.Lock()
	if pk.done {
		pk.mu.Unlock()
		return
	}
	if pk.waking {
		pk.again = true
		if r != poller.Published {
			pk.reason = r // deleted or closed wins over published
		}
		pk.mu.Unlock()
		return
	}
	pk.waking = true
	pk.mu.Unlock()
	for {
		w := pk.answerFor(r)
		pk.mu.Lock()
		if w == nil { // nothing new: stay parked
			if pk.again && !pk.done {
				pk.again = false
				r, pk.reason = pk.reason, poller.Published
				pk.mu.Unlock()
				continue
			}
			pk.waking = false
			pk.mu.Unlock()
			return
		}
		pk.mu.Unlock()
		pk.finish(w)
		return
	}
}

// answerFor is the answer for a wake-up with reason r, or nil when the
// poll stays parked (it was woken but nothing is new for its cursor).
func (pk *parkedPoll) answerFor(r poller.Reason) *bufferedResponse {
	w := newBufferedResponse()
	pk.mu.Lock()
	cursor := pk.cursor
	pk.mu.Unlock()
	switch r {
	case poller.Deleted:
		setCursor(w, cursor)
		writeError(w, http.StatusGone, "channel %q was deleted", pk.channel)
		return w
	case poller.Closed: // the client re-polls into whatever replaced the store
		setCursor(w, cursor)
		w.WriteHeader(http.StatusNotModified)
		return w
	}
	// Published: the waiter has fired; read the store first, without
	// holding again: after a publish it almost always has the message.
	// Only when it has nothing new is the poll held again and the store
	// read once more, so that nothing published meanwhile is missed.
	pk.mu.Lock()
	if pk.done {
		pk.mu.Unlock()
		return nil
	}
	if pk.waiter != nil {
		pk.h.shared.poller.Release(pk.waiter)
		pk.waiter = nil
	}
	pk.mu.Unlock()
	for held := false; ; held = true {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := pk.h.shared.store.Since(ctx, pk.channel, cursor)
		cancel()
		switch {
		case err != nil:
			storeError(w, pk.h.logger, pk.channel, err)
			return w
		case len(res.Messages) > 0 || res.Gap:
			pk.m.answered.Inc()
			pk.h.answer(w, pk.channel, cursor, res)
			return w
		}
		cursor = res.Cursor
		pk.mu.Lock()
		pk.cursor = cursor
		if held || pk.done {
			pk.mu.Unlock()
			return nil // parked again
		}
		holdErr := pk.hold()
		pk.mu.Unlock()
		if holdErr != nil { // full or closing: answer now
			setCursor(w, cursor)
			w.WriteHeader(http.StatusNotModified)
			return w
		}
	}
}

// finish writes w (if any) and closes the connection, once.
func (pk *parkedPoll) finish(w *bufferedResponse) {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if pk.done {
		return
	}
	pk.done = true
	pk.timer.Stop()
	if pk.waiter != nil {
		pk.h.shared.poller.Release(pk.waiter)
		pk.waiter = nil
	}
	if w != nil {
		pk.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := pk.conn.Write(w.bytes(pk.head)); err != nil {
			pk.h.logger.Debug("writing a parked poll's answer", zap.String("channel", pk.channel), zap.Error(err))
		}
	}
	if pk.token != 0 {
		pk.h.shared.watcher.remove(pk.token)
	}
	pk.conn.Close()
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

// bytes is the whole HTTP/1.1 response, headers sorted. It is on the path
// of every parked answer of a fan-out, so it appends rather than formats.
func (b *bufferedResponse) bytes(head bool) []byte {
	noBody := b.status == http.StatusNotModified || b.status == http.StatusNoContent
	// Written below: Connection, Date and (with a body) Content-Length.
	b.header.Del("Content-Length")
	b.header.Del("Connection")
	b.header.Del("Date")
	keys := make([]string, 0, len(b.header)+3)
	for k := range b.header {
		keys = append(keys, k)
	}
	keys = append(keys, "Connection", "Date")
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
