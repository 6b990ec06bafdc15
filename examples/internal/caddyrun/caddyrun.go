// Package caddyrun runs Caddy, with the plugin, in an example's own process.
package caddyrun

import (
	"fmt"
	"os"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile" // the caddyfile adapter
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-longpoll/longpoll"
)

// Load sets env (what the Caddyfile reads as {$NAME}), adapts the
// Caddyfile (filename names it in errors) and loads it into this process's
// Caddy; caddy.Stop stops it. Adapter warnings go to stderr, after name.
func Load(name, filename string, caddyfile []byte, env map[string]string) error {
	for k, v := range env {
		os.Setenv(k, v)
	}
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(caddyfile, map[string]any{"filename": filename})
	if err != nil {
		return fmt.Errorf("caddyfile: %v", err)
	}
	for _, w := range warnings {
		fmt.Fprintln(os.Stderr, name+": caddyfile:", w)
	}
	if err := caddy.Load(cfg, true); err != nil {
		return fmt.Errorf("caddy: %v (another -addr or -publish address?)", err)
	}
	return nil
}
