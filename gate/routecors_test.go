package gate

import (
	"io"
	"net/http"
	"testing"
)

// TestRouteCORSPolicies: a public route answers browsers by its own
// policy. Endpoints that read no cookie are open to any origin without
// credentials; the gateway's own pages and forms only to its own origin
// (testMetadataURL's, https://mcp.example.com); everything else, the MCP
// endpoint included, keeps CORSOrigins.
func TestRouteCORSPolicies(t *testing.T) {
	env := newIssuer(t)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	s := newSetup(t, env, nil, func(c *Config) {
		c.Public = append(c.Public,
			Route{Method: http.MethodPost, Path: "/oauth/token", Handler: ok, CORS: CORSAnyOrigin},
			Route{Method: http.MethodPost, Path: "/oauth/consent", Handler: ok, CORS: CORSSameOrigin},
			Route{Method: http.MethodGet, Path: "/oauth/authorize", Handler: ok, CORS: CORSSameOrigin},
		)
	})
	preflight := func(origin string) http.Header {
		return http.Header{"Origin": {origin}, "Access-Control-Request-Method": {"POST"}, "Access-Control-Request-Headers": {"content-type"}}
	}
	for _, tt := range []struct {
		name, method, path string
		header             http.Header
		wantStatus         int
		wantACAO           string
	}{
		{"token from any origin", "POST", "/oauth/token", http.Header{"Origin": {"http://localhost:6274"}}, 200, "*"},
		{"token preflight from any origin", "OPTIONS", "/oauth/token", preflight("https://inspector.example"), 204, "*"},
		{"token without origin", "POST", "/oauth/token", http.Header{}, 200, ""},
		{"consent from the gateway's own page", "POST", "/oauth/consent", http.Header{"Origin": {"https://mcp.example.com"}}, 200, "https://mcp.example.com"},
		{"consent from an allowed MCP origin", "POST", "/oauth/consent", http.Header{"Origin": {"https://claude.ai"}}, 403, ""},
		{"consent from elsewhere", "POST", "/oauth/consent", http.Header{"Origin": {"https://evil.example"}}, 403, ""},
		{"consent with an opaque origin", "POST", "/oauth/consent", http.Header{"Origin": {"null"}}, 403, ""},
		{"consent preflight from elsewhere", "OPTIONS", "/oauth/consent", preflight("https://evil.example"), 403, ""},
		{"authorize by navigation", "GET", "/oauth/authorize", http.Header{}, 200, ""},
		{"authorize fetched from an allowed MCP origin", "GET", "/oauth/authorize", http.Header{"Origin": {"https://claude.ai"}}, 403, ""},
		{"metadata keeps CORSOrigins", "GET", "/.well-known/oauth-protected-resource", http.Header{"Origin": {"https://evil.example"}}, 403, ""},
		{"the MCP endpoint keeps CORSOrigins", "POST", "/mcp", http.Header{"Origin": {"https://mcp.example.com"}}, 403, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, _ := s.do(t, tt.method, tt.path, tt.header, nil)
			if got := resp.StatusCode; got != tt.wantStatus {
				t.Fatalf("status: got %d, want %d", got, tt.wantStatus)
			}
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != tt.wantACAO {
				t.Errorf("Access-Control-Allow-Origin: got %q, want %q", got, tt.wantACAO)
			}
			if got := resp.Header.Get("Access-Control-Allow-Credentials"); got != "" {
				t.Errorf("Access-Control-Allow-Credentials: got %q, want none", got)
			}
		})
	}
}

func TestRouteCORSPolicyConflicts(t *testing.T) {
	env := newIssuer(t)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	for _, routes := range [][]Route{
		{{Method: "GET", Path: "/x", Handler: ok, CORS: CORSAnyOrigin}, {Method: "POST", Path: "/x", Handler: ok}},
		{{Method: "GET", Path: "/x", Handler: ok}, {Method: "POST", Path: "/x", Handler: ok, CORS: CORSSameOrigin}},
		{{Method: "GET", Path: "/x", Handler: ok, CORS: "sometimes"}},
	} {
		cfg := Config{Verifier: env.p, Upstream: Static(nil), ResourceMetadataURL: testMetadataURL, Public: routes}
		if _, err := New(cfg); err == nil {
			t.Errorf("New accepted %+v", routes)
		}
	}
}
