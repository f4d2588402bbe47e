package provider

import (
	"crypto/sha256"
	"sync"
	"time"
)

// tokenCache remembers verified tokens by the SHA-256 of the raw token (the
// token itself is never kept), each until the earlier of its exp and
// insertion+ttl. It is bounded, and dropped whole when the key set changes.
type tokenCache struct {
	ttl  time.Duration
	size int

	mu  sync.RWMutex
	gen uint64 // key set generation the entries were verified with
	m   map[[sha256.Size]byte]cacheEntry
}

type cacheEntry struct {
	id    *Identity
	until int64 // unix nanoseconds; the entry is dead from then on
}

func newTokenCache(ttl time.Duration, size int) *tokenCache {
	return &tokenCache{ttl: ttl, size: size, m: make(map[[sha256.Size]byte]cacheEntry)}
}

// get returns the identity cached under k, or nil if none is live at now.
func (c *tokenCache) get(k [sha256.Size]byte, now time.Time) *Identity {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || now.UnixNano() >= e.until {
		return nil
	}
	return e.id
}

// put caches id under k, unless the key set changed (gen) since id was
// verified or the token expires before it could be used again.
func (c *tokenCache) put(gen uint64, k [sha256.Size]byte, id *Identity, now time.Time) {
	until := now.Add(c.ttl)
	if id.Expiry.Before(until) {
		until = id.Expiry // strict: no skew past exp
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
	c.m[k] = cacheEntry{id: id, until: until.UnixNano()}
}

// evict drops dead entries and, if that frees nothing, about an eighth of
// the live ones at random (map order), so a full cache is swept rarely.
func (c *tokenCache) evict(now int64) {
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

// reset drops every entry; gen is the new key set's generation.
func (c *tokenCache) reset(gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen = gen
	c.m = make(map[[sha256.Size]byte]cacheEntry)
}
