package provider

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/devissuer"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

const testAudience = "https://mcp.example.test/mcp"

// startProvider returns a running, ready provider for is with the given
// clock; cfg fields left zero get test defaults.
func startProvider(t testing.TB, is *devissuer.Issuer, c *testkit.Clock, cfg Config) *Provider {
	t.Helper()
	if cfg.IssuerURL == "" {
		cfg.IssuerURL = is.URL
	}
	if cfg.Audiences == nil {
		cfg.Audiences = []string{testAudience}
	}
	if c != nil {
		cfg.Now = c.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	p := New(cfg)
	testkit.Run(t, p)
	testkit.WaitReady(t, p)
	return p
}

// claimsAt returns valid claims for a token minted at now.
func claimsAt(is *devissuer.Issuer, now time.Time, extra map[string]any) map[string]any {
	c := map[string]any{
		"iss": is.URL,
		"sub": "user-1",
		"aud": testAudience,
		"iat": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
	}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func mint(t testing.TB, is *devissuer.Issuer, tok devissuer.Token) string {
	t.Helper()
	s, err := is.Mint(tok)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func reasonOf(err error) string {
	var te *TokenError
	if errors.As(err, &te) {
		return te.Reason
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return ""
}

func TestVerify(t *testing.T) {
	is := testkit.StartIssuer(t, nil)
	c := testkit.NewClock(time.Now().Truncate(time.Second))
	p := startProvider(t, is, c, Config{ClockSkew: 30 * time.Second, CacheTTL: -1})
	now := c.Now()
	claims := func(extra map[string]any) map[string]any { return claimsAt(is, now, extra) }
	tok := func(kid, typ string, extra map[string]any) string {
		return mint(t, is, devissuer.Token{KeyID: kid, Type: typ, Claims: claims(extra)})
	}

	valid := tok("", "", nil)
	parts := strings.Split(valid, ".")
	tamperedClaims, _ := json.Marshal(claims(map[string]any{"sub": "admin"}))
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(tamperedClaims) + "." + parts[2]

	payload := base64.RawURLEncoding.EncodeToString(tamperedClaims)
	algNone := b64(`{"alg":"none","typ":"JWT"}`) + "." + payload + "."

	// HS256 "signed" with the RSA public key as the HMAC secret (the classic
	// algorithm confusion attack).
	der, err := x509.MarshalPKIXPublicKey(is.PublicKey(devissuer.KeyRS256))
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	hsInput := b64(`{"alg":"HS256","typ":"JWT","kid":"`+devissuer.KeyRS256+`"}`) + "." + payload
	mac := hmac.New(sha256.New, pemKey)
	mac.Write([]byte(hsInput))
	hs256 := hsInput + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	mac = hmac.New(sha256.New, der)
	mac.Write([]byte(hsInput))
	hs256DER := hsInput + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))

	for _, tc := range []struct {
		name  string
		token string
		want  string // TokenError reason; "" for success
	}{
		{"valid RS256", valid, ""},
		{"valid ES256", tok(devissuer.KeyES256, "", nil), ""},
		{"valid EdDSA", tok(devissuer.KeyEdDSA, "", nil), ""},
		{"aud array", tok("", "", map[string]any{"aud": []string{"other", testAudience}}), ""},
		{"typ at+jwt", tok("", "at+jwt", nil), ""},
		{"typ JWT", tok("", "JWT", nil), ""},
		{"typ application/at+jwt mixed case", tok("", "Application/AT+JWT", nil), ""},
		{"typ of another kind", tok("", "dpop+jwt", nil), ReasonMalformed},
		{"iss with a trailing slash", tok("", "", map[string]any{"iss": is.URL + "/"}), ""},
		{"expired", tok("", "", map[string]any{"exp": now.Add(-time.Hour).Unix()}), ReasonExpired},
		{"exp beyond skew", tok("", "", map[string]any{"exp": now.Add(-31 * time.Second).Unix()}), ReasonExpired},
		{"exp within skew", tok("", "", map[string]any{"exp": now.Add(-29 * time.Second).Unix()}), ""},
		{"exp fractional", tok("", "", map[string]any{"exp": float64(now.Add(time.Hour).Unix()) + 0.5}), ""},
		{"exp a string", tok("", "", map[string]any{"exp": "4102444800"}), ReasonClaims},
		{"no exp", tok("", "", map[string]any{"exp": nil}), ReasonClaims},
		{"not yet valid", tok("", "", map[string]any{"nbf": now.Add(time.Minute).Unix()}), ReasonNotYetValid},
		{"nbf within skew", tok("", "", map[string]any{"nbf": now.Add(29 * time.Second).Unix()}), ""},
		{"iat in future", tok("", "", map[string]any{"iat": now.Add(time.Minute).Unix()}), ReasonNotYetValid},
		{"wrong iss", tok("", "", map[string]any{"iss": "https://evil.example"}), ReasonIssuer},
		{"no iss", tok("", "", map[string]any{"iss": nil}), ReasonIssuer},
		{"wrong aud", tok("", "", map[string]any{"aud": "https://other.example"}), ReasonAudience},
		{"wrong aud array", tok("", "", map[string]any{"aud": []string{"a", "b"}}), ReasonAudience},
		{"no aud", tok("", "", map[string]any{"aud": nil}), ReasonAudience},
		{"no sub", tok("", "", map[string]any{"sub": nil}), ReasonClaims},
		{"empty sub", tok("", "", map[string]any{"sub": ""}), ReasonClaims},
		{"alg none", algNone, ReasonAlgorithm},
		{"HS256 with the RSA public key PEM", hs256, ReasonAlgorithm},
		{"HS256 with the RSA public key DER", hs256DER, ReasonAlgorithm},
		{"unknown kid", mintUnknownKID(t, is, claims(nil)), ReasonUnknownKey},
		{"tampered payload", tampered, ReasonSignature},
		{"empty", "", ReasonMalformed},
		{"two parts", "a.b", ReasonMalformed},
		{"garbage", "garbage", ReasonMalformed},
		{"three garbage parts", "a.b.c", ReasonMalformed},
		{"header not JSON", b64("hello") + "." + payload + ".sig", ReasonMalformed},
		{"JSON serialization", `{"payload":"` + payload + `","protected":"` + parts[0] + `","signature":"` + parts[2] + `"}`, ReasonMalformed},
		{"whitespace", parts[0] + ". " + parts[1] + "." + parts[2], ReasonMalformed},
		{"too large", strings.Repeat("a", 65<<10) + ".b.c", ReasonMalformed},
		{"crit header", mint(t, is, devissuer.Token{Claims: claims(nil), Header: map[string]any{"crit": []string{"https://ext.example/x"}, "https://ext.example/x": true}}), ReasonMalformed},
		{"crit b64 header go-jose accepts", mint(t, is, devissuer.Token{Claims: claims(nil), Header: map[string]any{"crit": []string{"b64"}, "b64": true}}), ReasonMalformed},
		{"kid of EC key with RS256", mint(t, is, devissuer.Token{KeyID: devissuer.KeyRS256, Header: map[string]any{"kid": devissuer.KeyES256}, Claims: claims(nil)}), ReasonAlgorithm},
		{"kid of RSA key with ES256", mint(t, is, devissuer.Token{KeyID: devissuer.KeyES256, Header: map[string]any{"kid": devissuer.KeyRS256}, Claims: claims(nil)}), ReasonAlgorithm},
		{"kid of EdDSA key signed by RSA key", mint(t, is, devissuer.Token{KeyID: devissuer.KeyRS256, Header: map[string]any{"kid": devissuer.KeyEdDSA}, Claims: claims(nil)}), ReasonAlgorithm},
		{"kid of another RSA key", mintOtherRSA(t, is, claims(nil)), ReasonSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := p.Verify(context.Background(), tc.token)
			if got := reasonOf(err); got != tc.want {
				t.Fatalf("Verify() reason = %q, want %q (err %v)", got, tc.want, err)
			}
			if tc.want == "" && id.Subject != "user-1" {
				t.Errorf("Subject = %q, want %q", id.Subject, "user-1")
			}
			if tc.want != "" && !strings.HasPrefix(err.Error(), "verify token: ") {
				t.Errorf("Error() = %q, want prefix %q", err.Error(), "verify token: ")
			}
		})
	}
}

// mintUnknownKID mints a token with a key the JWKS does not publish.
func mintUnknownKID(t testing.TB, is *devissuer.Issuer, claims map[string]any) string {
	t.Helper()
	if err := is.AddKey("unpublished", false); err != nil {
		t.Fatal(err)
	}
	return mint(t, is, devissuer.Token{KeyID: "unpublished", Claims: claims})
}

// mintOtherRSA signs with an unpublished RSA key under the kid of the
// published one.
func mintOtherRSA(t testing.TB, is *devissuer.Issuer, claims map[string]any) string {
	t.Helper()
	if err := is.AddKey("other-rsa", false); err != nil {
		t.Fatal(err)
	}
	return mint(t, is, devissuer.Token{KeyID: "other-rsa", Header: map[string]any{"kid": devissuer.KeyRS256}, Claims: claims})
}

func TestVerifyIdentity(t *testing.T) {
	is := testkit.StartIssuer(t, nil)
	c := testkit.NewClock(time.Now().Truncate(time.Second))
	p := startProvider(t, is, c, Config{GroupsClaim: "roles"})
	now := c.Now()
	exp := now.Add(time.Hour)
	for _, tc := range []struct {
		name  string
		extra map[string]any
		want  Identity
	}{
		{"defaults", nil, Identity{EmailVerified: true}},
		{"email verified absent", map[string]any{"email": "a@example.com"}, Identity{Email: "a@example.com", EmailVerified: true}},
		{"email_verified false", map[string]any{"email": "a@example.com", "email_verified": false}, Identity{Email: "a@example.com"}},
		{"email_verified string false", map[string]any{"email_verified": "false"}, Identity{}},
		{"email_verified true", map[string]any{"email_verified": true}, Identity{EmailVerified: true}},
		{"groups as string", map[string]any{"roles": "admins"}, Identity{EmailVerified: true, Groups: []string{"admins"}}},
		{"groups as array", map[string]any{"roles": []string{"admins", "dev"}}, Identity{EmailVerified: true, Groups: []string{"admins", "dev"}}},
		{"default groups claim ignored", map[string]any{"groups": []string{"x"}}, Identity{EmailVerified: true}},
		{"scope string", map[string]any{"scope": "openid  mcp:read mcp:write"}, Identity{EmailVerified: true, Scopes: []string{"openid", "mcp:read", "mcp:write"}}},
		{"scp array", map[string]any{"scp": []string{"mcp:read", "mcp:write"}}, Identity{EmailVerified: true, Scopes: []string{"mcp:read", "mcp:write"}}},
		{"scp string", map[string]any{"scp": "mcp:read mcp:write"}, Identity{EmailVerified: true, Scopes: []string{"mcp:read", "mcp:write"}}},
		{"client_id", map[string]any{"client_id": "app", "azp": "other"}, Identity{EmailVerified: true, ClientID: "app"}},
		{"azp", map[string]any{"azp": "other"}, Identity{EmailVerified: true, ClientID: "other"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := mint(t, is, devissuer.Token{Claims: claimsAt(is, now, tc.extra)})
			got, err := p.Verify(context.Background(), raw)
			if err != nil {
				t.Fatalf("Verify() = %v", err)
			}
			want := tc.want
			want.Subject = "user-1"
			want.Audience = []string{testAudience}
			want.Expiry = time.Unix(exp.Unix(), 0)
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("Verify() =\n%+v, want\n%+v", *got, want)
			}
		})
	}
	t.Run("groups of the wrong type", func(t *testing.T) {
		raw := mint(t, is, devissuer.Token{Claims: claimsAt(is, now, map[string]any{"roles": 7})})
		if _, err := p.Verify(context.Background(), raw); reasonOf(err) != ReasonClaims {
			t.Errorf("Verify() = %v, want reason %q", err, ReasonClaims)
		}
	})
}

