package main

import (
	"errors"

	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/broker"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/gate"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/metrics"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/store"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/wellknown"
)

// state is what the gateway remembers across requests: one-time values and
// revocations (broker.Config.Store), the per-subject admission (revocation
// check and rate limit, one decision), and the budgets of failed
// authentications and registrations. It lives in this process, unless
// STORE_URL names a Redis that replicas share.
type state struct {
	values   broker.Store
	subjects gate.Admitter
	failures gate.FailureLimiter
	register wellknown.Limiter
	// newLimiter makes another limit of the same kind (in memory, or
	// shared under name), for the broker's per-IP and per-client limits.
	newLimiter func(name string, perMinute int) (broker.Limiter, error)
	// redis is nil in memory: nothing to probe, report or close.
	redis *store.Redis
}

// newState builds the gateway's state from cfg. With STORE_URL it opens
// the Redis client (no connection yet: Run's first probe makes one) and
// routes go-redis's own log lines to logger at debug; m, when not nil,
// receives the store's metrics.
func newState(cfg *Config, logger hclog.Logger, m *metrics.Metrics) (*state, error) {
	if cfg.StoreURL == "" {
		values := store.NewMemory(store.MemoryConfig{})
		if m != nil {
			m.WatchMemoryStore(values.Len, values.Cap())
		}
		mem := func(perMinute int) (*store.Limiter, error) {
			return store.NewLimiter(store.LimiterConfig{PerMinute: perMinute})
		}
		subjects, err1 := mem(cfg.RateLimitRPM)
		failures, err2 := mem(gate.DefaultFailedAuthPerIPPerMinute)
		register, err3 := mem(wellknown.DefaultRegisterPerIPPerMinute)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, err
		}
		admission, err := store.NewAdmission(subjects, values)
		if err != nil {
			return nil, err
		}
		return &state{values: values, subjects: admission, failures: failures, register: register,
			newLimiter: func(_ string, perMinute int) (broker.Limiter, error) { return mem(perMinute) }}, nil
	}

	rc := store.RedisConfig{URL: cfg.StoreURL, Logger: logger.Named("store")}
	if m != nil {
		rc.OnOp, rc.OnFallback = m.StoreHooks()
	}
	store.RedisLibraryLogs(logger.Named("store"))
	rs, err := store.OpenRedis(rc)
	if err != nil {
		return nil, err
	}
	shared := func(name string, perMinute int) (*store.RedisLimiter, error) {
		return rs.Limiter(name, store.LimiterConfig{PerMinute: perMinute})
	}
	subjects, err1 := shared("sub", cfg.RateLimitRPM)
	failures, err2 := shared("authfail", gate.DefaultFailedAuthPerIPPerMinute)
	register, err3 := shared("register", wellknown.DefaultRegisterPerIPPerMinute)
	if err := errors.Join(err1, err2, err3); err != nil {
		_ = rs.Close()
		return nil, err
	}
	logger.Named("store").Info("limits, used codes and revocations are shared through redis", "addr", rs.Addr())
	return &state{values: rs, subjects: subjects, failures: failures, register: register, redis: rs,
		newLimiter: func(name string, perMinute int) (broker.Limiter, error) { return shared(name, perMinute) }}, nil
}

// close closes the Redis client, if any. It is idempotent.
func (s *state) close() {
	if s.redis != nil {
		_ = s.redis.Close()
	}
}
