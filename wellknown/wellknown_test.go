package wellknown

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// staticMetadata is a provider discovery document held as a value: doc nil
// means never fetched.
type staticMetadata struct {
	doc    map[string]json.RawMessage
	maxAge time.Duration
}

func (m *staticMetadata) Metadata() (map[string]json.RawMessage, error) {
	if m.doc == nil {
		return nil, errors.New("not fetched")
	}
	return m.doc, nil
}

func (m *staticMetadata) MetadataMaxAge() time.Duration { return m.maxAge }

// rawDoc turns a JSON object into the provider's raw form.
func rawDoc(t *testing.T, js string) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(js), &m); err != nil {
		t.Fatalf("raw doc: %v", err)
	}
	return m
}

const providerDoc = `{
	"issuer": "https://idp.example.com/realms/x",
	"authorization_endpoint": "https://idp.example.com/realms/x/auth",
	"token_endpoint": "https://idp.example.com/realms/x/token",
	"jwks_uri": "https://idp.example.com/realms/x/certs",
	"response_types_supported": ["code"],
	"scopes_supported": ["openid", "roles"],
	"token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
	"authorization_response_iss_parameter_supported": true,
	"signed_metadata": "eyJhbGciOiJSUzI1NiJ9.eyJpc3N1ZXIiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbS9yZWFsbXMveCJ9.c2ln",
	"x_vendor": {"nested": [1, 2]}
}`

