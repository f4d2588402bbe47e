// Redis: the state replicas share (the package comment is in store.go).

package store

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// ErrUnavailable is wrapped by the errors of Redis's Claim, Advance, Revoke and
// Revoked when Redis cannot be asked (it failed less than
// RedisConfig.Retry ago) or the round trip failed. The broker fails
// closed on it: 503 with Retry-After, never a second use of a code or a
// refresh token.
var ErrUnavailable = errors.New("store: redis unavailable")

// Operations, the op of RedisConfig.OnOp (a metric label: a fixed set).
const (
	OpAdmit      = "admit"      // RedisLimiter.Admit: revocation check and budget, one round trip
	OpAllow      = "allow"      // RedisLimiter.Allow
	OpSpend      = "spend"      // RedisLimiter.Spend
	OpClaim      = "claim"      // Redis.Claim
	OpAdvance    = "advance"    // Redis.Advance
	OpGeneration = "generation" // Redis.Generation
	OpRevoke     = "revoke"     // Redis.Revoke
	OpRevoked    = "revoked"    // Redis.Revoked
	OpPing       = "ping"       // Redis.Run's health probe
)

// Results of an operation, the result of RedisConfig.OnOp.
const (
	// ResultOK: Redis answered.
	ResultOK = "ok"
	// ResultError: the round trip failed. A limit was then decided from
	// this replica's state; a claim, revocation or revocation check failed.
	ResultError = "error"
	// ResultSkipped: Redis was not asked, because it failed less than
	// RedisConfig.Retry ago. A limit was decided from this replica's state;
	// a claim, revocation or revocation check failed.
	ResultSkipped = "skipped"
)

// Ops lists every operation, for metrics to create their series up front.
func Ops() []string {
	return []string{OpAdmit, OpAllow, OpSpend, OpClaim, OpAdvance, OpGeneration, OpRevoke, OpRevoked, OpPing}
}

// Results lists every result of an operation.
func Results() []string { return []string{ResultOK, ResultError, ResultSkipped} }

// Defaults of RedisConfig and of the client's timeouts. A round trip on the
// request path waits at most a few hundred milliseconds for a Redis that
// stopped answering; after a failure, requests stop asking it for Retry.
const (
	DefaultRedisPrefix   = "mop:"
	defaultRedisTimeout  = 300 * time.Millisecond
	defaultRedisRetry    = time.Second
	defaultRedisProbe    = 5 * time.Second
	redisStillDownLogGap = time.Minute
	// A revocation Redis holds without a TTL (none of ours) is remembered
	// locally this long.
	revokedNoTTL = time.Hour
)

// RedisConfig configures OpenRedis. Only URL is required.
type RedisConfig struct {
	// URL is STORE_URL: redis://[user:password@]host[:port][/db], or
	// rediss:// for TLS. go-redis's query parameters (dial_timeout,
	// read_timeout, write_timeout, pool_size, pool_timeout, max_retries,
	// ...) are honoured; the timeouts default to 300 ms each, retries to
	// none (a retried claim could report a first use as a second), and
	// pool_size to go-redis's 10 per CPU.
	URL string

	// TLSConfig, when not nil, replaces the TLS settings of a rediss URL
	// (an empty ServerName becomes the URL's host). Nil: the system's
	// roots (SSL_CERT_FILE and SSL_CERT_DIR are honoured), TLS 1.2 or
	// later. Ignored for redis URLs.
	TLSConfig *tls.Config

	// Prefix starts every key, so that the gateway's keys never meet
	// another application's in a shared Redis. Empty: DefaultRedisPrefix.
	Prefix string

	// Retry is how long after a failed round trip the store answers from
	// this replica's state without asking Redis; the next request after it
	// (or Run's probe) tries again. Zero: 1 s.
	Retry time.Duration

	// Probe is how often Run pings Redis while it answers (while it does
	// not, Run pings every Retry). Zero: 5 s.
	Probe time.Duration

	// LocalMaxEntries bounds the revocations this replica remembers itself
	// (those it made and those Redis reported): MemoryConfig.MaxEntries.
	LocalMaxEntries int

	// Logger says when Redis stops answering (with the error) and when it
	// answers again: one line per change, and while it stays unreachable
	// one a minute; never one per request. Nil: hclog.NewNullLogger().
	Logger hclog.Logger

	// OnOp is called after every operation with its op (one of Ops()), its
	// result (one of Results()) and, unless skipped, the round trip's
	// duration. It runs on the request path: it must be cheap and safe for
	// concurrent use. Nil: nothing is reported.
	OnOp func(op, result string, d time.Duration)

	// OnFallback is called with true when the store starts answering from
	// this replica's state (Redis failed) and with false when Redis
	// answers again. Nil: nothing is reported.
	OnFallback func(active bool)

	// Now is the clock of this replica's own state (its copies of the
	// limits, its revocations) and of Retry. Redis's decisions use Redis's
	// own clock (TIME), so replicas whose clocks disagree still agree.
	// Nil: time.Now.
	Now func() time.Time
}

