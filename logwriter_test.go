package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// recordWriter records each write it gets, and can be made to block.
type recordWriter struct {
	mu     sync.Mutex
	writes []string
	gate   chan struct{} // nil, or every write waits until it is closed
}

func (w *recordWriter) Write(p []byte) (int, error) {
	if w.gate != nil {
		<-w.gate
	}
	w.mu.Lock()
	w.writes = append(w.writes, string(p))
	w.mu.Unlock()
	return len(p), nil
}

func (w *recordWriter) got() (writes int, all string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.writes), strings.Join(w.writes, "")
}

// TestBatchWriterHoldsAndFlushes: lines wait (no write per line) until
// Flush, the size is reached, or the interval passes; Close writes what is
// held and lets later lines straight through.
func TestBatchWriterHoldsAndFlushes(t *testing.T) {
	out := &recordWriter{}
	b := newBatchWriter(out, time.Hour, 1<<10)
	for i := range 10 {
		fmt.Fprintf(b, "line %d\n", i)
	}
	if n, _ := out.got(); n != 0 {
		t.Fatalf("%d writes before the interval, the size or Flush; want 0", n)
	}
	b.Flush()
	n, all := out.got()
	if n != 1 || all != "line 0\nline 1\nline 2\nline 3\nline 4\nline 5\nline 6\nline 7\nline 8\nline 9\n" {
		t.Fatalf("after Flush: %d writes of %q; want the 10 lines in one", n, all)
	}
	b.Flush() // nothing held: no empty write
	if n, _ := out.got(); n != 1 {
		t.Fatalf("an empty Flush wrote: %d writes", n)
	}

	// The size: the line that crosses it writes the batch.
	line := strings.Repeat("x", 99) + "\n"
	for range 10 {
		_, _ = b.Write([]byte(line))
	}
	if n, _ := out.got(); n != 1 {
		t.Fatalf("1000 bytes held under a 1024-byte size: %d writes, want still 1", n)
	}
	_, _ = b.Write([]byte(line))
	if n, _ := out.got(); n != 2 {
		t.Fatalf("the line crossing the size: %d writes, want 2", n)
	}

	_, _ = b.Write([]byte("held\n"))
	b.Close()
	if _, all := out.got(); !strings.HasSuffix(all, "held\n") {
		t.Fatalf("Close did not write the held line: %q", all)
	}
	_, _ = b.Write([]byte("after\n"))
	if n, all := out.got(); n != 4 || !strings.HasSuffix(all, "after\n") {
		t.Fatalf("a line after Close: %d writes, ending %q; want it written at once", n, all[max(0, len(all)-20):])
	}
}

// TestBatchWriterInterval: a line is written within the interval without
// anything else happening.
func TestBatchWriterInterval(t *testing.T) {
	out := &recordWriter{}
	b := newBatchWriter(out, 5*time.Millisecond, 1<<20)
	defer b.Close()
	_, _ = b.Write([]byte("one\n"))
	testkit.WaitFor(t, "the line written by the interval", 5*time.Second, func() bool {
		_, all := out.got()
		return all == "one\n"
	})
	_, _ = b.Write([]byte("two\n")) // the timer armed again
	testkit.WaitFor(t, "a second line written by the interval", 5*time.Second, func() bool {
		_, all := out.got()
		return all == "one\ntwo\n"
	})
}

// TestBatchWriterConcurrent: lines from many goroutines, with batches
// written by size, by the timer and by Flush meanwhile, all arrive whole,
// each goroutine's in its order.
func TestBatchWriterConcurrent(t *testing.T) {
	out := &recordWriter{}
	b := newBatchWriter(out, time.Millisecond, 4<<10)
	const writers, lines = 8, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				fmt.Fprintf(b, "w%d %04d %s\n", w, i, strings.Repeat("y", i%97))
				if i%100 == 0 {
					b.Flush()
				}
			}
		}()
	}
	wg.Wait()
	b.Close()
	_, all := out.got()
	next := make([]int, writers)
	got := strings.Split(strings.TrimSuffix(all, "\n"), "\n")
	if len(got) != writers*lines {
		t.Fatalf("%d lines, want %d", len(got), writers*lines)
	}
	for _, l := range got {
		var w, i int
		if _, err := fmt.Sscanf(l, "w%d %d", &w, &i); err != nil || w < 0 || w >= writers {
			t.Fatalf("a line not whole: %q", l)
		}
		if i != next[w] || l != fmt.Sprintf("w%d %04d %s", w, i, strings.Repeat("y", i%97)) {
			t.Fatalf("writer %d: got %q, want its line %d whole", w, l, next[w])
		}
		next[w]++
	}
}

