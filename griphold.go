package longpoll

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
	"go.uber.org/zap"

	"github.com/caddy-longpoll/longpoll/grip"
	"github.com/caddy-longpoll/longpoll/store"
)

func init() {
	caddy.RegisterModule(Grip{})
	httpcaddyfile.RegisterHandlerDirective("longpoll_grip", parseGrip)
	// Before respond, as the other two: it wraps what comes after it on
	// the route (reverse_proxy to the app).
	httpcaddyfile.RegisterDirectiveOrder("longpoll_grip", httpcaddyfile.Before, "respond")
}

// maxGripRetries bounds how often one request is sent back to the app
// because its hold's prev-id is behind the channel's last id.
const maxGripRetries = 3

// Grip serves GRIP (Pushpin's protocol) in front of the handlers after it,
// usually reverse_proxy to the app: every request goes to the app as usual;
// when the app answers with hold instructions (Grip-Hold: response,
// Grip-Channel, Grip-Timeout, Grip-Status, or the same as a body of type
// application/grip-instruct), Caddy holds the client's request on the
// channel and answers it with what is published there (Pushpin's
// http-response format, merged over the app's response), or at the timeout
// with the app's own response, its Grip-* headers removed. Any other
// response passes through untouched, streamed. Publish with
// longpoll_publish (Pushpin's format, POSTed to its root).
//
// Client-sent Grip-* request headers are removed, never forwarded;
// instructions are only read from the handlers after this one (the app).
type Grip struct {
	// SigKey, if set, signs a Grip-Sig header (a JWT, HS256, "iss":
	// "pushpin", expiring in an hour) on every request to the app, which
	// GRIP libraries verify to trust that the request came through the
	// proxy. Placeholders such as {env.GRIP_KEY} are expanded once at
	// load. A key written "base64:<standard base64>" is those bytes, as
	// in Pushpin's sig_key.
	SigKey string `json:"sig_key,omitempty"`

	// SigIssuer is the Grip-Sig's iss claim. Default "pushpin".
	SigIssuer string `json:"sig_issuer,omitempty"`

	// Park parks held HTTP/1.x requests' connections, as the longpoll
	// handler's Park does (see Poll.Park): far less memory per held
	// request. Default off.
	Park bool `json:"park,omitempty"`

	// MaxBody is the largest GRIP response (one with instructions) read
	// from the app, in bytes; a larger one is answered 502. Responses
	// without instructions are streamed, whatever their size. Default
	// 100000 (Pushpin's).
	MaxBody int64 `json:"max_body,omitempty"`

	sigKey   []byte
	shared   *shared
	answerer answerer
	logger   *zap.Logger
	exiting  chan struct{}
}

// CaddyModule returns the Caddy module information.
func (Grip) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.longpoll_grip",
		New: func() caddy.Module { return new(Grip) },
	}
}

// Provision applies the defaults and joins the app's store.
func (h *Grip) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.SigIssuer == "" {
		h.SigIssuer = grip.DefaultIssuer
	}
	if h.MaxBody == 0 {
		h.MaxBody = grip.MaxInstructBody
	}
	if h.SigKey != "" {
		key := caddy.NewReplacer().ReplaceKnown(h.SigKey, "")
		if key == "" {
			return fmt.Errorf("longpoll_grip: sig_key %q is empty once its placeholders are replaced (is the environment variable set?)", h.SigKey)
		}
		if enc, ok := strings.CutPrefix(key, "base64:"); ok {
			b, err := base64.StdEncoding.DecodeString(enc)
			if err != nil || len(b) == 0 {
				return fmt.Errorf("longpoll_grip: sig_key: after base64: a key in standard base64 is expected: %v", err)
			}
			key = string(b)
		}
		h.sigKey = []byte(key)
	}
	app, err := appOf(ctx)
	if err != nil {
		return err
	}
	h.shared = app.shared
	h.answerer = answerer{format: FormatJSON, answers: app.shared.answers, metrics: app.shared.metrics}
	h.exiting = onExit(ctx, h.shared.parked)
	return nil
}

// Validate checks the configuration.
func (h *Grip) Validate() error {
	if h.MaxBody < 0 {
		return fmt.Errorf("longpoll_grip: max_body must be more than 0, got %d", h.MaxBody)
	}
	return nil
}

