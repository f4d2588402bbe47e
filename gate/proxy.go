package gate

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/policy"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/respond"
)

// rewrite builds the outbound request (ReverseProxy.Rewrite; the proxy has
// already dropped the hop-by-hop headers, those the client's Connection
// header names included, and Forwarded, X-Forwarded-For, -Host and -Proto).
func (g *gate) rewrite(pr *httputil.ProxyRequest) {
	target, _ := g.upstream.Endpoint()
	out := pr.Out
	out.URL.Scheme = target.Scheme
	out.URL.Host = target.Host
	out.URL.User = nil
	// The path checked by checkTarget, under the upstream's own path and
	// UpstreamPath: exactly what was authorised.
	out.URL.Path, out.URL.RawPath = g.joinPath(target.Path, target.EscapedPath(), pr.In.URL.Path, pr.In.URL.EscapedPath())
	out.URL.RawQuery = pr.In.URL.RawQuery
	out.URL.Fragment, out.URL.RawFragment = "", ""
	// Empty: the transport sends the upstream's own Host (servers with
	// DNS-rebinding protection refuse a foreign one).
	out.Host = ""

	// No trailers (RFC 9110 §6.5): what the gateway removes from the header
	// (credentials, identity headers) must not come after the body instead,
	// and nothing it did not check reaches the upstream. Go's server has
	// already read them into pr.In.Trailer when the audit read the body.
	out.Trailer = nil

	h := out.Header
	// No token passthrough (MCP authorization spec): the upstream never
	// sees the client's credentials or cookies, nor identity, forwarding
	// or request-ID headers the client wrote, in any spelling an upstream
	// could read as one (scrubbed).
	for k := range h {
		if scrubbedName(k) {
			delete(h, k)
		}
	}
	// The gateway's own headers are set here, after ReverseProxy removed
	// the hop-by-hop ones: a client's "Connection: X-Request-Id" cannot
	// strip them (RFC 9110 §7.6.1 applies to the client's hop only).
	if id := pr.In.Header["X-Request-Id"]; len(id) > 0 {
		h["X-Request-Id"] = id
	}
	// Our own forwarding headers; the client's are gone.
	if ip := clientIP(pr.In, g.trusted); ip.IsValid() {
		h.Set("X-Forwarded-For", ip.String())
	}
	h.Set("X-Forwarded-Host", pr.In.Host)
	h.Set("X-Forwarded-Proto", forwardedProto(pr.In, g.trusted))

	if g.conns != nil {
		// The gate's own Transport (an https upstream): the bounds of
		// the gate's own client.
		pr.Out = pr.Out.WithContext(g.bounded(pr.Out.Context()))
	}
}

// bounded holds a request through the gate's own http.Transport to two
// bounds of the gate's own client that Transport has no setting for:
//
//   - how long it waits for a connection to the upstream when all
//     MaxUpstreamConns are busy (MaxConnsPerHost), as upstreamPool.wait
//     bounds it: then the request ends with errUpstreamBusy, 503 with
//     Retry-After. The wait ends when the request gets a connection or a
//     dial starts for it (its name lookup first); from there dialTimeout
//     bounds it. Without it a request would wait as long as the busy
//     connections last (event streams: for ever), and one whose body is
//     not read yet would not even see its client leave.
//   - how many informational (1xx) answers come before the final one,
//     max1xx (readFinalHead). net/http has no such bound once a trace
//     sees them (ReverseProxy's does): it only bounds each head by
//     MaxResponseHeaderBytes.
func (g *gate) bounded(ctx context.Context) context.Context {
	ctx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(g.conns.wait, func() { cancel(errUpstreamBusy) })
	stop := func() { timer.Stop() }
	n := 0 // called by the transport's one reader of the answer
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn:      func(httptrace.GotConnInfo) { stop() },
		DNSStart:     func(httptrace.DNSStartInfo) { stop() },
		ConnectStart: func(string, string) { stop() },
		// ReverseProxy's trace, composed over this one, calls this after
		// its own and returns what this returns.
		Got1xxResponse: func(int, textproto.MIMEHeader) error {
			if n++; n > max1xx {
				return malformed("more than %d informational answers", max1xx)
			}
			return nil
		},
	})
}

