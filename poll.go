package longpoll

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-longpoll/longpoll/poller"
	"github.com/caddy-longpoll/longpoll/store"
)

// Defaults of the poll handler.
const (
	DefaultChannel     = "{http.request.uri.path.file}"
	DefaultTimeout     = 30 * time.Second
	DefaultCursorParam = "since"
)

// Poll holds long-poll requests and answers them when a message is published
// to their channel, or with 304 Not Modified after the timeout. The request
// never reaches the handlers after it.
type Poll struct {
	// Channel is the channel to poll, a placeholder template expanded per
	// request (for example "chat-{http.request.uri.query.room}"). Default
	// "{http.request.uri.path.file}", the last path segment.
	Channel string `json:"channel,omitempty"`

	// Timeout is how long a poll is held before it is answered 304 Not
	// Modified. Default 30s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// Format of answers: "json" (default) sends every message after the
	// cursor in one JSON document; "raw" sends the oldest unseen message's
	// body with its own Content-Type, one message per answer.
	Format string `json:"format,omitempty"`

	// CursorParam is the query parameter carrying the cursor. Without it
	// the cursor is taken from If-None-Match, then Last-Event-ID.
	// Default "since".
	CursorParam string `json:"cursor_param,omitempty"`

	// Park takes a waiting HTTP/1.x poll over from Caddy's HTTP server
	// and parks its connection, which costs far less memory than an
	// ordinary held request (no request goroutine, buffers or context).
	// Trade-offs: the answer closes the connection ("Connection: close"),
	// so the client reconnects for its next poll; the access log records
	// a parked poll when it is parked, without its status; HTTP/2 and
	// HTTP/3 polls are held the ordinary way; after a burst of parks the
	// process's idle memory is returned to the OS (a forced GC).
	// Default off.
	Park bool `json:"park,omitempty"`

	shared  *shared
	logger  *zap.Logger
	exiting chan struct{} // closed when the process exits
}

// CaddyModule returns the Caddy module information.
func (Poll) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.longpoll",
		New: func() caddy.Module { return new(Poll) },
	}
}

// Provision applies the defaults and joins the app's store.
func (h *Poll) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.Channel == "" {
		h.Channel = DefaultChannel
	}
	if h.Timeout == 0 {
		h.Timeout = caddy.Duration(DefaultTimeout)
	}
	if h.Format == "" {
		h.Format = "json"
	}
	if h.CursorParam == "" {
		h.CursorParam = DefaultCursorParam
	}
	app, err := appOf(ctx)
	if err != nil {
		return err
	}
	h.shared = app.shared
	// On process exit Caddy waits for in-flight requests before it cleans
	// up modules, so held polls are answered when their server begins to
	// shut down. On a reload they stay held: the next config shares them.
	exiting := make(chan struct{})
	h.exiting = exiting
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok {
		var once sync.Once
		srv.RegisterOnShutdown(func() {
			if caddy.Exiting() {
				once.Do(func() { close(exiting) })
			}
		})
	}
	return nil
}

// Validate checks the configuration.
func (h *Poll) Validate() error {
	if h.Timeout <= 0 {
		return fmt.Errorf("longpoll: timeout must be more than 0, got %v", time.Duration(h.Timeout))
	}
	if h.Format != "json" && h.Format != "raw" {
		return fmt.Errorf("longpoll: format must be json or raw, got %q", h.Format)
	}
	return nil
}

