package gate

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// rawAttack is a request line sent as it is over TCP, so no client cleans
// it, with or without a valid token.
type rawAttack struct {
	name       string
	line       string // request line
	auth       bool   // send a valid token too
	wantStatus int
}

// tryRaw sends a (with tok when a.auth), checks its status and that the
// upstream received nothing, and returns the response.
func (s *setup) tryRaw(t *testing.T, tok string, a rawAttack) *http.Response {
	t.Helper()
	req := a.line + "\r\nHost: gateway.example.com\r\n"
	if a.auth {
		req += "Authorization: Bearer " + tok + "\r\n"
	}
	req += "Connection: close\r\n\r\n"
	resp, body := s.raw(t, req)
	if got, want := resp.StatusCode, a.wantStatus; got != want {
		t.Errorf("status: got %d, want %d (%s)", got, want, body)
	}
	if got := s.up.requests(); len(got) != 0 {
		t.Fatalf("upstream received %d requests, want none: %+v", len(got), got[0])
	}
	return resp
}

func TestRawBypassAttempts(t *testing.T) {
	env := newIssuer(t)
	tok := env.token(t, "alice", nil)
	tests := []rawAttack{
		{name: "dot segments into the mcp path", line: "GET /.well-known/../mcp HTTP/1.1", wantStatus: 400},
		{name: "encoded dot segments", line: "GET /%2e%2e/mcp HTTP/1.1", wantStatus: 400},
		{name: "encoded dot segments upper case under well-known", line: "GET /.well-known/%2E%2E/mcp HTTP/1.1", wantStatus: 400},
		{name: "mixed encoded dot", line: "GET /.well-known/.%2e/mcp HTTP/1.1", wantStatus: 400},
		{name: "dot segment after public path", line: "GET /healthz/../mcp HTTP/1.1", wantStatus: 400},
		{name: "single dot segment", line: "GET /./mcp HTTP/1.1", wantStatus: 400},
		{name: "public path with another method", line: "POST /healthz HTTP/1.1", wantStatus: 405},
		{name: "double slash", line: "GET //mcp HTTP/1.1", wantStatus: 400},
		{name: "double slash before public path", line: "GET //healthz HTTP/1.1", wantStatus: 400},
		{name: "path parameter", line: "GET /mcp;x HTTP/1.1", wantStatus: 400},
		{name: "public path with path parameter", line: "GET /healthz;.css HTTP/1.1", wantStatus: 400},
		{name: "encoded slash", line: "GET /a%2fb HTTP/1.1", wantStatus: 400},
		{name: "encoded backslash", line: "GET /a%5Cb HTTP/1.1", wantStatus: 400},
		{name: "raw backslash", line: `GET /.well-known\..\mcp HTTP/1.1`, wantStatus: 400},
		{name: "encoded nul", line: "GET /%00 HTTP/1.1", wantStatus: 400},
		{name: "encoded control byte", line: "GET /mcp%0d%0aX:y HTTP/1.1", wantStatus: 400},
		{name: "double encoded dot", line: "GET /%252e%252e/mcp HTTP/1.1", wantStatus: 400},
		{name: "unknown well-known path", line: "GET /.well-known/foo HTTP/1.1", wantStatus: 404},
		{name: "well-known with trailing slash", line: "GET /.well-known/oauth-protected-resource/ HTTP/1.1", wantStatus: 404},
		{name: "absolute-form with dot segments", line: "GET http://example.com/.well-known/../mcp HTTP/1.1", wantStatus: 400},
		{name: "asterisk-form", line: "GET * HTTP/1.1", wantStatus: 400},
		{name: "overlong path", line: "GET /" + strings.Repeat("a", 5000) + " HTTP/1.1", wantStatus: 414},
		{name: "dot segments with a valid token", line: "GET /mcp/../admin HTTP/1.1", auth: true, wantStatus: 400},
		{name: "encoded slash with a valid token", line: "GET /mcp%2F..%2Fadmin HTTP/1.1", auth: true, wantStatus: 400},
	}
	for _, prefix := range []string{"", "/mcp"} {
		s := newSetup(t, env, nil, func(c *Config) { c.UpstreamPath = prefix })
		for _, tt := range tests {
			t.Run("prefix "+strconv.Quote(prefix)+"/"+tt.name, func(t *testing.T) {
				resp := s.tryRaw(t, tok, tt)
				if got := resp.Header.Get("Content-Type"); got != "application/json" {
					t.Errorf("Content-Type: got %q, want application/json", got)
				}
			})
		}
	}
}

