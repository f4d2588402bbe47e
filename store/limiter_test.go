package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// newTestLimiter returns a Limiter for cfg on a clock that moves only when
// the test calls advance, so no test sleeps to see a bucket refill.
func newTestLimiter(t *testing.T, cfg LimiterConfig) (l *Limiter, advance func(time.Duration)) {
	t.Helper()
	c := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg.Now = c.Now
	l, err := NewLimiter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l, c.Advance
}

func (l *Limiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.full)
}

var ctx = context.Background()

func TestNewLimiterRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  LimiterConfig
	}{
		{"zero rate", LimiterConfig{}},
		{"negative rate", LimiterConfig{PerMinute: -1}},
		{"negative burst", LimiterConfig{PerMinute: 1, Burst: -1}},
		{"negative bound", LimiterConfig{PerMinute: 1, MaxKeys: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if l, err := NewLimiter(tc.cfg); err == nil || l != nil {
				t.Errorf("NewLimiter(%+v): got %v, %v; want an error", tc.cfg, l, err)
			}
		})
	}
}

// TestAllowBurstThenRate: a key has Burst actions at once, then one per
// minute/PerMinute, and a refused action says how long to wait.
func TestAllowBurstThenRate(t *testing.T) {
	l, advance := newTestLimiter(t, LimiterConfig{PerMinute: 3})
	for i := range 3 {
		if ok, wait := l.Allow(ctx, "alice"); !ok || wait != 0 {
			t.Fatalf("action %d: got %v, %v; want allowed", i+1, ok, wait)
		}
	}
	if ok, wait := l.Allow(ctx, "alice"); ok || wait != 20*time.Second {
		t.Fatalf("burst spent: got %v, %v; want refused, 20s (one token per 20 s)", ok, wait)
	}
	if ok, _ := l.Allow(ctx, "carol"); !ok {
		t.Errorf("another key: refused, want allowed")
	}
	advance(19 * time.Second)
	if ok, wait := l.Allow(ctx, "alice"); ok || wait != time.Second {
		t.Fatalf("after 19 s: got %v, %v; want refused, 1s", ok, wait)
	}
	advance(time.Second)
	if ok, _ := l.Allow(ctx, "alice"); !ok {
		t.Fatalf("after 20 s: refused, want allowed")
	}
	if ok, _ := l.Allow(ctx, "alice"); ok {
		t.Fatalf("second action after 20 s: allowed, want refused")
	}
	advance(time.Hour) // refills to Burst, not beyond
	for i := range 3 {
		if ok, _ := l.Allow(ctx, "alice"); !ok {
			t.Fatalf("after an hour, action %d: refused", i+1)
		}
	}
	if ok, _ := l.Allow(ctx, "alice"); ok {
		t.Errorf("after an hour, action 4: allowed, want refused (the bucket holds Burst)")
	}
}

func TestBurstDiffersFromRate(t *testing.T) {
	l, advance := newTestLimiter(t, LimiterConfig{PerMinute: 60, Burst: 2})
	for i := range 2 {
		if ok, _ := l.Allow(ctx, "k"); !ok {
			t.Fatalf("action %d: refused", i+1)
		}
	}
	if ok, wait := l.Allow(ctx, "k"); ok || wait != time.Second {
		t.Fatalf("third: got %v, %v; want refused, 1s", ok, wait)
	}
	advance(time.Second)
	if ok, _ := l.Allow(ctx, "k"); !ok {
		t.Errorf("after 1 s: refused, want allowed")
	}
}

// TestPeekSpend is the failed-authentication pattern: Peek decides, Spend
// records a failure.
func TestPeekSpend(t *testing.T) {
	l, advance := newTestLimiter(t, LimiterConfig{PerMinute: 2})
	if ok, wait := l.Peek(ctx, "192.0.2.1"); !ok || wait != 0 {
		t.Fatalf("unknown key: got %v, %v; want allowed", ok, wait)
	}
	if got := l.len(); got != 0 {
		t.Errorf("Peek added a key: %d entries, want 0", got)
	}
	for i := range 2 {
		if ok, _ := l.Peek(ctx, "192.0.2.1"); !ok {
			t.Fatalf("peek before failure %d: refused", i+1)
		}
		l.Spend(ctx, "192.0.2.1")
	}
	for range 3 { // peeking spends nothing
		if ok, wait := l.Peek(ctx, "192.0.2.1"); ok || wait != 30*time.Second {
			t.Fatalf("after the limit: got %v, %v; want refused, 30s", ok, wait)
		}
	}
	advance(30 * time.Second)
	if ok, _ := l.Peek(ctx, "192.0.2.1"); !ok {
		t.Errorf("after 30 s: refused, want allowed")
	}
}

// TestSpendDebt: failures that all passed Peek at once are all paid for,
// but the debt stops at Burst.
func TestSpendDebt(t *testing.T) {
	l, advance := newTestLimiter(t, LimiterConfig{PerMinute: 60, Burst: 2})
	for range 3 { // three concurrent attempts passed Peek; all failed
		l.Spend(ctx, "k")
	}
	if ok, wait := l.Peek(ctx, "k"); ok || wait != 2*time.Second {
		t.Errorf("one token in debt: got %v, %v; want refused, 2s", ok, wait)
	}
	for range 100 {
		l.Spend(ctx, "k")
	}
	if ok, wait := l.Peek(ctx, "k"); ok || wait != 3*time.Second {
		t.Errorf("debt at its floor: got %v, %v; want refused, 3s (Burst in debt, plus one token)", ok, wait)
	}
	advance(3 * time.Second)
	if ok, _ := l.Allow(ctx, "k"); !ok {
		t.Errorf("debt paid: refused, want allowed")
	}
}