// serve routes exactly the paths s says it serves, as the gate does; any
// other path is a 404.
func serve(t *testing.T, s *Server) *httptest.Server {
	t.Helper()
	routes := map[string]http.Handler{}
	for _, p := range s.ProtectedResourcePaths() {
		routes[p] = s.ProtectedResource()
	}
	for _, p := range s.AuthorizationServerPaths() {
		routes[p] = s.AuthorizationServer()
	}
	if p := s.RegisterPath(); p != "" {
		routes[p] = s.Register()
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h, ok := routes[r.URL.Path]; ok {
			h.ServeHTTP(w, r)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts
}

func newServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
	return m
}

func do(t *testing.T, req *http.Request) response {
	t.Helper()
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return response{res.StatusCode, res.Header, b}
}

func get(t *testing.T, url string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

// decodeJSON normalises a JSON literal for comparison with a response.
func decodeJSON(t *testing.T, js string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(js), &m); err != nil {
		t.Fatalf("decode want: %v", err)
	}
	return m
}

func defaultScopes() []string { return []string{"openid", "profile", "email", "offline_access"} }

func TestProtectedResource(t *testing.T) {
	for _, tc := range []struct {
		name        string
		cfg         Config
		paths       []string
		metadataURL string
		want        string
	}{
		{
			name:        "facade without a path",
			cfg:         Config{ResourceURL: "https://mcp.example.com", Mode: ModeFacade},
			paths:       []string{"/.well-known/oauth-protected-resource"},
			metadataURL: "https://mcp.example.com/.well-known/oauth-protected-resource",
			want: `{"resource":"https://mcp.example.com","authorization_servers":["https://mcp.example.com"],
				"scopes_supported":["openid","profile","email"],"bearer_methods_supported":["header"]}`,
		},
		{
			name:        "facade with a path and a port",
			cfg:         Config{ResourceURL: "https://mcp.example.com:8443/mcp"},
			paths:       []string{"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"},
			metadataURL: "https://mcp.example.com:8443/.well-known/oauth-protected-resource/mcp",
			want: `{"resource":"https://mcp.example.com:8443/mcp","authorization_servers":["https://mcp.example.com:8443"],
				"scopes_supported":["openid","profile","email"],"bearer_methods_supported":["header"]}`,
		},
		{
			name:        "root path only",
			cfg:         Config{ResourceURL: "https://mcp.example.com/"},
			paths:       []string{"/.well-known/oauth-protected-resource"},
			metadataURL: "https://mcp.example.com/.well-known/oauth-protected-resource",
			want: `{"resource":"https://mcp.example.com/","authorization_servers":["https://mcp.example.com"],
				"scopes_supported":["openid","profile","email"],"bearer_methods_supported":["header"]}`,
		},
		{
			name: "trailing slash served both ways",
			cfg:  Config{ResourceURL: "https://mcp.example.com/a/mcp/"},
			paths: []string{"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/a/mcp/",
				"/.well-known/oauth-protected-resource/a/mcp"},
			metadataURL: "https://mcp.example.com/.well-known/oauth-protected-resource/a/mcp/",
			want: `{"resource":"https://mcp.example.com/a/mcp/","authorization_servers":["https://mcp.example.com"],
				"scopes_supported":["openid","profile","email"],"bearer_methods_supported":["header"]}`,
		},
		{
			name:        "direct names the configured issuer",
			cfg:         Config{ResourceURL: "https://mcp.example.com/mcp", Mode: ModeDirect, IssuerURL: "https://idp.example.com/realms/x"},
			paths:       []string{"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"},
			metadataURL: "https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
			want: `{"resource":"https://mcp.example.com/mcp","authorization_servers":["https://idp.example.com/realms/x"],
				"scopes_supported":["openid","profile","email"],"bearer_methods_supported":["header"]}`,
		},
		{
			name: "direct prefers the issuer of the provider's document",
			cfg: Config{ResourceURL: "https://mcp.example.com/mcp", Mode: ModeDirect, IssuerURL: "https://idp.example.com/realms/x/",
				Metadata: &staticMetadata{doc: map[string]json.RawMessage{"issuer": json.RawMessage(`"https://idp.example.com/realms/x"`)}}},
			paths:       []string{"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"},
			metadataURL: "https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
			want: `{"resource":"https://mcp.example.com/mcp","authorization_servers":["https://idp.example.com/realms/x"],
				"scopes_supported":["openid","profile","email"],"bearer_methods_supported":["header"]}`,
		},
		{
			name:        "direct before the provider answered",
			cfg:         Config{ResourceURL: "https://mcp.example.com/mcp", Mode: ModeDirect, IssuerURL: "https://idp.example.com/realms/x/", Metadata: &staticMetadata{}},
			paths:       []string{"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"},
			metadataURL: "https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
			want: `{"resource":"https://mcp.example.com/mcp","authorization_servers":["https://idp.example.com/realms/x/"],
				"scopes_supported":["openid","profile","email"],"bearer_methods_supported":["header"]}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Scopes = defaultScopes()
			if cfg.Mode != ModeDirect {
				cfg.Metadata = &staticMetadata{doc: rawDoc(t, providerDoc), maxAge: time.Hour}
			}
			s := newServer(t, cfg)
			if got := s.ProtectedResourcePaths(); !reflect.DeepEqual(got, tc.paths) {
				t.Errorf("ProtectedResourcePaths() = %q, want %q", got, tc.paths)
			}
			if got := s.ResourceMetadataURL(); got != tc.metadataURL {
				t.Errorf("ResourceMetadataURL() = %q, want %q", got, tc.metadataURL)
			}
			ts := serve(t, s)
			for _, p := range tc.paths {
				req, _ := http.NewRequest(http.MethodGet, ts.URL+p, nil)
				req.Host = "evil.example" // never used to build the document
				req.Header.Set("X-Forwarded-Host", "evil.example")
				req.Header.Set("X-Forwarded-Proto", "http")
				res := do(t, req)
				if res.status != http.StatusOK {
					t.Fatalf("GET %s: status %d, want 200", p, res.status)
				}
				if got, want := res.json(t), decodeJSON(t, tc.want); !reflect.DeepEqual(got, want) {
					t.Errorf("GET %s:\n got %v\nwant %v", p, got, want)
				}
				if got := res.header.Get("Content-Type"); got != "application/json" {
					t.Errorf("Content-Type = %q", got)
				}
				if got := res.header.Get("Cache-Control"); got != "public, max-age=3600" {
					t.Errorf("Cache-Control = %q", got)
				}
			}
			// The metadata URL advertised in challenges is one of those served.
			if res := get(t, ts.URL+strings.TrimPrefix(tc.metadataURL, s.origin)); res.status != http.StatusOK {
				t.Errorf("GET ResourceMetadataURL path: status %d", res.status)
			}
			if res := get(t, ts.URL+"/.well-known/oauth-protected-resource/other"); res.status != http.StatusNotFound {
				t.Errorf("GET other suffix: status %d, want 404", res.status)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	md := &staticMetadata{doc: rawDoc(t, providerDoc)}
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"relative resource url", Config{ResourceURL: "/mcp", Metadata: md}},
		{"unknown mode", Config{ResourceURL: "https://mcp.example.com", Mode: "proxy", Metadata: md}},
		{"facade without metadata", Config{ResourceURL: "https://mcp.example.com"}},
		{"direct without issuer", Config{ResourceURL: "https://mcp.example.com", Mode: ModeDirect}},
		{"static client id without secret", Config{ResourceURL: "https://mcp.example.com", Metadata: md, StaticClientID: "id"}},
		{"static client in direct mode", Config{ResourceURL: "https://mcp.example.com", Mode: ModeDirect, IssuerURL: "https://idp.example.com",
			StaticClientID: "id", StaticClientSecret: "secret"}},
		{"wildcard on another host", Config{ResourceURL: "https://mcp.example.com", Metadata: md, RedirectURIs: []string{"http://example.com:*"}}},
		{"relative redirect uri", Config{ResourceURL: "https://mcp.example.com", Metadata: md, RedirectURIs: []string{"/callback"}}},
		{"query after a loopback pattern", Config{ResourceURL: "https://mcp.example.com", Metadata: md, RedirectURIs: []string{"http://127.0.0.1:*?x"}}},
		{"register limiter without a client key", Config{ResourceURL: "https://mcp.example.com", Metadata: md, RegisterLimiter: testLimiter(t, 1, nil)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil {
				t.Errorf("New accepted %+v", tc.cfg)
			}
		})
	}
}

func TestAuthorizationServer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		doc    string // provider's discovery document
		static bool
		scopes []string
		want   string
	}{
		{
			name:   "rewritten with S256 added and static registration",
			doc:    providerDoc,
			static: true,
			scopes: defaultScopes(),
			want: `{
				"issuer": "https://mcp.example.com",
				"authorization_endpoint": "https://idp.example.com/realms/x/auth",
				"token_endpoint": "https://idp.example.com/realms/x/token",
				"jwks_uri": "https://idp.example.com/realms/x/certs",
				"response_types_supported": ["code"],
				"scopes_supported": ["openid", "profile", "email"],
				"token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
				"code_challenge_methods_supported": ["S256"],
				"registration_endpoint": "https://mcp.example.com/oauth/register",
				"x_vendor": {"nested": [1, 2]}
			}`,
		},
		{
			name: "S256 present is not repeated; provider registration kept",
			doc: `{"issuer":"https://idp.example.com","authorization_endpoint":"https://idp.example.com/a","token_endpoint":"https://idp.example.com/t",
				"code_challenge_methods_supported":["plain","S256"],"registration_endpoint":"https://idp.example.com/reg","scopes_supported":["openid"]}`,
			scopes: defaultScopes(),
			want: `{"issuer":"https://mcp.example.com","authorization_endpoint":"https://idp.example.com/a","token_endpoint":"https://idp.example.com/t",
				"code_challenge_methods_supported":["plain","S256"],"registration_endpoint":"https://idp.example.com/reg",
				"scopes_supported":["openid","profile","email"]}`,
		},
		{
			name:   "offline_access kept when the provider lists it",
			doc:    `{"issuer":"https://idp.example.com","code_challenge_methods_supported":["S256"],"scopes_supported":["openid","offline_access"]}`,
			scopes: append(defaultScopes(), "files:write"),
			want: `{"issuer":"https://mcp.example.com","code_challenge_methods_supported":["S256"],
				"scopes_supported":["openid","profile","email","offline_access","files:write"]}`,
		},
		{
			name: "S256 appended to other methods; static registration replaces the provider's",
			doc: `{"issuer":"https://idp.example.com","code_challenge_methods_supported":["plain"],
				"registration_endpoint":"https://idp.example.com/reg"}`,
			static: true,
			scopes: []string{"mcp"},
			want: `{"issuer":"https://mcp.example.com","code_challenge_methods_supported":["plain","S256"],
				"registration_endpoint":"https://mcp.example.com/oauth/register","scopes_supported":["mcp"]}`,
		},
		{
			name: "no configured scopes keeps the provider's",
			doc:  `{"issuer":"https://idp.example.com","scopes_supported":["openid"],"code_challenge_methods_supported":"S256"}`,
			want: `{"issuer":"https://mcp.example.com","scopes_supported":["openid"],"code_challenge_methods_supported":["S256"]}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{
				ResourceURL: "https://mcp.example.com/mcp",
				Scopes:      tc.scopes,
				Metadata:    &staticMetadata{doc: rawDoc(t, tc.doc), maxAge: 90 * time.Minute},
			}
			if tc.static {
				cfg.StaticClientID, cfg.StaticClientSecret = "static-id", "static-secret"
			}
			s := newServer(t, cfg)
			if got, want := s.AuthorizationServerPaths(), []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"}; !reflect.DeepEqual(got, want) {
				t.Errorf("AuthorizationServerPaths() = %q, want %q", got, want)
			}
			ts := serve(t, s)
			var bodies [][]byte
			for _, p := range s.AuthorizationServerPaths() {
				req, _ := http.NewRequest(http.MethodGet, ts.URL+p, nil)
				req.Host = "evil.example"
				req.Header.Set("X-Forwarded-Host", "evil.example")
				res := do(t, req)
				if res.status != http.StatusOK {
					t.Fatalf("GET %s: status %d: %s", p, res.status, res.body)
				}
				if got, want := res.json(t), decodeJSON(t, tc.want); !reflect.DeepEqual(got, want) {
					t.Errorf("GET %s:\n got %v\nwant %v", p, got, want)
				}
				if got := res.header.Get("Cache-Control"); got != "public, max-age=5400" {
					t.Errorf("Cache-Control = %q, want max-age of the provider's document", got)
				}
				if got := res.header.Get("Content-Type"); got != "application/json" {
					t.Errorf("Content-Type = %q", got)
				}
				bodies = append(bodies, res.body)
			}
			if !bytes.Equal(bodies[0], bodies[1]) {
				t.Errorf("the two paths serve different documents:\n%s\n%s", bodies[0], bodies[1])
			}
		})
	}
}

