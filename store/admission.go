package store

import (
	"context"
	"errors"
	"time"
)

// Admission is the gate's per-subject admission in one process: whether a
// token is revoked (its keys in a Memory) and the subject's budget (a
// Limiter), decided together. A *RedisLimiter makes the same decision for
// every replica in one round trip; the gate sees either through its own
// one-method interface.
type Admission struct {
	limits      *Limiter
	revocations *Memory
}

// NewAdmission returns the admission of limits and revocations, the Memory
// the broker revokes tokens in (broker.Config.Store). Both are required: an
// admission that checked no revocation would let a revoked token through
// the gate, which relies on it (broker.Config.CallerChecksRevocation).
func NewAdmission(limits *Limiter, revocations *Memory) (*Admission, error) {
	if limits == nil || revocations == nil {
		return nil, errors.New("new admission: a limiter and a revocation store are both required")
	}
	return &Admission{limits: limits, revocations: revocations}, nil
}

// Admit reports revoked when any of revocation (a token's store keys, such
// as "jti:..." and "fam:...") is remembered, and then spends nothing;
// otherwise it takes a token from key's budget as Limiter.Allow does. It
// allocates nothing.
func (a *Admission) Admit(ctx context.Context, key string, revocation []string) (ok bool, wait time.Duration, revoked bool) {
	if len(revocation) > 0 {
		if r, _ := a.revocations.Revoked(ctx, revocation...); r { // Memory's Revoked never fails
			return false, 0, true
		}
	}
	ok, wait = a.limits.Allow(ctx, key)
	return ok, wait, false
}
