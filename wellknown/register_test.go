package wellknown

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/gate"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/store"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// testLimiter is a store.Limiter of perMinute (and the same burst) on the
// clock now.
func testLimiter(t *testing.T, perMinute int, now func() time.Time) *store.Limiter {
	t.Helper()
	l, err := store.NewLimiter(store.LimiterConfig{PerMinute: perMinute, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// registerConfig enables registration as the gateway is wired: limited to
// DefaultRegisterPerIPPerMinute per client, keyed as the gate keys clients.
func registerConfig(t *testing.T, doc string) Config {
	now := func() time.Time { return time.Unix(1_800_000_000, 0) }
	return Config{
		ResourceURL:        "https://mcp.example.com/mcp",
		Scopes:             []string{"openid", "email"},
		StaticClientID:     "static-id",
		StaticClientSecret: "static-secret",
		Metadata:           &staticMetadata{doc: rawDoc(t, doc), maxAge: time.Hour},
		RegisterLimiter:    testLimiter(t, DefaultRegisterPerIPPerMinute, now),
		ClientKey:          gate.ClientKey(nil),
		Now:                now,
	}
}

func register(t *testing.T, url, contentType, body string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+RegisterPath, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return do(t, req)
}

func TestRegister(t *testing.T) {
	logs := &testkit.LogBuffer{}
	cfg := registerConfig(t, providerDoc)
	cfg.Logger = testLogger(logs)
	s := newServer(t, cfg)
	if got := s.RegisterPath(); got != "/oauth/register" {
		t.Fatalf("RegisterPath() = %q", got)
	}
	ts := serve(t, s)
	res := register(t, ts.URL, "application/json; charset=utf-8", `{
		"client_name": "Claude",
		"redirect_uris": ["https://claude.ai/api/mcp/auth_callback"],
		"token_endpoint_auth_method": "none",
		"grant_types": ["authorization_code", "refresh_token"]
	}`)
	if res.status != http.StatusCreated {
		t.Fatalf("status %d, want 201: %s", res.status, res.body)
	}
	want := map[string]any{
		"client_id":                  "static-id",
		"client_secret":              "static-secret",
		"client_id_issued_at":        float64(1_800_000_000),
		"client_secret_expires_at":   float64(0),
		"token_endpoint_auth_method": "client_secret_basic",
		"grant_types":                []any{"authorization_code", "refresh_token"},
		"response_types":             []any{"code"},
		"redirect_uris":              []any{"https://claude.ai/api/mcp/auth_callback"},
		"client_name":                "Claude",
		"scope":                      "openid email",
	}
	if got := res.json(t); !reflect.DeepEqual(got, want) {
		t.Errorf("registration:\n got %v\nwant %v", got, want)
	}
	for h, want := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store", "Pragma": "no-cache"} {
		if got := res.header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	out := logs.String()
	if !strings.Contains(out, "Claude") || !strings.Contains(out, "https://claude.ai/api/mcp/auth_callback") {
		t.Errorf("registration not logged with client name and redirect URIs: %q", out)
	}
	if strings.Contains(out, "static-secret") {
		t.Errorf("the secret was logged: %q", out)
	}
}

func TestRegisterAuthMethod(t *testing.T) {
	for _, tc := range []struct {
		name      string
		supported string // the provider's token_endpoint_auth_methods_supported, "" for absent
		asked     string
		want      string
	}{
		{"post asked and supported", `["client_secret_basic","client_secret_post"]`, "client_secret_post", "client_secret_post"},
		{"basic asked and supported", `["client_secret_basic","client_secret_post"]`, "client_secret_basic", "client_secret_basic"},
		{"none asked: basic preferred", `["none","client_secret_post","client_secret_basic"]`, "none", "client_secret_basic"},
		{"post asked, only basic supported", `["client_secret_basic"]`, "client_secret_post", "client_secret_basic"},
		{"only post supported", `["client_secret_post","none"]`, "none", "client_secret_post"},
		{"absent means basic (RFC 8414)", "", "", "client_secret_basic"},
		{"post asked, absent list", "", "client_secret_post", "client_secret_basic"},
		{"neither supported: post, never none", `["none","private_key_jwt"]`, "none", "client_secret_post"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := `{"issuer":"https://idp.example.com"}`
			if tc.supported != "" {
				doc = `{"issuer":"https://idp.example.com","token_endpoint_auth_methods_supported":` + tc.supported + `}`
			}
			ts := serve(t, newServer(t, registerConfig(t, doc)))
			body, _ := json.Marshal(map[string]any{"redirect_uris": []string{"http://127.0.0.1:3000/cb"}, "token_endpoint_auth_method": tc.asked})
			res := register(t, ts.URL, "application/json", string(body))
			if res.status != http.StatusCreated {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			if got := res.json(t)["token_endpoint_auth_method"]; got != tc.want {
				t.Errorf("token_endpoint_auth_method = %v, want %s", got, tc.want)
			}
		})
	}
}

// TestRegisterScopeAsTheMetadata: the registration answer's scope is the
// metadata's scopes_supported: offline_access only when the provider
// lists it. Before, it named offline_access whatever the provider said,
// and a client that asked for it failed its login.
func TestRegisterScopeAsTheMetadata(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{`{"issuer":"https://idp.example.com","scopes_supported":["openid"]}`, "openid email"},
		{`{"issuer":"https://idp.example.com"}`, "openid email"},
		{`{"issuer":"https://idp.example.com","scopes_supported":["openid","offline_access"]}`, "openid email offline_access"},
	} {
		cfg := registerConfig(t, tc.doc)
		cfg.Scopes = []string{"openid", "email", "offline_access"}
		ts := serve(t, newServer(t, cfg))
		res := register(t, ts.URL, "application/json", `{"redirect_uris":["http://127.0.0.1:3000/cb"]}`)
		if got := res.json(t)["scope"]; got != tc.want {
			t.Errorf("provider %s: scope %v, want %q", tc.doc, got, tc.want)
		}
	}
}

func TestRegisterRejects(t *testing.T) {
	for _, tc := range []struct {
		name        string
		contentType string
		body        string
		code        string
	}{
		{"malformed JSON", "application/json", `{"client_name":`, "invalid_client_metadata"},
		{"trailing garbage", "application/json", `{} {}`, "invalid_client_metadata"},
		{"wrong content type", "application/x-www-form-urlencoded", `client_name=x`, "invalid_client_metadata"},
		{"text/plain JSON", "text/plain", `{}`, "invalid_client_metadata"},
		{"no content type", "", `{}`, "invalid_client_metadata"},
		{"too large", "application/json", `{"client_name":"` + strings.Repeat("a", 64<<10) + `"}`, "invalid_client_metadata"},
		{"array", "application/json", `[{"client_name":"x"}]`, "invalid_client_metadata"},
		{"string", "application/json", `"x"`, "invalid_client_metadata"},
		{"null", "application/json", `null`, "invalid_client_metadata"},
		{"redirect_uris not an array", "application/json", `{"redirect_uris":"https://claude.ai/cb"}`, "invalid_client_metadata"},
		{"redirect_uris of numbers", "application/json", `{"redirect_uris":[1]}`, "invalid_client_metadata"},
		{"relative redirect uri", "application/json", `{"redirect_uris":["/cb"]}`, "invalid_redirect_uri"},
		{"redirect uri with a fragment", "application/json", `{"redirect_uris":["https://claude.ai/cb#x"]}`, "invalid_redirect_uri"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := serve(t, newServer(t, registerConfig(t, providerDoc)))
			res := register(t, ts.URL, tc.contentType, tc.body)
			if res.status != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", res.status, res.body)
			}
			got := res.json(t)
			if got["error"] != tc.code {
				t.Errorf("error = %v, want %s", got["error"], tc.code)
			}
			if d, _ := got["error_description"].(string); d == "" {
				t.Errorf("no error_description: %v", got)
			}
			if strings.Contains(string(res.body), "static-secret") {
				t.Errorf("an error leaked the secret: %s", res.body)
			}
		})
	}
}

