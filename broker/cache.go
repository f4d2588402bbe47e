package broker

import (
	"crypto/sha256"
	"sync"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
)

// tokenCache remembers verified access tokens by the SHA-256 of the raw
// token (never the token), each until the earlier of its exp and
// insertion+ttl. It is bounded. The broker's keys never change while it
// runs, so nothing invalidates it but time; revocation is checked on every
// use, not cached.
type tokenCache struct {
	ttl  time.Duration
	size int

	mu sync.RWMutex
	m  map[[sha256.Size]byte]*cacheEntry
}

type cacheEntry struct {
	id         *provider.Identity
	revocation [2]string // store keys: "jti:..." and "fam:..."
	until      int64     // unix nanoseconds
}

func newTokenCache(ttl time.Duration, size int) *tokenCache {
	return &tokenCache{ttl: ttl, size: size, m: make(map[[sha256.Size]byte]*cacheEntry)}
}

// tokenKey is the cache key of raw. A typical token is copied to the stack
// first, so a cache hit allocates nothing.
func tokenKey(raw string) [sha256.Size]byte {
	var buf [2048]byte
	if len(raw) <= len(buf) {
		n := copy(buf[:], raw)
		return sha256.Sum256(buf[:n])
	}
	return sha256.Sum256([]byte(raw))
}

func (c *tokenCache) get(k [sha256.Size]byte, now time.Time) *cacheEntry {
	c.mu.RLock()
	e := c.m[k]
	c.mu.RUnlock()
	if e == nil || now.UnixNano() >= e.until {
		return nil
	}
	return e
}

func (c *tokenCache) put(k [sha256.Size]byte, e *cacheEntry, now time.Time) {
	until := now.Add(c.ttl)
	if e.id.Expiry.Before(until) {
		until = e.id.Expiry
	}
	if !now.Before(until) {
		return
	}
	e.until = until.UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.size {
		c.evict(now.UnixNano())
	}
	c.m[k] = e
}

// evict drops dead entries and, if that frees nothing, about an eighth of
// the live ones (in map order, which is random).
func (c *tokenCache) evict(now int64) {
	for k, e := range c.m {
		if now >= e.until {
			delete(c.m, k)
		}
	}
	target := c.size - max(c.size/8, 1)
	for k := range c.m {
		if len(c.m) <= target {
			break
		}
		delete(c.m, k)
	}
}
