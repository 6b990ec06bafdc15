// Package grip reads and writes GRIP, the Generic Realtime Intermediary
// Protocol, the way Pushpin speaks it: the hold instructions an app puts on
// its response, the publish format, Grip-Sig and Grip-Last. It knows nothing
// of Caddy, stores or held polls: the GRIP handler turns bytes into these
// types with it and decides what to do with them.
//
// docs/grip.md says which Pushpin behaviour each rule copies, with
// references into Pushpin's source.
package grip

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Hold modes. Pushpin's Instruct::HoldMode.
type HoldMode uint8

const (
	// NoHold: answer the client now with Instruct.Response.
	NoHold HoldMode = iota
	// ResponseHold: hold the request (long-poll); answer it with the first
	// http-response published on one of its channels, or with
	// Instruct.Response at the timeout.
	ResponseHold
	// StreamHold: send Instruct.Response's head and body now and keep the
	// response open, appending http-stream publishes. Parsed, for a clear
	// refusal; this package has nothing else for streams.
	StreamHold
)

func (m HoldMode) String() string {
	switch m {
	case ResponseHold:
		return "response"
	case StreamHold:
		return "stream"
	}
	return "none"
}

// KeepAliveMode says when a stream hold's keep-alive data is sent.
type KeepAliveMode uint8

const (
	// KeepAliveIdle: after Timeout without anything sent.
	KeepAliveIdle KeepAliveMode = iota
	// KeepAliveInterval: every Timeout, whatever was sent.
	KeepAliveInterval
)

// Limits and defaults, Pushpin's (handler/instruct.cpp, filter.h,
// proxy/proxysession.cpp).
const (
	// DefaultTimeout is a response hold's timeout without Grip-Timeout.
	DefaultTimeout = 55 * time.Second
	// MinTimeout is the shortest hold: a smaller Grip-Timeout (0 included)
	// is raised to it.
	MinTimeout = 5 * time.Second
	// DefaultKeepAliveTimeout is Grip-Keep-Alive's timeout when it has none.
	DefaultKeepAliveTimeout = 55 * time.Second
	// DefaultNextLinkTimeout is Grip-Link rel=next's timeout when it has none.
	DefaultNextLinkTimeout = 120 * time.Second
	// MaxFilters is the most filters one Grip-Channel may carry.
	MaxFilters = 5
	// MaxInstructBody is the largest body of a GRIP response Pushpin
	// buffers to read its instructions; past it, Pushpin answers 502.
	MaxInstructBody = 100000
	// MaxChannelsPerHold is how many of a hold's channels Pushpin
	// subscribes (connection_subscription_max); it drops the rest without a
	// word. ParseResponse keeps them all: the caller applies the limit.
	MaxChannelsPerHold = 20
)

// InstructContentType is the content type of a response whose JSON body
// carries the instructions.
const InstructContentType = "application/grip-instruct"

// Channel is one channel a hold subscribes to.
type Channel struct {
	Name string
	// PrevID is the id of the last message the app has given this client
	// (prev-id). When set, a publish is only delivered if its own prev-id
	// equals it; otherwise the request goes back to the app (see
	// docs/grip.md). Empty means unset: Pushpin tells an empty prev-id from
	// an absent one, we do not.
	PrevID string
	// Filters are the filter parameters (skip-self, build-id, …), parsed and
	// kept, not applied.
	Filters []string
}

// KeepAlive is what a stream hold sends while idle (Grip-Keep-Alive).
// Pushpin only uses it for stream holds; a response hold ignores it.
type KeepAlive struct {
	Mode    KeepAliveMode
	Data    []byte
	Timeout time.Duration // at least a second
}

// Response is an HTTP answer: the one the app gave with its instructions, or
// the one a publish makes.
type Response struct {
	Code   int
	Reason string // net/http cannot send it; kept for completeness
	Header http.Header
	Body   []byte
}