func TestRegisterRedirectAllowList(t *testing.T) {
	allow := []string{
		"https://claude.ai/api/mcp/auth_callback",
		"http://127.0.0.1:*",
		"http://localhost:*/oauth/callback",
		"http://[::1]:*",
	}
	for _, tc := range []struct {
		name string
		uris []string
		ok   bool
	}{
		{"exact", []string{"https://claude.ai/api/mcp/auth_callback"}, true},
		{"exact with another path", []string{"https://claude.ai/api/mcp/auth_callback/x"}, false},
		{"exact with a query added", []string{"https://claude.ai/api/mcp/auth_callback?x=1"}, false},
		{"exact on another host", []string{"https://claude.com/api/mcp/auth_callback"}, false},
		{"loopback any port", []string{"http://127.0.0.1:53682/callback"}, true},
		{"loopback another port", []string{"http://127.0.0.1:6274/oauth/callback/debug?x=1"}, true},
		{"loopback without a port", []string{"http://127.0.0.1/cb"}, true},
		{"loopback over https", []string{"https://127.0.0.1:8080/cb"}, false},
		{"loopback lookalike host", []string{"http://127.0.0.1.evil.com:8080/cb"}, false},
		{"loopback with user info", []string{"http://127.0.0.1:8080@evil.com/cb"}, false},
		{"another loopback address", []string{"http://127.0.0.2:8080/cb"}, false},
		{"localhost with the path", []string{"http://localhost:6274/oauth/callback"}, true},
		{"localhost in capitals", []string{"http://LOCALHOST:6274/oauth/callback"}, true},
		{"localhost with another path", []string{"http://localhost:6274/other"}, false},
		{"localhost with a query", []string{"http://localhost:6274/oauth/callback?x=1"}, false},
		{"localhost subdomain", []string{"http://a.localhost:6274/oauth/callback"}, false},
		{"ipv6 loopback", []string{"http://[::1]:9000/cb"}, true},
		{"custom scheme", []string{"cursor://anysphere.cursor-retrieval/oauth/callback"}, false},
		{"one bad among good", []string{"http://127.0.0.1:1/cb", "https://evil.example/cb"}, false},
		{"none given", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := registerConfig(t, providerDoc)
			cfg.RedirectURIs = allow
			ts := serve(t, newServer(t, cfg))
			body, _ := json.Marshal(map[string]any{"redirect_uris": tc.uris})
			res := register(t, ts.URL, "application/json", string(body))
			if tc.ok {
				if res.status != http.StatusCreated {
					t.Fatalf("status %d, want 201: %s", res.status, res.body)
				}
				got, _ := json.Marshal(res.json(t)["redirect_uris"])
				want, _ := json.Marshal(tc.uris)
				if string(got) != string(want) {
					t.Errorf("redirect_uris = %s, want %s echoed", got, want)
				}
				return
			}
			if res.status != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", res.status, res.body)
			}
			if got := res.json(t)["error"]; got != "invalid_redirect_uri" {
				t.Errorf("error = %v, want invalid_redirect_uri", got)
			}
		})
	}
}

