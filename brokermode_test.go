package main

import (
	"encoding/base64"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/devissuer"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

var alice = devissuer.Identity{Subject: "alice", Email: "alice@example.com"}

// TestBrokerModeDiscovery: the protected-resource metadata names the
// broker's issuer exactly (RFC 8414 §3.3: a 2026-07-28 client compares
// them), without offline_access; the broker serves the authorization
// server metadata and no OpenID configuration; the challenge names no
// offline_access either.
func TestBrokerModeDiscovery(t *testing.T) {
	g := startBroker(t, nil)
	var prm struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
		ScopesSupported      []string `json:"scopes_supported"`
	}
	getJSONDoc(t, g.base+"/.well-known/oauth-protected-resource/mcp", &prm)
	var as struct {
		Issuer                string   `json:"issuer"`
		AuthorizationEndpoint string   `json:"authorization_endpoint"`
		TokenEndpoint         string   `json:"token_endpoint"`
		RegistrationEndpoint  string   `json:"registration_endpoint"`
		ScopesSupported       []string `json:"scopes_supported"`
		ISS                   bool     `json:"authorization_response_iss_parameter_supported"`
	}
	getJSONDoc(t, g.base+"/.well-known/oauth-authorization-server", &as)
	if len(prm.AuthorizationServers) != 1 || prm.AuthorizationServers[0] != as.Issuer || as.Issuer != g.base {
		t.Errorf("authorization_servers %q, issuer %q: want both %q", prm.AuthorizationServers, as.Issuer, g.base)
	}
	if prm.Resource != g.mcp {
		t.Errorf("resource %q, want %q", prm.Resource, g.mcp)
	}
	if as.AuthorizationEndpoint != g.base+"/oauth/authorize" || as.TokenEndpoint != g.base+"/oauth/token" ||
		as.RegistrationEndpoint != g.base+"/oauth/register" || !as.ISS {
		t.Errorf("authorization server metadata: %+v", as)
	}
	want := []string{"openid", "profile", "email"} // SCOPES_SUPPORTED's default, less offline_access
	if !slices.Equal(prm.ScopesSupported, want) || !slices.Equal(as.ScopesSupported, want) {
		t.Errorf("scopes: protected resource %q, authorization server %q, want %q", prm.ScopesSupported, as.ScopesSupported, want)
	}
	if resp, _ := mcpPost(t, g.base+"/.well-known/openid-configuration", "", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET openid-configuration: status %d, want 404 (the broker is no OpenID provider)", resp.StatusCode)
	}
	resp, _ := mcpPost(t, g.mcp, "", toolsList)
	if c := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != 401 || strings.Contains(c, "offline_access") || !strings.Contains(c, `resource_metadata="`+g.base) {
		t.Errorf("challenge: %d %q", resp.StatusCode, c)
	}

	// An explicit SCOPES_SUPPORTED may offer offline_access to clients; the
	// protected-resource metadata still leaves it out (MCP 2026-07-28).
	g = startBroker(t, map[string]string{"SCOPES_SUPPORTED": "mcp,offline_access"})
	getJSONDoc(t, g.base+"/.well-known/oauth-protected-resource/mcp", &prm)
	getJSONDoc(t, g.base+"/.well-known/oauth-authorization-server", &as)
	if !slices.Equal(prm.ScopesSupported, []string{"mcp"}) || !slices.Equal(as.ScopesSupported, []string{"mcp", "offline_access"}) {
		t.Errorf("explicit scopes: protected resource %q, authorization server %q", prm.ScopesSupported, as.ScopesSupported)
	}
}

func getJSONDoc(t *testing.T, u string, into any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(into) != nil {
		t.Fatalf("GET %s: status %d", u, resp.StatusCode)
	}
}

// TestBrokerRefreshReuseGrace: with the default BROKER_REFRESH_REUSE_GRACE
// (30s), a client that presents a refresh token again right after using
// it (two requests refreshing at once) keeps its session. The dev issuer
// rotates its own refresh tokens, so the second refresh is refused as
// "just used" rather than as a leak: the first refresh's tokens go on.
func TestBrokerRefreshReuseGrace(t *testing.T) {
	g := startBroker(t, nil)
	c, tr := g.login(t, alice)
	rt := refresh(t, g.base, c, tr.RefreshToken, g.mcp)
	if rt.status != http.StatusOK {
		t.Fatalf("refresh: %d %s", rt.status, rt.Error)
	}
	again := refresh(t, g.base, c, tr.RefreshToken, g.mcp)
	if again.status != http.StatusBadRequest || again.Error != "invalid_grant" || !strings.Contains(again.Desc, "just used") {
		t.Errorf("the same refresh token again at once: %d %q %q, want 400 invalid_grant, just used", again.status, again.Error, again.Desc)
	}
	if resp, body := mcpPost(t, g.mcp, rt.AccessToken, toolsList); resp.StatusCode != http.StatusOK {
		t.Errorf("the session's access token after a reuse within the window: %d %.200s, want 200", resp.StatusCode, body)
	}
	if next := refresh(t, g.base, c, rt.RefreshToken, g.mcp); next.status != http.StatusOK {
		t.Errorf("the newer refresh token after a reuse within the window: %d %s", next.status, next.Error)
	}
}

