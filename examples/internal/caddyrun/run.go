package caddyrun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Example is an app behind Caddy, both in one process.
type Example struct {
	Name      string // in messages
	Filename  string // the Caddyfile's path, in errors
	Caddyfile []byte
	Addr      string       // where clients connect to Caddy, host:port (":port": every interface)
	App       string       // where the app listens, host:port
	Handler   http.Handler // the app
	// Env is what the Caddyfile reads as {$NAME}, given the host and port
	// Caddy listens on.
	Env func(host, port string) map[string]string
}

// Run starts the app, then Caddy in front of it, calls ready with Caddy's
// URL, and stops both when ctx is done or the app stops. Stopping Caddy
// answers the requests it holds, so clients poll again.
func Run(ctx context.Context, e Example, ready func(url string)) error {
	// The app first: Caddy proxies to it.
	ln, err := net.Listen("tcp", e.App)
	if err != nil {
		return fmt.Errorf("app: %v (another -app address?)", err)
	}
	srv := &http.Server{Handler: e.Handler, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		// Run after caddy.Stop (deferred below): the app's only client
		// is gone, so its connections are closed at once. Shutdown would
		// wait 5 s for one Caddy's proxy opened and never used (net/http
		// counts a connection without a request as idle only after 5 s).
		srv.Close()
		if served != nil {
			<-served
		}
	}()

	host, port, err := net.SplitHostPort(e.Addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %v", e.Addr, err)
	}
	if host == "" {
		host = "0.0.0.0" // ":8080": every interface
	}
	if err := Load(e.Name, e.Filename, e.Caddyfile, e.Env(host, port)); err != nil {
		return err
	}
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
