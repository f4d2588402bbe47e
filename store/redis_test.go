package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/store/redistest"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// openTestRedis opens a client ("a replica") of srv; mod adjusts the
// config first. The client is closed when the test ends.
func openTestRedis(t *testing.T, srv *redistest.Server, mod func(*RedisConfig)) *Redis {
	t.Helper()
	cfg := RedisConfig{URL: srv.URL()}
	if mod != nil {
		mod(&cfg)
	}
	r, err := OpenRedis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func testRedisLimiter(t *testing.T, r *Redis, name string, perMinute int) *RedisLimiter {
	t.Helper()
	l, err := r.Limiter(name, LimiterConfig{PerMinute: perMinute, Now: r.now})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// ops records OnOp and OnFallback calls.
type ops struct {
	mu       sync.Mutex
	n        map[string]int // op/result
	fallback []bool
}

func (o *ops) hook(cfg *RedisConfig) {
	o.n = map[string]int{}
	cfg.OnOp = func(op, result string, _ time.Duration) {
		o.mu.Lock()
		o.n[op+"/"+result]++
		o.mu.Unlock()
	}
	cfg.OnFallback = func(active bool) {
		o.mu.Lock()
		o.fallback = append(o.fallback, active)
		o.mu.Unlock()
	}
}

func (o *ops) count(key string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[key]
}

func (o *ops) states() []bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]bool(nil), o.fallback...)
}

// TestRedisLimitSharedExactly: two replicas with 5 requests a minute
// between them, sent 10 requests in turn, admit exactly 5, whatever each
// replica's own clock says (the decisions use Redis's clock).
func TestRedisLimitSharedExactly(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	skewed := func(d time.Duration) func(*RedisConfig) {
		return func(c *RedisConfig) { c.Now = func() time.Time { return time.Now().Add(d) } }
	}
	a := testRedisLimiter(t, openTestRedis(t, srv, skewed(time.Hour)), "sub", 5)
	b := testRedisLimiter(t, openTestRedis(t, srv, skewed(-time.Hour)), "sub", 5)
	for _, tc := range []struct {
		name  string
		admit func(l *RedisLimiter, key string) (bool, time.Duration)
	}{
		{"allow", func(l *RedisLimiter, key string) (bool, time.Duration) { return l.Allow(ctx, key) }},
		{"admit", func(l *RedisLimiter, key string) (bool, time.Duration) {
			ok, wait, revoked := l.Admit(ctx, key, []string{"jti:" + key, "fam:" + key})
			if revoked {
				t.Fatalf("admit %s: revoked, want not", key)
			}
			return ok, wait
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "alice-" + tc.name
			admitted := 0
			for i := range 10 {
				l := a
				if i%2 == 1 {
					l = b
				}
				ok, wait := tc.admit(l, key)
				if ok {
					admitted++
				} else if wait <= 0 || wait > 12*time.Second {
					t.Errorf("request %d: refused with wait %v, want (0, 12s]", i, wait)
				}
			}
			if got, want := admitted, 5; got != want {
				t.Errorf("admitted: got %d, want %d", got, want)
			}
			if ok, _ := a.Allow(ctx, "bob-"+tc.name); !ok {
				t.Errorf("another key: refused, want allowed")
			}
		})
	}
}

// TestRedisLimitConcurrent: 40 concurrent requests over four replicas
// with a burst of 10 admit exactly 10.
func TestRedisLimitConcurrent(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	var ls []*RedisLimiter
	for range 4 {
		ls = append(ls, testRedisLimiter(t, openTestRedis(t, srv, nil), "sub", 10))
	}
	var admitted atomic.Int32
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			if ok, _, _ := ls[i%4].Admit(ctx, "carol", nil); ok {
				admitted.Add(1)
			}
		})
	}
	wg.Wait()
	if got, want := admitted.Load(), int32(10); got != want {
		t.Errorf("admitted: got %d, want %d", got, want)
	}
}

// TestRedisClaimOnce: many concurrent claims of one key through two
// replicas: exactly one is first.
func TestRedisClaimOnce(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rs := []*Redis{openTestRedis(t, srv, nil), openTestRedis(t, srv, nil)}
	firsts := racers(20, func(i int) bool {
		first, err := rs[i%2].Claim(ctx, "code:abc", time.Minute)
		if err != nil {
			t.Errorf("claim %d: %v", i, err)
		}
		return first
	})
	if firsts != 1 {
		t.Errorf("first claims: got %d, want 1", firsts)
	}
	if _, err := rs[0].Claim(ctx, "code:x", 0); err == nil {
		t.Errorf("claim with a zero ttl: got no error")
	}
}

// TestRedisClaimSince: how long ago a key was first claimed, by Redis's
// clock, whatever the replicas' clocks say; a key an older gateway claimed
// (SETNX of "1", no time stored) reads as claimed long ago, so a grace
// window never opens for it.
func TestRedisClaimSince(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := openTestRedis(t, srv, func(c *RedisConfig) { c.Now = func() time.Time { return time.Unix(1_000_000_000, 0) } })
	b := openTestRedis(t, srv, func(c *RedisConfig) { c.Now = func() time.Time { return time.Unix(2_000_000_000, 0) } })
	if first, since, err := a.ClaimSince(ctx, "rt:x", time.Minute); !first || since != 0 || err != nil {
		t.Fatalf("first claim at A: got %v, %v, %v", first, since, err)
	}
	time.Sleep(50 * time.Millisecond)
	first, since, err := b.ClaimSince(ctx, "rt:x", time.Minute)
	if first || err != nil || since < 50*time.Millisecond || since > 10*time.Second {
		t.Fatalf("claim at B: got %v, %v, %v; want false, 50ms-10s (Redis's clock), nil", first, since, err)
	}
	if first, err := rawClient(t, srv).SetNX(ctx, DefaultRedisPrefix+"v:rt:y", "1", time.Minute).Result(); !first || err != nil {
		t.Fatalf("an older gateway's claim of a new key: %v %v", first, err)
	}
	if first, since, _ := b.ClaimSince(ctx, "rt:y", time.Minute); first || since < 24*time.Hour {
		t.Fatalf("ClaimSince of a key an older gateway took: got %v, %v; want false, long ago", first, since)
	}
	if ttl := rawClient(t, srv).PTTL(ctx, DefaultRedisPrefix+"v:rt:x").Val(); ttl <= 0 || ttl > time.Minute+time.Second {
		t.Errorf("the claimed key's TTL: %v, want about a minute", ttl)
	}
}