// TestBrokerModeLogin: a whole login through the gate, as an MCP client
// and a person in a browser do it: registration, authorization, the
// gateway's consent page, the provider's login page, the callback, the
// token, an MCP call through the gate, a refresh and another call; with
// BROKER_REFRESH_REUSE_GRACE=0, a rotated refresh token used again ends the
// session.
func TestBrokerModeLogin(t *testing.T) {
	g := startBroker(t, map[string]string{"BROKER_REFRESH_REUSE_GRACE": "0"})
	c := registerClient(t, g.base)
	a := newAuthRequest(c, g.mcp)
	last, b := authorize(t, g.base, a, alice)
	q := callback(t, last, a)
	if q.Get("iss") != g.base || q.Get("state") != a.state || q.Get("code") == "" {
		t.Fatalf("authorization response %v: want iss %q, our state and a code (pages %v)", q, g.base, b.pages)
	}
	tr := redeem(t, g.base, a, q.Get("code"))
	if tr.status != http.StatusOK || tr.AccessToken == "" || tr.RefreshToken == "" {
		t.Fatalf("redeem: %d %s", tr.status, tr.Error)
	}
	if tr.header.Get("Cache-Control") != "no-store" {
		t.Errorf("token response Cache-Control %q, want no-store", tr.header.Get("Cache-Control"))
	}
	claims := jwtPayload(t, tr.AccessToken)
	if claims["iss"] != g.base || claims["aud"] != g.mcp || claims["sub"] != alice.Subject || claims["client_id"] != c.id {
		t.Errorf("access token claims %v", claims)
	}

	resp, body := mcpPost(t, g.mcp, tr.AccessToken, toolsList)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"echo"`) {
		t.Fatalf("tools/list with the broker's token: %d %.200s", resp.StatusCode, body)
	}

	rt := refresh(t, g.base, c, tr.RefreshToken, g.mcp)
	if rt.status != http.StatusOK || rt.AccessToken == "" || rt.RefreshToken == tr.RefreshToken {
		t.Fatalf("refresh: %d %s", rt.status, rt.Error)
	}
	if resp, body := mcpPost(t, g.mcp, rt.AccessToken, toolsList); resp.StatusCode != http.StatusOK {
		t.Fatalf("tools/list after the refresh: %d %.200s", resp.StatusCode, body)
	}

	// RFC 9700 §4.14.2: the rotated refresh token, presented again, ends
	// the whole session: its current access token stops working at once.
	if again := refresh(t, g.base, c, tr.RefreshToken, g.mcp); again.status != http.StatusBadRequest || again.Error != "invalid_grant" {
		t.Errorf("reused refresh token: %d %q, want 400 invalid_grant", again.status, again.Error)
	}
	if resp, _ := mcpPost(t, g.mcp, rt.AccessToken, toolsList); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the session's access token after a refresh-token reuse: %d, want 401", resp.StatusCode)
	}
	// The code was used once.
	if again := redeem(t, g.base, a, q.Get("code")); again.status != http.StatusBadRequest {
		t.Errorf("a code used twice: %d, want 400", again.status)
	}
}

// TestBrokerModeAllowList: the broker's login asks the gate's allow-list
// (gate.AllowList, one rule for both): an identity it refuses sees the
// gateway's "not allowed" page and its client gets access_denied, with no
// code; one allowed by group logs in and passes the gate.
func TestBrokerModeAllowList(t *testing.T) {
	g := startBroker(t, map[string]string{"ALLOW_SUBS": "", "ALLOW_GROUPS": "mcp-users", "ALLOW_EMAILS": "Kim@Example.com"})
	c := registerClient(t, g.base)
	a := newAuthRequest(c, g.mcp)
	last, _ := authorize(t, g.base, a, devissuer.Identity{Subject: "mallory", Email: "mallory@example.com", Groups: []string{"others"}})
	if last.status != http.StatusForbidden || !strings.Contains(last.body, "not allowed here") || !strings.Contains(last.header.Get("Content-Type"), "text/html") {
		t.Fatalf("a refused identity: %d %.300s, want the not-allowed page", last.status, last.body)
	}
	cont := regexp1(t, last.body, `href="([^"]+)"`)
	u, err := url.Parse(cont)
	if err != nil || !strings.HasPrefix(cont, c.redirect) || u.Query().Get("error") != "access_denied" || u.Query().Get("code") != "" || u.Query().Get("iss") != g.base {
		t.Errorf("Continue goes to %q, want the client with access_denied, iss and no code", cont)
	}

	for _, id := range []devissuer.Identity{
		{Subject: "grace", Email: "grace@example.com", Groups: []string{"mcp-users"}},
		{Subject: "kim", Email: "kim@example.com"}, // ALLOW_EMAILS folds ASCII case; the issuer verifies emails
	} {
		_, tr := g.login(t, id)
		if resp, body := mcpPost(t, g.mcp, tr.AccessToken, toolsList); resp.StatusCode != http.StatusOK {
			t.Errorf("%s through the gate: %d %.200s", id.Subject, resp.StatusCode, body)
		}
	}
}

func regexp1(t *testing.T, s, re string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no %s in %.300s", re, s)
	}
	return html.UnescapeString(m[1])
}

// jwtPayload decodes a JWT's claims (not verifying it: the gate does).
func jwtPayload(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	var m map[string]any
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || json.Unmarshal(b, &m) != nil {
		t.Fatalf("JWT payload: %v", err)
	}
	return m
}

