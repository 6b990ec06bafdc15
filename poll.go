package longpoll

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-longpoll/longpoll/grant"
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
	Format Format `json:"format,omitempty"`

	// CursorParam is the query parameter carrying the cursor. Without it
	// the cursor is taken from If-None-Match, then Last-Event-ID.
	// Default "since".
	CursorParam string `json:"cursor_param,omitempty"`

	// Park takes a waiting HTTP/1.x poll over from Caddy's HTTP server
	// and parks its connection, which costs far less memory than an
	// ordinary held request (no request goroutine, buffers or context).
	// After the answer the connection goes back to the server for the
	// client's next request (keep-alive), unless the client asked to
	// close it. Trade-offs: the access log records a parked poll when it
	// is parked, without its status; HTTP/2 and HTTP/3 polls are held the
	// ordinary way; after a burst of parks the process's idle memory is
	// returned to the OS (a forced GC). Default off.
	Park bool `json:"park,omitempty"`

	// AuthRaw decides who may poll which channel: a module of the
	// longpoll.auth namespace, such as {"method": "jwt", ...} (signed
	// channel grants). Default: anyone who reaches the route may poll any
	// channel.
	AuthRaw json.RawMessage `json:"auth,omitempty" caddy:"namespace=longpoll.auth inline_key=method"`

	auth Authorizer

	shared   *shared
	answerer answerer
	parker   parker
	logger   *zap.Logger
	exiting  chan struct{} // closed when the process exits
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
		h.Format = FormatJSON
	}
	if h.CursorParam == "" {
		h.CursorParam = DefaultCursorParam
	}
	if h.AuthRaw != nil {
		mod, err := ctx.LoadModule(h, "AuthRaw")
		if err != nil {
			return fmt.Errorf("longpoll: auth: %v", err)
		}
		h.auth = mod.(Authorizer)
	}
	app, err := appOf(ctx)
	if err != nil {
		return err
	}
	h.shared = app.shared
	h.answerer = answerer{format: h.Format, answers: app.shared.answers, metrics: app.shared.metrics}
	h.parker = parker{shared: h.shared, logger: h.logger, respond: func(w http.ResponseWriter, a *await, v verdict) error {
		return h.answerer.respond(w, a.subs[0].channel, a.subs[0].cursor, v)
	}}
	h.exiting = onExit(ctx, h.shared.parked)
	return nil
}

// onExit returns a channel closed when the process exits, and then answers
// the parked polls too. Caddy waits for in-flight requests before it
// cleans up modules, so held polls are answered when their server begins
// to shut down. On a reload they stay held: the next config shares them.
func onExit(ctx caddy.Context, parked *parkedPolls) chan struct{} {
	exiting := make(chan struct{})
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok {
		var once sync.Once
		srv.RegisterOnShutdown(func() {
			if caddy.Exiting() {
				once.Do(func() {
					close(exiting)
					parked.exit()
				})
			}
		})
	}
	return exiting
}

// Validate checks the configuration.
func (h *Poll) Validate() error {
	if h.Timeout <= 0 {
		return fmt.Errorf("longpoll: timeout must be more than 0, got %v", time.Duration(h.Timeout))
	}
	if err := h.Format.check(); err != nil {
		return fmt.Errorf("longpoll: %v", err)
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
	channel, err := channelOf(r, h.Channel)
	if he, ok := channelFailure(err); ok {
		m.pollsRejected.WithLabelValues("channel_template").Inc()
		return he
	}
	if err != nil {
		m.pollsRejected.WithLabelValues("bad_channel").Inc()
		return writeError(w, http.StatusBadRequest, "%v", err)
	}
	if h.auth != nil {
		sub, err := h.auth.Authorize(r, grant.Poll, channel)
		if err != nil {
			reason, err := refuse(w, err)
			m.pollsRejected.WithLabelValues(reason).Inc()
			h.logger.Debug("poll refused", zap.String("channel", channel), zap.String("sub", sub), zap.String("reason", reason))
			return err
		}
	}
	cursor, err := cursorOf(r, h.CursorParam)
	if err != nil {
		m.pollsRejected.WithLabelValues("bad_cursor").Inc()
		return writeError(w, http.StatusBadRequest, "%v", err)
	}
	a := newAwait(h.shared.poller, h.shared.store, channel, cursor)
	if h.Park && r.ProtoMajor == 1 {
		if handled, err := h.parker.servePark(w, r, a, time.Duration(h.Timeout)); handled {
			return err
		}
	}
	v := a.wait(r.Context(), time.Duration(h.Timeout), h.exiting)
	return h.answerer.respond(w, channel, a.subs[0].cursor, v)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Poll)(nil)
	_ caddy.Validator             = (*Poll)(nil)
	_ caddyhttp.MiddlewareHandler = (*Poll)(nil)
)