// scrubbed reports whether the proxy removes a client's header named k
// (canonical form): credentials; identity headers an upstream behind an
// auth proxy may trust (oauth2-proxy's X-Auth-Request-*, X-Forwarded-User,
// Remote-User, ...); and the forwarding and request-ID headers, which are
// the gateway's own. A name with underscores is checked as if they were
// dashes, as CGI-style servers (WSGI, PHP, Rack) read X-Forwarded_User as
// X-Forwarded-User.
func scrubbed(k string) bool {
	switch k {
	case "Authorization", "Proxy-Authorization", "Cookie",
		"X-Remote-User", "Remote-User", "X-Real-Ip", "Forwarded", "X-Request-Id":
		return true
	}
	return strings.HasPrefix(k, "X-Forwarded-") || strings.HasPrefix(k, "X-Auth-Request-")
}

// scrubbedName is scrubbed for a header name as the client spelled it
// (canonical form): with underscores it is checked as if they were
// dashes, and an MCP header so spelled is removed too.
func scrubbedName(k string) bool {
	if scrubbed(k) {
		return true
	}
	if strings.IndexByte(k, '_') < 0 {
		return false
	}
	dashed := textproto.CanonicalMIMEHeaderKey(strings.ReplaceAll(k, "_", "-"))
	// An MCP header with underscores is also the MCP header to such a
	// server, one the gate did not check: Mcp_Session_Id would carry a
	// session ID it never opened for this subject (session.go), Mcp_Name a
	// name it never compared with the body.
	return scrubbed(dashed) || strings.HasPrefix(dashed, "Mcp-")
}

// joinPath joins the upstream URL's path, UpstreamPath and the request path
// (decoded and escaped forms in step). "/" maps to the prefix itself when
// there is one.
func (g *gate) joinPath(basePath, baseRaw, reqPath, reqRaw string) (path, raw string) {
	basePath = strings.TrimRight(basePath, "/")
	baseRaw = strings.TrimRight(baseRaw, "/")
	prefix, prefixRaw := basePath+g.upstreamPath, baseRaw+g.upstreamRaw
	if prefix == "" {
		path, raw = reqPath, reqRaw
	} else if reqPath == "/" {
		path, raw = prefix, prefixRaw
	} else {
		path, raw = prefix+reqPath, prefixRaw+reqRaw
	}
	if raw == path {
		raw = ""
	}
	return path, raw
}

// modifyResponse refuses a 101 (the gateway never asks to switch
// protocols, so ReverseProxy must not start a tunnel), drops the upstream's
// CORS headers and X-Request-Id (the gate's own, already on the response
// writer, are the only ones the client sees), and drops its trailers, which
// could carry the same headers after the body. An event stream's body is
// ended when shutdown begins (Config.Shutdown), whatever request it
// answers: a GET stream of earlier revisions, a subscriptions/listen POST
// of 2026-07-28, a tools/call sending progress.
func (g *gate) modifyResponse(resp *http.Response) error {
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return errUpstreamSwitched
	}
	if len(resp.Header["Content-Type"]) > 1 {
		return errSeveralContentTypes // as the gate's own client (upstreamparse.go)
	}
	for k := range resp.Header {
		if strings.HasPrefix(k, "Access-Control-") {
			delete(resp.Header, k)
		}
	}
	delete(resp.Header, "X-Request-Id")
	if g.shutdown != nil && isEventStream(resp.Header.Get("Content-Type")) {
		// Around the transport's body itself, which may be closed while
		// it is read; trailerless may not.
		resp.Body = endOnShutdown(g.shutdown, resp.Body)
	}
	if resp.Trailer != nil || len(resp.TransferEncoding) > 0 {
		// Declared trailers go now (ReverseProxy announces what is left);
		// the transport fills resp.Trailer again, undeclared ones
		// included, when the chunked body ends: trailerless empties it
		// then, before ReverseProxy copies it to the client.
		resp.Trailer = nil
		resp.Body = &trailerless{ReadCloser: resp.Body, resp: resp}
	}
	return nil
}

// isEventStream reports whether a Content-Type is text/event-stream.
func isEventStream(ct string) bool {
	const want = "text/event-stream"
	return len(ct) >= len(want) && equalFoldASCII(ct[:len(want)], want)
}

// streamBody is the body of an event stream, closed when shutdown begins:
// the proxy's copy then ends as for a cancelled request, and the upstream
// sees its request end. An open stream never finishes on its own, so the
// drain would otherwise wait its whole grace for it.
type streamBody struct {
	io.ReadCloser
	ended atomic.Bool // closed because shutdown began
	stop  func() bool // context.AfterFunc's
}

