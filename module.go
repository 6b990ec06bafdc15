// Package longpoll is a Caddy plugin that holds long-poll requests in the
// reverse proxy and answers them the moment an upstream app publishes to their
// channel.
//
// It has three Caddy modules: the app apps.longpoll (the store and the limit
// on held polls, shared by every handler and kept across config reloads), the
// handler http.handlers.longpoll (holds polls) and the handler
// http.handlers.longpoll_publish (the app's endpoint to publish, inspect and
// delete channels). Stores are modules in the longpoll.stores namespace.
package longpoll

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-longpoll/longpoll/internal/connwatch"
	"github.com/caddy-longpoll/longpoll/poller"
	"github.com/caddy-longpoll/longpoll/store"
)

func init() {
	caddy.RegisterModule(App{})
	caddy.RegisterModule(MemoryStore{})
	caddy.RegisterModule(Poll{})
	caddy.RegisterModule(Publish{})
}

// Defaults.
const (
	DefaultBuffer  = 100
	DefaultTTL     = time.Hour
	DefaultMaxHeld = 100000
)

// App is the longpoll app: where messages are stored and how many polls may
// be held at once. It is optional; without it a memory store with the
// defaults is used. The store and the held polls outlive config reloads as
// long as the store's configuration does not change.
type App struct {
	// Store is where messages are kept, a module in the longpoll.stores
	// namespace chosen by its "type". Default: {"type":"memory"}.
	StoreRaw json.RawMessage `json:"store,omitempty" caddy:"namespace=longpoll.stores inline_key=type"`

	// MaxHeld is the most polls held at once, over all channels and
	// handlers. A poll beyond it is answered 503 with Retry-After. Default
	// 100000; -1 means no limit.
	MaxHeld int `json:"max_held,omitempty"`

	shared  *shared
	poolKey string
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "longpoll",
		New: func() caddy.Module { return new(App) },
	}
}

// StoreModule is implemented by modules in the longpoll.stores namespace.
type StoreModule interface {
	caddy.Module
	// NewStore opens the configured store. n is told of changes the store
	// learns of from elsewhere (other instances).
	NewStore(n store.Notifier, logger *zap.Logger) (store.Store, error)
}

// pool keeps the store and the registry of held polls across config
// generations, keyed by the store's configuration.
var pool = caddy.NewUsagePool()

// shared is what one store configuration owns, whatever config generation
// uses it: the store, its held polls and its metrics.
type shared struct {
	store   store.Store // the store, as watchedStore
	poller  *poller.Poller
	metrics *metrics
	answers *answerCache
	parked  *parkedPolls
	watch   connwatch.Watcher // the clients of parked polls
	release memoryReleaser
	logger  *zap.Logger
}

// Destruct answers every held and parked poll (304, so clients re-poll into
// whatever replaced this store), waits for the goroutines that answer
// parked polls, and closes the store. The pool calls it when the last
// config using this store is cleaned up: on shutdown, or when a reload
// changes the store's configuration.
func (s *shared) Destruct() error {
	held := s.poller.Held()
	s.poller.Close()
	s.parked.drain()
	s.watch.Close()
	s.release.Close()
	err := s.store.Close()
	s.logger.Info("longpoll store closed", zap.Int("held_polls_answered", held), zap.Error(err))
	return err
}