// ServeHTTP holds the poll. It never calls next.
func (h *Poll) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	m := h.shared.metrics
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		m.pollsRejected.WithLabelValues("method").Inc()
		w.Header().Set("Allow", "GET, HEAD")
		return writeError(w, http.StatusMethodNotAllowed, "method %s not allowed: poll with GET", r.Method)
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	channel := repl.ReplaceKnown(h.Channel, "")
	if err := store.ValidChannel(channel); err != nil {
		m.pollsRejected.WithLabelValues("bad_channel").Inc()
		return writeError(w, http.StatusBadRequest, "%v", err)
	}
	cursor, err := h.cursorOf(r)
	if err != nil {
		m.pollsRejected.WithLabelValues("bad_cursor").Inc()
		return writeError(w, http.StatusBadRequest, "%v", err)
	}

	if h.Park && r.ProtoMajor == 1 {
		if handled, err := h.servePark(w, r, channel, cursor); handled {
			return err
		}
	}

	ctx := r.Context()
	var timer *time.Timer // made when the poll first waits
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	p, st := h.shared.poller, h.shared.store
	woken := false // by a publish: read the store before holding again
	for {
		// Hold before reading the store: a message appended after the
		// read wakes this waiter, so nothing falls between the two. Right
		// after a wake-up the store is read first, without holding: it
		// almost always has the message, and then holding (and the
		// poller's lock it takes) would be wasted on the poll.
		var waiter *poller.Waiter
		var holdErr error
		if !woken {
			waiter, holdErr = p.Hold(channel)
		}
		res, err := st.Since(ctx, channel, cursor)
		if err != nil {
			if waiter != nil {
				p.Release(waiter)
			}
			if ctx.Err() != nil {
				return nil // client gone
			}
			m.pollsRejected.WithLabelValues("store").Inc()
			return storeError(w, h.logger, channel, err)
		}
		if len(res.Messages) > 0 || res.Gap {
			if waiter != nil {
				p.Release(waiter)
			}
			m.answered.Inc()
			return h.answer(w, channel, cursor, res)
		}
		cursor = res.Cursor
		if woken { // nothing new after all (WakeAll): hold, read again
			woken = false
			continue
		}
		if holdErr != nil {
			return holdRefused(w, m, holdErr)
		}

		if timer == nil {
			timer = time.NewTimer(time.Duration(h.Timeout))
		}
		select {
		case <-waiter.Done():
			p.Release(waiter)
			switch waiter.Reason() {
			case poller.Published:
				woken = true
				continue // read the store again
			case poller.Deleted:
				setCursor(w, cursor)
				return writeError(w, http.StatusGone, "channel %q was deleted", channel)
			default: // closed: answer now, the client re-polls
				setCursor(w, cursor)
				w.WriteHeader(http.StatusNotModified)
				return nil
			}
		case <-h.exiting:
			p.Release(waiter)
			setCursor(w, cursor)
			w.WriteHeader(http.StatusNotModified)
			return nil
		case <-timer.C:
			p.Release(waiter)
			m.timeouts.Inc()
			setCursor(w, cursor)
			w.WriteHeader(http.StatusNotModified)
			return nil
		case <-ctx.Done():
			p.Release(waiter)
			return nil
		}
	}
}

// holdRefused answers a poll the poller would not hold: 503, retry later.
func holdRefused(w http.ResponseWriter, m *metrics, err error) error {
	w.Header().Set("Retry-After", "1")
	if errors.Is(err, poller.ErrTooMany) {
		m.pollsRejected.WithLabelValues("too_many").Inc()
		return writeError(w, http.StatusServiceUnavailable, "too many held polls, retry later")
	}
	m.pollsRejected.WithLabelValues("shutting_down").Inc()
	return writeError(w, http.StatusServiceUnavailable, "shutting down, retry later")
}

// cursorOf finds the poll's cursor: the query parameter, else If-None-Match,
// else Last-Event-ID. No cursor at all is "", which means "from now on".
func (h *Poll) cursorOf(r *http.Request) (string, error) {
	var c, from string
	if v := queryParam(r.URL.RawQuery, h.CursorParam); v != "" {
		c, from = v, "query parameter "+h.CursorParam
	} else if v := r.Header.Get("If-None-Match"); v != "" {
		c, from = etagValue(v), "If-None-Match"
	} else if v := r.Header.Get("Last-Event-ID"); v != "" {
		c, from = v, "Last-Event-ID"
	} else {
		return "", nil
	}
	if !store.ValidCursor(c) {
		return "", fmt.Errorf("malformed cursor in %s: want 1 to %d characters of A-Z a-z 0-9 . _ ~ : -", from, store.MaxCursorLen)
	}
	return c, nil
}

// queryParam is url.Values.Get of the first value of name in a raw query,
// without parsing the whole query into a map.
func queryParam(rawQuery, name string) string {
	for q := rawQuery; q != ""; {
		var pair string
		pair, q, _ = strings.Cut(q, "&")
		if strings.Contains(pair, ";") {
			continue // url.ParseQuery rejects these pairs too
		}
		k, v, _ := strings.Cut(pair, "=")
		if k, ok := unescapeQuery(k); !ok || k != name {
			continue
		}
		if v, ok := unescapeQuery(v); ok {
			return v
		}
	}
	return ""
}

// unescapeQuery is url.QueryUnescape, skipping the work when there is
// nothing to unescape.
func unescapeQuery(s string) (string, bool) {
	if !strings.ContainsAny(s, "%+") {
		return s, true
	}
	u, err := url.QueryUnescape(s)
	return u, err == nil
}

// etagValue takes the first entity tag of an If-None-Match value, without
// its weak prefix and quotes.
func etagValue(v string) string {
	v = strings.TrimSpace(v)
	v = strings.TrimPrefix(v, "W/")
	if strings.HasPrefix(v, `"`) {
		if end := strings.IndexByte(v[1:], '"'); end >= 0 {
			return v[1 : 1+end]
		}
		return v // unterminated: left malformed
	}
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v)
}

