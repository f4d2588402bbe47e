package tokencache

import (
	"crypto/sha256"
	"testing"
	"time"
)

func key(s string) Key { return sha256.Sum256([]byte(s)) }

func TestBounded(t *testing.T) {
	c := New[string](time.Minute, 16)
	now := time.Now()
	exp := now.Add(time.Hour)
	for i := range 100 {
		c.Put(0, key(string(rune(i))), "id", exp, now)
		if got := c.Len(); got > 16 {
			t.Fatalf("after %d puts: len = %d, want <= 16", i+1, got)
		}
	}
	if _, ok := c.Get(key(string(rune(99))), now); !ok {
		t.Errorf("last put entry missing")
	}
	// Dead entries go first.
	c.Reset(1)
	for i := range 16 {
		c.Put(1, key(string(rune(i))), "short", now.Add(time.Second), now)
	}
	later := now.Add(2 * time.Second)
	c.Put(1, key("fresh"), "id", exp, later)
	if got := c.Len(); got != 1 {
		t.Errorf("after expiry sweep: len = %d, want 1", got)
	}
	// A stale generation is not stored.
	c.Put(0, key("stale"), "id", exp, later)
	if _, ok := c.Get(key("stale"), later); ok {
		t.Errorf("entry from an old generation was cached")
	}
}

func TestLifetime(t *testing.T) {
	c := New[string](time.Minute, 0)
	now := time.Now()
	c.Put(0, key("a"), "a", now.Add(time.Hour), now)      // the TTL ends it
	c.Put(0, key("b"), "b", now.Add(10*time.Second), now) // its exp ends it
	c.Put(0, key("c"), "c", now, now)                     // expired: not kept
	for _, tc := range []struct {
		k    string
		at   time.Duration
		want bool
	}{
		{"a", 59 * time.Second, true},
		{"a", time.Minute, false},
		{"b", 9 * time.Second, true},
		{"b", 10 * time.Second, false},
		{"c", 0, false},
	} {
		if _, ok := c.Get(key(tc.k), now.Add(tc.at)); ok != tc.want {
			t.Errorf("%s at +%v: cached %v, want %v", tc.k, tc.at, ok, tc.want)
		}
	}
	if New[string](-1, 0) != nil {
		t.Error("a negative TTL made a cache")
	}
}

func TestKeyOf(t *testing.T) {
	long := string(make([]byte, 5000))
	for _, raw := range []string{"", "a.b.c", long} {
		if got, want := KeyOf(raw), Key(sha256.Sum256([]byte(raw))); got != want {
			t.Errorf("KeyOf(%d bytes) is not the SHA-256", len(raw))
		}
	}
}