func TestAuthorizationServerFollowsNewDocument(t *testing.T) {
	md := &staticMetadata{doc: rawDoc(t, `{"issuer":"https://idp.example.com","token_endpoint":"https://idp.example.com/t1"}`), maxAge: time.Hour}
	s := newServer(t, Config{ResourceURL: "https://mcp.example.com", Metadata: md})
	ts := serve(t, s)
	if got := get(t, ts.URL+AuthorizationServerPath).json(t)["token_endpoint"]; got != "https://idp.example.com/t1" {
		t.Fatalf("token_endpoint = %v", got)
	}
	md.doc = rawDoc(t, `{"issuer":"https://idp.example.com","token_endpoint":"https://idp.example.com/t2"}`) // a refresh
	if got := get(t, ts.URL+AuthorizationServerPath).json(t)["token_endpoint"]; got != "https://idp.example.com/t2" {
		t.Errorf("after a new provider document, token_endpoint = %v, want t2", got)
	}
}

func TestAuthorizationServerNeverFetched(t *testing.T) {
	s := newServer(t, Config{ResourceURL: "https://mcp.example.com", Metadata: &staticMetadata{}})
	ts := serve(t, s)
	for _, p := range s.AuthorizationServerPaths() {
		res := get(t, ts.URL+p)
		if res.status != http.StatusBadGateway {
			t.Errorf("GET %s: status %d, want 502", p, res.status)
		}
		want := map[string]any{"error": "temporarily_unavailable", "error_description": "the authorization server's metadata could not be fetched"}
		if got := res.json(t); !reflect.DeepEqual(got, want) {
			t.Errorf("GET %s: body %v, want %v", p, got, want)
		}
		if res.header.Get("Retry-After") == "" {
			t.Errorf("GET %s: no Retry-After", p)
		}
		if got := res.header.Get("Content-Type"); got != "application/json" {
			t.Errorf("Content-Type = %q", got)
		}
	}
	// The protected-resource metadata does not depend on the provider.
	if res := get(t, ts.URL+ProtectedResourcePath); res.status != http.StatusOK {
		t.Errorf("protected resource metadata: status %d", res.status)
	}
}

