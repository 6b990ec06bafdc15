package grip

import (
	"fmt"
	"net/http"
	"strings"
)

// MaxPublishBody is the largest publish body Pushpin's HTTP control server
// reads (push_in_http_max_body_size); past it, it answers 400 "Request body
// too large.".
const MaxPublishBody = 1000000

// Action is what a published format asks of the connections it reaches.
type Action uint8

const (
	// ActionSend (the default): deliver the content. For a response hold:
	// answer it.
	ActionSend Action = iota
	// ActionHint: the content is not in the message; for a response hold,
	// ask the app again (the request is proxied to it anew).
	ActionHint
	// ActionClose: close a stream or WebSocket. A response hold ignores it.
	ActionClose
	// ActionRefresh: for WebSockets. A response hold ignores it.
	ActionRefresh
)

func (a Action) String() string {
	return [...]string{"send", "hint", "close", "refresh"}[a]
}

// Item is one element of a publish's "items", Pushpin's PublishItem.
type Item struct {
	Channel string
	// ID of this message and PrevID, the id of the message before it on the
	// channel. Empty means unset. See docs/grip.md for what Pushpin does
	// with them.
	ID, PrevID string
	// HTTPResponse is the http-response format: what a response hold on
	// Channel is answered with. Nil when the item has none (it then reaches
	// no held poll; Pushpin accepts such items for streams and WebSockets).
	HTTPResponse *HTTPResponse
	// Formats names every format the item has, in the order http-response,
	// http-stream, ws-message; the latter two are checked as Pushpin checks
	// them and otherwise ignored.
	Formats []string
	Meta    map[string]string
	// Size, if not -1, is the size the publisher declares for the message
	// (Pushpin's block accounting).
	Size int
	// NoSeq: do not hold the item back to reorder it by PrevID.
	NoSeq bool
}

// HTTPResponse is a published http-response format.
type HTTPResponse struct {
	Action Action
	// Code (default 200), Reason (default the code's standard phrase),
	// Header (Grip-* headers removed) and Body (body-bin decoded, or body):
	// set only for ActionSend.
	Code   int
	Reason string
	Header http.Header
	Body   []byte
	// ExposeHeaders is the published Grip-Expose-Headers; see MergeOver.
	ExposeHeaders []string
	// ContentFilters, when HasContentFilters, must equal the held
	// subscription's content filters for the message to be delivered.
	ContentFilters    []string
	HasContentFilters bool
}

// MergeOver returns the answer to a held poll when f is published on one of
// its channels, given held, the Response of its Instruct (what the poll
// would get at its timeout). The rule is Pushpin's (handler/httpsession.cpp,
// respond): the status and body are the published ones; the headers are
// held's, less every header the publish names, plus the published ones; and
// then, as Pushpin's code does, the headers listed in the published
// Grip-Expose-Headers are removed. Content-Length is dropped; the writer
// sets it. Only meaningful for ActionSend.
func (f *HTTPResponse) MergeOver(held Response) Response {
	h := http.Header{}
	for k, vs := range held.Header {
		if !hasFold(f.Header, k) {
			h[k] = append([]string(nil), vs...)
		}
	}
	for k, vs := range f.Header {
		h[k] = append(h[k], vs...)
	}
	if len(f.ExposeHeaders) > 0 {
		for k := range h {
			if containsFold(f.ExposeHeaders, k) {
				delete(h, k)
			}
		}
	}
	h.Del("Content-Length")
	return Response{Code: f.Code, Reason: f.Reason, Header: h, Body: f.Body}
}

func hasFold(h http.Header, k string) bool {
	for hk := range h {
		if strings.EqualFold(hk, k) {
			return true
		}
	}
	return false
}

// PublishError is a publish body Pushpin refuses with 400 Bad Request; its
// text is Pushpin's answer without the final newline ("Invalid format:
// …"), except that ours names the item ("items[2]: …").
type PublishError struct{ msg string }

func (e *PublishError) Error() string { return e.msg }

func publishErr(format string, a ...any) error { return &PublishError{fmt.Sprintf(format, a...)} }

// ParsePublish reads a publish body (Pushpin's JSON publish format,
// {"items": [...]}) and checks every item; one bad item refuses the whole
// publish, as in Pushpin. The error is a *PublishError: answer 400 with
// its text and a newline, text/plain.
func ParsePublish(body []byte) ([]Item, error) {
	if len(body) > MaxPublishBody {
		return nil, publishErr("Request body too large.")
	}
	doc, err := decodeJSON(body)
	if err != nil {
		return nil, publishErr("Body is not valid JSON.")
	}
	m, ok := doc.(object)
	if !ok {
		return nil, publishErr("Invalid format.")
	}
	v, ok := m["items"]
	if !ok {
		return nil, publishErr("Invalid format: object does not contain 'items'")
	}
	vitems, ok := v.([]any)
	if !ok {
		return nil, publishErr("Invalid format: object contains 'items' with wrong type")
	}
	items := make([]Item, 0, len(vitems))
	for i, vi := range vitems {
		item, err := parseItem(vi)
		if err != nil {
			return nil, publishErr("Invalid format: items[%d]: %v", i, err)
		}
		items = append(items, item)
	}
	return items, nil
}

