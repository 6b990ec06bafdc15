package grip

import "strings"

// param is one "name=value" of a header value, or the value's first part
// (the channel name in Grip-Channel), whose value is empty.
type param struct {
	name, value string
	hasValue    bool
}

// params is a header value split into its parts, Pushpin's
// HttpHeaderParameters.
type params []param

// get returns the value of the first parameter called name (case-insensitive,
// as Pushpin's HttpHeaderParameters::get).
func (ps params) get(name string) (string, bool) {
	for _, p := range ps {
		if strings.EqualFold(p.name, name) {
			return p.value, p.hasValue
		}
	}
	return "", false
}

func (ps params) has(name string) bool {
	for _, p := range ps {
		if strings.EqualFold(p.name, name) {
			return true
		}
	}
	return false
}

// splitList splits a header value at the commas that are outside double
// quotes and trims each part, as Pushpin's headerSplit (core/httpheaders.cpp):
// "a,,b" has an empty middle part, a trailing comma adds none, and after an
// unterminated quote the rest of the value is one part.
func splitList(v string) []string {
	var parts []string
	pos := 0
	for pos < len(v) {
		end := findUnquoted(v, ',', pos)
		if end == -1 {
			parts = append(parts, trimOWS(v[pos:]))
			break
		}
		parts = append(parts, trimOWS(v[pos:end]))
		pos = end + 1
	}
	return parts
}

// findUnquoted returns the index of c outside quotes from offset, len(v) when
// there is none, or -1 when a quote is left open.
func findUnquoted(v string, c byte, offset int) int {
	inQuote := false
	for n := offset; n < len(v); n++ {
		ch := v[n]
		if inQuote {
			if ch == '\\' {
				n++
				if n >= len(v) {
					return -1
				}
			} else if ch == '"' {
				inQuote = false
			}
		} else if ch == '"' {
			inQuote = true
		} else if ch == c {
			return n
		}
	}
	if inQuote {
		return -1
	}
	return len(v)
}

// parseParams parses one part of a header value the way Pushpin's
// HttpHeaders::parseParameters does. With firstIsValue (Pushpin's default,
// NoParseFirstParameter) everything before the first ';' is the first
// parameter's name, taken as is; the rest are "name", "name=token" or
// `name="quoted \"string\""`. It fails only on an unterminated quoted string or
// a backslash at its end.
func parseParams(v string, firstIsValue bool) (params, bool) {
	var out params
	start := 0
	if firstIsValue {
		if at := strings.IndexByte(v, ';'); at != -1 {
			out = append(out, param{name: trimOWS(v[:at])})
			start = at + 1
		} else {
			out = append(out, param{name: trimOWS(v)})
			start = len(v)
		}
	}
	for start < len(v) {
		var p param
		at := strings.IndexAny(v[start:], "=;")
		if at == -1 {
			p.name = trimOWS(v[start:])
			start = len(v)
			out = append(out, p)
			continue
		}
		at += start
		p.name = trimOWS(v[start:at])
		if v[at] == ';' {
			start = at + 1
			out = append(out, p)
			continue
		}
		p.hasValue = true
		at++
		if at < len(v) && v[at] == '"' {
			var b strings.Builder
			complete := false
			for n := at + 1; n < len(v); n++ {
				switch v[n] {
				case '\\':
					if n+1 >= len(v) {
						return nil, false
					}
					n++
					b.WriteByte(v[n])
				case '"':
					complete = true
					at = n + 1
				default:
					b.WriteByte(v[n])
				}
				if complete {
					break
				}
			}
			if !complete {
				return nil, false
			}
			p.value = b.String()
			if semi := strings.IndexByte(v[at:], ';'); semi != -1 {
				start = at + semi + 1
			} else {
				start = len(v)
			}
		} else if semi := strings.IndexByte(v[at:], ';'); semi != -1 {
			p.value = trimOWS(v[at : at+semi])
			start = at + semi + 1
		} else {
			p.value = trimOWS(v[at:])
			start = len(v)
		}
		out = append(out, p)
	}
	return out, true
}

// listParams is Pushpin's HttpHeaders::getAllAsParameters: every value of
// the header, split at commas, each part parsed; a part that fails to parse
// is dropped without a word, as Pushpin drops it.
func listParams(values []string, firstIsValue bool) []params {
	var out []params
	for _, v := range values {
		for _, part := range splitList(v) {
			if ps, ok := parseParams(part, firstIsValue); ok {
				out = append(out, ps)
			}
		}
	}
	return out
}

// trimOWS trims what QByteArray::trimmed trims: ASCII whitespace.
func trimOWS(s string) string { return strings.Trim(s, " \t\n\v\f\r") }