// Without an allow-list the safe shapes pass (TestRegisterRedirectAttacks
// has the refused ones).
func TestRegisterSafeRedirectsWithoutAllowList(t *testing.T) {
	ts := serve(t, newServer(t, registerConfig(t, providerDoc)))
	for _, body := range []string{
		`{"redirect_uris":["com.example.app:/oauth/callback","https://x.example/cb"]}`,
		`{"client_name":"no redirects"}`,
	} {
		if res := register(t, ts.URL, "application/json", body); res.status != http.StatusCreated {
			t.Errorf("%s: status %d, want 201: %s", body, res.status, res.body)
		}
	}
}

func TestRegisterClientNameOnlyString(t *testing.T) {
	ts := serve(t, newServer(t, registerConfig(t, providerDoc)))
	res := register(t, ts.URL, "application/json", `{"client_name":{"x":1},"redirect_uris":["https://a.example/cb"]}`)
	if res.status != http.StatusCreated {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
	if _, ok := res.json(t)["client_name"]; ok {
		t.Errorf("a non-string client_name was echoed: %s", res.body)
	}
}

func TestRegisterRateLimit(t *testing.T) {
	clk := testkit.NewClock(time.Unix(1_800_000_000, 0))
	cfg := registerConfig(t, providerDoc)
	cfg.Now = clk.Now
	cfg.RegisterLimiter = testLimiter(t, 3, clk.Now)
	var ip atomic.Value
	ip.Store("192.0.2.1")
	cfg.ClientKey = func(*http.Request) string { return ip.Load().(string) }
	ts := serve(t, newServer(t, cfg))
	ok := func() int {
		return register(t, ts.URL, "application/json", `{"redirect_uris":["https://a.example/cb"]}`).status
	}
	for i := range 3 { // the burst
		if got := ok(); got != http.StatusCreated {
			t.Fatalf("registration %d: status %d, want 201", i+1, got)
		}
	}
	res := register(t, ts.URL, "application/json", `{}`)
	if res.status != http.StatusTooManyRequests {
		t.Fatalf("over the limit: status %d, want 429", res.status)
	}
	if got := res.header.Get("Retry-After"); got != "20" {
		t.Errorf("Retry-After = %q, want 20 (one token per 20 s)", got)
	}
	if got := res.json(t)["error"]; got == nil {
		t.Errorf("429 without a JSON error: %s", res.body)
	}
	ip.Store("192.0.2.2") // another client is not affected
	if got := ok(); got != http.StatusCreated {
		t.Errorf("another client: status %d, want 201", got)
	}
	ip.Store("192.0.2.1")
	clk.Advance(19 * time.Second)
	if got := ok(); got != http.StatusTooManyRequests {
		t.Errorf("after 19 s: status %d, want 429", got)
	}
	clk.Advance(time.Second)
	if got := ok(); got != http.StatusCreated {
		t.Errorf("after 20 s: status %d, want 201", got)
	}
}

func TestRegisterRateLimitByRemoteAddr(t *testing.T) {
	clk := testkit.NewClock(time.Unix(1_800_000_000, 0))
	cfg := registerConfig(t, providerDoc)
	cfg.Now = clk.Now
	cfg.RegisterLimiter = testLimiter(t, 1, clk.Now)
	h := newServer(t, cfg).Register()
	post := func(remote string) int {
		req := httptest.NewRequest(http.MethodPost, RegisterPath, strings.NewReader(`{}`))
		req.Header.Set("Content-Type", "application/json")
		req.RemoteAddr = remote
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	for _, tc := range []struct {
		remote string
		want   int
	}{
		{"192.0.2.1:1000", http.StatusCreated},
		{"192.0.2.1:2000", http.StatusTooManyRequests}, // same host, another port
		{"[2001:db8:1:2::1]:1000", http.StatusCreated},
		{"[2001:db8:1:2::99]:1000", http.StatusTooManyRequests}, // same /64
		{"[2001:db8:1:3::1]:1000", http.StatusCreated},
	} {
		if got := post(tc.remote); got != tc.want {
			t.Errorf("from %s: status %d, want %d", tc.remote, got, tc.want)
		}
	}
}

func TestRegisterMethodAndProvider(t *testing.T) {
	cfg := registerConfig(t, providerDoc)
	ts := serve(t, newServer(t, cfg))
	res := get(t, ts.URL+RegisterPath)
	if res.status != http.StatusMethodNotAllowed || res.header.Get("Allow") != "POST" {
		t.Errorf("GET: status %d, Allow %q; want 405, POST", res.status, res.header.Get("Allow"))
	}

	cfg.Metadata = &staticMetadata{} // the provider never answered
	ts = serve(t, newServer(t, cfg))
	res = register(t, ts.URL, "application/json", `{"redirect_uris":["https://a.example/cb"]}`)
	if res.status != http.StatusBadGateway || res.json(t)["error"] != "temporarily_unavailable" {
		t.Errorf("never fetched: status %d %s, want 502 temporarily_unavailable", res.status, res.body)
	}
}

func TestNoStaticClientNoRegistration(t *testing.T) {
	cfg := registerConfig(t, providerDoc)
	cfg.StaticClientID, cfg.StaticClientSecret = "", ""
	s := newServer(t, cfg)
	if got := s.RegisterPath(); got != "" {
		t.Errorf("RegisterPath() = %q, want none", got)
	}
	ts := serve(t, s)
	if res := register(t, ts.URL, "application/json", `{}`); res.status != http.StatusNotFound {
		t.Errorf("POST %s: status %d, want 404", RegisterPath, res.status)
	}
}

// TestTruncateWholeCharacters: a value cut for the log keeps whole
// characters (a cut inside one shows as U+FFFD).
func TestTruncateWholeCharacters(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdef", 3, "abc..."},
		{"a\u00e9\u00e9", 2, "a..."},
		{"a\u00e9\u00e9", 3, "a\u00e9..."},
		{"\u20ac\u20ac", 4, "\u20ac..."},
		{"\u00e9", 1, "..."},
	} {
		if got := truncate(tc.s, tc.n); got != tc.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}