// TestRedisAdvance: a family's generation moves on once per generation
// across replicas; a superseded generation learns how long ago the key
// moved on from it by Redis's clock, for as many moves as the key
// remembers, and which generation is current. A value that is not a
// generation fails closed, and the key keeps its TTL.
func TestRedisAdvance(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := openTestRedis(t, srv, func(c *RedisConfig) { c.Now = func() time.Time { return time.Unix(1_000_000_000, 0) } })
	b := openTestRedis(t, srv, func(c *RedisConfig) { c.Now = func() time.Time { return time.Unix(2_000_000_000, 0) } })
	advance := func(r *Redis, gen int64) Move {
		t.Helper()
		mv, err := r.Advance(ctx, "gen:f", gen, time.Minute)
		if err != nil {
			t.Fatalf("advance from %d: %v", gen, err)
		}
		return mv
	}
	if mv := advance(a, 1); mv != (Move{Advanced: true, Current: 2}) {
		t.Fatalf("advance from 1 at A: %+v", mv)
	}
	time.Sleep(50 * time.Millisecond)
	if mv := advance(b, 1); mv.Advanced || mv.Current != 2 || mv.Since < 50*time.Millisecond || mv.Since > 10*time.Second {
		t.Fatalf("advance from 1 again at B: got %+v; want superseded 50ms-10s ago (Redis's clock), at 2", mv)
	}
	for gen := int64(2); gen <= 5; gen++ {
		if mv := advance(b, gen); mv != (Move{Advanced: true, Current: gen + 1}) {
			t.Fatalf("advance from %d: %+v", gen, mv)
		}
	}
	if mv := advance(a, 2); mv.Advanced || mv.Current != 6 || mv.Since == Superseded || mv.Since > 10*time.Second {
		t.Fatalf("advance from 2, four behind: got %+v; want superseded moments ago, at 6", mv)
	}
	if mv := advance(a, 1); mv != (Move{Since: Superseded, Current: 6}) {
		t.Fatalf("advance from 1, five behind: got %+v; want Superseded at 6", mv)
	}
	if mv := advance(a, 9); mv != (Move{Advanced: true, Current: 10}) {
		t.Fatalf("advance from ahead of the key (a Redis that forgot): %+v", mv)
	}
	if mv := advance(b, 8); mv != (Move{Since: Superseded, Current: 10}) {
		t.Fatalf("advance from 8 after a jump to 10: %+v; want Superseded (no history)", mv)
	}
	if mv := advance(b, 9); mv.Advanced || mv.Since == Superseded {
		t.Fatalf("advance from 9 again: got %+v; want just superseded", mv)
	}
	if ttl := rawClient(t, srv).PTTL(ctx, DefaultRedisPrefix+"v:gen:f").Val(); ttl <= 0 || ttl > time.Minute+time.Second {
		t.Errorf("the family's TTL: %v, want about a minute", ttl)
	}
	if err := rawClient(t, srv).Set(ctx, DefaultRedisPrefix+"v:gen:bad", "1", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if mv, err := a.Advance(ctx, "gen:bad", 1, time.Minute); mv.Advanced || err == nil {
		t.Fatalf("advance of a key that holds no generation: %+v, %v; want an error", mv, err)
	}
	if _, err := a.Advance(ctx, "gen:f", 0, time.Minute); err == nil {
		t.Fatal("advance from generation 0: no error")
	}
}

// TestRedisGeneration: another replica reads where Advance left a key,
// without moving it; a value that is not a generation is an error.
func TestRedisGeneration(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a, b := openTestRedis(t, srv, nil), openTestRedis(t, srv, nil)
	if g, err := b.Generation(ctx, "gen:f"); g != 1 || err != nil {
		t.Fatalf("a key never advanced: %d, %v; want 1", g, err)
	}
	for gen := int64(1); gen <= 2; gen++ {
		if _, err := a.Advance(ctx, "gen:f", gen, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if g, err := b.Generation(ctx, "gen:f"); g != 3 || err != nil {
			t.Fatalf("after two moves at A: %d, %v; want 3", g, err)
		}
	}
	if err := rawClient(t, srv).Set(ctx, DefaultRedisPrefix+"v:gen:bad", "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Generation(ctx, "gen:bad"); err == nil {
		t.Fatal("a key that holds no generation: no error")
	}
}

// TestRedisAdvanceRace: advances racing from one generation through two
// replicas: exactly one moves the key on.
func TestRedisAdvanceRace(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rs := []*Redis{openTestRedis(t, srv, nil), openTestRedis(t, srv, nil)}
	wins := racers(16, func(i int) bool {
		mv, err := rs[i%2].Advance(ctx, "gen:race", 3, time.Minute)
		return mv.Advanced && err == nil
	})
	if wins != 1 {
		t.Fatalf("%d racing advances won, want 1", wins)
	}
}

// TestRedisRevocationShared: a token revoked through one replica is
// refused by another's admission in the same round trip as its limit,
// without spending; the other replica then knows it by itself.
func TestRedisRevocationShared(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a, b := openTestRedis(t, srv, nil), openTestRedis(t, srv, nil)
	lb := testRedisLimiter(t, b, "sub", 2)
	rev := []string{"jti:t1", "fam:f1"}

	if ok, _, revoked := lb.Admit(ctx, "dave", rev); !ok || revoked {
		t.Fatalf("before revocation: got ok %v revoked %v, want admitted", ok, revoked)
	}
	if err := a.Revoke(ctx, "fam:f1", time.Hour); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.Revoked(ctx, "fam:f1"); !got {
		t.Errorf("Revoked at the other replica: got false, want true")
	}
	trips := b.RoundTrips()
	if ok, _, revoked := lb.Admit(ctx, "dave", rev); ok || !revoked {
		t.Fatalf("after revocation: got ok %v revoked %v, want revoked", ok, revoked)
	}
	if got, want := b.RoundTrips()-trips, uint64(1); got != want {
		t.Errorf("round trips of a refused admission: got %d, want %d", got, want)
	}
	if known, _ := b.local.Revoked(ctx, "fam:f1"); !known {
		t.Errorf("the replica did not learn the revocation")
	}
	trips = b.RoundTrips()
	if _, _, revoked := lb.Admit(ctx, "dave", rev); !revoked {
		t.Errorf("admission again: not revoked")
	}
	if got := b.RoundTrips() - trips; got != 0 {
		t.Errorf("round trips once known: got %d, want 0", got)
	}
	// Nothing was spent on the revoked token: dave has his second request.
	if ok, _, _ := lb.Admit(ctx, "dave", nil); !ok {
		t.Errorf("dave's second request: refused, want admitted (a revoked token spends nothing)")
	}
	// A longer revocation is kept over a shorter one.
	if err := a.Revoke(ctx, "fam:f1", time.Second); err != nil {
		t.Fatal(err)
	}
	raw := rawClient(t, srv)
	if ttl := raw.PTTL(ctx, DefaultRedisPrefix+"v:fam:f1").Val(); ttl < 59*time.Minute {
		t.Errorf("TTL after a shorter revocation: got %v, want about 1h", ttl)
	}
}

// TestRedisAdmitOneRoundTrip: an admission, revocation keys and all, is
// one command to Redis, counted by a go-redis hook of the test's own.
func TestRedisAdmitOneRoundTrip(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	r := openTestRedis(t, srv, nil)
	var cmds []string
	var mu sync.Mutex
	r.client.AddHook(recordHook{func(name string) { mu.Lock(); cmds = append(cmds, name); mu.Unlock() }})
	l := testRedisLimiter(t, r, "sub", 1000)
	l.Admit(ctx, "erin", []string{"jti:a", "fam:b"}) // loads the script (NOSCRIPT, then EVAL)
	mu.Lock()
	cmds = nil
	mu.Unlock()
	for range 5 {
		l.Admit(ctx, "erin", []string{"jti:a", "fam:b"})
	}
	mu.Lock()
	defer mu.Unlock()
	if got, want := strings.Join(cmds, " "), strings.Repeat("evalsha ", 5); got != strings.TrimSpace(want) {
		t.Errorf("commands of 5 admissions: got %q, want %q", got, strings.TrimSpace(want))
	}
}

type recordHook struct{ f func(string) }

func (h recordHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h recordHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.f(cmd.Name()); return next(ctx, cmd) }
}
func (h recordHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.f("pipeline"); return next(ctx, cmds) }
}

