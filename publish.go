package longpoll

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
	"go.uber.org/zap"

	"github.com/caddy-longpoll/longpoll/grant"
	"github.com/caddy-longpoll/longpoll/grip"
	"github.com/caddy-longpoll/longpoll/store"
)

// DefaultMaxSize is the default limit on a published message's body.
const DefaultMaxSize = 1 << 20

// MaxIdempotencyKeyLen is the longest Idempotency-Key accepted, in bytes.
const MaxIdempotencyKeyLen = 256

// Publish is the endpoint an upstream app calls: POST publishes the body as
// one message, GET describes the channel (with a cursor to render into a
// page), DELETE drops the channel. Serve it on an address only the app can
// reach; the allow list and the token guard it further.
type Publish struct {
	// Channel is the channel to publish to, a placeholder template expanded
	// per request. Default "{http.request.uri.path.file}", the last path
	// segment.
	Channel string `json:"channel,omitempty"`

	// Allow lists the client addresses (IPs or CIDR ranges) allowed to use
	// the endpoint; others get 403. The client address is Caddy's client IP,
	// which honours the server's trusted_proxies. Default: loopback only
	// (127.0.0.0/8 and ::1).
	Allow []string `json:"allow,omitempty"`

	// Token, if set, must be sent as "Authorization: Bearer <token>";
	// otherwise 401. Placeholders such as {env.LONGPOLL_TOKEN} are expanded
	// once at load; a token that expands to nothing is a config error.
	Token string `json:"token,omitempty"`

	// AuthRaw lets apps publish with signed grants (claim "publish":
	// channel patterns), as an alternative to Token: a module of the
	// longpoll.auth namespace, such as {"method": "jwt", ...}. Several apps
	// can then share one endpoint, each limited to its own channels. With
	// both set, the static token may publish to any channel.
	AuthRaw json.RawMessage `json:"auth,omitempty" caddy:"namespace=longpoll.auth inline_key=method"`

	// MaxSize is the largest message body accepted, in bytes; larger
	// bodies get 413. Default 1MiB.
	MaxSize int64 `json:"max_size,omitempty"`

	allow  caddyhttp.MatchClientIP
	auth   Authorizer
	token  string
	shared *shared
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Publish) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.longpoll_publish",
		New: func() caddy.Module { return new(Publish) },
	}
}

// Provision applies the defaults and joins the app's store.
func (h *Publish) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.Channel == "" {
		h.Channel = DefaultChannel
	}
	if h.MaxSize == 0 {
		h.MaxSize = DefaultMaxSize
	}
	allow := h.Allow
	if len(allow) == 0 {
		allow = []string{"127.0.0.0/8", "::1"}
	}
	// Caddy's client_ip matcher does the matching (trusted proxies, 0-RTT);
	// the ranges are normalised first, so an IPv4-mapped IPv6 address in
	// the list means the IPv4 address, as the client's is read.
	h.allow = caddyhttp.MatchClientIP{}
	for _, a := range allow {
		pfx, err := parsePrefix(a)
		if err != nil {
			return fmt.Errorf("longpoll_publish: allow: %v", err)
		}
		h.allow.Ranges = append(h.allow.Ranges, pfx.String())
	}
	if err := h.allow.Provision(ctx); err != nil {
		return fmt.Errorf("longpoll_publish: allow: %v", err)
	}
	h.token = caddy.NewReplacer().ReplaceKnown(h.Token, "")
	if h.AuthRaw != nil {
		mod, err := ctx.LoadModule(h, "AuthRaw")
		if err != nil {
			return fmt.Errorf("longpoll_publish: auth: %v", err)
		}
		h.auth = mod.(Authorizer)
	}
	app, err := appOf(ctx)
	if err != nil {
		return err
	}
	h.shared = app.shared
	return nil
}

// parsePrefix reads an IP or a CIDR range, as Caddy's IP matchers do, with
// an IPv4-mapped IPv6 address read as the IPv4 address.
func parsePrefix(s string) (netip.Prefix, error) {
	p, err := caddyhttp.CIDRExpressionToPrefix(s)
	if err != nil || strings.Contains(s, "%") {
		return p, fmt.Errorf("%q is not an IP address or CIDR range", s)
	}
	if !strings.Contains(s, "/") {
		ip := p.Addr().Unmap()
		return netip.PrefixFrom(ip, ip.BitLen()), nil
	}
	return p.Masked(), nil
}

// Validate checks the configuration.
func (h *Publish) Validate() error {
	if h.MaxSize < 0 {
		return fmt.Errorf("longpoll_publish: max_size must be more than 0, got %d", h.MaxSize)
	}
	if h.Token != "" && h.token == "" {
		return fmt.Errorf("longpoll_publish: token %q is empty once its placeholders are replaced (is the environment variable set?)", h.Token)
	}
	return nil
}