// Redis keeps one-time values and revocations in Redis, shared by every
// replica that uses the same Redis (and BROKER_SECRET), and makes the
// limits of RedisLimiter. Its Claim, Revoke and Revoked have Memory's
// method set, so the broker's Store takes either.
//
// When Redis does not answer:
//
//   - Claim fails (ErrUnavailable): a code or refresh token is never
//     accepted twice; the broker answers 503 with Retry-After.
//   - Revoke remembers the key in this replica at once and fails: the
//     revocation holds here, and the client is told to retry.
//   - Revoked answers true from this replica's revocations, and otherwise
//     fails.
//   - RedisLimiter's decisions (Admit, Allow, Spend) are taken from this
//     replica's state: its copy of each budget as Redis last reported it,
//     and the revocations it made or learned. Each replica then admits the
//     full rate by itself.
//
// A failed round trip makes the store skip Redis for RedisConfig.Retry,
// so a Redis that is down costs requests little; go-redis reconnects by
// itself, and Run's probe notices when Redis is back. A request whose
// context ended is not a failure of Redis.
//
// Keys: Prefix+"v:"+key for values and revocations, Prefix+"rl:"+name+":"+key
// for limits; every key has a TTL, so nothing grows without bound.
// Redis 5 or later is needed (scripts with effects replication).
type Redis struct {
	client   *redis.Client
	addr     string // host:port, for logs only
	prefix   string // Prefix + "v:"
	rlPrefix string // Prefix + "rl:"
	local    *Memory
	retry    time.Duration
	probe    time.Duration
	log      hclog.Logger
	onOp     func(op, result string, d time.Duration)
	onFall   func(bool)
	now      func() time.Time

	limitScript, revokeScript, claimScript, advanceScript *redis.Script

	wake      chan struct{} // a request saw Redis fail: Run probes every Retry from now
	trips     atomic.Uint64 // commands sent (RoundTrips)
	skipUntil atomic.Int64  // unix nanoseconds (of now); 0: Redis is asked
	down      atomic.Bool
	checked   atomic.Bool   // a probe or an operation has had an answer or an error
	outages   atomic.Uint64 // times Redis went down: Run checks its settings again after each

	mu        sync.Mutex // serializes changes of state, and guards the fields below
	downSince time.Time
	lastLog   time.Time
}

// CheckRedisURL reports whether s is a STORE_URL OpenRedis accepts. Its
// error never repeats s, which may hold a password.
func CheckRedisURL(s string) error {
	_, err := parseRedisURL(s)
	return err
}

