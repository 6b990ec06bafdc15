// Command caddy is Caddy with the standard modules and this plugin, for
// tests and local runs: go build -o caddy ./cmd/caddy. Release builds use
// xcaddy (go run ./cmd/build-caddy).
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-longpoll/longpoll"
)

func main() {
	caddycmd.Main()
}