// TestBrokerModeCORS: browser-based clients call the broker's public
// endpoints from their own origin (any origin, no credentials); its forms
// take the gateway's own origin only.
func TestBrokerModeCORS(t *testing.T) {
	g := startBroker(t, nil)
	for _, tt := range []struct {
		name, method, path, origin string
		preflight                  bool
		wantStatus                 int
		wantACAO                   string
	}{
		{"token from Inspector", "POST", "/oauth/token", "http://localhost:6274", false, 401, "*"}, // no client: invalid_client
		{"token preflight", "OPTIONS", "/oauth/token", "https://app.example", true, 204, "*"},
		{"registration preflight", "OPTIONS", "/oauth/register", "https://app.example", true, 204, "*"},
		{"metadata", "GET", "/.well-known/oauth-authorization-server", "https://app.example", false, 200, "*"},
		{"protected-resource metadata", "GET", "/.well-known/oauth-protected-resource/mcp", "https://app.example", false, 200, "*"},
		{"consent from another site", "POST", "/oauth/consent", "https://app.example", false, 403, ""},
		{"consent from the gateway's own page", "POST", "/oauth/consent", g.base, false, 400, g.base}, // the broker then finds no flow
		{"callback fetched cross-origin", "GET", "/oauth/callback", "https://app.example", false, 403, ""},
		{"the MCP endpoint keeps CORS_ALLOW_ORIGINS", "POST", "/mcp", "https://app.example", false, 403, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, g.base+tt.path, strings.NewReader(""))
			req.Header.Set("Origin", tt.origin)
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tt.preflight {
				req.Header.Set("Access-Control-Request-Method", "POST")
				req.Header.Set("Access-Control-Request-Headers", "content-type")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus || resp.Header.Get("Access-Control-Allow-Origin") != tt.wantACAO {
				t.Errorf("got %d with Access-Control-Allow-Origin %q, want %d and %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"), tt.wantStatus, tt.wantACAO)
			}
			if resp.Header.Get("Access-Control-Allow-Credentials") != "" {
				t.Error("credentials allowed")
			}
		})
	}
}

// TestBrokerModeProviderTokens: the provider's own access tokens pass
// the gate in broker mode only when OIDC_AUDIENCE is set, names an
// audience other than the gateway's client id, and ACCEPT_PROVIDER_TOKENS
// is not false; the provider's ID tokens for the gateway's own client
// (aud = OIDC_CLIENT_ID) never pass.
func TestBrokerModeProviderTokens(t *testing.T) {
	const api = "https://api.example.com"
	for _, tt := range []struct {
		name     string
		env      map[string]string
		aud      string
		idToken  bool // shaped as an ID token (typ JWT, nonce), not an access token
		wantCode int
	}{
		{"no OIDC_AUDIENCE", map[string]string{"OIDC_AUDIENCE": ""}, gwAudience, false, 401},
		{"for OIDC_AUDIENCE", map[string]string{"OIDC_AUDIENCE": api}, api, false, 200},
		{"for another audience", map[string]string{"OIDC_AUDIENCE": api}, gwAudience, false, 401},
		{"ACCEPT_PROVIDER_TOKENS=false", map[string]string{"OIDC_AUDIENCE": api, "ACCEPT_PROVIDER_TOKENS": "false"}, api, false, 401},
		{"OIDC_AUDIENCE is the client id: an ID token", map[string]string{"OIDC_AUDIENCE": gwClientID}, gwClientID, true, 401},
		{"OIDC_AUDIENCE is the client id: an access token", map[string]string{"OIDC_AUDIENCE": gwClientID}, gwClientID, false, 401},
		{"OIDC_AUDIENCE lists the client id among others: an ID token", map[string]string{"OIDC_AUDIENCE": api + "," + gwClientID}, gwClientID, true, 401},
		{"OIDC_AUDIENCE lists the client id among others: the other", map[string]string{"OIDC_AUDIENCE": api + "," + gwClientID}, api, false, 200},
		{"an ID token for the gateway's client, OIDC_AUDIENCE elsewhere", map[string]string{"OIDC_AUDIENCE": api}, gwClientID, true, 401},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"AUTH_SERVER_MODE": "broker", "OIDC_CLIENT_ID": gwClientID, "OIDC_CLIENT_SECRET": gwClientSecret}
			for k, v := range tt.env {
				env[k] = v
			}
			g := startGateway(t, env, nil)
			now := time.Now()
			tok := devissuer.Token{Claims: map[string]any{
				"iss": g.is.URL, "sub": "alice", "aud": tt.aud, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
				"email": "alice@example.com", "email_verified": true,
			}}
			if tt.idToken {
				tok.Type = "JWT"
				tok.Claims["nonce"] = "n-0S6_WzA2Mj"
				tok.Claims["azp"] = gwClientID
			}
			raw, err := g.is.Mint(tok)
			if err != nil {
				t.Fatal(err)
			}
			if got := do(t, http.DefaultClient, http.MethodPost, g.base+"/mcp", raw, strings.NewReader(toolsList)); got != tt.wantCode {
				t.Errorf("status %d, want %d", got, tt.wantCode)
			}
		})
	}
}