// TestBatchWriterBackpressure: an output that does not take writes (a
// full pipe) holds back the writers once a batch is full, rather than the
// held lines growing without bound.
func TestBatchWriterBackpressure(t *testing.T) {
	out := &recordWriter{gate: make(chan struct{})}
	b := newBatchWriter(out, time.Hour, 1<<10)
	wrote := make(chan int)
	go func() {
		n := 0
		for range 100 { // 10 KiB: ten batches' worth
			_, _ = b.Write(bytes.Repeat([]byte("z"), 99))
			_, _ = b.Write([]byte("\n"))
			n++
		}
		wrote <- n
	}()
	select {
	case n := <-wrote:
		t.Fatalf("%d lines written while the output took nothing: not held back", n)
	case <-time.After(100 * time.Millisecond):
	}
	b.mu.Lock()
	held := len(b.buf)
	b.mu.Unlock()
	if held > 2<<10 {
		t.Fatalf("%d bytes held while the output was stuck; want at most about one batch", held)
	}
	close(out.gate)
	<-wrote
	b.Close()
	if _, all := out.got(); len(all) != 100*100 {
		t.Fatalf("%d bytes written in the end, want %d", len(all), 100*100)
	}
}

// TestBatchWriterStoppingGivesUp: once Stopping was called, an output
// that takes nothing holds a writer up at most stopWait, and later lines
// not at all (dropped); an output that takes writes again gets the lines
// after that.
func TestBatchWriterStoppingGivesUp(t *testing.T) {
	out := &recordWriter{gate: make(chan struct{})}
	b := newBatchWriter(out, time.Hour, 1<<10)
	line := []byte(strings.Repeat("s", 99) + "\n")
	stuck := make(chan struct{})
	go func() {
		for range 11 { // the 11th crosses the size: its Flush waits for out
			_, _ = b.Write(line)
		}
		close(stuck)
	}()
	select {
	case <-stuck:
		t.Fatal("a full batch was not held back before Stopping")
	case <-time.After(50 * time.Millisecond):
	}
	b.Stopping()
	select {
	case <-stuck:
	case <-time.After(stopWait + 5*time.Second):
		t.Fatal("the writer waiting for out was not let go after Stopping")
	}
	// The first batch is still stuck in out: later lines are dropped at once.
	returned := make(chan struct{})
	go func() {
		for range 20 {
			_, _ = b.Write(line)
		}
		b.Close()
		_, _ = b.Write([]byte("after close\n"))
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(stopWait / 2):
		t.Fatal("lines after a write given up on waited for out")
	}
	close(out.gate) // out takes writes again
	testkit.WaitFor(t, "the stuck batch written", 5*time.Second, func() bool { n, _ := out.got(); return n == 1 })
	_, _ = b.Write([]byte("later\n"))
	if n, all := out.got(); n != 2 || !strings.HasSuffix(all, "later\n") {
		t.Errorf("after out recovered: %d writes ending %q, want the line written", n, all[max(0, len(all)-20):])
	}
}

// TestBatchWriterLineGivenUpOnAfterClose: a line written after Close that
// the output does not take in time is written as it was, although its
// caller has reused its buffer since.
func TestBatchWriterLineGivenUpOnAfterClose(t *testing.T) {
	out := &recordWriter{gate: make(chan struct{})}
	b := newBatchWriter(out, time.Hour, 1<<10)
	b.Close()
	b.Stopping()
	p := []byte("the line\n")
	_, _ = b.Write(p) // given up on after stopWait
	copy(p, "reused!!\n")
	close(out.gate)
	testkit.WaitFor(t, "the line written", 5*time.Second, func() bool { n, _ := out.got(); return n == 1 })
	if _, all := out.got(); all != "the line\n" {
		t.Errorf("wrote %q, want the line as it was written", all)
	}
}

// failingWriter counts its writes, each of which fails as a write to a
// pipe whose reader is gone does.
type failingWriter struct {
	mu     sync.Mutex
	writes int
	to     *os.File
}

func (w *failingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.writes++
	w.mu.Unlock()
	return w.to.Write(p)
}

