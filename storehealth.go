package longpoll

import (
	"context"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/caddy-longpoll/longpoll/store"
)

// watchedStore is the store as the handlers use it: it logs a failing store
// once per outage (Warn, when the first call fails) and once when it
// recovers (Info, at the first call that succeeds again), instead of once
// per request. Each failed request is still answered, and returned to
// Caddy's error handling, by the handler.
type watchedStore struct {
	store.Store
	logger  *zap.Logger
	failing atomic.Bool
}

func (s *watchedStore) Append(ctx context.Context, channel string, m store.Message, key string) (store.Message, bool, error) {
	stored, dup, err := s.Store.Append(ctx, channel, m, key)
	s.note(ctx, "publish", channel, err)
	return stored, dup, err
}

func (s *watchedStore) Since(ctx context.Context, channel, cursor string) (store.Result, error) {
	res, err := s.Store.Since(ctx, channel, cursor)
	s.note(ctx, "poll", channel, err)
	return res, err
}

func (s *watchedStore) Info(ctx context.Context, channel string) (store.Info, error) {
	info, err := s.Store.Info(ctx, channel)
	s.note(ctx, "info", channel, err)
	return info, err
}

func (s *watchedStore) Delete(ctx context.Context, channel string) (bool, error) {
	had, err := s.Store.Delete(ctx, channel)
	s.note(ctx, "delete", channel, err)
	return had, err
}

// note records the outcome of one store call.
func (s *watchedStore) note(ctx context.Context, op, channel string, err error) {
	if err == nil {
		if s.failing.Load() && s.failing.CompareAndSwap(true, false) {
			s.logger.Info("longpoll store recovered", zap.String("op", op))
		}
		return
	}
	if ctx.Err() != nil {
		return // the request went away: not the store's failure
	}
	if s.failing.CompareAndSwap(false, true) {
		s.logger.Warn("longpoll store failing; polls and publishes that need it answer 503 (500 for other errors) until it recovers",
			zap.String("op", op), zap.String("channel", channel), zap.Error(err))
		return
	}
	s.logger.Debug("longpoll store failed", zap.String("op", op), zap.String("channel", channel), zap.Error(err))
}
