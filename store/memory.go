// Memory: one-time values and revocations held in this process (the
// package comment is in store.go).

package store

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"time"
)

// ErrFull is returned by Memory's Claim, Advance and Revoke when every remembered key
// is still unexpired and MemoryConfig.MaxEntries is reached. The caller fails
// the request (the broker answers 503): forgetting an unexpired claim would
// let a code or refresh token be used twice.
var ErrFull = errors.New("store: memory full")

// Defaults of MemoryConfig.
const (
	defaultMaxEntries = 1 << 20
	memoryShards      = 16
	// A shard is swept of expired keys on a write at most this often (and
	// whenever it is full).
	memorySweepEvery = time.Minute
)

// MemoryConfig configures NewMemory. Every field has a usable zero value.
type MemoryConfig struct {
	// MaxEntries bounds the keys remembered at once, claims and revocations
	// together (each costs about 100 bytes plus its key). Zero means 1<<20.
	// The bound is kept per shard (MaxEntries/16 each), so a store may
	// report ErrFull slightly before MaxEntries keys in all.
	MaxEntries int
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

// Memory remembers keys until their TTL in this process only: used
// authorization codes, refresh-token generations, revoked token ids and
// families. It is bounded and TTL-evicted, starts no goroutine, and is safe
// for concurrent use.
//
// Claim, Advance, Revoke and Revoked share one key space; callers
// namespace their keys ("code:", "gen:", "fam:", "jti:" ...).
//
// What a restart loses: everything. With the same BROKER_SECRET, codes and
// refresh tokens issued before the restart stay valid (they are sealed
// records, not entries here), so after a restart a code not yet used within
// its 60 s could be redeemed once more, a refresh token already rotated
// could be used once more (its family is then rotated again, not revoked),
// and a revoked family or access token is accepted again until it expires.
// Replicas, and revocation that must survive a restart, need the shared
// store (Redis).
type Memory struct {
	now      func() time.Time
	perShard int
	seed     maphash.Seed
	shards   [memoryShards]memShard
}

type memShard struct {
	mu        sync.Mutex
	m         map[string]memEntry
	lastSweep int64
	// nextExp is no later than the earliest expiry in m: while the shard
	// is full, a sweep before then would find nothing to drop, so a full
	// store refuses writes without scanning every key each time.
	nextExp int64
	sweeps  int // sweeps so far, for tests
}

// put stores e as key's entry (the shard's lock is held).
func (s *memShard) put(key string, e memEntry) {
	s.m[key] = e
	s.nextExp = min(s.nextExp, e.exp)
}

// memEntry is one remembered key: when it expires, and when it was first
// claimed or revoked, or last advanced (unix nanoseconds). gen is the
// generation of a key Advance moves on (0 for the others), and older the
// times of its moves before the last (newest first, 0: none), nil until it
// has any.
type memEntry struct {
	exp, at, gen int64
	older        *[Moves - 1]int64
}

// NewMemory returns an empty Memory.
func NewMemory(cfg MemoryConfig) *Memory {
	m := &Memory{now: cfg.Now, seed: maphash.MakeSeed()}
	if m.now == nil {
		m.now = time.Now
	}
	n := cfg.MaxEntries
	if n <= 0 {
		n = defaultMaxEntries
	}
	m.perShard = (n + memoryShards - 1) / memoryShards
	for i := range m.shards {
		m.shards[i].m = make(map[string]memEntry)
	}
	return m
}

func (m *Memory) shard(key string) *memShard {
	return &m.shards[maphash.String(m.seed, key)%memoryShards]
}

// Claim remembers key for ttl and reports whether this call is the first to
// claim it within its TTL (so a one-time value is accepted once). It fails
// with ErrFull rather than forget an unexpired key.
func (m *Memory) Claim(ctx context.Context, key string, ttl time.Duration) (first bool, err error) {
	first, _, err = m.ClaimSince(ctx, key, ttl)
	return first, err
}

// ClaimSince is Claim that also reports, when this call is not the first,
// how long ago the first claim was (for a grace window after a one-time
// value's first use).
func (m *Memory) ClaimSince(_ context.Context, key string, ttl time.Duration) (first bool, since time.Duration, err error) {
	if ttl <= 0 {
		return false, 0, fmt.Errorf("claim: ttl %v is not positive", ttl)
	}
	now := m.now().UnixNano()
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok && now < e.exp {
		return false, time.Duration(now - e.at), nil
	}
	if err := s.room(key, now, m.perShard); err != nil {
		return false, 0, fmt.Errorf("claim: %w", err)
	}
	s.put(key, memEntry{exp: now + int64(ttl), at: now})
	return true, 0, nil
}

// Advance moves key on from generation gen to gen+1, remembered for ttl:
// one key per family of rotating one-time values, each value carrying its
// generation, instead of one claim per use. Move says what it answers. It
// fails with ErrFull rather than forget an unexpired key.
func (m *Memory) Advance(_ context.Context, key string, gen int64, ttl time.Duration) (Move, error) {
	if err := checkAdvance(gen, ttl); err != nil {
		return Move{}, err
	}
	now := m.now().UnixNano()
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, moves := int64(1), [Moves]int64{}
	if e, ok := s.m[key]; ok && now < e.exp {
		cur, moves[0] = e.gen, e.at
		if e.older != nil {
			copy(moves[1:], e.older[:])
		}
	}
	if gen < cur {
		since := Superseded
		if i := cur - 1 - gen; i < Moves && moves[i] != 0 {
			since = time.Duration(now - moves[i])
		}
		return Move{Since: since, Current: cur}, nil
	}
	if err := s.room(key, now, m.perShard); err != nil {
		return Move{}, fmt.Errorf("advance: %w", err)
	}
	e := memEntry{exp: now + int64(ttl), at: now, gen: gen + 1}
	if gen == cur && moves[0] != 0 { // the same line goes on: keep its history
		e.older = new([Moves - 1]int64)
		copy(e.older[:], moves[:])
	}
	s.put(key, e)
	return Move{Advanced: true, Current: gen + 1}, nil
}

// Generation is the generation key is at (1 when it was never advanced
// or has expired), without moving it. It never fails.
func (m *Memory) Generation(_ context.Context, key string) (int64, error) {
	now := m.now().UnixNano()
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok && now < e.exp {
		return e.gen, nil
	}
	return 1, nil
}

// Revoke remembers key as revoked for at least ttl (a longer earlier TTL is
// kept). It fails with ErrFull rather than forget an unexpired key.
func (m *Memory) Revoke(_ context.Context, key string, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("revoke: ttl %v is not positive", ttl)
	}
	now := m.now().UnixNano()
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	exp := now + int64(ttl)
	if old, ok := s.m[key]; ok && now < old.exp {
		old.exp = max(old.exp, exp)
		s.put(key, old)
		return nil
	}
	if err := s.room(key, now, m.perShard); err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	s.put(key, memEntry{exp: exp, at: now})
	return nil
}

