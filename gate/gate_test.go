package gate

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/devissuer"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/store"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

const (
	testAudience    = "my-mcp"
	testMetadataURL = "https://mcp.example.com/.well-known/oauth-protected-resource"
)

// issuerEnv is a running devissuer and a provider that has loaded its keys.
type issuerEnv struct {
	is *devissuer.Issuer
	p  *provider.Provider
}

func newIssuer(t testing.TB) *issuerEnv {
	t.Helper()
	env := &issuerEnv{is: testkit.StartIssuer(t, nil)}
	env.p = runProviderFor(t, env, provider.Config{})
	return env
}

func (e *issuerEnv) token(t testing.TB, sub string, extra map[string]any) string {
	t.Helper()
	tok, err := e.is.AccessToken(sub, testAudience, time.Hour, extra)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// recorded is what the upstream saw of one request.
type recorded struct {
	Method, Path, RawPath, RequestURI, Host string
	Header                                  http.Header
	Body                                    string
}

// upstream is a real HTTP server that records every request it receives.
type upstream struct {
	srv     *httptest.Server
	mu      sync.Mutex
	got     []recorded
	handler http.HandlerFunc // what to answer; nil: 200 "ok"
}

func newUpstream(t testing.TB, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{handler: h}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		u.mu.Lock()
		u.got = append(u.got, recorded{r.Method, r.URL.Path, r.URL.RawPath, r.RequestURI, r.Host, r.Header.Clone(), string(body)})
		u.mu.Unlock()
		if u.handler != nil {
			u.handler(w, r)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) requests() []recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]recorded(nil), u.got...)
}

func (u *upstream) url(t testing.TB) *url.URL {
	t.Helper()
	p, err := url.Parse(u.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// testLimiter is a store.Limiter of perMinute (and the same burst) on the
// clock now.
func testLimiter(t testing.TB, perMinute int, now func() time.Time) *store.Limiter {
	t.Helper()
	l, err := store.NewLimiter(store.LimiterConfig{PerMinute: perMinute, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testAdmission is the per-subject admission of a memory limiter, with a
// revocation store of its own.
func testAdmission(t testing.TB, perMinute int, now func() time.Time) *store.Admission {
	t.Helper()
	a, err := store.NewAdmission(testLimiter(t, perMinute, now), store.NewMemory(store.MemoryConfig{Now: now}))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// setup is a gate in front of an upstream, served on 127.0.0.1.
type setup struct {
	env   *issuerEnv
	up    *upstream
	front *httptest.Server
	clock *testkit.Clock
	gate  *gate
}

// newSetup starts a gate; mod adjusts the default config (allow-listed
// subject "alice", CORS origin https://claude.ai, rate limit 1000/min,
// failed authentications DefaultFailedAuthPerIPPerMinute per client; both
// limits on the setup's clock, which mod finds in Config.Now).
func newSetup(t testing.TB, env *issuerEnv, h http.HandlerFunc, mod func(*Config)) *setup {
	t.Helper()
	up := newUpstream(t, h)
	c := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg := Config{
		Verifier:            env.p,
		Upstream:            Static(up.url(t)),
		ResourceMetadataURL: testMetadataURL,
		ChallengeScopes:     []string{"openid", "mcp"},
		AllowSubs:           []string{"alice"},
		AllowEmails:         []string{"bob@example.com"},
		AllowGroups:         []string{"mcp-users"},
		SubjectLimiter:      testAdmission(t, 1000, c.Now),
		FailedAuthLimiter:   testLimiter(t, DefaultFailedAuthPerIPPerMinute, c.Now),
		CORSOrigins:         []string{"https://claude.ai"},
		Public: []Route{
			{Method: http.MethodGet, Path: "/healthz", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "healthy") })},
			{Method: http.MethodGet, Path: "/.well-known/oauth-protected-resource", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "{}") })},
		},
		Logger: hclog.New(&hclog.LoggerOptions{Name: "gate", Output: io.Discard}),
		Now:    c.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(g)
	t.Cleanup(front.Close)
	return &setup{env: env, up: up, front: front, clock: c, gate: g.(*gate)}
}

// do sends method path with headers through the gate.
func (s *setup) do(t testing.TB, method, path string, header http.Header, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, s.front.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := s.front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return resp, string(b)
}

// raw writes a raw HTTP/1.1 request over TCP (so no client cleans the path)
// and returns the response.
func (s *setup) raw(t testing.TB, request string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", s.front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response to %q: %v", request, err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return resp, string(b)
}

func bearerHeader(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}

func jsonError(t testing.TB, body string) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("body %q is not JSON: %v", body, err)
	}
	return e.Error
}

