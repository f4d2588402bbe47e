package gate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/mcp"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/policy"
)

// The request path's last step over the gate's own client (upstream.go):
// what rewrite and modifyResponse do for httputil.ReverseProxy, done here
// while the request is written and its answer read. Every behaviour is the
// same: the path as checked, the upstream's own Host, scrubbed credentials
// and identity headers, the gate's forwarding headers and request ID, no
// hop-by-hop headers (nor those the client's Connection names), no
// trailers either way, no upgrade, informational answers dropped, the
// upstream's CORS headers and X-Request-Id dropped, event streams flushed as
// they arrive and ended at shutdown, listings filtered, and failures
// answered by proxyError.

// directTarget reports whether the gate's own client carries requests to
// target: plain http to an ASCII host. Anything else (https, an
// internationalised host name) goes through httputil.ReverseProxy and its
// Transport.
func (g *gate) directTarget(target *url.URL) bool {
	if g.conns == nil || target == nil || target.Scheme != "http" || target.Host == "" {
		return false
	}
	for i := 0; i < len(target.Host); i++ {
		if c := target.Host[i]; c >= 0x80 || c <= ' ' {
			return false
		}
	}
	return true
}

// upstreamAddr is target's dial address and Host header: the port defaults
// to 80; an IPv6 zone is not sent in Host (as net/http does).
func upstreamAddr(target *url.URL) (addr, host string) {
	host = target.Host
	addr = host
	if target.Port() == "" {
		addr = net.JoinHostPort(target.Hostname(), "80")
	}
	if i := strings.IndexByte(host, '%'); i >= 0 {
		if j := strings.IndexByte(host[i:], ']'); j >= 0 {
			host = host[:i] + host[i+j:]
		}
	}
	return addr, host
}

// exchange is one request over the gate's own client.
type exchange struct {
	g      *gate
	w      *recorder
	r      *http.Request
	target *url.URL
	end    *proxyEnd // for a detached stream

	c        *upstreamConn
	reused   bool
	stop     func() bool // stops closing c when the request's context ends
	stopDown func() bool // nil, or stops closing c when shutdown begins (an event stream)
	writer   chan error  // nil, or the result of writing the rest of the body
	unsent   bool        // a stream's relay wrote since it last flushed
}

// flush sends what a stream's relay wrote (the headers included) before
// the relay reads again, which may block: an event reaches the client when
// it reaches the gate (upstreamConn.beforeFill).
func (x *exchange) flush() {
	if x.unsent {
		x.unsent = false
		x.w.Flush()
	}
}

// endOnShutdown has the event stream being relayed ended when shutdown
// begins (Config.Shutdown), whatever request it answers: its connection is
// closed, so the relay ends as for a client gone, and the upstream sees its
// request end. An open stream never finishes on its own, so the drain would
// otherwise wait its whole grace for it.
func (x *exchange) endOnShutdown() {
	if x.g.shutdown != nil {
		x.stopDown = context.AfterFunc(x.g.shutdown, x.c.abortFn)
	}
}

// relay proxies r to target over the gate's own client and relays the
// answer to w. It returns true when it aborted an answer already begun
// (the client went away, the upstream broke off, a stream ended at
// shutdown): ServeHTTP then raises http.ErrAbortHandler, so the client
// never takes a cut answer for a whole one.
func (g *gate) relay(w *recorder, r *http.Request, target *url.URL, lists mcp.List, s *policy.Subject, end *proxyEnd) (aborted bool) {
	x := &exchange{g: g, w: w, r: r, target: target, end: end}
	if err := x.roundTrip(lists != 0); err != nil {
		x.finish(false)
		g.proxyError(w, r, err)
		return false
	}
	if lists != 0 {
		return x.relayListing(lists, s)
	}
	return x.relayAnswer()
}