var formatNames = []string{"http-response", "http-stream", "ws-message"}

func parseItem(vi any) (Item, error) {
	const pn = "publish item object"
	it := Item{Size: -1}
	m, ok := vi.(object)
	if !ok {
		return it, fmt.Errorf("%s is not an object", pn)
	}
	var err error
	if it.Channel, _, err = getString(m, pn, "channel", true); err != nil {
		return it, err
	}
	if err := checkChannelName(it.Channel); err != nil {
		return it, err
	}
	if it.ID, _, err = getString(m, pn, "id", false); err != nil {
		return it, err
	}
	if it.PrevID, _, err = getString(m, pn, "prev-id", false); err != nil {
		return it, err
	}

	formats, ok, err := getObject(m, pn, "formats")
	if err != nil {
		return it, err
	}
	if !ok {
		// Formats may sit on the item itself (the older form).
		formats = object{}
		for _, name := range formatNames {
			if v, ok := lookup(m, name); ok {
				formats[name] = v
			}
		}
	}
	if len(formats) == 0 {
		return it, fmt.Errorf("no formats specified")
	}
	for _, name := range formatNames {
		v, ok := lookup(formats, name)
		if !ok {
			continue
		}
		fpn := "'" + name + "'"
		fo, isObject := v.(object)
		if !isObject {
			return it, fmt.Errorf("%s is not an object", fpn)
		}
		action, err := parseAction(fo, fpn)
		if err != nil {
			return it, err
		}
		switch name {
		case "http-response":
			if it.HTTPResponse, err = parseHTTPResponse(fo, fpn, action); err != nil {
				return it, err
			}
		case "http-stream":
			err = checkHTTPStream(fo, fpn, action)
		case "ws-message":
			err = checkWSMessage(fo, fpn, action)
		}
		if err != nil {
			return it, err
		}
		it.Formats = append(it.Formats, name)
	}

	if meta, ok, err := getObject(m, pn, "meta"); err != nil {
		return it, err
	} else if ok {
		if it.Meta, err = stringMap(meta); err != nil {
			return it, err
		}
	}
	if size, ok, err := getInt(m, pn, "size"); err != nil {
		return it, err
	} else if ok {
		if size < 0 {
			return it, fmt.Errorf("%s contains 'size' with invalid value", pn)
		}
		it.Size = size
	}
	if v, ok := lookup(m, "no-seq"); ok {
		b, isBool := v.(bool)
		if !isBool {
			return it, fmt.Errorf("%s contains 'no-seq' with wrong type", pn)
		}
		it.NoSeq = b
	}
	return it, nil
}

func parseAction(f object, fpn string) (Action, error) {
	s, ok, err := getString(f, fpn, "action", false)
	if err != nil {
		return 0, err
	}
	switch {
	case !ok || s == "send":
		return ActionSend, nil
	case s == "hint":
		return ActionHint, nil
	case s == "close":
		return ActionClose, nil
	case s == "refresh":
		return ActionRefresh, nil
	}
	// Pushpin refuses it without a message.
	return 0, fmt.Errorf("%s contains 'action' with unknown value", fpn)
}

func parseHTTPResponse(f object, fpn string, action Action) (*HTTPResponse, error) {
	r := &HTTPResponse{Action: action}
	if action != ActionSend {
		return r, nil
	}
	r.Code = http.StatusOK
	if c, ok, err := getInt(f, fpn, "code"); err != nil {
		return nil, err
	} else if ok {
		if c < 0 || c > 999 {
			return nil, fmt.Errorf("%s contains 'code' with invalid value", fpn)
		}
		if err := checkCode(c); err != nil {
			return nil, fmt.Errorf("%s: %w", fpn, err)
		}
		r.Code = c
	}
	reason, _, err := getString(f, fpn, "reason", false)
	if err != nil {
		return nil, err
	}
	r.Reason = reason
	if r.Reason == "" {
		r.Reason = reasonFor(r.Code)
	}
	if r.Header, err = readHeaders(f, fpn); err != nil {
		return nil, err
	}
	if r.Header == nil {
		r.Header = http.Header{}
	}
	for _, v := range r.Header.Values("Grip-Expose-Headers") {
		r.ExposeHeaders = append(r.ExposeHeaders, splitList(v)...)
	}
	for k := range r.Header {
		if hasGripPrefix(k) {
			delete(r.Header, k)
		}
	}
	if r.ContentFilters, r.HasContentFilters, err = contentFilters(f, fpn); err != nil {
		return nil, err
	}
	switch {
	case has(f, "body-bin"):
		s, _, err := getString(f, fpn, "body-bin", false)
		if err != nil {
			return nil, err
		}
		if r.Body, err = decodeBase64(fpn, "body-bin", s); err != nil {
			return nil, err
		}
	case has(f, "body"):
		s, _, err := getString(f, fpn, "body", false)
		if err != nil {
			return nil, err
		}
		r.Body = []byte(s)
	case has(f, "body-patch"):
		// Pushpin applies a JSON Patch to the held response's body.
		return nil, fmt.Errorf("%s contains 'body-patch', which is not supported", fpn)
	default:
		return nil, fmt.Errorf("%s does not contain 'body', 'body-bin', or 'body-patch'", fpn)
	}
	return r, nil
}