// parseRedisURL parses STORE_URL; its errors never contain the password.
func parseRedisURL(s string) (*redis.Options, error) {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return nil, errors.New("is not a URL such as redis://:password@host:6379/0")
	case u.Scheme != "redis" && u.Scheme != "rediss":
		return nil, errors.New("must start with redis:// or rediss:// (TLS)")
	case u.Hostname() == "":
		return nil, errors.New("names no host (redis://:password@host:6379/0)")
	}
	opt, err := redis.ParseURL(s)
	if err != nil { // go-redis names the bad part (database, option), not the password
		return nil, fmt.Errorf("is not a usable Redis URL: %s", strings.TrimPrefix(err.Error(), "redis: "))
	}
	return opt, nil
}

// OpenRedis makes the client for cfg.URL. It does not connect: go-redis
// dials on first use, and Run's first probe says whether Redis answers.
// Close it when done.
func OpenRedis(cfg RedisConfig) (*Redis, error) {
	opt, err := parseRedisURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("open redis: STORE_URL %w", err)
	}
	for _, d := range []*time.Duration{&opt.DialTimeout, &opt.ReadTimeout, &opt.WriteTimeout, &opt.PoolTimeout} {
		if *d == 0 {
			*d = defaultRedisTimeout
		}
	}
	if opt.MaxRetries == 0 {
		opt.MaxRetries = -1 // none
	}
	opt.DialerRetries = 1 // one dial per attempt: a refused dial fails at once
	opt.DisableIdentity = true
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	if opt.TLSConfig != nil && cfg.TLSConfig != nil {
		tc := cfg.TLSConfig.Clone()
		if tc.ServerName == "" {
			tc.ServerName = opt.TLSConfig.ServerName
		}
		opt.TLSConfig = tc
	}
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	r := &Redis{
		addr:     opt.Addr,
		prefix:   prefix + "v:",
		rlPrefix: prefix + "rl:",
		local:    NewMemory(MemoryConfig{MaxEntries: cfg.LocalMaxEntries, Now: cfg.Now}),
		retry:    cfg.Retry,
		probe:    cfg.Probe,
		log:      cfg.Logger,
		onOp:     cfg.OnOp,
		onFall:   cfg.OnFallback,
		now:      cfg.Now,

		limitScript:   redis.NewScript(limitLua),
		revokeScript:  redis.NewScript(revokeLua),
		claimScript:   redis.NewScript(claimLua),
		advanceScript: redis.NewScript(advanceLua),
		wake:          make(chan struct{}, 1),
	}
	if r.retry <= 0 {
		r.retry = defaultRedisRetry
	}
	if r.probe <= 0 {
		r.probe = defaultRedisProbe
	}
	if r.log == nil {
		r.log = hclog.NewNullLogger()
	}
	if r.now == nil {
		r.now = time.Now
	}
	r.client = redis.NewClient(opt)
	r.client.AddHook(tripCounter{&r.trips})
	return r, nil
}

// Addr is the host:port of Redis, for logs (never the URL: it may hold a
// password).
func (r *Redis) Addr() string { return r.addr }

// Close closes the client's connections. Operations after it fail.
func (r *Redis) Close() error { return r.client.Close() }

// RoundTrips is the number of commands sent to Redis so far (a script's
// NOSCRIPT retry counts twice), for benchmarks and tests.
func (r *Redis) RoundTrips() uint64 { return r.trips.Load() }

// Claim remembers key for ttl in Redis and reports whether this call is
// the first to claim it (atomic across replicas): ClaimSince without the
// time. It fails, and claims nothing this replica would honour, when Redis
// cannot answer.
func (r *Redis) Claim(ctx context.Context, key string, ttl time.Duration) (first bool, err error) {
	first, _, err = r.ClaimSince(ctx, key, ttl)
	return first, err
}

