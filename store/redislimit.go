package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// limitLua is one decision of a shared budget, atomic in Redis: first the
// token's revocation keys, then the subject's bucket, in the same
// round trip. A bucket is the time (microseconds on Redis's clock, from
// TIME, so replicas whose clocks disagree still agree) at which it is full
// again, as Limiter keeps it: the generic cell rate algorithm.
//
// KEYS[1] is the bucket, KEYS[2..] revocation keys. ARGV[1] is the
// interval (microseconds per token), ARGV[2] the window (Burst tokens'
// worth of microseconds), ARGV[3] "a" (take a token if there is one) or
// "s" (take one anyway, the debt stopping at Burst tokens).
// It answers {0, 0, until}: taken, the bucket full again until µs from now;
// {1, wait, until}: no whole token for wait µs; {2, i, pttl}: KEYS[i+1] is
// revoked for pttl ms more (-1: without a TTL), and nothing was spent.
// The bucket expires when it is full again: an absent key is a full bucket.
const limitLua = `
for i = 2, #KEYS do
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl ~= -2 then return {2, i - 1, ttl} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local full = math.max(tonumber(redis.call('GET', KEYS[1])) or 0, now)
if ARGV[3] == 'a' then
  local over = full + interval - now - window
  if over > 0 then return {1, over, full - now} end
  full = full + interval
else
  full = math.min(full + interval, now + 2 * window)
end
redis.call('SET', KEYS[1], string.format('%d', full), 'PX', string.format('%d', math.floor((full - now) / 1000) + 1))
return {0, 0, full - now}
`

// revokeLua remembers KEYS[1] for ARGV[1] ms, keeping a longer TTL it
// already has (as Memory.Revoke does).
const revokeLua = `
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -1 or ttl >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 1
`

// claimLua claims KEYS[1] for ARGV[1] ms if no one has (SET NX), storing
// Redis's time in ms, and returns -1; otherwise it returns how many ms ago
// the first claim was, by Redis's clock (so replicas' clocks do not
// matter). A key claimed without a time (an older gateway's SETNX stored
// "1") reads as claimed long ago.
const claimLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('SET', KEYS[1], string.format('%d', now) .. ARGV[2], 'NX', 'PX', ARGV[1]) then return -1 end
local v = redis.call('GET', KEYS[1])
local at = v and tonumber(string.match(v, '^%d+'))
if at == nil or at <= 1 then return now end
return math.max(now - at, 0)
`

// releaseLua deletes KEYS[1] if a claim with the attempt mark ARGV[1] set
// it (Redis.release): the value is the claim's time followed by its mark.
const releaseLua = `
local v = redis.call('GET', KEYS[1])
if v and #v > #ARGV[1] and string.sub(v, -#ARGV[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`