// TestFacadeWarnsOfIss: in facade mode, a provider whose metadata says it
// sends RFC 9207 iss draws one warning once its metadata is known, and
// /readyz says so while staying ready; without it, neither.
func TestFacadeWarnsOfIss(t *testing.T) {
	for _, sends := range []bool{true, false} {
		is := testkit.StartIssuer(t, nil)
		is.Extra = map[string]any{"authorization_response_iss_parameter_supported": sends}
		r := startRun(t, nil, gatewayEnv(is.URL, map[string]string{"MCP_UPSTREAM_URL": "http://127.0.0.1:1"}))
		base := "http://" + r.addr(t)
		var body string
		testkit.WaitFor(t, "readiness", 10*time.Second, func() bool {
			resp, b := mcpGet(t, base+"/readyz")
			body = b
			return resp.StatusCode == http.StatusOK
		})
		// An unknown key id makes the provider fetch its keys again: no
		// second warning.
		if err := is.AddKey("later", true); err != nil {
			t.Fatal(err)
		}
		tok, err := is.Mint(devissuer.Token{KeyID: "later", Claims: map[string]any{"iss": is.URL, "sub": "alice", "aud": "https://mcp.example.com/mcp", "exp": time.Now().Add(time.Hour).Unix()}})
		if err != nil {
			t.Fatal(err)
		}
		do(t, http.DefaultClient, http.MethodPost, base+"/mcp", tok, strings.NewReader(toolsList))
		testkit.WaitFor(t, "the second key fetch", 5*time.Second, func() bool { return is.JWKSHits() >= 2 })

		warnings := strings.Count(r.stderr.String(), "MCP clients following the 2026-07-28 specification will reject the login")
		mentions := strings.Contains(body, "AUTH_SERVER_MODE=broker")
		if sends && (warnings != 1 || !mentions) {
			t.Errorf("a provider that sends iss: %d warnings (want 1), /readyz %s", warnings, body)
		}
		if !sends && (warnings != 0 || mentions) {
			t.Errorf("a provider that does not: %d warnings, /readyz %s", warnings, body)
		}
	}
}

// TestBrokerWarnsOfTheGroupsScope: in broker mode, when groups decide
// (ALLOW_GROUPS here) and the provider lists a "groups" scope that
// OIDC_SCOPES does not ask for, one warning says to add it: such providers
// release the groups claim only for that scope.
func TestBrokerWarnsOfTheGroupsScope(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want bool
	}{
		{"groups named, scope not asked for", map[string]string{"ALLOW_GROUPS": "mcp-users"}, true},
		{"groups named, scope asked for", map[string]string{"ALLOW_GROUPS": "mcp-users", "OIDC_SCOPES": "openid email profile groups"}, false},
		{"no groups named", map[string]string{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := testkit.StartIssuer(t, nil) // its discovery document lists a groups scope
			env := map[string]string{
				"AUTH_SERVER_MODE":   "broker",
				"OIDC_CLIENT_ID":     gwClientID,
				"OIDC_CLIENT_SECRET": gwClientSecret,
				"OIDC_AUDIENCE":      "",
				"BROKER_SECRET":      brokerTestSecret,
				"MCP_UPSTREAM_URL":   "http://127.0.0.1:1",
			}
			for k, v := range tc.env {
				env[k] = v
			}
			r := startRun(t, nil, gatewayEnv(is.URL, env))
			waitReady(t, "http://"+r.addr(t))
			got := strings.Count(r.stderr.String(), "add groups to OIDC_SCOPES")
			if tc.want && got != 1 || !tc.want && got != 0 {
				t.Errorf("%d warnings about the groups scope, want %v\n%s", got, tc.want, r.stderr.String())
			}
		})
	}
}

