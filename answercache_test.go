package longpoll

import (
	"bytes"
	"strconv"
	"testing"
	"time"

	"github.com/caddy-longpoll/longpoll/store"
)

func TestAnswerCacheSharesBytesOnlyForTheSameResult(t *testing.T) {
	c := newAnswerCache()
	msg := func(id, data string) store.Message {
		return store.Message{ID: id, Channel: "c", Time: time.Unix(0, 0), Type: "text/plain", Data: []byte(data)}
	}
	one := store.Result{Messages: []store.Message{msg("e-2", "b")}, Cursor: "e-2"}
	a := c.encode("c", "e-1", one)
	b := c.encode("c", "e-1", one)
	if a != b {
		t.Fatal("the same result was encoded twice")
	}
	for _, tc := range []struct {
		name, channel, from string
		res                 store.Result
	}{
		{"newer message", "c", "e-1", store.Result{Messages: []store.Message{msg("e-2", "b"), msg("e-3", "c")}, Cursor: "e-3"}},
		{"gap", "c", "e-1", store.Result{Messages: []store.Message{msg("e-2", "b")}, Cursor: "e-2", Gap: true}},
		{"fewer messages, same end", "c", "e-1", store.Result{Cursor: "e-2", Gap: true}},
		{"other cursor", "c", "e-0", store.Result{Messages: []store.Message{msg("e-2", "x")}, Cursor: "e-2"}},
		{"other channel", "d", "e-1", store.Result{Messages: []store.Message{msg("e-2", "y")}, Cursor: "e-2"}},
	} {
		got := c.encode(tc.channel, tc.from, tc.res)
		if want := encodeAnswer(tc.res); !bytes.Equal(got.body, want) {
			t.Errorf("%s: got %s, want %s", tc.name, got.body, want)
		}
		if want := `"` + tc.res.Cursor + `"`; got.etag != want {
			t.Errorf("%s: ETag %s, want %s", tc.name, got.etag, want)
		}
		if want := strconv.Itoa(len(got.body)); got.length != want {
			t.Errorf("%s: Content-Length %s, want %s", tc.name, got.length, want)
		}
	}
}

func BenchmarkEncodeAnswer(b *testing.B) {
	res := store.Result{Cursor: "e-2", Messages: []store.Message{{ID: "e-2", Channel: "chat", Time: time.Now(), Type: "application/json", Data: []byte(`{"user":"ann","text":"hello there"}`)}}}
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			encodeAnswer(res)
		}
	})
	b.Run("cached", func(b *testing.B) {
		c := newAnswerCache()
		b.ReportAllocs()
		for b.Loop() {
			c.encode("chat", "e-1", res)
		}
	})
}