// Instruct is what a GRIP response tells the proxy to do, Pushpin's
// Instruct.
type Instruct struct {
	Hold     HoldMode
	Channels []Channel
	// Timeout of a response hold: Grip-Timeout or hold.timeout, else
	// DefaultTimeout, never below MinTimeout.
	Timeout time.Duration
	// KeepAlive is nil without Grip-Keep-Alive (or hold.keep-alive).
	KeepAlive *KeepAlive
	// ExposeHeaders is Grip-Expose-Headers: when set, only these headers of
	// the app's response are kept in Response.
	ExposeHeaders []string
	// Meta is Grip-Set-Meta (or hold.meta), for filters.
	Meta map[string]string
	// NextLink (Grip-Link rel=next, resolved by the caller against the
	// request URL) and its timeout; GoneLink (rel=gone). Pushpin uses them for
	// streams.
	NextLink        string
	NextLinkTimeout time.Duration
	GoneLink        string
	// Response is the answer to send now (NoHold), at the timeout
	// (ResponseHold), or first (StreamHold): the app's response with its
	// Grip-* headers, the hop-by-hop headers and Content-Length removed
	// (Grip-Status applied), or the 'response' of application/grip-instruct.
	Response Response
}

// IsInstruct reports whether an app's response is for the GRIP handler to
// read, as Pushpin's proxy decides (proxy/proxysession.cpp): any header
// starting with Grip- or the content type application/grip-instruct.
// Anything else is passed to the client untouched.
func IsInstruct(h http.Header) bool {
	for k := range h {
		if hasGripPrefix(k) {
			return true
		}
	}
	return mediaType(h.Get("Content-Type")) == InstructContentType
}

// ParseResponse reads the instructions of an app's response: its status
// code, headers and (whole) body. It returns nil, nil when the response is
// not a GRIP response (IsInstruct is false): send it as it is. Otherwise the
// Instruct says whether to hold and what to answer; a NoHold Instruct's
// Response is what to send now (Grip-* headers removed, or the 'response'
// of an application/grip-instruct body). An error means malformed
// instructions: Pushpin answers the client 502 "Error while proxying to
// origin." and logs the reason, which is the error's text. The Instruct may
// share body's bytes; header is not changed.
func ParseResponse(code int, header http.Header, body []byte) (*Instruct, error) {
	if !IsInstruct(header) {
		return nil, nil
	}
	in := &Instruct{Timeout: -1}

	if vs := header.Values("Grip-Hold"); len(vs) > 0 {
		switch vs[0] {
		case "response":
			in.Hold = ResponseHold
		case "stream":
			in.Hold = StreamHold
		default:
			return nil, fmt.Errorf("Grip-Hold must be set to either 'response' or 'stream'")
		}
	}

	for _, ps := range listParams(header.Values("Grip-Channel"), true) {
		c := Channel{Name: ps[0].name}
		c.PrevID, _ = ps.get("prev-id")
		for _, p := range ps[1:] {
			if p.name == "filter" { // case-sensitive, as Pushpin
				c.Filters = append(c.Filters, p.value)
			}
		}
		if len(c.Filters) > MaxFilters {
			return nil, fmt.Errorf("too many filters for channel '%s'", c.Name)
		}
		if err := checkChannelName(c.Name); err != nil {
			return nil, fmt.Errorf("Grip-Channel: %w", err)
		}
		in.Channels = append(in.Channels, c)
	}

	if vs := header.Values("Grip-Timeout"); len(vs) > 0 {
		t, err := strconv.ParseInt(trimOWS(vs[0]), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("failed to parse Grip-Timeout")
		}
		if t < 0 {
			return nil, fmt.Errorf("Grip-Timeout has invalid value")
		}
		in.Timeout = time.Duration(t) * time.Second
	}

	for _, v := range header.Values("Grip-Expose-Headers") {
		in.ExposeHeaders = append(in.ExposeHeaders, splitList(v)...)
	}

	if ka, err := parseKeepAliveHeader(header); err != nil {
		return nil, err
	} else if ka != nil {
		in.KeepAlive = ka
	}

	for _, ps := range listParams(header.Values("Grip-Set-Meta"), false) {
		if len(ps) == 0 {
			return nil, fmt.Errorf("Grip-Set-Meta cannot be empty")
		}
		if in.Meta == nil {
			in.Meta = map[string]string{}
		}
		in.Meta[ps[0].name] = ps[0].value
	}

	resp := Response{Code: code}
	if status := header.Get("Grip-Status"); status != "" {
		codeStr, reason, _ := strings.Cut(status, " ")
		c, err := strconv.ParseInt(trimOWS(codeStr), 10, 32)
		if err != nil || c < 0 || c > 999 {
			return nil, fmt.Errorf("Grip-Status contains invalid status code")
		}
		if err := checkCode(int(c)); err != nil {
			return nil, fmt.Errorf("Grip-Status: %w", err)
		}
		resp.Code, resp.Reason = int(c), reason
	}

	if err := parseLinks(header, in); err != nil {
		return nil, err
	}

	resp.Header = header.Clone()
	StripResponseHeaders(resp.Header)
	if len(in.ExposeHeaders) > 0 {
		for k := range resp.Header {
			if !containsFold(in.ExposeHeaders, k) {
				delete(resp.Header, k)
			}
		}
	}
	resp.Body = body

	if mediaType(header.Get("Content-Type")) == InstructContentType {
		if code != http.StatusOK {
			return nil, fmt.Errorf("response code for application/grip-instruct content must be 200")
		}
		if err := parseInstructBody(body, in, &resp); err != nil {
			return nil, err
		}
	}

	if resp.Reason == "" {
		resp.Reason = reasonFor(resp.Code)
	}
	if err := checkCode(resp.Code); err != nil {
		return nil, err
	}
	in.Channels = dedupChannels(in.Channels)
	if in.Timeout < 0 {
		in.Timeout = DefaultTimeout
	}
	in.Timeout = max(in.Timeout, MinTimeout)
	if in.KeepAlive != nil && in.KeepAlive.Timeout < time.Second {
		in.KeepAlive.Timeout = time.Second
	}
	in.Response = resp
	return in, nil
}

