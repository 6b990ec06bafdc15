// Command grip runs an app written for Pushpin behind Caddy in Pushpin's
// place: the app speaks only GRIP (Grip-Hold, Grip-Channel with prev-id,
// Grip-Sig, Grip-Last) and publishes in Pushpin's format; Caddy holds the
// requests it is asked to hold with longpoll_grip.
//
//	go run ./examples/grip                 # then see the README's "GRIP mode"
//	go run ./examples/grip -addr :9000     # flags: -addr, -app, -publish
//
// It runs two things in one process, stopped together by Ctrl-C: Caddy with
// the plugin, configured from examples/grip/Caddyfile, and the app
// (app.go). Caddy signs each request to the app with the key in the
// environment variable GRIP_KEY (Pushpin's sig_key); unset, the example
// makes a random one for the run.
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

// options are the example's addresses.
type options struct {
	Addr    string // where clients connect (Caddy; Pushpin's 7999)
	App     string // the app (behind Caddy)
	Publish string // Caddy's publish endpoint, for the app only (Pushpin's 5561)
}

func main() {
	var o options
	flag.StringVar(&o.Addr, "addr", "localhost:8080", "`host:port` clients connect to (Caddy)")
	flag.StringVar(&o.App, "app", "127.0.0.1:8092", "`host:port` of the app, behind Caddy")
	flag.StringVar(&o.Publish, "publish", "127.0.0.1:5561", "`host:port` of Caddy's publish endpoint, for the app (Pushpin's port)")
	flag.Parse()
	key := os.Getenv("GRIP_KEY")
	if key == "" {
		key = rand.Text() + rand.Text()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a := newApp("http://"+o.Publish+"/publish/", []byte(key))
	err := run(ctx, o, a, func(url string) {
		fmt.Printf("grip: the feed is %sapi/feed (Ctrl-C stops); try:\n", url)
		fmt.Printf("  curl -s '%sapi/feed?since=0'          # held until something is posted\n", url)
		fmt.Printf("  curl -s -X POST --data hello %sapi/post\n", url)
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "grip:", err)
		os.Exit(1)
	}
	fmt.Println("grip: stopped")
}

// run starts a and Caddy, calls ready with Caddy's URL, and stops both when
// ctx is done. Stopping Caddy answers held requests with the app's own
// answer (as at their timeout), so clients poll again.
func run(ctx context.Context, o options, a *app, ready func(url string)) error {
	return caddyrun.Run(ctx, caddyrun.Example{Name: "grip", Filename: "examples/grip/Caddyfile", Caddyfile: caddyfile,
		Addr: o.Addr, App: o.App, Handler: a.handler(),
		Env: func(host, port string) map[string]string {
			return map[string]string{"GRIP_HOST": host, "GRIP_PORT": port, "GRIP_APP": o.App, "GRIP_PUBLISH": o.Publish, "GRIP_KEY": string(a.key)}
		}}, ready)
}
