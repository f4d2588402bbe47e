package broker

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/oauth2"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
)

// BenchmarkVerify compares Verify of a broker access token with the
// provider's verification of an RS256 token of the same shape, from the
// cache (hit) and without it (miss).
func BenchmarkVerify(b *testing.B) {
	e := newEnv(b, nil)
	_, tr := e.tokens()
	aud := e.origin + "/mcp"
	provTok, err := e.is.AccessToken(aliceSub, aud, time.Hour, map[string]any{
		"email": aliceEmail, "groups": []string{"mcp-users"}, "scope": testScopes, "client_id": "some-client",
	})
	if err != nil {
		b.Fatal(err)
	}
	newProvider := func(cacheTTL time.Duration) *provider.Provider {
		p := provider.New(provider.Config{IssuerURL: e.is.URL, Audiences: []string{aud}, CacheTTL: cacheTTL, Logger: hclog.NewNullLogger(), Now: e.clock.Now})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = p.Run(ctx); close(done) }()
		b.Cleanup(func() { cancel(); <-done })
		for ok, _ := p.Ready(); !ok; ok, _ = p.Ready() {
			time.Sleep(5 * time.Millisecond)
		}
		return p
	}
	uncached, err := New(Config{
		ResourceURL: aud, Upstream: e.prov, ClientID: gatewayClientID, Secret: []byte(testSecret),
		Store: e.store, Now: e.clock.Now, VerifyCacheTTL: -1,
	})
	if err != nil {
		b.Fatal(err)
	}
	type verifier interface {
		Verify(context.Context, string) (*provider.Identity, error)
	}
	for _, bm := range []struct {
		name string
		v    verifier
		tok  string
	}{
		{"broker/hit", e.b, tr.AccessToken},
		{"broker/miss", uncached, tr.AccessToken},
		{"provider/hit", newProvider(0), provTok},
		{"provider/miss", newProvider(-1), provTok},
	} {
		b.Run(bm.name, func(b *testing.B) {
			ctx := context.Background()
			if _, err := bm.v.Verify(ctx, bm.tok); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bm.v.Verify(ctx, bm.tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTokenEndpoint is the token endpoint's own cost per request,
// in-process (no network), for both grants. The refresh grant is measured
// without the provider (a session whose provider gave no refresh token)
// and with it (a real refresh at the in-process devissuer over loopback
// HTTP, as every refresh does when the provider gave one).
func BenchmarkTokenEndpoint(b *testing.B) {
	e := newEnv(b, nil)
	c := e.publicClient()
	h := e.b.Handler()
	post := func(form url.Values) *tokenResponse {
		req := httptest.NewRequest(http.MethodPost, TokenPath, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
		var tr tokenResponse
		if err := json.Unmarshal(w.Body.Bytes(), &tr); err != nil {
			b.Fatal(err)
		}
		return &tr
	}
	verifier := oauth2.GenerateVerifier()
	user := identity{Sub: aliceSub, Email: aliceEmail, Groups: []string{"mcp-users"}}

	b.Run("authorization_code", func(b *testing.B) {
		codes := make([]string, b.N)
		for i := range codes {
			rec := codeRecord{
				ID: rand.Text(),
				Req: pending{Client: clientBinding(c.ID), Redirect: clientRedirect, Challenge: oauth2.S256ChallengeFromVerifier(verifier),
					Scopes: strings.Fields(testScopes), Resource: e.origin + "/mcp"},
				Granted: strings.Fields(testScopes), User: user, AuthTime: e.clock.Now().Unix(),
			}
			var err error
			if codes[i], err = e.b.seal.seal(purposeCode, e.clock.Now().Add(codeTTL), rec); err != nil {
				b.Fatal(err)
			}
		}
		form := url.Values{"grant_type": {"authorization_code"}, "redirect_uri": {clientRedirect}, "code_verifier": {verifier}, "client_id": {c.ID}}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			form.Set("code", codes[i])
			post(form)
		}
	})
	refresh := func(b *testing.B, upstream string) {
		now := e.clock.Now()
		rt, err := e.b.seal.seal(purposeRefresh, now.Add(24*time.Hour), refreshRecord{
			Family: rand.Text(), ID: rand.Text(), ClientID: c.ID, Scopes: strings.Fields(testScopes),
			Resource: e.origin + "/mcp", User: user, AuthTime: now.Unix(), End: now.Add(24 * time.Hour).Unix(), Upstream: upstream,
		})
		if err != nil {
			b.Fatal(err)
		}
		form := url.Values{"grant_type": {"refresh_token"}, "client_id": {c.ID}}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			form.Set("refresh_token", rt)
			rt = post(form).RefreshToken
		}
	}
	b.Run("refresh_token", func(b *testing.B) { refresh(b, "") })
	b.Run("refresh_token+provider", func(b *testing.B) {
		// A provider refresh token, from a real login at the devissuer.
		a := newAuthRequest(c)
		var rec codeRecord
		if err := e.b.seal.open(purposeCode, e.code(newBrowser(b), a, alice), &rec); err != nil || rec.Upstream == "" {
			b.Fatalf("no provider refresh token: %v", err)
		}
		refresh(b, rec.Upstream)
	})
}