// parseInstructBody reads an application/grip-instruct body: 'hold' sets
// the instructions (over any from headers) and 'response' replaces the
// app's response; the app's headers and body are dropped even when there is
// no 'response'. Its code stays the app's 200 (or Grip-Status) unless
// response.code says otherwise.
func parseInstructBody(body []byte, in *Instruct, resp *Response) error {
	doc, err := decodeJSON(body)
	if err != nil {
		return fmt.Errorf("failed to parse application/grip-instruct content as JSON: %v", err)
	}
	m, ok := doc.(object)
	if !ok {
		return fmt.Errorf("instruct must be an object")
	}

	if v, ok := lookup(m, "hold"); ok {
		hold, isObject := v.(object)
		if !isObject {
			return fmt.Errorf("instruct contains 'hold' with wrong type")
		}
		if err := parseHoldObject(hold, in); err != nil {
			return err
		}
	}

	resp.Header = http.Header{}
	resp.Body = nil

	v, ok := lookup(m, "response")
	if !ok {
		return nil
	}
	r, isObject := v.(object)
	if !isObject {
		// Pushpin fails here without a message.
		return fmt.Errorf("instruct contains 'response' with wrong type")
	}
	const pn = "response"
	if c, ok, err := getInt(r, pn, "code"); err != nil {
		return err
	} else if ok {
		if c < 0 || c > 999 {
			return fmt.Errorf("%s contains 'code' with invalid value", pn)
		}
		resp.Code, resp.Reason = c, ""
	}
	if reason, _, err := getString(r, pn, "reason", false); err != nil {
		return err
	} else if reason != "" {
		resp.Reason = reason
	}
	h, err := readHeaders(r, pn)
	if err != nil {
		return err
	}
	if h != nil {
		resp.Header = h
	}
	resp.Body, err = readBody(r, pn)
	return err
}

