package gate

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/devissuer"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// countingVerifier counts the tokens that reach verification.
type countingVerifier struct {
	v Verifier
	n atomic.Int64
}

func (c *countingVerifier) Verify(ctx context.Context, raw string) (*provider.Identity, error) {
	c.n.Add(1)
	return c.v.Verify(ctx, raw)
}

// runProviderFor runs a second provider for env's issuer with cfg (its
// issuer, audience and skew filled in) until the test ends.
func runProviderFor(t testing.TB, env *issuerEnv, cfg provider.Config) *provider.Provider {
	t.Helper()
	cfg.IssuerURL, cfg.Audiences, cfg.ClockSkew = env.is.URL, []string{testAudience}, 5*time.Second
	p := provider.New(cfg)
	testkit.Run(t, p)
	testkit.WaitReady(t, p)
	return p
}

// TestAttackMatrix is the attack matrix: one row per attack on
// the bearer token, each with the status the client gets and, for every
// rejection, the proof that the upstream received nothing. The few rows
// that must be accepted (a valid token in any spelling the RFCs allow) are
// in the same table: the upstream receives exactly one request, without the
// client's Authorization.
func TestAttackMatrix(t *testing.T) {
	env := newIssuer(t)
	is := env.is
	if err := is.AddKey("unpublished", false); err != nil {
		t.Fatal(err)
	}

	// The attacker runs an issuer of its own; keys must come only from the
	// configured JWKS, so it must never be contacted.
	attacker := testkit.StartIssuer(t, nil)

	// Two gates on the same issuer: the default one, and one whose
	// provider has MAX_TOKEN_LIFETIME (24 h). Every row must meet its own
	// check, so the per-IP failure limit is off here (tested below).
	defaultV := &countingVerifier{v: env.p}
	lifetimeV := &countingVerifier{v: runProviderFor(t, env, provider.Config{MaxTokenLifetime: 24 * time.Hour})}
	gates := map[string]*setup{}
	verifiers := map[string]*countingVerifier{"default": defaultV, "lifetime": lifetimeV}
	for name, v := range verifiers {
		gates[name] = newSetup(t, env, nil, func(c *Config) {
			c.Verifier = v
			c.FailedAuthLimiter = nil
			c.AllowEmails = []string{"bob@example.com", "kim@example.com", "ian@example.com"}
		})
	}

	now := time.Now()
	claims := func(extra map[string]any) map[string]any {
		c := map[string]any{"iss": is.URL, "sub": "alice", "aud": testAudience, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		for k, v := range extra {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	mintBy := func(by *devissuer.Issuer, tk devissuer.Token) string {
		tok, err := by.Mint(tk)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	mint := func(tk devissuer.Token) string { return mintBy(is, tk) }
	valid := mint(devissuer.Token{Claims: claims(nil)})
	// email is a token of a subject not on the allow-list with this email
	// and email_verified (nil: absent).
	email := func(addr string, verified any) string {
		c := map[string]any{"sub": "mallory", "email": addr}
		if verified != nil {
			c["email_verified"] = verified
		}
		return mint(devissuer.Token{Claims: claims(c)})
	}

	enc := base64.RawURLEncoding
	aliceClaims, _ := json.Marshal(claims(nil))
	malloryParts := strings.Split(mint(devissuer.Token{Claims: claims(map[string]any{"sub": "mallory"})}), ".")
	tampered := malloryParts[0] + "." + enc.EncodeToString(aliceClaims) + "." + malloryParts[2]
	algNone := enc.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc.EncodeToString(aliceClaims) + "."

	der, err := x509.MarshalPKIXPublicKey(is.PublicKey(devissuer.KeyRS256))
	if err != nil {
		t.Fatal(err)
	}
	hsInput := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT","kid":"`+devissuer.KeyRS256+`"}`)) + "." + enc.EncodeToString(aliceClaims)
	hsWith := func(secret []byte) string {
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(hsInput))
		return hsInput + "." + enc.EncodeToString(mac.Sum(nil))
	}
	hs256PEM := hsWith(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	hs256DER := hsWith(der)

	// 1 MiB that would send the provider to the JWKS (a kid it does not
	// know) if it were ever parsed.
	huge := enc.EncodeToString([]byte(`{"alg":"RS256","kid":"kid-never-seen"}`)) + "." + strings.Repeat("A", 1<<20) + ".c2ln"
	attackerJWK := jose.JSONWebKey{Key: attacker.PublicKey(devissuer.KeyRS256), KeyID: devissuer.KeyRS256, Algorithm: "RS256", Use: "sig"}
	many := http.Header{}
	for range 50 {
		many.Add("Authorization", "Bearer "+valid)
	}

	type row struct {
		name     string
		gate     string      // "default" (no MAX_TOKEN_LIFETIME) or "lifetime" (24 h)
		header   http.Header // request headers
		query    string
		form     string // an application/x-www-form-urlencoded body
		want     int
		noVerify bool // refused before any token parsing or key lookup
	}
	auth := func(v string) http.Header { return http.Header{"Authorization": {v}} }
	bearer := func(tok string) http.Header { return auth("Bearer " + tok) }
	rows := []row{
		// Accepted spellings.
		{name: "valid token", header: bearer(valid), want: 200},
		{name: "scheme in lower case", header: auth("bearer " + valid), want: 200},
		{name: "scheme in upper case with extra spaces", header: auth("BEARER     " + valid), want: 200},
		{name: "scheme in mixed case with tabs and spaces", header: auth("bEaReR \t \t" + valid + " \t"), want: 200},
		{name: "exp far in the future without MAX_TOKEN_LIFETIME", header: bearer(mint(devissuer.Token{Claims: claims(map[string]any{"exp": now.AddDate(10, 0, 0).Unix()})})), want: 200},
		{name: "exp within MAX_TOKEN_LIFETIME", gate: "lifetime", header: bearer(valid), want: 200},

		// Forgery and misuse.
		{name: "no credentials", want: 401, noVerify: true},
		{name: "expired", header: bearer(mint(devissuer.Token{Claims: claims(map[string]any{"exp": now.Add(-time.Hour).Unix()})})), want: 401},
		{name: "not yet valid", header: bearer(mint(devissuer.Token{Claims: claims(map[string]any{"nbf": now.Add(time.Hour).Unix()})})), want: 401},
		{name: "issued in the future", header: bearer(mint(devissuer.Token{Claims: claims(map[string]any{"iat": now.Add(time.Hour).Unix()})})), want: 401},
		{name: "wrong issuer", header: bearer(mint(devissuer.Token{Claims: claims(map[string]any{"iss": "https://evil.example.com"})})), want: 401},
		{name: "another issuer's own valid token", header: bearer(mintBy(attacker, devissuer.Token{Claims: claims(map[string]any{"iss": attacker.URL})})), want: 401},
		{name: "right issuer, minted for another audience", header: bearer(mint(devissuer.Token{Claims: claims(map[string]any{"aud": "https://other-resource.example.com/mcp"})})), want: 401},
		{name: "audience array without ours", header: bearer(mint(devissuer.Token{Claims: claims(map[string]any{"aud": []string{"a", "b"}})})), want: 401},
		{name: "id token of the same provider, aud a client id", header: bearer(mint(devissuer.Token{Type: "JWT", Claims: claims(map[string]any{
			"aud": "claude-client-id", "azp": "claude-client-id", "nonce": "n-0S6_WzA2Mj", "at_hash": "77QmUPtjPfzWtF2AnpK9RQ", "auth_time": now.Unix()})})), want: 401},
		{name: "alg none", header: bearer(algNone), want: 401},
		{name: "HS256 keyed with the RSA public key (PEM)", header: bearer(hs256PEM), want: 401},
		{name: "HS256 keyed with the RSA public key (DER)", header: bearer(hs256DER), want: 401},
		{name: "unknown kid", header: bearer(mint(devissuer.Token{KeyID: "unpublished", Claims: claims(nil)})), want: 401},
		{name: "kid of the provider, key of the attacker", header: bearer(mintBy(attacker, devissuer.Token{Claims: claims(nil)})), want: 401},
		{name: "kid pointing at an EC key, signed RS256", header: bearer(mint(devissuer.Token{Header: map[string]any{"kid": devissuer.KeyES256}, Claims: claims(nil)})), want: 401},
		{name: "kid pointing at an RSA key, signed ES256", header: bearer(mint(devissuer.Token{KeyID: devissuer.KeyES256, Header: map[string]any{"kid": devissuer.KeyRS256}, Claims: claims(nil)})), want: 401},
		{name: "kid pointing at an EdDSA key, signed RS256", header: bearer(mint(devissuer.Token{Header: map[string]any{"kid": devissuer.KeyEdDSA}, Claims: claims(nil)})), want: 401},
		{name: "jku to the attacker's JWKS", header: bearer(mintBy(attacker, devissuer.Token{Header: map[string]any{"jku": attacker.URL + "/jwks"}, Claims: claims(nil)})), want: 401},
		{name: "x5u to the attacker", header: bearer(mintBy(attacker, devissuer.Token{Header: map[string]any{"x5u": attacker.URL + "/jwks"}, Claims: claims(nil)})), want: 401},
		{name: "jwk embedded by the attacker", header: bearer(mintBy(attacker, devissuer.Token{Header: map[string]any{"jwk": attackerJWK}, Claims: claims(nil)})), want: 401},
		{name: "crit header, validly signed", header: bearer(mint(devissuer.Token{Header: map[string]any{"crit": []string{"urn:example:ext"}, "urn:example:ext": true}, Claims: claims(nil)})), want: 401},
		{name: "crit b64 header, validly signed", header: bearer(mint(devissuer.Token{Header: map[string]any{"crit": []string{"b64"}, "b64": true}, Claims: claims(nil)})), want: 401},
		{name: "typ of another kind of token", header: bearer(mint(devissuer.Token{Type: "dpop+jwt", Claims: claims(nil)})), want: 401},
		{name: "tampered payload", header: bearer(tampered), want: 401},
		{name: "no exp", header: bearer(mint(devissuer.Token{Claims: claims(map[string]any{"exp": nil})})), want: 401},
		{name: "no sub", header: bearer(mint(devissuer.Token{Claims: claims(map[string]any{"sub": nil})})), want: 401},
		{name: "exp far in the future with MAX_TOKEN_LIFETIME", gate: "lifetime", header: bearer(mint(devissuer.Token{Claims: claims(map[string]any{"exp": now.AddDate(10, 0, 0).Unix()})})), want: 401},
		{name: "malformed: three garbage parts", header: bearer("not.a.jwt"), want: 401},
		{name: "malformed: one part", header: bearer("garbage"), want: 401},
		{name: "malformed: not token68", header: auth("Bearer abc def"), want: 401, noVerify: true},
		{name: "bearer without a token", header: auth("Bearer"), want: 401, noVerify: true},
		{name: "empty authorization", header: auth(""), want: 401, noVerify: true},
		{name: "two tokens in one header", header: auth("Bearer " + valid + ", Bearer " + valid), want: 401, noVerify: true},
		{name: "basic scheme", header: auth("Basic YWxpY2U6cHc="), want: 401, noVerify: true},
		{name: "token as the basic password", header: auth("Basic " + enc.EncodeToString([]byte("alice:"+valid))), want: 401, noVerify: true},
		{name: "token only in the query", query: "?access_token=" + valid, want: 401, noVerify: true},
		{name: "token only in a form body", form: "access_token=" + valid, want: 401, noVerify: true},
		{name: "token only in a cookie", header: http.Header{"Cookie": {"access_token=" + valid}}, want: 401, noVerify: true},
		{name: "token only in Proxy-Authorization", header: http.Header{"Proxy-Authorization": {"Bearer " + valid}}, want: 401, noVerify: true},
		{name: "token in the header and the query", header: bearer(valid), query: "?access_token=" + valid, want: 400, noVerify: true},
		{name: "two authorization headers", header: http.Header{"Authorization": {"Bearer " + valid, "Basic YWxpY2U6cHc="}}, want: 400, noVerify: true},
		{name: "fifty authorization headers", header: many, want: 400, noVerify: true},
		{name: "token one byte over MAX_TOKEN_BYTES", header: bearer(strings.Repeat("a", DefaultMaxTokenBytes+1)), want: 401, noVerify: true},
		{name: "token of 1 MiB", header: bearer(huge), want: 401, noVerify: true},
		{name: "valid token of a subject not on the allow-list", header: bearer(mint(devissuer.Token{Claims: claims(map[string]any{"sub": "mallory"})})), want: 403},

		// Identity comparison: an email matches with ASCII
		// letters folded only; subs and groups byte for byte.
		{name: "allow-listed email in other ascii case", header: bearer(email("KIM@Example.COM", nil)), want: 200},
		{name: "email with KELVIN SIGN for an allow-listed k", header: bearer(email("\u212Aim@example.com", nil)), want: 403},
		{name: "email with dotted capital I for an allow-listed i", header: bearer(email("\u0130an@example.com", nil)), want: 403},
		{name: "email with LONG S for an allow-listed s", header: bearer(email("bob@example.co\u017F", nil)), want: 403},
		// email_verified: when present, only true or "true"
		// verifies the email; absent, the provider's email is trusted.
		{name: "allow-listed email, email_verified absent", header: bearer(email("bob@example.com", nil)), want: 200},
		{name: "allow-listed email, email_verified true", header: bearer(email("bob@example.com", true)), want: 200},
		{name: "allow-listed email, email_verified string true", header: bearer(email("bob@example.com", "true")), want: 200},
		{name: "allow-listed email, email_verified false", header: bearer(email("bob@example.com", false)), want: 403},
		{name: "allow-listed email, email_verified string 0", header: bearer(email("bob@example.com", "0")), want: 403},
		{name: "allow-listed email, email_verified string no", header: bearer(email("bob@example.com", "no")), want: 403},
		{name: "allow-listed email, email_verified empty string", header: bearer(email("bob@example.com", "")), want: 403},
		{name: "allow-listed email, email_verified string True", header: bearer(email("bob@example.com", "True")), want: 403},
		{name: "allow-listed email, email_verified string FALSE", header: bearer(email("bob@example.com", "FALSE")), want: 403},
		{name: "allow-listed email, email_verified null", header: bearer(mint(devissuer.Token{Claims: claims(map[string]any{
			"sub": "mallory", "email": "bob@example.com", "email_verified": json.RawMessage("null")})})), want: 403},
		{name: "allow-listed email, email_verified a number", header: bearer(email("bob@example.com", 1)), want: 401},
		{name: "subject on the allow-list in another case", header: bearer(mint(devissuer.Token{Claims: claims(map[string]any{"sub": "Alice"})})), want: 403},
		{name: "group on the allow-list in another case", header: bearer(mint(devissuer.Token{Claims: claims(map[string]any{"sub": "mallory", "groups": []string{"MCP-USERS"}})})), want: 403},
	}
	for _, tt := range rows {
		t.Run(tt.name, func(t *testing.T) {
			name := tt.gate
			if name == "" {
				name = "default"
			}
			s, v := gates[name], verifiers[name]
			upBefore, verifyBefore, jwksBefore := len(s.up.requests()), v.n.Load(), is.JWKSHits()

			req, err := http.NewRequest(http.MethodPost, s.front.URL+"/mcp"+tt.query, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
			if err != nil {
				t.Fatal(err)
			}
			if tt.form != "" {
				req, _ = http.NewRequest(http.MethodPost, s.front.URL+"/mcp", strings.NewReader(tt.form))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			for k, vs := range tt.header {
				req.Header[k] = vs
			}
			resp, err := s.front.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body struct {
				Error string `json:"error"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()

			if got, want := resp.StatusCode, tt.want; got != want {
				t.Fatalf("status: got %d, want %d (error %q, challenge %q)", got, want, body.Error, resp.Header.Get("Www-Authenticate"))
			}
			got := s.up.requests()[upBefore:]
			if tt.want != http.StatusOK {
				if len(got) != 0 {
					t.Fatalf("upstream received %d requests, want none", len(got))
				}
				if body.Error == "" {
					t.Errorf("rejection without a JSON error")
				}
			} else {
				if len(got) != 1 {
					t.Fatalf("upstream received %d requests, want exactly 1", len(got))
				}
				if a := got[0].Header.Values("Authorization"); len(a) != 0 {
					t.Errorf("upstream received Authorization %q, want none", a)
				}
			}
			if tt.noVerify {
				if n := v.n.Load() - verifyBefore; n != 0 {
					t.Errorf("%d tokens reached verification, want none", n)
				}
				if n := is.JWKSHits() - jwksBefore; n != 0 {
					t.Errorf("%d JWKS fetches, want none", n)
				}
			}
			if n := attacker.JWKSHits() + attacker.DiscoveryHits(); n != 0 {
				t.Fatalf("the attacker's server was contacted %d times", n)
			}
		})
	}
}
