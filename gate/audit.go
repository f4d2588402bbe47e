package gate

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
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
)

// sampler logs rejections at info, at most perSecond a second (burst the
// same); the rest are counted and the count is reported with the next line
// that gets through, so a flood cannot fill the logs (issue 6 item 3).
type sampler struct {
	log        hclog.Logger
	lim        *rate.Limiter
	now        func() time.Time
	suppressed atomic.Int64
}

func newSampler(log hclog.Logger, perSecond int, now func() time.Time) *sampler {
	return &sampler{log: log, lim: rate.NewLimiter(rate.Limit(perSecond), perSecond), now: now}
}

func (s *sampler) rejected(status int, reason, sub string, w *recorder, r *http.Request) {
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
// tool (tools/call) and the resource URI (resources/read); for a batch,
// comma-separated lists and the number of messages.
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
			switch m.Method {
			case mcp.MethodToolsCall:
				info.tool = bounded(m.Name)
			case mcp.MethodResourcesRead:
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
			switch m.Method {
			case mcp.MethodToolsCall:
				tools = append(tools, bounded(m.Name))
			case mcp.MethodResourcesRead:
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

// readMCP reads up to the audit bound of r's body, names what it asks for,
// and puts back a body that yields exactly the same bytes: the prefix read
// here, then the rest (or the error the read met). ContentLength is not
// touched. The prefix lives in a pooled buffer until the body is closed or
// read past it.
func (g *gate) readMCP(r *http.Request) mcpInfo {
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
	info := scanMCP(buf[:n], complete)
	r.Body = &auditBody{pool: g.auditPool, buf: bp, p: buf[:n], err: err, rest: r.Body}
	return info
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

// scanMCP names the JSON-RPC method(s) of body (a single message or a batch,
// JSON-RPC 2.0 §4 and §6) and, for tools/call, params.name, for
// resources/read, params.uri. complete is false when body is only the first
// part of a larger one: what is found before its end is reported. It is a
// strict JSON scanner (RFC 8259) that allocates only the strings it returns;
// a body that is not JSON gives mcp_method "(malformed)". Keys match
// exactly; when a key repeats, the last one counts.
func scanMCP(body []byte, complete bool) mcpInfo {
	s := jscan{b: body}
	var info mcpInfo
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '[' {
		s.i++
		var methods, tools, uris []byte
		n, nm, nt, nu := 0, 0, 0, 0 // messages, and those named: methods, tools, uris
		s.ws()
		if s.peek(']') {
			s.i++
		} else {
			for {
				var m msgInfo
				s.ws()
				if s.peek('{') {
					m = s.message()
				} else {
					s.skip()
				}
				if s.bad {
					break
				}
				n++
				if n <= maxAuditBatch {
					if m.method != nil {
						methods = appendList(methods, nm > 0, m.method, m.methodEsc)
						nm++
						switch m.methodString() {
						case "tools/call":
							if m.name != nil {
								tools = appendList(tools, nt > 0, m.name, m.nameEsc)
								nt++
							}
						case "resources/read":
							if m.uri != nil {
								uris = appendList(uris, nu > 0, m.uri, m.uriEsc)
								nu++
							}
						}
					}
				}
				s.ws()
				if s.peek(',') {
					s.i++
					continue
				}
				if s.peek(']') {
					s.i++
					break
				}
				s.fail()
				break
			}
		}
		if n > maxAuditBatch {
			methods = appendList(methods, nm > 0, []byte("..."), false)
		}
		info = mcpInfo{method: string(methods), tool: string(tools), uri: string(uris), batch: n}
	} else if s.peek('{') {
		m := s.message()
		if m.method != nil {
			info.method = m.methodString()
			switch info.method {
			case "tools/call":
				info.tool = m.str(m.name, m.nameEsc)
			case "resources/read":
				info.uri = m.str(m.uri, m.uriEsc)
			}
		}
	} else {
		s.skip()
	}
	if !s.bad {
		s.ws()
		if s.i < len(s.b) {
			s.fail() // trailing bytes after the value
		}
	}
	switch {
	case s.bad && (complete || !s.eof):
		return mcpInfo{method: mcpMalformed}
	case s.bad && info.method == "":
		info.method = mcpTooLarge
	}
	return info
}

// appendList appends the decoded, bounded value v to list, after a comma
// unless it is the first.
func appendList(list []byte, comma bool, v []byte, esc bool) []byte {
	if comma {
		list = append(list, ',')
	}
	if esc {
		return append(list, unescape(v)...)
	}
	return append(list, v[:min(len(v), maxAuditValue)]...)
}

// msgInfo is what one JSON-RPC message says: raw string contents (escaped
// when the flag is set), nil when absent.
type msgInfo struct {
	method, name, uri          []byte
	methodEsc, nameEsc, uriEsc bool
}

func (m *msgInfo) str(v []byte, esc bool) string {
	if v == nil {
		return ""
	}
	if esc {
		return unescape(v)
	}
	return string(v[:min(len(v), maxAuditValue)])
}

// methodString returns the method, without an allocation for the methods
// of the MCP specification.
func (m *msgInfo) methodString() string {
	if m.methodEsc {
		return unescape(m.method)
	}
	switch string(m.method) {
	case "initialize":
		return "initialize"
	case "ping":
		return "ping"
	case "tools/list":
		return "tools/list"
	case "tools/call":
		return "tools/call"
	case "resources/list":
		return "resources/list"
	case "resources/read":
		return "resources/read"
	case "resources/templates/list":
		return "resources/templates/list"
	case "resources/subscribe":
		return "resources/subscribe"
	case "resources/unsubscribe":
		return "resources/unsubscribe"
	case "prompts/list":
		return "prompts/list"
	case "prompts/get":
		return "prompts/get"
	case "completion/complete":
		return "completion/complete"
	case "logging/setLevel":
		return "logging/setLevel"
	case "notifications/initialized":
		return "notifications/initialized"
	case "notifications/cancelled":
		return "notifications/cancelled"
	case "notifications/progress":
		return "notifications/progress"
	case "notifications/roots/list_changed":
		return "notifications/roots/list_changed"
	}
	return string(m.method[:min(len(m.method), maxAuditValue)])
}

// unescape decodes the contents of a JSON string that has escapes (rare in
// method names and URIs), bounded.
func unescape(raw []byte) string {
	q := make([]byte, 0, len(raw)+2)
	q = append(append(append(q, '"'), raw...), '"')
	var s string
	if json.Unmarshal(q, &s) != nil {
		return ""
	}
	if len(s) > maxAuditValue {
		s = s[:maxAuditValue]
	}
	return s
}

// jscan is a strict, non-allocating JSON scanner over a byte slice. bad is
// set on the first error; eof tells whether that error was running out of
// input (a truncated prefix) rather than a wrong byte.
type jscan struct {
	b   []byte
	i   int
	bad bool
	eof bool
}

func (s *jscan) fail() {
	if !s.bad {
		s.bad = true
		s.eof = s.i >= len(s.b)
	}
}

func (s *jscan) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *jscan) peek(c byte) bool { return s.i < len(s.b) && s.b[s.i] == c }

// str scans a string at s.i and returns its raw contents and whether they
// hold escapes.
func (s *jscan) str() (raw []byte, esc bool) {
	if !s.peek('"') {
		s.fail()
		return nil, false
	}
	s.i++
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			raw = s.b[start:s.i]
			s.i++
			return raw, esc
		case c == '\\':
			esc = true
			s.i++
			if s.i >= len(s.b) {
				s.fail()
				return nil, false
			}
			switch s.b[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				s.i++
				for k := 0; k < 4; k++ {
					if s.i >= len(s.b) || !isHex(s.b[s.i]) {
						s.fail()
						return nil, false
					}
					s.i++
				}
			default:
				s.fail()
				return nil, false
			}
		case c < 0x20:
			s.fail()
			return nil, false
		default:
			s.i++
		}
	}
	s.fail()
	return nil, false
}

// key scans `"key" :` and returns the key's raw contents.
func (s *jscan) key() (raw []byte, esc bool) {
	s.ws()
	raw, esc = s.str()
	if s.bad {
		return nil, false
	}
	s.ws()
	if !s.peek(':') {
		s.fail()
		return nil, false
	}
	s.i++
	s.ws()
	return raw, esc
}

// keyIs reports whether a raw key equals want (decoding escapes if any).
func keyIs(raw []byte, esc bool, want string) bool {
	if esc {
		return unescape(raw) == want
	}
	return string(raw) == want
}

// message scans an object at s.i, keeping "method" and params' "name" and
// "uri" when they are strings.
func (s *jscan) message() (m msgInfo) {
	s.object(func(k []byte, kesc bool) {
		switch {
		case keyIs(k, kesc, "method"):
			m.method, m.methodEsc = nil, false
			if s.peek('"') {
				m.method, m.methodEsc = s.str()
				return
			}
			s.skip()
		case keyIs(k, kesc, "params"):
			m.name, m.nameEsc, m.uri, m.uriEsc = nil, false, nil, false
			if !s.peek('{') {
				s.skip()
				return
			}
			s.object(func(k []byte, kesc bool) {
				switch {
				case keyIs(k, kesc, "name"):
					m.name, m.nameEsc = nil, false
					if s.peek('"') {
						m.name, m.nameEsc = s.str()
						return
					}
				case keyIs(k, kesc, "uri"):
					m.uri, m.uriEsc = nil, false
					if s.peek('"') {
						m.uri, m.uriEsc = s.str()
						return
					}
				}
				s.skip()
			})
		default:
			s.skip()
		}
	})
	return m
}

// object scans an object at s.i, calling member with s.i at each value; the
// callback consumes the value.
func (s *jscan) object(member func(key []byte, esc bool)) {
	s.i++ // '{'
	s.ws()
	if s.peek('}') {
		s.i++
		return
	}
	for !s.bad {
		k, esc := s.key()
		if s.bad {
			return
		}
		member(k, esc)
		if s.bad {
			return
		}
		s.ws()
		switch {
		case s.peek(','):
			s.i++
			s.ws()
		case s.peek('}'):
			s.i++
			return
		default:
			s.fail()
		}
	}
}

// skip scans any one value at s.i, iteratively (nesting costs a byte of
// stack per level, not a Go frame).
func (s *jscan) skip() {
	var inline [32]byte
	stack := inline[:0] // '{' or '[' per open container
	for !s.bad {
		// A value.
		s.ws()
		if s.i >= len(s.b) {
			s.fail()
			return
		}
		switch c := s.b[s.i]; {
		case c == '{':
			s.i++
			s.ws()
			if s.peek('}') {
				s.i++
				break
			}
			stack = append(stack, '{')
			s.key()
			continue
		case c == '[':
			s.i++
			s.ws()
			if s.peek(']') {
				s.i++
				break
			}
			stack = append(stack, '[')
			continue
		case c == '"':
			s.str()
		case c == 't':
			s.literal("true")
		case c == 'f':
			s.literal("false")
		case c == 'n':
			s.literal("null")
		default:
			s.number()
		}
		// After a value: close containers, or go on to the next member.
		for !s.bad {
			if len(stack) == 0 {
				return
			}
			s.ws()
			top := stack[len(stack)-1]
			switch {
			case s.peek(','):
				s.i++
				if top == '{' {
					s.key()
				}
			case top == '{' && s.peek('}'), top == '[' && s.peek(']'):
				s.i++
				stack = stack[:len(stack)-1]
				continue
			default:
				s.fail()
			}
			break
		}
	}
}

func (s *jscan) literal(lit string) {
	if len(s.b)-s.i < len(lit) {
		if string(s.b[s.i:]) == lit[:len(s.b)-s.i] {
			s.i = len(s.b)
		}
		s.fail()
		return
	}
	if string(s.b[s.i:s.i+len(lit)]) != lit {
		s.fail()
		return
	}
	s.i += len(lit)
}

// number scans an RFC 8259 §6 number.
func (s *jscan) number() {
	digits := func() int {
		n := 0
		for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	if s.peek('-') {
		s.i++
	}
	switch {
	case s.peek('0'):
		s.i++
	case s.i < len(s.b) && '1' <= s.b[s.i] && s.b[s.i] <= '9':
		digits()
	default:
		s.fail()
		return
	}
	if s.peek('.') {
		s.i++
		if digits() == 0 {
			s.fail()
			return
		}
	}
	if s.peek('e') || s.peek('E') {
		s.i++
		if s.peek('+') || s.peek('-') {
			s.i++
		}
		if digits() == 0 {
			s.fail()
			return
		}
	}
}
