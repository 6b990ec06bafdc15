// Package store keeps the messages of each channel, in order, behind one
// small interface, so the poller and the HTTP handlers never know which
// implementation (memory, Redis) they talk to.
//
// A cursor names a position in a channel: the ID of a message, or the tail of
// the channel when nothing was published after it. Cursors are opaque to
// clients; only the store that issued one can place it. A cursor the store
// cannot place (another store, a restart, a forged value) is answered as a
// gap, never as an error and never with a hang.
package store

import (
	"context"
	"errors"
	"time"
)

// Message is one published message.
type Message struct {
	// ID is the message's cursor: a poll carrying it gets what came after.
	ID string
	// Channel is the channel the message was published to.
	Channel string
	// Time is when the store accepted the message.
	Time time.Time
	// Type is the message's content type, as published.
	Type string
	// Data is the message body, as published.
	Data []byte
	// PubID is the publisher's own id for the message (a GRIP item's
	// "id"), "" if it gave none, and PrevPubID the id it says came before
	// it on the channel (a GRIP item's "prev-id"). Stores keep both as
	// published.
	PubID, PrevPubID string
	// Response is how the message answers a request held in GRIP mode
	// (Pushpin's "http-response" format; its body is Data): nil for a
	// message published without one. Stores keep it as published.
	Response *Response
}

// Response is the status and headers a message answers a GRIP hold with.
type Response struct {
	Code   int                 // 0: the held response's
	Reason string              // "": the code's usual reason
	Header map[string][]string // merged over the held response's
}

// Result is what a store holds after a cursor.
type Result struct {
	// Messages are the retained messages after the cursor, oldest first.
	Messages []Message
	// Cursor is the cursor to send next: the last message's ID, or the
	// channel's tail when there are no messages.
	Cursor string
	// Gap is true when messages after the cursor may have been lost to the
	// client: the cursor is older than the oldest retained message, or the
	// store cannot place it.
	Gap bool
}

// Info describes a channel.
type Info struct {
	// Channel is the channel's name.
	Channel string
	// Cursor is the channel's tail: a poll carrying it gets the next message.
	Cursor string
	// Messages is how many messages the channel retains.
	Messages int
	// LastPubID is the PubID of the channel's newest retained message ("" if
	// it has none, or the channel retains nothing): GRIP's "last id" of the
	// channel, kept as long as that message is.
	LastPubID string
}

// Store keeps messages per channel. Implementations are safe for concurrent
// use. Errors that mean "the store cannot be reached, nothing was changed"
// wrap ErrUnavailable.
type Store interface {
	// Append stores m (its Type and Data; the store sets ID, Channel and
	// Time) at the end of channel and returns the stored message. With a
	// non-empty idempotencyKey, a second Append with the same key on the same
	// channel within the retention time stores nothing and returns the first
	// message with duplicate set.
	Append(ctx context.Context, channel string, m Message, idempotencyKey string) (stored Message, duplicate bool, err error)

	// Since returns the retained messages of channel after cursor. An empty
	// cursor means "from now on": no messages, and the tail as Cursor.
	Since(ctx context.Context, channel, cursor string) (Result, error)

	// Info describes channel. It works for a channel with no messages too.
	Info(ctx context.Context, channel string) (Info, error)

	// Delete drops channel and its messages. It reports whether the channel
	// held anything.
	Delete(ctx context.Context, channel string) (bool, error)

	// Channels is how many channels the store keeps state for.
	Channels() int

	// Close releases what the store holds and stops its goroutines.
	Close() error
}

// Notifier is told about changes a store learns of from elsewhere, such as
// another Caddy instance publishing through a shared Redis. A store that only
// sees local calls (memory) never calls it: whoever calls Append or Delete
// wakes the local polls itself.
type Notifier interface {
	// Wake answers the polls held on channel: something was published.
	Wake(channel string) int
	// Gone answers the polls held on channel: the channel was deleted.
	Gone(channel string) int
	// WakeAll answers every held poll as if something was published, so
	// that each reads the store again: after an outage, when notifications
	// may have been missed.
	WakeAll() int
}

// ErrUnavailable means the store could not be reached and nothing was
// changed: retrying is safe.
var ErrUnavailable = errors.New("store unavailable")

// MaxChannelLen is the longest channel name, in bytes.
const MaxChannelLen = 256

// MaxCursorLen is the longest cursor, in bytes.
const MaxCursorLen = 128

// ValidChannel reports why name is not a usable channel name, or nil.
func ValidChannel(name string) error {
	switch {
	case name == "":
		return errors.New("channel name is empty")
	case len(name) > MaxChannelLen:
		return errors.New("channel name is longer than 256 bytes")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c == 0x7f {
			return errors.New("channel name contains control bytes")
		}
	}
	return nil
}

// ValidCursor reports whether c has the form of a cursor: 1 to 128 bytes of
// [A-Za-z0-9._~:-], safe inside an ETag. Whether a store can place it is
// another matter (see Store.Since).
func ValidCursor(c string) bool {
	if c == "" || len(c) > MaxCursorLen {
		return false
	}
	for i := 0; i < len(c); i++ {
		switch ch := c[i]; {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9':
		case ch == '.', ch == '_', ch == '~', ch == ':', ch == '-':
		default:
			return false
		}
	}
	return true
}
