package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

func TestMemoryClaim(t *testing.T) {
	ctx := context.Background()
	c := testkit.NewClock(time.Unix(1_700_000_000, 0))
	m := NewMemory(MemoryConfig{Now: c.Now})

	first, err := m.Claim(ctx, "code:a", time.Minute)
	if err != nil || !first {
		t.Fatalf("first claim: got %v, %v; want true, nil", first, err)
	}
	first, err = m.Claim(ctx, "code:a", time.Minute)
	if err != nil || first {
		t.Fatalf("second claim: got %v, %v; want false, nil", first, err)
	}
	if first, _ := m.Claim(ctx, "code:b", time.Minute); !first {
		t.Fatal("claim of another key: got false, want true")
	}
	c.Advance(59 * time.Second)
	if first, _ := m.Claim(ctx, "code:a", time.Minute); first {
		t.Fatal("claim before the ttl ended: got true, want false")
	}
	c.Advance(time.Second)
	if first, _ := m.Claim(ctx, "code:a", time.Minute); !first {
		t.Fatal("claim after the ttl: got false, want true")
	}
}

// ClaimSince tells a later claim how long ago the first one was, and a
// revocation of the key does not move that time.
func TestMemoryClaimSince(t *testing.T) {
	ctx := context.Background()
	c := testkit.NewClock(time.Unix(1_700_000_000, 0))
	m := NewMemory(MemoryConfig{Now: c.Now})
	if first, since, err := m.ClaimSince(ctx, "rt:a", time.Minute); !first || since != 0 || err != nil {
		t.Fatalf("first claim: got %v, %v, %v; want true, 0, nil", first, since, err)
	}
	c.Advance(5 * time.Second)
	if first, since, err := m.ClaimSince(ctx, "rt:a", time.Minute); first || since != 5*time.Second || err != nil {
		t.Fatalf("claim 5 s later: got %v, %v, %v; want false, 5s, nil", first, since, err)
	}
	if err := m.Revoke(ctx, "rt:a", time.Hour); err != nil {
		t.Fatal(err)
	}
	c.Advance(5 * time.Second)
	if first, since, _ := m.ClaimSince(ctx, "rt:a", time.Minute); first || since != 10*time.Second {
		t.Fatalf("claim 10 s later, after a revocation: got %v, %v; want false, 10s", first, since)
	}
	if first, since, _ := m.ClaimSince(ctx, "rt:b", time.Minute); !first || since != 0 {
		t.Fatalf("another key: got %v, %v; want true, 0", first, since)
	}
	if _, _, err := m.ClaimSince(ctx, "rt:c", 0); err == nil {
		t.Fatal("a zero ttl: no error")
	}
}

func TestMemoryRevoke(t *testing.T) {
	ctx := context.Background()
	c := testkit.NewClock(time.Unix(1_700_000_000, 0))
	m := NewMemory(MemoryConfig{Now: c.Now})

	if got, err := m.Revoked(ctx, "fam:x", "jti:y"); got || err != nil {
		t.Fatalf("revoked before revoke: got %v, %v", got, err)
	}
	if err := m.Revoke(ctx, "jti:y", time.Hour); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Revoked(ctx, "fam:x", "jti:y"); !got {
		t.Fatal("revoked after revoke: got false, want true")
	}
	// A shorter second revocation does not shorten the first.
	if err := m.Revoke(ctx, "jti:y", time.Minute); err != nil {
		t.Fatal(err)
	}
	c.Advance(30 * time.Minute)
	if got, _ := m.Revoked(ctx, "jti:y"); !got {
		t.Fatal("revoked within the longer ttl: got false, want true")
	}
	c.Advance(30 * time.Minute)
	if got, _ := m.Revoked(ctx, "jti:y"); got {
		t.Fatal("revoked after the ttl: got true, want false")
	}
}

func TestMemoryBadTTL(t *testing.T) {
	m := NewMemory(MemoryConfig{})
	if _, err := m.Claim(context.Background(), "k", 0); err == nil {
		t.Error("claim with ttl 0: got nil error")
	}
	if err := m.Revoke(context.Background(), "k", -time.Second); err == nil {
		t.Error("revoke with a negative ttl: got nil error")
	}
}