func TestIssuerTrailingSlash(t *testing.T) {
	for _, tc := range []struct {
		name       string
		configured func(is *devissuer.Issuer) string
		docIssuer  func(is *devissuer.Issuer) string // nil: as served
		iss        func(is *devissuer.Issuer) string
	}{
		{"configured with slash", func(is *devissuer.Issuer) string { return is.URL + "/" }, nil, func(is *devissuer.Issuer) string { return is.URL }},
		{"token with slash", func(is *devissuer.Issuer) string { return is.URL }, nil, func(is *devissuer.Issuer) string { return is.URL + "/" }},
		{"document with slash", func(is *devissuer.Issuer) string { return is.URL }, func(is *devissuer.Issuer) string { return is.URL + "/" }, func(is *devissuer.Issuer) string { return is.URL }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := testkit.StartIssuer(t, nil)
			if tc.docIssuer != nil {
				is.Extra = map[string]any{"issuer": tc.docIssuer(is)}
			}
			c := testkit.NewClock(time.Now().Truncate(time.Second))
			p := startProvider(t, is, c, Config{IssuerURL: tc.configured(is)})
			raw := mint(t, is, devissuer.Token{Claims: claimsAt(is, c.Now(), map[string]any{"iss": tc.iss(is)})})
			if _, err := p.Verify(context.Background(), raw); err != nil {
				t.Errorf("Verify() = %v, want nil", err)
			}
		})
	}
}

