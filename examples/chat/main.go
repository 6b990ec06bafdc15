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
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"

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
// both when ctx is done.
func run(ctx context.Context, o options, ready func(url string)) error {
	// The app first: Caddy proxies to it.
	ln, err := net.Listen("tcp", o.App)
	if err != nil {
		return fmt.Errorf("app: %v (another -app address?)", err)
	}
	// The grants' key, for the app and for Caddy's auth jwt.
	secret := os.Getenv("LONGPOLL_JWT_SECRET")
	if secret == "" {
		secret = rand.Text() + rand.Text() // 52 characters, over 256 random bits
		os.Setenv("LONGPOLL_JWT_SECRET", secret)
	}
	a := newApp("http://"+o.Publish, []byte(secret))
	srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shut)
		if served != nil {
			<-served
		}
	}()

	// Caddy, from the Caddyfile with the addresses filled in.
	host, port, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %v", o.Addr, err)
	}
	if host == "" {
		host = "0.0.0.0" // ":8080": every interface
	}
	if err := caddyrun.Load("chat", "examples/chat/Caddyfile", caddyfile, map[string]string{"CHAT_HOST": host, "CHAT_PORT": port, "CHAT_APP": o.App, "CHAT_PUBLISH": o.Publish}); err != nil {
		return err
	}
	// Stopping Caddy answers the held polls (304), so browsers re-poll
	// into whatever runs next.
	defer caddy.Stop()

	if host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	ready("http://" + net.JoinHostPort(host, port) + "/")
	select {
	case <-ctx.Done():
		return nil
	case err := <-served:
		served = nil // the app has stopped: nothing to wait for
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("app: %v", err)
	}
}
