package longpoll

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddy-longpoll/longpoll/store"
)

func init() {
	caddy.RegisterModule(RedisStore{})
}

// DefaultRedisPrefix starts every key and the notification channel.
const DefaultRedisPrefix = "longpoll:"

// RedisStore keeps messages in Redis, so that several Caddy instances behind
// a load balancer share one stream of messages per channel: a poll may land
// on any instance and the app may publish through any instance. Cursors are
// valid on every instance and across Caddy restarts; if Redis itself loses
// its data, older cursors get a gap.
//
// Each option that takes a string may use {env.*} placeholders, for secrets.
type RedisStore struct {
	// Address is Redis's host:port. Default 127.0.0.1:6379. Set either
	// this or URL.
	Address string `json:"address,omitempty"`

	// URL is a redis:// or rediss:// (TLS) URL, as go-redis reads it:
	// redis://user:password@host:6379/0?dial_timeout=3s. Options set
	// beside it (username, password, db, tls) override the URL's.
	URL string `json:"url,omitempty"`

	// Username for Redis ACLs (AUTH username password).
	Username string `json:"username,omitempty"`

	// Password for AUTH. Use {env.REDIS_PASSWORD} to keep it out of the
	// config; it is never logged.
	Password string `json:"password,omitempty"`

	// DB is the database number (SELECT). Default 0. Redis Cluster has
	// only database 0.
	DB int `json:"db,omitempty"`

	// TLS, if set, connects with TLS.
	TLS *RedisTLS `json:"tls,omitempty"`

	// Prefix starts every key and the notification channel, so that
	// several deployments can share one Redis. It may not contain braces
	// (the channel name is the key's hash tag). Default "longpoll:".
	Prefix string `json:"prefix,omitempty"`

	// Buffer is how many messages each channel keeps; older ones are
	// dropped, and a poll whose cursor is older gets a gap. Default 100.
	Buffer int `json:"buffer,omitempty"`

	// TTL is how long a message is kept (and an idempotency key
	// remembered); a channel idle for longer expires in Redis. Default 1h.
	TTL caddy.Duration `json:"ttl,omitempty"`

	opts *redis.Options
}

