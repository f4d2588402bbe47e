package gate

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// readBufferBytes is the size of an upstream connection's read buffer (and
// of the buffer a request is written from). It is taken from a pool while a
// request is in flight and given back as soon as the connection has nothing
// buffered: an idle keep-alive connection, and an event stream waiting for
// its next event, hold none.
const readBufferBytes = 8 << 10

// bytePool reuses buffers of readBufferBytes.
type bytePool struct{ p sync.Pool }

func newBytePool() *bytePool {
	return &bytePool{p: sync.Pool{New: func() any { b := make([]byte, readBufferBytes); return &b }}}
}

func (p *bytePool) get() *[]byte  { return p.p.Get().(*[]byte) }
func (p *bytePool) put(b *[]byte) { p.p.Put(b) }

// errClosedMidAnswer is a connection that ended in the middle of an answer.
var errClosedMidAnswer = errors.New("read upstream answer: connection closed mid-answer")

// Chunked body states.
const (
	chunkSize    = iota // expecting a chunk-size line
	chunkData           // inside a chunk's data (remaining bytes)
	chunkCRLF           // expecting the CRLF after a chunk's data
	chunkTrailer        // reading (and dropping) the trailer section
)

// upstreamConn is one HTTP/1.1 connection to the upstream, carrying one
// request at a time: a request is written whole, its answer read to its end,
// and only then may the connection carry another (no pipelining). It is
// used by one goroutine at a time, except close, which any may call.
type upstreamConn struct {
	nc   net.Conn
	rd   io.Reader       // nc, or the bytes a test feeds
	raw  syscall.RawConn // nil: no readiness checks (a test's reader)
	addr string          // what it was dialled for
	pool *bytePool

	bufp *[]byte // the pooled buffer behind buf, nil when buf is not pooled
	buf  []byte  // read buffer; nil while nothing is buffered and nothing read
	r, w int     // buf[r:w] is read and not yet consumed
	err  error   // sticky read error
	got  int64   // bytes read for the current request

	idleSince time.Time // when it went back to the pool

	head      responseHead
	framing   int   // of the body being read (framingNone once read)
	remaining int64 // framingLength, or chunkData: bytes left
	chunk     int   // chunked body state
	trailer   int   // trailer bytes read
	overhead  int64 // chunk framing beyond what the data pays for (maxChunkOverhead)

	// aborted: closed under the request (the client went away, shutdown
	// ended a stream); reads then fail with context.Canceled.
	aborted atomic.Bool
	abortFn func() // abort, as a method value made once

	// beforeFill, when set, runs before every read from the connection,
	// which may block: the relay of a stream flushes there what it wrote.
	beforeFill func()

	// Readiness checks through raw: method values made once, so a check
	// allocates nothing.
	peekFn, waitFn func(fd uintptr) bool
	peekBuf        [1]byte
	peekN          int
	peekErr        error
}

func newUpstreamConn(nc net.Conn, addr string, pool *bytePool) *upstreamConn {
	c := &upstreamConn{nc: nc, rd: nc, addr: addr, pool: pool}
	c.abortFn = c.abort
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
			c.peekFn, c.waitFn = c.peek, c.readable
		}
	}
	return c
}

func (c *upstreamConn) close() { _ = c.nc.Close() }

// abort closes the connection under the request using it, which ends a
// read or write in progress.
func (c *upstreamConn) abort() {
	c.aborted.Store(true)
	c.close()
}

// reset prepares the connection for a new request.
func (c *upstreamConn) reset() {
	c.got, c.framing, c.remaining, c.chunk, c.trailer, c.overhead = 0, framingNone, 0, chunkSize, 0, 0
	c.beforeFill = nil
}

// buffered is the number of bytes read and not yet consumed.
func (c *upstreamConn) buffered() int { return c.w - c.r }

// release gives the read buffer back once nothing in it is unread.
func (c *upstreamConn) release() {
	if c.r != c.w {
		return
	}
	if c.bufp != nil {
		c.pool.put(c.bufp)
	}
	c.bufp, c.buf, c.r, c.w = nil, nil, 0, 0
}

