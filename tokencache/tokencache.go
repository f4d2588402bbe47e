// Package tokencache remembers verified bearer tokens, so that a token
// presented again is not verified again: by the SHA-256 of the raw token
// (the token itself is never kept), each until the earlier of its exp and
// insertion plus a TTL, never past exp. It is bounded and evicts without a
// background goroutine, and can be dropped whole when the keys the tokens
// were verified with change (a generation).
//
// Package provider caches the provider's tokens with it, package broker the
// broker's own. It verifies nothing and checks no revocation: what is
// cached is the caller's verified result, and what must be asked on every
// use (a revocation) stays the caller's. It imports only the standard
// library.
package tokencache

import (
	"crypto/sha256"
	"sync"
	"time"
)

// Defaults of New.
const (
	DefaultTTL  = 60 * time.Second
	DefaultSize = 10000
)

// Key is a cache key: the SHA-256 of a raw token.
type Key [sha256.Size]byte

// KeyOf is the cache key of raw. A typical token is copied to the stack
// first, so a cache hit allocates nothing.
func KeyOf(raw string) Key {
	var buf [4096]byte
	if len(raw) <= len(buf) {
		n := copy(buf[:], raw)
		return sha256.Sum256(buf[:n])
	}
	return sha256.Sum256([]byte(raw))
}

// Cache maps Keys to verified results V. It is safe for concurrent use.
type Cache[V any] struct {
	ttl  time.Duration
	size int

	mu  sync.RWMutex
	gen uint64 // generation of the keys the entries were verified with
	m   map[Key]entry[V]
}

type entry[V any] struct {
	v     V
	until int64 // unix nanoseconds; the entry is dead from then on
}

// New returns a cache that keeps an entry at most ttl (zero: DefaultTTL)
// and at most size entries (zero or less: DefaultSize), or nil when ttl is
// negative: no cache.
func New[V any](ttl time.Duration, size int) *Cache[V] {
	if ttl < 0 {
		return nil
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if size <= 0 {
		size = DefaultSize
	}
	return &Cache[V]{ttl: ttl, size: size, m: make(map[Key]entry[V])}
}

// Get returns what is cached under k, if it is live at now.
func (c *Cache[V]) Get(k Key, now time.Time) (V, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || now.UnixNano() >= e.until {
		var zero V
		return zero, false
	}
	return e.v, true
}

// Put caches v under k until the earlier of exp (the token's, strictly: no
// skew) and now plus the TTL, unless that is not after now or the
// generation changed (Reset) since v was verified with generation gen.
func (c *Cache[V]) Put(gen uint64, k Key, v V, exp, now time.Time) {
	until := now.Add(c.ttl)
	if exp.Before(until) {
		until = exp
	}
	if !now.Before(until) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if _, ok := c.m[k]; !ok && len(c.m) >= c.size {
		c.evict(now.UnixNano())
	}
	c.m[k] = entry[V]{v: v, until: until.UnixNano()}
}

// evict drops dead entries and, if that frees nothing, about an eighth of
// the live ones at random (map order), so a full cache is swept rarely.
func (c *Cache[V]) evict(now int64) {
	for k, e := range c.m {
		if now >= e.until {
			delete(c.m, k)
		}
	}
	if len(c.m) < c.size {
		return
	}
	target := c.size - max(c.size/8, 1)
	for k := range c.m {
		if len(c.m) <= target {
			break
		}
		delete(c.m, k)
	}
}

// Reset drops every entry; gen is the new generation, which Put then
// requires.
func (c *Cache[V]) Reset(gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen = gen
	c.m = make(map[Key]entry[V])
}

// Len is the number of entries held, dead ones not yet swept included.
func (c *Cache[V]) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