func mcpGet(t *testing.T, u string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestDoctorBroker: doctor finds nothing wrong with broker mode (issue
// 18's broker row).
func TestDoctorBroker(t *testing.T) {
	g := startBroker(t, nil)
	r := runDoctorCmd(t, "--json", g.mcp)
	if r.status != 0 {
		t.Errorf("exit status %d, want 0\n%s", r.status, r.out)
	}
	for _, id := range []string{"challenge", "challenge.metadata", "prm", "prm.resource", "prm.authorization_servers",
		"as.discovery", "as.issuer", "as.endpoints", "as.pkce", "as.registration", "as.iss"} {
		if got := r.checks[id]; got.Status != "ok" {
			t.Errorf("%s: %s (%s), want ok", id, got.Status, got.Message)
		}
	}
	for id, c := range r.checks {
		t.Logf("%-5s %-26s %s", c.Status, id, c.Message)
		if c.Status == "fail" {
			t.Errorf("%s failed: %s", id, c.Message)
		}
	}
}

func brokerEnv() map[string]string {
	env := validEnv()
	delete(env, "OIDC_AUDIENCE")
	env["AUTH_SERVER_MODE"] = "broker"
	env["OIDC_CLIENT_ID"] = "gateway"
	env["OIDC_CLIENT_SECRET"] = "gateway-secret"
	env["BROKER_SECRET"] = brokerTestSecret
	return env
}

// TestBrokerModeConfig: broker mode's settings, their defaults and what
// changes with the mode.
func TestBrokerModeConfig(t *testing.T) {
	c, err := parseConfig(nil, envOf(brokerEnv()), false)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	for _, ch := range []struct {
		name      string
		got, want any
	}{
		{"mode", c.BrokerMode(), true},
		{"client id", c.Broker.ClientID, "gateway"},
		{"client secret", c.Broker.ClientSecret, "gateway-secret"},
		{"secret", string(c.Broker.Secret), brokerTestSecret},
		{"access token lifetime", c.Broker.AccessTokenTTL, time.Hour},
		{"session lifetime", c.Broker.SessionTTL, 720 * time.Hour},
		{"upstream scopes", strings.Join(c.Broker.UpstreamScopes, " "), "openid email profile"},
		{"provider tokens accepted (by default)", c.AcceptProviderTokens, true},
		{"no audience needed", len(c.Provider.Audiences), 0},
		{"broker scopes: no offline_access by default", strings.Join(c.Broker.Scopes, ","), "openid,profile,email"},
		{"advertised scopes", strings.Join(c.WellKnown.Scopes, ","), "openid,profile,email"},
		{"challenged scopes", strings.Join(c.Gate.ChallengeScopes, ","), "openid,profile,email"},
		{"metadata documents accepted (by default)", c.Broker.DisableCIMD, false},
		{"no CIMD allow hosts (by default)", len(c.Broker.CIMDAllowHosts), 0},
	} {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.name, ch.got, ch.want)
		}
	}

	// The static client is the fallback for the gateway's own client, and
	// is never handed out at /oauth/register.
	env := brokerEnv()
	delete(env, "OIDC_CLIENT_ID")
	delete(env, "OIDC_CLIENT_SECRET")
	env["STATIC_CLIENT_ID"], env["STATIC_CLIENT_SECRET"] = "static", "static-secret"
	env["OIDC_SCOPES"] = "openid,email groups"
	if c, err = parseConfig(nil, envOf(env), false); err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if c.Broker.ClientID != "static" || c.Broker.ClientSecret != "static-secret" || c.WellKnown.StaticClientID != "" || c.WellKnown.StaticClientSecret != "" {
		t.Errorf("static client: broker %q/%q, wellknown %q/%q", c.Broker.ClientID, c.Broker.ClientSecret, c.WellKnown.StaticClientID, c.WellKnown.StaticClientSecret)
	}
	if got := strings.Join(c.Broker.UpstreamScopes, " "); got != "openid email groups" {
		t.Errorf("OIDC_SCOPES with commas and spaces: %q", got)
	}
	// OIDC_CLIENT_ID without a secret: a public client, not the static
	// client's secret.
	env["OIDC_CLIENT_ID"] = "public"
	if c, err = parseConfig(nil, envOf(env), false); err != nil || c.Broker.ClientID != "public" || c.Broker.ClientSecret != "" {
		t.Errorf("a public gateway client: %v %q/%q", err, c.Broker.ClientID, c.Broker.ClientSecret)
	}

	// CIMD's settings: the off switch, and the allow list as the broker
	// reads it; hosts allowed while nothing is fetched draw a warning.
	env = brokerEnv()
	env["CIMD_ENABLED"] = "false"
	env["CIMD_ALLOW_HOSTS"] = " 127.0.0.1:8443, [::1]:9000,,clients.internal "
	if c, err = parseConfig(nil, envOf(env), false); err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if got := strings.Join(c.Broker.CIMDAllowHosts, " "); !c.Broker.DisableCIMD || got != "127.0.0.1:8443 [::1]:9000 clients.internal" {
		t.Errorf("CIMD settings: DisableCIMD %v, allow hosts %q", c.Broker.DisableCIMD, got)
	}
	if w := strings.Join(c.warnings, "\n"); !strings.Contains(w, "CIMD_ALLOW_HOSTS is set but CIMD_ENABLED=false") {
		t.Errorf("warnings %q", w)
	}

	// Broker settings outside broker mode are ignored, with a warning.
	env = validEnv()
	env["BROKER_SECRET"] = brokerTestSecret
	env["OIDC_SCOPES"] = "openid"
	env["CIMD_ALLOW_HOSTS"] = "127.0.0.1:8443"
	env["CIMD_ENABLED"] = "false"
	if c, err = parseConfig(nil, envOf(env), false); err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if w := strings.Join(c.warnings, "\n"); !strings.Contains(w, "BROKER_SECRET is set but only AUTH_SERVER_MODE=broker reads it") || !strings.Contains(w, "OIDC_SCOPES") ||
		!strings.Contains(w, "CIMD_ALLOW_HOSTS is set but only AUTH_SERVER_MODE=broker reads it") || !strings.Contains(w, "CIMD_ENABLED is set but only") {
		t.Errorf("warnings %q", w)
	}
	if strings.Contains(strings.Join(c.warnings, " "), brokerTestSecret) {
		t.Error("a warning repeats the secret")
	}
}

func TestBrokerModeConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(map[string]string)
		want    []string
		notWant string
	}{
		{"no client at the provider", func(m map[string]string) { delete(m, "OIDC_CLIENT_ID"); delete(m, "OIDC_CLIENT_SECRET") },
			[]string{"AUTH_SERVER_MODE=broker needs OIDC_CLIENT_ID", "/oauth/callback"}, ""},
		{"a secret without its client", func(m map[string]string) { delete(m, "OIDC_CLIENT_ID") }, []string{"OIDC_CLIENT_SECRET is set without OIDC_CLIENT_ID"}, ""},
		{"short broker secret", func(m map[string]string) { m["BROKER_SECRET"] = "too-short-secret" },
			[]string{"BROKER_SECRET is 16 bytes long; it must be at least 32"}, "too-short-secret"},
		{"short previous secret", func(m map[string]string) { m["BROKER_SECRET_PREVIOUS"] = "old" },
			[]string{"BROKER_SECRET_PREVIOUS is 3 bytes long"}, ""},
		{"previous secret alone", func(m map[string]string) { delete(m, "BROKER_SECRET"); m["BROKER_SECRET_PREVIOUS"] = brokerTestSecret },
			[]string{"BROKER_SECRET_PREVIOUS is set without BROKER_SECRET"}, brokerTestSecret},
		{"bad access token lifetime", func(m map[string]string) { m["BROKER_ACCESS_TOKEN_TTL"] = "0" }, []string{"BROKER_ACCESS_TOKEN_TTL", "positive"}, ""},
		{"bad session lifetime", func(m map[string]string) { m["BROKER_SESSION_TTL"] = "forever" }, []string{"BROKER_SESSION_TTL", "duration"}, ""},
		{"access tokens outliving the session", func(m map[string]string) { m["BROKER_ACCESS_TOKEN_TTL"] = "2h"; m["BROKER_SESSION_TTL"] = "1h" },
			[]string{"BROKER_ACCESS_TOKEN_TTL (2h0m0s) must not exceed BROKER_SESSION_TTL (1h0m0s)"}, ""},
		{"a reuse window too long", func(m map[string]string) { m["BROKER_REFRESH_REUSE_GRACE"] = "10m" },
			[]string{"BROKER_REFRESH_REUSE_GRACE (10m0s) must be at most 5m0s"}, ""},
		{"a negative reuse window", func(m map[string]string) { m["BROKER_REFRESH_REUSE_GRACE"] = "-1s" }, []string{"BROKER_REFRESH_REUSE_GRACE"}, ""},
		{"bad upstream scope", func(m map[string]string) { m["OIDC_SCOPES"] = `openid "email"` }, []string{"OIDC_SCOPES", "RFC 6749 §3.3"}, ""},
		{"bad provider-token switch", func(m map[string]string) { m["ACCEPT_PROVIDER_TOKENS"] = "sometimes" }, []string{`ACCEPT_PROVIDER_TOKENS "sometimes" is not true or false`}, ""},
		{"provider tokens refused outside broker mode", func(m map[string]string) {
			m["AUTH_SERVER_MODE"], m["OIDC_AUDIENCE"], m["ACCEPT_PROVIDER_TOKENS"] = "facade", "aud", "false"
		}, []string{"ACCEPT_PROVIDER_TOKENS=false needs AUTH_SERVER_MODE=broker"}, ""},
		{"audience still required in facade mode", func(m map[string]string) { m["AUTH_SERVER_MODE"] = "facade" }, []string{"OIDC_AUDIENCE is required"}, ""},
		{"a private-use redirect scheme without a dot", func(m map[string]string) { m["REGISTER_REDIRECT_URIS"] = "myapp:/cb" },
			[]string{"REGISTER_REDIRECT_URIS entry rejected in broker mode", "must contain a dot", "or be listed in REGISTER_REDIRECT_SCHEMES"}, ""},
		{"cursor's callback with no scheme listed", func(m map[string]string) {
			m["REGISTER_REDIRECT_URIS"], m["REGISTER_REDIRECT_SCHEMES"] = "cursor://anysphere.cursor-mcp/oauth/callback", "none"
		}, []string{"REGISTER_REDIRECT_URIS entry rejected in broker mode", `scheme "cursor" is not allowed`}, ""},
		{"a CIMD allow host with a scheme", func(m map[string]string) { m["CIMD_ALLOW_HOSTS"] = "localhost:8443,https://client.example" },
			[]string{`CIMD_ALLOW_HOSTS entry "https://client.example": give host or host:port, without a scheme or path`}, ""},
		{"a CIMD allow host with a bad port", func(m map[string]string) { m["CIMD_ALLOW_HOSTS"] = "client.example:99999" },
			[]string{`CIMD_ALLOW_HOSTS entry "client.example:99999": the port is not a number from 1 to 65535`}, ""},
		{"a bad CIMD switch", func(m map[string]string) { m["CIMD_ENABLED"] = "off-ish" }, []string{`CIMD_ENABLED "off-ish" is not true or false`}, ""},
		{"bad mode", func(m map[string]string) { m["AUTH_SERVER_MODE"] = "brokered" }, []string{`AUTH_SERVER_MODE "brokered" is not facade or direct or broker`}, ""},
		{"a required scope the broker never grants", func(m map[string]string) { m["REQUIRED_SCOPES"] = "openid,mcp:use" },
			[]string{`REQUIRED_SCOPES names "mcp:use", which neither SCOPES_SUPPORTED nor MCP_POLICY names`}, `"openid"`},
		{"offline_access required, which broker mode does not support by default", func(m map[string]string) { m["REQUIRED_SCOPES"] = "offline_access" },
			[]string{`REQUIRED_SCOPES names "offline_access"`}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := brokerEnv()
			tc.edit(env)
			_, err := parseConfig(nil, envOf(env), false)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if tc.notWant != "" && strings.Contains(err.Error(), tc.notWant) {
				t.Errorf("error %q repeats %q", err, tc.notWant)
			}
		})
	}
}

