package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/devissuer"
)

// TestNoSecretsInLogs runs the gateway at LOG_LEVEL=trace with a static
// client, registers, sends valid and invalid tokens every way a client
// might (header, query, cookie, Basic), then looks for every token, every
// token's signature, and the client secret in every log line.
func TestNoSecretsInLogs(t *testing.T) {
	const secret = "s3cr3t-static-client-secret-0123456789"
	g := startGateway(t, map[string]string{
		"LOG_LEVEL":            "trace",
		"STATIC_CLIENT_ID":     "static-client",
		"STATIC_CLIENT_SECRET": secret,
	}, nil)

	resp, err := http.Post(g.base+"/oauth/register", "application/json",
		strings.NewReader(`{"redirect_uris":["http://127.0.0.1:33418/callback"],"token_endpoint_auth_method":"client_secret_post","client_name":"test"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || !strings.Contains(string(b), secret) {
		t.Fatalf("registration: got %d %s, want 201 with the static client's secret", resp.StatusCode, b)
	}

	valid := g.token(t, "alice", map[string]any{"email": "alice@example.com"})
	tokens := map[string]string{
		"valid":          valid,
		"other subject":  g.token(t, "mallory", nil),
		"wrong audience": mustToken(t, g, "alice", "https://other.example.com", time.Hour),
		"expired":        mustToken(t, g, "alice", gwAudience, -time.Hour),
		"tampered":       tamper(valid),
	}
	send := func(method, path string, h http.Header) int {
		req, _ := http.NewRequest(method, g.base+path, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for name, tok := range tokens {
		statuses := []int{
			send("POST", "/mcp", http.Header{"Authorization": {"Bearer " + tok}}),
			send("POST", "/mcp?access_token="+tok, http.Header{"Authorization": {"Bearer " + tok}}),
			send("GET", "/mcp?access_token="+tok, nil),
			send("GET", "/mcp", http.Header{"Cookie": {"access_token=" + tok}}),
			send("POST", "/mcp", http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("static-client:"+tok))}}),
			send("POST", "/mcp", http.Header{"Authorization": {"Bearer " + tok, "Bearer " + tok}}),
			send("POST", "/mcp/"+tok[:40]+"%2f..", http.Header{"Authorization": {"Bearer " + tok}}),
		}
		t.Logf("%s: %v", name, statuses)
		if name == "valid" && statuses[0] != 200 {
			t.Errorf("valid token: got %d, want 200", statuses[0])
		}
	}
	send("POST", "/mcp", http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("static-client:"+secret))}})
	send("POST", "/oauth/token?client_secret="+secret, nil)
	send("GET", "/mcp?client_secret="+secret, nil)

	logs := g.logs.String()
	if !strings.Contains(logs, `"@level":"trace"`) && !strings.Contains(logs, `"@level":"debug"`) {
		t.Logf("no trace or debug lines were written")
	}
	needles := map[string]string{"static client secret": secret}
	for name, tok := range tokens {
		parts := strings.Split(tok, ".")
		needles[name+" token"] = tok
		needles[name+" token signature"] = parts[2]
		needles[name+" token payload"] = parts[1]
	}
	lines := strings.Split(logs, "\n")
	for _, line := range lines {
		for what, s := range needles {
			if strings.Contains(line, s) {
				t.Errorf("the %s appears in the log line %.300s", what, line)
			}
		}
	}
	t.Logf("%d log lines checked", len(lines))
}

// tamper changes the token's payload without re-signing it.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	p, _ := base64.RawURLEncoding.DecodeString(parts[1])
	p = []byte(strings.Replace(string(p), `"alice"`, `"admin"`, 1))
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(p) + "." + parts[2]
}

// TestNoSecretsInBrokerLogs runs broker mode at LOG_LEVEL=trace through
// what its log lines are about (logins, a code redeemed twice, refreshes, a
// refresh token reused after its grace, a refusal at the provider's
// refresh, revocation, MCP calls, requests with bad credentials), then looks
// for every credential the flow carried in every line: the codes, the PKCE
// verifiers, the access and refresh tokens (and their parts), the
// gateway's client secret at the provider, BROKER_SECRET, the cookies.
func TestNoSecretsInBrokerLogs(t *testing.T) {
	g := startBroker(t, map[string]string{"LOG_LEVEL": "trace", "BROKER_REFRESH_REUSE_GRACE": "0", "ALLOW_SUBS": "alice,bob"})
	needles := map[string]string{"BROKER_SECRET": brokerTestSecret, "OIDC_CLIENT_SECRET": gwClientSecret}
	note := func(what, v string) {
		if len(v) < 8 {
			t.Fatalf("%s %q: too short to look for", what, v)
		}
		needles[what] = v
		for i, part := range strings.Split(v, ".") {
			if len(part) >= 16 {
				needles[fmt.Sprintf("%s part %d", what, i)] = part
			}
		}
	}
	bob := devissuer.Identity{Subject: "bob", Email: "bob@example.com"}
	for _, id := range []devissuer.Identity{alice, bob} {
		c := registerClient(t, g.base)
		a := newAuthRequest(c, g.mcp)
		last, b := authorize(t, g.base, a, id)
		for _, ck := range b.c.Jar.Cookies(mustParseURL(t, g.base)) {
			note(id.Subject+" cookie "+ck.Name, ck.Value)
		}
		code := callback(t, last, a).Get("code")
		note(id.Subject+" code", code)
		note(id.Subject+" verifier", a.verifier)
		tr := redeem(t, g.base, a, code)
		if tr.status != http.StatusOK {
			t.Fatalf("redeem: %d %s", tr.status, tr.Error)
		}
		note(id.Subject+" access token", tr.AccessToken)
		note(id.Subject+" refresh token", tr.RefreshToken)
		if resp, body := mcpPost(t, g.mcp, tr.AccessToken, toolsList); resp.StatusCode != http.StatusOK {
			t.Fatalf("MCP call: %d %.200s", resp.StatusCode, body)
		}
		if again := redeem(t, g.base, a, code); again.status != http.StatusBadRequest {
			t.Errorf("the code again: %d, want 400", again.status)
		}
		// The code's reuse revoked its family: sign in again for the rest.
		a = newAuthRequest(c, g.mcp)
		last, _ = authorize(t, g.base, a, id)
		code = callback(t, last, a).Get("code")
		note(id.Subject+" second code", code)
		note(id.Subject+" second verifier", a.verifier)
		tr = redeem(t, g.base, a, code)
		note(id.Subject+" second access token", tr.AccessToken)
		note(id.Subject+" second refresh token", tr.RefreshToken)
		if id.Subject == "bob" {
			g.is.SetDisabled("bob", true)
			if rt := refresh(t, g.base, c, tr.RefreshToken, g.mcp); rt.status != http.StatusBadRequest {
				t.Errorf("refresh of a disabled user: %d, want 400", rt.status)
			}
			continue
		}
		rt := refresh(t, g.base, c, tr.RefreshToken, g.mcp)
		if rt.status != http.StatusOK {
			t.Fatalf("refresh: %d %s", rt.status, rt.Error)
		}
		note("refreshed access token", rt.AccessToken)
		note("refreshed refresh token", rt.RefreshToken)
		refresh(t, g.base, c, tr.RefreshToken, g.mcp) // reused: ends the session
		tokenRequest(t, g.base, url.Values{"token": {rt.AccessToken}, "client_id": {c.id}}, "")
		for _, form := range []url.Values{
			{"token": {rt.RefreshToken}, "client_id": {c.id}},
			{"token": {rt.AccessToken}, "client_id": {c.id}},
		} {
			resp, err := http.PostForm(g.base+"/oauth/revoke", form)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		mcpPost(t, g.mcp, rt.AccessToken, toolsList)
		mcpPost(t, g.mcp, tamper(rt.AccessToken), toolsList)
		tokenRequest(t, g.base, url.Values{"grant_type": {"authorization_code"}, "code": {code[:len(code)-4] + "AAAA"}, "client_id": {c.id},
			"redirect_uri": {c.redirect}, "code_verifier": {a.verifier}}, "")
	}

	logs := g.run.stderr.String()
	if !strings.Contains(logs, `"@level":"trace"`) && !strings.Contains(logs, `"@level":"debug"`) {
		t.Logf("no trace or debug lines were written")
	}
	lines := strings.Split(logs, "\n")
	for _, line := range lines {
		for what, s := range needles {
			if strings.Contains(line, s) {
				t.Errorf("the %s appears in the log line %.300s", what, line)
			}
		}
	}
	t.Logf("%d log lines checked for %d secrets", len(lines), len(needles))
}

func mustParseURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