// A full store refuses new keys rather than forget unexpired ones, and
// makes room again as keys expire.
func TestMemoryFullFailsClosed(t *testing.T) {
	ctx := context.Background()
	c := testkit.NewClock(time.Unix(1_700_000_000, 0))
	m := NewMemory(MemoryConfig{MaxEntries: 64, Now: c.Now})

	var full int
	claimed := map[string]bool{}
	for i := range 200 {
		k := fmt.Sprintf("rt:%d", i)
		first, err := m.Claim(ctx, k, time.Hour)
		switch {
		case errors.Is(err, ErrFull):
			full++
		case err != nil:
			t.Fatal(err)
		case !first:
			t.Fatalf("claim %s: got false for a new key", k)
		default:
			claimed[k] = true
		}
	}
	if full == 0 {
		t.Fatal("200 claims into a store of 64: no ErrFull")
	}
	if m.Len() > 64 {
		t.Fatalf("len: got %d, want at most 64", m.Len())
	}
	// Every claimed key is still remembered: no second use.
	for k := range claimed {
		if first, err := m.Claim(ctx, k, time.Hour); first || err != nil {
			t.Fatalf("second claim of %s while full: got %v, %v; want false, nil", k, first, err)
		}
	}
	if err := m.Revoke(ctx, "fam:new", time.Hour); !errors.Is(err, ErrFull) {
		// The shard of fam:new may have room; find a full one.
		for i := range 1000 {
			if err = m.Revoke(ctx, fmt.Sprintf("fam:%d", i), time.Hour); errors.Is(err, ErrFull) {
				break
			}
		}
		if !errors.Is(err, ErrFull) {
			t.Fatalf("revoke into a full store: got %v, want ErrFull", err)
		}
	}
	// Once they expire, the same keys fit again (each shard held them).
	c.Advance(time.Hour)
	for k := range claimed {
		if first, err := m.Claim(ctx, k, time.Minute); !first || err != nil {
			t.Fatalf("claim of %s after every key expired: got %v, %v; want true, nil", k, first, err)
		}
	}
}

// Expired keys are swept on writes, so the map does not grow without bound
// under a steady load of short-lived claims.
func TestMemorySweeps(t *testing.T) {
	ctx := context.Background()
	c := testkit.NewClock(time.Unix(1_700_000_000, 0))
	m := NewMemory(MemoryConfig{Now: c.Now})
	for i := range 10_000 {
		if _, err := m.Claim(ctx, fmt.Sprintf("code:%d", i), time.Minute); err != nil {
			t.Fatal(err)
		}
		c.Advance(10 * time.Millisecond) // 100 s in all
	}
	c.Advance(2 * time.Minute)
	// Keys go to shards by a hash with a random seed: 40 writes per shard
	// on average leave none of the 16 without one (a 64-write version
	// missed a shard about one run in four).
	for i := range 16 * 40 {
		if _, err := m.Claim(ctx, fmt.Sprintf("late:%d", i), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.Len(); got > 1000 {
		t.Fatalf("len after every early key expired: got %d, want far fewer than 10000", got)
	}
}

// Concurrent claims of one key: exactly one wins.
func TestMemoryClaimRace(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(MemoryConfig{})
	for round := range 50 {
		key := fmt.Sprintf("code:%d", round)
		var wins atomic.Int32
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if first, err := m.Claim(ctx, key, time.Minute); err == nil && first {
					wins.Add(1)
				}
			})
		}
		wg.Wait()
		if got := wins.Load(); got != 1 {
			t.Fatalf("round %d: %d winners, want 1", round, got)
		}
	}
}

func BenchmarkMemoryRevoked(b *testing.B) {
	ctx := context.Background()
	m := NewMemory(MemoryConfig{})
	for i := range 10_000 {
		_ = m.Revoke(ctx, fmt.Sprintf("jti:%d", i), time.Hour)
	}
	keys := []string{"jti:absent-token-id-0123456789", "fam:absent-family-id-0123456789"}
	b.ReportAllocs()
	for b.Loop() {
		if r, _ := m.Revoked(ctx, keys...); r {
			b.Fatal("revoked")
		}
	}
}

// Advance keeps one key per family of rotating values: each generation
// moves it on once; a superseded generation learns how long ago the key
// moved on from it, for as many moves as the key remembers, and which
// generation is current; a key that expired (or was never advanced) is at
// generation 1, and a generation ahead of the key (a store that forgot)
// moves it on with no history. Several families never touch each other.
func TestMemoryAdvance(t *testing.T) {
	ctx := context.Background()
	c := testkit.NewClock(time.Unix(1_700_000_000, 0))
	m := NewMemory(MemoryConfig{Now: c.Now})
	step := func(gen int64, want Move) {
		t.Helper()
		got, err := m.Advance(ctx, "gen:f", gen, time.Hour)
		if err != nil || got != want {
			t.Fatalf("advance from %d: got %+v, %v; want %+v", gen, got, err, want)
		}
	}
	step(1, Move{Advanced: true, Current: 2})
	c.Advance(5 * time.Second)
	step(1, Move{Since: 5 * time.Second, Current: 2}) // just superseded
	step(2, Move{Advanced: true, Current: 3})
	c.Advance(time.Second)
	step(1, Move{Since: 6 * time.Second, Current: 3}) // two behind: its own move's time
	step(2, Move{Since: time.Second, Current: 3})
	for gen := int64(3); gen <= 5; gen++ {
		step(gen, Move{Advanced: true, Current: gen + 1})
	}
	step(2, Move{Since: time.Second, Current: 6}) // four behind: still remembered
	step(1, Move{Since: Superseded, Current: 6})  // five behind: forgotten
	step(9, Move{Advanced: true, Current: 10})    // ahead: the store forgot; no history
	step(8, Move{Since: Superseded, Current: 10})
	step(9, Move{Since: 0, Current: 10})
	if mv, _ := m.Advance(ctx, "gen:other", 1, time.Hour); !mv.Advanced {
		t.Fatal("another family: not advanced from 1")
	}
	if m.Len() != 2 {
		t.Fatalf("len after many advances of two families: %d, want 2", m.Len())
	}
	c.Advance(time.Hour)
	step(1, Move{Advanced: true, Current: 2}) // expired: back at 1
	for _, bad := range []struct {
		gen int64
		ttl time.Duration
	}{{0, time.Hour}, {-1, time.Hour}, {1 << 53, time.Hour}, {1, 0}} {
		if _, err := m.Advance(ctx, "gen:f", bad.gen, bad.ttl); err == nil {
			t.Errorf("advance from %d for %v: no error", bad.gen, bad.ttl)
		}
	}
}

