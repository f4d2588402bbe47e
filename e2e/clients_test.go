package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ts2Result is what client-v2.mjs prints.
type ts2Result struct {
	OK          bool   `json:"ok"`
	Error       string `json:"error"`
	ErrorDetail struct {
		Name     string `json:"name"`
		Kind     string `json:"kind"`
		Expected string `json:"expected"`
		Received string `json:"received"`
	} `json:"errorDetail"`
	Denied   string `json:"denied"`
	Requests []struct {
		Method          string `json:"method"`
		URL             string `json:"url"`
		RPC             string `json:"rpc"`
		Grant           string `json:"grant"`
		Status          int    `json:"status"`
		WWWAuthenticate string `json:"wwwAuthenticate"`
	} `json:"requests"`
	Flow struct {
		Registration struct {
			ClientID                string `json:"client_id"`
			TokenEndpointAuthMethod string `json:"token_endpoint_auth_method"`
			Issuer                  string `json:"issuer"`
		} `json:"registration"`
		Authorization struct {
			Endpoint            string            `json:"endpoint"`
			Params              map[string]string `json:"params"`
			CodeChallengeMethod string            `json:"code_challenge_method"`
			Hops                []string          `json:"hops"`
			Consent             string            `json:"consent"` // the words of the consent page approved
		} `json:"authorization"`
		// Every authorization the SDK started (the login, step-ups), and the scope of every
		// token response.
		Authorizations []struct {
			ClientID  string `json:"client_id"`
			Scope     string `json:"scope"`
			Performed bool   `json:"performed"`
		} `json:"authorizations"`
		Grants                []string      `json:"grants"`
		Browser               browserResult `json:"browser"` // with --browser: the browser part of browser.mjs's report
		AuthorizationResponse struct {
			Iss          string `json:"iss"`
			StateMatches bool   `json:"state_matches"`
			Code         bool   `json:"code"`
		} `json:"authorization_response"`
		Tokens struct {
			RefreshToken bool           `json:"refresh_token"`
			Claims       map[string]any `json:"access_token_claims"`
		} `json:"tokens"`
		Refreshed []struct {
			Claims map[string]any `json:"access_token_claims"`
		} `json:"refreshed"`
	} `json:"flow"`
	ProtocolVersion  string   `json:"protocolVersion"`
	Era              string   `json:"era"`
	Tools            []string `json:"tools"`
	Echo             string   `json:"echo"`
	EchoAfterRefresh string   `json:"echoAfterRefresh"`
	Calls            []struct {
		Tool      string `json:"tool"`
		OK        bool   `json:"ok"`
		Text      string `json:"text"`
		Error     string `json:"error"`
		ErrorName string `json:"errorName"`
		Attempts  int    `json:"attempts"`
		StepUps   int    `json:"stepUps"`
	} `json:"calls"` // --call
	ElapsedMs int `json:"elapsedMs"`
}

// runTS2Client runs client-v2.mjs (@modelcontextprotocol/client 2.x) against the gateway and
// decodes its report; the run must succeed, which with --expect-error means it failed with
// that error.
func runTS2Client(t *testing.T, g *gateway, extra ...string) ts2Result {
	t.Helper()
	return runTS2ClientAt(t, "node", g.resource, extra...)
}

// runTS2ClientAt runs client-v2.mjs with the given node binary (Node 22 for --browser)
// against the MCP URL mcpURL.
func runTS2ClientAt(t *testing.T, node, mcpURL string, extra ...string) ts2Result {
	t.Helper()
	needNodeModule(t, "@modelcontextprotocol/client")
	args := append([]string{"client-v2.mjs", mcpURL, "--redirect-port", strconv.Itoa(freePort(t))}, extra...)
	out, stderr, err := runScript(t, node, 60*time.Second, nil, args...)
	var r ts2Result
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		t.Fatalf("client-v2.mjs %v: no JSON report (%v)\nstdout:\n%s\nstderr:\n%s", extra, err, out, stderr)
	}
	if err != nil || !r.OK {
		t.Fatalf("client-v2.mjs %v failed (%v): %s\nreport:\n%s\nstderr:\n%s", extra, err, r.Error, out, stderr)
	}
	t.Logf("client-v2.mjs: %d HTTP requests, %d ms", len(r.Requests), r.ElapsedMs)
	return r
}