func rawClient(t *testing.T, srv *redistest.Server) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRedisKeysExpire: every key the store writes has a TTL, so nothing
// grows without bound, and keys carry the prefix.
func TestRedisKeysExpire(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	r := openTestRedis(t, srv, nil)
	l := testRedisLimiter(t, r, "ip", 60)
	l.Allow(ctx, "192.0.2.1")
	l.Spend(ctx, "192.0.2.2")
	l.Admit(ctx, "frank", []string{"jti:x"})
	if _, err := r.Claim(ctx, "code:c", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := r.Revoke(ctx, "jti:y", time.Minute); err != nil {
		t.Fatal(err)
	}
	raw := rawClient(t, srv)
	keys, err := raw.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 5 {
		t.Errorf("keys: got %q, want 5", keys)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, DefaultRedisPrefix) {
			t.Errorf("key %q lacks the prefix %q", k, DefaultRedisPrefix)
		}
		if ttl := raw.PTTL(ctx, k).Val(); ttl <= 0 || ttl > time.Minute+time.Second {
			t.Errorf("key %q: TTL %v, want (0, 1m]", k, ttl)
		}
	}
}

// TestRedisDown: Redis stops in the middle of a run and starts again (with
// its data, as a Redis with an append-only file does). Claims fail closed,
// never a second use; limits and revocation checks fall back to this
// replica's state (its copy of each budget, the revocations it knows),
// with one log line and the fallback reported; after the restart the
// client reconnects by itself and the shared state is used again.
func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Persist: true})
	c := testkit.NewClock(time.Unix(1_700_000_000, 0))
	var o ops
	var logs testkit.LogBuffer
	r := openTestRedis(t, srv, func(cfg *RedisConfig) {
		cfg.Now = c.Now
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
		o.hook(cfg)
	})
	l := testRedisLimiter(t, r, "sub", 5)
	if first, err := r.Claim(ctx, "code:before", time.Minute); !first || err != nil {
		t.Fatalf("claim before: got %v, %v", first, err)
	}
	for range 3 {
		if ok, _, _ := l.Admit(ctx, "gina", nil); !ok {
			t.Fatal("admission before the outage refused")
		}
	}
	if err := r.Revoke(ctx, "fam:known", time.Hour); err != nil {
		t.Fatal(err)
	}
	if ok, detail := r.Ready(); !ok || detail != "redis reachable" {
		t.Errorf("Ready before: got %v %q", ok, detail)
	}

	srv.Stop()

	// Codes fail closed: neither a new one nor the used one is accepted.
	for _, key := range []string{"code:before", "code:during"} {
		first, err := r.Claim(ctx, key, time.Minute)
		if first || !errors.Is(err, ErrUnavailable) {
			t.Errorf("claim %s while down: got %v, %v; want false, ErrUnavailable", key, first, err)
		}
	}
	// The limit goes on from this replica's copy: 2 of 5 left.
	admitted := 0
	for range 4 {
		if ok, _, _ := l.Admit(ctx, "gina", nil); ok {
			admitted++
		}
	}
	if admitted != 2 {
		t.Errorf("admissions while down: got %d, want 2 (the 2 left of the shared budget)", admitted)
	}
	// Revocations this replica knows still hold; an unknown one cannot be
	// checked by the broker's Revoked (it fails closed) ...
	if _, _, revoked := l.Admit(ctx, "hank", []string{"jti:z", "fam:known"}); !revoked {
		t.Errorf("a known revocation while down: admitted")
	}
	if _, err := r.Revoked(ctx, "fam:unknown"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Revoked of an unknown key while down: got %v, want ErrUnavailable", err)
	}
	// ... and one made now holds here at once, while the caller is told.
	if err := r.Revoke(ctx, "fam:during", time.Hour); !errors.Is(err, ErrUnavailable) {
		t.Errorf("revoke while down: got %v, want ErrUnavailable", err)
	}
	if _, _, revoked := l.Admit(ctx, "hank", []string{"fam:during"}); !revoked {
		t.Errorf("a revocation made while down: admitted")
	}
	if ok, detail := r.Ready(); !ok || !strings.Contains(detail, "unreachable") || strings.Contains(detail, srv.Addr()) {
		t.Errorf("Ready while down: got %v %q; want ready, unreachable, no address", ok, detail)
	}
	if got := o.count(OpClaim + "/" + ResultError); got != 1 {
		t.Errorf("failed claims reported: got %d, want 1 (the rest skipped Redis)", got)
	}
	if got := o.count(OpAdmit + "/" + ResultSkipped); got < 4 {
		t.Errorf("admissions decided without Redis: got %d, want at least 4", got)
	}

	srv.Restart()
	c.Advance(2 * time.Second) // past Retry: the next request asks Redis again

	if first, err := r.Claim(ctx, "code:before", time.Minute); first || err != nil {
		t.Errorf("claim of the used code after the restart: got %v, %v; want false, nil", first, err)
	}
	if first, err := r.Claim(ctx, "code:after", time.Minute); !first || err != nil {
		t.Errorf("claim of a new code after the restart: got %v, %v; want true, nil", first, err)
	}
	if ok, _, _ := l.Admit(ctx, "ivan", nil); !ok {
		t.Errorf("admission after the restart: refused")
	}
	if ok, detail := r.Ready(); !ok || detail != "redis reachable" {
		t.Errorf("Ready after: got %v %q", ok, detail)
	}
	if got, want := fmt.Sprint(o.states()), "[true false]"; got != want {
		t.Errorf("fallback states reported: got %s, want %s", got, want)
	}
	if got := strings.Count(logs.String(), "redis unreachable"); got != 1 {
		t.Errorf("'unreachable' log lines: got %d, want 1:\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), "redis reachable again") {
		t.Errorf("no 'reachable again' log line:\n%s", logs.String())
	}
}