// Generation reads where Advance left a key, without moving it.
func TestMemoryGeneration(t *testing.T) {
	ctx := context.Background()
	c := testkit.NewClock(time.Unix(1_700_000_000, 0))
	m := NewMemory(MemoryConfig{Now: c.Now})
	if g, err := m.Generation(ctx, "gen:f"); g != 1 || err != nil {
		t.Fatalf("a key never advanced: %d, %v; want 1", g, err)
	}
	for gen := int64(1); gen <= 3; gen++ {
		if _, err := m.Advance(ctx, "gen:f", gen, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if g, _ := m.Generation(ctx, "gen:f"); g != 4 {
			t.Fatalf("after three moves: %d, want 4", g)
		}
	}
	c.Advance(time.Minute)
	if g, _ := m.Generation(ctx, "gen:f"); g != 1 {
		t.Fatalf("expired: %d, want 1", g)
	}
}

// Racing advances from one generation: exactly one moves the key on.
func TestMemoryAdvanceRace(t *testing.T) {
	m := NewMemory(MemoryConfig{})
	wins := racers(32, func(int) bool {
		mv, err := m.Advance(context.Background(), "gen:race", 4, time.Minute)
		return mv.Advanced && err == nil
	})
	if wins != 1 {
		t.Fatalf("%d racing advances from one generation won, want 1", wins)
	}
}

// racers runs n tries at once and counts those that win.
func racers(n int, try func(i int) bool) int {
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if try(i) {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	return int(wins.Load())
}

// A full store refuses a new family's key rather than forget another's,
// yet a family it holds moves on without room.
func TestMemoryAdvanceFull(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(MemoryConfig{MaxEntries: 16}) // one key per shard
	var held string
	full := false
	for i := range 200 {
		k := fmt.Sprintf("gen:%d", i)
		_, err := m.Advance(ctx, k, 1, time.Hour)
		switch {
		case errors.Is(err, ErrFull):
			full = true
		case err != nil:
			t.Fatal(err)
		default:
			held = k
		}
	}
	if !full {
		t.Fatal("200 families into a store of 16: no ErrFull")
	}
	if mv, err := m.Advance(ctx, held, 2, time.Hour); !mv.Advanced || err != nil {
		t.Fatalf("a held family moving on while full: %+v, %v", mv, err)
	}
}

// A full store refuses writes without scanning its keys each time: until
// the earliest of them may have expired, a sweep would drop nothing. Once
// one has, the next write sweeps and finds room.
func TestMemoryFullDoesNotRescan(t *testing.T) {
	ctx := context.Background()
	c := testkit.NewClock(time.Unix(1_700_000_000, 0))
	m := NewMemory(MemoryConfig{MaxEntries: 16 * 8, Now: c.Now})
	s := m.shard("code:probe")
	var same []string // keys of the probe's shard
	for i := 0; len(same) < 8; i++ {
		if k := fmt.Sprintf("jti:%d", i); m.shard(k) == s {
			same = append(same, k)
		}
	}
	for i, k := range same {
		ttl := time.Hour
		if i == 3 {
			ttl = 10 * time.Minute // the earliest to expire
		}
		if err := m.Revoke(ctx, k, ttl); err != nil {
			t.Fatal(err)
		}
	}
	before := s.sweeps
	for range 1000 {
		c.Advance(10 * time.Millisecond)
		if _, err := m.Claim(ctx, "code:probe", time.Minute); !errors.Is(err, ErrFull) {
			t.Fatalf("a claim into a full shard: %v, want ErrFull", err)
		}
	}
	if n := s.sweeps - before; n > 1 {
		t.Fatalf("1000 refused writes in 10 s swept the full shard %d times, want at most 1", n)
	}
	c.Advance(10 * time.Minute)
	if first, err := m.Claim(ctx, "code:probe", time.Minute); !first || err != nil {
		t.Fatalf("a claim once a key expired: %v, %v; want room", first, err)
	}
}