// count returns how many recorded requests match method, URL prefix and (if set) grant.
func (r ts2Result) count(method, prefix, grant string, status int) int {
	n := 0
	for _, q := range r.Requests {
		if q.Method == method && strings.HasPrefix(q.URL, prefix) && (grant == "" || q.Grant == grant) && (status == 0 || q.Status == status) {
			n++
		}
	}
	return n
}

// TestStrictClient runs the 2026-07-28 TypeScript client, which enforces RFC 8414 §3.3 (the
// metadata's issuer) and RFC 9207 (the authorization response's iss), through both of today's
// modes: direct mode passes; facade mode fails at the last step of the login, because the
// provider's iss is not the issuer the gateway's metadata names.
func TestStrictClient(t *testing.T) {
	t.Parallel()
	needSuite(t)
	timed(t, "ts-client-2x-direct", func(t *testing.T) {
		g := startGateway(t, map[string]string{"AUTH_SERVER_MODE": "direct"})
		r := runTS2Client(t, g, "--login-hint", "alice@example.com", "--refresh")
		if r.Flow.AuthorizationResponse.Iss != harness.issuer || !r.Flow.AuthorizationResponse.StateMatches {
			t.Errorf("authorization response: want iss %q and our state, got %+v", harness.issuer, r.Flow.AuthorizationResponse)
		}
		if r.Flow.Authorization.Params["resource"] != g.resource || r.Flow.Authorization.CodeChallengeMethod != "S256" {
			t.Errorf("authorization request: want resource %q and S256, got %+v", g.resource, r.Flow.Authorization)
		}
		if n := r.count("POST", harness.issuer+"/reg", "", http.StatusCreated); n != 1 {
			t.Errorf("want one registration at the provider, got %d", n)
		}
		if r.Flow.Registration.Issuer != harness.issuer {
			t.Errorf("the client filed its registration under issuer %q, want %q", r.Flow.Registration.Issuer, harness.issuer)
		}
		if aud := r.Flow.Tokens.Claims["aud"]; aud != g.resource {
			t.Errorf("access token aud: want %q, got %v", g.resource, aud)
		}
		if !contains(r.Tools, "echo") || r.Echo != "Echo: hello through the gateway" {
			t.Errorf("tools/list and tools/call: tools %v, echo %q", r.Tools, r.Echo)
		}
		// --refresh: the spoiled token got a 401, the SDK refreshed at the provider and the
		// call went through with a new token.
		if n := r.count("POST", harness.issuer+"/token", "refresh_token", http.StatusOK); n != 1 {
			t.Errorf("want one refresh_token grant at the provider, got %d", n)
		}
		if r.EchoAfterRefresh != "Echo: after the refresh" {
			t.Errorf("tools/call after the refresh: %q", r.EchoAfterRefresh)
		}
		if len(r.Flow.Refreshed) != 1 || r.Flow.Refreshed[0].Claims["jti"] == r.Flow.Tokens.Claims["jti"] {
			t.Errorf("want one new access token from the refresh, got %+v", r.Flow.Refreshed)
		}
		if n := r.count("POST", g.resource, "", http.StatusUnauthorized); n != 2 {
			t.Errorf("want exactly two 401s from the gateway (before the login, and the spoiled token), got %d", n)
		}
		t.Logf("negotiated %s (%s era)", r.ProtocolVersion, r.Era)
	})

	timed(t, "ts-client-2x-facade-iss-mismatch", func(t *testing.T) {
		g := startGateway(t, map[string]string{
			"AUTH_SERVER_MODE":     "facade",
			"STATIC_CLIENT_ID":     staticClientID,
			"STATIC_CLIENT_SECRET": staticClientSecret,
		})
		r := runTS2Client(t, g, "--login-hint", "alice@example.com", "--expect-error", "IssuerMismatchError")
		d := r.ErrorDetail
		if d.Kind != "authorization_response" || d.Expected != g.url || d.Received != harness.issuer {
			t.Errorf("want IssuerMismatchError(authorization_response) expecting the gateway %q and receiving the provider %q, got %+v",
				g.url, harness.issuer, d)
		}
		// The metadata checks passed (the gateway's metadata names the gateway), the login at
		// the provider passed, and the client refused the code before redeeming it.
		if n := r.count("GET", g.url+"/.well-known/oauth-authorization-server", "", http.StatusOK); n == 0 {
			t.Errorf("the client never read the gateway's authorization-server metadata")
		}
		if n := r.count("POST", g.url+"/oauth/register", "", http.StatusCreated); n != 1 {
			t.Errorf("want one registration at the gateway, got %d", n)
		}
		if r.Flow.AuthorizationResponse.Iss != harness.issuer || !r.Flow.AuthorizationResponse.Code {
			t.Errorf("want a code with the provider's iss, got %+v", r.Flow.AuthorizationResponse)
		}
		if n := r.count("POST", harness.issuer+"/token", "", 0); n != 0 {
			t.Errorf("the code was redeemed %d times despite the mismatch", n)
		}
	})
}

