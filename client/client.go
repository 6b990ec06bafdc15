// Package client holds longpoll.js, the browser and Node client of
// caddy-longpoll, for Go programs that serve it (such as examples/chat).
package client

import _ "embed"

// JS is longpoll.js, an ES module; serve it as text/javascript.
//
//go:embed longpoll.js
var JS []byte
