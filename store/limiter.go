package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// DefaultMaxKeys is how many keys a Limiter tracks when
// LimiterConfig.MaxKeys is zero. An entry costs its key and a few dozen
// bytes, so the default bounds a table to a few megabytes.
const DefaultMaxKeys = 100_000

// minSweep is the table size below which no sweep is attempted.
const minSweep = 1024

// LimiterConfig configures NewLimiter.
type LimiterConfig struct {
	// PerMinute is the sustained rate: a key regains one token every
	// minute/PerMinute, up to Burst. It must be positive.
	PerMinute int

	// Burst is the size of a key's bucket: how many actions a key that has
	// been quiet may take at once. A key seen for the first time starts
	// with a full bucket. Zero: PerMinute.
	Burst int

	// MaxKeys bounds how many keys are tracked at once. Zero:
	// DefaultMaxKeys.
	MaxKeys int

	// Now is the clock. Nil: time.Now.
	Now func() time.Time
}

// Limiter is a token bucket per key, such as "requests per subject" or
// "failed authentications per client address".
//
// Each bucket holds at most Burst tokens and regains PerMinute of them a
// minute. A bucket is stored as a single time, the moment it will be full
// again (the generic cell rate algorithm): that is exact integer arithmetic,
// and a full bucket is indistinguishable from no entry at all, so a key
// whose bucket has refilled can be forgotten without losing anything.
//
// Memory is bounded by MaxKeys and reclaimed without a goroutine: when an
// insert finds the table at its sweep mark, keys whose buckets are full
// again are dropped on the spot. Only if every tracked key is still
// refilling when the table reaches MaxKeys does precision give way: the keys
// nearest to a full bucket are forgotten, down to three quarters of
// MaxKeys, and start again with a full bucket when next seen. A key is thus
// limited exactly as long as fewer than MaxKeys keys are refilling at once;
// beyond that, the keys that spent least recently get a fresh burst, while
// the ones spending hardest stay limited. Size MaxKeys above the number of
// keys expected to be active within a refill period (Burst/PerMinute
// minutes).
//
// Spend may put a bucket into debt, at most Burst tokens deep: a key that
// passed Peek many times at once (concurrent requests) pays for every
// action it took before it passes again.
//
// A Limiter is safe for concurrent use. The context arguments are unused:
// the state is in memory, and they are there for a shared implementation
// with the same methods.
type Limiter struct {
	interval int64 // nanoseconds per token
	window   int64 // Burst tokens' worth of nanoseconds
	maxKeys  int
	now      func() time.Time
	epoch    time.Time // times are nanoseconds since epoch (monotonic when the clock has it)

	mu      sync.Mutex
	full    map[string]int64 // key -> when its bucket is full again; absent: full now
	sweepAt int              // table size at which the next insert sweeps
}