// TestRedisHangs: a Redis that stops answering without closing its
// connections (SIGSTOP) costs one request its read timeout; the requests
// after it, within Retry, do not ask Redis at all. Run's probe notices
// when it answers again.
func TestRedisHangs(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	var o ops
	c := testkit.NewClock(time.Unix(1_700_000_000, 0)) // stands still: every admission below is within Retry
	r := openTestRedis(t, srv, func(cfg *RedisConfig) {
		o.hook(cfg)
		cfg.Now = c.Now
		cfg.Retry, cfg.Probe = 50*time.Millisecond, time.Hour
	})
	l := testRedisLimiter(t, r, "sub", 100)
	l.Admit(ctx, "judy", nil)

	srv.Pause()
	if ok, _, _ := l.Admit(ctx, "judy", nil); !ok {
		t.Errorf("admission while Redis hangs: refused, want the local decision")
	}
	trips := r.RoundTrips()
	for range 10 {
		l.Admit(ctx, "judy", nil)
	}
	if got := r.RoundTrips() - trips; got != 0 {
		t.Errorf("round trips within Retry of a failure: got %d, want 0", got)
	}
	if got := o.count(OpAdmit + "/" + ResultError); got != 1 {
		t.Errorf("failed admissions: got %d, want 1", got)
	}

	srv.Resume()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- r.Run(runCtx) }()
	deadline := time.Now().Add(10 * time.Second)
	for r.down.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if r.down.Load() {
		t.Fatalf("Run's probe did not see Redis answer again")
	}
	trips = r.RoundTrips()
	l.Admit(ctx, "judy", nil)
	if got := r.RoundTrips() - trips; got != 1 {
		t.Errorf("round trips of an admission after recovery: got %d, want 1 (the probe reloaded the script)", got)
	}
}