// roundTrip writes the request and reads the head of the final answer.
// A request without a body, of a method that changes nothing, that met a
// reused connection the upstream had just closed is sent again once on a
// new one (RFC 9110 §9.2.2); any other is not, as net/http would not.
func (x *exchange) roundTrip(listing bool) error {
	addr, host := upstreamAddr(x.target)
	bufs := x.g.conns.bufs
	bp := bufs.get()
	req, rest, err := x.g.writeRequest((*bp)[:0], x.w, x.r, x.target, host, listing)
	if err != nil {
		bufs.put(bp)
		return err
	}
	ctx := x.r.Context()
	retry := rest == nil && bodyless(x.r) && idempotent(x.r.Method)
	for attempt := 0; ; attempt++ {
		if err := x.connect(ctx, addr, attempt > 0); err != nil {
			bufs.put(bp)
			return err
		}
		_, err = x.c.nc.Write(req)
		if err == nil {
			if rest != nil {
				x.writer = make(chan error, 1)
				go writeRest(x.c, x.r.Body, bp, bufs, rest, x.writer)
				bp = nil
			}
			err = x.readFinalHead()
		}
		if err == nil {
			if bp != nil {
				bufs.put(bp)
			}
			return nil
		}
		if x.writer != nil {
			// The body's own failure (413, the client gone) says more
			// than the connection it broke.
			select {
			case werr := <-x.writer:
				x.writer = nil
				if werr != nil {
					err = werr
				}
			default:
			}
		}
		if x.stopped() {
			err = context.Canceled
		}
		if !retry || !x.reused || x.c.got > 0 || attempt > 0 || ctx.Err() != nil || errors.Is(err, errMalformedResponse) {
			if bp != nil {
				bufs.put(bp)
			}
			return err
		}
		x.finish(false)
	}
}

// connect takes a connection (a new one when fresh) and has it closed if
// the request's context ends (the client went away), which ends a read or
// write in progress.
func (x *exchange) connect(ctx context.Context, addr string, fresh bool) error {
	c, reused, err := x.g.conns.get(ctx, addr, fresh)
	if err != nil {
		return err
	}
	c.reset()
	x.c, x.reused = c, reused
	x.stop = context.AfterFunc(ctx, c.abortFn)
	return nil
}

// stopped reports whether the connection was closed under the request
// (client gone, shutdown).
func (x *exchange) stopped() bool { return x.c != nil && x.c.aborted.Load() }

// readFinalHead reads answers until a final one: informational answers
// (100, 103) are dropped, not relayed (MCP has no use for one, and it would
// carry the upstream's headers unfiltered); 101 is refused, as the gateway
// never asks to switch protocols.
func (x *exchange) readFinalHead() error {
	isHead := x.r.Method == http.MethodHead
	for i := 0; ; i++ {
		if err := x.c.readHead(isHead); err != nil {
			return err
		}
		switch st := x.c.head.status; {
		case st == http.StatusSwitchingProtocols:
			return errUpstreamSwitched
		case st >= 200:
			return nil
		case i == max1xx:
			return malformed("more than %d informational answers", max1xx)
		}
	}
}

// finish returns the connection to the pool when the exchange ended
// cleanly (the answer read to its end, the request written whole, nothing
// closed it), and closes it otherwise.
func (x *exchange) finish(clean bool) {
	c := x.c
	if c == nil {
		return
	}
	x.c = nil
	if x.stop != nil && !x.stop() {
		clean = false // closed, or being closed, under the request
	}
	if x.stopDown != nil && !x.stopDown() {
		clean = false
	}
	x.stop, x.stopDown = nil, nil
	c.beforeFill = nil
	if x.writer != nil {
		select {
		case err := <-x.writer:
			clean = clean && err == nil
		default:
			// The upstream answered before taking the whole body: the
			// writer ends when its write fails on the closed connection,
			// or when the server closes the client's body.
			clean = false
		}
		x.writer = nil
	}
	if clean && !c.head.close && c.framing == framingNone && c.err == nil {
		x.g.conns.put(c)
		return
	}
	x.g.conns.discard(c)
}

// relayAnswer relays an answer the gate does not filter.
func (x *exchange) relayAnswer() (aborted bool) {
	c, w := x.c, x.w
	h := &c.head
	copyAnswerHeader(w.Header(), h)
	stream := h.framing == framingChunked || h.framing == framingClose
	if isEventStream(w.Header().Get("Content-Type")) {
		stream = true
		x.endOnShutdown()
		if x.detach() {
			return false
		}
	}
	w.WriteHeader(h.status)
	if stream {
		x.unsent = true
		c.beforeFill = x.flush
	}
	for {
		// A stream waits for its next bytes without a buffer (fill).
		p, err := c.next(stream)
		if len(p) > 0 {
			if _, werr := w.Write(p); werr != nil {
				x.finish(false)
				return true // the client went away
			}
			x.unsent = stream
		}
		if err == io.EOF {
			x.finish(true)
			return false
		}
		if err != nil {
			return x.broken(err)
		}
	}
}

