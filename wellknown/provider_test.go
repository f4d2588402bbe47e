package wellknown

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/devissuer"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// startProvider serves an in-process issuer on 127.0.0.1 and runs a real
// provider against it until the test ends.
func startProvider(t *testing.T, down bool) (*devissuer.Issuer, *provider.Provider) {
	t.Helper()
	is := testkit.StartIssuer(t, func(is *devissuer.Issuer) { is.SetDown(down) })
	p := provider.New(provider.Config{IssuerURL: is.URL, Audiences: []string{"https://mcp.example.com/mcp"}})
	testkit.Run(t, p)
	return is, p
}

func TestFacadeWithProvider(t *testing.T) {
	is, p := startProvider(t, false)
	testkit.WaitFor(t, "the provider's discovery document", 5*time.Second, func() bool { _, err := p.Metadata(); return err == nil })
	s := newServer(t, Config{
		ResourceURL:        "https://mcp.example.com/mcp",
		Scopes:             []string{"openid", "email"},
		StaticClientID:     "static-id",
		StaticClientSecret: "static-secret",
		Metadata:           p,
	})
	ts := serve(t, s)

	var first []byte
	for i := range 100 {
		res := get(t, ts.URL+s.AuthorizationServerPaths()[i%2])
		if res.status != http.StatusOK {
			t.Fatalf("request %d: status %d: %s", i, res.status, res.body)
		}
		if first == nil {
			first = res.body
			doc := res.json(t)
			for k, want := range map[string]any{
				"issuer":                 "https://mcp.example.com",
				"authorization_endpoint": is.URL + "/authorize",
				"token_endpoint":         is.URL + "/token",
				"jwks_uri":               is.URL + "/jwks",
				"registration_endpoint":  "https://mcp.example.com/oauth/register",
			} {
				if got := doc[k]; got != want {
					t.Errorf("%s = %v, want %v", k, got, want)
				}
			}
			if got, ok := doc["code_challenge_methods_supported"].([]any); !ok || len(got) != 1 || got[0] != "S256" {
				t.Errorf("code_challenge_methods_supported = %v, want [S256]", doc["code_challenge_methods_supported"])
			}
			if got := res.header.Get("Cache-Control"); got != "public, max-age=3600" {
				t.Errorf("Cache-Control = %q, want the provider's default hour", got)
			}
		} else if !bytes.Equal(res.body, first) {
			t.Fatalf("request %d served another document", i)
		}
	}
	if got := is.DiscoveryHits(); got < 1 || got > 2 {
		t.Errorf("provider discovery fetched %d times for 100 requests, want 1 or 2", got)
	}

	// The provider goes down: the last good document is still served, and
	// requests cause no fetches.
	hits := is.DiscoveryHits()
	is.SetDown(true)
	for i := range 10 {
		res := get(t, ts.URL+AuthorizationServerPath)
		if res.status != http.StatusOK || !bytes.Equal(res.body, first) {
			t.Fatalf("request %d during the outage: status %d: %s", i, res.status, res.body)
		}
	}
	if got := is.DiscoveryHits(); got != hits {
		t.Errorf("requests during the outage fetched the provider %d times", got-hits)
	}

	// Registration picks an auth method the provider advertises.
	for asked, want := range map[string]string{"none": "client_secret_basic", "client_secret_post": "client_secret_post"} {
		res := register(t, ts.URL, "application/json", `{"redirect_uris":["http://127.0.0.1:9999/cb"],"token_endpoint_auth_method":"`+asked+`"}`)
		if res.status != http.StatusCreated {
			t.Fatalf("register: status %d: %s", res.status, res.body)
		}
		if got := res.json(t)["token_endpoint_auth_method"]; got != want {
			t.Errorf("asked %s: token_endpoint_auth_method = %v, want %s", asked, got, want)
		}
	}
}

func TestFacadeProviderNeverAnswered(t *testing.T) {
	is, p := startProvider(t, true)
	testkit.WaitFor(t, "a discovery attempt", 5*time.Second, func() bool { return is.DiscoveryHits() > 0 })
	s := newServer(t, Config{
		ResourceURL:        "https://mcp.example.com/mcp",
		StaticClientID:     "static-id",
		StaticClientSecret: "static-secret",
		Metadata:           p,
	})
	ts := serve(t, s)
	for _, path := range s.AuthorizationServerPaths() {
		res := get(t, ts.URL+path)
		if res.status != http.StatusBadGateway {
			t.Fatalf("GET %s: status %d, want 502", path, res.status)
		}
		if got := res.json(t)["error"]; got != "temporarily_unavailable" {
			t.Errorf("GET %s: error %v, want temporarily_unavailable", path, got)
		}
		if res.header.Get("Retry-After") == "" {
			t.Errorf("GET %s: no Retry-After", path)
		}
	}
	if res := register(t, ts.URL, "application/json", `{"redirect_uris":["http://127.0.0.1:9999/cb"]}`); res.status != http.StatusBadGateway {
		t.Errorf("register: status %d, want 502", res.status)
	}
	if res := get(t, ts.URL+ProtectedResourcePath+"/mcp"); res.status != http.StatusOK {
		t.Errorf("protected resource metadata: status %d, want 200 without the provider", res.status)
	}
}

func TestDirectWithProvider(t *testing.T) {
	is, p := startProvider(t, false)
	testkit.WaitFor(t, "the provider's discovery document", 5*time.Second, func() bool { _, err := p.Metadata(); return err == nil })
	s := newServer(t, Config{
		ResourceURL: "https://mcp.example.com/mcp",
		Mode:        ModeDirect,
		IssuerURL:   is.URL + "/", // as an operator might write it
		Metadata:    p,
	})
	ts := serve(t, s)
	res := get(t, ts.URL+ProtectedResourcePath+"/mcp")
	if res.status != http.StatusOK {
		t.Fatalf("status %d", res.status)
	}
	got, _ := res.json(t)["authorization_servers"].([]any)
	if len(got) != 1 || got[0] != is.URL {
		t.Errorf("authorization_servers = %v, want [%s], the issuer of the provider's document", got, is.URL)
	}
	if res := get(t, ts.URL+AuthorizationServerPath); res.status != http.StatusNotFound {
		t.Errorf("authorization server metadata in direct mode: status %d, want 404", res.status)
	}
}
