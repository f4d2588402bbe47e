package wellknown

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxLimitedClients bounds the per-client table; past it, new clients share
// one limiter until idle entries are swept.
const maxLimitedClients = 10000

// ipLimiter is a token bucket per client address: perMinute registrations a
// minute with a burst of the same size. IPv6 clients are keyed by their /64,
// which one host typically owns whole. It starts no goroutine: idle entries,
// whose buckets are full again, are swept on use.
type ipLimiter struct {
	mu        sync.Mutex
	limit     rate.Limit
	burst     int
	idle      time.Duration // time for an empty bucket to fill
	clients   map[string]*clientBucket
	lastSweep time.Time
}

type clientBucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newIPLimiter(perMinute int) *ipLimiter {
	return &ipLimiter{
		limit:   rate.Limit(float64(perMinute) / 60),
		burst:   perMinute,
		idle:    time.Minute,
		clients: make(map[string]*clientBucket),
	}
}

// allow takes a token for ip at now; when none is left it returns how long
// until one is.
func (l *ipLimiter) allow(ip string, now time.Time) (wait time.Duration, ok bool) {
	key := clientKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= l.idle {
		for k, c := range l.clients {
			if now.Sub(c.seen) >= l.idle {
				delete(l.clients, k)
			}
		}
		l.lastSweep = now
	}
	c, found := l.clients[key]
	if !found {
		if len(l.clients) >= maxLimitedClients {
			key = "overflow"
			c, found = l.clients[key]
		}
		if !found {
			c = &clientBucket{lim: rate.NewLimiter(l.limit, l.burst)}
			l.clients[key] = c
		}
	}
	c.seen = now
	res := c.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d, false
	}
	return 0, true
}

// clientKey is ip itself, or its /64 for IPv6.
func clientKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, err := a.WithZone("").Prefix(64)
	if err != nil {
		return a.String()
	}
	return p.String()
}