// TestRedisTLSAndPassword: rediss:// with the server's CA; a client that
// does not trust it, or has the wrong password, gets no answer.
func TestRedisTLSAndPassword(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{TLS: true, Password: "p4ss-w0rd"})
	trusting := func(c *RedisConfig) { c.TLSConfig = &tls.Config{RootCAs: srv.CertPool()} }
	r := openTestRedis(t, srv, trusting)
	if first, err := r.Claim(ctx, "code:tls", time.Minute); !first || err != nil {
		t.Fatalf("claim over TLS: got %v, %v", first, err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*RedisConfig)
	}{
		{"untrusted certificate", nil},
		{"wrong password", func(c *RedisConfig) {
			trusting(c)
			c.URL = strings.Replace(c.URL, "p4ss-w0rd", "wrong", 1)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := openTestRedis(t, srv, tc.mod)
			if _, err := r.Claim(ctx, "code:x", time.Minute); !errors.Is(err, ErrUnavailable) {
				t.Errorf("claim: got %v, want ErrUnavailable", err)
			}
		})
	}
}

func TestCheckRedisURL(t *testing.T) {
	for _, tc := range []struct {
		name, url string
		ok        bool
	}{
		{"plain", "redis://redis:6379/0", true},
		{"password", "redis://:secret@redis:6379/0", true},
		{"user and password", "redis://user:secret@redis/1", true},
		{"tls", "rediss://:secret@redis.example.com:6380", true},
		{"options", "redis://redis/0?dial_timeout=1s&pool_size=5", true},
		{"http", "http://:secret@redis:6379", false},
		{"unix", "unix:///run/redis.sock", false},
		{"no host", "redis://:secret@/0", false},
		{"bad database", "redis://:secret@redis/zero", false},
		{"unknown option", "redis://:secret@redis/0?colour=blue", false},
		{"not a url", "redis://:secret@redis:port/0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckRedisURL(tc.url)
			if (err == nil) != tc.ok {
				t.Fatalf("got %v, want ok %v", err, tc.ok)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("the error %q repeats the password", err)
			}
		})
	}
}

// TestRedisLimiterMatchesMemory is a property test: a random sequence of
// Allow, Spend and Peek on a few keys, at one action a minute (so the
// test's own duration refills nothing), gets the same answers from a
// RedisLimiter as from a Limiter whose clock stands still.
func TestRedisLimiterMatchesMemory(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	r := openTestRedis(t, srv, nil)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for round := range 4 {
		burst := 1 + rng.IntN(4)
		cfg := LimiterConfig{PerMinute: 1, Burst: burst}
		shared, err := r.Limiter(fmt.Sprintf("prop%d", round), cfg)
		if err != nil {
			t.Fatal(err)
		}
		frozen := time.Now()
		cfg.Now = func() time.Time { return frozen }
		mem, err := NewLimiter(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 60 {
			key := fmt.Sprintf("k%d", rng.IntN(3))
			var op string
			var gotOK, wantOK bool
			var gotWait, wantWait time.Duration
			switch rng.IntN(3) {
			case 0:
				op = "allow"
				gotOK, gotWait = shared.Allow(ctx, key)
				wantOK, wantWait = mem.Allow(ctx, key)
			case 1:
				op = "spend"
				shared.Spend(ctx, key)
				mem.Spend(ctx, key)
				gotOK, wantOK = true, true
			default:
				op = "peek"
				gotOK, gotWait = shared.Peek(ctx, key)
				wantOK, wantWait = mem.Peek(ctx, key)
			}
			if gotOK != wantOK || (gotWait-wantWait).Abs() > 5*time.Second {
				t.Fatalf("round %d (burst %d) step %d: %s %s: got %v %v, want %v %v",
					round, burst, i, op, key, gotOK, gotWait, wantOK, wantWait)
			}
		}
	}
}

// BenchmarkRedisAdmit is one admission against a real Redis on loopback:
// the revocation check of a broker token's two keys and the subject's
// budget, with the round trips each costs.
func BenchmarkRedisAdmit(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	r, err := OpenRedis(RedisConfig{URL: srv.URL()})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	l, err := r.Limiter("sub", LimiterConfig{PerMinute: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	rev := []string{"jti:abc", "fam:def"}
	l.Admit(ctx, "alice", rev) // loads the script
	for _, parallel := range []bool{false, true} {
		name := "serial"
		if parallel {
			name = "parallel"
		}
		b.Run(name, func(b *testing.B) {
			trips := r.RoundTrips()
			b.ReportAllocs()
			if parallel {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if ok, _, _ := l.Admit(ctx, "alice", rev); !ok {
							b.Error("refused")
						}
					}
				})
			} else {
				for b.Loop() {
					if ok, _, _ := l.Admit(ctx, "alice", rev); !ok {
						b.Fatal("refused")
					}
				}
			}
			b.ReportMetric(float64(r.RoundTrips()-trips)/float64(b.N), "roundtrips/op")
		})
	}
}

// aclUser makes srv a user "gateway" allowed only the commands
// docs/replicas.md requires (INFO, which it calls optional, is not among
// them), and returns the config change that connects as it after mod.
func aclUser(t *testing.T, srv *redistest.Server, mod func(*RedisConfig)) func(*RedisConfig) {
	t.Helper()
	err := rawClient(t, srv).Do(ctx, "ACL", "SETUSER", "gateway", "on", ">gw-pass", "~mop:*", "resetchannels",
		"+@connection", "+get", "+set", "+exists", "+pttl", "+time", "+eval", "+evalsha", "+script|load").Err()
	if err != nil {
		t.Fatal(err)
	}
	return func(c *RedisConfig) {
		if mod != nil {
			mod(c)
		}
		c.URL = strings.Replace(c.URL, "redis://", "redis://gateway:gw-pass@", 1)
	}
}