func noneToken(sub string) string {
	enc := base64.RawURLEncoding
	h := enc.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	p := enc.EncodeToString([]byte(`{"iss":"x","sub":"` + sub + `","aud":"` + testAudience + `","exp":4102444800}`))
	return h + "." + p + "."
}

func TestTokens(t *testing.T) {
	env := newIssuer(t)
	s := newSetup(t, env, nil, nil)
	mint := func(tk devissuer.Token) string {
		tok, err := env.is.Mint(tk)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	now := time.Now()
	claims := func(extra map[string]any) map[string]any {
		c := map[string]any{"iss": env.is.URL, "sub": "alice", "aud": testAudience, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	if err := env.is.AddKey("hidden", false); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		header     http.Header
		query      string
		wantStatus int
		wantChal   string // substring of WWW-Authenticate; "" means none expected
		wantPassed bool
	}{
		{name: "valid rs256", header: bearerHeader(env.token(t, "alice", nil)), wantStatus: 200, wantPassed: true},
		{name: "valid es256", header: bearerHeader(mint(devissuer.Token{KeyID: devissuer.KeyES256, Claims: claims(nil)})), wantStatus: 200, wantPassed: true},
		{name: "aud array", header: bearerHeader(env.token(t, "alice", map[string]any{"aud": []string{"other", testAudience}})), wantStatus: 200, wantPassed: true},
		{name: "scheme in any case with extra spaces", header: http.Header{"Authorization": {"bEaReR \t  " + env.token(t, "alice", nil)}}, wantStatus: 200, wantPassed: true},
		{name: "allowed by verified email", header: bearerHeader(env.token(t, "bob-sub", map[string]any{"email": "Bob@Example.com"})), wantStatus: 200, wantPassed: true},
		{name: "allowed by group", header: bearerHeader(env.token(t, "carol", map[string]any{"groups": []string{"x", "mcp-users"}})), wantStatus: 200, wantPassed: true},
		{name: "no credentials", wantStatus: 401, wantChal: `Bearer resource_metadata="` + testMetadataURL + `", scope="openid mcp"`},
		{name: "expired", header: bearerHeader(env.token(t, "alice", map[string]any{"exp": now.Add(-time.Hour).Unix()})), wantStatus: 401, wantChal: `error="invalid_token"`},
		{name: "wrong audience", header: bearerHeader(env.token(t, "alice", map[string]any{"aud": "someone-else"})), wantStatus: 401, wantChal: `error="invalid_token"`},
		{name: "wrong issuer", header: bearerHeader(env.token(t, "alice", map[string]any{"iss": "https://evil.example.com"})), wantStatus: 401, wantChal: `error="invalid_token"`},
		{name: "no exp", header: bearerHeader(env.token(t, "alice", map[string]any{"exp": nil})), wantStatus: 401, wantChal: `error="invalid_token"`},
		{name: "alg none", header: bearerHeader(noneToken("alice")), wantStatus: 401, wantChal: `error="invalid_token"`},
		{name: "unknown kid", header: bearerHeader(mint(devissuer.Token{KeyID: "hidden", Claims: claims(nil)})), wantStatus: 401, wantChal: `error="invalid_token"`},
		{name: "malformed token", header: bearerHeader("not.a.jwt"), wantStatus: 401, wantChal: `error="invalid_token"`},
		{name: "not token68", header: bearerHeader("abc def"), wantStatus: 401, wantChal: `error="invalid_request"`},
		{name: "basic scheme", header: http.Header{"Authorization": {"Basic YWxpY2U6cHc="}}, wantStatus: 401, wantChal: `error="invalid_request"`},
		{name: "bearer without token", header: http.Header{"Authorization": {"Bearer"}}, wantStatus: 401, wantChal: `error="invalid_request"`},
		{name: "token only in the query", query: "?access_token=" + env.token(t, "alice", nil), wantStatus: 401, wantChal: `Bearer resource_metadata=`},
		{name: "token in header and query", header: bearerHeader(env.token(t, "alice", nil)), query: "?access_token=x", wantStatus: 400, wantChal: `error="invalid_request"`},
		{name: "several authorization headers", header: http.Header{"Authorization": {"Bearer " + env.token(t, "alice", nil), "Bearer " + env.token(t, "alice", nil)}}, wantStatus: 400, wantChal: `error="invalid_request"`},
		{name: "token too large", header: bearerHeader(strings.Repeat("a", 100<<10)), wantStatus: 401, wantChal: `error_description="token too large"`},
		{name: "subject not allowed", header: bearerHeader(env.token(t, "mallory", nil)), wantStatus: 403},
		{name: "unverified email", header: bearerHeader(env.token(t, "bob-sub", map[string]any{"email": "bob@example.com", "email_verified": false})), wantStatus: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(s.up.requests())
			resp, body := s.do(t, http.MethodPost, "/"+tt.query, tt.header, strings.NewReader(`{}`))
			if got, want := resp.StatusCode, tt.wantStatus; got != want {
				t.Fatalf("status: got %d, want %d (body %s)", got, want, body)
			}
			chal := resp.Header.Get("Www-Authenticate")
			if tt.wantChal != "" && !strings.Contains(chal, tt.wantChal) {
				t.Errorf("WWW-Authenticate: got %q, want it to contain %q", chal, tt.wantChal)
			}
			if tt.name == "no credentials" && strings.Contains(chal, "error=") {
				t.Errorf("WWW-Authenticate: got %q, want no error attribute (RFC 6750 §3.1)", chal)
			}
			if tt.wantChal != "" && !strings.Contains(chal, `resource_metadata="`+testMetadataURL+`"`) {
				t.Errorf("WWW-Authenticate: got %q, want resource_metadata", chal)
			}
			passed := len(s.up.requests()) > before
			if got, want := passed, tt.wantPassed; got != want {
				t.Fatalf("reached upstream: got %v, want %v", got, want)
			}
			if !tt.wantPassed {
				if got := resp.Header.Get("Content-Type"); got != "application/json" {
					t.Errorf("Content-Type: got %q, want application/json", got)
				}
				jsonError(t, body)
			}
			if tt.wantStatus == 403 {
				if got, want := jsonError(t, body), "forbidden"; got != want {
					t.Errorf("error: got %q, want %q", got, want)
				}
			}
		})
	}
}

func TestForwarding(t *testing.T) {
	env := newIssuer(t)
	tests := []struct {
		name         string
		upstreamPath string // MCP_UPSTREAM_PATH
		basePath     string // path of MCP_UPSTREAM_URL
		reqPath      string
		wantPath     string
		wantRawQuery string
	}{
		{name: "root without prefix", reqPath: "/", wantPath: "/"},
		{name: "root maps to the prefix", upstreamPath: "/mcp", reqPath: "/", wantPath: "/mcp"},
		{name: "sub path under the prefix", upstreamPath: "/mcp/", reqPath: "/x?a=1&b=2", wantPath: "/mcp/x", wantRawQuery: "a=1&b=2"},
		{name: "url path and prefix joined", upstreamPath: "/mcp", basePath: "/base/", reqPath: "/x", wantPath: "/base/mcp/x"},
		{name: "encoded space kept", reqPath: "/a%20b", wantPath: "/a b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSetup(t, env, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Mcp-Session-Id", "sess-from-upstream")
				w.Header().Set("Access-Control-Allow-Origin", "https://evil.example.com")
				w.Header().Set("Access-Control-Allow-Credentials", "true")
				_, _ = io.WriteString(w, "ok")
			}, func(c *Config) {
				c.UpstreamPath = tt.upstreamPath
				u := *c.Upstream.(staticUpstream).u
				u.Path = tt.basePath
				c.Upstream = Static(&u)
			})
			h := bearerHeader(env.token(t, "alice", nil))
			h.Set("Cookie", "session=secret")
			h.Set("Proxy-Authorization", "Basic eA==")
			h.Set("X-Forwarded-For", "6.6.6.6")
			h.Set("X-Forwarded-Host", "evil.example.com")
			h.Set("X-Forwarded-Proto", "https")
			h.Set("Forwarded", "for=6.6.6.6")
			h.Set("X-Forwarded-User", "admin")
			h.Set("X-Forwarded-Email", "admin@example.com")
			h.Set("X-Auth-Request-User", "admin")
			h.Set("X-Remote-User", "admin")
			h.Set("Mcp-Session-Id", s.gate.sessions.seal("alice", "sess-1"))
			h.Set("MCP-Protocol-Version", "2025-11-25")
			h.Set("Last-Event-ID", "42")
			h.Set("Origin", "https://claude.ai")
			resp, body := s.do(t, http.MethodPost, tt.reqPath, h, strings.NewReader(`{"jsonrpc":"2.0"}`))
			if got, want := resp.StatusCode, 200; got != want {
				t.Fatalf("status: got %d, want %d (%s)", got, want, body)
			}
			reqs := s.up.requests()
			if got, want := len(reqs), 1; got != want {
				t.Fatalf("upstream requests: got %d, want %d", got, want)
			}
			r := reqs[0]
			if got, want := r.Path, tt.wantPath; got != want {
				t.Errorf("path: got %q, want %q", got, want)
			}
			if got, want := r.Host, s.up.url(t).Host; got != want {
				t.Errorf("Host: got %q, want the upstream's %q", got, want)
			}
			if tt.wantRawQuery != "" && !strings.HasSuffix(r.RequestURI, "?"+tt.wantRawQuery) {
				t.Errorf("request URI: got %q, want query %q", r.RequestURI, tt.wantRawQuery)
			}
			for _, k := range []string{"Authorization", "Cookie", "Proxy-Authorization", "Forwarded", "X-Forwarded-User", "X-Forwarded-Email", "X-Auth-Request-User", "X-Remote-User"} {
				if v := r.Header.Values(k); len(v) > 0 {
					t.Errorf("upstream got %s: %q, want none", k, v)
				}
			}
			for k, want := range map[string]string{
				"X-Forwarded-For":      "127.0.0.1",
				"X-Forwarded-Host":     s.front.Listener.Addr().String(),
				"X-Forwarded-Proto":    "http",
				"Mcp-Session-Id":       "sess-1",
				"Mcp-Protocol-Version": "2025-11-25",
				"Last-Event-Id":        "42",
			} {
				if got := strings.Join(r.Header.Values(k), ","); got != want {
					t.Errorf("upstream %s: got %q, want %q", k, got, want)
				}
			}
			if got, want := r.Body, `{"jsonrpc":"2.0"}`; got != want {
				t.Errorf("body: got %q, want %q", got, want)
			}
			if got, want := resp.Header.Get("Mcp-Session-Id"), s.gate.sessions.seal("alice", "sess-from-upstream"); got != want {
				t.Errorf("response Mcp-Session-Id: got %q, want %q", got, want)
			}
			if got, want := resp.Header.Values("Access-Control-Allow-Origin"), []string{"https://claude.ai"}; strings.Join(got, ",") != want[0] {
				t.Errorf("response Access-Control-Allow-Origin: got %q, want %q", got, want)
			}
			if got := resp.Header.Get("Access-Control-Allow-Credentials"); got != "" {
				t.Errorf("upstream's Access-Control-Allow-Credentials reached the client: %q", got)
			}
		})
	}
}

