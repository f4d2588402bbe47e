package main

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"time"
)

// Log lines written to a file or pipe (stderr in a container) are held
// briefly and written in batches: one write(2) per line was the largest
// cost of the audit line under load (about 2 µs of a 48 µs request, in the
// kernel, docs/performance.md), and a log collector reading a pipe prefers
// fewer, larger writes too. A line waits at most batchInterval, so a
// line is never lost at an orderly exit (serve flushes before it returns);
// a SIGKILL or OOM kill loses at most that interval of lines, as nginx's
// `access_log ... buffer= flush=` does.
const (
	// batchInterval is the longest a line waits before it is written.
	batchInterval = 20 * time.Millisecond
	// batchSize writes a batch as soon as it holds this many bytes (about
	// 190 audit lines), on the goroutine whose line crossed it. A writer
	// that cannot keep up (a full pipe) holds back every line from then
	// on, as one write per line would: the batch never grows far past it.
	batchSize = 64 << 10
	// stopWait is, once the gateway is stopping, the longest the lines
	// wait for an output that takes nothing (a log reader that stopped
	// reading, a log driver that hangs): the child must still be stopped
	// in order and the gateway exit. Lines the output has not taken by
	// then are dropped, and so are later ones while it still takes nothing.
	stopWait = time.Second
	// stuckAfter is how long a write to the output may take before
	// /readyz says the gateway is not ready (Ready).
	stuckAfter = 5 * time.Second
)

// batchWriter is an io.Writer that keeps each Write whole and in order,
// and writes them to out in batches: when batchSize is reached, when
// batchInterval has passed since the first line not yet written, or at
// Flush. Write never fails: a failed write to out is dropped, as hclog
// drops it. Writes to out are made on a goroutine of their own, so that
// once Stopping was called, a caller waits for an output that takes
// nothing at most stopWait, and not at all while a write given up on is
// still stuck (the lines are then dropped).
type batchWriter struct {
	out      io.Writer
	interval time.Duration
	size     int
	timer    *time.Timer // flushes; armed by the first line into an empty buf

	// writing holds a token while a batch is written to out: batches go
	// out in order. A channel, not a mutex: a stopping gateway can stop
	// waiting for it.
	writing  chan struct{}
	stopping chan struct{} // closed by Stopping
	stopOnce sync.Once

	mu     sync.Mutex // guards the rest
	buf    []byte     // lines not yet written
	spare  []byte     // the last batch's buffer, for reuse
	closed bool       // Close was called: every Write goes straight out
	stuck  bool       // a write to out was given up on and has not returned
	since  time.Time  // when the write to out in progress began; zero: none

	stuckAfter time.Duration // Ready: stuckAfter; shorter in tests
}

func newBatchWriter(out io.Writer, interval time.Duration, size int) *batchWriter {
	b := &batchWriter{out: out, interval: interval, size: size, stuckAfter: stuckAfter, writing: make(chan struct{}, 1), stopping: make(chan struct{})}
	b.timer = time.AfterFunc(time.Hour, b.Flush)
	b.timer.Stop()
	return b
}

// Ready reports, for /readyz, whether out takes what is written to it: not
// when a write has waited longer than stuckAfter (a log reader that stopped
// reading, a log driver that hangs), since every request then waits for
// its log line. A load balancer then sends the traffic elsewhere.
func (b *batchWriter) Ready() (bool, string) {
	b.mu.Lock()
	since := b.since
	b.mu.Unlock()
	if !since.IsZero() {
		if d := time.Since(since); d > b.stuckAfter {
			return false, fmt.Sprintf("the log output has taken nothing for %s: requests wait for their log lines", d.Truncate(time.Second))
		}
	}
	return true, ""
}

// Stopping says the gateway is stopping: from now on no caller waits for
// out more than stopWait (see batchWriter).
func (b *batchWriter) Stopping() { b.stopOnce.Do(func() { close(b.stopping) }) }

func (b *batchWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		if b.acquire() {
			b.write(bytes.Clone(p)) // the caller's: write may give up on it and return
		}
		return len(p), nil
	}
	first := len(b.buf) == 0
	b.buf = append(b.buf, p...)
	full := len(b.buf) >= b.size
	if first && !full {
		// A timer still due from a batch written by size finds the
		// next lines early, or nothing: either is harmless.
		b.timer.Reset(b.interval)
	}
	b.mu.Unlock()
	if full {
		b.Flush()
	}
	return len(p), nil
}

// Flush writes every line written so far.
func (b *batchWriter) Flush() { b.flush(false) }

// Close writes what is held and has every later Write go straight out
// (lines logged while the process exits still appear, in order).
func (b *batchWriter) Close() { b.flush(true) }

func (b *batchWriter) flush(closing bool) {
	taken := b.acquire()
	b.mu.Lock()
	p := b.buf
	b.buf, b.spare = b.spare[:0], nil
	if closing {
		b.closed = true
		b.timer.Stop()
	}
	b.mu.Unlock()
	if !taken {
		return // stopping, and out takes nothing: the lines are dropped
	}
	if len(p) == 0 {
		<-b.writing
		return
	}
	if b.write(p) && !closing && cap(p) <= 2*b.size { // a batch grown by one huge line is not kept
		b.mu.Lock()
		b.spare = p[:0]
		b.mu.Unlock()
	}
}

// acquire takes the token to write to out and reports whether it did. It
// waits as long as it takes, unless the gateway is stopping: then at most
// stopWait, and not at all while a write given up on is stuck.
func (b *batchWriter) acquire() bool {
	select {
	case b.writing <- struct{}{}:
		return true
	case <-b.stopping:
	}
	b.mu.Lock()
	stuck := b.stuck
	b.mu.Unlock()
	if stuck {
		select {
		case b.writing <- struct{}{}:
			return true
		default:
			return false
		}
	}
	t := time.NewTimer(stopWait)
	defer t.Stop()
	select {
	case b.writing <- struct{}{}:
		return true
	case <-t.C:
		b.mu.Lock()
		b.stuck = true // the write holding the token clears it when it returns
		b.mu.Unlock()
		return false
	}
}

// write writes p to out, holding the token, which it releases once out
// returns. It waits for that as acquire waits for the token; false: it
// gave up, and p is still being written.
func (b *batchWriter) write(p []byte) bool {
	done := make(chan struct{})
	b.mu.Lock()
	b.since = time.Now()
	b.mu.Unlock()
	go func() {
		_, _ = b.out.Write(p)
		b.mu.Lock()
		b.stuck, b.since = false, time.Time{}
		close(done)
		b.mu.Unlock()
		<-b.writing
	}()
	select {
	case <-done:
		return true
	case <-b.stopping:
	}
	t := time.NewTimer(stopWait)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-done:
		return true
	default:
		b.stuck = true
		return false
	}
}