// ServeHTTP passes the request to next (the app) and obeys the GRIP
// instructions in its answer.
func (h *Grip) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	grip.StripRequestHeaders(r.Header)
	for try := 0; ; try++ {
		in, err := h.askApp(w, r, next)
		if in == nil || err != nil {
			return err // passed through, or failed
		}
		if in.Hold != grip.ResponseHold {
			if in.Hold != grip.NoHold {
				return caddyhttp.Error(http.StatusBadGateway, fmt.Errorf("GRIP: the app asked for a %v hold; longpoll_grip holds responses only", in.Hold))
			}
			return writeGripResponse(w, in.Response)
		}
		chans := in.Channels
		switch {
		case len(chans) == 0:
			return caddyhttp.Error(http.StatusBadGateway, errors.New("GRIP: the app asked for a hold on no channel"))
		case len(chans) > grip.MaxChannelsPerHold:
			return caddyhttp.Error(http.StatusBadGateway, fmt.Errorf("GRIP: the app asked to hold on %d channels; longpoll_grip holds on at most %d (Pushpin drops the rest)", len(chans), grip.MaxChannelsPerHold))
		}
		a := await{poller: h.shared.poller, store: h.shared.store, subs: make([]sub, len(chans))}
		behind := false
		for i, ch := range chans {
			if err := store.ValidChannel(ch.Name); err != nil {
				return caddyhttp.Error(http.StatusBadGateway, fmt.Errorf("GRIP: Grip-Channel: %v", err))
			}
			info, err := h.shared.store.Info(r.Context(), ch.Name)
			if err != nil {
				return storeFailure(w.Header(), fmt.Errorf("holding on %q: %w", ch.Name, err))
			}
			a.subs[i] = sub{channel: ch.Name, cursor: info.Cursor}
			if ch.PrevID != "" && info.LastPubID != "" && info.LastPubID != ch.PrevID {
				behind = true
				h.logger.Debug("GRIP hold behind the channel: asking the app again",
					zap.String("channel", ch.Name), zap.String("prev_id", ch.PrevID), zap.String("last_id", info.LastPubID))
			}
		}
		// The app answered from what it knew (prev-id); something newer
		// was published since: it answers again, told where the client is.
		// Once only, as Pushpin forgets the last id then: the app may have
		// saved an item it has not published yet; the check on delivery
		// (stale) keeps that hold right.
		if behind && try == 0 && bodiless(r) {
			setGripLast(r, chans)
			continue
		}
		if h.Park && r.ProtoMajor == 1 {
			p := parker{shared: h.shared, logger: h.logger, respond: func(w http.ResponseWriter, _ *await, v verdict) error {
				return h.answer(w, chans, in.Response, v)
			}}
			if handled, err := p.servePark(w, r, a, in.Timeout); handled {
				return err
			}
		}
		v := a.wait(r.Context(), in.Timeout, h.exiting)
		// The next message does not follow what the app gave the client
		// (its prev-id is another), or a gap (more was published meanwhile
		// than the store keeps): the app says what the client missed.
		if v.outcome == answered && try < maxGripRetries && bodiless(r) {
			if ch := chans[v.sub]; stale(ch, v.result) || v.result.Gap && ch.PrevID != "" {
				setGripLast(r, chans)
				continue
			}
		}
		return h.answer(w, chans, in.Response, v)
	}
}

// setGripLast tells the app, on a request sent back to it, the prev-id of
// each of the hold's channels that had one (Grip-Last), as Pushpin does.
func setGripLast(r *http.Request, chans []grip.Channel) {
	r.Header.Del(grip.LastHeaderName)
	for _, ch := range chans {
		if ch.PrevID != "" {
			r.Header.Add(grip.LastHeaderName, grip.LastHeader(ch.Name, ch.PrevID))
		}
	}
}

