// Package inflight bounds what each key (a token subject, a client
// address) has in progress at once.
package inflight

import "sync"

// Counter counts the work in progress of each key, up to a bound. It holds
// only keys with work in progress. Its methods do nothing on a nil
// *Counter, which bounds nothing.
type Counter struct {
	max int

	mu sync.Mutex
	n  map[string]int
}

// New returns a Counter that lets each key have max at once, or nil (no
// bound) when max is not positive.
func New(max int) *Counter {
	if max <= 0 {
		return nil
	}
	return &Counter{max: max, n: map[string]int{}}
}

// Start counts one more for key and reports whether it may go on: false
// when key already has max in progress, and then nothing is counted.
func (c *Counter) Start(key string) bool {
	if c == nil {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key] >= c.max {
		return false
	}
	c.n[key]++
	return true
}

// Done uncounts one that Start counted for key.
func (c *Counter) Done(key string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key]--; c.n[key] <= 0 {
		delete(c.n, key)
	}
}

// Count is what key has in progress.
func (c *Counter) Count(key string) int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}