func TestDiscoveryIssuerMismatch(t *testing.T) {
	is := testkit.StartIssuer(t, nil)
	is.Extra = map[string]any{"issuer": "https://elsewhere.example"}
	p := New(Config{IssuerURL: is.URL, Audiences: []string{testAudience}})
	testkit.Run(t, p)
	deadline := time.Now().Add(5 * time.Second)
	for is.DiscoveryHits() < 2 && time.Now().Before(deadline) { // it keeps retrying
		time.Sleep(10 * time.Millisecond)
	}
	ok, reason := p.Ready()
	if ok || !strings.Contains(reason, "does not match the configured issuer") {
		t.Errorf("Ready() = %v, %q; want false with an issuer mismatch", ok, reason)
	}
	if got := is.DiscoveryHits(); got < 2 {
		t.Errorf("discovery hits = %d, want retries", got)
	}
}

func TestMaxTokenLifetime(t *testing.T) {
	is := testkit.StartIssuer(t, nil)
	c := testkit.NewClock(time.Now().Truncate(time.Second))
	p := startProvider(t, is, c, Config{MaxTokenLifetime: time.Hour})
	now := c.Now()
	for _, tc := range []struct {
		name string
		exp  time.Time
		want string
	}{
		{"within", now.Add(30 * time.Minute), ""},
		{"at the limit", now.Add(time.Hour), ""},
		{"beyond", now.Add(2 * time.Hour), ReasonLifetime},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := mint(t, is, devissuer.Token{Claims: claimsAt(is, now, map[string]any{"exp": tc.exp.Unix()})})
			_, err := p.Verify(context.Background(), raw)
			if got := reasonOf(err); got != tc.want {
				t.Errorf("Verify() reason = %q, want %q (%v)", got, tc.want, err)
			}
		})
	}
}

