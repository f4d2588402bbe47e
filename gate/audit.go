package gate

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/mcp"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/policy"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
)

// sampler logs rejections at info, at most perSecond a second (burst the
// same); the rest are counted and the count is reported with the next line
// that gets through, so a flood cannot fill the logs.
type sampler struct {
	log        hclog.Logger
	lim        *rate.Limiter
	now        func() time.Time
	suppressed atomic.Int64
}

func newSampler(log hclog.Logger, perSecond int, now func() time.Time) *sampler {
	return &sampler{log: log, lim: rate.NewLimiter(rate.Limit(perSecond), perSecond), now: now}
}

func (s *sampler) rejected(status int, reason, sub string, w *recorder, r *http.Request, extra ...any) {
	if !s.log.IsInfo() {
		return
	}
	if !s.lim.AllowN(s.now(), 1) {
		s.suppressed.Add(1)
		return
	}
	args := []any{"status", status, "reason", reason, "method", r.Method, "path", r.URL.Path, "client_ip", w.client.String(), "request_id", w.id}
	if sub != "" {
		args = append(args, "sub", sub)
	}
	args = append(args, extra...)
	if n := s.suppressed.Swap(0); n > 0 {
		args = append(args, "suppressed", n)
	}
	s.log.Info("rejected", args...)
}

// Request IDs.

// maxRequestIDBytes bounds a client's X-Request-Id; a longer or otherwise
// malformed one is replaced.
const maxRequestIDBytes = 128

// requestID returns the request's X-Request-Id when it is well-formed (one
// value of 1-128 bytes of [A-Za-z0-9._:-]), else a new random one (16 bytes
// from crypto/rand, hex).
func requestID(h http.Header) string {
	if v := h["X-Request-Id"]; len(v) == 1 && validRequestID(v[0]) {
		return v[0]
	}
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	var x [32]byte
	hex.Encode(x[:], b[:])
	return string(x[:])
}

func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > maxRequestIDBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// The MCP-aware audit: what a JSON-RPC POST asks for.

const (
	// DefaultMCPAuditBytes is how much of a JSON POST body is read for the
	// audit line when Config.MCPAuditBytes is zero.
	DefaultMCPAuditBytes = 64 << 10

	maxAuditBatch = 16  // messages of a batch named in the audit line
	maxAuditValue = 256 // bytes of a method, tool or URI in the audit line

	// Values of mcp_method when no method can be named.
	mcpMalformed = "(malformed)" // not JSON
	mcpTooLarge  = "(too large)" // no method within the first MCPAuditBytes
	mcpAmbiguous = "(ambiguous)" // a key that decides the call twice, or in a variant spelling
	mcpInvalid   = "(invalid)"   // JSON, but a method that is not a string, or a call without its name
)

// mcpInfo is what the audit line says of a JSON-RPC body: the method, the
// tool (tools/call) and the resource URI (resources/read, resources/subscribe,
// resources/unsubscribe, completion/complete of a resource template: what
// the policy decides by resource rules); for a batch, comma-separated lists
// and the number of messages.
type mcpInfo struct {
	method, tool, uri string
	batch             int // messages in a batch; 0: a single message
}

// args appends the audit keys for m.
func (m *mcpInfo) args(a []any) []any {
	if m.method != "" {
		a = append(a, "mcp_method", m.method)
	}
	if m.tool != "" {
		a = append(a, "mcp_tool", m.tool)
	}
	if m.uri != "" {
		a = append(a, "mcp_uri", m.uri)
	}
	if m.batch > 0 {
		a = append(a, "mcp_batch", m.batch)
	}
	return a
}

// auditInfo is what the audit line says of a body that mcp.Parse or
// mcp.ParsePrefix read: the names found, or why there are none.
func auditInfo(b mcp.Body, err error) mcpInfo {
	switch {
	case errors.Is(err, mcp.ErrSyntax):
		return mcpInfo{method: mcpMalformed}
	case errors.Is(err, mcp.ErrAmbiguous):
		return mcpInfo{method: mcpAmbiguous}
	case errors.Is(err, mcp.ErrInvalid):
		return mcpInfo{method: mcpInvalid}
	}
	// Read whole, or as far as the audit bound (ErrTruncated).
	var info mcpInfo
	if !b.Batch {
		if len(b.Messages) == 1 {
			m := b.Messages[0]
			info.method = bounded(m.Method)
			switch policy.KindOf(m) {
			case policy.Tool:
				info.tool = bounded(m.Name)
			case policy.Resource:
				info.uri = bounded(m.Name)
			}
		}
	} else {
		var methods, tools, uris []string
		for _, m := range b.Messages {
			if m.Index >= maxAuditBatch {
				break
			}
			methods = append(methods, bounded(m.Method))
			if m.Name == "" && err != nil {
				continue // cut off before its name
			}
			switch policy.KindOf(m) {
			case policy.Tool:
				tools = append(tools, bounded(m.Name))
			case policy.Resource:
				uris = append(uris, bounded(m.Name))
			}
		}
		if b.Len > maxAuditBatch {
			methods = append(methods, "...")
		}
		info = mcpInfo{method: strings.Join(methods, ","), tool: strings.Join(tools, ","), uri: strings.Join(uris, ","), batch: b.Len}
	}
	if err != nil && info.method == "" {
		info.method = mcpTooLarge
	}
	return info
}