// readBody reads body-bin (base64, first) or body (text).
func readBody(r object, pn string) ([]byte, error) {
	if s, ok, err := getString(r, pn, "body-bin", false); err != nil {
		return nil, err
	} else if ok {
		return decodeBase64(pn, "body-bin", s)
	}
	if s, ok, err := getString(r, pn, "body", false); err != nil {
		return nil, err
	} else if ok {
		return []byte(s), nil
	}
	return nil, nil
}

func parseHoldObject(hold object, in *Instruct) error {
	const pn = "hold"
	mode, ok, err := getString(hold, pn, "mode", false)
	if err != nil {
		return err
	}
	switch {
	case !ok || mode == "response":
		in.Hold = ResponseHold
	case mode == "stream":
		in.Hold = StreamHold
	default:
		return fmt.Errorf("hold 'mode' must be set to either 'response' or 'stream'")
	}

	channels, _, err := getList(hold, pn, "channels", true)
	if err != nil {
		return err
	}
	for _, vc := range channels {
		const cpn = "channel"
		co, isObject := vc.(object)
		if !isObject {
			return fmt.Errorf("channel is not an object")
		}
		var c Channel
		if c.Name, _, err = getString(co, cpn, "name", true); err != nil {
			return err
		}
		if err := checkChannelName(c.Name); err != nil {
			return err
		}
		if c.PrevID, _, err = getString(co, cpn, "prev-id", false); err != nil {
			return err
		}
		filters, _, err := getList(co, cpn, "filters", false)
		if err != nil {
			return err
		}
		for _, f := range filters {
			s, isString := f.(string)
			if !isString {
				return fmt.Errorf("filters contains value with wrong type")
			}
			c.Filters = append(c.Filters, s)
		}
		in.Channels = append(in.Channels, c)
	}

	if t, ok, err := getInt(hold, pn, "timeout"); err != nil {
		return err
	} else if ok {
		if t < 0 {
			return fmt.Errorf("%s contains 'timeout' with invalid value", pn)
		}
		in.Timeout = time.Duration(t) * time.Second
	}

	ka, ok, err := getObject(hold, pn, "keep-alive")
	if err != nil {
		return err
	}
	if ok {
		const kpn = "keep-alive"
		// Pushpin sets no mode from JSON: the keep-alive keeps whatever mode
		// Grip-Keep-Alive gave, else none (its timer then runs as an interval).
		k := KeepAlive{Mode: KeepAliveInterval, Timeout: DefaultKeepAliveTimeout}
		if in.KeepAlive != nil {
			k.Mode = in.KeepAlive.Mode
			k.Data = in.KeepAlive.Data
		}
		if s, ok, err := getString(ka, kpn, "content-bin", false); err != nil {
			return err
		} else if ok {
			if k.Data, err = decodeBase64(kpn, "content-bin", s); err != nil {
				return err
			}
		} else if s, ok, err := getString(ka, kpn, "content", false); err != nil {
			return err
		} else if ok {
			k.Data = []byte(s)
		}
		if t, ok, err := getInt(ka, kpn, "timeout"); err != nil {
			return err
		} else if ok {
			if t < 0 {
				return fmt.Errorf("%s contains 'timeout' with invalid value", kpn)
			}
			k.Timeout = time.Duration(t) * time.Second
		}
		in.KeepAlive = &k
	}

	meta, ok, err := getObject(hold, pn, "meta")
	if err != nil {
		return err
	}
	if ok {
		m, err := stringMap(meta)
		if err != nil {
			return err
		}
		if in.Meta == nil {
			in.Meta = map[string]string{}
		}
		for k, v := range m {
			in.Meta[k] = v
		}
	}
	return nil
}