func TestForeignKeyHeadersIgnored(t *testing.T) {
	is := testkit.StartIssuer(t, nil)
	attacker := testkit.StartIssuer(t, nil)
	if err := attacker.AddKey("attacker-key", true); err != nil {
		t.Fatal(err)
	}
	c := testkit.NewClock(time.Now().Truncate(time.Second))
	p := startProvider(t, is, c, Config{CacheTTL: -1})
	claims := claimsAt(is, c.Now(), nil)
	attackerJWK := jose.JSONWebKey{Key: attacker.PublicKey(devissuer.KeyRS256), KeyID: devissuer.KeyRS256, Algorithm: "RS256", Use: "sig"}
	for _, tc := range []struct {
		name string
		tok  devissuer.Token
		want string
	}{
		{"jku with the victim's kid", devissuer.Token{Header: map[string]any{"jku": attacker.URL + "/jwks"}, Claims: claims}, ReasonSignature},
		{"jku with the attacker's kid", devissuer.Token{KeyID: "attacker-key", Header: map[string]any{"jku": attacker.URL + "/jwks"}, Claims: claims}, ReasonUnknownKey},
		{"x5u", devissuer.Token{Header: map[string]any{"x5u": attacker.URL + "/jwks"}, Claims: claims}, ReasonSignature},
		{"embedded jwk", devissuer.Token{Header: map[string]any{"jwk": attackerJWK}, Claims: claims}, ReasonSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := mint(t, attacker, tc.tok)
			_, err := p.Verify(context.Background(), raw)
			if got := reasonOf(err); got != tc.want {
				t.Errorf("Verify() reason = %q, want %q (%v)", got, tc.want, err)
			}
			if got := attacker.JWKSHits() + attacker.DiscoveryHits(); got != 0 {
				t.Errorf("attacker server hits = %d, want 0", got)
			}
		})
	}
}