func TestSmuggling(t *testing.T) {
	env := newIssuer(t)
	s := newSetup(t, env, nil, nil)
	// Go's server frames a request with both Content-Length and
	// Transfer-Encoding by the chunked encoding alone, dropping Content-Length
	// (RFC 9112 §6.3); the gate then closes the connection (RFC 9112 §6.1),
	// so the request hidden behind the zero chunk is never read
	// (TestForwardingAttackMatrix).
	tests := []struct {
		name       string
		req        string
		wantStatus int
	}{
		{name: "content-length with transfer-encoding", req: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: 401},
		{name: "two content-lengths", req: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd", wantStatus: 400},
		{name: "obfuscated transfer-encoding", req: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", wantStatus: 501},
		{name: "two transfer-encodings", req: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n", wantStatus: 501},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, _ := s.raw(t, tt.req)
			if got, want := resp.StatusCode, tt.wantStatus; got != want {
				t.Errorf("status: got %d, want %d", got, want)
			}
			time.Sleep(50 * time.Millisecond) // let a pipelined request, if any, be served
			if got := s.up.requests(); len(got) != 0 {
				t.Fatalf("upstream received %d requests, want none: %+v", len(got), got[0])
			}
		})
	}
}

func TestPublicRoutes(t *testing.T) {
	env := newIssuer(t)
	s := newSetup(t, env, nil, nil)
	tests := []struct {
		name, method, path string
		wantStatus         int
		wantBody           string
	}{
		{name: "health", method: "GET", path: "/healthz", wantStatus: 200, wantBody: "healthy"},
		{name: "health head", method: "HEAD", path: "/healthz", wantStatus: 200},
		{name: "metadata", method: "GET", path: "/.well-known/oauth-protected-resource", wantStatus: 200, wantBody: "{}"},
		{name: "health with post", method: "POST", path: "/healthz", wantStatus: 405},
		{name: "health with delete", method: "DELETE", path: "/healthz", wantStatus: 405},
		{name: "unknown well-known", method: "GET", path: "/.well-known/openid-configuration", wantStatus: 404},
		{name: "health with a trailing slash needs a token", method: "GET", path: "/healthz/", wantStatus: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := s.do(t, tt.method, tt.path, nil, nil)
			if got, want := resp.StatusCode, tt.wantStatus; got != want {
				t.Fatalf("status: got %d, want %d", got, want)
			}
			if tt.wantBody != "" && body != tt.wantBody {
				t.Errorf("body: got %q, want %q", body, tt.wantBody)
			}
			if tt.wantStatus == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow: got %q, want %q", resp.Header.Get("Allow"), "GET, HEAD")
			}
			if got := s.up.requests(); len(got) != 0 {
				t.Fatalf("upstream received %d requests, want none", len(got))
			}
		})
	}
}