func TestTrustedProxies(t *testing.T) {
	env := newIssuer(t)
	tests := []struct {
		name      string
		trusted   []netip.Prefix
		xff       string
		proto     string
		wantXFF   string
		wantProto string
	}{
		{name: "untrusted peer: client values dropped", xff: "1.2.3.4", proto: "https", wantXFF: "127.0.0.1", wantProto: "http"},
		{name: "trusted peer: rightmost untrusted entry", trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")},
			xff: "9.9.9.9, 1.2.3.4, 10.0.0.7", proto: "https", wantXFF: "1.2.3.4", wantProto: "https"},
		{name: "trusted peer without xff", trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, wantXFF: "127.0.0.1", wantProto: "http"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSetup(t, env, nil, func(c *Config) { c.TrustedProxies = tt.trusted })
			h := bearerHeader(env.token(t, "alice", nil))
			if tt.xff != "" {
				h.Set("X-Forwarded-For", tt.xff)
			}
			if tt.proto != "" {
				h.Set("X-Forwarded-Proto", tt.proto)
			}
			resp, _ := s.do(t, http.MethodGet, "/", h, nil)
			if resp.StatusCode != 200 {
				t.Fatalf("status: got %d, want 200", resp.StatusCode)
			}
			r := s.up.requests()[0]
			if got, want := r.Header.Get("X-Forwarded-For"), tt.wantXFF; got != want {
				t.Errorf("X-Forwarded-For: got %q, want %q", got, want)
			}
			if got, want := r.Header.Get("X-Forwarded-Proto"), tt.wantProto; got != want {
				t.Errorf("X-Forwarded-Proto: got %q, want %q", got, want)
			}
		})
	}
}