// broken ends an answer the upstream broke off (or the client left, or
// shutdown ended): the client's connection is dropped, never ended as if
// the answer were whole.
func (x *exchange) broken(err error) bool {
	canceled := x.stopped() || errors.Is(err, context.Canceled)
	x.finish(false)
	if !canceled {
		x.g.log.Warn("proxy: upstream answer broken off", "method", x.r.Method, "path", x.r.URL.Path, "request_id", x.w.id, "error", err)
	}
	return true
}

// relayListing relays the answer to a listing request through the
// policy's filter (listing.go), as an http.Response.
func (x *exchange) relayListing(lists mcp.List, s *policy.Subject) (aborted bool) {
	c, w := x.c, x.w
	h := &c.head
	hdr := make(http.Header, len(h.fields))
	copyAnswerHeader(hdr, h)
	body := &bodyReader{c: c}
	resp := &http.Response{StatusCode: h.status, Header: hdr, Body: body, ContentLength: -1}
	if h.framing == framingLength {
		resp.ContentLength = h.length
	}
	stream := isEventStream(hdr.Get("Content-Type"))
	if stream {
		x.endOnShutdown()
	}
	if err := x.g.filterListing(resp, lists, s, w.id); err != nil {
		x.finish(false)
		x.g.proxyError(w, x.r, err)
		return false
	}
	if _, ok := resp.Body.(*filteredEvents); ok {
		resp.Header.Del("Content-Length") // the filter changes the length
	}
	dst := w.Header()
	for k, v := range resp.Header {
		dst[k] = append(dst[k], v...)
	}
	stream = stream || resp.ContentLength < 0
	w.WriteHeader(h.status)
	if stream {
		w.Flush() // the headers, before the filter waits for an event
	}
	bp := x.g.conns.bufs.get()
	defer x.g.conns.bufs.put(bp)
	buf := *bp
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				x.finish(false)
				return true
			}
			if stream {
				w.Flush()
			}
		}
		if err == io.EOF {
			x.finish(body.finished())
			return false
		}
		if err != nil {
			return x.broken(err)
		}
	}
}