func TestCORS(t *testing.T) {
	env := newIssuer(t)
	preflight := http.Header{"Origin": {"https://claude.ai"}, "Access-Control-Request-Method": {"POST"}, "Access-Control-Request-Headers": {"authorization, mcp-session-id"}}
	tests := []struct {
		name       string
		origins    []string
		method     string
		header     http.Header
		token      bool
		wantStatus int
		wantACAO   string
		wantPassed bool
	}{
		{name: "preflight answered by the gateway", method: "OPTIONS", header: preflight, wantStatus: 204, wantACAO: "https://claude.ai"},
		{name: "preflight from another origin", method: "OPTIONS", header: http.Header{"Origin": {"https://evil.example.com"}, "Access-Control-Request-Method": {"POST"}}, wantStatus: 403},
		{name: "request from another origin with a token", method: "POST", header: http.Header{"Origin": {"https://evil.example.com"}}, token: true, wantStatus: 403},
		{name: "401 carries the cors headers", method: "POST", header: http.Header{"Origin": {"https://claude.ai"}}, wantStatus: 401, wantACAO: "https://claude.ai"},
		{name: "allowed origin with a token", method: "POST", header: http.Header{"Origin": {"https://claude.ai"}}, token: true, wantStatus: 200, wantACAO: "https://claude.ai", wantPassed: true},
		{name: "star allows any origin", origins: []string{"*"}, method: "POST", header: http.Header{"Origin": {"https://x.example"}}, wantStatus: 401, wantACAO: "*"},
		{name: "no origin proceeds", method: "POST", header: http.Header{}, token: true, wantStatus: 200, wantPassed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSetup(t, env, nil, func(c *Config) {
				if tt.origins != nil {
					c.CORSOrigins = tt.origins
				}
			})
			h := tt.header.Clone()
			if tt.token {
				h.Set("Authorization", "Bearer "+env.token(t, "alice", nil))
			}
			resp, _ := s.do(t, tt.method, "/", h, nil)
			if got, want := resp.StatusCode, tt.wantStatus; got != want {
				t.Fatalf("status: got %d, want %d", got, want)
			}
			if got, want := resp.Header.Get("Access-Control-Allow-Origin"), tt.wantACAO; got != want {
				t.Errorf("Access-Control-Allow-Origin: got %q, want %q", got, want)
			}
			if got := resp.Header.Get("Vary"); got != "Origin" {
				t.Errorf("Vary: got %q, want Origin", got)
			}
			if tt.wantStatus == 204 {
				for k, want := range map[string]string{
					"Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
					"Access-Control-Max-Age":       "600",
				} {
					if got := resp.Header.Get(k); got != want {
						t.Errorf("%s: got %q, want %q", k, got, want)
					}
				}
				if got := resp.Header.Get("Access-Control-Allow-Headers"); !strings.Contains(got, "Authorization") || !strings.Contains(got, "Mcp-Session-Id") || !strings.Contains(got, "Last-Event-ID") {
					t.Errorf("Access-Control-Allow-Headers: got %q", got)
				}
			}
			if tt.wantACAO != "" && tt.wantStatus != 204 {
				if got := resp.Header.Get("Access-Control-Expose-Headers"); !strings.Contains(got, "WWW-Authenticate") || !strings.Contains(got, "Mcp-Session-Id") || !strings.Contains(got, "X-Request-Id") {
					t.Errorf("Access-Control-Expose-Headers: got %q", got)
				}
			}
			if got, want := len(s.up.requests()) > 0, tt.wantPassed; got != want {
				t.Fatalf("reached upstream: got %v, want %v", got, want)
			}
		})
	}
}

// readiness is the Upstream a supervisor would be: a real server whose
// readiness can be switched.
type readiness struct {
	u     *url.URL
	ready atomic.Bool
}

func (r *readiness) Endpoint() (*url.URL, bool) { return r.u, r.ready.Load() }