// RedisTLS configures TLS to Redis.
type RedisTLS struct {
	// ServerName checks the server's certificate against this name;
	// default the host of the address.
	ServerName string `json:"server_name,omitempty"`

	// CA is a PEM file of the authorities trusted to sign the server's
	// certificate; default the system's.
	CA string `json:"ca,omitempty"`

	// InsecureSkipVerify turns off the certificate check. For tests only.
	InsecureSkipVerify bool `json:"insecure_skip_verify,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (RedisStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "longpoll.stores.redis",
		New: func() caddy.Module { return new(RedisStore) },
	}
}

var redisLoggerOnce sync.Once

// Provision applies the defaults, expands placeholders and builds the
// client options.
func (m *RedisStore) Provision(ctx caddy.Context) error {
	if m.Buffer == 0 {
		m.Buffer = DefaultBuffer
	}
	if m.TTL == 0 {
		m.TTL = caddy.Duration(DefaultTTL)
	}
	if m.Prefix == "" {
		m.Prefix = DefaultRedisPrefix
	}
	// go-redis logs every failed dial; the store logs once per outage.
	redisLoggerOnce.Do(func() {
		redis.SetLogger(redisLogger{caddy.Log().Named("longpoll.redis")})
	})

	repl := caddy.NewReplacer()
	expand := func(s string) string { return repl.ReplaceKnown(s, "") }
	if m.Address != "" && m.URL != "" {
		return fmt.Errorf("longpoll: redis store: set address or url, not both")
	}
	var opts *redis.Options
	if m.URL != "" {
		u := expand(m.URL)
		var err error
		opts, err = redis.ParseURL(u)
		if err != nil {
			// The URL may hold a password: never quote it.
			why := strings.ReplaceAll(err.Error(), u, "<url>")
			return fmt.Errorf("longpoll: redis store: bad url (want redis://[user:password@]host[:port][/db] or rediss://...): %s", why)
		}
	} else {
		addr := expand(m.Address)
		if addr == "" {
			addr = "127.0.0.1:6379"
		}
		opts = &redis.Options{Addr: addr}
	}
	if m.Username != "" {
		opts.Username = expand(m.Username)
	}
	if m.Password != "" {
		opts.Password = expand(m.Password)
	}
	if m.DB != 0 {
		opts.DB = m.DB
	}
	if m.TLS != nil {
		host, _, _ := strings.Cut(opts.Addr, ":")
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
		if opts.TLSConfig != nil {
			cfg = opts.TLSConfig
		}
		if n := expand(m.TLS.ServerName); n != "" {
			cfg.ServerName = n
		}
		if m.TLS.CA != "" {
			pem, err := os.ReadFile(expand(m.TLS.CA))
			if err != nil {
				return fmt.Errorf("longpoll: redis store: reading tls ca: %v", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("longpoll: redis store: tls ca %s holds no PEM certificate", m.TLS.CA)
			}
			cfg.RootCAs = pool
		}
		cfg.InsecureSkipVerify = m.TLS.InsecureSkipVerify
		opts.TLSConfig = cfg
	}
	// A held poll must not wait on a dead Redis for long: fail fast and
	// let the client retry (the store answers ErrUnavailable → 503).
	opts.MaxRetries = -1
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 2 * time.Second
	}
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = 2 * time.Second
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = 2 * time.Second
	}
	m.opts = opts
	return nil
}

// Validate checks the configuration.
func (m *RedisStore) Validate() error {
	if err := validateBuffer(m.Buffer, m.TTL); err != nil {
		return err
	}
	if time.Duration(m.TTL) < time.Millisecond {
		return fmt.Errorf("longpoll: redis store: ttl must be at least 1ms, got %v", time.Duration(m.TTL))
	}
	if strings.ContainsAny(m.Prefix, "{}") {
		return fmt.Errorf("longpoll: redis store: prefix %q may not contain braces", m.Prefix)
	}
	if m.DB < 0 {
		return fmt.Errorf("longpoll: redis store: db must be 0 or more, got %d", m.DB)
	}
	return nil
}

// NewStore implements StoreModule. Redis need not be up: the store keeps
// trying, and until it is reachable publishes answer 503.
func (m *RedisStore) NewStore(n store.Notifier, logger *zap.Logger) (store.Store, error) {
	return store.NewRedis(store.RedisConfig{
		Options: m.opts,
		Prefix:  m.Prefix,
		Buffer:  m.Buffer,
		TTL:     time.Duration(m.TTL),
		Logger:  logger,
	}, n), nil
}

// UnmarshalCaddyfile parses the Redis store's options:
//
//	store redis {
//		address  <host:port>          # default 127.0.0.1:6379
//		url      <redis://...>        # instead of address; rediss:// for TLS
//		username <name>
//		password <secret>             # e.g. {env.REDIS_PASSWORD}
//		db       <n>
//		tls {                         # or just: tls
//			server_name <name>
//			ca          <pem file>
//			insecure_skip_verify
//		}
//		prefix   <prefix>             # default longpoll:
//		buffer   <n>                  # default 100
//		ttl      <duration>           # default 1h
//	}
func (m *RedisStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // "redis"
	if d.NextArg() {
		return d.ArgErr()
	}
	str := func(dst *string) error {
		if !d.AllArgs(dst) {
			return d.ArgErr()
		}
		return nil
	}
	for d.NextBlock(0) {
		var err error
		switch d.Val() {
		case "address":
			err = str(&m.Address)
		case "url":
			err = str(&m.URL)
		case "username":
			err = str(&m.Username)
		case "password":
			err = str(&m.Password)
		case "prefix":
			err = str(&m.Prefix)
			if err == nil && strings.ContainsAny(m.Prefix, "{}") {
				err = d.Errf("prefix %q may not contain braces", m.Prefix)
			}
		case "db":
			m.DB, err = intArg(d, 0)
		case "buffer":
			m.Buffer, err = intArg(d, 1)
		case "ttl":
			m.TTL, err = durationArg(d)
		case "tls":
			if d.NextArg() {
				return d.ArgErr()
			}
			m.TLS = new(RedisTLS)
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch d.Val() {
				case "server_name":
					err = str(&m.TLS.ServerName)
				case "ca":
					err = str(&m.TLS.CA)
				case "insecure_skip_verify":
					if d.NextArg() {
						return d.ArgErr()
					}
					m.TLS.InsecureSkipVerify = true
				default:
					return d.Errf("unrecognized redis tls option %q", d.Val())
				}
				if err != nil {
					return err
				}
			}
		default:
			return d.Errf("unrecognized redis store option %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	if m.Address != "" && m.URL != "" {
		return d.Err("set address or url, not both")
	}
	return nil
}

// redisLogger sends go-redis's own log lines to Caddy's log at debug level.
type redisLogger struct{ l *zap.Logger }

func (r redisLogger) Printf(_ context.Context, format string, v ...any) {
	r.l.Debug(fmt.Sprintf(format, v...))
}

// Interface guards
var (
	_ StoreModule           = (*RedisStore)(nil)
	_ caddy.Provisioner     = (*RedisStore)(nil)
	_ caddy.Validator       = (*RedisStore)(nil)
	_ caddyfile.Unmarshaler = (*RedisStore)(nil)
)