// newDownProvider is a provider whose issuer never answers, so its keys are
// never loaded.
func newDownProvider(t testing.TB) *provider.Provider {
	t.Helper()
	is := testkit.StartIssuer(t, func(is *devissuer.Issuer) { is.SetDown(true) })
	p := provider.New(provider.Config{IssuerURL: is.URL, Audiences: []string{testAudience}})
	testkit.Run(t, p)
	return p
}

// TestNewRefuses checks that New refuses each programmer error with an
// error naming it, and accepts the configuration they start from.
func TestNewRefuses(t *testing.T) {
	env := newIssuer(t)
	ok := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	base := func() Config {
		return Config{
			Verifier:            env.p,
			Upstream:            Static(&url.URL{Scheme: "http", Host: "127.0.0.1:1"}),
			ResourceMetadataURL: testMetadataURL,
			UpstreamPath:        "/mcp/",
			Public: []Route{
				{Method: http.MethodGet, Path: "/healthz", Handler: ok},
				{Method: http.MethodGet, Path: "/.well-known/x", Handler: ok, CORS: CORSAnyOrigin},
				{Method: http.MethodOptions, Path: "/.well-known/x", Handler: ok, CORS: CORSAnyOrigin},
				{Method: http.MethodPost, Path: "/token", Handler: ok, CORS: CORSSameOrigin},
			},
		}
	}
	if _, err := New(base()); err != nil {
		t.Fatalf("the base configuration: %v", err)
	}
	for _, c := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no verifier", func(c *Config) { c.Verifier = nil }, "no verifier"},
		{"no upstream", func(c *Config) { c.Upstream = nil }, "no upstream"},
		{"a relative metadata url", func(c *Config) { c.ResourceMetadataURL = "/.well-known/x" }, "is not absolute"},
		{"an upstream path without a slash", func(c *Config) { c.UpstreamPath = "mcp" }, "does not start with /"},
		{"a route without a handler", func(c *Config) { c.Public[0].Handler = nil }, "needs a method and a handler"},
		{"a route without a method", func(c *Config) { c.Public[0].Method = "" }, "needs a method and a handler"},
		{"an unclean route path", func(c *Config) { c.Public[0].Path = "/a/../healthz" }, `"/a/../healthz"`},
		{"a route listed twice", func(c *Config) { c.Public = append(c.Public, c.Public[0]) }, "listed twice"},
		{"a path's routes in two CORS policies", func(c *Config) { c.Public[2].CORS = CORSAllowed }, "differ in CORS policy"},
		{"an unknown CORS policy", func(c *Config) { c.Public[3].CORS = "sometimes" }, "unknown CORS policy"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := base()
			c.mod(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.HasPrefix(err.Error(), "new gate: ") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error: got %v, want one with %q", err, c.want)
			}
		})
	}
}