// NewLimiter returns an empty Limiter. It starts no goroutine.
func NewLimiter(cfg LimiterConfig) (*Limiter, error) {
	if cfg.PerMinute <= 0 {
		return nil, fmt.Errorf("new limiter: rate %d per minute is not positive", cfg.PerMinute)
	}
	if cfg.Burst < 0 || cfg.MaxKeys < 0 {
		return nil, errors.New("new limiter: negative burst or key bound")
	}
	burst := cfg.Burst
	if burst == 0 {
		burst = cfg.PerMinute
	}
	maxKeys := cfg.MaxKeys
	if maxKeys == 0 {
		maxKeys = DefaultMaxKeys
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	interval := max(int64(time.Minute)/int64(cfg.PerMinute), 1)
	// A quarter of the range keeps debt (twice the window) and the sum
	// with a time clear of overflow; a burst that large never runs out.
	window := int64(math.MaxInt64 / 4)
	if int64(burst) < window/interval {
		window = int64(burst) * interval
	}
	return &Limiter{
		interval: interval,
		window:   window,
		maxKeys:  maxKeys,
		now:      now,
		epoch:    now(),
		full:     make(map[string]int64),
		sweepAt:  min(minSweep, maxKeys),
	}, nil
}

// Allow takes a token from key's bucket and reports ok. When the bucket has
// no whole token it takes nothing, and wait says how long until it has one.
func (l *Limiter) Allow(_ context.Context, key string) (ok bool, wait time.Duration) {
	t := l.since()
	l.mu.Lock()
	defer l.mu.Unlock()
	full, tracked := l.full[key]
	if over := l.over(full, t); over > 0 {
		return false, time.Duration(over)
	}
	l.put(key, tracked, max(full, t)+l.interval, t)
	return true, 0
}

// Peek reports whether key's bucket has a whole token, as Allow would,
// without taking it. It never adds key to the table.
func (l *Limiter) Peek(_ context.Context, key string) (ok bool, wait time.Duration) {
	t := l.since()
	l.mu.Lock()
	full := l.full[key]
	l.mu.Unlock()
	if over := l.over(full, t); over > 0 {
		return false, time.Duration(over)
	}
	return true, 0
}

// Spend takes a token from key's bucket whether or not it has one: it
// records an action already taken (a failed authentication, after Peek
// allowed the attempt). The bucket's debt stops at Burst tokens.
func (l *Limiter) Spend(_ context.Context, key string) {
	t := l.since()
	l.mu.Lock()
	defer l.mu.Unlock()
	full, tracked := l.full[key]
	l.put(key, tracked, min(max(full, t)+l.interval, t+2*l.window), t)
}

// since is the clock's reading in nanoseconds since the Limiter was made;
// a clock set back before then reads as then. An untracked key's zero time
// is therefore never in the future: its bucket is full.
func (l *Limiter) since() int64 { return max(int64(l.now().Sub(l.epoch)), 0) }

// over is how long after t a bucket that is full again at full has a whole
// token; zero or negative: it has one at t.
func (l *Limiter) over(full, t int64) int64 { return max(full, t) + l.interval - t - l.window }

// put records, with mu held, that key's bucket is full again at full,
// making room first when key is new.
func (l *Limiter) put(key string, tracked bool, full, t int64) {
	if !tracked {
		l.makeRoom(t)
	}
	l.full[key] = full
}

// makeRoom runs, with mu held, before a new key is inserted at time t. At
// the sweep mark it drops the keys whose buckets are full again; if the
// table is still at MaxKeys, it forgets the keys nearest to full, down to
// three quarters of MaxKeys. The next mark is twice what is left (at least
// minSweep, at most MaxKeys), so sweeping costs a constant per insert on
// average.
func (l *Limiter) makeRoom(t int64) {
	if len(l.full) < l.sweepAt {
		return
	}
	for k, full := range l.full {
		if full <= t {
			delete(l.full, k)
		}
	}
	if len(l.full) >= l.maxKeys {
		l.forgetNearestFull(l.maxKeys * 3 / 4)
	}
	l.sweepAt = min(max(2*len(l.full), minSweep), l.maxKeys)
}

// forgetNearestFull keeps the keep keys whose buckets are furthest from
// full and forgets the others, with mu held.
func (l *Limiter) forgetNearestFull(keep int) {
	if keep <= 0 {
		clear(l.full)
		return
	}
	times := make([]int64, 0, len(l.full))
	for _, full := range l.full {
		times = append(times, full)
	}
	slices.Sort(times)
	cut := times[len(times)-keep] // the earliest time a kept key may have
	drop := len(l.full) - keep
	for k, full := range l.full { // first the keys strictly nearer to full,
		if drop == 0 {
			return
		}
		if full < cut {
			delete(l.full, k)
			drop--
		}
	}
	for k, full := range l.full { // then as many as needed of the ties
		if drop == 0 {
			return
		}
		if full == cut {
			delete(l.full, k)
			drop--
		}
	}
}

// mirror records that key's bucket is full again d from now: the state a
// shared store answered for it, so that Peek, and Allow when the shared
// store cannot be asked, start from what the replicas decided together. A
// debt deeper than Burst tokens is cut to Burst, as Spend cuts it; d <= 0
// forgets key (a full bucket).
func (l *Limiter) mirror(key string, d time.Duration) {
	t := l.since()
	l.mu.Lock()
	defer l.mu.Unlock()
	_, tracked := l.full[key]
	if d <= 0 {
		delete(l.full, key)
		return
	}
	l.put(key, tracked, t+min(int64(d), 2*l.window), t)
}