// fill reads more bytes into the buffer. With wait, when nothing is
// buffered it first gives the buffer back and waits for the connection to
// be readable, so a quiet stream holds no buffer while it waits.
func (c *upstreamConn) fill(wait bool) error {
	if c.err != nil {
		return c.err
	}
	if c.beforeFill != nil {
		c.beforeFill()
	}
	if c.r == c.w {
		if wait && c.raw != nil {
			c.release()
			if err := c.raw.Read(c.waitFn); err != nil {
				c.err = c.readError(err)
				return c.err
			}
		}
		c.r, c.w = 0, 0
	}
	if c.buf == nil {
		c.bufp = c.pool.get()
		c.buf = *c.bufp
	}
	if c.w == len(c.buf) {
		if c.r == 0 {
			return errors.New("read upstream: buffer full") // the callers bound what they buffer below its size
		}
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r = 0
	}
	for {
		n, err := c.rd.Read(c.buf[c.w:])
		c.w += n
		c.got += int64(n)
		if err != nil {
			c.err = c.readError(err)
		}
		if n > 0 {
			return nil
		}
		if err != nil {
			return c.err
		}
	}
}

// readError is context.Canceled for a connection closed under its
// request.
func (c *upstreamConn) readError(err error) error {
	if c.aborted.Load() {
		return context.Canceled
	}
	return err
}

// readable is raw.Read's callback while waiting: done once a peek at the
// socket finds anything (data, its end, an error) rather than EAGAIN.
func (c *upstreamConn) readable(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), c.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err != syscall.EAGAIN
}

// peek is raw.Read's callback for alive: one look, never a wait.
func (c *upstreamConn) peek(fd uintptr) bool {
	c.peekN, _, c.peekErr = syscall.Recvfrom(int(fd), c.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return true
}

// alive reports whether an idle connection may carry a request: the
// upstream has not closed it (an idle timeout, a restarted child) and has
// sent nothing unasked. One non-blocking peek; no goroutine watches idle
// connections.
func (c *upstreamConn) alive() bool {
	if c.raw == nil {
		return true
	}
	c.peekN, c.peekErr = 0, nil
	if err := c.raw.Read(c.peekFn); err != nil {
		return false
	}
	return c.peekErr == syscall.EAGAIN
}

// readHead reads one answer's head (an informational one included) into
// c.head and prepares its body for next.
func (c *upstreamConn) readHead(isHead bool) error {
	scanned := 0 // bytes after c.r already seen to be whole lines of this head
	for {
		if c.r < c.w {
			n, next, err := headEnd(c.buf[c.r:c.w], scanned)
			scanned = next
			if err == nil {
				s := string(c.buf[c.r : c.r+n])
				c.r += n
				if err := parseHead(s, isHead, &c.head); err != nil {
					return err
				}
				c.framing, c.remaining, c.chunk, c.trailer, c.overhead = c.head.framing, c.head.length, chunkSize, 0, 0
				return nil
			}
			if err != errIncomplete {
				return err
			}
		}
		if c.buf != nil && c.r == 0 && c.w == len(c.buf) {
			// A head longer than the buffer (headEnd bounds it): a larger
			// buffer of its own, not pooled.
			nb := make([]byte, 2*len(c.buf))
			copy(nb, c.buf[:c.w])
			if c.bufp != nil {
				c.pool.put(c.bufp)
			}
			c.bufp, c.buf = nil, nb
		}
		if err := c.fill(false); err != nil {
			if err == io.EOF && c.w > c.r {
				err = errClosedMidAnswer
			}
			return err
		}
	}
}

// next returns the next bytes of the answer's body, a slice of the read
// buffer valid until the following call, and io.EOF once the body ended
// (possibly with the last bytes). With wait, a read that finds nothing
// buffered first waits without a buffer (fill).
func (c *upstreamConn) next(wait bool) ([]byte, error) {
	for {
		switch c.framing {
		case framingNone:
			return nil, io.EOF
		case framingClose:
			if c.r < c.w {
				p := c.buf[c.r:c.w]
				c.r = c.w
				return p, nil
			}
			if err := c.fill(wait); err != nil {
				if err == io.EOF {
					c.framing = framingNone
				}
				return nil, err
			}
		case framingLength:
			if c.remaining == 0 {
				c.framing = framingNone
				return nil, io.EOF
			}
			if p := c.take(); p != nil {
				if c.remaining == 0 {
					c.framing = framingNone
					return p, io.EOF
				}
				return p, nil
			}
			if err := c.fill(wait); err != nil {
				return nil, midAnswer(err)
			}
		case framingChunked:
			p, err := c.nextChunked(wait)
			if p != nil || err != nil {
				return p, err
			}
		}
	}
}

// take consumes up to c.remaining buffered bytes; nil when none is buffered.
func (c *upstreamConn) take() []byte {
	if c.r == c.w {
		return nil
	}
	n := min(int64(c.w-c.r), c.remaining)
	p := c.buf[c.r : c.r+int(n)]
	c.r += int(n)
	c.remaining -= n
	return p
}

func midAnswer(err error) error {
	if err == io.EOF {
		return errClosedMidAnswer
	}
	return err
}

// nextChunked advances a chunked body (RFC 9112 §7.1): it returns chunk
// data, or nil and nil when it only moved past framing.
func (c *upstreamConn) nextChunked(wait bool) ([]byte, error) {
	switch c.chunk {
	case chunkSize:
		line, err := c.line(maxChunkLineBytes, wait)
		if err != nil {
			return nil, err
		}
		n, err := parseChunkSize(line)
		if err != nil {
			return nil, err
		}
		c.overhead += int64(len(line)) + 2 - 16 - 2*min(n, 1<<20)
		c.overhead = max(c.overhead, 0)
		if c.overhead > maxChunkOverhead {
			return nil, malformed("chunked framing far larger than its data")
		}
		if n == 0 {
			c.chunk = chunkTrailer
		} else {
			c.chunk, c.remaining = chunkData, n
		}
	case chunkData:
		if p := c.take(); p != nil {
			if c.remaining == 0 {
				c.chunk = chunkCRLF
			}
			return p, nil
		}
		if err := c.fill(wait); err != nil {
			return nil, midAnswer(err)
		}
	case chunkCRLF:
		if c.w-c.r < 2 {
			if err := c.fill(wait && c.r == c.w); err != nil {
				return nil, midAnswer(err)
			}
			return nil, nil
		}
		if c.buf[c.r] != '\r' || c.buf[c.r+1] != '\n' {
			return nil, malformed("chunk data not followed by CRLF")
		}
		c.r += 2
		c.chunk = chunkSize
	case chunkTrailer:
		// Trailers are read and dropped (RFC 9110 §6.5): what the gateway
		// removes from a header must not come after the body instead.
		line, err := c.line(maxChunkLineBytes, false)
		if err != nil {
			return nil, err
		}
		if len(line) == 0 {
			c.framing = framingNone
			return nil, io.EOF
		}
		c.trailer += len(line) + 2
		if c.trailer > maxTrailerBytes {
			return nil, malformed("trailers larger than %d bytes", maxTrailerBytes)
		}
		if _, _, err := parseFieldLine(string(line)); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// line returns the next CRLF-ended line without its CRLF, at most max
// bytes; a bare LF is an error.
func (c *upstreamConn) line(max int, wait bool) ([]byte, error) {
	for {
		b := c.buf[c.r:c.w]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			if i == 0 || b[i-1] != '\r' {
				return nil, malformed("line not ended by CRLF")
			}
			if i-1 > max {
				return nil, malformed("line longer than %d bytes", max)
			}
			c.r += i + 1
			return b[:i-1], nil
		}
		if len(b) > max {
			return nil, malformed("line longer than %d bytes", max)
		}
		if err := c.fill(wait && c.r == c.w); err != nil {
			return nil, midAnswer(err)
		}
	}
}

// bodyReader is the answer's body as an io.ReadCloser, for the listing
// filter. Closing it leaves the connection as it is: one whose body was not
// read to its end is not reused (finished).
type bodyReader struct {
	c   *upstreamConn
	p   []byte // returned by next, not yet copied out
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	for len(b.p) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		b.p, b.err = b.c.next(false)
	}
	n := copy(p, b.p)
	b.p = b.p[n:]
	if len(b.p) == 0 && b.err != nil {
		return n, b.err
	}
	return n, nil
}

func (b *bodyReader) Close() error { return nil }

// finished reports whether the body was read to its end.
func (b *bodyReader) finished() bool { return b.err == io.EOF && len(b.p) == 0 }