// Revoked reports whether any of keys is remembered (revoked or claimed)
// and unexpired. It never fails.
func (m *Memory) Revoked(_ context.Context, keys ...string) (bool, error) {
	now := m.now().UnixNano()
	for _, k := range keys {
		s := m.shard(k)
		s.mu.Lock()
		e, ok := s.m[k]
		s.mu.Unlock()
		if ok && now < e.exp {
			return true, nil
		}
	}
	return false, nil
}

// Len is the number of keys held, expired ones not yet swept included.
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// Cap is the number of keys Memory holds at most: past it (in fact once
// the fullest of its shards is full) a claim or revocation fails with
// ErrFull.
func (m *Memory) Cap() int { return m.perShard * memoryShards }

// room makes room for key in s (whose lock is held): it sweeps expired keys
// once a minute, and when s is full and a key may have expired (nextExp);
// if s is still full of unexpired keys, it fails with ErrFull.
func (s *memShard) room(key string, now int64, limit int) error {
	if now-s.lastSweep >= int64(memorySweepEvery) || (len(s.m) >= limit && now >= s.nextExp) {
		next := int64(math.MaxInt64)
		for k, e := range s.m {
			if now >= e.exp {
				delete(s.m, k)
			} else {
				next = min(next, e.exp)
			}
		}
		s.lastSweep, s.nextExp = now, next
		s.sweeps++
	}
	if _, ok := s.m[key]; !ok && len(s.m) >= limit {
		return ErrFull
	}
	return nil
}