// ServeHTTP publishes (POST), describes (GET, HEAD) or deletes (DELETE) a
// channel, after checking the client's address, then its token or grant.
// It never calls next.
func (h *Publish) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	allowed, err := h.allow.MatchWithError(r)
	if err != nil {
		return err // 425: the TLS handshake is not complete
	}
	if !allowed {
		return h.reject(w, "forbidden", http.StatusForbidden, "client address not allowed to publish")
	}
	tokenOK := h.token != "" && h.authorized(r)
	if h.token != "" && !tokenOK && h.auth == nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="longpoll"`)
		return h.reject(w, "unauthorized", http.StatusUnauthorized, "missing or wrong bearer token")
	}
	if r.Method == http.MethodPost && isRoot(r, h.Channel) {
		return h.publishItems(w, r, tokenOK)
	}
	channel, err := channelOf(r, h.Channel)
	if he, ok := channelFailure(err); ok {
		h.shared.metrics.publishesRejected.WithLabelValues("channel_template").Inc()
		return he
	}
	if err != nil {
		return h.reject(w, "bad_request", http.StatusBadRequest, "%v", err)
	}
	if h.auth != nil && !tokenOK {
		if sub, err := h.auth.Authorize(r, grant.Publish, channel); err != nil {
			reason, err := refuse(w, err)
			h.shared.metrics.publishesRejected.WithLabelValues(reason).Inc()
			h.logger.Debug("publish endpoint refused a request", zap.String("channel", channel), zap.String("sub", sub), zap.String("reason", reason))
			return err
		}
	}
	switch r.Method {
	case http.MethodPost:
		return h.publish(w, r, channel)
	case http.MethodGet, http.MethodHead:
		return h.describe(w, r, channel)
	case http.MethodDelete:
		return h.delete(w, r, channel)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST, DELETE")
		return h.reject(w, "method", http.StatusMethodNotAllowed, "method %s not allowed: publish with POST", r.Method)
	}
}

// publish stores the request's body as one message on channel and wakes
// the polls held on it.
func (h *Publish) publish(w http.ResponseWriter, r *http.Request, channel string) error {
	key := r.Header.Get("Idempotency-Key")
	if len(key) > MaxIdempotencyKeyLen || strings.ContainsFunc(key, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		return h.reject(w, "bad_request", http.StatusBadRequest, "Idempotency-Key must be at most %d bytes without control characters", MaxIdempotencyKeyLen)
	}
	if r.ContentLength > h.MaxSize {
		return h.reject(w, "too_large", http.StatusRequestEntityTooLarge, "message larger than max_size (%s)", humanize.IBytes(uint64(h.MaxSize)))
	}
	body, answered, err := h.readBody(w, r, "message")
	if answered {
		return err
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	if isJSONType(ct) && !json.Valid(body) {
		return h.reject(w, "bad_request", http.StatusBadRequest, "body is not valid JSON but Content-Type is %s", ct)
	}

	msg, dup, woken, err := h.deliver(r.Context(), channel, store.Message{Type: ct, Data: body}, key)
	if err != nil {
		return h.storeFailed(w, err)
	}
	if dup {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"id": msg.ID, "channel": msg.Channel, "time": msg.Time.UTC().Format(time.RFC3339Nano), "subscribers": woken,
	})
}

// readBody reads r's body, at most MaxSize bytes (what names it in the
// refusal). answered is true when it refused the request (413, 400): then
// err is what the handler returns.
func (h *Publish) readBody(w http.ResponseWriter, r *http.Request, what string) (body []byte, answered bool, err error) {
	body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, h.MaxSize))
	switch {
	case err == nil:
		return body, false, nil
	case errors.As(err, new(*http.MaxBytesError)):
		return nil, true, h.reject(w, "too_large", http.StatusRequestEntityTooLarge, "%s larger than max_size (%s)", what, humanize.IBytes(uint64(h.MaxSize)))
	}
	return nil, true, h.reject(w, "bad_request", http.StatusBadRequest, "reading body: %v", err)
}

// deliver stores msg on channel and, unless it is a duplicate (the same
// idempotencyKey), wakes the polls held there: how many it woke.
func (h *Publish) deliver(ctx context.Context, channel string, msg store.Message, idempotencyKey string) (stored store.Message, dup bool, woken int, err error) {
	stored, dup, err = h.shared.store.Append(ctx, channel, msg, idempotencyKey)
	if err != nil {
		return stored, false, 0, fmt.Errorf("publishing to %q: %w", channel, err)
	}
	if !dup {
		woken = h.shared.poller.Wake(channel)
		h.shared.metrics.published.Inc()
	}
	h.logger.Debug("published", zap.String("channel", channel), zap.String("id", stored.ID), zap.String("pub_id", msg.PubID),
		zap.Int("size", len(msg.Data)), zap.Int("woken", woken), zap.Bool("duplicate", dup))
	return stored, dup, woken, nil
}

// isRoot reports whether r names no channel: the endpoint's root, where
// Pushpin's publish format is posted (POST /publish/).
func isRoot(r *http.Request, template string) bool {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	return repl.ReplaceKnown(template, "") == ""
}

// publishItems publishes Pushpin's JSON format, posted to the endpoint's
// root: {"items": [{"channel", "id", "prev-id", "formats": {"http-response":
// {"code", "reason", "headers", "body" | "body-bin"}}}]}, so that GRIP
// client libraries publish here unchanged. Each item with an http-response
// is a message of its channel: its body and Content-Type for native polls,
// its id (PubID) and status and headers (Response) for GRIP holds. Items
// with other formats only (http-stream, ws-message) are accepted and reach
// nobody, as in Pushpin. It answers as Pushpin does ("Published"), but only
// once every item is stored.
func (h *Publish) publishItems(w http.ResponseWriter, r *http.Request, tokenOK bool) error {
	answerType, ok := grip.PublishContentType(r.Header.Values("Accept"))
	if !ok {
		return h.reject(w, "bad_request", http.StatusNotAcceptable, "%s", strings.TrimSpace(grip.NotAcceptableBody))
	}
	body, answered, err := h.readBody(w, r, "publish")
	if answered {
		return err
	}
	items, err := grip.ParsePublish(body)
	if err != nil {
		return h.reject(w, "bad_request", http.StatusBadRequest, `no channel named, and the body is not Pushpin's publish format {"items": [...]}: %v`, err)
	}
	for i, it := range items {
		if err := store.ValidChannel(it.Channel); err != nil {
			return h.reject(w, "bad_request", http.StatusBadRequest, "items[%d]: %v", i, err)
		}
		if h.auth != nil && !tokenOK {
			if sub, err := h.auth.Authorize(r, grant.Publish, it.Channel); err != nil {
				reason, err := refuse(w, err)
				h.shared.metrics.publishesRejected.WithLabelValues(reason).Inc()
				h.logger.Debug("publish endpoint refused a request", zap.String("channel", it.Channel), zap.String("sub", sub), zap.String("reason", reason))
				return err
			}
		}
	}
	for _, it := range items {
		f := it.HTTPResponse
		if f == nil || f.Action != grip.ActionSend {
			continue // no http-response, or a hint: nothing to keep
		}
		msg := store.Message{Type: f.Header.Get("Content-Type"), Data: f.Body, PubID: it.ID, PrevPubID: it.PrevID,
			Response: &store.Response{Code: f.Code, Reason: f.Reason, Header: f.Header}}
		if msg.Type == "" {
			msg.Type = "application/octet-stream"
		}
		if _, _, _, err := h.deliver(r.Context(), it.Channel, msg, ""); err != nil {
			return h.storeFailed(w, err)
		}
	}
	answer := grip.PublishedBody(answerType)
	hdr := w.Header()
	hdr.Set("Content-Type", answerType)
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Content-Length", strconv.Itoa(len(answer)))
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(answer)
	return err
}

