package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/demo"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// doctorResult is what `doctor --json` printed and how it exited.
type doctorResult struct {
	status int
	out    string
	checks map[string]struct{ Status, Message, Fix string }
}

// runDoctorCmd runs `mcp-oauth-proxy doctor args...` through run, as main does.
func runDoctorCmd(t *testing.T, args ...string) doctorResult {
	t.Helper()
	var stdout, stderr testkit.LogBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := run(ctx, append([]string{"mcp-oauth-proxy", "doctor"}, args...), envOf(nil), &stdout, &stderr)
	r := doctorResult{status: exitStatus(err), out: stdout.String() + stderr.String()}
	var doc struct {
		Checks []struct{ ID, Status, Message, Fix string } `json:"checks"`
	}
	if json.Unmarshal([]byte(stdout.String()), &doc) == nil {
		r.checks = map[string]struct{ Status, Message, Fix string }{}
		for _, c := range doc.Checks {
			r.checks[c.ID] = struct{ Status, Message, Fix string }{c.Status, c.Message, c.Fix}
		}
	}
	return r
}

// startGatewayAt runs the gateway in-process with RESOURCE_URL on its own
// loopback address, as doctor must reach it, in front of the demo server.
func startGatewayAt(t *testing.T, issuerURL string, extra map[string]string) string {
	t.Helper()
	mcpURL, _ := startGatewayRun(t, issuerURL, extra)
	return mcpURL
}

// startGatewayRun is startGatewayAt, also returning the run (its logs).
func startGatewayRun(t *testing.T, issuerURL string, extra map[string]string) (string, *running) {
	t.Helper()
	upstream := httptest.NewServer(demo.Handler())
	t.Cleanup(upstream.Close)
	port := freePort(t)
	base := "http://127.0.0.1:" + port
	env := map[string]string{
		"PORT":               port,
		"RESOURCE_URL":       base + "/mcp",
		"OIDC_AUDIENCE":      base + "/mcp",
		"MCP_UPSTREAM_URL":   upstream.URL,
		"CORS_ALLOW_ORIGINS": "http://localhost:6274",
	}
	for k, v := range extra {
		env[k] = v
	}
	gw := startRun(t, nil, gatewayEnv(issuerURL, env))
	if got := gw.addr(t); got != "127.0.0.1:"+port {
		t.Fatalf("the gateway listens on %s, want 127.0.0.1:%s", got, port)
	}
	waitReady(t, base)
	return base + "/mcp", gw
}

// TestDoctorFacadeWithAProviderThatSendsIss: facade mode rewrites the
// issuer while the provider, which advertises RFC 9207 iss, runs the login:
// doctor fails it with the fix.
func TestDoctorFacadeWithAProviderThatSendsIss(t *testing.T) {
	is := testkit.StartIssuer(t, nil)
	is.Extra = map[string]any{
		"authorization_response_iss_parameter_supported": true,
		"code_challenge_methods_supported":               []string{"S256"},
	}
	mcpURL := startGatewayAt(t, is.URL, map[string]string{"AUTH_SERVER_MODE": "facade"})

	r := runDoctorCmd(t, "--json", mcpURL)
	if r.status != 1 {
		t.Errorf("exit status %d, want 1\n%s", r.status, r.out)
	}
	c := r.checks["as.iss"]
	if c.Status != "fail" || !strings.Contains(c.Message, "is a rewrite of "+is.URL) || !strings.Contains(c.Fix, "AUTH_SERVER_MODE=broker") {
		t.Errorf("as.iss: %+v, want the facade failure naming %s with the broker fix\n%s", c, is.URL, r.out)
	}
	for _, id := range []string{"challenge", "challenge.metadata", "prm", "prm.resource", "prm.authorization_servers", "as.discovery", "as.issuer", "as.pkce"} {
		if got := r.checks[id].Status; got != "ok" {
			t.Errorf("%s: %s (%s), want ok", id, got, r.checks[id].Message)
		}
	}

	// Without the provider's iss, facade mode is only suspicious.
	is2 := testkit.StartIssuer(t, nil)
	is2.Extra = map[string]any{
		"authorization_response_iss_parameter_supported": false,
		"code_challenge_methods_supported":               []string{"S256"},
	}
	mcpURL = startGatewayAt(t, is2.URL, map[string]string{"AUTH_SERVER_MODE": "facade"})
	r = runDoctorCmd(t, "--json", mcpURL)
	if got := r.checks["as.iss"].Status; got != "warn" {
		t.Errorf("as.iss without iss advertised: %s, want warn\n%s", got, r.out)
	}
}

