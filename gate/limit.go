package gate

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiters is a bounded map of token buckets, one per key. It starts no
// goroutine: when an insert finds the map at its sweep mark, idle entries
// (buckets full again, so forgetting them loses nothing) are dropped inline,
// and if the map is still at its cap, arbitrary entries are dropped too.
type limiters[K comparable] struct {
	limit rate.Limit
	burst int
	max   int

	mu      sync.Mutex
	m       map[K]*rate.Limiter
	sweepAt int
}

func newLimiters[K comparable](perMinute, max int) *limiters[K] {
	return &limiters[K]{
		limit:   rate.Limit(float64(perMinute) / 60),
		burst:   perMinute,
		max:     max,
		m:       map[K]*rate.Limiter{},
		sweepAt: min(1024, max),
	}
}

// allow takes one token for key at now; when none is left it reports how
// long until one is.
func (l *limiters[K]) allow(key K, now time.Time) (wait time.Duration, ok bool) {
	lim := l.get(key, now)
	if lim.AllowN(now, 1) {
		return 0, true
	}
	return l.wait(lim, now), false
}

// peek reports whether key has a token left at now, without taking it or
// creating an entry.
func (l *limiters[K]) peek(key K, now time.Time) (wait time.Duration, ok bool) {
	l.mu.Lock()
	lim := l.m[key]
	l.mu.Unlock()
	if lim == nil || lim.TokensAt(now) >= 1 {
		return 0, true
	}
	return l.wait(lim, now), false
}

// take takes one token for key at now (it may go unanswered: peek decides).
func (l *limiters[K]) take(key K, now time.Time) {
	l.get(key, now).AllowN(now, 1)
}

func (l *limiters[K]) wait(lim *rate.Limiter, now time.Time) time.Duration {
	missing := 1 - lim.TokensAt(now)
	if missing <= 0 {
		return 0
	}
	return time.Duration(missing / float64(l.limit) * float64(time.Second))
}

func (l *limiters[K]) get(key K, now time.Time) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lim, ok := l.m[key]; ok {
		return lim
	}
	if len(l.m) >= l.sweepAt {
		l.sweep(now)
	}
	lim := rate.NewLimiter(l.limit, l.burst)
	l.m[key] = lim
	return lim
}

// sweep runs with mu held.
func (l *limiters[K]) sweep(now time.Time) {
	full := float64(l.burst)
	for k, lim := range l.m {
		if lim.TokensAt(now) >= full {
			delete(l.m, k)
		}
	}
	// Still at the cap: every bucket is in use. Forget arbitrary ones (map
	// order) down to three quarters, so memory stays bounded.
	for k := range l.m {
		if len(l.m) < l.max*3/4 {
			break
		}
		delete(l.m, k)
	}
	l.sweepAt = min(max(2*len(l.m), 1024), l.max)
}

func (l *limiters[K]) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// ipKey is the key of the per-IP limiter: an IPv4 address, or the /64 of an
// IPv6 address (one host usually holds a whole /64).
func ipKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}