func TestUnavailable(t *testing.T) {
	env := newIssuer(t)

	t.Run("upstream down", func(t *testing.T) {
		s := newSetup(t, env, nil, nil)
		s.up.srv.Close()
		resp, body := s.do(t, "POST", "/", bearerHeader(env.token(t, "alice", nil)), nil)
		if got, want := resp.StatusCode, 502; got != want {
			t.Fatalf("status: got %d, want %d", got, want)
		}
		if got, want := jsonError(t, body), "bad_gateway"; got != want {
			t.Errorf("error: got %q, want %q", got, want)
		}
		if strings.Contains(body, "127.0.0.1") || strings.Contains(body, s.up.url(t).Port()) {
			t.Errorf("body names an internal address: %s", body)
		}
	})

	t.Run("spawned upstream refusing while it restarts", func(t *testing.T) {
		s := newSetup(t, env, nil, func(c *Config) { c.UpstreamRestarts = true })
		s.up.srv.Close()
		resp, body := s.do(t, "POST", "/", bearerHeader(env.token(t, "alice", nil)), nil)
		if got, want := resp.StatusCode, 503; got != want {
			t.Fatalf("status: got %d, want %d (%s)", got, want, body)
		}
		if got := resp.Header.Get("Retry-After"); got == "" {
			t.Errorf("no Retry-After")
		}
		if strings.Contains(body, "127.0.0.1") {
			t.Errorf("body names an internal address: %s", body)
		}
	})

	t.Run("upstream not ready", func(t *testing.T) {
		var rd readiness
		s := newSetup(t, env, nil, func(c *Config) { rd.u = c.Upstream.(staticUpstream).u; c.Upstream = &rd })
		resp, _ := s.do(t, "POST", "/", bearerHeader(env.token(t, "alice", nil)), nil)
		if got, want := resp.StatusCode, 503; got != want {
			t.Fatalf("status: got %d, want %d", got, want)
		}
		if got := resp.Header.Get("Retry-After"); got == "" {
			t.Errorf("no Retry-After")
		}
		if len(s.up.requests()) != 0 {
			t.Fatalf("upstream reached while not ready")
		}
		rd.ready.Store(true)
		if resp, _ := s.do(t, "POST", "/", bearerHeader(env.token(t, "alice", nil)), nil); resp.StatusCode != 200 {
			t.Fatalf("status once ready: got %d, want 200", resp.StatusCode)
		}
	})

	t.Run("provider keys not loaded", func(t *testing.T) {
		is := env.is
		down := *env
		down.p = nil
		s := newSetup(t, env, nil, func(c *Config) {
			c.Verifier = newDownProvider(t)
		})
		tok, _ := is.AccessToken("alice", testAudience, time.Hour, nil)
		resp, body := s.do(t, "POST", "/", bearerHeader(tok), nil)
		if got, want := resp.StatusCode, 503; got != want {
			t.Fatalf("status: got %d, want %d (%s)", got, want, body)
		}
		if got := resp.Header.Get("Retry-After"); got == "" {
			t.Errorf("no Retry-After")
		}
		if len(s.up.requests()) != 0 {
			t.Fatalf("upstream reached")
		}
	})
}

func TestBodyLimit(t *testing.T) {
	env := newIssuer(t)
	s := newSetup(t, env, nil, func(c *Config) { c.MaxBodyBytes = 1024 })
	tok := env.token(t, "alice", nil)

	resp, body := s.do(t, "POST", "/", bearerHeader(tok), strings.NewReader(strings.Repeat("x", 2048)))
	if got, want := resp.StatusCode, 413; got != want {
		t.Fatalf("declared length: status got %d, want %d (%s)", got, want, body)
	}
	if len(s.up.requests()) != 0 {
		t.Fatalf("upstream reached with a declared oversize body")
	}

	// A chunked body with no declared length is cut while streaming.
	resp, body = s.do(t, "POST", "/", bearerHeader(tok), io.MultiReader(strings.NewReader(strings.Repeat("x", 4096))))
	if got, want := resp.StatusCode, 413; got != want {
		t.Fatalf("chunked: status got %d, want %d (%s)", got, want, body)
	}
	for _, r := range s.up.requests() {
		if len(r.Body) > 1024 {
			t.Errorf("upstream got %d body bytes, want at most 1024", len(r.Body))
		}
	}

	resp, _ = s.do(t, "POST", "/", bearerHeader(tok), strings.NewReader(strings.Repeat("x", 1000)))
	if got, want := resp.StatusCode, 200; got != want {
		t.Fatalf("small body: status got %d, want %d", got, want)
	}
}