// TestRedisACL: an ACL user with only the commands docs/replicas.md lists,
// on the mop:* keys, can do everything the store does.
func TestRedisACL(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	r := openTestRedis(t, srv, aclUser(t, srv, nil))
	l := testRedisLimiter(t, r, "sub", 10)
	if first, err := r.Claim(ctx, "code:acl", time.Minute); !first || err != nil {
		t.Fatalf("claim: %v %v", first, err)
	}
	if first, _, err := r.ClaimSince(ctx, "rt:acl", time.Minute); !first || err != nil {
		t.Fatalf("claim with its time: %v %v", first, err)
	}
	if mv, err := r.Advance(ctx, "gen:acl", 1, time.Minute); !mv.Advanced || err != nil {
		t.Fatalf("advance: %+v %v", mv, err)
	}
	if g, err := r.Generation(ctx, "gen:acl"); g != 2 || err != nil {
		t.Fatalf("generation: %d %v", g, err)
	}
	if err := r.Revoke(ctx, "fam:acl", time.Minute); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if got, err := r.Revoked(ctx, "jti:acl", "fam:acl"); !got || err != nil {
		t.Fatalf("revoked: %v %v", got, err)
	}
	if ok, _, revoked := l.Admit(ctx, "acl", []string{"jti:acl"}); !ok || revoked {
		t.Fatalf("admit: %v %v", ok, revoked)
	}
	l.Spend(ctx, "acl")
	if err := errors.Join(r.limitScript.Load(ctx, r.client).Err(), r.client.Ping(ctx).Err()); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if r.down.Load() {
		t.Errorf("an operation failed: the store is down")
	}
}

// TestRedisSettingsWarnings: the settings under which Redis could forget a
// used code or a revocation each get one warning naming the fix; safe
// settings, and fields INFO did not give, get none.
func TestRedisSettingsWarnings(t *testing.T) {
	info := "# Persistence\r\nloading:0\r\naof_enabled:%s\r\n\r\n# Memory\r\nmaxmemory:%s\r\nmaxmemory_policy:%s\r\n"
	for _, tc := range []struct {
		aof, max, policy string
		want             []string
	}{
		{"1", "0", "noeviction", nil},
		{"1", "0", "allkeys-lru", nil}, // no memory limit: nothing is evicted
		{"1", "104857600", "noeviction", nil},
		{"0", "0", "noeviction", []string{"appendonly yes"}},
		{"1", "104857600", "allkeys-lru", []string{"maxmemory-policy allkeys-lru"}},
		{"1", "104857600", "volatile-ttl", []string{"maxmemory-policy volatile-ttl"}},
		{"0", "1", "volatile-lru", []string{"appendonly yes", "maxmemory-policy volatile-lru"}},
	} {
		fields := map[string]string{}
		parseInfo(fmt.Sprintf(info, tc.aof, tc.max, tc.policy), fields)
		got := settingsWarnings(fields)
		if len(got) != len(tc.want) {
			t.Errorf("aof %s, maxmemory %s, %s: got %q, want %d warnings", tc.aof, tc.max, tc.policy, got, len(tc.want))
			continue
		}
		for i, w := range tc.want {
			if !strings.Contains(got[i], w) || !strings.Contains(got[i], "docs/replicas.md") {
				t.Errorf("aof %s, maxmemory %s, %s: warning %q does not name %q and the docs", tc.aof, tc.max, tc.policy, got[i], w)
			}
		}
	}
	if got := settingsWarnings(map[string]string{}); got != nil {
		t.Errorf("an INFO without the fields: got %q, want no guess", got)
	}
}

// TestRedisSettingsChecked: Run reads a real Redis's settings after its
// first answer and again after an outage (a restarted Redis may have other
// settings), never on every probe; a Redis with an append-only file and
// noeviction gets no warning, one that evicts gets one, and a user whose
// ACL refuses INFO gets a line saying what to check, with the store still
// up.
func TestRedisSettingsChecked(t *testing.T) {
	run := func(t *testing.T, r *Redis) {
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(runCtx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	logTo := func(logs *testkit.LogBuffer) func(*RedisConfig) {
		return func(cfg *RedisConfig) {
			cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info})
			cfg.Probe, cfg.Retry = 20*time.Millisecond, 20*time.Millisecond
		}
	}
	t.Run("no append-only file, checked again after a restart", func(t *testing.T) {
		srv := redistest.Start(t, redistest.Options{})
		var logs testkit.LogBuffer
		r := openTestRedis(t, srv, logTo(&logs))
		run(t, r)
		count := func() int { return strings.Count(logs.String(), "redis has no append-only file") }
		testkit.WaitFor(t, "the append-only warning", 5*time.Second, func() bool { return count() == 1 })
		pings := r.RoundTrips()
		testkit.WaitFor(t, "five more probes", 5*time.Second, func() bool { return r.RoundTrips() >= pings+5 })
		if got := count(); got != 1 {
			t.Fatalf("warnings after more probes: got %d, want 1 (one check per answer after an outage):\n%s", got, logs.String())
		}
		srv.Stop()
		testkit.WaitFor(t, "the outage noticed", 5*time.Second, func() bool { return r.down.Load() })
		srv.Restart()
		testkit.WaitFor(t, "the second check", 10*time.Second, func() bool { return count() == 2 })
		if strings.Contains(logs.String(), "may evict") {
			t.Errorf("an eviction warning for Redis's default (no maxmemory):\n%s", logs.String())
		}
	})
	t.Run("append-only file and noeviction: quiet; an evicting policy: warned", func(t *testing.T) {
		srv := redistest.Start(t, redistest.Options{Persist: true})
		var logs testkit.LogBuffer
		r := openTestRedis(t, srv, logTo(&logs))
		if !r.checkSettings(ctx) {
			t.Fatal("checkSettings: Redis did not answer")
		}
		if s := logs.String(); s != "" {
			t.Errorf("safe settings logged:\n%s", s)
		}
		raw := rawClient(t, srv)
		if err := errors.Join(raw.ConfigSet(ctx, "maxmemory", "100mb").Err(), raw.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err()); err != nil {
			t.Fatal(err)
		}
		r.checkSettings(ctx)
		if s := logs.String(); strings.Count(s, "[WARN]") != 1 || !strings.Contains(s, "maxmemory-policy allkeys-lru") || !strings.Contains(s, srv.Addr()) {
			t.Errorf("an evicting policy: want one warning naming it and the address:\n%s", s)
		}
	})
	t.Run("INFO refused by the ACL", func(t *testing.T) {
		srv := redistest.Start(t, redistest.Options{})
		var logs testkit.LogBuffer
		r := openTestRedis(t, srv, aclUser(t, srv, logTo(&logs)))
		run(t, r)
		testkit.WaitFor(t, "the could-not-check line", 5*time.Second, func() bool {
			return strings.Contains(logs.String(), "could not read redis's settings")
		})
		if s := logs.String(); strings.Contains(s, "[WARN]") || r.down.Load() {
			t.Errorf("a refused INFO: want one info line and the store up, got down=%v:\n%s", r.down.Load(), s)
		}
	})
}