func TestUnknownKIDCooldown(t *testing.T) {
	is := testkit.StartIssuer(t, nil)
	c := testkit.NewClock(time.Now().Truncate(time.Second))
	p := startProvider(t, is, c, Config{RefreshCooldown: time.Minute})
	if err := is.AddKey("new-key", false); err != nil {
		t.Fatal(err)
	}
	raw := mint(t, is, devissuer.Token{KeyID: "new-key", Claims: claimsAt(is, c.Now(), nil)})
	before := is.JWKSHits()

	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := p.Verify(context.Background(), raw)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if got := reasonOf(err); got != ReasonUnknownKey {
			t.Fatalf("Verify() reason = %q, want %q", got, ReasonUnknownKey)
		}
	}
	if got := is.JWKSHits() - before; got > 1 {
		t.Errorf("JWKS fetches for 100 unknown kids = %d, want at most 1", got)
	}

	is.Publish("new-key")
	c.Advance(30 * time.Second)
	if _, err := p.Verify(context.Background(), raw); reasonOf(err) != ReasonUnknownKey {
		t.Errorf("within the cooldown: Verify() = %v, want reason %q", err, ReasonUnknownKey)
	}
	c.Advance(31 * time.Second)
	if _, err := p.Verify(context.Background(), raw); err != nil {
		t.Errorf("after the cooldown: Verify() = %v, want nil", err)
	}
}

func TestProviderDownAtStart(t *testing.T) {
	is := testkit.StartIssuer(t, nil)
	is.SetDown(true)
	p := New(Config{IssuerURL: is.URL, Audiences: []string{testAudience}})
	testkit.Run(t, p)
	raw, err := is.AccessToken("user-1", testAudience, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}

	// The issuer counts its hit before the provider has read the failure:
	// wait for the provider to have taken it in, not for the hit.
	var ok bool
	var reason string
	testkit.WaitFor(t, "the provider to take the failure in", 5*time.Second, func() bool {
		ok, reason = p.Ready()
		return ok || reason != "provider discovery pending"
	})
	if is.DiscoveryHits() == 0 {
		t.Errorf("the provider never asked for discovery")
	}
	if ok || !strings.HasPrefix(reason, "provider discovery failed: ") {
		t.Errorf("Ready() = %v, %q; want false, provider discovery failed: ...", ok, reason)
	}
	if _, err := p.Verify(context.Background(), raw); !errors.Is(err, ErrNotReady) {
		t.Errorf("Verify() = %v, want ErrNotReady", err)
	}
	if _, err := p.Metadata(); !errors.Is(err, ErrNotReady) {
		t.Errorf("Metadata() = %v, want ErrNotReady", err)
	}

	is.SetDown(false)
	testkit.WaitReady(t, p)
	if _, err := p.Verify(context.Background(), raw); err != nil {
		t.Errorf("Verify() once up = %v, want nil", err)
	}
}

func TestOutageAfterLoad(t *testing.T) {
	is := testkit.StartIssuer(t, nil)
	c := testkit.NewClock(time.Now().Truncate(time.Second))
	p := startProvider(t, is, c, Config{CacheTTL: -1, RefreshCooldown: time.Second})
	is.SetDown(true)
	for _, kid := range []string{devissuer.KeyRS256, devissuer.KeyES256, devissuer.KeyEdDSA} {
		raw := mint(t, is, devissuer.Token{KeyID: kid, Claims: claimsAt(is, c.Now(), nil)})
		if _, err := p.Verify(context.Background(), raw); err != nil {
			t.Errorf("%s: Verify() during outage = %v, want nil", kid, err)
		}
	}
	// A failed unknown-kid refetch keeps the keys.
	raw := mintUnknownKID(t, is, claimsAt(is, c.Now(), nil))
	if _, err := p.Verify(context.Background(), raw); reasonOf(err) != ReasonUnknownKey {
		t.Errorf("unknown kid during outage: Verify() = %v, want reason %q", err, ReasonUnknownKey)
	}
	if ok, reason := p.Ready(); !ok {
		t.Errorf("Ready() during outage = false, %q; want true", reason)
	}
	if _, err := p.Metadata(); err != nil {
		t.Errorf("Metadata() during outage = %v, want nil", err)
	}
}

