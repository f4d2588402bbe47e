// Package store owns what the gateway must remember across requests and
// share between replicas: rate-limit budgets, one-time values that may be
// used only once (authorization codes, rotated refresh tokens), and
// revocations. Two implementations with the same method sets:
//
//   - in this process's memory (Limiter, Memory, and Admission, the gate's
//     per-subject decision of both): bounded, evicting without a
//     background goroutine, lost on restart;
//   - in a Redis that replicas share (Redis, RedisLimiter: STORE_URL),
//     falling back to this replica's own state while Redis does not
//     answer (redis.go says what each operation does then).
//
// Consumers see these types only through small interfaces they declare
// themselves. It does not decide what to limit or remember, nor how a key
// is derived from a request: the consumers do (the gate keys its
// failed-authentication limit by client address and its rate limit by
// token subject; the broker names its codes, refresh-token families and
// token ids).
package store

import (
	"fmt"
	"math"
	"time"
)

// Move is what Advance (of Memory and Redis) found and did.
//
// Advance moves a key on from generation gen to gen+1 when gen is the
// key's generation, or later than it (a store that lost the key in a
// restart: what it forgot cannot be checked). A key never advanced, or
// expired, is at generation 1. Otherwise gen was superseded: the key
// remembers when it moved on from each of its last Moves generations, and
// Since says how long ago it moved on from gen. A caller rotating refresh
// tokens issues gen+1 when advanced; when not, it treats the token as
// reused unless Since is within its grace, and then issues Current, the
// generation still in line.
type Move struct {
	Advanced bool          // gen was current (or ahead): the key is now at gen+1
	Since    time.Duration // when not advanced: how long ago the key moved on from gen, or Superseded
	Current  int64         // the key's generation after the call
}

// Moves is how many of its moves a key of Advance remembers the time of.
// A grace window covers a token that many generations behind, if the
// session rotated that often within it.
const Moves = 4

// Superseded is Move.Since for a generation the key moved on from before
// the moves it remembers.
const Superseded = time.Duration(math.MaxInt64)

// checkAdvance refuses arguments of Advance that are a caller's mistake.
func checkAdvance(gen int64, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("advance: ttl %v is not positive", ttl)
	}
	if gen < 1 || gen >= 1<<53-1 { // Redis's Lua counts in doubles
		return fmt.Errorf("advance: generation %d is out of range", gen)
	}
	return nil
}