// ClaimSince claims key for ttl unless someone has (one script, atomic
// across replicas) and reports, when this call is not the first, how long
// ago the first claim was, by Redis's clock. A key an older gateway claimed
// (without a time) reads as claimed long ago.
func (r *Redis) ClaimSince(ctx context.Context, key string, ttl time.Duration) (first bool, since time.Duration, err error) {
	if ttl <= 0 {
		return false, 0, fmt.Errorf("claim: ttl %v is not positive", ttl)
	}
	if r.skipping(OpClaim) {
		return false, 0, fmt.Errorf("claim: %w", ErrUnavailable)
	}
	start := time.Now()
	mark := claimMark()
	ms, err := r.claimScript.Run(ctx, r.client, []string{r.prefix + key}, ttl.Milliseconds()+1, mark).Int64()
	if r.done(ctx, OpClaim, start, err) {
		// Redis may have made the claim and its answer be what failed:
		// the caller answers "retry", so the claim must not stand.
		go r.release(releaseLua, r.prefix+key, mark, ttl)
		return false, 0, fmt.Errorf("claim: %w: %w", ErrUnavailable, err)
	}
	if ms < 0 {
		return true, 0, nil
	}
	return false, time.Duration(ms) * time.Millisecond, nil
}

// claimMark is what marks one claim attempt in the value it sets: the
// claim's time stays first, so older gateways read it as before.
func claimMark() string {
	var b [9]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	return ":" + base64.RawURLEncoding.EncodeToString(b[:])
}

// releaseAnswers is how many answers that there is nothing to release
// release waits for: the failed claim may reach Redis after the first, on
// the connection it was sent on.
const releaseAnswers = 3

// release undoes a claim whose answer failed, if Redis made it: the
// caller told its client to retry, and the code or refresh token must
// still be good then. It asks every Retry, for as long as the claim would
// last, until it has released the claim or Redis has answered
// releaseAnswers times that there is none. A claim of someone else's,
// with another mark, stays.
func (r *Redis) release(script, key, mark string, ttl time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), ttl)
	defer cancel()
	for nothing := 0; nothing < releaseAnswers; {
		n, err := r.client.Eval(ctx, script, []string{key}, mark).Int64()
		switch {
		case err == nil && n > 0:
			r.log.Info("released a claim whose answer was lost: the client's retry will find it unused")
			return
		case err == nil:
			nothing++
		case errors.Is(err, redis.ErrClosed):
			return // the gateway is stopping
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.retry):
		}
	}
}

// Advance moves key on from generation gen to gen+1 for ttl (one script,
// atomic across replicas, timed by Redis's clock); Move says what it
// answers. It fails, and advances nothing this replica would honour, when
// Redis cannot answer: a move whose answer was lost is moved back once
// Redis answers, so the client's retry finds its generation current.
func (r *Redis) Advance(ctx context.Context, key string, gen int64, ttl time.Duration) (Move, error) {
	if err := checkAdvance(gen, ttl); err != nil {
		return Move{}, err
	}
	if r.skipping(OpAdvance) {
		return Move{}, fmt.Errorf("advance: %w", ErrUnavailable)
	}
	start := time.Now()
	mark := claimMark()
	res, err := r.advanceScript.Run(ctx, r.client, []string{r.prefix + key}, ttl.Milliseconds()+1, gen, mark, Moves).Int64Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("the advance script answered %d values, want 2", len(res))
	}
	if r.done(ctx, OpAdvance, start, err) {
		go r.release(moveBackLua, r.prefix+key, mark, ttl)
		return Move{}, fmt.Errorf("advance: %w: %w", ErrUnavailable, err)
	}
	switch cur, ms := res[0], res[1]; {
	case ms == -1:
		return Move{Advanced: true, Current: cur}, nil
	case ms < 0:
		return Move{Since: Superseded, Current: cur}, nil
	default:
		return Move{Since: time.Duration(ms) * time.Millisecond, Current: cur}, nil
	}
}

