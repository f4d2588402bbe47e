package broker

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/gate"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/store"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// BenchmarkAdmit is the gate's whole admit path (verification from the
// cache, allow-list, the admission's revocation check and rate limit in
// memory, the proxy with a canned answer) for a broker-issued access token,
// as broker mode wires it (the broker's Verify leaves revocation to the
// admission), against the provider's own RS256 access token of the same
// shape: through the same gate (a machine client in broker mode, which the
// broker first finds is not its own), and through a gate that knows only
// the provider (facade and direct mode).
func BenchmarkAdmit(b *testing.B) {
	e := newEnv(b, func(c *Config) { c.CallerChecksRevocation = true })
	_, tr := e.tokens()
	aud := e.origin + "/mcp"
	prov := provider.New(provider.Config{IssuerURL: e.is.URL, Audiences: []string{aud}, Logger: hclog.NewNullLogger()})
	testkit.Run(b, prov)
	testkit.WaitReady(b, prov)
	provTok, err := e.is.AccessToken(aliceSub, aud, time.Hour, map[string]any{
		"email": aliceEmail, "email_verified": true, "groups": []string{"mcp-users"}, "scope": testScopes, "client_id": "some-client",
	})
	if err != nil {
		b.Fatal(err)
	}
	limits, err := store.NewLimiter(store.LimiterConfig{PerMinute: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	admission, err := store.NewAdmission(limits, e.store)
	if err != nil {
		b.Fatal(err)
	}
	newGate := func(v gate.Verifier) http.Handler {
		g, err := gate.New(gate.Config{
			Verifier:            v,
			Upstream:            gate.Static(&url.URL{Scheme: "http", Host: "127.0.0.1:1"}),
			ResourceMetadataURL: e.origin + "/.well-known/oauth-protected-resource/mcp",
			AllowSubs:           []string{aliceSub},
			SubjectLimiter:      admission,
			Transport:           testkit.CannedUpstream{},
			Logger:              hclog.NewNullLogger(),
		})
		if err != nil {
			b.Fatal(err)
		}
		return g
	}
	broker, direct := newGate(e.b.WithFallback(prov)), newGate(prov)
	for _, bm := range []struct {
		name string
		g    http.Handler
		tok  string
	}{
		{"broker mode/broker token", broker, tr.AccessToken},
		{"broker mode/provider token", broker, provTok},
		{"facade or direct mode/provider token", direct, provTok},
	} {
		g := bm.g
		b.Run(bm.name, func(b *testing.B) {
			req := httptest.NewRequestWithContext(context.Background(), http.MethodPost, "/mcp", nil)
			req.Header.Set("Authorization", "Bearer "+bm.tok)
			req.Header.Set("Content-Type", "application/json")
			req.RemoteAddr = "192.0.2.1:1234"
			w := httptest.NewRecorder()
			if g.ServeHTTP(w, req); w.Code != 200 {
				b.Fatalf("status %d: %s", w.Code, w.Body)
			}
			testkit.ServeLoop(b, g, req, "", "")
		})
	}
}