// TestInspectorCLI runs MCP Inspector's CLI (Node 22) against `mcp-oauth-proxy dev` with the
// token dev mode prints, as the README tells a newcomer to.
func TestInspectorCLI(t *testing.T) {
	t.Parallel()
	needSuite(t)
	timed(t, "inspector-cli-dev-mode", func(t *testing.T) {
		node := node22(t)
		cli := inspectorCLI(t)
		mcpURL, token := startDev(t)
		home := t.TempDir() // the CLI keeps a catalog under $HOME
		run := func(args ...string) ([]byte, string, error) {
			all := append([]string{cli, "--cli", mcpURL, "--transport", "http"}, args...)
			return runScript(t, node, 60*time.Second, []string{"HOME=" + home}, all...)
		}
		bearer := "Authorization: Bearer " + token

		out, stderr, err := run("--header", bearer, "--method", "tools/list")
		if err != nil {
			t.Fatalf("inspector tools/list: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr)
		}
		var list struct {
			Tools []struct {
				Name string `json:"name"`
			} `json:"tools"`
		}
		if err := json.Unmarshal(out, &list); err != nil {
			t.Fatalf("inspector tools/list output: %v\n%s", err, out)
		}
		var names []string
		for _, tl := range list.Tools {
			names = append(names, tl.Name)
		}
		for _, want := range []string{"echo", "count"} {
			if !contains(names, want) {
				t.Errorf("tools/list through the inspector: %q missing from %v", want, names)
			}
		}

		out, stderr, err = run("--header", bearer, "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "message=from the inspector")
		if err != nil || !strings.Contains(string(out), `"from the inspector"`) {
			t.Errorf("inspector tools/call echo: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr)
		}

		// Without the token the gateway refuses, and the inspector says so.
		out, stderr, err = run("--method", "tools/list")
		if err == nil {
			t.Errorf("inspector tools/list without a token succeeded:\n%s", out)
		} else {
			t.Logf("without a token: %v: %s", err, strings.TrimSpace(stderr))
		}
	})
}

// inspectorCLI finds the installed Inspector's command from its package.json.
func inspectorCLI(t *testing.T) string {
	t.Helper()
	needNodeModule(t, "@modelcontextprotocol/inspector")
	dir := filepath.Join(harness.dir, "node_modules", "@modelcontextprotocol", "inspector")
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct {
		Bin map[string]string `json:"bin"`
	}
	if err := json.Unmarshal(b, &pkg); err != nil || pkg.Bin["mcp-inspector"] == "" {
		t.Fatalf("inspector package.json names no mcp-inspector command: %v %s", err, b)
	}
	return filepath.Join(dir, filepath.FromSlash(pkg.Bin["mcp-inspector"]))
}

// startDev runs `mcp-oauth-proxy dev` (its embedded issuer and demo server) on a free port
// and returns the MCP URL and the token it prints; stopped at cleanup.
func startDev(t *testing.T) (mcpURL, token string) {
	t.Helper()
	mcpURL, token, _ = startDevWith(t, nil)
	return mcpURL, token
}

// startDevWith is startDev with settings (MCP_SPAWN_CMD, ALLOW_GROUPS, ...) and arguments of
// its own; it also returns everything dev mode printed up to the token's commands.
func startDevWith(t *testing.T, settings map[string]string, args ...string) (mcpURL, token, printed string) {
	t.Helper()
	port := freePort(t)
	logPath := filepath.Join(t.TempDir(), "dev.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(harness.bin, append([]string{"dev"}, args...)...)
	cmd.Dir = harness.dir
	cmd.Env = os.Environ()
	for _, k := range []string{"OIDC_ISSUER_URL", "OIDC_AUDIENCE", "RESOURCE_URL", "ALLOW_SUBS", "ALLOW_EMAILS", "ALLOW_GROUPS",
		"MCP_UPSTREAM_URL", "MCP_SPAWN_CMD", "STATIC_CLIENT_ID", "STATIC_CLIENT_SECRET", "AUTH_SERVER_MODE", "LISTEN_HOST",
		"OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET", "BROKER_SECRET", "ACCEPT_PROVIDER_TOKENS"} {
		cmd.Env = append(cmd.Env, k+"=")
	}
	cmd.Env = append(cmd.Env, "PORT="+strconv.Itoa(port))
	for k, v := range settings {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	p, err := startProc("dev", cmd)
	if err != nil {
		t.Fatal(err)
	}
	// The banner ends with the commands that use the token, from TOKEN= to done.
	jwtPattern := regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+`)
	banner := make(chan [3]string, 1)
	var lines strings.Builder
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		var u, tok string
		for sc.Scan() {
			line := sc.Text()
			lines.WriteString(line + "\n")
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "MCP URL:"); ok {
				u = strings.TrimSpace(rest)
			}
			if found := jwtPattern.FindString(line); found != "" && u != "" && tok == "" {
				tok = found
			}
			if line == "done" && tok != "" {
				banner <- [3]string{u, tok, lines.String()}
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	t.Cleanup(func() {
		p.kill()
		logf.Close()
		if t.Failed() {
			t.Logf("dev mode's log:\n%s", tail(readFile(logPath), 40))
		}
	})
	select {
	case v := <-banner:
		mcpURL, token, printed = v[0], v[1], v[2]
	case <-p.done:
		t.Fatalf("dev mode exited: %v\n%s", p.err, readFile(logPath))
	case <-time.After(30 * time.Second):
		t.Fatalf("dev mode printed no MCP URL, token and commands within 30s") // lines is the reader's
	}
	if want := fmt.Sprintf("http://127.0.0.1:%d/mcp", port); mcpURL != want {
		t.Errorf("dev mode's MCP URL: got %q, want %q", mcpURL, want)
	}
	// Ready: the demo server answers behind the gateway.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(strings.TrimSuffix(mcpURL, "/mcp") + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return mcpURL, token, printed
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev mode not ready after 30s: %v %v\n%s", resp, err, tail(readFile(logPath), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBrowserLogin runs the TypeScript SDK 1.x flow in direct mode with the provider's login
// and consent done in Chromium, as a person would: HTML forms, cookies, redirects.
func TestBrowserLogin(t *testing.T) {
	t.Parallel()
	needSuite(t)
	timed(t, "browser-ts-sdk-direct", func(t *testing.T) {
		node := node22(t)
		chromium(t)
		needNodeModule(t, "puppeteer-core")
		issuer := startInteractiveProvider(t)
		g := startGateway(t, map[string]string{"AUTH_SERVER_MODE": "direct", "OIDC_ISSUER_URL": issuer})
		steps, _ := json.Marshal([]browserStep{
			{"fill": "input[name=email]", "value": "alice@example.com"},
			{"click": "#login"},
			{"expectText": "mcp-oauth-proxy e2e", "selector": "#client"},
			{"click": "#approve"},
		})
		r := runTSClientWith(t, node, g, "--browser", string(steps))
		checkTSSession(t, g, issuer, r)
		b := r.Flow.Browser
		if len(b.ConsoleErrors)+len(b.PageErrors) != 0 {
			t.Errorf("the login pages logged errors: console %v, page %v", b.ConsoleErrors, b.PageErrors)
		}
		var login, consent bool
		for _, p := range b.Pages {
			if strings.HasPrefix(p.URL, issuer+"/interaction/") && p.Status == http.StatusOK {
				if !login {
					login = true
				} else {
					consent = true
				}
			}
		}
		if !login || !consent {
			t.Errorf("want the provider's login and consent pages shown (200), got %+v", b.Pages)
		}
		last := b.Pages[len(b.Pages)-1]
		if !strings.Contains(last.URL, "/callback?code=") {
			t.Errorf("the browser did not end at the redirect URI with a code: %+v", last)
		}
		for _, c := range b.Cookies {
			if strings.HasPrefix(c.Name, "_session") && (!c.HTTPOnly || c.SameSite != "Lax") {
				t.Errorf("provider session cookie %+v: want HttpOnly and SameSite=Lax", c)
			}
		}
		t.Logf("browser: %d pages, %d ms", len(b.Pages), b.ElapsedMs)
	})
}