// Generation is the generation key is at in Redis (1 when it was never
// advanced or has expired), without moving it. It fails when Redis cannot
// answer or holds something else under key.
func (r *Redis) Generation(ctx context.Context, key string) (int64, error) {
	if r.skipping(OpGeneration) {
		return 0, fmt.Errorf("generation: %w", ErrUnavailable)
	}
	start := time.Now()
	v, err := r.client.Get(ctx, r.prefix+key).Result()
	if r.done(ctx, OpGeneration, start, err) {
		return 0, fmt.Errorf("generation: %w: %w", ErrUnavailable, err)
	}
	if errors.Is(err, redis.Nil) {
		return 1, nil
	}
	g, _, ok := strings.Cut(v, ":")
	n, perr := strconv.ParseInt(g, 10, 64)
	if !ok || perr != nil || n < 1 {
		return 0, fmt.Errorf("generation: %s holds no generation", key)
	}
	return n, nil
}

// Revoke remembers key as revoked for at least ttl (a longer earlier TTL
// is kept), in this replica at once and in Redis. It fails when Redis
// cannot answer; the revocation then holds in this replica only.
func (r *Redis) Revoke(ctx context.Context, key string, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("revoke: ttl %v is not positive", ttl)
	}
	_ = r.local.Revoke(ctx, key, ttl) // ErrFull here still leaves Redis to answer
	if r.skipping(OpRevoke) {
		return fmt.Errorf("revoke: %w", ErrUnavailable)
	}
	start := time.Now()
	err := r.revokeScript.Run(ctx, r.client, []string{r.prefix + key}, ttl.Milliseconds()+1).Err()
	if r.done(ctx, OpRevoke, start, err) {
		return fmt.Errorf("revoke: %w: %w", ErrUnavailable, err)
	}
	return nil
}

// Revoked reports whether any of keys is revoked (or claimed): from this
// replica's revocations without a round trip when they say so, else from
// Redis. It fails when it must ask Redis and Redis cannot answer.
func (r *Redis) Revoked(ctx context.Context, keys ...string) (bool, error) {
	if len(keys) == 0 {
		return false, nil
	}
	if known, _ := r.local.Revoked(ctx, keys...); known {
		return true, nil
	}
	if r.skipping(OpRevoked) {
		return false, fmt.Errorf("revoked: %w", ErrUnavailable)
	}
	full := make([]string, len(keys))
	for i, k := range keys {
		full[i] = r.prefix + k
	}
	start := time.Now()
	n, err := r.client.Exists(ctx, full...).Result()
	if r.done(ctx, OpRevoked, start, err) {
		return false, fmt.Errorf("revoked: %w: %w", ErrUnavailable, err)
	}
	return n > 0, nil
}

// probeKey is the key Run writes to see that Redis takes writes again.
const probeKey = "mop:probe"

// Run probes Redis until ctx ends: a PING every RedisConfig.Probe while it
// answers, every Retry while it does not (then a write too), so the state /readyz names is
// current and a Redis that came back is used again without waiting for a
// request. It returns nil when ctx ends; it does not close the client.
//
// After its first answer, and again after each outage (a Redis may come
// back restarted with other settings), Run reads Redis's settings once
// and warns when they would let it forget what it holds (checkSettings).
func (r *Redis) Run(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	checkedAt := ^uint64(0) // the outage count at the last settings check: none yet
	runID := ""             // Redis's run_id at the last probe; "-": INFO is refused
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
			t.Reset(r.retry)
			continue
		case <-t.C:
		}
		wasDown := r.down.Load()
		start := time.Now()
		err := r.client.Ping(ctx).Err()
		if err == nil && wasDown {
			// A full Redis (maxmemory with noeviction) answers PING and
			// reads but refuses writes: it is back when it takes one.
			err = r.client.Set(ctx, probeKey, "1", r.retry).Err()
		}
		if err == nil && wasDown {
			// Redis may have restarted without its script cache: load the
			// scripts now, so the request path keeps to one round trip.
			err = errors.Join(r.limitScript.Load(ctx, r.client).Err(), r.revokeScript.Load(ctx, r.client).Err(),
				r.claimScript.Load(ctx, r.client).Err(), r.advanceScript.Load(ctx, r.client).Err())
		}
		r.done(ctx, OpPing, start, err)
		if err == nil && !r.down.Load() && r.restarted(ctx, &runID) {
			checkedAt = ^uint64(0) // a restart quicker than a probe: no outage was seen
		}
		if n := r.outages.Load(); err == nil && n != checkedAt && !r.down.Load() && r.checkSettings(ctx) {
			checkedAt = n
		}
		next := r.probe
		if r.down.Load() {
			next = r.retry
		}
		t.Reset(next)
	}
}

