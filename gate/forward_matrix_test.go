package gate

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawUpstream is an upstream that records every byte it receives, per
// connection, as the MCP server would see them on the wire: headers the
// gateway meant to remove, trailers after a chunked body, and whatever a
// tunnelled connection carries. It answers each request with answer (a raw
// HTTP response; "" is 200 "ok"); after a 101 it answers nothing more and
// records the rest of the connection, as a tunnel would carry it.
type rawUpstream struct {
	ln     net.Listener
	answer string
	scheme string // http, or https over TLS
	roots  *x509.CertPool

	mu       sync.Mutex
	received bytes.Buffer
	requests int
	conns    []net.Conn
}

func newRawUpstream(t testing.TB, answer string) *rawUpstream {
	t.Helper()
	return newRawUpstreamOver(t, "http", answer)
}

// newRawUpstreamOver is newRawUpstream over scheme: http, or https (TLS
// with a certificate its roots trust).
func newRawUpstreamOver(t testing.TB, scheme, answer string) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln, answer: answer, scheme: scheme}
	if scheme == "https" {
		var cfg *tls.Config
		cfg, u.roots = upstreamTLS(t)
		u.ln = tls.NewListener(ln, cfg)
		ln = u.ln
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		defer wg.Wait()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns = append(u.conns, c)
			u.mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); u.serve(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		for _, c := range u.conns {
			c.Close()
		}
		u.mu.Unlock()
		<-done
	})
	return u
}

// Write records bytes read from any connection.
func (u *rawUpstream) Write(p []byte) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.received.Write(p)
}

func (u *rawUpstream) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(io.TeeReader(c, u))
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body) // the trailers, if any, are read (and recorded) too
		u.mu.Lock()
		u.requests++
		u.mu.Unlock()
		answer := u.answer
		if answer == "" {
			answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\nok"
		}
		if req.Header.Get("Upgrade") != "" {
			answer = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + req.Header.Get("Upgrade") + "\r\n\r\n"
		}
		if _, err := io.WriteString(c, answer); err != nil {
			return
		}
		if strings.HasPrefix(answer, "HTTP/1.1 101") {
			_, _ = io.Copy(io.Discard, br) // a tunnel: record all that follows
			return
		}
	}
}

// seen returns the bytes received so far and the number of requests parsed.
func (u *rawUpstream) seen() (string, int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.received.String(), u.requests
}

func (u *rawUpstream) url(t testing.TB) *url.URL {
	t.Helper()
	p, err := url.Parse(u.scheme + "://" + u.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// rawExchange writes req to addr, reads responses until n final ones (1xx
// included in the result) were read, and writes then on the same connection
// (what an attacker sends once a tunnel is open). With wantClose it then
// reads on, and reports whether the gateway closed the connection rather
// than answering again.
func rawExchange(t *testing.T, addr, req string, n int, then string, wantClose bool) (resps []*http.Response, bodies []string, closed bool) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	for finals := 0; finals < n; {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v (so far %d)", len(resps)+1, err, len(resps))
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resps, bodies = append(resps, resp), append(bodies, string(b))
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			finals++
		}
	}
	if then != "" {
		_, _ = io.WriteString(conn, then) // fails once the gateway has closed
	}
	if !wantClose {
		return resps, bodies, false
	}
	// What follows must be the end of the connection, not another answer.
	if resp, err := http.ReadResponse(br, nil); err == nil {
		resp.Body.Close()
		return resps, bodies, false
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		return resps, bodies, false
	}
	return resps, bodies, true
}

// chunk is s as one chunk of a chunked body.
func chunk(s string) string { return strconv.FormatInt(int64(len(s)), 16) + "\r\n" + s + "\r\n" }

// hidden is a request without a token, hidden after a chunked body.
const hidden = "GET /admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

func statuses(resps []*http.Response) []int {
	s := make([]int, len(resps))
	for i, r := range resps {
		s[i] = r.StatusCode
	}
	return s
}