// advanceLua moves KEYS[1] on from generation ARGV[2] to ARGV[2]+1 for
// ARGV[1] ms when ARGV[2] is its generation or later (an absent key is at
// 1). The key holds "<generation>:<times of its last ARGV[4]+1 moves,
// newest first, ms by Redis's clock, comma-separated><mark ARGV[3]>": the
// oldest is there only for moveBackLua, so a key moved back still knows
// ARGV[4]. It returns {the key's generation after it, -1} when it moved
// the key on; otherwise {the generation, how many ms ago the key moved on
// from ARGV[2]}, or -2 for the time when that is more than ARGV[4] moves
// ago or not known. A value it cannot read fails the script (the caller
// fails closed).
const advanceLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gen, keep = tonumber(ARGV[2]), tonumber(ARGV[4])
local cur, moves = 1, {}
local v = redis.call('GET', KEYS[1])
if v then
  local g, m = string.match(v, '^(%d+):([%d,]+)')
  if not g then return redis.error_reply('not a generation: ' .. KEYS[1]) end
  cur = tonumber(g)
  for x in string.gmatch(m, '%d+') do moves[#moves + 1] = tonumber(x) end
end
if gen < cur then
  local at = nil
  if cur - gen <= keep then at = moves[cur - gen] end
  if at == nil or at == 0 then return {cur, -2} end
  return {cur, math.max(now - at, 0)}
end
local times = {string.format('%d', now)}
if gen == cur then
  for i = 1, math.min(#moves, keep) do times[#times + 1] = string.format('%d', moves[i]) end
end
redis.call('SET', KEYS[1], string.format('%d:', gen + 1) .. table.concat(times, ',') .. ARGV[3], 'PX', ARGV[1])
return {gen + 1, -1}
`

// moveBackLua undoes a move of advanceLua whose attempt mark ARGV[1] is
// still the key's (Redis.release): the key goes back one generation with
// the times of the moves before, to the 1 of an absent key as a deletion,
// keeping its TTL (PTTL, not KEEPTTL, which Redis 5 lacks).
const moveBackLua = `
local v = redis.call('GET', KEYS[1])
if not (v and #v > #ARGV[1] and string.sub(v, -#ARGV[1]) == ARGV[1]) then return 0 end
local g, m = string.match(v, '^(%d+):([%d,]+)')
local ttl = redis.call('PTTL', KEYS[1])
if g == nil or tonumber(g) <= 2 or ttl <= 0 then return redis.call('DEL', KEYS[1]) end
local rest = string.match(m, '^%d+,([%d,]+)$') or '0'
redis.call('SET', KEYS[1], string.format('%d:', tonumber(g) - 1) .. rest, 'PX', ttl)
return 1
`

// Script modes (ARGV[3]).
const (
	modeAllow = "a"
	modeSpend = "s"
)

// maxWindowMicros bounds a budget's window, far beyond any real burst,
// so that Redis's doubles stay exact integers.
const maxWindowMicros = 1 << 50

// RedisLimiter is a token bucket per key, as Limiter is, whose buckets live
// in Redis and are shared by every replica that uses the same name, so N
// replicas together admit the configured rate, not N times it. Each
// decision is one Lua script: atomic, one round trip, on Redis's clock.
//
// It keeps a copy of each bucket it used as Redis last reported it (a
// Limiter bounded by LimiterConfig.MaxKeys): Peek answers from that copy
// without a round trip, and when Redis cannot be asked, Allow, Admit and
// Spend decide from it (see Redis).
//
// Peek is thus exact for what this replica spent and learned, and learns
// what other replicas spent at this replica's next Spend or Allow of the
// key: a failed-authentication limit shared so lets a client at most one
// more failure per replica than the limit, and costs a round trip only per
// failure, none per valid request.
type RedisLimiter struct {
	r        *Redis
	prefix   string // Prefix+"rl:"+name+":"
	local    *Limiter
	interval any // int64 microseconds, boxed once
	window   any
}

// Limiter returns the limiter of the budgets named name (keys
// Prefix+"rl:"+name+":"+key), with cfg's rate and burst; cfg.MaxKeys and
// cfg.Now apply to this replica's copy. Replicas must agree on cfg.
func (r *Redis) Limiter(name string, cfg LimiterConfig) (*RedisLimiter, error) {
	if name == "" {
		return nil, errors.New("new redis limiter: no name")
	}
	local, err := NewLimiter(cfg)
	if err != nil {
		return nil, fmt.Errorf("new redis limiter %s: %w", name, err)
	}
	burst := int64(cfg.Burst)
	if burst == 0 {
		burst = int64(cfg.PerMinute)
	}
	interval := max(int64(time.Minute/time.Microsecond)/int64(cfg.PerMinute), 1)
	window := int64(maxWindowMicros)
	if burst < window/interval {
		window = burst * interval
	}
	return &RedisLimiter{r: r, prefix: r.rlPrefix + name + ":", local: local, interval: interval, window: window}, nil
}

// Allow takes a token from key's bucket and reports ok; when the bucket
// has no whole token it takes nothing, and wait says how long until it has.
func (l *RedisLimiter) Allow(ctx context.Context, key string) (ok bool, wait time.Duration) {
	ok, wait, _ = l.decide(ctx, OpAllow, key, nil, modeAllow)
	return ok, wait
}

// Peek reports whether key's bucket has a whole token, from this replica's
// copy (no round trip); it spends nothing.
func (l *RedisLimiter) Peek(ctx context.Context, key string) (ok bool, wait time.Duration) {
	return l.local.Peek(ctx, key)
}

// Spend takes a token from key's bucket whether or not it has one (a
// failed authentication already happened); the debt stops at Burst tokens.
func (l *RedisLimiter) Spend(ctx context.Context, key string) {
	l.decide(ctx, OpSpend, key, nil, modeSpend)
}

// Admit is the gate's per-subject admission in one round trip: revoked
// when any of revocation (a token's store keys, as Redis.Revoke takes
// them) is revoked, then nothing is spent; otherwise Allow(key). When
// Redis cannot be asked it decides from this replica's state: the
// revocations it made or learned, and its copy of key's bucket.
func (l *RedisLimiter) Admit(ctx context.Context, key string, revocation []string) (ok bool, wait time.Duration, revoked bool) {
	if len(revocation) > 0 {
		if known, _ := l.r.local.Revoked(ctx, revocation...); known {
			return false, 0, true
		}
	}
	return l.decide(ctx, OpAdmit, key, revocation, modeAllow)
}

// decide runs the limit script for key (and revocation) in mode, keeps
// this replica's copy of the bucket, and falls back to that copy when
// Redis cannot answer.
func (l *RedisLimiter) decide(ctx context.Context, op, key string, revocation []string, mode string) (ok bool, wait time.Duration, revoked bool) {
	if l.r.skipping(op) {
		return l.fallback(ctx, key, mode)
	}
	keys := make([]string, 1+len(revocation))
	keys[0] = l.prefix + key
	for i, k := range revocation {
		keys[i+1] = l.r.prefix + k
	}
	start := time.Now()
	res, err := l.r.limitScript.Run(ctx, l.r.client, keys, l.interval, l.window, mode).Int64Slice()
	if err == nil && len(res) != 3 {
		err = fmt.Errorf("limit script answered %d values, want 3", len(res))
	}
	if l.r.done(ctx, op, start, err) {
		return l.fallback(ctx, key, mode)
	}
	switch res[0] {
	case 2:
		ttl := time.Duration(res[2]) * time.Millisecond
		if ttl <= 0 {
			ttl = revokedNoTTL
		}
		if i := res[1]; i >= 1 && i <= int64(len(revocation)) {
			_ = l.r.local.Revoke(ctx, revocation[i-1], ttl) // known here from now on
		}
		return false, 0, true
	case 1:
		l.local.mirror(key, time.Duration(res[2])*time.Microsecond)
		return false, time.Duration(res[1]) * time.Microsecond, false
	}
	l.local.mirror(key, time.Duration(res[2])*time.Microsecond)
	return true, 0, false
}

// fallback decides from this replica's copy of key's bucket.
func (l *RedisLimiter) fallback(ctx context.Context, key, mode string) (ok bool, wait time.Duration, revoked bool) {
	if mode == modeSpend {
		l.local.Spend(ctx, key)
		return true, 0, false
	}
	ok, wait = l.local.Allow(ctx, key)
	return ok, wait, false
}
