package broker

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
)

// resign returns tok with its payload changed by edit and signed again
// with priv under header hdr (the broker's own, or any other).
func resign(t *testing.T, tok, hdr string, priv ed25519.PrivateKey, edit func(map[string]any)) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	body, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c map[string]any
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(c)
	}
	body, _ = json.Marshal(c)
	input := hdr + "." + base64.RawURLEncoding.EncodeToString(body)
	return input + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, []byte(input)))
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// Verify accepts the broker's own valid tokens and nothing else.
func TestVerify(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ClockSkew = 30 * time.Second })
	_, tr := e.tokens()
	good := tr.AccessToken
	k := e.b.keys.sign[0]
	_, strangerKey, _ := ed25519.GenerateKey(rand.Reader)
	parts := strings.Split(good, ".")
	foreign, err := e.is.AccessToken("alice", e.origin+"/mcp", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	edited := func(edit func(map[string]any)) string { return resign(t, good, k.header, k.priv, edit) }
	tests := []struct {
		name       string
		token      string
		wantReason string // "" accepts; "foreign" wants ErrNotBrokerToken
	}{
		{name: "valid", token: good},
		{name: "re-signed unchanged", token: edited(nil)},
		{name: "payload changed, old signature", token: parts[0] + "." + b64(`{"iss":"x"}`) + "." + parts[2], wantReason: provider.ReasonSignature},
		{name: "signature of another key", token: resign(t, good, k.header, strangerKey, nil), wantReason: provider.ReasonSignature},
		{name: "truncated signature", token: good[:len(good)-4], wantReason: provider.ReasonSignature},
		{name: "non-canonical base64 in the signature", token: good[:len(good)-1] + flipLowBits(good[len(good)-1]), wantReason: provider.ReasonSignature},
		{name: "another audience", token: edited(func(c map[string]any) { c["aud"] = "https://other.example/mcp" }), wantReason: provider.ReasonAudience},
		{name: "audience as an array", token: edited(func(c map[string]any) { c["aud"] = []string{e.origin + "/mcp"} }), wantReason: provider.ReasonClaims},
		{name: "another issuer", token: edited(func(c map[string]any) { c["iss"] = "https://evil.example" }), wantReason: provider.ReasonIssuer},
		{name: "expired beyond the skew", token: edited(func(c map[string]any) { c["exp"] = e.clock.Now().Add(-31 * time.Second).Unix() }), wantReason: provider.ReasonExpired},
		{name: "expired within the skew", token: edited(func(c map[string]any) { c["exp"] = e.clock.Now().Add(-29 * time.Second).Unix() })},
		{name: "issued in the future", token: edited(func(c map[string]any) { c["iat"] = e.clock.Now().Add(time.Minute).Unix() }), wantReason: provider.ReasonNotYetValid},
		{name: "no exp", token: edited(func(c map[string]any) { delete(c, "exp") }), wantReason: provider.ReasonClaims},
		{name: "no sub", token: edited(func(c map[string]any) { delete(c, "sub") }), wantReason: provider.ReasonClaims},
		{name: "no client_id", token: edited(func(c map[string]any) { delete(c, "client_id") }), wantReason: provider.ReasonClaims},
		{name: "no sid", token: edited(func(c map[string]any) { delete(c, "sid") }), wantReason: provider.ReasonClaims},
		{name: "no jti", token: edited(func(c map[string]any) { delete(c, "jti") }), wantReason: provider.ReasonClaims},
		{name: "alg none, our kid", token: b64(`{"alg":"none","kid":"`+k.kid+`","typ":"at+jwt"}`) + "." + parts[1] + ".", wantReason: provider.ReasonUnknownKey},
		{name: "our kid, extra jku header", token: resign(t, good, b64(`{"alg":"EdDSA","kid":"`+k.kid+`","typ":"at+jwt","jku":"https://evil.example/jwks"}`), strangerKey, nil), wantReason: provider.ReasonUnknownKey},
		{name: "our kid, typ JWT (an ID token)", token: resign(t, good, b64(`{"alg":"EdDSA","kid":"`+k.kid+`","typ":"JWT"}`), k.priv, nil), wantReason: provider.ReasonUnknownKey},
		{name: "four segments", token: good + ".x", wantReason: provider.ReasonMalformed},
		{name: "empty", token: "", wantReason: provider.ReasonMalformed},
		{name: "the provider's token", token: foreign, wantReason: "foreign"},
		{name: "garbage", token: "not-a-token", wantReason: provider.ReasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := e.b.Verify(context.Background(), tt.token)
			switch {
			case tt.wantReason == "" && err != nil:
				t.Fatalf("got %v, want accepted", err)
			case tt.wantReason == "":
				if id.Subject != aliceSub {
					t.Fatalf("subject %q", id.Subject)
				}
			case tt.wantReason == "foreign":
				if !errors.Is(err, ErrNotBrokerToken) {
					t.Fatalf("got %v, want ErrNotBrokerToken", err)
				}
			default:
				var te *provider.TokenError
				if !errors.As(err, &te) || te.Reason != tt.wantReason {
					t.Fatalf("got %v, want reason %s", err, tt.wantReason)
				}
			}
		})
	}
}

