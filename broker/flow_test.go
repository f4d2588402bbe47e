package broker

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// The whole flow as an MCP client sees it: register, authorize (consent,
// provider login, callback), token, refresh; every answer carries what the
// specifications require.
func TestFullFlow(t *testing.T) {
	e := newEnv(t, nil)
	c := e.publicClient()
	a := newAuthRequest(c)
	br := newBrowser(t)

	code := e.code(br, a, alice)
	tr := e.redeem(a, code)
	if tr.status != http.StatusOK {
		t.Fatalf("redeem: %d %s %s", tr.status, tr.Error, tr.Desc)
	}
	if got := tr.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control: got %q, want no-store", got)
	}
	if tr.TokenType != "Bearer" || tr.ExpiresIn != 3600 || tr.RefreshToken == "" || tr.Scope != testScopes {
		t.Fatalf("token response: %+v", tr.tokenResponse)
	}

	// The access token: RFC 9068 header and claims.
	parts := strings.Split(tr.AccessToken, ".")
	hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var h map[string]any
	_ = json.Unmarshal(hdr, &h)
	if h["typ"] != "at+jwt" || h["alg"] != "EdDSA" || h["kid"] == "" {
		t.Fatalf("header: %v", h)
	}
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	_ = json.Unmarshal(payload, &claims)
	for _, k := range []string{"iss", "aud", "sub", "email", "groups", "scope", "client_id", "jti", "iat", "exp", "sid"} {
		if _, ok := claims[k]; !ok {
			t.Errorf("claim %s missing: %v", k, claims)
		}
	}
	if claims["iss"] != e.origin || claims["aud"] != e.origin+"/mcp" || claims["client_id"] != c.ID || claims["sub"] != aliceSub {
		t.Fatalf("claims: %v", claims)
	}

	// The gate's view of it.
	id := e.mustVerify(tr.AccessToken)
	if id.Subject != aliceSub || id.Email != aliceEmail || !id.EmailVerified || !slices.Equal(id.Groups, []string{"mcp-users"}) ||
		!slices.Equal(id.Scopes, strings.Fields(testScopes)) || id.ClientID != c.ID || !slices.Equal(id.Audience, []string{e.origin + "/mcp"}) {
		t.Fatalf("identity: %+v", id)
	}

	// Its signature checks out with the published JWKS, as any resource
	// server would check it.
	resp := br.get(e.origin + JWKSPath)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(resp.body), &set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("jwks: %v %s", err, resp.body)
	}
	jws, err := jose.ParseSignedCompact(tr.AccessToken, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jws.Verify(set.Keys[0].Key); err != nil || set.Keys[0].KeyID != h["kid"] {
		t.Fatalf("jwks verification: %v (kid %s vs %v)", err, set.Keys[0].KeyID, h["kid"])
	}

	// Refresh: new tokens, the session and identity carried on.
	e.clock.Advance(30 * time.Minute)
	rr := e.refresh(c, tr.RefreshToken)
	if rr.status != http.StatusOK || rr.RefreshToken == "" || rr.RefreshToken == tr.RefreshToken || rr.AccessToken == tr.AccessToken {
		t.Fatalf("refresh: %d %s %s", rr.status, rr.Error, rr.Desc)
	}
	if got := e.mustVerify(rr.AccessToken); got.Subject != aliceSub || got.Email != aliceEmail {
		t.Fatalf("refreshed identity: %+v", got)
	}
	// The old access token is still good until it expires.
	e.mustVerify(tr.AccessToken)
	e.clock.Advance(31 * time.Minute)
	if got := e.verifyReason(tr.AccessToken); got != "expired" {
		t.Fatalf("access token after its hour: got %q, want expired", got)
	}
}

// The metadata is RFC 8414 with what MCP clients need.
func TestMetadata(t *testing.T) {
	e := newEnv(t, nil)
	resp := newBrowser(t).get(e.origin + MetadataPath)
	if resp.status != 200 || resp.header.Get("Content-Type") != "application/json" {
		t.Fatalf("metadata: %d %s", resp.status, resp.header.Get("Content-Type"))
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(resp.body), &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"issuer":                 e.origin,
		"authorization_endpoint": e.origin + "/oauth/authorize",
		"token_endpoint":         e.origin + "/oauth/token",
		"registration_endpoint":  e.origin + "/oauth/register",
		"revocation_endpoint":    e.origin + "/oauth/revoke",
		"jwks_uri":               e.origin + "/oauth/jwks",
		"authorization_response_iss_parameter_supported": true,
		"client_id_metadata_document_supported":          true,
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s: got %v, want %v", k, m[k], v)
		}
	}
	list := func(k string) string {
		var out []string
		for _, v := range m[k].([]any) {
			out = append(out, v.(string))
		}
		return strings.Join(out, " ")
	}
	for k, v := range map[string]string{
		"response_types_supported":              "code",
		"grant_types_supported":                 "authorization_code refresh_token",
		"code_challenge_methods_supported":      "S256",
		"token_endpoint_auth_methods_supported": "none client_secret_basic client_secret_post",
		"scopes_supported":                      testScopes,
	} {
		if got := list(k); got != v {
			t.Errorf("%s: got %q, want %q", k, got, v)
		}
	}
	// Not an OpenID provider: no openid-configuration.
	if r := newBrowser(t).get(e.origin + "/.well-known/openid-configuration"); r.status != http.StatusNotFound {
		t.Errorf("openid-configuration: got %d, want 404", r.status)
	}
}

// Routes lists every endpoint once, with the method it answers.
func TestRoutes(t *testing.T) {
	e := newEnv(t, nil)
	got := map[string]string{}
	for _, r := range e.b.Routes() {
		if _, dup := got[r.Path]; dup {
			t.Errorf("path %s listed twice", r.Path)
		}
		got[r.Path] = r.Method
	}
	want := map[string]string{
		MetadataPath: "GET", JWKSPath: "GET", AuthorizePath: "GET", ConsentPath: "POST",
		CallbackPath: "GET", TokenPath: "POST", RegisterPath: "POST", RevokePath: "POST",
	}
	if len(got) != len(want) {
		t.Fatalf("routes: got %v, want %v", got, want)
	}
	for p, m := range want {
		if got[p] != m {
			t.Errorf("%s: got %q, want %q", p, got[p], m)
		}
	}
}
