package longpoll

import (
	"bufio"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// A parked answer is a whole HTTP/1.1 response: sorted headers,
// "Connection: close" unless the connection is kept, a Content-Length
// unless there is no body.
func TestBufferedResponseBytes(t *testing.T) {
	date := regexp.MustCompile(`Date: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT`)
	for _, tc := range []struct {
		name   string
		status int
		head   bool
		keep   bool
		want   string
	}{
		{"200 kept", 200, false, true, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\nDate: D\r\nEtag: \"e-1\"\r\n\r\n{}"},
		{"304 kept", 304, false, true, "HTTP/1.1 304 Not Modified\r\nContent-Type: application/json\r\nDate: D\r\nEtag: \"e-1\"\r\n\r\n"},
		{"200", 200, false, false, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\nContent-Type: application/json\r\nDate: D\r\nEtag: \"e-1\"\r\n\r\n{}"},
		{"HEAD", 200, true, false, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\nContent-Type: application/json\r\nDate: D\r\nEtag: \"e-1\"\r\n\r\n"},
		{"304", 304, false, false, "HTTP/1.1 304 Not Modified\r\nConnection: close\r\nContent-Type: application/json\r\nDate: D\r\nEtag: \"e-1\"\r\n\r\n"},
	} {
		b := newBufferedResponse()
		b.Header().Set("ETag", `"e-1"`)
		b.Header().Set("Content-Type", "application/json")
		b.Header().Set("Content-Length", "999")                 // replaced
		b.Header().Set("Connection", "keep-alive")              // replaced
		b.Header().Set("Date", "Mon, 01 Jan 2001 00:00:00 GMT") // replaced
		b.WriteHeader(tc.status)
		if tc.status == 200 {
			b.Write([]byte("{}"))
		}
		got := date.ReplaceAllString(string(b.bytes(tc.head, tc.keep)), "Date: D")
		if got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
		if _, err := http.ReadResponse(bufioReader(got), nil); err != nil {
			t.Errorf("%s: not a response net/http reads: %v", tc.name, err)
		}
	}
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }
