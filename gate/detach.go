package gate

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// Detached event streams. With the 2026-07-28 transport every connected
// client holds a subscriptions/listen answer open, mostly idle; earlier
// revisions hold a GET stream. While a handler relays one, net/http keeps
// for its connection two goroutines (the handler's, with the stack the whole
// gate ran on, and a background read) and about 14 KiB of buffers and
// request state, which alone is more than half of the 25 KiB an idle
// stream may cost (docs/performance.md). So once the upstream has
// answered with an event stream, the gate takes the client's connection
// over (http.Hijacker), writes the answer's head itself as net/http would
// (status line, the headers already decided, Date, chunked, Connection:
// close), and returns from the handler:
// net/http frees the connection's goroutine, buffers and request. One
// goroutine relays the stream, chunk by chunk as events arrive, waiting
// without a buffer (upstreamConn.fill); a second, with a stack of a few
// hundred bytes, waits for the client to close (dropping what it sends
// meanwhile, pipelined requests, up to a bound) and ends the stream
// then. The stream ends as any other: at shutdown, when the upstream ends
// it, when the client goes; its audit line and Metrics come at its end.
//
// Only what net/http could not do better is detached: an event stream of
// an HTTP/1.1 client, with Config.Shutdown set (http.Server.Shutdown does
// not see hijacked connections, so Shutdown is what ends them), with the
// request's body sent whole, and no listing filter on it. The rest is
// relayed in the handler.

// detachedStream is an event stream relayed after its handler returned.
type detachedStream struct {
	g        *gate
	c        *upstreamConn
	cc       net.Conn    // the client's connection, hijacked
	w        *recorder   // status, bytes and metrics; its ResponseWriter is gone
	end      proxyEnd    // for the audit line
	stopDown func() bool // stops ending the stream at shutdown (stop)
	head     []byte      // the answer's head, until it is written
	crlf     [2]byte
}

// detach hands the event stream whose head was just read to a goroutine of
// its own, as above, and reports whether it did; when it did not, nothing
// was written and the handler relays the stream.
func (x *exchange) detach() bool {
	c := x.c
	if x.g.shutdown == nil || x.r.ProtoMajor != 1 || x.r.ProtoMinor < 1 || x.writer != nil ||
		c.head.framing != framingChunked && c.head.framing != framingClose {
		return false
	}
	hj, ok := x.w.ResponseWriter.(http.Hijacker)
	if !ok {
		return false
	}
	x.w.sealSessions() // as WriteHeader would have
	head := appendResponseHead(make([]byte, 0, 512), c.head.status, x.w.Header(), time.Now())
	if x.g.detached != nil {
		// Before Hijack: once the connection is no longer the server's,
		// its Shutdown may return, and the caller waits on this instead.
		x.g.detached.Add(1)
	}
	cc, _, err := hj.Hijack() // what the client sent after its request is dropped (below)
	if err != nil {
		if x.g.detached != nil {
			x.g.detached.Done()
		}
		return false
	}
	// From here on the request's context ends when the handler returns:
	// the watcher says when the client goes instead.
	if !x.stop() {
		c.abort() // the client went away meanwhile: the stream ends at once
	}
	x.stop = nil
	x.w.noteStatus(c.head.status)
	x.w.ResponseWriter = nil // net/http's response: nothing of it is kept
	x.w.detached = true
	s := &detachedStream{g: x.g, c: c, cc: cc, w: x.w, end: *x.end, head: head, crlf: [2]byte{'\r', '\n'}}
	x.c = nil
	// At shutdown both connections close: a client that stopped reading
	// would otherwise hold the relay in a write.
	if x.stopDown != nil && !x.stopDown() {
		s.stop() // shutdown began meanwhile
	}
	x.stopDown = nil
	s.stopDown = context.AfterFunc(x.g.shutdown, s.stop)
	// What the client sent after its request (pipelined requests, buffered
	// or still to come) is never read as a request: the head says
	// Connection: close, after which a server processes no further request
	// (RFC 9112 §9.6) and the client sends again what was not answered
	// (§9.3.2), as it would had net/http closed the connection. The answer
	// in hand is relayed whole all the same.
	go s.run()
	return true
}

// stop ends the stream at shutdown: both connections are closed, so the
// relay ends whatever it was waiting for.
func (s *detachedStream) stop() {
	s.c.abort()
	_ = s.cc.Close()
}

// run relays the stream to its end, then accounts for it.
func (s *detachedStream) run() {
	if s.g.detached != nil {
		defer s.g.detached.Done() // after the audit line (Config.Detached)
	}
	watched := make(chan struct{})
	go s.watch(watched)
	s.c.beforeFill = s.flushHead
	err := s.relay()
	s.stopDown()
	_ = s.cc.Close() // ends the watcher
	<-watched
	s.c.beforeFill = nil
	s.g.conns.discard(s.c) // the watcher may have closed it: never reused
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, net.ErrClosed) {
		s.g.log.Warn("proxy: upstream answer broken off", "method", s.end.method, "path", s.end.path, "request_id", s.w.id, "error", err)
	}
	s.g.proxied(s.w, &s.end)
	s.g.answered(s.w)
	s.g.endInFlight(s.w)
}

// relay copies the body as chunks (RFC 9112 §7.1), each written as soon as
// it arrived; it ends the chunked body when the upstream's answer ends, and
// leaves it cut otherwise, so the client never takes a cut stream for a
// whole one.
func (s *detachedStream) relay() error {
	for {
		p, err := s.c.next(true)
		if len(p) > 0 {
			if werr := s.send(p); werr != nil {
				return context.Canceled // the client went away
			}
		}
		if err == io.EOF {
			s.flushHead()
			_, werr := io.WriteString(s.cc, "0\r\n\r\n")
			return werr
		}
		if err != nil {
			return err
		}
	}
}

// send writes p as one chunk, after the head when it is still to go, in one
// write.
func (s *detachedStream) send(p []byte) error {
	var line [20]byte
	l := strconv.AppendInt(line[:0], int64(len(p)), 16)
	l = append(l, '\r', '\n')
	bufs := net.Buffers{s.head, l, p, s.crlf[:]}
	s.head = nil
	_, err := bufs.WriteTo(s.cc)
	if err == nil {
		s.w.bytes += int64(len(p))
	}
	return err
}

// flushHead writes the head if it is still to go: before the relay waits
// for the first event, so the client learns at once that its stream is
// open (upstreamConn.beforeFill).
func (s *detachedStream) flushHead() {
	if s.head != nil {
		if _, err := s.cc.Write(s.head); err != nil {
			s.c.abort()
		}
		s.head = nil
	}
}

// maxPipelinedBytes bounds what a detached stream's client may send after
// its request (pipelined requests, which are dropped) before the stream is
// ended: a client that keeps sending is not waiting for a stream.
const maxPipelinedBytes = 64 << 10

// watch waits for the client to close its connection (or to send more than
// maxPipelinedBytes) and ends the stream then; it returns when run closes
// the connection too. What the client sends is dropped (detach).
func (s *detachedStream) watch(done chan<- struct{}) {
	defer close(done)
	var b [128]byte
	for sent := 0; sent <= maxPipelinedBytes; {
		n, err := s.cc.Read(b[:])
		if err != nil {
			break
		}
		sent += n
	}
	s.c.abort()
}

// appendResponseHead writes the head of an answer as net/http's server
// writes one for a handler that set h and wrote status (RFC 9112 §4, §5):
// the status line, the headers in sorted order, Date unless set, and the
// framing of a stream the gate ends by closing the connection. A value
// that could break a line is dropped (none can: the upstream's were
// parsed strictly, the gate's are its own).
func appendResponseHead(b []byte, status int, h http.Header, now time.Time) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	if text := http.StatusText(status); text != "" {
		b = append(b, text...)
	} else {
		b = append(b, "status code "...)
		b = strconv.AppendInt(b, int64(status), 10)
	}
	b = append(b, "\r\n"...)
	keys := make([]string, 0, len(h))
	for k := range h {
		switch k {
		case "Content-Length", "Transfer-Encoding", "Connection", "Trailer":
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !isToken(k) {
			continue
		}
		for _, v := range h[k] {
			if isFieldValue(v) {
				b = append(b, k...)
				b = append(b, ": "...)
				b = append(b, v...)
				b = append(b, "\r\n"...)
			}
		}
	}
	if _, ok := h["Date"]; !ok {
		b = append(b, "Date: "...)
		b = now.UTC().AppendFormat(b, http.TimeFormat)
		b = append(b, "\r\n"...)
	}
	return append(b, "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"...)
}
