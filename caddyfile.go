package longpoll

import (
	"encoding/json"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("longpoll", parseGlobal)
	httpcaddyfile.RegisterHandlerDirective("longpoll", parsePoll)
	httpcaddyfile.RegisterHandlerDirective("longpoll_publish", parsePublish)
	// Each lands just before respond, so longpoll_publish sorts before
	// longpoll: a publish path still works beside a catch-all poll.
	httpcaddyfile.RegisterDirectiveOrder("longpoll_publish", httpcaddyfile.Before, "respond")
	httpcaddyfile.RegisterDirectiveOrder("longpoll", httpcaddyfile.Before, "respond")
}

// parseGlobal parses the global option:
//
//	longpoll {
//		store <type> {
//			...        # the store's own options
//		}
//		max_held <n>   # -1: no limit
//	}
func parseGlobal(d *caddyfile.Dispenser, _ any) (any, error) {
	app := new(App)
	d.Next() // "longpoll"
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "store":
			raw, err := parseModule[StoreModule](d, "longpoll.stores", "type", "a store")
			if err != nil {
				return nil, err
			}
			app.StoreRaw = raw
		case "max_held":
			n, err := intArg(d, -1)
			if err != nil {
				return nil, err
			}
			if n == 0 {
				return nil, d.Errf("max_held must be at least 1 (or -1 for no limit), got 0")
			}
			app.MaxHeld = n
		default:
			return nil, d.Errf("unrecognized longpoll option %q", d.Val())
		}
	}
	return httpcaddyfile.App{Name: "longpoll", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile parses the memory store's options:
//
//	store memory {
//		buffer <n>          # messages kept per channel (default 100)
//		ttl    <duration>   # how long a message is kept (default 1h)
//	}
func (m *MemoryStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // "memory"
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "buffer":
			n, err := intArg(d, 1)
			if err != nil {
				return err
			}
			m.Buffer = n
		case "ttl":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			m.TTL = dur
		default:
			return d.Errf("unrecognized memory store option %q", d.Val())
		}
	}
	return nil
}

// parsePoll parses the poll directive:
//
//	longpoll [<matcher>] {
//		channel      <template>   # default {http.request.uri.path.file}
//		timeout      <duration>   # default 30s
//		format       json|raw     # default json
//		cursor_param <name>       # default since
//		park                      # HTTP/1.x: park waiting polls' connections (see Poll.Park)
//		auth <method> {           # who may poll which channel, e.g. auth jwt (see JWTAuth)
//			...
//		}
//	}
func parsePoll(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	p := new(Poll)
	h.Next() // "longpoll"
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	for h.NextBlock(0) {
		switch h.Val() {
		case "channel":
			if !h.AllArgs(&p.Channel) {
				return nil, h.ArgErr()
			}
		case "timeout":
			dur, err := durationArg(h.Dispenser)
			if err != nil {
				return nil, err
			}
			p.Timeout = dur
		case "format":
			var f string
			if !h.AllArgs(&f) {
				return nil, h.ArgErr()
			}
			if err := Format(f).check(); err != nil {
				return nil, h.Err(err.Error())
			}
			p.Format = Format(f)
		case "cursor_param":
			if !h.AllArgs(&p.CursorParam) {
				return nil, h.ArgErr()
			}
		case "park":
			if h.NextArg() {
				return nil, h.ArgErr()
			}
			p.Park = true
		case "auth":
			raw, err := parseAuth(h.Dispenser)
			if err != nil {
				return nil, err
			}
			p.AuthRaw = raw
		default:
			return nil, h.Errf("unrecognized longpoll option %q", h.Val())
		}
	}
	return p, nil
}

// parsePublish parses the publish directive:
//
//	longpoll_publish [<matcher>] {
//		channel  <template>        # default {http.request.uri.path.file}
//		allow    <ip|cidr...>      # default 127.0.0.1/8 ::1; repeatable
//		token    <token>           # then Authorization: Bearer <token> is required
//		max_size <size>            # default 1MiB
//		auth <method> {            # publishing with grants, e.g. auth jwt (see JWTAuth)
//			...
//		}
//	}
func parsePublish(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	p := new(Publish)
	h.Next() // "longpoll_publish"
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	for h.NextBlock(0) {
		switch h.Val() {
		case "channel":
			if !h.AllArgs(&p.Channel) {
				return nil, h.ArgErr()
			}
		case "allow":
			args := h.RemainingArgs()
			if len(args) == 0 {
				return nil, h.ArgErr()
			}
			for _, a := range args {
				if _, err := parsePrefix(a); err != nil {
					return nil, h.Errf("allow: %v", err)
				}
			}
			p.Allow = append(p.Allow, args...)
		case "token":
			if !h.AllArgs(&p.Token) {
				return nil, h.ArgErr()
			}
		case "auth":
			raw, err := parseAuth(h.Dispenser)
			if err != nil {
				return nil, err
			}
			p.AuthRaw = raw
		case "max_size":
			var s string
			if !h.AllArgs(&s) {
				return nil, h.ArgErr()
			}
			size, err := humanize.ParseBytes(s)
			if err != nil || size == 0 || size > 1<<40 {
				return nil, h.Errf("max_size must be a size such as 64KiB or 1MiB, got %q", s)
			}
			p.MaxSize = int64(size)
		default:
			return nil, h.Errf("unrecognized longpoll_publish option %q", h.Val())
		}
	}
	return p, nil
}

// parseAuth parses "auth <method> { ... }" into the JSON of the
// longpoll.auth module it names.
func parseAuth(d *caddyfile.Dispenser) (json.RawMessage, error) {
	return parseModule[Authorizer](d, "longpoll.auth", "method", "an authorizer")
}

// parseModule parses "<name> { ... }", after the option's name, into the
// JSON of the module namespace.<name>, its name under inlineKey; the
// module must be a T (what says what a T is, for the error).
func parseModule[T any](d *caddyfile.Dispenser, namespace, inlineKey, what string) (json.RawMessage, error) {
	if !d.NextArg() {
		return nil, d.ArgErr()
	}
	name := d.Val()
	unm, err := caddyfile.UnmarshalModule(d, namespace+"."+name)
	if err != nil {
		return nil, err
	}
	if _, ok := unm.(T); !ok {
		return nil, d.Errf("module %s.%s is not %s", namespace, name, what)
	}
	return caddyconfig.JSONModuleObject(unm, inlineKey, name, nil), nil
}

// intArg reads one integer argument of at least least.
func intArg(d *caddyfile.Dispenser, least int) (int, error) {
	name := d.Val()
	var s string
	if !d.AllArgs(&s) {
		return 0, d.ArgErr()
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < least {
		return 0, d.Errf("%s must be a whole number of at least %d, got %q", name, least, s)
	}
	return n, nil
}

// durationArg reads one positive duration argument.
func durationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	name := d.Val()
	var s string
	if !d.AllArgs(&s) {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil || dur <= 0 {
		return 0, d.Errf("%s must be a duration above 0 such as 30s or 1h, got %q", name, s)
	}
	return caddy.Duration(dur), nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*MemoryStore)(nil)
