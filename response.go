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
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-longpoll/longpoll/poller"
	"github.com/caddy-longpoll/longpoll/store"
)

// The wire format: how a poll's cursor is read from the request, and how
// every answer (messages, 304, 410, errors) is written. Nothing here holds
// or waits; every function is a pure encoder or decoder.

// Format is how a poll's messages are answered.
type Format string

const (
	// FormatJSON answers every message after the cursor in one JSON
	// document (the default).
	FormatJSON Format = "json"
	// FormatRaw answers the oldest unseen message's body, with its own
	// Content-Type: one message per answer.
	FormatRaw Format = "raw"
)

// check reports why f is not a format, or nil.
func (f Format) check() error {
	if f != FormatJSON && f != FormatRaw {
		return fmt.Errorf("format must be json or raw, got %q", string(f))
	}
	return nil
}

// encodingSuffixes are what Caddy's encode handler appends to a strong ETag
// ("-" and the encoding). It strips them from If-None-Match only when the
// next request picks the same encoding, so a cursor may come back with one
// (in If-None-Match, or copied from the ETag into the query). A cursor of
// the store may end in the same letters (the memory store's are base 36),
// so the suffix cannot be cut off when the cursor is read: the await tries
// the cursor without it when the store cannot place it (withoutEncoding).
var encodingSuffixes = []string{"-gzip", "-zstd", "-br"}

// withoutEncoding returns c without the suffix an encoding appended to it,
// and whether it had one.
func withoutEncoding(c string) (string, bool) {
	for _, sfx := range encodingSuffixes {
		if len(c) > len(sfx) && strings.HasSuffix(c, sfx) {
			return c[:len(c)-len(sfx)], true
		}
	}
	return c, false
}

// channelOf expands a channel template (placeholders such as
// {http.request.uri.query.room}) with the request's replacer and checks the
// result: a known placeholder with no value (a missing query parameter)
// becomes "", so a template naming only that is refused. A placeholder the
// request does not know (a typo, or {http.auth.user.id} on a request no
// authentication handler saw) is a templateError: kept as written, it would
// put every poll of the route on one channel.
func channelOf(r *http.Request, template string) (string, error) {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	channel, err := repl.ReplaceOrErr(template, false, true)
	if err != nil {
		return "", templateError{fmt.Errorf("the route's channel template %q: %v", template, err)}
	}
	if err := store.ValidChannel(channel); err != nil {
		return "", err
	}
	return channel, nil
}

// templateError is a channel template that cannot be expanded for a
// request: the configuration's fault, answered 500 through Caddy (which
// logs it), not the client's.
type templateError struct{ err error }

func (e templateError) Error() string { return e.err.Error() }
func (e templateError) Unwrap() error { return e.err }

// channelFailure is the error a handler returns when channelOf failed
// with a templateError (ok), or ok false for a bad channel name (the
// client's: 400).
func channelFailure(err error) (caddyhttp.HandlerError, bool) {
	var te templateError
	if !errors.As(err, &te) {
		return caddyhttp.HandlerError{}, false
	}
	return caddyhttp.Error(http.StatusInternalServerError, te), true
}

// cursorOf finds a poll's cursor: the query parameter param, else
// If-None-Match, else Last-Event-ID. No cursor at all is "", which means
// "from now on".
func cursorOf(r *http.Request, param string) (string, error) {
	var c, from string
	if v := queryParam(r.URL.RawQuery, param); v != "" {
		c, from = v, "query parameter "+param
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

// setCursor sets the headers every poll answer carries: the cursor to send
// next as the ETag, and no caching.
func setCursor(hdr http.Header, cursor string) {
	hdr.Set("ETag", `"`+cursor+`"`)
	hdr.Set("Cache-Control", "no-store")
}

// answerer writes the verdicts of one poll route.
type answerer struct {
	format  Format
	answers *answerCache
	metrics *metrics
}

// respond answers a poll on channel whose await ended with v; cursor is the
// await's cursor (the one its last read used). A store failure is returned
// as a caddyhttp.Error, with nothing written, so that the site's
// handle_errors and Caddy's logs see it; every other answer is written.
func (an answerer) respond(w http.ResponseWriter, channel, cursor string, v verdict) error {
	m := an.metrics
	hdr := w.Header()
	switch v.outcome {
	case answered:
		m.answered.Inc()
		return an.answer(w, channel, cursor, v.result)
	case refused:
		hdr.Set("Retry-After", "1")
		if errors.Is(v.err, poller.ErrTooMany) {
			m.pollsRejected.WithLabelValues("too_many").Inc()
			return writeError(w, http.StatusServiceUnavailable, "too many held polls, retry later")
		}
		m.pollsRejected.WithLabelValues("shutting_down").Inc()
		return writeError(w, http.StatusServiceUnavailable, "shutting down, retry later")
	case failed:
		m.pollsRejected.WithLabelValues("store").Inc()
		return storeFailure(hdr, fmt.Errorf("polling %q: %w", channel, v.err))
	case deleted:
		setCursor(hdr, cursor)
		return writeError(w, http.StatusGone, "channel %q was deleted", channel)
	case notModified:
		if v.timeout {
			m.timeouts.Inc()
		}
		setCursor(hdr, cursor)
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	return nil // gone, or waiting (never passed): nobody to answer
}

// answer writes res, the result of polling channel from cursor: all
// messages in json format, the oldest in raw format.
func (an answerer) answer(w http.ResponseWriter, channel, cursor string, res store.Result) error {
	hdr := w.Header()
	if res.Gap {
		hdr.Set("Longpoll-Gap", "true")
	}
	if an.format == FormatRaw {
		if len(res.Messages) == 0 {
			setCursor(hdr, res.Cursor)
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		msg := res.Messages[0]
		setCursor(hdr, msg.ID)
		hdr.Set("Content-Type", msg.Type)
		hdr.Set("Content-Length", strconv.Itoa(len(msg.Data)))
		w.WriteHeader(http.StatusOK)
		_, err := w.Write(msg.Data)
		return err
	}
	a := an.answers.encode(channel, cursor, res)
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

// writeError answers a request the contract refuses (4xx, and the 503s of
// max_held and shutdown) with {"error": "..."}: one line saying what was
// wrong, which the JavaScript client shows.
func writeError(w http.ResponseWriter, status int, format string, args ...any) error {
	body, _ := json.Marshal(map[string]string{"error": fmt.Sprintf(format, args...)})
	body = append(body, '\n')
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, err := w.Write(body)
	return err
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(status)
	_, err := w.Write(b.Bytes())
	return err
}

// storeFailure is the error for a failed store call, for Caddy's error
// handling: 503 with Retry-After when the store could not be reached
// (nothing was changed; retrying is safe), 500 otherwise.
func storeFailure(hdr http.Header, err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		hdr.Set("Retry-After", "1")
		return caddyhttp.Error(http.StatusServiceUnavailable, err)
	}
	return caddyhttp.Error(http.StatusInternalServerError, err)
}