func TestDirectServesNoAuthorizationServer(t *testing.T) {
	s := newServer(t, Config{ResourceURL: "https://mcp.example.com/mcp", Mode: ModeDirect, IssuerURL: "https://idp.example.com"})
	if got := s.AuthorizationServerPaths(); len(got) != 0 {
		t.Errorf("AuthorizationServerPaths() = %q, want none", got)
	}
	if got := s.RegisterPath(); got != "" {
		t.Errorf("RegisterPath() = %q, want none", got)
	}
	ts := serve(t, s)
	for _, p := range []string{AuthorizationServerPath, OpenIDConfigurationPath, RegisterPath} {
		if res := get(t, ts.URL+p); res.status != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", p, res.status)
		}
	}
}

// TestBrokerServesTheProtectedResourceAlone: in broker mode the broker
// serves the authorization-server metadata and registration; the
// protected-resource metadata names the gateway's origin, exactly as
// Origin gives it for the broker's issuer.
func TestBrokerServesTheProtectedResourceAlone(t *testing.T) {
	s := newServer(t, Config{ResourceURL: "https://MCP.example.com:8443/mcp", Mode: ModeBroker, Scopes: []string{"openid"}})
	if got := s.AuthorizationServerPaths(); len(got) != 0 {
		t.Errorf("AuthorizationServerPaths() = %q, want none", got)
	}
	if got := s.RegisterPath(); got != "" {
		t.Errorf("RegisterPath() = %q, want none", got)
	}
	if got, want := s.Origin(), "https://MCP.example.com:8443"; got != want {
		t.Errorf("Origin() = %q, want %q", got, want)
	}
	ts := serve(t, s)
	m := get(t, ts.URL+ProtectedResourcePath+"/mcp").json(t)
	if as, _ := m["authorization_servers"].([]any); len(as) != 1 || as[0] != s.Origin() {
		t.Errorf("authorization_servers = %v, want [%q]", m["authorization_servers"], s.Origin())
	}
	if _, err := New(Config{ResourceURL: "https://mcp.example.com", Mode: ModeBroker, StaticClientID: "id", StaticClientSecret: "s"}); err == nil {
		t.Error("New accepted a static client in broker mode")
	}
}

