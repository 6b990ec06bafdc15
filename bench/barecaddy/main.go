// Command barecaddy is the floor that bench/compare.sh measures this plugin
// against: Caddy with one extra handler, bare_hold, that parks each GET on a
// Go channel and answers it with the body of the next POST to the same path.
// No store, no cursor, no JSON, no limits: it is what holding a request in
// Caddy costs, and how fast Caddy can wake held requests, before any of the
// plugin's work. It is a benchmark fixture, not a product.
//
//	go build -o barecaddy ./bench/barecaddy
//	./barecaddy run --config bench/Caddyfile.bare --adapter caddyfile
package main

import (
	"io"
	"net/http"
	"path"
	"strconv"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {
	caddy.RegisterModule(BareHold{})
	httpcaddyfile.RegisterHandlerDirective("bare_hold", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		b := new(BareHold)
		return b, b.UnmarshalCaddyfile(h.Dispenser)
	})
	caddycmd.Main()
}

// BareHold parks a GET until the next POST to the same path; the POST's body
// is the answer. A GET to a publish-side handler answers at once (readiness).
type BareHold struct {
	// Publish makes this handler the publishing side.
	Publish bool `json:"publish,omitempty"`
}

// generation is one round of waiting on a path: closed by the next publish.
type generation struct {
	done chan struct{}
	body []byte // set before done is closed
}

// One registry for all handler instances, so the poll and publish sites meet.
var (
	mu    sync.Mutex
	waits = map[string]*generation{}
)

func current(path string) *generation {
	g := waits[path]
	if g == nil {
		g = &generation{done: make(chan struct{})}
		waits[path] = g
	}
	return g
}

// CaddyModule returns the Caddy module information.
func (BareHold) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.bare_hold", New: func() caddy.Module { return new(BareHold) }}
}

// UnmarshalCaddyfile: bare_hold [publish]
func (b *BareHold) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() {
		if d.Val() != "publish" {
			return d.Errf("bare_hold: unknown argument %q (want nothing or publish)", d.Val())
		}
		b.Publish = true
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// ServeHTTP parks a GET, or (publish side) answers every GET parked on the
// same last path segment with a POST's body.
func (b *BareHold) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if b.Publish {
		if r.Method != http.MethodPost {
			_, err := io.WriteString(w, "ok\n")
			return err
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return err
		}
		// Paths differ between the sites (/sub/x, /pub/x): key on the
		// last segment.
		key := path.Base(r.URL.Path)
		mu.Lock()
		g := current(key)
		delete(waits, key)
		mu.Unlock()
		g.body = body
		close(g.done)
		return nil
	}
	mu.Lock()
	g := current(path.Base(r.URL.Path))
	mu.Unlock()
	select {
	case <-g.done:
		w.Header().Set("Content-Length", strconv.Itoa(len(g.body)))
		_, err := w.Write(g.body)
		return err
	case <-r.Context().Done():
		return nil
	}
}

// Interface guards
var (
	_ caddyhttp.MiddlewareHandler = (*BareHold)(nil)
	_ caddyfile.Unmarshaler       = (*BareHold)(nil)
)