// TestIdleKeysForgotten: keys whose buckets are full again are dropped at
// the next sweep, and a forgotten key is limited as if it had been kept.
func TestIdleKeysForgotten(t *testing.T) {
	l, advance := newTestLimiter(t, LimiterConfig{PerMinute: 60, MaxKeys: 10_000})
	for i := range minSweep {
		l.Allow(ctx, fmt.Sprint("early-", i))
	}
	if got := l.len(); got != minSweep {
		t.Fatalf("entries: got %d, want %d", got, minSweep)
	}
	advance(time.Minute) // every early bucket is full again
	l.Allow(ctx, "late") // the insert at the sweep mark sweeps
	if got := l.len(); got != 1 {
		t.Errorf("entries after the sweep: got %d, want 1 (only the late key)", got)
	}
	// A key in use survives the sweep.
	for range 60 {
		l.Allow(ctx, "busy")
	}
	for i := range 2 * minSweep {
		l.Allow(ctx, fmt.Sprint("other-", i))
	}
	if ok, _ := l.Allow(ctx, "busy"); ok {
		t.Errorf("busy key after sweeps: allowed, want refused")
	}
}

// TestBounded: however many keys are in use at once, the table stays within
// MaxKeys, and the keys spending hardest stay limited.
func TestBounded(t *testing.T) {
	const maxKeys = 2000
	l, advance := newTestLimiter(t, LimiterConfig{PerMinute: 60, MaxKeys: maxKeys})
	for range 60 {
		l.Spend(ctx, "attacker") // deepest in debt: furthest from full
	}
	for i := range 50_000 {
		l.Spend(ctx, fmt.Sprint("spray-", i)) // every bucket in use: nothing idle to sweep
		if got := l.len(); got > maxKeys {
			t.Fatalf("after %d keys: %d entries, want at most %d", i+1, got, maxKeys)
		}
	}
	if ok, _ := l.Peek(ctx, "attacker"); ok {
		t.Errorf("the key furthest from full was forgotten")
	}
	// Idle buckets (full again) go first.
	advance(2 * time.Minute)
	for i := range 1100 {
		l.Spend(ctx, fmt.Sprint("later-", i))
	}
	if got := l.len(); got > 1200 {
		t.Errorf("entries after the idle sweep: got %d, want at most 1200", got)
	}
}

func TestTinyBound(t *testing.T) {
	l, _ := newTestLimiter(t, LimiterConfig{PerMinute: 1, MaxKeys: 1})
	for i := range 10 {
		l.Spend(ctx, fmt.Sprint(i))
		if got := l.len(); got > 1 {
			t.Fatalf("after %d keys: %d entries, want at most 1", i+1, got)
		}
	}
	if ok, _ := l.Peek(ctx, "9"); ok {
		t.Errorf("the newest key was forgotten")
	}
}

// TestClockSetBack: a clock set back (a wall clock without a monotonic
// reading) does not make a new key wait, nor free a limited one.
func TestClockSetBack(t *testing.T) {
	l, advance := newTestLimiter(t, LimiterConfig{PerMinute: 60, Burst: 1})
	l.Allow(ctx, "limited")
	advance(-time.Hour)
	if ok, wait := l.Allow(ctx, "new"); !ok {
		t.Errorf("a new key: refused for %v, want allowed", wait)
	}
	if ok, _ := l.Allow(ctx, "limited"); ok {
		t.Errorf("a limited key: allowed, want refused")
	}
}

// TestAllowConcurrent: concurrent callers on one key get exactly Burst
// actions between them (run with -race).
func TestAllowConcurrent(t *testing.T) {
	l, _ := newTestLimiter(t, LimiterConfig{PerMinute: 100})
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if ok, _ := l.Allow(ctx, "k"); ok {
					allowed.Add(1)
				}
				l.Peek(ctx, "k")
			}
		})
	}
	wg.Wait()
	if got := allowed.Load(); got != 100 {
		t.Errorf("allowed: got %d, want 100", got)
	}
}

func TestDefaults(t *testing.T) {
	l, err := NewLimiter(LimiterConfig{PerMinute: 30})
	if err != nil {
		t.Fatal(err)
	}
	if l.maxKeys != DefaultMaxKeys {
		t.Errorf("MaxKeys: got %d, want %d", l.maxKeys, DefaultMaxKeys)
	}
	for i := range 30 { // Burst defaults to PerMinute; the real clock barely moves
		if ok, _ := l.Allow(ctx, "k"); !ok {
			t.Fatalf("action %d of the default burst: refused", i+1)
		}
	}
	if ok, wait := l.Allow(ctx, "k"); ok || wait <= 0 || wait > 2*time.Second {
		t.Errorf("past the burst: got %v, %v; want refused within 2 s", ok, wait)
	}
}

func BenchmarkAllow(b *testing.B) {
	l, err := NewLimiter(LimiterConfig{PerMinute: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		l.Allow(ctx, "alice")
	}
}
