package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// cursor is where a poller is in its channel, in the profile's own terms.
type cursor struct {
	etag         string
	lastModified string // Nchan's resume pair: Last-Modified and Etag
}

// profile is how to speak to one kind of long-poll server.
type profile interface {
	// start returns a cursor from which polls get everything published after now.
	start(ctx context.Context, l *loader, ch string) (cursor, error)
	// pollRequest builds a poll resuming from cur.
	pollRequest(ctx context.Context, url string, cur cursor) (*http.Request, error)
	// parse reads a poll's answer: the message bodies, the cursor to send
	// next, and whether the server signalled a gap.
	parse(res *http.Response, body []byte, cur cursor) (msgs []string, next cursor, gap bool, err error)
}

var profiles = map[string]profile{
	"longpoll": longpollProfile{},
	"nchan":    nchanProfile{},
	// Pushpin holds the polls; its origin, lpload grip-origin, speaks
	// this plugin's contract.
	"pushpin": longpollProfile{},
	// The floor: bench/barecaddy's bare_hold handler, no cursors.
	"bare": bareProfile{},
}

// longpollProfile speaks this plugin's HTTP contract.
type longpollProfile struct{}

// channelInfo GETs the publish URL of ch: the status and the body.
func channelInfo(ctx context.Context, l *loader, ch string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", l.url(l.o.pubURL, ch), nil)
	if err != nil {
		return 0, nil, err
	}
	res, err := l.pub.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return res.StatusCode, body, err
}

func (longpollProfile) start(ctx context.Context, l *loader, ch string) (cursor, error) {
	status, body, err := channelInfo(ctx, l, ch)
	if err != nil {
		return cursor{}, err
	}
	var info struct {
		Cursor string `json:"cursor"`
	}
	if err := json.Unmarshal(body, &info); err != nil || status != 200 {
		return cursor{}, fmt.Errorf("channel info of %s: %d %q", ch, status, body)
	}
	return cursor{etag: info.Cursor}, nil
}

func (longpollProfile) pollRequest(ctx context.Context, url string, cur cursor) (*http.Request, error) {
	if cur.etag != "" {
		sep := "?"
		if strings.Contains(url, "?") {
			sep = "&"
		}
		url += sep + "since=" + cur.etag
	}
	return http.NewRequestWithContext(ctx, "GET", url, nil)
}

func (longpollProfile) parse(res *http.Response, body []byte, cur cursor) ([]string, cursor, bool, error) {
	next := cur
	if tag := strings.Trim(res.Header.Get("ETag"), `"`); tag != "" {
		next.etag = tag
	}
	switch res.StatusCode {
	case http.StatusNotModified:
		return nil, next, false, nil
	case http.StatusOK:
	default:
		return nil, cur, false, fmt.Errorf("poll: %s %s", res.Status, strings.TrimSpace(string(body)))
	}
	var ans struct {
		Messages []struct {
			Data json.RawMessage `json:"data"`
		} `json:"messages"`
		Gap bool `json:"gap"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return nil, cur, false, fmt.Errorf("poll answer: %v", err)
	}
	msgs := make([]string, len(ans.Messages))
	for i, m := range ans.Messages {
		var s string
		if json.Unmarshal(m.Data, &s) != nil {
			s = string(m.Data)
		}
		msgs[i] = s
	}
	return msgs, next, ans.Gap, nil
}

// nchanProfile speaks Nchan's long-poll subscriber: one message per answer,
// resumed with If-Modified-Since and If-None-Match from the last answer's
// Last-Modified and Etag (bench/nchan/nginx.conf). Nchan signals no gaps.
type nchanProfile struct{}

var nchanLastID = regexp.MustCompile(`last message id: (\d+):\[?(\d+)`)

func (nchanProfile) start(ctx context.Context, l *loader, ch string) (cursor, error) {
	status, body, err := channelInfo(ctx, l, ch)
	if err != nil {
		return cursor{}, err
	}
	if status == http.StatusNotFound {
		return cursor{}, nil // no channel yet: the first poll waits for the next message
	}
	m := nchanLastID.FindSubmatch(body)
	if status != 200 || m == nil {
		return cursor{}, fmt.Errorf("channel info of %s: %d %q", ch, status, body)
	}
	secs, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return cursor{lastModified: time.Unix(secs, 0).UTC().Format(http.TimeFormat), etag: string(m[2])}, nil
}

func (nchanProfile) pollRequest(ctx context.Context, url string, cur cursor) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err == nil && cur.lastModified != "" {
		req.Header.Set("If-Modified-Since", cur.lastModified)
		req.Header.Set("If-None-Match", cur.etag)
	}
	return req, err
}

func (nchanProfile) parse(res *http.Response, body []byte, cur cursor) ([]string, cursor, bool, error) {
	switch res.StatusCode {
	case http.StatusOK:
		next := cursor{lastModified: res.Header.Get("Last-Modified"), etag: res.Header.Get("Etag")}
		return []string{string(body)}, next, false, nil
	case http.StatusNotModified, http.StatusRequestTimeout:
		return nil, cur, false, nil
	default:
		return nil, cur, false, fmt.Errorf("poll: %s %s", res.Status, strings.TrimSpace(string(body)))
	}
}

// bareProfile speaks to bench/barecaddy: a poll is a plain GET answered with
// the next publish's body; there are no cursors, so nothing is resumed and
// only hold and fanout are meaningful.
type bareProfile struct{}

func (bareProfile) start(context.Context, *loader, string) (cursor, error) { return cursor{}, nil }

func (bareProfile) pollRequest(ctx context.Context, url string, _ cursor) (*http.Request, error) {
	return http.NewRequestWithContext(ctx, "GET", url, nil)
}

func (bareProfile) parse(res *http.Response, body []byte, cur cursor) ([]string, cursor, bool, error) {
	if res.StatusCode != http.StatusOK {
		return nil, cur, false, fmt.Errorf("poll: %s %s", res.Status, strings.TrimSpace(string(body)))
	}
	return []string{string(body)}, cur, false, nil
}

// withWrote calls f once the request has been written to the connection.
func withWrote(ctx context.Context, f func()) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) { f() },
	})
}