// TestRequiredScopes: a scope every token must carry is one a client can
// be granted. Broker mode refuses any other (TestBrokerModeConfigErrors);
// in facade and direct mode the provider decides, and a scope that
// SCOPES_SUPPORTED does not advertise draws a warning.
func TestRequiredScopes(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		warn string // "": no warning about REQUIRED_SCOPES
	}{
		{"broker mode, a supported scope", map[string]string{"REQUIRED_SCOPES": "openid"}, ""},
		{"broker mode, a scope of the policy", map[string]string{
			"REQUIRED_SCOPES": "files:write", "MCP_POLICY": "tool:w=scope:files:write", "BROKER_SCOPE_GRANTS": "files:write=sub:alice",
		}, ""},
		{"broker mode, offline_access supported", map[string]string{"REQUIRED_SCOPES": "offline_access", "SCOPES_SUPPORTED": "openid,offline_access"}, ""},
		{"facade mode, an advertised scope", map[string]string{"AUTH_SERVER_MODE": "facade", "OIDC_AUDIENCE": "aud", "REQUIRED_SCOPES": "profile"}, ""},
		{"facade mode, a scope not advertised", map[string]string{"AUTH_SERVER_MODE": "facade", "OIDC_AUDIENCE": "aud", "REQUIRED_SCOPES": "mcp:use"},
			`REQUIRED_SCOPES names "mcp:use", which SCOPES_SUPPORTED does not advertise`},
		{"direct mode, a scope not advertised", map[string]string{"AUTH_SERVER_MODE": "direct", "OIDC_AUDIENCE": "aud", "REQUIRED_SCOPES": "openid,mcp:use"},
			`REQUIRED_SCOPES names "mcp:use"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := brokerEnv()
			for k, v := range tc.env {
				env[k] = v
			}
			c, err := parseConfig(nil, envOf(env), false)
			if err != nil {
				t.Fatalf("parseConfig: %v", err)
			}
			var warned []string
			for _, w := range c.warnings {
				if strings.HasPrefix(w, "REQUIRED_SCOPES") {
					warned = append(warned, w)
				}
			}
			switch {
			case tc.warn == "" && len(warned) > 0:
				t.Errorf("got warnings %q, want none", warned)
			case tc.warn != "" && (len(warned) != 1 || !strings.Contains(warned[0], tc.warn)):
				t.Errorf("got warnings %q, want one saying %q", warned, tc.warn)
			}
		})
	}
}

// TestDevModeLogin: dev mode runs broker mode against its embedded issuer,
// whose login page asks who to be: the demo identity is always allowed,
// others as ALLOW_* say, so the allow-list can be tried; the broker's
// random keys draw no warning there.
func TestDevModeLogin(t *testing.T) {
	r := startRun(t, []string{"dev"}, map[string]string{"PORT": "0", "LOG_FORMAT": "json", "ALLOW_GROUPS": "admins"})
	g := &brokerGateway{base: "http://" + r.addr(t)}
	g.mcp = g.base + "/mcp"
	testkit.WaitFor(t, "readiness", 10*time.Second, func() bool {
		resp, _ := mcpGet(t, g.base+"/readyz")
		return resp.StatusCode == http.StatusOK
	})
	if !strings.Contains(r.stdout.String(), "MCP URL:  "+g.mcp) {
		t.Fatalf("dev mode printed:\n%s", r.stdout.String())
	}
	for _, id := range []devissuer.Identity{
		{Subject: devissuer.DemoSubject, Email: devissuer.DemoEmail},
		{Subject: "zoe", Email: "zoe@example.com", Groups: []string{"admins"}},
	} {
		_, tr := g.login(t, id)
		resp, body := mcpPost(t, g.mcp, tr.AccessToken, toolsList)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"echo"`) {
			t.Errorf("%s: tools/list %d %.200s", id.Subject, resp.StatusCode, body)
		}
	}
	c := registerClient(t, g.base)
	a := newAuthRequest(c, g.mcp)
	if last, _ := authorize(t, g.base, a, devissuer.Identity{Subject: "mallory"}); last.status != http.StatusForbidden || !strings.Contains(last.body, "not allowed here") {
		t.Errorf("an identity off the allow-list: %d %.300s", last.status, last.body)
	}
	if strings.Contains(r.stderr.String(), "BROKER_SECRET") {
		t.Errorf("dev mode warned of its random keys:\n%s", r.stderr.String())
	}
}

// TestBrokerSecretWarning: without BROKER_SECRET the broker's keys are
// random, and the gateway says loudly what that costs.
func TestBrokerSecretWarning(t *testing.T) {
	is := testkit.StartIssuer(t, nil)
	r := startRun(t, nil, gatewayEnv(is.URL, map[string]string{
		"AUTH_SERVER_MODE": "broker", "OIDC_CLIENT_ID": gwClientID, "OIDC_AUDIENCE": "", "MCP_UPSTREAM_URL": "http://127.0.0.1:1",
	}))
	r.addr(t)
	if s := r.stderr.String(); !strings.Contains(s, `"@level":"warn"`) || !strings.Contains(s, "BROKER_SECRET is not set") || !strings.Contains(s, "will not survive a restart") {
		t.Errorf("no warning of random keys:\n%s", s)
	}
}