// copyAnswerHeader adds the answer's header fields to dst (after the
// gate's own), without the hop-by-hop ones (RFC 9110 §7.6.1), those its
// Connection names, its CORS headers and X-Request-Id (the gate's own are
// the only ones the client sees), and Content-Length where no body may be.
func copyAnswerHeader(dst http.Header, h *responseHead) {
	vals := make([]string, len(h.fields)) // one allocation for every value
	for i, f := range h.fields {
		switch f.name {
		case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
			"Te", "Trailer", "Transfer-Encoding", "Upgrade", "X-Request-Id":
			continue
		case "Content-Length":
			if h.status == http.StatusNoContent {
				continue
			}
		}
		if strings.HasPrefix(f.name, "Access-Control-") || len(h.connNames) > 0 && containsString(h.connNames, f.name) {
			continue
		}
		vals[i] = f.value
		if old, ok := dst[f.name]; ok {
			dst[f.name] = append(old, f.value)
		} else {
			dst[f.name] = vals[i : i+1 : i+1]
		}
	}
	if _, ok := dst["Content-Type"]; !ok {
		// The upstream said no type: net/http would guess one from the
		// body (text/html for what looks like HTML), a type the MCP
		// server never gave; a nil value keeps the answer as it was.
		dst["Content-Type"] = nil
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func idempotent(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

func bodyless(r *http.Request) bool { return r.Body == nil || r.Body == http.NoBody }

// restOfBody is what writeRest still has to send.
type restOfBody struct {
	chunked   bool
	remaining int64 // with a Content-Length: bytes still to send
}

// Room kept in the request buffer before the body for the framing line and
// the empty line, and after it for a chunk's CRLF.
const (
	framingRoom = 64
	chunkRoom   = 8 // "\r\n0\r\n\r\n" after the last chunk
)

// writeRequest writes into b the request to send upstream: the request line
// with the path as checked (joined under the upstream's path and
// UpstreamPath), the upstream's own Host, the client's headers less
// credentials, identity and hop-by-hop headers, the gate's request ID and
// forwarding headers, then as much of the body as fits. When the whole body
// fits, it is sent with its Content-Length in the same write (a chunked
// client body too); otherwise rest says how writeRest sends what is left.
// A body that cannot be read (over MaxBodyBytes, the client gone) is the
// error, and nothing is sent.
func (g *gate) writeRequest(b []byte, w *recorder, r *http.Request, target *url.URL, host string, listing bool) (req []byte, rest *restOfBody, err error) {
	path, raw := g.joinPath(target.Path, target.EscapedPath(), r.URL.Path, r.URL.EscapedPath())
	u := url.URL{Path: path, RawPath: raw, RawQuery: r.URL.RawQuery}
	uri := u.RequestURI()
	if !isRequestTarget(uri) {
		return nil, nil, fmt.Errorf("proxy: request target %q cannot be sent", bounded(uri))
	}
	b = append(b, r.Method...)
	b = append(b, ' ')
	b = append(b, uri...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\n"...)
	conn := r.Header["Connection"]
	for k, vs := range r.Header {
		if requestHopByHop(k) || scrubbedName(k) || listing && k == "Accept-Encoding" ||
			len(conn) > 0 && namedInConnection(conn, k) {
			continue
		}
		for _, v := range vs {
			if !isFieldValue(v) {
				return nil, nil, fmt.Errorf("proxy: invalid value of header %q", bounded(k))
			}
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	// The gateway's own, after the client's are gone: a client's
	// "Connection: X-Request-Id" cannot strip them (RFC 9110 §7.6.1 applies
	// to the client's hop only).
	b = append(b, "X-Request-Id: "...)
	b = append(b, w.id...)
	if w.client.IsValid() {
		b = append(b, "\r\nX-Forwarded-For: "...)
		b = w.client.AppendTo(b)
	}
	if !isFieldValue(r.Host) {
		return nil, nil, errors.New("proxy: invalid Host")
	}
	b = append(b, "\r\nX-Forwarded-Host: "...)
	b = append(b, r.Host...)
	b = append(b, "\r\nX-Forwarded-Proto: "...)
	b = append(b, forwardedProto(r, g.trusted)...)
	b = append(b, "\r\n"...)
	return appendBody(b, r)
}

// appendBody reads as much of r's body as fits after the head in b and
// frames it as the client did: with its Content-Length, or chunked (a
// whole body that fits in one write with its last chunk). No trailers are sent (RFC 9110 §6.5):
// what the gateway removes from a header must not come after the body
// instead, and Go's server has already read the client's.
func appendBody(b []byte, r *http.Request) ([]byte, *restOfBody, error) {
	if bodyless(r) {
		if r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
			b = append(b, "Content-Length: 0\r\n"...)
		}
		return append(b, "\r\n"...), nil, nil
	}
	mid := len(b)
	if cap(b)-mid < framingRoom+chunkRoom+1024 {
		// A head that fills the pooled buffer: a larger one of its own.
		nb := make([]byte, mid, mid+framingRoom+chunkRoom+readBufferBytes)
		copy(nb, b)
		b = nb
	}
	dst := b[mid+framingRoom : cap(b)-chunkRoom]
	n, complete, err := readBody(r.Body, dst, r.ContentLength)
	if err != nil {
		return nil, nil, err
	}
	var line [framingRoom]byte
	frame := line[:0]
	var rest *restOfBody
	switch {
	case complete && r.ContentLength >= 0:
		frame = append(frame, "Content-Length: "...)
		frame = strconv.AppendInt(frame, int64(n), 10)
		frame = append(frame, "\r\n\r\n"...)
	case complete:
		// Sent as it came, chunked, in one write with its last chunk.
		frame = append(frame, "Transfer-Encoding: chunked\r\n\r\n"...)
		if n > 0 {
			frame = strconv.AppendInt(frame, int64(n), 16)
			frame = append(frame, "\r\n"...)
		}
	case r.ContentLength >= 0:
		frame = append(frame, "Content-Length: "...)
		frame = strconv.AppendInt(frame, r.ContentLength, 10)
		frame = append(frame, "\r\n\r\n"...)
		rest = &restOfBody{remaining: r.ContentLength - int64(n)}
	default:
		frame = append(frame, "Transfer-Encoding: chunked\r\n\r\n"...)
		frame = strconv.AppendInt(frame, int64(n), 16)
		frame = append(frame, "\r\n"...)
		rest = &restOfBody{chunked: true}
	}
	b = b[:mid+len(frame)+n]
	copy(b[mid+len(frame):], dst[:n]) // the body moves down next to its framing
	copy(b[mid:], frame)
	switch {
	case rest != nil && rest.chunked:
		b = append(b, "\r\n"...)
	case rest == nil && r.ContentLength < 0 && n > 0:
		b = append(b, "\r\n0\r\n\r\n"...)
	case rest == nil && r.ContentLength < 0:
		b = append(b, "0\r\n\r\n"...)
	}
	return b, rest, nil
}

// readBody reads body into dst until dst is full, the declared length cl
// is read, or the body ends; complete says the whole body is in dst[:n].
func readBody(body io.Reader, dst []byte, cl int64) (n int, complete bool, err error) {
	for n < len(dst) {
		if cl >= 0 && int64(n) == cl {
			return n, true, nil
		}
		k, err := body.Read(dst[n:])
		n += k
		if err == io.EOF {
			return n, true, nil
		}
		if err != nil {
			return n, false, err
		}
	}
	return n, cl >= 0 && int64(n) == cl, nil
}

// writeRest sends what appendBody could not: the rest of a body with a
// Content-Length, or further chunks and the last chunk. It owns bp. Its
// result goes to done before it closes the connection on failure, so the
// reader, woken by the close, finds it there.
func writeRest(c *upstreamConn, body io.Reader, bp *[]byte, bufs *bytePool, rest *restOfBody, done chan<- error) {
	buf := *bp
	const head = 18 // room for a chunk-size line
	var err error
	for rest.chunked || rest.remaining > 0 {
		space := buf[head : len(buf)-chunkRoom]
		if !rest.chunked && int64(len(space)) > rest.remaining {
			space = space[:rest.remaining]
		}
		n, rerr := body.Read(space)
		if n > 0 {
			out := buf[head : head+n]
			if rest.chunked {
				var line [head]byte
				l := strconv.AppendInt(line[:0], int64(n), 16)
				l = append(l, "\r\n"...)
				start := head - len(l)
				copy(buf[start:], l)
				out = append(buf[start:head+n], "\r\n"...)
			} else {
				rest.remaining -= int64(n)
			}
			if _, err = c.nc.Write(out); err != nil {
				break
			}
		}
		if rerr == io.EOF {
			if rest.chunked {
				_, err = io.WriteString(c.nc, "0\r\n\r\n")
			} else if rest.remaining > 0 {
				err = io.ErrUnexpectedEOF
			}
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	bufs.put(bp)
	done <- err
	if err != nil {
		c.close() // a request cut short: the upstream must not take it for whole
	}
}

// requestHopByHop lists the client's headers that are not passed on as
// they are: hop-by-hop headers (RFC 9110 §7.6.1), the framing the gate
// writes itself, Host (the upstream's own is sent) and Expect (the body is
// sent at once; the client's 100-continue was answered by Go's server).
func requestHopByHop(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length", "Host", "Expect":
		return true
	}
	return false
}

// namedInConnection reports whether the client's Connection header names
// the header k (canonical form).
func namedInConnection(conn []string, k string) bool {
	for _, v := range conn {
		for opt := range strings.SplitSeq(v, ",") {
			if opt = textproto.TrimString(opt); opt != "" && textproto.CanonicalMIMEHeaderKey(opt) == k {
				return true
			}
		}
	}
	return false
}

// isRequestTarget reports whether s can go on a request line as it is: no
// space or control byte.
func isRequestTarget(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return s != ""
}