// TestRedisFullDoesNotFlap: a full Redis (maxmemory with noeviction) answers
// PING and reads but refuses writes. It is one outage, logged once, until
// it takes writes again; before, every probe's PING and every revocation
// read said "reachable again" and the next write "unreachable", so the log
// and /readyz flapped and the outage's duration never grew.
func TestRedisFullDoesNotFlap(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	var logs testkit.LogBuffer
	r := openTestRedis(t, srv, func(cfg *RedisConfig) {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
		cfg.Probe, cfg.Retry = 20*time.Millisecond, 20*time.Millisecond
	})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	t.Cleanup(func() { cancel(); <-done })
	testkit.WaitFor(t, "the first probe", 5*time.Second, func() bool { return r.checked.Load() })

	raw := rawClient(t, srv)
	if err := errors.Join(raw.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(), raw.ConfigSet(ctx, "maxmemory", "1").Err()); err != nil {
		t.Fatal(err)
	}
	if first, err := r.Claim(ctx, "code:full", time.Minute); first || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a claim in a full Redis: got %v, %v; want false, ErrUnavailable", first, err)
	}
	for range 10 { // reads answer meanwhile, and probes run
		time.Sleep(30 * time.Millisecond)
		_, _ = r.Revoked(ctx, "fam:x")
		if !r.down.Load() {
			t.Fatalf("a full Redis taken for reachable again:\n%s", logs.String())
		}
	}
	if ok, detail := r.Ready(); !ok || !strings.Contains(detail, "unreachable") {
		t.Errorf("Ready while full: %v %q", ok, detail)
	}
	if err := raw.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the store back once Redis takes writes", 5*time.Second, func() bool { return !r.down.Load() })
	if got := strings.Count(logs.String(), "redis unreachable"); got != 1 {
		t.Errorf("'unreachable' lines: got %d, want 1:\n%s", got, logs.String())
	}
	if got := strings.Count(logs.String(), "reachable again"); got != 1 {
		t.Errorf("'reachable again' lines: got %d, want 1:\n%s", got, logs.String())
	}
}

// hangingRedis is a Redis for the tests of a lost answer (srv.Pause):
// its client logs at info to logs, retries after 50 ms and probes never.
func hangingRedis(t *testing.T) (*redistest.Server, *Redis, *testkit.LogBuffer) {
	t.Helper()
	srv := redistest.Start(t, redistest.Options{})
	logs := new(testkit.LogBuffer)
	r := openTestRedis(t, srv, func(cfg *RedisConfig) {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info})
		cfg.Retry, cfg.Probe = 50*time.Millisecond, time.Hour
	})
	return srv, r, logs
}

// TestRedisClaimReleasedWhenItsAnswerIsLost: a claim Redis makes while its
// answer fails to arrive in time (here Redis is stopped with SIGSTOP, so
// the command waits in its socket and runs when it resumes) was answered
// "unavailable, retry" and yet used the code up, so the retry was refused
// as a second use. The claim is now released once Redis answers, and the
// retry is the first use. A claim with another mark (someone else's) is
// never released.
func TestRedisClaimReleasedWhenItsAnswerIsLost(t *testing.T) {
	srv, r, logs := hangingRedis(t)
	if first, err := r.Claim(ctx, "code:warm", time.Minute); !first || err != nil {
		t.Fatalf("a claim before: %v, %v", first, err)
	}

	srv.Pause()
	if first, err := r.Claim(ctx, "code:late", time.Minute); first || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a claim while Redis hangs: got %v, %v; want false, ErrUnavailable", first, err)
	}
	srv.Resume()
	testkit.WaitFor(t, "the late claim released", 10*time.Second, func() bool {
		return strings.Contains(logs.String(), "released a claim whose answer was lost")
	})
	r.skipUntil.Store(0) // the retry comes after Retry-After
	if first, err := r.Claim(ctx, "code:late", time.Minute); !first || err != nil {
		t.Errorf("the client's retry: got %v, %v; want the first use", first, err)
	}
	if first, _ := r.Claim(ctx, "code:late", time.Minute); first {
		t.Errorf("a second use after the retry: taken for the first")
	}

	// Someone else's claim carries another mark.
	r.release(releaseLua, r.prefix+"code:warm", claimMark(), time.Second)
	if first, _ := r.Claim(ctx, "code:warm", time.Minute); first {
		t.Errorf("a claim released by an attempt that did not make it")
	}
}

