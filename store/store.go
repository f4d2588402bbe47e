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