// flipLowBits changes the unused low bits of a base64url character: the
// same bytes, another spelling.
func flipLowBits(c byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, c)
	return string(alphabet[i^1])
}

// Verify's cache answers a token verified before, but never a revoked one
// nor one past its exp.
func TestVerifyCache(t *testing.T) {
	e := newEnv(t, nil)
	c, tr := e.tokens()
	first := e.mustVerify(tr.AccessToken)
	if second := e.mustVerify(tr.AccessToken); second != first {
		t.Fatal("second verification not answered from the cache")
	}
	if r := e.revoke(c, tr.AccessToken, ""); r.status != 200 {
		t.Fatal(r.status)
	}
	if got := e.verifyReason(tr.AccessToken); got != ReasonRevoked {
		t.Fatalf("cached, then revoked: %q", got)
	}
	_, tr2 := e.tokens()
	e.mustVerify(tr2.AccessToken)
	e.clock.Advance(time.Hour)
	if got := e.verifyReason(tr2.AccessToken); got != provider.ReasonExpired {
		t.Fatalf("cached, then expired: %q", got)
	}
}

// Keys are derived from BROKER_SECRET: a restart or a replica with the
// same secret verifies the same tokens and redeems the same codes and
// refresh tokens; after a rotation the previous secret keeps them working
// and its key stays in the JWKS; once it is dropped, they fail, and a
// token signed by the dropped key is the broker's (its iss), refused.
func TestKeyRotation(t *testing.T) {
	e := newEnv(t, nil)
	c, tr := e.tokens()
	a := newAuthRequest(c)
	code := e.code(newBrowser(t), a, alice)
	newSecret := []byte("the-next-broker-secret-the-next-broker-secret")

	replica := func(secret, previous []byte) *Broker {
		t.Helper()
		b, err := New(Config{
			ResourceURL: e.origin + "/mcp", Scopes: strings.Fields(testScopes), Upstream: e.prov,
			ClientID: gatewayClientID, ClientSecret: gatewaySecret, Secret: secret, PreviousSecret: previous,
			Store: e.store, Now: e.clock.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	same := replica([]byte(testSecret), nil)
	if _, err := same.Verify(context.Background(), tr.AccessToken); err != nil {
		t.Fatalf("same secret: %v", err)
	}
	if string(same.jwks) != string(e.b.jwks) {
		t.Fatal("same secret, different JWKS")
	}

	rotated := replica(newSecret, []byte(testSecret))
	if _, err := rotated.Verify(context.Background(), tr.AccessToken); err != nil {
		t.Fatalf("rotated, previous kept: %v", err)
	}
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(rotated.jwks, &set); err != nil || len(set.Keys) != 2 || set.Keys[1].Kid != e.b.keys.sign[0].kid {
		t.Fatalf("rotated JWKS: %s", rotated.jwks)
	}
	// The rotated broker redeems the old code and refresh token, and what
	// it issues is signed with the new key.
	var rec codeRecord
	if err := rotated.seal.open(purposeCode, code, &rec); err != nil {
		t.Fatalf("open an old code after rotation: %v", err)
	}
	var rt refreshRecord
	if err := rotated.seal.open(purposeRefresh, tr.RefreshToken, &rt); err != nil {
		t.Fatalf("open an old refresh token after rotation: %v", err)
	}
	newTok, _, err := rotated.mintAccess(c.ID, &rt.User, nil, rt.Family, rt.AuthTime, e.clock.Now(), e.clock.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(newTok, rotated.keys.sign[0].header+".") {
		t.Fatal("new tokens not signed with the new key")
	}
	if _, err := e.b.Verify(context.Background(), newTok); err == nil {
		t.Fatal("a broker without the new secret accepted a token of the new key")
	}

	dropped := replica(newSecret, nil)
	_, err = dropped.Verify(context.Background(), tr.AccessToken)
	var te *provider.TokenError
	if !errors.As(err, &te) || te.Reason != provider.ReasonUnknownKey {
		t.Fatalf("old key after the previous secret is dropped: got %v, want unknown_key", err)
	}
	if err := dropped.seal.open(purposeRefresh, tr.RefreshToken, &rt); err == nil {
		t.Fatal("old refresh token opened after the previous secret is dropped")
	}
}

// Without a secret every broker has keys of its own.
func TestRandomKeys(t *testing.T) {
	e := newEnv(t, nil)
	b1, err1 := New(Config{ResourceURL: e.origin + "/mcp", Upstream: e.prov, ClientID: "c"})
	b2, err2 := New(Config{ResourceURL: e.origin + "/mcp", Upstream: e.prov, ClientID: "c"})
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if string(b1.jwks) == string(b2.jwks) {
		t.Fatal("two brokers without a secret share a key")
	}
}

// New refuses programming errors.
func TestNewRefuses(t *testing.T) {
	up := provider.New(provider.Config{IssuerURL: "http://127.0.0.1:1", Audiences: []string{"x"}})
	ok := Config{ResourceURL: "https://mcp.example/mcp", Upstream: up, ClientID: "c", Secret: []byte(testSecret)}
	for _, tt := range []struct {
		name string
		mod  func(*Config)
	}{
		{name: "short secret", mod: func(c *Config) { c.Secret = []byte("short") }},
		{name: "short previous secret", mod: func(c *Config) { c.PreviousSecret = make([]byte, 31) }},
		{name: "no resource", mod: func(c *Config) { c.ResourceURL = "" }},
		{name: "relative resource", mod: func(c *Config) { c.ResourceURL = "/mcp" }},
		{name: "issuer with a query", mod: func(c *Config) { c.Issuer = "https://mcp.example/?x" }},
		{name: "no upstream", mod: func(c *Config) { c.Upstream = nil }},
		{name: "no client id", mod: func(c *Config) { c.ClientID = "" }},
		{name: "negative ttl", mod: func(c *Config) { c.AccessTokenTTL = -time.Second }},
	} {
		cfg := ok
		tt.mod(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: got nil error", tt.name)
		}
	}
	if b, err := New(ok); err != nil || b.Issuer() != "https://mcp.example" {
		t.Fatalf("valid config: %v", err)
	}
}

// WithFallback checks the broker's tokens itself and hands the others to
// the provider, or refuses them without one.
func TestWithFallback(t *testing.T) {
	e := newEnv(t, nil)
	_, tr := e.tokens()
	aud := e.origin + "/mcp"
	prov := provider.New(provider.Config{IssuerURL: e.is.URL, Audiences: []string{aud}, Now: e.clock.Now})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = prov.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	for ok, _ := prov.Ready(); !ok; ok, _ = prov.Ready() {
		time.Sleep(5 * time.Millisecond)
	}
	provTok, err := e.is.AccessToken("svc", aud, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	wrongAud, _ := e.is.AccessToken("svc", gatewayClientID, time.Hour, nil)
	expired := resign(t, tr.AccessToken, e.b.keys.sign[0].header, e.b.keys.sign[0].priv, func(c map[string]any) { c["exp"] = 1 })

	both, brokerOnly := e.b.WithFallback(prov), e.b.WithFallback(nil)
	for _, tt := range []struct {
		name           string
		token          string
		wantBoth, only string // the accepted subject, or "" for refused
	}{
		{name: "broker token", token: tr.AccessToken, wantBoth: aliceSub, only: aliceSub},
		{name: "expired broker token (never handed on)", token: expired},
		{name: "provider token", token: provTok, wantBoth: "svc"},
		{name: "provider token for the gateway's client id", token: wrongAud},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct {
				v    TokenVerifier
				want string
			}{{both, tt.wantBoth}, {brokerOnly, tt.only}} {
				id, err := c.v.Verify(context.Background(), tt.token)
				got := ""
				if err == nil {
					got = id.Subject
				}
				if got != c.want {
					t.Fatalf("got %q (%v), want %q", got, err, c.want)
				}
			}
		})
	}
}