// TestBrokerModeCIMD: CIMD's settings reach the broker. A host of
// CIMD_ALLOW_HOSTS may serve a client's metadata document on loopback over
// plain http (nothing else may), and its client logs in without
// registering; with CIMD_ENABLED=false the metadata does not advertise
// metadata documents and such a client_id is refused (invalid_client)
// without a fetch.
func TestBrokerModeCIMD(t *testing.T) {
	var fetches atomic.Int32
	var id string
	docs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"client_id": id, "client_name": "Root Doc Client", "redirect_uris": []string{"http://127.0.0.1/callback"},
			"grant_types": []string{"authorization_code", "refresh_token"}, "token_endpoint_auth_method": "none",
		})
	}))
	t.Cleanup(docs.Close)
	id = docs.URL + "/client.json"
	host := strings.TrimPrefix(docs.URL, "http://")
	c := oauthClient{id: id, redirect: "http://127.0.0.1:" + freePort(t) + "/callback"}

	advertised := func(g *brokerGateway) (bool, bool) {
		var md map[string]any
		getJSONDoc(t, g.base+"/.well-known/oauth-authorization-server", &md)
		v, ok := md["client_id_metadata_document_supported"]
		return v == true, ok
	}

	g := startBroker(t, map[string]string{"CIMD_ALLOW_HOSTS": host})
	if on, _ := advertised(g); !on {
		t.Error("the metadata does not advertise client_id_metadata_document_supported: true by default")
	}
	a := newAuthRequest(c, g.mcp)
	last, b := authorize(t, g.base, a, alice)
	q := callback(t, last, a)
	tr := redeem(t, g.base, a, q.Get("code"))
	if tr.status != http.StatusOK || jwtPayload(t, tr.AccessToken)["client_id"] != id {
		t.Fatalf("redeem as the document's client: %d %s (pages %v)", tr.status, tr.Error, b.pages)
	}
	if resp, body := mcpPost(t, g.mcp, tr.AccessToken, toolsList); resp.StatusCode != http.StatusOK {
		t.Fatalf("tools/list as the document's client: %d %.200s", resp.StatusCode, body)
	}

	// The same document without CIMD_ALLOW_HOSTS: loopback over http is refused.
	g = startBroker(t, nil)
	before := fetches.Load()
	p := newBrowserClient(t, c.redirect).get(t, newAuthRequest(c, g.mcp).url(g.base))
	if p.status != http.StatusBadRequest || !strings.Contains(p.body, "only https URLs are fetched") || fetches.Load() != before {
		t.Errorf("without CIMD_ALLOW_HOSTS: %d, %d fetches: %.600s", p.status, fetches.Load()-before, p.body)
	}

	g = startBroker(t, map[string]string{"CIMD_ALLOW_HOSTS": host, "CIMD_ENABLED": "false"})
	if on, present := advertised(g); on || present {
		t.Errorf("CIMD_ENABLED=false: client_id_metadata_document_supported present %v, true %v", present, on)
	}
	p = newBrowserClient(t, c.redirect).get(t, newAuthRequest(c, g.mcp).url(g.base))
	if p.status != http.StatusBadRequest || !strings.Contains(p.body, "does not accept client metadata documents") || fetches.Load() != before {
		t.Errorf("CIMD_ENABLED=false: %d, %d fetches: %.600s", p.status, fetches.Load()-before, p.body)
	}
}

// TestPlainHTTPResourceWarning: a RESOURCE_URL in plain http off loopback
// is warned of in every mode, more strongly in broker mode; loopback, https
// and dev mode are quiet.
func TestPlainHTTPResourceWarning(t *testing.T) {
	const plain = "RESOURCE_URL http://mcp.example.com/mcp is plain http on a host that is not loopback"
	for _, tc := range []struct {
		name     string
		env      map[string]string
		dev      bool
		want     string // "": no warning about RESOURCE_URL
		notWant  string
		wantMore string
	}{
		{"facade mode", map[string]string{"AUTH_SERVER_MODE": "facade", "OIDC_AUDIENCE": "aud", "RESOURCE_URL": "http://mcp.example.com/mcp"}, false, plain, "RFC 8414", ""},
		{"direct mode", map[string]string{"AUTH_SERVER_MODE": "direct", "OIDC_AUDIENCE": "aud", "RESOURCE_URL": "http://mcp.example.com/mcp"}, false, plain, "RFC 8414", ""},
		{"broker mode", map[string]string{"RESOURCE_URL": "http://mcp.example.com/mcp"}, false, plain, "", "its issuer must be https (RFC 8414 §2)"},
		{"an address off loopback", map[string]string{"RESOURCE_URL": "http://10.0.0.5:8080/mcp"}, false, "RESOURCE_URL http://10.0.0.5:8080/mcp is plain http", "", ""},
		{"loopback", map[string]string{"RESOURCE_URL": "http://127.0.0.1:8080/mcp"}, false, "", "", ""},
		{"localhost", map[string]string{"RESOURCE_URL": "http://localhost:8080/mcp"}, false, "", "", ""},
		{"https", map[string]string{"RESOURCE_URL": "https://mcp.example.com/mcp"}, false, "", "", ""},
		{"dev mode", map[string]string{"RESOURCE_URL": "http://mcp.example.com/mcp", "LISTEN_HOST": "127.0.0.1"}, true, "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := brokerEnv()
			if tc.dev {
				delete(env, "BROKER_SECRET") // dev mode refuses it
			}
			for k, v := range tc.env {
				env[k] = v
			}
			c, err := parseConfig(nil, envOf(env), tc.dev)
			if err != nil {
				t.Fatalf("parseConfig: %v", err)
			}
			var warned []string
			for _, w := range c.warnings {
				if strings.HasPrefix(w, "RESOURCE_URL") {
					warned = append(warned, w)
				}
			}
			switch {
			case tc.want == "" && len(warned) > 0:
				t.Errorf("got warnings %q, want none", warned)
			case tc.want != "" && (len(warned) != 1 || !strings.Contains(warned[0], tc.want)):
				t.Errorf("got warnings %q, want one saying %q", warned, tc.want)
			case tc.wantMore != "" && !strings.Contains(warned[0], tc.wantMore):
				t.Errorf("got %q, want it to say %q", warned[0], tc.wantMore)
			case tc.notWant != "" && strings.Contains(warned[0], tc.notWant):
				t.Errorf("got %q, want it not to say %q", warned[0], tc.notWant)
			}
		})
	}
}
