package provider

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/devissuer"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

func TestKeySet(t *testing.T) {
	is := testkit.StartIssuer(t, nil)
	attacker := testkit.StartIssuer(t, nil)
	if err := is.AddKey("later", false); err != nil {
		t.Fatal(err)
	}
	p := startProvider(t, is, nil, Config{RefreshCooldown: time.Nanosecond})
	ks := p.KeySet()
	now := time.Now()
	idToken := func(by *devissuer.Issuer, kid string, extra map[string]any) string {
		t.Helper()
		c := map[string]any{"iss": is.URL, "sub": "alice", "aud": "gateway-client", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		for k, v := range extra {
			c[k] = v
		}
		tok, err := by.Mint(devissuer.Token{KeyID: kid, Type: "JWT", Claims: c})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tests := []struct {
		name    string
		publish string // kid to publish before the check
		token   string
		wantOK  bool
	}{
		{name: "rs256 key", token: idToken(is, devissuer.KeyRS256, nil), wantOK: true},
		{name: "es256 key", token: idToken(is, devissuer.KeyES256, nil), wantOK: true},
		{name: "eddsa key", token: idToken(is, devissuer.KeyEdDSA, nil), wantOK: true},
		{name: "key published since the last fetch", publish: "later", token: idToken(is, "later", nil), wantOK: true},
		{name: "the attacker's key under our kid", token: idToken(attacker, devissuer.KeyRS256, nil)},
		{name: "kid of an EC key, signed RS256", token: func() string {
			tok, err := is.Mint(devissuer.Token{Header: map[string]any{"kid": devissuer.KeyES256}, Claims: map[string]any{"sub": "x"}})
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}()},
		{name: "not a JWS", token: "a.b.c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.publish != "" {
				is.Publish(tt.publish)
			}
			_, err := ks.VerifySignature(context.Background(), tt.token)
			if got := err == nil; got != tt.wantOK {
				t.Fatalf("verified: got %v (%v), want %v", got, err, tt.wantOK)
			}
		})
	}

	// The whole of go-oidc's ID token checks, with our key set.
	v := oidc.NewVerifier(is.URL, ks, &oidc.Config{ClientID: "gateway-client"})
	if _, err := v.Verify(context.Background(), idToken(is, devissuer.KeyRS256, nil)); err != nil {
		t.Fatalf("go-oidc verify: %v", err)
	}
	if _, err := v.Verify(context.Background(), idToken(is, devissuer.KeyRS256, map[string]any{"aud": "another-client"})); err == nil {
		t.Fatal("go-oidc verify of another client's ID token: got nil error")
	}
}

func TestKeySetNotReady(t *testing.T) {
	p := New(Config{IssuerURL: "http://127.0.0.1:1", Audiences: []string{"x"}})
	if _, err := p.KeySet().VerifySignature(context.Background(), "e30.e30.e30"); err == nil {
		t.Fatal("got nil error before the keys are loaded")
	}
	tok := "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"
	if _, err := p.KeySet().VerifySignature(context.Background(), tok); !errors.Is(err, ErrNotReady) {
		t.Fatalf("got %v, want ErrNotReady", err)
	}
}