// Ready reports Redis's state for /readyz. It is always ready: a Redis
// outage must not take every replica out of the load balancer, since each
// can still admit requests from its own state. The detail never names the
// address (it is a public answer).
func (r *Redis) Ready() (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case !r.checked.Load():
		return true, "redis not checked yet"
	case r.down.Load():
		return true, fmt.Sprintf("redis unreachable for %s: limits and revocation checks use this replica's state; codes and refresh tokens are refused until it answers",
			r.now().Sub(r.downSince).Round(time.Second))
	}
	return true, "redis reachable"
}

// skipping reports (and counts) that op does not ask Redis now, because a
// round trip failed less than Retry ago.
func (r *Redis) skipping(op string) bool {
	u := r.skipUntil.Load()
	if u == 0 || r.now().UnixNano() >= u {
		return false
	}
	if r.onOp != nil {
		r.onOp(op, ResultSkipped, 0)
	}
	return true
}

// done reports op's round trip, which began at start, and follows Redis's
// state from its outcome. It reports whether err is a failure (redis.Nil,
// an absent key, is an answer). An error after ctx ended is the caller's,
// not Redis's: it does not change the state.
func (r *Redis) done(ctx context.Context, op string, start time.Time, err error) (failed bool) {
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	if r.onOp != nil {
		res := ResultOK
		if err != nil {
			res = ResultError
		}
		r.onOp(op, res, time.Since(start))
	}
	switch {
	case err == nil && (op == OpRevoked || op == OpGeneration) && r.down.Load():
		// A read answers where writes may still be refused (a full
		// Redis): Run's probe, which writes, says when Redis is back.
	case err == nil:
		if r.down.Load() || r.skipUntil.Load() != 0 || !r.checked.Load() {
			r.up()
		}
	case ctx.Err() == nil:
		r.fail(err)
	}
	return err != nil
}

// up records that Redis answered.
func (r *Redis) up() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checked.Store(true)
	r.skipUntil.Store(0)
	if !r.down.Load() {
		return
	}
	r.down.Store(false)
	r.log.Info("redis reachable again; shared limits and revocations are used", "addr", r.addr,
		"duration", r.now().Sub(r.downSince).Round(time.Millisecond))
	if r.onFall != nil {
		r.onFall(false)
	}
}

// fail records that a round trip failed with err.
func (r *Redis) fail(err error) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checked.Store(true)
	r.skipUntil.Store(now.Add(r.retry).UnixNano())
	if r.down.Load() {
		if now.Sub(r.lastLog) >= redisStillDownLogGap {
			r.lastLog = now
			r.log.Warn("redis still unreachable", "addr", r.addr, "error", err,
				"duration", now.Sub(r.downSince).Round(time.Second))
		}
		return
	}
	r.down.Store(true)
	r.outages.Add(1)
	r.downSince, r.lastLog = now, now
	select {
	case r.wake <- struct{}{}:
	default: // Run is already woken
	}
	r.log.Warn("redis unreachable: limits and revocation checks use this replica's state; codes and refresh tokens are refused until it answers",
		"addr", r.addr, "error", err)
	if r.onFall != nil {
		r.onFall(true)
	}
}