// TestDoctorDirect: direct mode hands clients the provider itself; with a
// provider that advertises S256 nothing fails.
func TestDoctorDirect(t *testing.T) {
	is := testkit.StartIssuer(t, nil)
	is.Extra = map[string]any{
		"authorization_response_iss_parameter_supported": true,
		"code_challenge_methods_supported":               []string{"S256"},
	}
	mcpURL := startGatewayAt(t, is.URL, map[string]string{"AUTH_SERVER_MODE": "direct"})

	r := runDoctorCmd(t, "--json", mcpURL)
	if r.status != 0 {
		t.Errorf("exit status %d, want 0\n%s", r.status, r.out)
	}
	want := map[string]string{
		"challenge": "ok", "prm": "ok", "prm.resource": "ok", "prm.authorization_servers": "ok",
		"as.discovery": "ok", "as.issuer": "ok", "as.endpoints": "ok", "as.pkce": "ok", "as.iss": "ok",
		"as.registration": "warn", // the embedded issuer offers no registration
	}
	for id, st := range want {
		if got := r.checks[id].Status; got != st {
			t.Errorf("%s: %s (%s), want %s", id, got, r.checks[id].Message, st)
		}
	}
	if msg := r.checks["as.discovery"].Message; !strings.Contains(msg, is.URL+"/.well-known/openid-configuration") {
		t.Errorf("as.discovery: %q, want the provider's OpenID configuration", msg)
	}

	// The text form: one line per check, the fix under each warning.
	r = runDoctorCmd(t, mcpURL)
	if r.status != 0 || !strings.Contains(r.out, "ok    as.issuer") || !strings.Contains(r.out, "fix: ") || !strings.Contains(r.out, " 0 FAIL") {
		t.Errorf("text output (exit %d):\n%s", r.status, r.out)
	}
}

func TestDoctorUsage(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want int
	}{
		{"no url", nil, 2},
		{"not a url", []string{"mcp.example.com"}, 2},
		{"two urls", []string{"https://a.example/mcp", "https://b.example/mcp"}, 2},
		{"unknown flag", []string{"--frobnicate", "https://a.example/mcp"}, 2},
		{"help", []string{"--help"}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if r := runDoctorCmd(t, tt.args...); r.status != tt.want {
				t.Errorf("exit status %d, want %d\n%s", r.status, tt.want, r.out)
			}
		})
	}
	// Flags after the URL count too: --json here makes the output JSON.
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	r := runDoctorCmd(t, srv.URL+"/mcp", "--json", "--request-timeout", "2s")
	if r.checks == nil || r.checks["challenge"].Status != "fail" || r.status != 1 {
		t.Errorf("flags after the URL: exit %d\n%s", r.status, r.out)
	}
}

// TestDoctorUsageHidesTheClientSecret: DOCTOR_CLIENT_SECRET is not shown
// by the usage that --help, a flag mistake and a missing URL print (the
// flag package prints each flag's default), and is still the secret used.
func TestDoctorUsageHidesTheClientSecret(t *testing.T) {
	const secret = "doctor-client-s3cret-0123456789"
	for _, args := range [][]string{{"--help"}, {"--no-such-flag"}, {}, {"--json"}} {
		var stdout, stderr testkit.LogBuffer
		err := run(context.Background(), append([]string{"mcp-oauth-proxy", "doctor"}, args...),
			envOf(map[string]string{"DOCTOR_CLIENT_SECRET": secret}), &stdout, &stderr)
		out := stdout.String() + stderr.String()
		if err != nil {
			out += err.Error()
		}
		if !strings.Contains(out, "client-secret") {
			t.Errorf("doctor %q: no usage printed:\n%s", args, out)
		}
		if strings.Contains(out, secret) {
			t.Errorf("doctor %q shows DOCTOR_CLIENT_SECRET:\n%s", args, out)
		}
	}
}