func endOnShutdown(shutdown context.Context, body io.ReadCloser) io.ReadCloser {
	b := &streamBody{ReadCloser: body}
	b.stop = context.AfterFunc(shutdown, func() {
		b.ended.Store(true)
		_ = body.Close() // ends a Read in progress; the error is the point
	})
	return b
}

func (b *streamBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && b.ended.Load() {
		err = context.Canceled // ReverseProxy logs no read error for this one
	}
	return n, err
}

func (b *streamBody) Close() error {
	b.stop()
	return b.ReadCloser.Close()
}

// trailerless empties its response's trailers once the body has been read
// to its end or closed.
type trailerless struct {
	io.ReadCloser
	resp *http.Response
}

func (t *trailerless) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if err != nil {
		t.resp.Trailer = nil
	}
	return n, err
}

func (t *trailerless) Close() error {
	err := t.ReadCloser.Close()
	t.resp.Trailer = nil
	return err
}

// proxyError answers a failed proxy round trip: 413 when the body was cut
// at MaxBodyBytes, else 502 with a body that names nothing internal.
func (g *gate) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	id := r.Header.Get("X-Request-Id")
	if rec, ok := w.(*recorder); ok {
		rec.proxyFailed = true // the answer is the gate's, not the upstream's
		id = rec.id
	}
	var tooLarge *http.MaxBytesError
	var listing *listingError
	switch {
	case errors.As(err, &listing):
		// Never passed on unfiltered: the caller would see what the
		// policy hides.
		g.log.Warn("proxy: listing refused", "method", r.Method, "path", r.URL.Path, "request_id", id, "error", err)
	case errors.As(err, &tooLarge):
		respond.JSON(w, http.StatusRequestEntityTooLarge, bodyTooLarge)
		return
	case errors.Is(err, errUpstreamSwitched):
		g.log.Warn("proxy: upstream answered 101 Switching Protocols to a request that asked for no upgrade", "method", r.Method, "path", r.URL.Path, "request_id", id)
	case errors.Is(err, errUpstreamBusy):
		// Before the next case: ReverseProxy passes the outbound request,
		// whose context bounded ended.
		g.log.Warn("proxy: upstream busy", "method", r.Method, "path", r.URL.Path, "request_id", id, "error", err)
		w.Header().Set("Retry-After", "1")
		respond.JSON(w, http.StatusServiceUnavailable, bodyUpstreamBusy)
		return
	case errors.Is(err, context.Canceled) || r.Context().Err() != nil:
		g.log.Debug("proxy: client went away", "method", r.Method, "path", r.URL.Path, "request_id", id, "error", err)
	case errors.Is(err, errMalformedResponse):
		// Never relayed as it came, and not a restart either.
		g.log.Warn("proxy: upstream answer refused", "method", r.Method, "path", r.URL.Path, "request_id", id, "error", err)
	case g.restarts:
		// The child died a moment ago (its port refuses, a kept-alive
		// connection to it was reset or broke mid-request) and the supervisor
		// is bringing it back: unavailable for now, not a bad gateway.
		g.log.Warn("proxy: the child is unavailable; it is restarting", "method", r.Method, "path", r.URL.Path, "request_id", id, "error", err)
		w.Header().Set("Retry-After", "1")
		respond.JSON(w, http.StatusServiceUnavailable, bodyUpstreamNotReady)
		return
	default:
		g.log.Warn("proxy: upstream failed", "method", r.Method, "path", r.URL.Path, "request_id", id, "error", err)
	}
	respond.JSON(w, http.StatusBadGateway, bodyBadGateway)
}

// recorder is the gate's view of one request: its ID, and the status and
// size of the answer and, once proxied, the upstream's timing, for the audit
// log and Metrics. It passes Flush through (Unwrap, for
// http.ResponseController), so streams are not buffered.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64

	id     string     // the request ID
	client netip.Addr // the client's address (TRUSTED_PROXIES applied), computed once
	class  string     // Outcome.Class
	reason string     // Outcome.Reason

	start time.Time // when the gate took the request, for Metrics

	// Set while proxying.
	metrics    Metrics       // nil: no stream counting
	proxyStart time.Time     // when the request went to the proxy
	upstream   time.Duration // proxyStart to the upstream's response headers
	own        [5][]string   // the gate's own response headers (ownHeaderNames), kept by proxying

	// Small fields together, so a recorder stays in a small size class.
	rule        int32          // the deciding rule (policy.Decision.Rule), when decided
	decision    policy.Outcome // what the policy decided, when decided
	decided     bool           // the policy decided calls of the body (Outcome.Rule, Outcome.Decision)
	proxyFailed bool           // proxyError is answering
	stream      bool           // the response is an event stream, counted in Metrics
	aborted     bool           // the proxy aborted the answer (http.ErrAbortHandler): re-raised once counted
	info        bool           // the upstream sent an informational (1xx) answer
	detached    bool           // the answer went on after the handler returned (detach.go)
	counted     bool           // gate.inFlight counts the request for subject, until endInFlight

	sessions   *sessions // nil, or seals the answer's session IDs for sessionSub
	sessionSub string
	subject    string // the subject inFlight counts the request for, when counted
	bodyBound  bool   // the body has BodyTimeout to arrive (boundBody)
}