// TestForwardingAttackMatrix is the forwarding attack matrix: requests
// written byte for byte over TCP to the gateway, in front of an upstream
// that records every byte it receives. Each row names what the client must
// get and what the upstream must (not) see: no tunnel through a protocol
// upgrade, no credentials or identity headers in trailers or behind a
// header spelling a CGI-style server would fold, no connection kept open
// after ambiguous framing, and the gateway's own headers intact whatever the
// client's Connection header or the upstream's 1xx answers say.
func TestForwardingAttackMatrix(t *testing.T) {
	env := newIssuer(t)
	tok := env.token(t, "alice", nil)
	auth := "Authorization: Bearer " + tok + "\r\n"
	const host = "Host: gateway.example.com\r\n"
	post := func(extra, body string) string {
		return "POST /mcp HTTP/1.1\r\n" + host + auth + "Content-Type: application/json\r\n" + extra +
			"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	const rpc = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	// A request without a token, sent where a tunnel would carry it.
	const smuggled = "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

	type row struct {
		name   string
		answer string // the upstream's answer to each request; "" is 200 "ok"
		req    string
		// then is written once the answers were read.
		then string
		// finals is how many final answers (status >= 200, or 101) to read.
		finals int
		// want are the statuses the client reads, 1xx included.
		want []int
		// closed: the gateway closes the connection after them.
		closed bool
		// upstreamNothing: not one byte reaches the upstream.
		upstreamNothing bool
		// lacks: the upstream's bytes contain none of these (ASCII case
		// ignored); has: all of these.
		lacks, has []string
		// check inspects the client's responses further.
		check func(t *testing.T, resps []*http.Response, bodies []string, upstream string)
	}
	jsonError := func(t *testing.T, resps []*http.Response, bodies []string, _ string) {
		t.Helper()
		if got := resps[0].Header.Get("Content-Type"); got != "application/json" {
			t.Errorf("Content-Type: got %q, want application/json", got)
		}
		if !strings.Contains(bodies[0], `"error"`) {
			t.Errorf("body %q is not a JSON error", bodies[0])
		}
	}
	rows := []row{
		// 1. Protocol upgrades: refused on every route, before any other
		// decision; the upstream never sees the request, and the
		// connection is closed so nothing sent after it is read.
		{name: "websocket upgrade with a valid token, then a request without one",
			req: "GET /mcp HTTP/1.1\r\n" + host + auth + "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", then: smuggled,
			finals: 1, want: []int{400}, closed: true, upstreamNothing: true, check: jsonError},
		{name: "upgrade listed among other connection options",
			req: "GET /mcp HTTP/1.1\r\n" + host + auth + "Connection: keep-alive, upgrade\r\nUpgrade: websocket\r\n\r\n", then: smuggled,
			finals: 1, want: []int{400}, closed: true, upstreamNothing: true, check: jsonError},
		{name: "h2c upgrade",
			req:    "GET /mcp HTTP/1.1\r\n" + host + auth + "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
			finals: 1, want: []int{400}, closed: true, upstreamNothing: true, check: jsonError},
		{name: "upgrade on a post with a body",
			req: post("Connection: Upgrade\r\nUpgrade: websocket\r\n", rpc), then: smuggled,
			finals: 1, want: []int{400}, closed: true, upstreamNothing: true, check: jsonError},
		{name: "upgrade header without connection upgrade",
			req:    "GET /mcp HTTP/1.1\r\n" + host + auth + "Upgrade: websocket\r\n\r\n",
			finals: 1, want: []int{400}, closed: true, upstreamNothing: true, check: jsonError},
		{name: "upgrade on a public route",
			req: "GET /healthz HTTP/1.1\r\n" + host + "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n", then: smuggled,
			finals: 1, want: []int{400}, closed: true, upstreamNothing: true, check: jsonError},
		{name: "upgrade on an unknown well-known path",
			req:    "GET /.well-known/x HTTP/1.1\r\n" + host + "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
			finals: 1, want: []int{400}, closed: true, upstreamNothing: true, check: jsonError},
		{name: "upgrade without a token",
			req: "GET /mcp HTTP/1.1\r\n" + host + "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n", then: smuggled,
			finals: 1, want: []int{400}, closed: true, upstreamNothing: true, check: jsonError},
		{name: "upstream switching protocols unasked",
			answer: "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
			req:    "GET /mcp HTTP/1.1\r\n" + host + auth + "\r\n", then: smuggled,
			finals: 1, want: []int{502}, lacks: []string{"POST /mcp", "Upgrade"}, check: jsonError},

		// 4. Trailers: none is forwarded, either way.
		{name: "credentials and identity headers in request trailers",
			req: "POST /mcp HTTP/1.1\r\n" + host + auth + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n" +
				"Trailer: Authorization, Cookie, X-Forwarded-User, X-Auth-Request-Email\r\n\r\n" + chunk(rpc) + "0\r\n" +
				"Authorization: Bearer stolen\r\nCookie: session=stolen\r\nX-Forwarded-User: admin\r\nX-Auth-Request-Email: admin@example.com\r\n\r\n",
			finals: 1, want: []int{200}, closed: true, has: []string{rpc},
			lacks: []string{"stolen", "admin", "Trailer", "X-Forwarded-User", "X-Auth-Request-Email"}},
		{name: "undeclared request trailers",
			req: "POST /mcp HTTP/1.1\r\n" + host + auth + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(rpc) + "0\r\n" +
				"Authorization: Bearer stolen\r\nX-Remote-User: admin\r\n\r\n",
			finals: 1, want: []int{200}, closed: true, has: []string{rpc}, lacks: []string{"stolen", "admin"}},
		{name: "upstream's trailers naming the gateway's headers",
			answer: "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nTrailer: X-Request-Id, Access-Control-Allow-Origin\r\n\r\n" +
				chunk("ok") + "0\r\nX-Request-Id: upstream-id\r\nAccess-Control-Allow-Origin: *\r\nX-Undeclared: 1\r\n\r\n",
			req:    "POST /mcp HTTP/1.1\r\n" + host + auth + "Origin: https://claude.ai\r\nX-Request-Id: client-id\r\nContent-Length: 2\r\n\r\n{}",
			finals: 1, want: []int{200},
			check: func(t *testing.T, resps []*http.Response, _ []string, _ string) {
				r := resps[0]
				if len(r.Trailer) != 0 {
					t.Errorf("trailers reached the client: %v", r.Trailer)
				}
				if got := r.Header.Values("X-Request-Id"); len(got) != 1 || got[0] != "client-id" {
					t.Errorf("X-Request-Id: got %q, want [client-id]", got)
				}
				if got := r.Header.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != "https://claude.ai" {
					t.Errorf("Access-Control-Allow-Origin: got %q, want [https://claude.ai]", got)
				}
			}},

		// 5. Ambiguous framing: answered as the chunked encoding says, and
		// the connection is closed (RFC 9112 §6.1), so the bytes after the
		// chunked body are never read as a request.
		{name: "content-length and chunked, a request hidden after the body",
			req:    "POST /mcp HTTP/1.1\r\n" + host + auth + "Content-Length: " + strconv.Itoa(5+len(hidden)) + "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden,
			finals: 1, want: []int{200}, closed: true, lacks: []string{"/admin"}},
		{name: "content-length and chunked folded onto a continuation line",
			req:    "POST /mcp HTTP/1.1\r\n" + host + auth + "Content-Length: " + strconv.Itoa(5+len(hidden)) + "\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + hidden,
			finals: 1, want: []int{200}, closed: true, lacks: []string{"/admin"}},
		{name: "chunked alone, a request pipelined after it",
			req:    "POST /mcp HTTP/1.1\r\n" + host + auth + "Transfer-Encoding: chunked\r\n\r\n" + chunk("{}") + "0\r\n\r\n" + hidden,
			finals: 1, want: []int{200}, closed: true, lacks: []string{"/admin"}},
		{name: "http/1.0 keep-alive with transfer-encoding framed by content-length",
			req: "POST /mcp HTTP/1.0\r\n" + host + auth + "Connection: keep-alive\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
				"GET /admin HTTP/1.0\r\nHost: x\r\n\r\n",
			finals: 1, want: []int{200}, closed: true, lacks: []string{"/admin"}},
		{name: "content-length alone keeps the connection",
			req:    post("", "{}") + "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			finals: 2, want: []int{200, 200}, closed: true},

		// 6. The gateway's own request headers survive the client's
		// Connection header; hop-by-hop removal cannot strip them.
		{name: "connection naming x-request-id",
			req:    post("X-Request-Id: req-1234\r\nConnection: X-Request-Id\r\n", "{}"),
			finals: 1, want: []int{200}, has: []string{"\r\nX-Request-Id: req-1234\r\n"}},
		{name: "connection naming x-request-id with an id the gateway generates",
			req:    post("Connection: x-request-id\r\n", "{}"),
			finals: 1, want: []int{200},
			check: func(t *testing.T, resps []*http.Response, _ []string, upstream string) {
				id := resps[0].Header.Get("X-Request-Id")
				if id == "" || !strings.Contains(upstream, "\r\nX-Request-Id: "+id+"\r\n") {
					t.Errorf("upstream did not receive the gateway's X-Request-Id %q:\n%s", id, upstream)
				}
			}},
		{name: "connection naming the forwarding headers",
			req:    post("Connection: X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host\r\n", "{}"),
			finals: 1, want: []int{200}, has: []string{"\r\nX-Forwarded-For: 127.0.0.1\r\n", "\r\nX-Forwarded-Proto: http\r\n", "\r\nX-Forwarded-Host: gateway.example.com\r\n"}},

		// Identity and forwarding headers spelled with underscores: a
		// CGI-style server (WSGI, PHP) reads X-Forwarded_User as
		// X-Forwarded-User.
		{name: "identity headers spelled with underscores",
			req: post("X-Forwarded_User: admin\r\nX_Remote_User: admin\r\nRemote_User: admin\r\nX-Auth-Request_Email: admin@example.com\r\n"+
				"X-Forwarded_For: 10.0.0.1\r\nProxy_Authorization: Basic c3RvbGVu\r\nX-Request_Id: spoofed\r\n", "{}"),
			finals: 1, want: []int{200}, lacks: []string{"admin", "10.0.0.1", "c3RvbGVu", "spoofed"}},
		{name: "forwarding headers the gateway does not set",
			req:    post("X-Real-IP: 10.0.0.9\r\nX-Forwarded-Prefix: /evil\r\nX-Forwarded-Port: 1\r\nX-Forwarded-Server: evil\r\n", "{}"),
			finals: 1, want: []int{200}, lacks: []string{"10.0.0.9", "/evil", "X-Forwarded-Port", "X-Forwarded-Server"}},
		// MCP headers spelled with underscores: such a server reads
		// Mcp_Session_Id as the session ID, which the gate never opened
		// for this subject (session.go), or Mcp_Name as a name it never
		// compared with the body.
		{name: "MCP headers spelled with underscores",
			req:    post("Mcp_Session_Id: victim-session\r\nMcp_Name: other_tool\r\nMCP_Protocol_Version: 1999-01-01\r\n", "{}"),
			finals: 1, want: []int{200}, lacks: []string{"victim-session", "other_tool", "1999-01-01"}},
		{name: "a header with an underscore the gateway does not own passes",
			req:    post("X_Custom_Header: kept\r\n", "{}"),
			finals: 1, want: []int{200}, has: []string{"X_custom_header: kept"}},

		// The upstream's informational answers: not relayed, and they do
		// not wipe the gateway's own response headers.
		{name: "upstream early hints carrying cors and request id",
			answer: "HTTP/1.1 103 Early Hints\r\nAccess-Control-Allow-Origin: *\r\nX-Request-Id: upstream-id\r\nLink: </x>; rel=preload\r\n\r\n" +
				"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\nok",
			req:    post("Origin: https://claude.ai\r\nX-Request-Id: client-id\r\n", "{}"),
			finals: 1, want: []int{200},
			check: func(t *testing.T, resps []*http.Response, _ []string, _ string) {
				r := resps[len(resps)-1]
				if got := r.Header.Values("X-Request-Id"); len(got) != 1 || got[0] != "client-id" {
					t.Errorf("X-Request-Id: got %q, want [client-id]", got)
				}
				if got := r.Header.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != "https://claude.ai" {
					t.Errorf("Access-Control-Allow-Origin: got %q, want [https://claude.ai]", got)
				}
				if got := r.Header.Get("Access-Control-Expose-Headers"); !strings.Contains(got, "X-Request-Id") {
					t.Errorf("Access-Control-Expose-Headers: got %q", got)
				}
				if got := r.Header.Get("Vary"); got != "Origin" {
					t.Errorf("Vary: got %q, want Origin", got)
				}
			}},
		{name: "upstream early hints on a chunked request keep the close",
			answer: "HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
			req:    "POST /mcp HTTP/1.1\r\n" + host + auth + "Transfer-Encoding: chunked\r\n\r\n" + chunk("{}") + "0\r\n\r\n" + hidden,
			finals: 1, want: []int{200}, closed: true, lacks: []string{"/admin"}},
	}
	// Every row over both upstream paths: the gate's own client (http)
	// and httputil.ReverseProxy with its Transport (https).
	for _, scheme := range []string{"http", "https"} {
		for _, tt := range rows {
			t.Run(scheme+"/"+tt.name, func(t *testing.T) {
				up := newRawUpstreamOver(t, scheme, tt.answer)
				s := newSetup(t, env, nil, func(c *Config) { c.Upstream, c.UpstreamRootCAs = Static(up.url(t)), up.roots })
				resps, bodies, closed := rawExchange(t, s.front.Listener.Addr().String(), tt.req, tt.finals, tt.then, tt.closed)
				received, _ := up.seen()
				if got, want := statuses(resps), tt.want; !equalInts(got, want) {
					time.Sleep(200 * time.Millisecond) // what a tunnel carries arrives after the 101
					received, _ = up.seen()
					t.Fatalf("statuses: got %v, want %v (bodies %q); upstream received:\n%s", got, want, bodies, received)
				}
				if tt.closed && !closed {
					t.Errorf("the connection stayed open")
				}
				if tt.upstreamNothing && received != "" {
					t.Errorf("upstream received:\n%s", received)
				}
				for _, s := range tt.lacks {
					if strings.Contains(strings.ToLower(received), strings.ToLower(s)) {
						t.Errorf("upstream received %q:\n%s", s, received)
					}
				}
				for _, s := range tt.has {
					if !strings.Contains(received, s) {
						t.Errorf("upstream did not receive %q:\n%s", s, received)
					}
				}
				if tt.check != nil {
					tt.check(t, resps, bodies, received)
				}
			})
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
