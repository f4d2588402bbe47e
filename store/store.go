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

// Superseded is what Advance (of Memory and Redis) reports as since for a
// generation older than the one before the key's current.
//
// Advance moves a key on from generation gen to gen+1 when gen is the
// key's generation, or later than it (a store that lost the key in a
// restart: what it forgot cannot be checked). A key never advanced, or
// expired, is at generation 1. Otherwise gen was superseded, and since says
// how long ago the key moved on from it: the time since that move when the
// key is at gen+1, Superseded when it is further on. A caller rotating
// refresh tokens issues gen+1 when advanced, and treats a superseded gen as
// reuse unless since is within its grace.
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
