package wellknown

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// TestRegisterRedirectAttacks is the registration row of the attack
// matrix: without REGISTER_REDIRECT_URIS, /oauth/register accepts only https
// URIs, http URIs on a loopback host (RFC 8252 §7.3) and private-use
// schemes in reverse domain form (RFC 8252 §7.1); anything else is 400
// invalid_redirect_uri, and the static client's secret is not handed out.
func TestRegisterRedirectAttacks(t *testing.T) {
	for _, tc := range []struct {
		name string
		uri  string
		ok   bool
	}{
		{"https", "https://claude.ai/api/mcp/auth_callback", true},
		{"https with a port and query", "https://app.example.com:8443/cb?x=1", true},
		{"http on 127.0.0.1", "http://127.0.0.1:53682/callback", true},
		{"http on ipv6 loopback", "http://[::1]:9000/cb", true},
		{"http on localhost (MCP Inspector)", "http://localhost:6274/oauth/callback/debug", true},
		{"http on localhost in capitals", "http://LOCALHOST:6274/oauth/callback", true},
		{"http on loopback without a port", "http://127.0.0.1/cb", true},
		{"private-use scheme in reverse domain form", "com.example.app:/oauth2redirect/example-provider", true},

		{"javascript", "javascript:alert(document.cookie)", false},
		{"javascript in capitals", "JAVASCRIPT:alert(1)", false},
		{"javascript with slashes", "javascript://%0aalert(1)", false},
		{"data", "data:text/html,<script>alert(1)</script>", false},
		{"vbscript", "vbscript:msgbox(1)", false},
		{"file", "file:///etc/passwd", false},
		{"blob", "blob:https://claude.ai/1234", false},
		{"private-use scheme without a dot", "cursor://anysphere.cursor-retrieval/oauth/callback", false},
		{"http on another host", "http://evil.example/cb", false},
		{"http on a loopback lookalike", "http://127.0.0.1.evil.example/cb", false},
		{"http on another loopback address", "http://127.0.0.2/cb", false},
		{"http on a subdomain of localhost", "http://evil.localhost/cb", false},
		{"http on localhost spelled with a long s", "http://localho\u017Ft/cb", false},
		{"http on loopback with a bad port", "http://127.0.0.1:99999/cb", false},
		{"https with user information", "https://claude.ai@evil.example/cb", false},
		{"http on loopback with user information", "http://127.0.0.1:8080@evil.example/cb", false},
		{"https without a host", "https:///cb", false},
		{"https opaque", "https:evil.example", false},
		{"https on a look-alike host", "https://cl\u0430ude.ai/api/mcp/auth_callback", false},
		{"https on a look-alike host, percent-encoded", "https://cl%D0%B0ude.ai/api/mcp/auth_callback", false},
		{"https on a host reversed by U+202E", "https://evil\u202eia.edualc/cb", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := serve(t, newServer(t, registerConfig(t, providerDoc))) // registrations are limited per address
			body, _ := json.Marshal(map[string]any{"redirect_uris": []string{tc.uri}})
			res := register(t, ts.URL, "application/json", string(body))
			if tc.ok {
				if res.status != http.StatusCreated {
					t.Fatalf("status %d, want 201: %s", res.status, res.body)
				}
				return
			}
			if res.status != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", res.status, res.body)
			}
			if got := res.json(t)["error"]; got != "invalid_redirect_uri" {
				t.Errorf("error = %v, want invalid_redirect_uri", got)
			}
			if _, ok := res.json(t)["client_secret"]; ok {
				t.Errorf("a refused registration handed out the client secret: %s", res.body)
			}
		})
	}
}

// TestRegisterRedirectPatternFolding: a REGISTER_REDIRECT_URIS loopback
// pattern matches its host with ASCII letters folded only, never a host
// that Unicode case folding would call the same (U+017F LONG S is not "s").
func TestRegisterRedirectPatternFolding(t *testing.T) {
	cfg := registerConfig(t, providerDoc)
	cfg.RedirectURIs = []string{"http://localhost:*"}
	ts := serve(t, newServer(t, cfg))
	for _, tc := range []struct {
		uri  string
		want int
	}{
		{"http://LocalHost:6274/cb", http.StatusCreated},
		{"http://localho\u017Ft:6274/cb", http.StatusBadRequest},
	} {
		body, _ := json.Marshal(map[string]any{"redirect_uris": []string{tc.uri}})
		if res := register(t, ts.URL, "application/json", string(body)); res.status != tc.want {
			t.Errorf("%s: status %d, want %d: %s", tc.uri, res.status, tc.want, res.body)
		}
	}
}

// TestRegisterRedirectSchemes: REGISTER_REDIRECT_SCHEMES lets Cursor's
// registration through in facade mode (its three redirect URIs in one
// request, one of them cursor://, which has no dot); a scheme it does not
// list stays refused, and the refusal is logged with the URI and why.
func TestRegisterRedirectSchemes(t *testing.T) {
	cursor := []string{
		"cursor://anysphere.cursor-mcp/oauth/callback",
		"https://www.cursor.com/agents/mcp/oauth/callback",
		"http://localhost:8787/callback",
	}
	logs := &testkit.LogBuffer{}
	cfg := registerConfig(t, providerDoc)
	cfg.RedirectSchemes = []string{"cursor"}
	cfg.Logger = testLogger(logs)
	ts := serve(t, newServer(t, cfg))
	for _, tc := range []struct {
		name string
		uris []string
		ok   bool
	}{
		{"cursor's registration", cursor, true},
		{"a scheme not listed", []string{"windsurf://codeium.windsurf/oauth/callback"}, false},
		{"the listed scheme with nothing after it", []string{"cursor:"}, false},
		{"javascript beside cursor's", append([]string{"javascript://%0aalert(1)"}, cursor...), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, _ := json.Marshal(map[string]any{"redirect_uris": tc.uris})
			res := register(t, ts.URL, "application/json", string(body))
			if tc.ok != (res.status == http.StatusCreated) {
				t.Fatalf("status %d, want accepted %v: %s", res.status, tc.ok, res.body)
			}
			if !tc.ok && !strings.Contains(logs.String(), `registration refused: error=invalid_redirect_uri reason="redirect uri \"`+tc.uris[0]) {
				t.Errorf("no log line names the refused uri %q:\n%s", tc.uris[0], logs.String())
			}
		})
	}
}