func TestDocCacheBuildsOncePerDocument(t *testing.T) {
	var c docCache
	builds := 0
	build := func(m map[string]json.RawMessage) ([]byte, error) {
		builds++
		return []byte(m["v"]), nil
	}
	a := map[string]json.RawMessage{"v": json.RawMessage(`1`)}
	b := map[string]json.RawMessage{"v": json.RawMessage(`2`)}
	for range 100 {
		if got, _ := c.get(a, build); string(got) != "1" {
			t.Fatalf("got %s, want 1", got)
		}
	}
	if got, _ := c.get(b, build); string(got) != "2" {
		t.Fatalf("got %s, want 2", got)
	}
	if builds != 2 {
		t.Errorf("builds = %d, want 2 (one per document)", builds)
	}
}

func TestAuthorizationServerConcurrent(t *testing.T) {
	md := &staticMetadata{doc: rawDoc(t, providerDoc), maxAge: time.Hour}
	s := newServer(t, Config{ResourceURL: "https://mcp.example.com", Metadata: md})
	h := s.AuthorizationServer()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, AuthorizationServerPath, nil))
				if rec.Code != http.StatusOK {
					t.Errorf("status %d", rec.Code)
					return
				}
			}
		})
	}
	wg.Wait()
}

func testLogger(out io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "wellknown", Output: out, Level: hclog.Debug})
}