// TestBatchWriterReaderGone: an output pipe whose reader closed fails
// every write (EPIPE): each batch is tried once and dropped, nothing
// blocks or is retried, and lines after Close go the same way.
func TestBatchWriterReaderGone(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r.Close()
	if _, err := w.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("a write to the pipe: %v, want EPIPE", err)
	}
	out := &failingWriter{to: w}
	const line = "a line of the log, to no one\n"
	b := newBatchWriter(out, time.Hour, 2*len(line)) // two lines a batch
	for range 100 {
		if n, err := b.Write([]byte(line)); n != len(line) || err != nil {
			t.Fatalf("Write: %d, %v; want the line taken", n, err)
		}
	}
	b.Close()
	_, _ = b.Write([]byte("after close\n"))
	out.mu.Lock()
	defer out.mu.Unlock()
	if out.writes != 51 {
		t.Errorf("%d writes, want 51: each batch of two lines and the line after Close, once", out.writes)
	}
}

// TestNewLoggerBatchesFiles: the logger holds lines for a file (stderr
// redirected, a pipe), not for other writers (the tests' buffers), and
// close writes them.
func TestNewLoggerBatchesFiles(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lg := newLogger(LogConfig{Level: hclog.Info}, f)
	if lg.batch == nil {
		t.Fatal("a file output is not batched")
	}
	lg.root.Info("started")
	_, _ = lg.audit.Write([]byte(`{"@message":"proxied"}` + "\n"))
	lg.close()
	data, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if lines := testkit.JSONLines(t, string(data)); len(lines) != 2 || lines[0]["@message"] != "started" || lines[1]["@message"] != "proxied" {
		t.Fatalf("after close, the file holds %q; want the two lines in order", data)
	}
	var buf testkit.LogBuffer
	if lg := newLogger(LogConfig{Level: hclog.Info}, &buf); lg.batch != nil {
		t.Fatal("a writer that is not a file is batched")
	}
}

// TestChildStoppedWhileLogOutputStalls: a log reader that stops reading (a
// log driver that hangs) fills the gateway's stderr pipe, and every line
// logged from then on waits for it. A stopping gateway must still stop its
// child and return, dropping the lines the output does not take.
func TestChildStoppedWhileLogOutputStalls(t *testing.T) {
	dir := t.TempDir()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	defer r.Close() // last: ends a write still stuck in the pipe (EPIPE)
	is := testkit.StartIssuer(t, nil)
	env := gatewayEnv(is.URL, map[string]string{
		"MCP_SPAWN_CMD": fmt.Sprintf("echo $$ > %[1]s/pid; echo up; while [ ! -f %[1]s/flood ]; do sleep 0.01; done; yes flood", dir),
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"mcp-oauth-proxy"}, envOf(env), io.Discard, w) }()

	// Read the log until the child is up, then read no more.
	sc := bufio.NewScanner(r)
	for sc.Scan() && !strings.Contains(sc.Text(), `"@message":"up"`) {
	}
	child := 0
	testkit.WaitFor(t, "the child's pid", 10*time.Second, func() bool {
		b, _ := os.ReadFile(dir + "/pid")
		child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return child > 0
	})
	if err := os.WriteFile(dir+"/flood", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the log pipe full", 20*time.Second, func() bool {
		n, err := unix.IoctlGetInt(int(r.Fd()), unix.TIOCINQ) // FIONREAD: bytes not yet read
		return err == nil && n >= 64<<10
	})

	cancel() // as SIGTERM does
	select {
	case err := <-done:
		if got := exitStatus(err); got != 143 {
			t.Errorf("exit status %d, want 143 (the child's SIGTERM)", got)
		}
	case <-time.After(20 * time.Second):
		t.Error("run did not return with its log output stalled")
		go func() { _, _ = io.Copy(io.Discard, r) }() // let it finish
		<-done
	}
	if err := syscall.Kill(child, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the child %d is still there: %v", child, err)
	}
}

// TestBatchWriterReadyWhileStuck: /readyz's log check fails while a write
// to the output has waited longer than stuckAfter, and holds again once the
// output takes it.
func TestBatchWriterReadyWhileStuck(t *testing.T) {
	out := &recordWriter{gate: make(chan struct{})}
	b := newBatchWriter(out, time.Hour, 1<<10)
	b.stuckAfter = 50 * time.Millisecond
	if ok, detail := b.Ready(); !ok {
		t.Fatalf("ready before any write: %v %q", ok, detail)
	}
	go func() { _, _ = b.Write([]byte("line\n")); b.Flush() }()
	testkit.WaitFor(t, "the check to fail while out takes nothing", 5*time.Second, func() bool {
		ok, detail := b.Ready()
		return !ok && strings.Contains(detail, "log output has taken nothing")
	})
	close(out.gate)
	testkit.WaitFor(t, "the check to hold once out took the line", 5*time.Second, func() bool {
		ok, _ := b.Ready()
		return ok
	})
}
