package main

import (
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
)

// batchWriter is an io.Writer that keeps each Write whole and in order,
// and writes them to out in batches: when batchSize is reached, when
// batchInterval has passed since the first line not yet written, or at
// Flush. Write never fails: a failed write to out is dropped, as hclog
// drops it.
type batchWriter struct {
	out      io.Writer
	interval time.Duration
	size     int
	timer    *time.Timer // flushes; armed by the first line into an empty buf

	wmu sync.Mutex // held while a batch is written to out: batches go out in order

	mu     sync.Mutex // guards the rest
	buf    []byte     // lines not yet written
	spare  []byte     // the last batch's buffer, for reuse
	closed bool       // Close was called: every Write goes straight out
}

func newBatchWriter(out io.Writer, interval time.Duration, size int) *batchWriter {
	b := &batchWriter{out: out, interval: interval, size: size}
	b.timer = time.AfterFunc(time.Hour, b.Flush)
	b.timer.Stop()
	return b
}

func (b *batchWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.wmu.Lock()
		defer b.wmu.Unlock()
		_, _ = b.out.Write(p)
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
	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.mu.Lock()
	p := b.buf
	b.buf, b.spare = b.spare[:0], nil
	if closing {
		b.closed = true
		b.timer.Stop()
	}
	b.mu.Unlock()
	if len(p) > 0 {
		_, _ = b.out.Write(p)
	}
	if !closing && cap(p) <= 2*b.size { // a batch grown by one huge line is not kept
		b.mu.Lock()
		b.spare = p[:0]
		b.mu.Unlock()
	}
}