// TestCache: a cache hit returns the very *Identity the verification that
// filled it made (Identity's documented sharing), while every full
// verification makes a new one; so identity of pointers tells a hit from a
// verification without a hook in the Provider.
func TestCache(t *testing.T) {
	newProvider := func(t *testing.T) (*devissuer.Issuer, *testkit.Clock, *Provider) {
		is := testkit.StartIssuer(t, nil)
		c := testkit.NewClock(time.Now().Truncate(time.Second))
		return is, c, startProvider(t, is, c, Config{CacheTTL: time.Minute, RefreshCooldown: time.Second})
	}
	verify := func(t *testing.T, p *Provider, raw string) *Identity {
		t.Helper()
		id, err := p.Verify(context.Background(), raw)
		if err != nil {
			t.Fatalf("Verify() = %v", err)
		}
		return id
	}

	t.Run("second verify is a hit", func(t *testing.T) {
		is, c, p := newProvider(t)
		raw := mint(t, is, devissuer.Token{Claims: claimsAt(is, c.Now(), nil)})
		if id1, id2 := verify(t, p, raw), verify(t, p, raw); id1 != id2 {
			t.Errorf("second Verify() verified again, want the cached identity")
		}
	})

	t.Run("hit survives an unpublished key until TTL", func(t *testing.T) {
		is, c, p := newProvider(t)
		raw := mint(t, is, devissuer.Token{KeyID: devissuer.KeyES256, Claims: claimsAt(is, c.Now(), nil)})
		first := verify(t, p, raw)
		is.Unpublish(devissuer.KeyES256)
		c.Advance(59 * time.Second)
		if verify(t, p, raw) != first {
			t.Errorf("within TTL: verified again, want the cached identity")
		}
		c.Advance(2 * time.Second)
		// Keys not refetched yet: verified again, with the keys held.
		if verify(t, p, raw) == first {
			t.Errorf("after TTL: the cached identity, want a new verification")
		}
	})

	t.Run("expired token never served", func(t *testing.T) {
		is, c, p := newProvider(t)
		raw := mint(t, is, devissuer.Token{Claims: claimsAt(is, c.Now(), map[string]any{"exp": c.Now().Add(5 * time.Second).Unix()})})
		first := verify(t, p, raw)
		c.Advance(4 * time.Second)
		if verify(t, p, raw) != first {
			t.Errorf("before exp: verified again, want the cached identity")
		}
		c.Advance(time.Second) // now == exp
		if _, err := p.Verify(context.Background(), raw); reasonOf(err) != ReasonExpired {
			t.Errorf("at exp: Verify() = %v, want reason %q", err, ReasonExpired)
		}
	})

	t.Run("dropped when keys change", func(t *testing.T) {
		is, c, p := newProvider(t)
		raw := mint(t, is, devissuer.Token{Claims: claimsAt(is, c.Now(), nil)})
		first := verify(t, p, raw)
		if verify(t, p, raw) != first {
			t.Fatalf("second Verify() verified again, want the cached identity")
		}
		// A new key makes the JWKS change (fetched for the unknown kid).
		if err := is.AddKey("rotated", true); err != nil {
			t.Fatal(err)
		}
		verify(t, p, mint(t, is, devissuer.Token{KeyID: "rotated", Claims: claimsAt(is, c.Now(), nil)}))
		if verify(t, p, raw) == first {
			t.Errorf("after rotation: the cached identity, want a new verification (cache dropped)")
		}
	})

	t.Run("failures not cached", func(t *testing.T) {
		is, c, p := newProvider(t)
		raw := mint(t, is, devissuer.Token{Claims: claimsAt(is, c.Now(), map[string]any{"nbf": c.Now().Add(time.Minute).Unix()})})
		if _, err := p.Verify(context.Background(), raw); reasonOf(err) != ReasonNotYetValid {
			t.Fatalf("before nbf: Verify() = %v, want reason %q", err, ReasonNotYetValid)
		}
		c.Advance(time.Minute)
		if _, err := p.Verify(context.Background(), raw); err != nil {
			t.Errorf("after nbf: Verify() = %v, want nil (the failure was remembered)", err)
		}
	})

	t.Run("disabled", func(t *testing.T) {
		is := testkit.StartIssuer(t, nil)
		c := testkit.NewClock(time.Now().Truncate(time.Second))
		p := startProvider(t, is, c, Config{CacheTTL: -1})
		raw := mint(t, is, devissuer.Token{Claims: claimsAt(is, c.Now(), nil)})
		seen := map[*Identity]bool{}
		for range 3 {
			seen[verify(t, p, raw)] = true
		}
		if got := len(seen); got != 3 {
			t.Errorf("identities of 3 verifications: got %d distinct, want 3", got)
		}
	})
}

