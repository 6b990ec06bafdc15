package grip

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
)

// The JSON bodies of GRIP (application/grip-instruct, the publish format) are
// read into plain maps and checked field by field, as Pushpin reads them
// with VariantUtil (handler/variantutil.cpp): that is what gives its error
// messages ("hold contains 'timeout' with wrong type"), which we keep word for
// word so an app author can search for them. A JSON null counts as absent.

type object = map[string]any

// decodeJSON decodes a JSON document, numbers kept as json.Number. Like
// Pushpin's Json::fromString (core/json.cpp) it takes only an object or an
// array, with nothing after it.
func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if len(bytes.TrimLeft(b[d.InputOffset():], " \t\r\n")) > 0 {
		return nil, fmt.Errorf("data after the JSON value")
	}
	switch v.(type) {
	case object, []any:
		return v, nil
	}
	return nil, fmt.Errorf("not an object or an array")
}

// lookup returns obj[key], treating null as absent.
func lookup(obj object, key string) (any, bool) {
	v, ok := obj[key]
	if !ok || v == nil {
		return nil, false
	}
	return v, true
}

// getString reads an optional (or required) string field.
func getString(obj object, parent, key string, required bool) (string, bool, error) {
	v, ok := lookup(obj, key)
	if !ok {
		if required {
			return "", false, fmt.Errorf("%s does not contain '%s'", parent, key)
		}
		return "", false, nil
	}
	s, isString := v.(string)
	if !isString {
		return "", false, fmt.Errorf("%s contains '%s' with wrong type", parent, key)
	}
	return s, true, nil
}

// getObject reads an optional object field.
func getObject(obj object, parent, key string) (object, bool, error) {
	v, ok := lookup(obj, key)
	if !ok {
		return nil, false, nil
	}
	o, isObject := v.(object)
	if !isObject {
		return nil, false, fmt.Errorf("%s contains '%s' with wrong type", parent, key)
	}
	return o, true, nil
}

// getList reads an optional (or required) list field.
func getList(obj object, parent, key string, required bool) ([]any, bool, error) {
	v, ok := lookup(obj, key)
	if !ok {
		if required {
			return nil, false, fmt.Errorf("%s does not contain '%s'", parent, key)
		}
		return nil, false, nil
	}
	l, isList := v.([]any)
	if !isList {
		return nil, false, fmt.Errorf("%s contains '%s' with wrong type", parent, key)
	}
	return l, true, nil
}

// getInt reads an optional integer field. Pushpin takes whatever QVariant can
// convert to int; we take a JSON number with no fraction, or a string of
// digits, and call anything else the wrong type.
func getInt(obj object, parent, key string) (int, bool, error) {
	v, ok := lookup(obj, key)
	if !ok {
		return 0, false, nil
	}
	wrong := fmt.Errorf("%s contains '%s' with wrong type", parent, key)
	var s string
	switch x := v.(type) {
	case json.Number:
		s = x.String()
	case string:
		s = strings.TrimSpace(x)
	default:
		return 0, false, wrong
	}
	if n, err := strconv.ParseInt(s, 10, 32); err == nil {
		return int(n), true, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || f < math.MinInt32 || f > math.MaxInt32 {
		return 0, false, wrong
	}
	return int(f), true, nil
}

// stringMap reads an object whose values are all strings ('meta').
func stringMap(obj object) (map[string]string, error) {
	out := make(map[string]string, len(obj))
	for k, v := range obj {
		if v == nil {
			continue
		}
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("'meta' contains '%s' with wrong type", k)
		}
		out[k] = s
	}
	return out, nil
}

// readHeaders reads 'headers' given as a list of [name, value] pairs or as
// an object of name: value, the two forms Pushpin accepts in both
// application/grip-instruct and the http-response publish format.
func readHeaders(obj object, parent string) (http.Header, error) {
	v, ok := lookup(obj, "headers")
	if !ok {
		return nil, nil
	}
	h := http.Header{}
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			pair, isList := e.([]any)
			if !isList {
				return nil, fmt.Errorf("headers contains element with wrong type")
			}
			if len(pair) != 2 {
				return nil, fmt.Errorf("headers contains list with wrong number of elements")
			}
			name, isString := pair[0].(string)
			if !isString {
				return nil, fmt.Errorf("header contains name element with wrong type")
			}
			value, isString := pair[1].(string)
			if !isString {
				return nil, fmt.Errorf("header contains value element with wrong type")
			}
			if err := addHeader(h, name, value); err != nil {
				return nil, err
			}
		}
	case object:
		for name, e := range x {
			value, isString := e.(string)
			if !isString {
				return nil, fmt.Errorf("headers contains '%s' with wrong type", name)
			}
			if err := addHeader(h, name, value); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("%s contains 'headers' with wrong type", parent)
	}
	return h, nil
}

// addHeader adds a header that came from JSON. Pushpin copies the bytes
// through; Go's net/http would refuse to send a name or value that is not a
// valid header (or silently drop it), so we say so here instead.
func addHeader(h http.Header, name, value string) error {
	if !validHeaderName(name) {
		return fmt.Errorf("header name %q is not a valid HTTP header name", name)
	}
	if strings.ContainsAny(value, "\r\n\x00") {
		return fmt.Errorf("header %q has a value with CR, LF or NUL", name)
	}
	h.Add(name, value)
	return nil
}

func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

// decodeBase64 decodes body-bin and content-bin. Pushpin uses
// QByteArray::fromBase64, which skips what is not base64 rather than fail;
// we accept padded or unpadded, standard or URL alphabet, and fail on
// anything else, because a body that decodes to garbage helps nobody.
func decodeBase64(parent, key, s string) ([]byte, error) {
	s = strings.TrimRight(strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, s), "=")
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("%s contains '%s' that is not valid base64", parent, key)
}