// askApp runs next with the answer buffered when it carries GRIP
// instructions: those are returned; any other answer has been streamed to
// the client (nil instructions).
func (h *Grip) askApp(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (*grip.Instruct, error) {
	if h.sigKey != nil {
		sig, err := grip.SignIssuer(h.SigIssuer, h.sigKey, time.Now())
		if err != nil {
			return nil, err
		}
		r.Header.Set(grip.SigHeader, sig)
	}
	before := w.Header().Clone() // what Caddy and earlier handlers set
	buf := new(bytes.Buffer)
	rec := caddyhttp.NewResponseRecorder(w, buf, func(_ int, hdr http.Header) bool { return grip.IsInstruct(hdr) })
	if err := next.ServeHTTP(rec, r); err != nil {
		return nil, err
	}
	if !rec.Buffered() {
		return nil, nil
	}
	if int64(buf.Len()) > h.MaxBody {
		return nil, caddyhttp.Error(http.StatusBadGateway, fmt.Errorf("GRIP: the app's response with instructions is %d bytes, over max_body (%s)", buf.Len(), humanize.IBytes(uint64(h.MaxBody))))
	}
	in, err := grip.ParseResponse(rec.Status(), rec.Header(), buf.Bytes())
	if err != nil {
		return nil, caddyhttp.Error(http.StatusBadGateway, fmt.Errorf("GRIP: malformed instructions from the app: %w", err))
	}
	// The app's headers went into w's: the answer is in.Response, with
	// only what it keeps, over what was there before.
	clear(w.Header())
	maps.Copy(w.Header(), before)
	return in, nil
}

// bodiless reports whether r can be sent to the app again.
func bodiless(r *http.Request) bool {
	return r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0
}

// answer answers a hold on chans that ended with v.
func (h *Grip) answer(w http.ResponseWriter, chans []grip.Channel, held grip.Response, v verdict) error {
	m := h.shared.metrics
	switch v.outcome {
	case answered:
		ch := chans[v.sub]
		// A gap (more was published since the hold began than the store
		// keeps: the retained messages are not the next one), or a message
		// that does not follow what the app gave the client (and the app
		// was asked again as often as it may be, or the request was
		// parked): the app's own answer, as at the timeout; the client's
		// next poll goes to the app, which gives it what it missed.
		if len(v.result.Messages) == 0 || v.result.Gap || stale(ch, v.result) {
			return writeGripResponse(w, held)
		}
		m.answered.Inc()
		return writeGripResponse(w, publishedFormat(v.result.Messages[0]).MergeOver(held))
	case notModified:
		if v.timeout {
			m.timeouts.Inc()
		}
		return writeGripResponse(w, held)
	case deleted:
		return writeGripResponse(w, held)
	case gone:
		return nil
	}
	// refused or failed: as a native poll is answered
	return h.answerer.respond(w, chans[0].Name, "", v)
}

// stale reports whether the first message of res does not follow the hold's
// prev-id: its own prev-id is another one, or it has none (published
// without one, or natively). Pushpin then sends the request back to the
// app instead of delivering the message; a hold without prev-id takes any.
func stale(ch grip.Channel, res store.Result) bool {
	if ch.PrevID == "" || len(res.Messages) == 0 {
		return false
	}
	return res.Messages[0].PrevPubID != ch.PrevID
}

// publishedFormat is the http-response a message answers a GRIP hold with:
// the one it was published with (a Content-Type only if it named one), or
// for a message published natively, its body and Content-Type.
func publishedFormat(msg store.Message) *grip.HTTPResponse {
	f := &grip.HTTPResponse{Code: http.StatusOK, Header: http.Header{}, Body: msg.Data}
	if r := msg.Response; r != nil {
		if r.Code != 0 {
			f.Code = r.Code
		}
		f.Reason = r.Reason
		for k, vs := range r.Header {
			f.Header[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
		}
	}
	if msg.Response == nil && msg.Type != "" {
		f.Header.Set("Content-Type", msg.Type)
	}
	return f
}

// writeGripResponse writes an answer made from GRIP (the app's held
// response, or a published one merged over it).
func writeGripResponse(w http.ResponseWriter, resp grip.Response) error {
	hdr := w.Header()
	for k, vs := range resp.Header {
		hdr[k] = vs
	}
	hdr.Set("Content-Length", strconv.Itoa(len(resp.Body)))
	code := resp.Code
	if code < 200 || code > 999 {
		code = http.StatusOK
	}
	w.WriteHeader(code)
	_, err := w.Write(resp.Body)
	if errors.Is(err, http.ErrBodyNotAllowed) {
		err = nil // HEAD, 204, 304
	}
	return err
}

// parseGrip parses the directive:
//
//	longpoll_grip [<matcher>] {
//		sig_key    <key>      # sign a Grip-Sig on requests to the app
//		sig_issuer <iss>      # its iss claim (default pushpin)
//		max_body   <size>     # largest response with instructions (default 100000 bytes)
//		park                  # HTTP/1.x: park held requests' connections (see Grip.Park)
//	}
func parseGrip(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	g := new(Grip)
	h.Next() // "longpoll_grip"
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	for h.NextBlock(0) {
		switch h.Val() {
		case "sig_key":
			if !h.AllArgs(&g.SigKey) {
				return nil, h.ArgErr()
			}
		case "sig_issuer":
			if !h.AllArgs(&g.SigIssuer) {
				return nil, h.ArgErr()
			}
		case "park":
			if h.NextArg() {
				return nil, h.ArgErr()
			}
			g.Park = true
		case "max_body":
			var s string
			if !h.AllArgs(&s) {
				return nil, h.ArgErr()
			}
			size, err := humanize.ParseBytes(s)
			if err != nil || size == 0 || size > 1<<30 {
				return nil, h.Errf("max_body must be a size such as 100kB or 1MiB, got %q", s)
			}
			g.MaxBody = int64(size)
		default:
			return nil, h.Errf("unrecognized longpoll_grip option %q", h.Val())
		}
	}
	return g, nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Grip)(nil)
	_ caddy.Validator             = (*Grip)(nil)
	_ caddyhttp.MiddlewareHandler = (*Grip)(nil)
)
