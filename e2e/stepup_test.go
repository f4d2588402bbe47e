package e2e

import (
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The policy of the step-up scenarios, on server-everything's tools: get-env (it prints the
// server's environment) needs the scope env:read, which the broker grants only to the group
// mcp-users (alice is in it, bob is not); get-sum is for mcp-users only, so bob is denied it
// outright and never sees it listed.
const (
	stepUpPolicy = "tool:get-env=scope:env:read; tool:get-sum=group:mcp-users"
	stepUpGrants = "env:read=group:mcp-users"
)

func stepUpSettings(extra map[string]string) map[string]string {
	s := map[string]string{
		"MCP_POLICY":          stepUpPolicy,
		"BROKER_SCOPE_GRANTS": stepUpGrants,
		"ALLOW_EMAILS":        "alice@example.com,bob@example.com",
		// oidc-provider releases the groups claim for the groups scope only.
		"OIDC_SCOPES": "openid email profile groups",
	}
	for k, v := range extra {
		s[k] = v
	}
	return brokerSettings(s)
}

// startProviderAs runs another provider.mjs for one test whose scripted login logs in email
// (the broker does not pass a client's login_hint on, so the suite's provider always logs in
// alice); it returns the issuer.
func startProviderAs(t *testing.T, email string) string {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "provider-"+email+".log")
	p, issuer, err := startProvider(harness.dir, logPath, "DEFAULT_LOGIN="+email)
	if p != nil {
		t.Cleanup(func() {
			p.kill()
			if t.Failed() {
				t.Logf("provider (%s) log (tail):\n%s", email, tail(readFile(logPath), 60))
			}
		})
	}
	if err != nil {
		t.Fatalf("starting a provider for %s: %v\n%s", email, err, readFile(logPath))
	}
	return issuer
}

// challenges lists the WWW-Authenticate headers of the 403s the gateway answered MCP requests
// with.
func (r ts2Result) challenges(mcpURL string) []string {
	var out []string
	for _, q := range r.Requests {
		if q.Method == http.MethodPost && q.URL == mcpURL && q.Status == http.StatusForbidden {
			out = append(out, q.WWWAuthenticate)
		}
	}
	return out
}