// parseKeepAliveHeader reads Grip-Keep-Alive: "<data>; format=raw|cstring|
// base64; timeout=<s>; mode=idle|interval". Only its first value counts and
// it is not split at commas (the data may hold some).
func parseKeepAliveHeader(h http.Header) (*KeepAlive, error) {
	v := h.Get("Grip-Keep-Alive")
	if v == "" {
		return nil, nil
	}
	ps, ok := parseParams(v, true)
	if !ok {
		return nil, nil // Pushpin ignores an unparsable Grip-Keep-Alive
	}
	val := ps[0].name
	if val == "" {
		return nil, fmt.Errorf("Grip-Keep-Alive cannot be empty")
	}
	ka := &KeepAlive{Timeout: DefaultKeepAliveTimeout}
	switch mode, _ := ps.get("mode"); mode {
	case "", "idle":
		ka.Mode = KeepAliveIdle
	case "interval":
		ka.Mode = KeepAliveInterval
	default:
		return nil, fmt.Errorf("no such Grip-Keep-Alive mode '%s'", mode)
	}
	if ps.has("timeout") {
		s, _ := ps.get("timeout")
		t, err := strconv.ParseInt(trimOWS(s), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("failed to parse Grip-Keep-Alive timeout value")
		}
		if t < 0 {
			return nil, fmt.Errorf("Grip-Keep-Alive timeout has invalid value")
		}
		ka.Timeout = time.Duration(t) * time.Second
	}
	switch format, _ := ps.get("format"); format {
	case "", "raw":
		ka.Data = []byte(val)
	case "cstring":
		d, ok := unescapeCString(val)
		if !ok {
			return nil, fmt.Errorf("failed to parse Grip-Keep-Alive cstring format")
		}
		ka.Data = d
	case "base64":
		d, err := decodeBase64("Grip-Keep-Alive", "base64", val)
		if err != nil {
			return nil, err
		}
		ka.Data = d
	default:
		return nil, fmt.Errorf("no such Grip-Keep-Alive format '%s'", format)
	}
	return ka, nil
}

// unescapeCString undoes the cstring format: \\, \r, \n and \xHH; any other
// escaped character is dropped with its backslash, as Pushpin's unescape
// does. It fails on a trailing backslash, a bad \x, or an empty result.
func unescapeCString(in string) ([]byte, bool) {
	var out []byte
	for n := 0; n < len(in); n++ {
		if in[n] != '\\' {
			out = append(out, in[n])
			continue
		}
		if n+1 >= len(in) {
			return nil, false
		}
		n++
		switch in[n] {
		case '\\':
			out = append(out, '\\')
		case 'r':
			out = append(out, '\r')
		case 'n':
			out = append(out, '\n')
		case 'x':
			if n+2 >= len(in) {
				return nil, false
			}
			x, err := strconv.ParseUint(in[n+1:n+3], 16, 8)
			if err != nil {
				return nil, false
			}
			out = append(out, byte(x))
			n += 2
		}
	}
	return out, out != nil
}

// parseLinks reads Grip-Link: "<uri>; rel=next; timeout=<s>" and
// "<uri>; rel=gone". A value with no parameter is skipped, as Pushpin skips it.
func parseLinks(h http.Header, in *Instruct) error {
	for _, ps := range listParams(h.Values("Grip-Link"), true) {
		if len(ps) < 2 {
			continue
		}
		l := ps[0].name
		if len(l) <= 2 || l[0] != '<' || l[len(l)-1] != '>' {
			return fmt.Errorf("failed to parse Grip-Link value")
		}
		link := l[1 : len(l)-1]
		if _, err := url.Parse(link); err != nil {
			return fmt.Errorf("Grip-Link contains invalid link")
		}
		switch rel, _ := ps.get("rel"); rel {
		case "next":
			in.NextLink, in.NextLinkTimeout = link, DefaultNextLinkTimeout
			if ps.has("timeout") {
				s, _ := ps.get("timeout")
				t, err := strconv.ParseInt(trimOWS(s), 10, 32)
				if err != nil {
					return fmt.Errorf("failed to parse Grip-Link timeout value")
				}
				if t < 0 {
					return fmt.Errorf("Grip-Link timeout has invalid value")
				}
				in.NextLinkTimeout = time.Duration(t) * time.Second
			}
		case "gone":
			in.GoneLink = link
		}
	}
	return nil
}