// TestRedisAdvanceMovedBackWhenItsAnswerIsLost: as a claim, a move Redis
// makes while its answer fails to arrive was answered "unavailable,
// retry": it is moved back once Redis answers, so the retry finds its
// generation current rather than a reuse. A move with another mark stays.
func TestRedisAdvanceMovedBackWhenItsAnswerIsLost(t *testing.T) {
	srv, r, logs := hangingRedis(t)
	for gen := int64(1); gen <= 2; gen++ {
		if mv, err := r.Advance(ctx, "gen:late", gen, time.Minute); !mv.Advanced || err != nil {
			t.Fatalf("advance from %d before: %+v, %v", gen, mv, err)
		}
	}
	srv.Pause()
	if mv, err := r.Advance(ctx, "gen:late", 3, time.Minute); mv.Advanced || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("an advance while Redis hangs: got %+v, %v; want ErrUnavailable", mv, err)
	}
	srv.Resume()
	testkit.WaitFor(t, "the late advance moved back", 10*time.Second, func() bool {
		return strings.Contains(logs.String(), "released a claim whose answer was lost")
	})
	r.skipUntil.Store(0)
	// Moved back with the times of the moves before: generation 1's move
	// is still known, moments ago.
	if mv, err := r.Advance(ctx, "gen:late", 1, time.Minute); mv.Advanced || mv.Current != 3 || mv.Since == Superseded || err != nil {
		t.Errorf("generation 1 after the move back: got %+v, %v; want superseded moments ago, at 3", mv, err)
	}
	if mv, err := r.Advance(ctx, "gen:late", 3, time.Minute); !mv.Advanced || err != nil {
		t.Errorf("the client's retry: got %+v, %v; want it to move on", mv, err)
	}
	if mv, _ := r.Advance(ctx, "gen:late", 2, time.Minute); mv.Advanced || mv.Current != 4 {
		t.Errorf("generation 2 after the retry: got %+v; want superseded, at 4", mv)
	}
	r.release(moveBackLua, r.prefix+"gen:late", claimMark(), time.Second)
	if mv, _ := r.Advance(ctx, "gen:late", 3, time.Minute); mv.Advanced {
		t.Errorf("a move taken back by an attempt that did not make it")
	}
}

// TestRedisAdvanceMoveBackKeepsHistory: a move taken back (its answer was
// lost) leaves the key remembering the times of as many moves as before
// it, so a straggler Moves generations behind is still within its window.
func TestRedisAdvanceMoveBackKeepsHistory(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	r := openTestRedis(t, srv, nil)
	for gen := int64(1); gen <= Moves+1; gen++ {
		if mv, err := r.Advance(ctx, "gen:back", gen, time.Minute); !mv.Advanced || err != nil {
			t.Fatalf("advance from %d: %+v, %v", gen, mv, err)
		}
	}
	// A move from the current generation whose answer is lost, taken back.
	mark, cur := claimMark(), int64(Moves+2)
	if err := r.advanceScript.Run(ctx, r.client, []string{r.prefix + "gen:back"}, time.Minute.Milliseconds()+1, cur, mark, Moves).Err(); err != nil {
		t.Fatal(err)
	}
	r.release(moveBackLua, r.prefix+"gen:back", mark, time.Minute)
	for gen := cur - 1; gen >= cur-Moves; gen-- {
		if mv, err := r.Advance(ctx, "gen:back", gen, time.Minute); mv.Advanced || mv.Current != cur || mv.Since == Superseded || err != nil {
			t.Errorf("generation %d after the move back: got %+v, %v; want superseded moments ago, at %d", gen, mv, err, cur)
		}
	}
	if mv, err := r.Advance(ctx, "gen:back", cur-Moves-1, time.Minute); mv != (Move{Since: Superseded, Current: cur}) || err != nil {
		t.Errorf("generation %d, %d behind: got %+v, %v; want Superseded", cur-Moves-1, Moves+1, mv, err)
	}
}

// TestRedisRestartBetweenProbes: a Redis that restarts between two health
// probes is never seen down (go-redis reconnects quietly), yet it may have
// forgotten what it held or come back with other settings. Its run_id
// changes: the probe says so and has the settings read again. A Redis that
// refuses INFO is not asked again.
func TestRedisRestartBetweenProbes(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	var logs testkit.LogBuffer
	r := openTestRedis(t, srv, func(cfg *RedisConfig) {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	})
	var last string
	if r.restarted(ctx, &last) || last == "" {
		t.Fatalf("the first probe: restarted, or no run_id kept (%q)", last)
	}
	if r.restarted(ctx, &last) {
		t.Errorf("the same Redis taken for restarted")
	}
	srv.Stop()
	srv.Restart() // no probe between: the gateway never saw it down
	testkit.WaitFor(t, "the restart seen", 5*time.Second, func() bool { return r.restarted(ctx, &last) })
	if !strings.Contains(logs.String(), "redis restarted between two health probes") {
		t.Errorf("no line for the restart:\n%s", logs.String())
	}
	if r.restarted(ctx, &last) {
		t.Errorf("one restart reported twice")
	}

	// Run reads the settings again after such a restart. Probes 2 s apart
	// leave the restart (a fraction of that) between two of them.
	var runLogs testkit.LogBuffer
	rr := openTestRedis(t, srv, func(cfg *RedisConfig) {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: &runLogs, Level: hclog.Info})
		cfg.Probe = 2 * time.Second
	})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- rr.Run(runCtx) }()
	t.Cleanup(func() { cancel(); <-done })
	warned := func() int { return strings.Count(runLogs.String(), "redis has no append-only file") }
	testkit.WaitFor(t, "the first settings check", 5*time.Second, func() bool { return warned() == 1 })
	srv.Stop()
	srv.Restart()
	testkit.WaitFor(t, "the settings read again after the restart", 10*time.Second, func() bool { return warned() == 2 })

	acl := openTestRedis(t, srv, aclUser(t, srv, nil))
	var none string
	if acl.restarted(ctx, &none) || none != "-" {
		t.Errorf("INFO refused: restarted, or not marked as refused (%q)", none)
	}
}