// Provision opens (or joins) the store and registers the metrics.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	if a.MaxHeld == 0 {
		a.MaxHeld = DefaultMaxHeld
	}
	if a.StoreRaw == nil {
		a.StoreRaw = json.RawMessage(`{"type":"memory"}`)
	}
	mod, err := ctx.LoadModule(a, "StoreRaw")
	if err != nil {
		return fmt.Errorf("longpoll: loading store: %v", err)
	}
	sm, ok := mod.(StoreModule)
	if !ok {
		return fmt.Errorf("longpoll: module %T is not a store", mod)
	}
	// The key is the store's configuration after defaults, so that
	// spelling a default out does not replace the store on reload.
	cfg, err := json.Marshal(sm)
	if err != nil {
		return err
	}
	key := "longpoll:" + string(sm.CaddyModule().ID) + ":" + string(cfg)
	val, loaded, err := pool.LoadOrNew(key, func() (caddy.Destructor, error) {
		p := poller.New(0)
		w, err := connwatch.New()
		if err != nil {
			return nil, fmt.Errorf("watching parked connections: %v", err)
		}
		st, err := sm.NewStore(p, a.logger)
		if err != nil {
			w.Close()
			return nil, err
		}
		// Not the config: it may hold a password.
		a.logger.Info("longpoll store opened", zap.String("store", string(sm.CaddyModule().ID)))
		return &shared{store: &watchedStore{Store: st, logger: a.logger}, poller: p, metrics: newMetrics(p, st),
			answers: newAnswerCache(), parked: newParkedPolls(), watch: w, logger: a.logger}, nil
	})
	if err != nil {
		return fmt.Errorf("longpoll: opening store: %v", err)
	}
	a.poolKey = key // from here on Cleanup must let go of it
	a.shared = val.(*shared)
	if loaded {
		a.logger.Debug("longpoll store kept across reload", zap.Int("held_polls", a.shared.poller.Held()))
	}
	a.shared.poller.SetMaxHeld(max(a.MaxHeld, 0))
	return a.shared.metrics.register(ctx.GetMetricsRegistry())
}

// Validate checks the configuration.
func (a *App) Validate() error {
	if a.MaxHeld < -1 {
		return fmt.Errorf("longpoll: max_held must be at least 1 (or -1 for no limit), got %d", a.MaxHeld)
	}
	return nil
}

// Start implements caddy.App; the store is already open.
func (a *App) Start() error { return nil }

// Stop implements caddy.App. Held polls are not answered here: on a reload
// the next config keeps them (see shared.Destruct).
func (a *App) Stop() error { return nil }

// Cleanup lets go of the store; the last user closes it.
func (a *App) Cleanup() error {
	if a.poolKey == "" {
		return nil
	}
	_, err := pool.Delete(a.poolKey)
	return err
}

// appOf returns the longpoll app of ctx's config, provisioning one with the
// defaults if the config has none.
func appOf(ctx caddy.Context) (*App, error) {
	v, err := ctx.App("longpoll")
	if err != nil {
		return nil, fmt.Errorf("longpoll: getting app: %v", err)
	}
	return v.(*App), nil
}

// MemoryStore keeps messages in this Caddy process. Messages survive config
// reloads but not a restart; a poll with a cursor from before a restart is
// answered with a gap.
type MemoryStore struct {
	// Buffer is how many messages each channel keeps; older ones are
	// dropped, and a poll whose cursor is older gets a gap. Default 100.
	Buffer int `json:"buffer,omitempty"`

	// TTL is how long a message is kept (and an idempotency key
	// remembered). Default 1h.
	TTL caddy.Duration `json:"ttl,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (MemoryStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "longpoll.stores.memory",
		New: func() caddy.Module { return new(MemoryStore) },
	}
}

// Provision applies the defaults.
func (m *MemoryStore) Provision(caddy.Context) error {
	if m.Buffer == 0 {
		m.Buffer = DefaultBuffer
	}
	if m.TTL == 0 {
		m.TTL = caddy.Duration(DefaultTTL)
	}
	return nil
}

// Validate checks the configuration.
func (m *MemoryStore) Validate() error { return validateBuffer(m.Buffer, m.TTL) }

// validateBuffer checks the options every store has.
func validateBuffer(buffer int, ttl caddy.Duration) error {
	if buffer < 1 {
		return fmt.Errorf("longpoll: buffer must be at least 1, got %d", buffer)
	}
	if ttl <= 0 {
		return fmt.Errorf("longpoll: ttl must be more than 0, got %v", time.Duration(ttl))
	}
	return nil
}

// NewStore implements StoreModule.
func (m *MemoryStore) NewStore(store.Notifier, *zap.Logger) (store.Store, error) {
	return store.NewMemory(store.MemoryConfig{Buffer: m.Buffer, TTL: time.Duration(m.TTL)}), nil
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
	_ caddy.Destructor   = (*shared)(nil)
	_ StoreModule        = (*MemoryStore)(nil)
	_ caddy.Provisioner  = (*MemoryStore)(nil)
	_ caddy.Validator    = (*MemoryStore)(nil)
)