func TestRateLimit(t *testing.T) {
	env := newIssuer(t)
	s := newSetup(t, env, nil, func(c *Config) { c.SubjectLimiter = testAdmission(t, 3, c.Now) })
	alice, carol := env.token(t, "alice", nil), env.token(t, "carol", map[string]any{"groups": "mcp-users"})
	for i := range 3 {
		if resp, _ := s.do(t, "GET", "/", bearerHeader(alice), nil); resp.StatusCode != 200 {
			t.Fatalf("request %d: status got %d, want 200", i, resp.StatusCode)
		}
	}
	resp, body := s.do(t, "GET", "/", bearerHeader(alice), nil)
	if got, want := resp.StatusCode, 429; got != want {
		t.Fatalf("burst exhausted: status got %d, want %d", got, want)
	}
	if got, want := resp.Header.Get("Retry-After"), "20"; got != want {
		t.Errorf("Retry-After: got %q, want %q (3/min: one token per 20 s)", got, want)
	}
	jsonError(t, body)
	if got, want := len(s.up.requests()), 3; got != want {
		t.Fatalf("upstream requests: got %d, want %d", got, want)
	}
	if resp, _ := s.do(t, "GET", "/", bearerHeader(carol), nil); resp.StatusCode != 200 {
		t.Fatalf("another subject: status got %d, want 200", resp.StatusCode)
	}
	s.clock.Advance(19 * time.Second)
	if resp, _ := s.do(t, "GET", "/", bearerHeader(alice), nil); resp.StatusCode != 429 {
		t.Fatalf("after 19 s: status got %d, want 429", resp.StatusCode)
	}
	s.clock.Advance(time.Second)
	if resp, _ := s.do(t, "GET", "/", bearerHeader(alice), nil); resp.StatusCode != 200 {
		t.Fatalf("after 20 s: status got %d, want 200", resp.StatusCode)
	}
}

func TestFailedAuthPerIP(t *testing.T) {
	env := newIssuer(t)
	s := newSetup(t, env, nil, func(c *Config) { c.FailedAuthLimiter = testLimiter(t, 2, c.Now) })
	bad := env.token(t, "alice", map[string]any{"aud": "other"})
	for i := range 2 {
		if resp, _ := s.do(t, "GET", "/", bearerHeader(bad), nil); resp.StatusCode != 401 {
			t.Fatalf("failure %d: status got %d, want 401", i, resp.StatusCode)
		}
	}
	// Missing credentials are the start of every OAuth flow and cost
	// nothing: they are not counted.
	if resp, _ := s.do(t, "GET", "/", nil, nil); resp.StatusCode != 401 {
		t.Fatalf("no credentials: status got %d, want 401", resp.StatusCode)
	}
	resp, _ := s.do(t, "GET", "/", bearerHeader(env.token(t, "alice", nil)), nil)
	if got, want := resp.StatusCode, 429; got != want {
		t.Fatalf("after the limit: status got %d, want %d", got, want)
	}
	if got, want := resp.Header.Get("Retry-After"), "30"; got != want {
		t.Errorf("Retry-After: got %q, want %q", got, want)
	}
	s.clock.Advance(30 * time.Second)
	if resp, _ := s.do(t, "GET", "/", bearerHeader(env.token(t, "alice", nil)), nil); resp.StatusCode != 200 {
		t.Fatalf("after 30 s: status got %d, want 200", resp.StatusCode)
	}
}