// checkSettings reads Redis's persistence and memory settings (INFO) and
// warns, once per check, about each that would let Redis forget what the
// gateway keeps there (settingsWarnings). A Redis that refuses INFO (an ACL
// without it, a managed Redis that renames it) gets one line saying what
// to check by hand. It reports false when Redis did not answer, so that
// the next probe tries again. It runs on Run's probe, never on a request.
func (r *Redis) checkSettings(ctx context.Context) bool {
	fields := map[string]string{}
	for _, section := range []string{"persistence", "memory"} { // one per INFO: Redis before 7 takes one section
		s, err := r.client.Info(ctx, section).Result()
		var refused redis.Error
		switch {
		case errors.As(err, &refused):
			r.log.Info("could not read redis's settings: make sure it runs with appendonly yes and maxmemory-policy noeviction (docs/replicas.md)",
				"addr", r.addr, "error", err)
			return true
		case err != nil:
			return false
		}
		parseInfo(s, fields)
	}
	for _, w := range settingsWarnings(fields) {
		r.log.Warn(w, "addr", r.addr)
	}
	return true
}

// restarted reports whether Redis's run_id (INFO server) differs from
// *last, the one the last probe saw, and keeps the new one there: a Redis
// that restarted between two probes (go-redis reconnects quietly) may have
// forgotten what it held or come back with other settings. A Redis that
// refuses INFO is not asked again (checkSettings says so once).
func (r *Redis) restarted(ctx context.Context, last *string) bool {
	if *last == "-" {
		return false
	}
	s, err := r.client.Info(ctx, "server").Result()
	var refused redis.Error
	switch {
	case errors.As(err, &refused):
		*last = "-"
		return false
	case err != nil:
		return false
	}
	fields := map[string]string{}
	parseInfo(s, fields)
	id := fields["run_id"]
	if id == "" || id == *last {
		return false
	}
	was := *last
	*last = id
	if was == "" {
		return false // the first answer
	}
	r.log.Warn("redis restarted between two health probes (its run_id changed); reading its settings again", "addr", r.addr)
	return true
}

// parseInfo adds the "field:value" lines of an INFO answer to fields.
// Not go-redis's InfoMap: it panics on a line before any "# Section"
// header, which a Redis-compatible server need not send.
func parseInfo(s string, fields map[string]string) {
	for line := range strings.Lines(s) {
		line = strings.TrimRight(line, "\r\n")
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(k, "#") {
			fields[k] = v
		}
	}
}

// settingsWarnings names each of Redis's settings (from INFO's fields)
// under which it could forget a used code, a rotated refresh token or a
// revocation before its TTL: no append-only file (a restart loses them), or
// a memory limit with a policy that evicts keys (every key of the gateway's
// has a TTL, so the volatile-* policies evict them too). A field INFO did
// not give is not guessed at.
func settingsWarnings(fields map[string]string) []string {
	var w []string
	if fields["aof_enabled"] == "0" {
		w = append(w, "redis has no append-only file (appendonly no): after a restart it has forgotten used codes, rotated refresh tokens and revocations, and one could be used again; run it with appendonly yes (docs/replicas.md)")
	}
	if p, max := fields["maxmemory_policy"], fields["maxmemory"]; p != "" && p != "noeviction" && max != "" && max != "0" {
		w = append(w, "redis may evict the gateway's keys (maxmemory-policy "+p+" with maxmemory set): a used code or a revocation could be forgotten before it expires; use maxmemory-policy noeviction (docs/replicas.md)")
	}
	return w
}

// tripCounter is a go-redis hook that counts the commands sent.
type tripCounter struct{ n *atomic.Uint64 }

func (h tripCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h tripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h tripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// RedisLibraryLogs sends what go-redis itself logs (each failed dial,
// for one) to l at debug level instead of to stderr as plain text: it is
// a detail of the state lines Redis logs already. go-redis has a single
// logger for the whole process, so main calls this once.
func RedisLibraryLogs(l hclog.Logger) { redis.SetLogger(libraryLogger{l}) }

type libraryLogger struct{ l hclog.Logger }

func (g libraryLogger) Printf(_ context.Context, format string, v ...any) {
	if g.l.IsDebug() {
		g.l.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)))
	}
}
