// Package store owns what the gateway must remember across requests and
// share between replicas: rate-limit budgets (Limiter), one-time values that
// may be used only once, and revocations. What is here keeps its state in
// the process's memory, bounded, and evicts without a background goroutine;
// a shared (Redis-backed) implementation can satisfy the same method sets
// later, since consumers see these types only through interfaces they
// declare themselves.
//
// It does not decide what to limit or remember, nor how a key is derived
// from a request: the consumers do (the gate keys its failed-authentication
// limit by client address and its rate limit by token subject).
package store