func setCursor(w http.ResponseWriter, cursor string) {
	hdr := w.Header()
	hdr.Set("ETag", `"`+cursor+`"`)
	hdr.Set("Cache-Control", "no-store")
}

// answer writes res, the result of polling channel from cursor: all
// messages in json format, the oldest in raw format.
func (h *Poll) answer(w http.ResponseWriter, channel, cursor string, res store.Result) error {
	hdr := w.Header()
	if res.Gap {
		hdr.Set("Longpoll-Gap", "true")
	}
	if h.Format == "raw" {
		if len(res.Messages) == 0 {
			setCursor(w, res.Cursor)
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		msg := res.Messages[0]
		setCursor(w, msg.ID)
		hdr.Set("Content-Type", msg.Type)
		hdr.Set("Content-Length", fmt.Sprint(len(msg.Data)))
		w.WriteHeader(http.StatusOK)
		_, err := w.Write(msg.Data)
		return err
	}
	a := h.shared.answers.encode(channel, cursor, res)
	// The hot path of a fan-out: the four header values in one
	// allocation, each its own full slice, so that nothing a later
	// writer appends or changes reaches another poll's answer.
	vals := make([]string, 4)
	vals[0], vals[1], vals[2], vals[3] = a.etag, "no-store", "application/json", a.length
	hdr["Etag"] = vals[0:1:1]
	hdr["Cache-Control"] = vals[1:2:2]
	hdr["Content-Type"] = vals[2:3:3]
	hdr["Content-Length"] = vals[3:4:4]
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(a.body)
	return err
}

// encodeAnswer is the json format of a poll's answer.
func encodeAnswer(res store.Result) []byte {
	var b bytes.Buffer
	b.WriteString(`{"cursor":`)
	writeJSONString(&b, res.Cursor)
	b.WriteString(`,"messages":[`)
	for i, msg := range res.Messages {
		if i > 0 {
			b.WriteByte(',')
		}
		encodeMessage(&b, msg)
	}
	b.WriteByte(']')
	if res.Gap {
		b.WriteString(`,"gap":true`)
	}
	b.WriteString("}\n")
	return b.Bytes()
}

// encodeMessage writes one message: data is the JSON value for JSON
// messages, a string for UTF-8 text, base64 otherwise.
func encodeMessage(b *bytes.Buffer, msg store.Message) {
	b.WriteString(`{"id":`)
	writeJSONString(b, msg.ID)
	b.WriteString(`,"channel":`)
	writeJSONString(b, msg.Channel)
	b.WriteString(`,"time":`)
	writeJSONString(b, msg.Time.UTC().Format(time.RFC3339Nano))
	b.WriteString(`,"type":`)
	writeJSONString(b, msg.Type)
	b.WriteString(`,"data":`)
	switch {
	case isJSONType(msg.Type) && json.Valid(msg.Data):
		_ = json.Compact(b, msg.Data)
	case utf8.Valid(msg.Data):
		writeJSONString(b, string(msg.Data))
	default:
		writeJSONString(b, base64.StdEncoding.EncodeToString(msg.Data))
		b.WriteString(`,"encoding":"base64"`)
	}
	b.WriteByte('}')
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc, _ := json.Marshal(s)
	b.Write(enc)
}

// isJSONType reports whether a content type is application/json or +json.
func isJSONType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// writeError answers with {"error": "..."}.
func writeError(w http.ResponseWriter, status int, format string, args ...any) error {
	body, _ := json.Marshal(map[string]string{"error": fmt.Sprintf(format, args...)})
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Content-Length", fmt.Sprint(len(body)+1))
	w.WriteHeader(status)
	_, err := w.Write(append(body, '\n'))
	return err
}

// storeError answers a failed store call: 503 when the store could not be
// reached (retry is safe), 500 otherwise.
func storeError(w http.ResponseWriter, logger *zap.Logger, channel string, err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		logger.Debug("store unavailable", zap.String("channel", channel), zap.Error(err))
		w.Header().Set("Retry-After", "1")
		return writeError(w, http.StatusServiceUnavailable, "store unavailable, retry later")
	}
	logger.Error("store failed", zap.String("channel", channel), zap.Error(err))
	return writeError(w, http.StatusInternalServerError, "store failed")
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Poll)(nil)
	_ caddy.Validator             = (*Poll)(nil)
	_ caddyhttp.MiddlewareHandler = (*Poll)(nil)
)