// decidedLabels are Outcome.Rule and Outcome.Decision: empty when nothing
// was decided.
func (r *recorder) decidedLabels() (rule, decision string) {
	if !r.decided {
		return "", ""
	}
	return policy.Decision{Rule: int(r.rule)}.RuleLabel(), r.decision.String()
}

// ownHeaderNames are the response headers the gate sets before proxying.
// ReverseProxy relays an upstream's 1xx answer with whatever the header map
// holds and then clears the map, so they are kept when proxying begins and
// put back on the final answer.
func ownHeaderNames() [5]string {
	return [...]string{"X-Request-Id", "Vary", "Access-Control-Allow-Origin", "Access-Control-Expose-Headers", "Connection"}
}

// proxying marks the start of the proxy's work: from now on a 1xx is the
// upstream's.
func (r *recorder) proxying() {
	r.proxyStart = time.Now()
	h := r.Header()
	for i, k := range ownHeaderNames() {
		r.own[i] = h[k]
	}
}

func (r *recorder) WriteHeader(code int) {
	if code < 200 && !r.proxyStart.IsZero() {
		// The upstream's informational answer (103 Early Hints, a 100 it
		// was not asked for) is not relayed: MCP has no use for one, and
		// it would carry the upstream's headers unfiltered.
		r.info = true
		return
	}
	if r.status == 0 && code >= 200 {
		r.sealSessions()
		if !r.proxyStart.IsZero() && !r.proxyFailed {
			// The upstream's answer (ReverseProxy's; the gate's own client
			// does the same in copyAnswerHeader): without Content-Type,
			// net/http would guess one from the body (text/html for
			// markup), a type the MCP server never gave; a nil value keeps
			// the answer as it was.
			if h := r.Header(); h["Content-Type"] == nil {
				h["Content-Type"] = nil
			}
		}
		if r.info {
			h := r.Header()
			for i, k := range ownHeaderNames() {
				if v := r.own[i]; v != nil {
					h[k] = append(v[:len(v):len(v)], h[k]...)
				}
			}
		}
		r.noteStatus(code)
	}
	r.ResponseWriter.WriteHeader(code)
}

// noteStatus records the final status; once proxying, how long the
// upstream took to answer and whether the answer is an event stream.
func (r *recorder) noteStatus(code int) {
	r.status = code
	if !r.proxyStart.IsZero() && !r.proxyFailed {
		// The proxy writes the upstream's status as soon as its headers
		// arrived.
		r.upstream = time.Since(r.proxyStart)
		if r.metrics != nil && isEventStream(r.Header().Get("Content-Type")) {
			r.stream = true
			r.metrics.Stream(+1)
		}
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.sealSessions()
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

// sealSessions replaces the server's session IDs in the answer's header,
// once, before it goes out (session.go).
func (r *recorder) sealSessions() {
	if r.sessions != nil {
		r.sessions.sealAnswer(r.Header(), r.sessionSub)
		r.sessions = nil
	}
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
		return
	}
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// copyBufferBytes is the size of the proxy's copy buffers. An open event
// stream holds one for as long as it lives, so it is sized for MCP messages
// (a few KiB) rather than io.Copy's 32 KiB: with thousands of idle streams
// that is most of the gateway's memory. Larger bodies copy in more steps.
const copyBufferBytes = 8 << 10

// bufferPool reuses the proxy's copy buffers (httputil.BufferPool), which
// would otherwise be an allocation per request.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, copyBufferBytes); return &b }}}
}

func (bp *bufferPool) Get() []byte { return *bp.p.Get().(*[]byte) }

func (bp *bufferPool) Put(b []byte) {
	if cap(b) == copyBufferBytes {
		bp.p.Put(&b)
	}
}