// TestStepUp runs step-up authorization (MCP 2026-07-28, RFC 6750 §3.1) end to end: the
// TypeScript client 2.x in front of the gateway in broker mode with oidc-provider upstream,
// MCP_POLICY and BROKER_SCOPE_GRANTS. alice calls get-env, gets 403 insufficient_scope with
// scope="env:read", the SDK authorizes again asking for its scopes plus env:read, the broker
// grants it (she is in mcp-users), and the repeated call passes. bob gets the same challenge
// and a token without env:read: his repeated call is refused again and the client gives up;
// his listing lacks the tool he is denied outright.
func TestStepUp(t *testing.T) {
	needSuite(t)
	sum := `get-sum:{"a":2,"b":3}`

	timed(t, "step-up-granted", func(t *testing.T) {
		g := startGateway(t, stepUpSettings(nil))
		r := runTS2Client(t, g, "--call", "get-env", "--call", sum)
		if !contains(r.Tools, "get-env") || !contains(r.Tools, "get-sum") {
			t.Errorf("alice's tools/list %v: want get-env and get-sum", r.Tools)
		}
		if len(r.Calls) != 2 {
			t.Fatalf("calls: %+v", r.Calls)
		}
		env, s := r.Calls[0], r.Calls[1]
		if !env.OK || env.StepUps != 1 || env.Attempts != 2 || !strings.Contains(env.Text, `"PATH"`) {
			t.Errorf("get-env: want it to pass after one step-up, got %+v", env)
		}
		if strings.Contains(env.Text, brokerSecret) {
			t.Error("the MCP server's environment holds BROKER_SECRET")
		}
		if !s.OK || s.StepUps != 0 || !strings.Contains(s.Text, "5") {
			t.Errorf("get-sum: want it to pass at once, got %+v", s)
		}
		ch := r.challenges(g.resource)
		if len(ch) != 1 || !strings.Contains(ch[0], `error="insufficient_scope"`) || !strings.Contains(ch[0], `scope="env:read"`) ||
			!strings.Contains(ch[0], `resource_metadata="`+g.url+"/.well-known/oauth-protected-resource") {
			t.Errorf("want one 403 challenge for env:read, got %q", ch)
		}
		// The SDK's step-up: the scopes it holds plus the challenge's, in a new authorization
		// (a refresh cannot widen them, RFC 6749 §6).
		az := r.Flow.Authorizations
		if len(az) != 2 || !az[0].Performed || !az[1].Performed || scopeHas(az[0].Scope, "env:read") ||
			!scopeHas(az[1].Scope, "env:read") || !scopeHas(az[1].Scope, "openid") {
			t.Errorf("authorizations: want the login and one step-up adding env:read, got %+v", az)
		}
		if n := r.count("POST", g.url+"/oauth/token", "authorization_code", http.StatusOK); n != 2 || r.count("POST", g.url+"/oauth/token", "refresh_token", 0) != 0 {
			t.Errorf("want two codes redeemed and no refresh, got %d", n)
		}
		if gr := r.Flow.Grants; len(gr) != 2 || scopeHas(gr[0], "env:read") || !scopeHas(gr[1], "env:read") {
			t.Errorf("granted scopes %q: want env:read only after the step-up", gr)
		}
		if len(r.Flow.Refreshed) != 1 || !scopeHas(r.Flow.Refreshed[0].Claims["scope"], "env:read") {
			t.Errorf("the step-up's access token: %+v", r.Flow.Refreshed)
		}
	})

	timed(t, "step-up-refused-listing-filtered", func(t *testing.T) {
		g := startGateway(t, stepUpSettings(map[string]string{"OIDC_ISSUER_URL": startProviderAs(t, "bob@example.com")}))
		r := runTS2Client(t, g, "--call", "get-env", "--call", sum)
		checkBrokerLoginOf(t, r, "bob@example.com")
		// Listings lose what the policy denies; a tool refused only for a scope stays listed
		// (calling it is what starts the step-up).
		if contains(r.Tools, "get-sum") || !contains(r.Tools, "get-env") || !contains(r.Tools, "echo") {
			t.Errorf("bob's tools/list %v: want get-env and echo, not get-sum", r.Tools)
		}
		if len(r.Calls) != 2 {
			t.Fatalf("calls: %+v", r.Calls)
		}
		env, s := r.Calls[0], r.Calls[1]
		if env.OK || env.StepUps != 1 || env.Attempts != 2 || env.ErrorName != "UnauthorizedError" {
			t.Errorf("get-env: want it refused after one step-up, got %+v", env)
		}
		ch := r.challenges(g.resource)
		if len(ch) != 3 || !strings.Contains(ch[0], `scope="env:read"`) || ch[1] != ch[0] || ch[2] != "" {
			t.Errorf("want the same env:read challenge twice, then get-sum's plain 403, got %q", ch)
		}
		// What the SDK does: it starts an authorization for every insufficient_scope refusal
		// whose scopes the token lacks (its own retry limit, maxStepUpRetries=1, counts only
		// authorizations finished without a redirect); the host stops it: the third one is
		// declined.
		az := r.Flow.Authorizations
		if len(az) != 3 || !az[0].Performed || !az[1].Performed || az[2].Performed || !scopeHas(az[1].Scope, "env:read") || !scopeHas(az[2].Scope, "env:read") {
			t.Errorf("authorizations: want the login, one step-up, and a second step-up declined, got %+v", az)
		}
		if gr := r.Flow.Grants; len(gr) != 2 || scopeHas(gr[0], "env:read") || scopeHas(gr[1], "env:read") {
			t.Errorf("granted scopes %q: bob must never get env:read", gr)
		}
		if s.OK || s.StepUps != 0 || !strings.Contains(s.Error, "-31403") || !strings.Contains(s.Error, `\"get-sum\"`) {
			t.Errorf("get-sum: want a plain refusal naming the tool, no step-up, got %+v", s)
		}
	})
}

// checkBrokerLoginOf checks that the first access token is the gateway's, for email.
func checkBrokerLoginOf(t *testing.T, r ts2Result, email string) {
	t.Helper()
	if c := r.Flow.Tokens.Claims; c["email"] != email {
		t.Fatalf("the login's access token is for %v, want %s", c["email"], email)
	}
}

// scopeHas reports whether a space-separated scope string (RFC 6749 §3.3) has s.
func scopeHas(scope any, s string) bool {
	str, _ := scope.(string)
	return slices.Contains(strings.Fields(str), s)
}