// hopHeaders are the app response's headers Pushpin does not relay
// (handler/handlerengine.cpp, afterSessionCalls): their meaning is the
// proxy hop's. Content-Length goes too: the body sent may differ.
var hopHeaders = []string{"Connection", "Keep-Alive", "Content-Encoding", "Transfer-Encoding", "Content-Length"}

// StripResponseHeaders removes from an app's response what must not reach
// the client: every Grip-* header and the hop-by-hop headers Pushpin drops
// (Connection, Keep-Alive, Content-Encoding, Transfer-Encoding), and
// Content-Length. Content-Encoding is dropped because the request went to
// the app without Accept-Encoding (StripRequestHeaders), so the body is
// plain: Go's transport decoded any gzip it asked for itself.
func StripResponseHeaders(h http.Header) {
	for k := range h {
		if hasGripPrefix(k) {
			delete(h, k)
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// StripRequestHeaders prepares a client's request for the app, as Pushpin's
// proxy does for a client it does not trust (proxy/proxyutil.cpp): it
// removes every Grip-* header the client sent (Grip-Sig, Grip-Last,
// Grip-Feature, …: only the proxy may say those) and Accept-Encoding, so the
// app's GRIP body arrives uncompressed. The caller then adds Grip-Sig (Sign)
// and any Grip-Last (LastHeader).
func StripRequestHeaders(h http.Header) {
	for k := range h {
		if hasGripPrefix(k) {
			delete(h, k)
		}
	}
	h.Del("Accept-Encoding")
}

func hasGripPrefix(k string) bool {
	return len(k) >= 5 && strings.EqualFold(k[:5], "Grip-")
}

// mediaType is a Content-Type's value before ';', trimmed. Compared
// case-sensitively, as Pushpin compares it.
func mediaType(ct string) string {
	t, _, _ := strings.Cut(ct, ";")
	return trimOWS(t)
}

func containsFold(list []string, s string) bool {
	for _, e := range list {
		if strings.EqualFold(e, s) {
			return true
		}
	}
	return false
}

// dedupChannels keeps one entry per channel name, where it first appears,
// with the prev-id and filters of its last appearance: Pushpin subscribes a
// name once and lets a later entry update its properties
// (handler/httpsession.cpp, prepareToSendQueueOrHold).
func dedupChannels(cs []Channel) []Channel {
	if len(cs) < 2 {
		return cs
	}
	at := make(map[string]int, len(cs))
	out := cs[:0:0]
	for _, c := range cs {
		if i, ok := at[c.Name]; ok {
			out[i].PrevID, out[i].Filters = c.PrevID, c.Filters
			continue
		}
		at[c.Name] = len(out)
		out = append(out, c)
	}
	return out
}

// checkChannelName refuses an empty channel name, which Pushpin would hold
// on (Grip-Channel "a,,b" has one) and we cannot store.
func checkChannelName(name string) error {
	if name == "" {
		return fmt.Errorf("empty channel name")
	}
	return nil
}

// checkCode refuses a status code net/http cannot send as a final status.
// Pushpin accepts 0–999; net/http panics below 100 and takes 1xx for an
// informational response, so we take 200–999.
func checkCode(code int) error {
	if code < 200 || code > 999 {
		return fmt.Errorf("status code %d cannot be sent (200-999)", code)
	}
	return nil
}

// reasonFor is the standard reason phrase, or Pushpin's "Undefined Reason".
func reasonFor(code int) string {
	if r := http.StatusText(code); r != "" {
		return r
	}
	return "Undefined Reason"
}