func checkHTTPStream(f object, fpn string, action Action) error {
	if action != ActionSend {
		return nil
	}
	if _, _, err := contentFilters(f, fpn); err != nil {
		return err
	}
	return checkContent(f, fpn, true)
}

func checkWSMessage(f object, fpn string, action Action) error {
	switch action {
	case ActionSend:
		typ, ok, err := getString(f, fpn, "type", false)
		if err != nil {
			return err
		}
		if ok && typ != "text" && typ != "binary" && typ != "ping" && typ != "pong" {
			return fmt.Errorf("%s contains 'type' with unknown value", fpn)
		}
		if _, _, err := contentFilters(f, fpn); err != nil {
			return err
		}
		// ping and pong may come without content.
		return checkContent(f, fpn, !ok || typ == "text" || typ == "binary")
	case ActionClose:
		if c, ok, err := getInt(f, fpn, "code"); err != nil {
			return err
		} else if ok && c < 0 {
			return fmt.Errorf("%s contains 'code' with invalid value", fpn)
		}
		_, _, err := getString(f, fpn, "reason", false)
		return err
	}
	return nil
}

// checkContent checks content-bin (base64) or content (text).
func checkContent(f object, fpn string, required bool) error {
	if has(f, "content-bin") {
		s, _, err := getString(f, fpn, "content-bin", false)
		if err != nil {
			return err
		}
		_, err = decodeBase64(fpn, "content-bin", s)
		return err
	}
	if has(f, "content") {
		_, _, err := getString(f, fpn, "content", false)
		return err
	}
	if required {
		return fmt.Errorf("%s does not contain 'content' or 'content-bin'", fpn)
	}
	return nil
}

func contentFilters(f object, fpn string) ([]string, bool, error) {
	v, ok := lookup(f, "content-filters")
	if !ok {
		return nil, false, nil
	}
	l, isList := v.([]any)
	if !isList {
		return nil, false, fmt.Errorf("%s contains 'content-filters' with wrong type", fpn)
	}
	filters := []string{}
	for _, e := range l {
		s, isString := e.(string)
		if !isString {
			return nil, false, fmt.Errorf("content-filters contains element with wrong type")
		}
		filters = append(filters, s)
	}
	return filters, true, nil
}

func has(o object, key string) bool { _, ok := lookup(o, key); return ok }

// The answer to a publish, as Pushpin's HTTP control server gives it
// (handler/handlerengine.cpp, controlHttpServer_requestReady): 200 with
// "Published\n" (text/plain) or {"message":"Published"}\n
// (application/json), chosen by Accept; 400 text/plain with a
// PublishError's text and "\n"; 405 with Allow: POST for another method;
// 406 NotAcceptableBody when Accept allows neither type.

// NotAcceptableBody is Pushpin's 406 body.
const NotAcceptableBody = "Not Acceptable. Supported formats are text/plain and application/json.\n"

// PublishContentType picks the answer's content type from the request's
// Accept values: text/plain without Accept; the last of text/plain, text/*,
// */*, * (text/plain) or application/json, application/* (application/json)
// that Accept lists, ignoring q values, as Pushpin does; ok is false (406)
// when it lists neither.
func PublishContentType(accept []string) (contentType string, ok bool) {
	if len(accept) == 0 {
		return "text/plain", true
	}
	for _, ps := range listParams(accept, true) {
		switch ps[0].name {
		case "text/plain", "text/*", "*/*", "*":
			contentType = "text/plain"
		case "application/json", "application/*":
			contentType = "application/json"
		}
	}
	return contentType, contentType != ""
}

// PublishedBody is the body of a successful publish's answer in the given
// content type (from PublishContentType).
func PublishedBody(contentType string) []byte {
	if contentType == "application/json" {
		return []byte(`{"message":"Published"}` + "\n")
	}
	return []byte("Published\n")
}
