package grip

import "net/http"

// LastHeaderName is the request header by which the proxy tells the app,
// when it asks again for a held request, which id the hold had on a channel.
const LastHeaderName = "Grip-Last"

// LastHeader formats one Grip-Last value as Pushpin does
// (proxy/proxyutil.cpp, handler/httpsession.cpp): "<channel>; last-id=<id>",
// neither quoted nor escaped. One header per channel.
func LastHeader(channel, id string) string {
	return channel + "; last-id=" + id
}

// ParseLast reads the Grip-Last values of a request into channel → id, as
// Pushpin reads them (comma lists and repeated headers both work).
func ParseLast(h http.Header) map[string]string {
	var out map[string]string
	for _, ps := range listParams(h.Values(LastHeaderName), true) {
		if out == nil {
			out = map[string]string{}
		}
		out[ps[0].name], _ = ps.get("last-id")
	}
	return out
}