// describe answers with channel's cursor, retained messages and held polls.
func (h *Publish) describe(w http.ResponseWriter, r *http.Request, channel string) error {
	info, err := h.shared.store.Info(r.Context(), channel)
	if err != nil {
		return h.storeFailed(w, fmt.Errorf("describing %q: %w", channel, err))
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"channel": info.Channel, "cursor": info.Cursor,
		"messages": info.Messages, "subscribers": h.shared.poller.Waiting(channel),
	})
}

// delete drops channel; its held polls are answered 410.
func (h *Publish) delete(w http.ResponseWriter, r *http.Request, channel string) error {
	had, err := h.shared.store.Delete(r.Context(), channel)
	if err != nil {
		return h.storeFailed(w, fmt.Errorf("deleting %q: %w", channel, err))
	}
	n := h.shared.poller.Gone(channel)
	h.logger.Debug("channel deleted", zap.String("channel", channel), zap.Int("held_polls", n))
	return writeJSON(w, http.StatusOK, map[string]any{"channel": channel, "deleted": had, "subscribers": n})
}

// reject answers a refused request with the contract's JSON error.
func (h *Publish) reject(w http.ResponseWriter, reason string, status int, format string, args ...any) error {
	h.shared.metrics.publishesRejected.WithLabelValues(reason).Inc()
	h.logger.Debug("publish endpoint refused a request", zap.String("reason", reason), zap.Int("status", status))
	return writeError(w, status, format, args...)
}

// storeFailed returns a store failure to Caddy's error handling.
func (h *Publish) storeFailed(w http.ResponseWriter, err error) error {
	h.shared.metrics.publishesRejected.WithLabelValues("store").Inc()
	return storeFailure(w.Header(), err)
}

// authorized reports whether the request carries the bearer token.
func (h *Publish) authorized(r *http.Request) bool {
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer") &&
		subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(h.token)) == 1
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Publish)(nil)
	_ caddy.Validator             = (*Publish)(nil)
	_ caddyhttp.MiddlewareHandler = (*Publish)(nil)
)
