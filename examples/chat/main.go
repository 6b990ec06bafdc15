// Command chat is caddy-longpoll's demo: a chat whose page long-polls Caddy
// for new lines, while the app behind Caddy only ever sees ordinary requests.
//
//	go run ./examples/chat                 # then open http://localhost:8080/
//	go run ./examples/chat -addr :9000     # flags: -addr, -app, -publish
//
// It runs two things in one process, stopped together by Ctrl-C: Caddy with
// the plugin, configured from examples/chat/Caddyfile, and the app (app.go).
// A browser polls only the rooms it joined: the app signs it a grant for
// them (grants.go), which Caddy checks, with the HMAC key in the environment
// variable LONGPOLL_JWT_SECRET (at least 32 bytes); unset, the demo makes a
// random one for the run.
package main

import (
	"context"
	"crypto/rand"
	_ "embed"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/caddy-longpoll/longpoll/examples/internal/caddyrun"
)

//go:embed Caddyfile
var caddyfile []byte

// options are the demo's addresses.
type options struct {
	Addr    string // where browsers connect (Caddy)
	App     string // the app (behind Caddy)
	Publish string // Caddy's publish endpoint (for the app only)
}

func main() {
	var o options
	flag.StringVar(&o.Addr, "addr", "localhost:8080", "`host:port` browsers connect to (Caddy)")
	flag.StringVar(&o.App, "app", "127.0.0.1:8090", "`host:port` of the chat app, behind Caddy")
	flag.StringVar(&o.Publish, "publish", "127.0.0.1:8091", "`host:port` of Caddy's publish endpoint, for the app")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, o, func(url string) {
		fmt.Printf("chat: open %s in two browser windows (Ctrl-C stops)\n", url)
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		os.Exit(1)
	}
	fmt.Println("chat: stopped")
}

// run starts the app and Caddy, calls ready with the URL to open, and stops
// both when ctx is done. Stopping Caddy answers the held polls (304), so
// browsers re-poll into whatever runs next.
func run(ctx context.Context, o options, ready func(url string)) error {
	// The grants' key, for the app and for Caddy's auth jwt.
	secret := os.Getenv("LONGPOLL_JWT_SECRET")
	if secret == "" {
		secret = rand.Text() + rand.Text() // 52 characters, over 256 random bits
		os.Setenv("LONGPOLL_JWT_SECRET", secret)
	}
	a := newApp("http://"+o.Publish, []byte(secret))
	return caddyrun.Run(ctx, caddyrun.Example{Name: "chat", Filename: "examples/chat/Caddyfile", Caddyfile: caddyfile,
		Addr: o.Addr, App: o.App, Handler: a.handler(),
		Env: func(host, port string) map[string]string {
			return map[string]string{"CHAT_HOST": host, "CHAT_PORT": port, "CHAT_APP": o.App, "CHAT_PUBLISH": o.Publish}
		}}, ready)
}
