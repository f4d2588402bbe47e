package store

import (
	"testing"
	"time"
)

// TestAdmission: a revoked token is refused without spending the
// subject's budget; otherwise the budget decides.
func TestAdmission(t *testing.T) {
	l, advance := newTestLimiter(t, LimiterConfig{PerMinute: 2})
	m := NewMemory(MemoryConfig{})
	a, err := NewAdmission(l, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Revoke(ctx, "fam:gone", time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name        string
		revocation  []string
		ok, revoked bool
		wait        time.Duration
	}{
		{"first request", []string{"jti:1", "fam:live"}, true, false, 0},
		{"revoked family", []string{"jti:2", "fam:gone"}, false, true, 0},
		{"no revocation keys", nil, true, false, 0},
		{"budget spent", []string{"jti:3", "fam:live"}, false, false, 30 * time.Second},
	} {
		ok, wait, revoked := a.Admit(ctx, "alice", tc.revocation)
		if ok != tc.ok || revoked != tc.revoked || wait != tc.wait {
			t.Errorf("%s: got ok %v wait %v revoked %v; want %v %v %v", tc.name, ok, wait, revoked, tc.ok, tc.wait, tc.revoked)
		}
	}
	advance(30 * time.Second)
	if ok, _, _ := a.Admit(ctx, "alice", nil); !ok {
		t.Errorf("after 30 s: refused")
	}
	if _, err := NewAdmission(l, nil); err == nil {
		t.Errorf("NewAdmission without a revocation store: no error")
	}
}

func BenchmarkAdmission(b *testing.B) {
	l, err := NewLimiter(LimiterConfig{PerMinute: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	a, _ := NewAdmission(l, NewMemory(MemoryConfig{}))
	rev := []string{"jti:abc", "fam:def"}
	b.ReportAllocs()
	for b.Loop() {
		a.Admit(ctx, "alice", rev)
	}
}