// bounded cuts s to maxAuditValue bytes, at a character boundary.
func bounded(s string) string {
	if len(s) <= maxAuditValue {
		return s
	}
	i := maxAuditValue
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

// isJSON reports whether a Content-Type is application/json (parameters
// such as charset allowed).
func isJSON(ct string) bool {
	const want = "application/json"
	if len(ct) < len(want) || !strings.EqualFold(ct[:len(want)], want) {
		return false
	}
	rest := ct[len(want):]
	return rest == "" || rest[0] == ';' || rest[0] == ' ' || rest[0] == '\t'
}

// readMCP reads up to the audit bound of r's body, names what it asks for
// in c.info, and puts back a body that yields exactly the same bytes: the
// prefix read here, then the rest (or the error the read met).
// ContentLength is not touched. The prefix lives in a pooled buffer until
// the body is closed or read past it.
//
// A body read whole is the one case where the audit can hold Mcp-Method
// and Mcp-Name to the body (2026-07-28 transport, "Server Validation"):
// when they disagree, or the body cannot be read strictly to tell, readMCP
// answers 400 with the JSON-RPC error -32020 and returns false; nothing
// goes upstream. A body cut off by the bound is not checked: the upstream
// reads it whole and checks it itself.
func (g *gate) readMCP(w *recorder, r *http.Request, id *provider.Identity, c *call) bool {
	bp := g.auditPool.Get().(*[]byte)
	buf := (*bp)[:g.auditBytes]
	if r.ContentLength >= 0 && r.ContentLength < int64(len(buf)) {
		buf = buf[:r.ContentLength]
	}
	n := 0
	var err error
	for n < len(buf) && err == nil {
		var k int
		k, err = r.Body.Read(buf[n:])
		n += k
	}
	complete := false
	switch {
	case err == io.EOF: // the whole body is in buf; the rest will say EOF again
		complete, err = true, nil
	case err != nil: // the client went away, or MaxBytesReader: delivered after the prefix
	case int64(n) == r.ContentLength:
		complete = true
	}
	var body mcp.Body
	var perr error
	if complete {
		body, perr = mcp.Parse(buf[:n])
	} else {
		body, perr = mcp.ParsePrefix(buf[:n])
	}
	c.info = auditInfo(body, perr)
	ab := &auditBody{pool: g.auditPool, buf: bp, p: buf[:n], err: err, rest: r.Body}
	r.Body = ab
	if complete && hasMCPHeaders(r.Header) {
		herr := perr
		if herr == nil {
			herr = mcp.CheckHeaders(r.Header, body)
		}
		if herr != nil {
			ab.done()
			g.headerMismatch(w, r, id, body, herr)
			return false
		}
	}
	return true
}

// auditBody is a request body whose first bytes were read for the audit.
// Read yields the prefix, then the rest. The transport may read the body
// from its own goroutine and close it from another (or after the handler
// returned), so the prefix is guarded and its buffer goes back to the pool
// once it is read, the body is closed, or the proxy is done with it (done;
// ReverseProxy never closes the inbound body and refuses reads once it
// returned), never while a read can still see it.
type auditBody struct {
	mu   sync.Mutex
	pool *sync.Pool
	buf  *[]byte // nil once returned to the pool
	p    []byte  // the unread part of the prefix
	err  error   // met while reading the prefix; returned after it instead of reading rest
	rest io.ReadCloser
}

func (b *auditBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if len(b.p) > 0 {
		n := copy(p, b.p)
		b.p = b.p[n:]
		if len(b.p) == 0 {
			b.release()
		}
		b.mu.Unlock()
		return n, nil
	}
	b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	return b.rest.Read(p)
}

func (b *auditBody) Close() error {
	b.mu.Lock()
	b.p = nil
	b.release()
	b.mu.Unlock()
	return b.rest.Close()
}

// done drops the unread prefix once the proxy returned; rest is the
// server's to close.
func (b *auditBody) done() {
	b.mu.Lock()
	b.p = nil
	b.release()
	b.mu.Unlock()
}

// release returns the buffer to the pool; b.mu is held.
func (b *auditBody) release() {
	if b.buf != nil {
		b.pool.Put(b.buf)
		b.buf = nil
	}
}