func TestMetadata(t *testing.T) {
	is, err := devissuer.New()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=30")
		is.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	is.URL = srv.URL
	p := New(Config{IssuerURL: is.URL, Audiences: []string{testAudience}})
	if got := p.MetadataMaxAge(); got != 0 {
		t.Errorf("MetadataMaxAge() before fetch = %v, want 0", got)
	}
	testkit.Run(t, p)
	testkit.WaitReady(t, p)
	m1, err := p.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	m2, _ := p.Metadata()
	if reflect.ValueOf(m1).Pointer() != reflect.ValueOf(m2).Pointer() {
		t.Errorf("Metadata() returns a copy per call, want the same map")
	}
	var iss string
	if err := json.Unmarshal(m1["issuer"], &iss); err != nil || iss != is.URL {
		t.Errorf("issuer = %q (%v), want %q", iss, err, is.URL)
	}
	if _, ok := m1["token_endpoint"]; !ok {
		t.Errorf("token_endpoint missing from %v", m1)
	}
	if got, want := p.MetadataMaxAge(), time.Minute; got != want {
		t.Errorf("MetadataMaxAge() = %v, want %v (30s clamped up)", got, want)
	}
}

func TestCacheMaxAge(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   time.Duration
		ok     bool
	}{
		{"", 0, false},
		{"public", 0, false},
		{"public, max-age=600", 10 * time.Minute, true},
		{"Max-Age=\"60\"", time.Minute, true},
		{"max-age=abc", 0, false},
		{"no-store", 0, true},
		{"max-age=99999999999", 24 * time.Hour, true},
	} {
		t.Run(tc.header, func(t *testing.T) {
			h := http.Header{}
			if tc.header != "" {
				h.Set("Cache-Control", tc.header)
			}
			got, ok := cacheMaxAge(h)
			if got != tc.want || ok != tc.ok {
				t.Errorf("cacheMaxAge(%q) = %v, %v; want %v, %v", tc.header, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestRunStops(t *testing.T) {
	is := testkit.StartIssuer(t, nil)
	is.SetDown(true)
	p := New(Config{IssuerURL: is.URL, Audiences: []string{testAudience}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run() did not return after cancel")
	}
}

func BenchmarkVerify(b *testing.B) {
	for _, bc := range []struct {
		name string
		ttl  time.Duration
	}{
		{"hit", time.Minute},
		{"miss", -1},
	} {
		if bc.name == "hit" {
			b.Run("hit parallel", func(b *testing.B) {
				is := testkit.StartIssuer(b, nil)
				p := startProvider(b, is, nil, Config{})
				raw, err := is.AccessToken("user-1", testAudience, time.Hour, nil)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := p.Verify(context.Background(), raw); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
		b.Run(bc.name, func(b *testing.B) {
			is := testkit.StartIssuer(b, nil)
			p := startProvider(b, is, nil, Config{CacheTTL: bc.ttl})
			raw, err := is.AccessToken("user-1", testAudience, time.Hour, map[string]any{"scope": "openid mcp", "groups": []string{"a", "b"}})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if _, err := p.Verify(ctx, raw); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.Verify(ctx, raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestReadyReasonNamesNoAddress: /readyz is answered on the public port, so
// a failed fetch is said there without the URL, host or resolver its error
// names (a provider reached by an internal name); the log has it whole.
func TestReadyReasonNamesNoAddress(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"unresolved", &net.DNSError{Err: "no such host", Name: "keycloak.corp.internal", Server: "10.255.255.53:53", IsNotFound: true}, "the host name did not resolve"},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 8443}, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, "the connection was refused"},
		{"other", errors.New("read tcp 10.1.2.3:8443: connection reset by peer"), "the request failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs testkit.LogBuffer
			client := &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, tc.err })}
			p := New(Config{IssuerURL: "https://keycloak.corp.internal:8443/realms/staff", Audiences: []string{testAudience}, HTTPClient: client, Logger: hclog.New(&hclog.LoggerOptions{Output: &logs})})
			testkit.Run(t, p)
			var reason string
			testkit.WaitFor(t, "the provider to take the failure in", 5*time.Second, func() bool {
				_, reason = p.Ready()
				return reason != "provider discovery pending"
			})
			if !strings.HasPrefix(reason, "provider discovery failed: "+tc.want) {
				t.Errorf("Ready() reason %q, want it to start %q", reason, "provider discovery failed: "+tc.want)
			}
			for _, secret := range []string{"corp.internal", "10.255.255.53", "10.1.2.3", "8443"} {
				if strings.Contains(reason, secret) {
					t.Errorf("Ready() reason %q names %q", reason, secret)
				}
			}
			testkit.WaitFor(t, "the log line", 5*time.Second, func() bool { return strings.Contains(logs.String(), "keycloak.corp.internal") })
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestJWKSOverPlainHTTP: every token's trust rests on the provider's keys,
// so they come over https, or plain http on loopback only, as the issuer
// does: a jwks_uri, or a redirect on the way to it, that leaves for plain
// http elsewhere is refused and the keys are not loaded. Before, either
// was followed, and whoever was on that path could add a key.
func TestJWKSOverPlainHTTP(t *testing.T) {
	for _, tc := range []struct{ name, jwks, redirect string }{
		{"jwks_uri on plain http", "http://keys.example/jwks", ""},
		{"a redirect to plain http", "", "http://keys.example/jwks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var srv *httptest.Server
			srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/.well-known/openid-configuration":
					jwks := tc.jwks
					if jwks == "" {
						jwks = srv.URL + "/jwks"
					}
					w.Header().Set("Content-Type", "application/json")
					_ = json.NewEncoder(w).Encode(map[string]string{"issuer": srv.URL, "jwks_uri": jwks})
				case "/jwks":
					http.Redirect(w, r, tc.redirect, http.StatusFound)
				}
			}))
			t.Cleanup(srv.Close)
			var fetched atomic.Bool
			client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				if r.URL.Host == "keys.example" {
					fetched.Store(true)
					return nil, errors.New("keys.example is not reachable from the test")
				}
				return http.DefaultTransport.RoundTrip(r)
			})}
			p := New(Config{IssuerURL: srv.URL, Audiences: []string{testAudience}, HTTPClient: client})
			testkit.Run(t, p)
			var reason string
			testkit.WaitFor(t, "the provider to take the failure in", 5*time.Second, func() bool {
				_, reason = p.Ready()
				return reason != "provider discovery pending"
			})
			if ok, _ := p.Ready(); ok || fetched.Load() {
				t.Errorf("keys over plain http: ready %v, fetched from keys.example %v; want neither (reason %q)", ok, fetched.Load(), reason)
			}
		})
	}
}

// TestReadyReasonNamesNoProviderURL: the provider's own documents can name
// internal hosts (a provider that advertises the name it is reached by
// inside the network), and so can the configured issuer. /readyz, on the
// public port, says what is wrong without them; the log has them.
func TestReadyReasonNamesNoProviderURL(t *testing.T) {
	const issuer = "https://keycloak.corp.internal:8443/realms/staff"
	for _, tc := range []struct {
		name      string
		answer    func(*http.Request) *http.Response
		want, log string
	}{
		{"issuer mismatch", func(*http.Request) *http.Response {
			return jsonAnswer(`{"issuer":"http://kc.internal.lan:8080/realms/staff","jwks_uri":"https://keycloak.corp.internal:8443/certs"}`)
		}, "fetch discovery document: its issuer does not match the configured issuer (OIDC_ISSUER_URL)", "kc.internal.lan:8080"},
		{"plain-http jwks_uri", func(*http.Request) *http.Response {
			return jsonAnswer(`{"issuer":"` + issuer + `","jwks_uri":"http://kc.internal.lan:8080/certs"}`)
		}, "fetch discovery document: its jwks_uri must use https", "kc.internal.lan:8080"},
		{"redirect to plain http", func(*http.Request) *http.Response {
			return &http.Response{StatusCode: http.StatusFound, Header: http.Header{"Location": {"http://kc.internal.lan:8080/realms/staff/.well-known/openid-configuration"}},
				Body: io.NopCloser(strings.NewReader(""))}
		}, "provider discovery failed: a redirect was refused", "kc.internal.lan:8080"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs testkit.LogBuffer
			client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				resp := tc.answer(r)
				resp.Request = r
				return resp, nil
			})}
			p := New(Config{IssuerURL: issuer, Audiences: []string{testAudience}, HTTPClient: client, Logger: hclog.New(&hclog.LoggerOptions{Output: &logs})})
			testkit.Run(t, p)
			var reason string
			testkit.WaitFor(t, "the provider to take the failure in", 5*time.Second, func() bool {
				_, reason = p.Ready()
				return reason != "provider discovery pending"
			})
			if !strings.Contains(reason, tc.want) {
				t.Errorf("Ready() reason %q, want it to contain %q", reason, tc.want)
			}
			for _, secret := range []string{"internal", "8443", "8080"} {
				if strings.Contains(reason, secret) {
					t.Errorf("Ready() reason %q names %q", reason, secret)
				}
			}
			testkit.WaitFor(t, "the log line", 5*time.Second, func() bool { return strings.Contains(logs.String(), tc.log) })
		})
	}
}

func jsonAnswer(body string) *http.Response {
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(body))}
}