func TestRequiredScopes(t *testing.T) {
	env := newIssuer(t)
	s := newSetup(t, env, nil, func(c *Config) { c.RequiredScopes = []string{"mcp:read", "mcp:write"} })
	resp, body := s.do(t, "GET", "/", bearerHeader(env.token(t, "alice", map[string]any{"scope": "openid mcp:read"})), nil)
	if got, want := resp.StatusCode, 403; got != want {
		t.Fatalf("status: got %d, want %d", got, want)
	}
	want := `Bearer error="insufficient_scope", scope="mcp:read mcp:write", resource_metadata="` + testMetadataURL + `"`
	if got := resp.Header.Get("Www-Authenticate"); got != want {
		t.Errorf("WWW-Authenticate: got %q, want %q", got, want)
	}
	if got, want := jsonError(t, body), "insufficient_scope"; got != want {
		t.Errorf("error: got %q, want %q", got, want)
	}
	if len(s.up.requests()) != 0 {
		t.Fatalf("upstream reached")
	}
	if resp, _ := s.do(t, "GET", "/", bearerHeader(env.token(t, "alice", map[string]any{"scope": "mcp:write mcp:read"})), nil); resp.StatusCode != 200 {
		t.Fatalf("with scopes: status got %d, want 200", resp.StatusCode)
	}
}

func TestStreaming(t *testing.T) {
	env := newIssuer(t)
	release := make(chan struct{})
	s := newSetup(t, env, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "id: 1\ndata: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-time.After(5 * time.Second):
			return // the client never saw the first event: no second one
		}
		_, _ = io.WriteString(w, "id: 2\ndata: second\n\n")
	}, nil)
	h := bearerHeader(env.token(t, "alice", nil))
	h.Set("Last-Event-ID", "0")
	resp := s.openStream(t, "/", h)
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if got, want := first, "id: 1\n"; got != want {
		t.Fatalf("first line before the second event was sent: got %q, want %q", got, want)
	}
	close(release)
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), "data: second") {
		t.Errorf("second event missing: %q", rest)
	}
	if got := s.up.requests()[0].Header.Get("Last-Event-ID"); got != "0" {
		t.Errorf("upstream Last-Event-ID: got %q, want 0", got)
	}
}

// TestStreamsEndOnShutdown: an idle event stream, which never finishes on
// its own, is ended when shutdown begins, and the upstream sees it end.
func TestStreamsEndOnShutdown(t *testing.T) {
	env := newIssuer(t)
	shutdown, beginShutdown := context.WithCancel(context.Background())
	defer beginShutdown()
	upstreamEnded := make(chan struct{})
	s := newSetup(t, env, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "id: 1\ndata: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			close(upstreamEnded)
		case <-time.After(10 * time.Second):
		}
	}, func(c *Config) { c.Shutdown = shutdown })

	resp := s.openStream(t, "/", bearerHeader(env.token(t, "alice", nil)))
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "id: 1\n" {
		t.Fatalf("first event: got %q, %v", line, err)
	}
	beginShutdown()
	select {
	case <-upstreamEnded:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream's stream was not ended when shutdown began")
	}
	if _, err := io.ReadAll(br); err != nil && !strings.Contains(err.Error(), "unexpected EOF") {
		t.Logf("client saw the stream end with %v", err)
	}
}

// TestStreamOpenedDuringShutdown: a GET stream asked for once shutdown has
// begun would be ended at once; it gets 503 with Retry-After and
// Connection: close (reconnect elsewhere), not 502, and never reaches the
// upstream.
func TestStreamOpenedDuringShutdown(t *testing.T) {
	env := newIssuer(t)
	shutdown, beginShutdown := context.WithCancel(context.Background())
	defer beginShutdown()
	s := newSetup(t, env, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "id: 1\ndata: first\n\n")
	}, func(c *Config) { c.Shutdown = shutdown })

	beginShutdown()
	resp := s.openStream(t, "/", bearerHeader(env.token(t, "alice", nil)))
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status: got %d, want 503", resp.StatusCode)
	}
	if resp.Header.Get("Retry-After") == "" || !resp.Close {
		t.Errorf("want Retry-After and Connection: close, got %v (close %v)", resp.Header, resp.Close)
	}
	if n := len(s.up.requests()); n != 0 {
		t.Errorf("the upstream got %d requests, want none", n)
	}
}
