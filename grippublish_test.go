package longpoll_test

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// gripPublishes are the publish requests @fanoutio/grip 4.3.0 built, as
// recorded in grip/testdata (a client we did not write).
func gripPublishes(t *testing.T) []struct {
	Headers map[string]string
	Body    string
} {
	t.Helper()
	raw, err := os.ReadFile("grip/testdata/fanoutio-grip.golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Publishes []struct {
			Headers map[string]string
			Body    string
		}
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	return golden.Publishes
}

// What a GRIP client library publishes to the endpoint's root reaches the
// native polls of each item's channel: its body and Content-Type, held
// polls woken, each message once and in order.
func TestPushpinPublishFormatReachesNativePolls(t *testing.T) {
	s := start(t, "", "longpoll /poll/*", "longpoll_publish /publish/*")
	checkLeaks(t, s)
	startChat, startBin := s.info("chat-42")["cursor"].(string), s.info("bin")["cursor"].(string)
	held := s.pollAsync(context.Background(), s.poll+"/poll/chat-42?since="+startChat)
	s.waitHeld("chat-42", 1)

	var channels []string
	for i, p := range gripPublishes(t) {
		var hdr []string
		for k, v := range p.Headers {
			if k != "Content-Length" {
				hdr = append(hdr, k, v)
			}
		}
		r := s.must("POST", s.pub+"/publish/", p.Body, hdr...)
		if r.status != 200 || r.body != "Published\n" || r.header.Get("Content-Type") != "text/plain" {
			t.Fatalf("publish %d: %d %q (%s)", i, r.status, r.body, r.header.Get("Content-Type"))
		}
		var items struct{ Items []struct{ Channel string } }
		json.Unmarshal([]byte(p.Body), &items)
		for _, it := range items.Items {
			channels = append(channels, it.Channel)
		}
	}
	if r := <-held; r.status != 200 || !strings.Contains(r.body, `"data":{"messages":[1042]}`) || !strings.Contains(r.body, `"type":"application/json"`) {
		t.Fatalf("the held poll on chat-42: %d %s", r.status, r.body)
	}
	var ans struct {
		Messages []struct {
			Data     json.RawMessage
			Type     string
			Encoding string
		}
	}
	json.Unmarshal([]byte(s.must("GET", s.poll+"/poll/chat-42?since="+startChat, "").body), &ans)
	want := strings.Count(strings.Join(channels, " "), "chat-42")
	if len(ans.Messages) != want || want < 2 || string(ans.Messages[0].Data) != `{"messages":[1042]}` || string(ans.Messages[1].Data) != `"just a body"` {
		t.Fatalf("chat-42 from the start: %+v, want %d messages", ans.Messages, want)
	}
	json.Unmarshal([]byte(s.must("GET", s.poll+"/poll/bin?since="+startBin, "").body), &ans)
	if len(ans.Messages) != 1 || string(ans.Messages[0].Data) != `"AAEC/w=="` || ans.Messages[0].Encoding != "base64" || ans.Messages[0].Type != "application/octet-stream" {
		t.Fatalf("bin from the start: %+v", ans.Messages)
	}
}

// Pushpin's answers, and refusals with what was wrong.
func TestPushpinPublishFormatAnswersAndRefusals(t *testing.T) {
	s := start(t, "", "longpoll /poll/*", "longpoll_publish /publish/*")
	checkLeaks(t, s)
	item := `{"items":[{"channel":"c","formats":{"http-response":{"body":"x"}}}]}`
	for _, tc := range []struct {
		name, body string
		hdr        []string
		status     int
		says       string
	}{
		{"json answer", item, []string{"Accept", "application/json"}, 200, `{"message":"Published"}`},
		{"stream format only", `{"items":[{"channel":"c","formats":{"http-stream":{"content":"x"}}}]}`, nil, 200, "Published"},
		{"not JSON", "items", nil, 400, "not Pushpin's publish format"},
		{"no items", `{"items":"none"}`, nil, 400, "not Pushpin's publish format"},
		{"empty channel", `{"items":[{"channel":"","formats":{"http-response":{"body":"x"}}}]}`, nil, 400, "items[0]"},
		{"not acceptable", item, []string{"Accept", "image/png"}, 406, "Not Acceptable"},
	} {
		r := s.must("POST", s.pub+"/publish/", tc.body, append([]string{"Content-Type", "application/json"}, tc.hdr...)...)
		if r.status != tc.status || !strings.Contains(r.body, tc.says) {
			t.Errorf("%s: %d %q, want %d %q", tc.name, r.status, r.body, tc.status, tc.says)
		}
	}
	if n := s.info("c")["messages"]; n != float64(1) {
		t.Errorf("channel c has %v messages, want 1 (the stream-only item is not one)", n)
	}
	if r := s.must("GET", s.pub+"/publish/", ""); r.status != 400 {
		t.Errorf("GET of the root: %d %s", r.status, r.body)
	}
}
