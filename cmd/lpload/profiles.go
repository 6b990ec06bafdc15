package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"strings"
)

// cursor is where a poller is in its channel, in the profile's own terms.
type cursor struct {
	etag string
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
}

// longpollProfile speaks this plugin's HTTP contract.
type longpollProfile struct{}

func (longpollProfile) start(ctx context.Context, l *loader, ch string) (cursor, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", l.url(l.o.pubURL, ch), nil)
	if err != nil {
		return cursor{}, err
	}
	res, err := l.pub.Do(req)
	if err != nil {
		return cursor{}, err
	}
	defer res.Body.Close()
	var info struct {
		Cursor string `json:"cursor"`
	}
	if err := json.NewDecoder(res.Body).Decode(&info); err != nil || res.StatusCode != 200 {
		return cursor{}, fmt.Errorf("channel info of %s: %s %v", ch, res.Status, err)
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

// withWrote calls f once the request has been written to the connection.
func withWrote(ctx context.Context, f func()) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) { f() },
	})
}
