// Package e2e proves the whole chain with components nobody here wrote: a real OIDC provider
// (npm oidc-provider, provider.mjs), a real MCP server (npm
// @modelcontextprotocol/server-everything) launched by the gateway itself through npx, and
// real MCP clients (the TypeScript SDK 1.x through client.mjs, the 2026-07-28 client 2.x
// through client-v2.mjs, the Go SDK, MCP Inspector's CLI), and a real browser (Debian's
// chromium through browser.mjs).
//
// It needs node, npm and `npm ci` run in this directory, and for some tests Debian's
// chromium, redis-server and nginx; a test that lacks one skips with a message naming it, or
// fails when CI is set. See README.md.
package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"
)

func base64URLDecode(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }

func TestE2E(t *testing.T) {
	t.Parallel()
	needSuite(t)
	timed(t, "1-ts-sdk-facade-static-client", scenarioTSFacade)
	timed(t, "2-ts-sdk-direct-provider-dcr", scenarioTSDirect)
	timed(t, "3-go-sdk-client-credentials", scenarioGoSDK)
	timed(t, "4-child-crash", scenarioCrash)
	timed(t, "5-shutdown", scenarioShutdown)
	timed(t, "6-rate-limit", scenarioRateLimit)
}

// tsResult is what client.mjs prints.
type tsResult struct {
	OK       bool   `json:"ok"`
	Error    string `json:"error"`
	Denied   string `json:"denied"`
	Requests []struct {
		Method          string `json:"method"`
		URL             string `json:"url"`
		RPC             string `json:"rpc"`
		Status          int    `json:"status"`
		ContentType     string `json:"contentType"`
		WWWAuthenticate string `json:"wwwAuthenticate"`
	} `json:"requests"`
	Flow struct {
		Registration struct {
			ClientID                string `json:"client_id"`
			TokenEndpointAuthMethod string `json:"token_endpoint_auth_method"`
			HasSecret               bool   `json:"has_secret"`
		} `json:"registration"`
		Authorization struct {
			Endpoint            string            `json:"endpoint"`
			Params              map[string]string `json:"params"`
			CodeChallengeMethod string            `json:"code_challenge_method"`
			Hops                []string          `json:"hops"`
		} `json:"authorization"`
		Tokens struct {
			RefreshToken bool           `json:"refresh_token"`
			Claims       map[string]any `json:"access_token_claims"`
		} `json:"tokens"`
		Refreshed []struct {
			Claims map[string]any `json:"access_token_claims"`
		} `json:"refreshed"`
		Browser browserResult `json:"browser"` // with --browser: the browser part of browser.mjs's report
	} `json:"flow"`
	SessionID        string   `json:"sessionId"`
	Tools            []string `json:"tools"`
	Echo             string   `json:"echo"`
	EchoAfterRefresh string   `json:"echoAfterRefresh"` // with --refresh
	LongRunning      struct {
		Tool        string           `json:"tool"`
		Progress    []map[string]any `json:"progress"`
		Text        string           `json:"text"`
		ContentType string           `json:"contentType"`
	} `json:"longRunning"`
	Resource struct {
		URI        string `json:"uri"`
		TextLength int    `json:"textLength"`
		BlobLength int    `json:"blobLength"`
	} `json:"resource"`
	ElapsedMs int `json:"elapsedMs"`
}

// runTSClient runs client.mjs against the gateway with the system node and decodes its report.
func runTSClient(t *testing.T, g *gateway, extra ...string) tsResult {
	t.Helper()
	return runTSClientWith(t, "node", g, extra...)
}

// runTSClientWith runs client.mjs with the given node binary (Node 22 for --browser).
func runTSClientWith(t *testing.T, node string, g *gateway, extra ...string) tsResult {
	t.Helper()
	args := append([]string{"client.mjs", g.resource, "--redirect-port", strconv.Itoa(freePort(t))}, extra...)
	out, stderr, err := runScript(t, node, 60*time.Second, nil, args...)
	var r tsResult
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		t.Fatalf("client.mjs %v: no JSON report (%v)\nstdout:\n%s\nstderr:\n%s", extra, err, out, stderr)
	}
	if err != nil || !r.OK {
		t.Fatalf("client.mjs %v failed (%v): %s\nreport:\n%s\nstderr:\n%s", extra, err, r.Error, out, stderr)
	}
	t.Logf("client.mjs: %d HTTP requests, %d ms", len(r.Requests), r.ElapsedMs)
	return r
}

// checkTSSession asserts the MCP part of a TypeScript SDK run whose login was at issuer.
func checkTSSession(t *testing.T, g *gateway, issuer string, r tsResult) {
	t.Helper()
	first := r.Requests[0]
	if first.URL != g.resource || first.Status != http.StatusUnauthorized {
		t.Errorf("first request: want POST %s -> 401, got %s %s -> %d", g.resource, first.Method, first.URL, first.Status)
	}
	wantPRM := g.url + "/.well-known/oauth-protected-resource/mcp"
	if !strings.Contains(first.WWWAuthenticate, `resource_metadata="`+wantPRM+`"`) {
		t.Errorf("401 challenge: want resource_metadata=%q, got %q", wantPRM, first.WWWAuthenticate)
	}
	if r.Flow.Authorization.Params["resource"] != g.resource {
		t.Errorf("authorization request resource: want %q, got %q", g.resource, r.Flow.Authorization.Params["resource"])
	}
	if r.Flow.Authorization.CodeChallengeMethod != "S256" {
		t.Errorf("PKCE: want S256, got %q", r.Flow.Authorization.CodeChallengeMethod)
	}
	if r.Flow.Authorization.Endpoint != issuer+"/auth" {
		t.Errorf("authorization endpoint: want the provider's %s/auth, got %s", issuer, r.Flow.Authorization.Endpoint)
	}
	if aud := r.Flow.Tokens.Claims["aud"]; aud != g.resource {
		t.Errorf("access token aud: want %q, got %v", g.resource, aud)
	}
	if email := r.Flow.Tokens.Claims["email"]; email != "alice@example.com" {
		t.Errorf("access token email: want alice@example.com, got %v", email)
	}
	if !r.Flow.Tokens.RefreshToken {
		t.Errorf("no refresh token was issued")
	}
	if r.SessionID == "" {
		t.Errorf("no Mcp-Session-Id came back through the gateway")
	}
	for _, want := range []string{"echo", "trigger-long-running-operation"} {
		if !contains(r.Tools, want) {
			t.Errorf("tools/list: %q missing from %v", want, r.Tools)
		}
	}
	if r.Echo != "Echo: hello through the gateway" {
		t.Errorf("tools/call echo: got %q", r.Echo)
	}
	if len(r.LongRunning.Progress) < 4 {
		t.Errorf("long-running tool: want 4 progress notifications, got %v", r.LongRunning.Progress)
	}
	if !strings.HasPrefix(r.LongRunning.ContentType, "text/event-stream") {
		t.Errorf("long-running tool: want its answer streamed as text/event-stream, got %q", r.LongRunning.ContentType)
	}
	if !strings.Contains(r.LongRunning.Text, "completed") {
		t.Errorf("long-running tool result: %q", r.LongRunning.Text)
	}
	if r.Resource.URI == "" || r.Resource.TextLength+r.Resource.BlobLength == 0 {
		t.Errorf("resources/read: empty result %+v", r.Resource)
	}
	// Every MCP request after the login carried the token and got through.
	for _, q := range r.Requests[1:] {
		if strings.HasPrefix(q.URL, g.resource) && q.Status >= 400 {
			t.Errorf("MCP request after login failed: %s %s (%s) -> %d", q.Method, q.URL, q.RPC, q.Status)
		}
	}
}

// requestsTo returns the recorded requests whose URL starts with prefix.
func requestsTo(r tsResult, method, prefix string) []int {
	var out []int
	for _, q := range r.Requests {
		if q.Method == method && strings.HasPrefix(q.URL, prefix) {
			out = append(out, q.Status)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Scenario 1: the TypeScript SDK, facade mode, a static client handed out by the gateway.
func scenarioTSFacade(t *testing.T) {
	g := startGateway(t, map[string]string{
		"AUTH_SERVER_MODE":     "facade",
		"STATIC_CLIENT_ID":     staticClientID,
		"STATIC_CLIENT_SECRET": staticClientSecret,
	})
	r := runTSClient(t, g, "--login-hint", "alice@example.com")
	checkTSSession(t, g, harness.issuer, r)

	if st := requestsTo(r, "GET", g.url+"/.well-known/oauth-authorization-server"); len(st) == 0 || st[0] != http.StatusOK {
		t.Errorf("facade: the SDK should read authorization-server metadata from the gateway, got %v", st)
	}
	if st := requestsTo(r, "GET", harness.issuer+"/.well-known/"); len(st) != 0 {
		t.Errorf("facade: the SDK read metadata from the provider directly: %v", st)
	}
	if st := requestsTo(r, "POST", g.url+"/oauth/register"); len(st) != 1 || st[0] != http.StatusCreated {
		t.Errorf("facade: want one POST /oauth/register -> 201 at the gateway, got %v", st)
	}
	reg := r.Flow.Registration
	if reg.ClientID != staticClientID || !reg.HasSecret {
		t.Errorf("facade registration: want client %q with a secret, got %+v", staticClientID, reg)
	}
	if reg.TokenEndpointAuthMethod != "client_secret_post" {
		t.Errorf("facade registration: the provider advertises only client_secret_post for secrets (%s); the gateway handed out %q",
			providerAuthMethods, reg.TokenEndpointAuthMethod)
	}
	if st := requestsTo(r, "POST", harness.issuer+"/token"); len(st) != 1 || st[0] != http.StatusOK {
		t.Errorf("token request at the provider: %v", st)
	}

	// A user the allow-list does not name logs in fine and is then refused by the gateway.
	bob := runTSClient(t, g, "--login-hint", "bob@example.com", "--expect-denied")
	last := bob.Requests[len(bob.Requests)-1]
	if last.URL != g.resource || last.Status != http.StatusForbidden {
		t.Errorf("bob (not allow-listed): want the gateway's 403 last, got %s %s -> %d (%s)", last.Method, last.URL, last.Status, bob.Denied)
	}
}

// Scenario 2: the TypeScript SDK, direct mode, registering with the provider's own DCR.
func scenarioTSDirect(t *testing.T) {
	g := startGateway(t, map[string]string{"AUTH_SERVER_MODE": "direct"})

	var prm struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
	}
	getJSON(t, g.url+"/.well-known/oauth-protected-resource/mcp", http.StatusOK, &prm)
	if prm.Resource != g.resource || len(prm.AuthorizationServers) != 1 || prm.AuthorizationServers[0] != harness.issuer {
		t.Errorf("direct: protected-resource metadata: want resource %q and authorization_servers [%q], got %+v", g.resource, harness.issuer, prm)
	}
	getJSON(t, g.url+"/.well-known/oauth-authorization-server", http.StatusNotFound, nil)
	// No static client: /oauth/register is 404 and never proxied, with or without a token.
	tok := clientCredentials(t, providerTokenEndpoint(t), "svc-allowed", "svc-allowed-secret", g.resource)
	for _, bearer := range []string{"", tok} {
		req, _ := http.NewRequest(http.MethodPost, g.url+"/oauth/register", strings.NewReader(`{"redirect_uris":["http://127.0.0.1:1/callback"]}`))
		req.Header.Set("Content-Type", "application/json")
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || strings.Contains(string(body), "Cannot POST") {
			t.Errorf("direct: POST /oauth/register (token: %v): want the gateway's own 404, never proxied; got %d %q",
				bearer != "", resp.StatusCode, tail(string(body), 3))
		}
	}

	r := runTSClient(t, g, "--login-hint", "alice@example.com")
	checkTSSession(t, g, harness.issuer, r)
	if st := requestsTo(r, "POST", harness.issuer+"/reg"); len(st) != 1 || st[0] != http.StatusCreated {
		t.Errorf("direct: want one registration at the provider's endpoint, got %v", st)
	}
	if st := requestsTo(r, "GET", g.url+"/.well-known/oauth-authorization-server"); len(st) != 0 {
		t.Errorf("direct: the SDK asked the gateway for authorization-server metadata: %v", st)
	}
	reg := r.Flow.Registration
	if reg.ClientID == "" || reg.ClientID == staticClientID || reg.TokenEndpointAuthMethod != "none" {
		t.Errorf("direct: want a fresh public client from the provider's DCR, got %+v", reg)
	}
}

// recorder keeps the status of every HTTP exchange made through it.
type recorder struct {
	base http.RoundTripper
	mu   sync.Mutex
	log  []exchange
}

type exchange struct {
	method, path string
	status       int
	challenge    string
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	if err == nil {
		r.mu.Lock()
		r.log = append(r.log, exchange{req.Method, req.URL.Path, resp.StatusCode, resp.Header.Get("WWW-Authenticate")})
		r.mu.Unlock()
	}
	return resp, err
}

func (r *recorder) statuses() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for _, e := range r.log {
		out = append(out, e.status)
	}
	return out
}

func (r *recorder) find(status int) []exchange {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []exchange
	for _, e := range r.log {
		if e.status == status {
			out = append(out, e)
		}
	}
	return out
}

// ccHandler is a go-sdk auth.OAuthHandler for a service identity: on a 401 or 403 it follows
// the challenge's resource_metadata to the authorization server and gets a client_credentials
// token for the resource. Getting a new token this way is the service's "refresh".
type ccHandler struct {
	clientID, secret string
	resource         string // "" : the resource from the protected-resource metadata
	mu               sync.Mutex
	ts               oauth2.TokenSource
	fetches          int
	tokens           []string
}

func (h *ccHandler) TokenSource(context.Context) (oauth2.TokenSource, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ts, nil
}

func (h *ccHandler) Authorize(ctx context.Context, req *http.Request, resp *http.Response) error {
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	prmURL := challengeParam(resp.Header.Get("WWW-Authenticate"), "resource_metadata")
	if prmURL == "" {
		return fmt.Errorf("HTTP %d without a resource_metadata challenge (%q)", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	var prm struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
	}
	if err := fetchJSON(ctx, prmURL, &prm); err != nil {
		return err
	}
	if len(prm.AuthorizationServers) == 0 {
		return errors.New("no authorization_servers in the protected-resource metadata")
	}
	var asm struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	as := strings.TrimRight(prm.AuthorizationServers[0], "/")
	if err := fetchJSON(ctx, as+"/.well-known/oauth-authorization-server", &asm); err != nil {
		if err2 := fetchJSON(ctx, as+"/.well-known/openid-configuration", &asm); err2 != nil {
			return fmt.Errorf("authorization-server metadata: %v; %v", err, err2)
		}
	}
	resource := h.resource
	if resource == "" {
		resource = prm.Resource
	}
	tok, err := fetchClientCredentials(ctx, http.DefaultClient, asm.TokenEndpoint, h.clientID, h.secret, resource)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.fetches++
	h.tokens = append(h.tokens, tok)
	h.ts = oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok, TokenType: "Bearer"})
	h.mu.Unlock()
	return nil
}

func (h *ccHandler) token(i int) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if i < 0 {
		i += len(h.tokens)
	}
	if i < 0 || i >= len(h.tokens) {
		return ""
	}
	return h.tokens[i]
}

func (h *ccHandler) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fetches
}

func challengeParam(challenge, name string) string {
	i := strings.Index(challenge, name+`="`)
	if i < 0 {
		return ""
	}
	rest := challenge[i+len(name)+2:]
	if j := strings.IndexByte(rest, '"'); j >= 0 {
		return rest[:j]
	}
	return ""
}

func fetchJSON(ctx context.Context, u string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d: %s", u, resp.StatusCode, b)
	}
	return json.Unmarshal(b, into)
}

// goSession connects the Go SDK client through the gateway.
func goSession(ctx context.Context, g *gateway, h *ccHandler, rec *recorder) (*mcp.ClientSession, error) {
	client := mcp.NewClient(&mcp.Implementation{Name: "mcp-oauth-proxy-e2e-go", Version: "1.0.0"}, nil)
	tr := &mcp.StreamableClientTransport{
		Endpoint:             g.resource,
		HTTPClient:           &http.Client{Transport: rec},
		OAuthHandler:         h,
		DisableStandaloneSSE: true,
		MaxRetries:           -1,
	}
	return client.Connect(ctx, tr, nil)
}

func echo(ctx context.Context, cs *mcp.ClientSession, msg string) (string, error) {
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": msg}})
	if err != nil {
		return "", err
	}
	if res.IsError || len(res.Content) == 0 {
		return "", fmt.Errorf("echo: tool error %+v", res)
	}
	tc, ok := res.Content[0].(*mcp.TextContent)
	if !ok {
		return "", fmt.Errorf("echo: content %T", res.Content[0])
	}
	return tc.Text, nil
}

// Scenario 3: the Go SDK with client_credentials tokens.
func scenarioGoSDK(t *testing.T) {
	g := startGateway(t, map[string]string{"CLOCK_SKEW": "0s"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("allowed", func(t *testing.T) {
		rec := &recorder{base: http.DefaultTransport}
		h := &ccHandler{clientID: "svc-allowed", secret: "svc-allowed-secret"}
		cs, err := goSession(ctx, g, h, rec)
		if err != nil {
			t.Fatalf("connect as svc-allowed: %v (wire: %v)", err, rec.statuses())
		}
		defer cs.Close()
		tools, err := cs.ListTools(ctx, nil)
		if err != nil || len(tools.Tools) == 0 {
			t.Fatalf("tools/list: %v %v", err, tools)
		}
		if got, err := echo(ctx, cs, "from go"); err != nil || got != "Echo: from go" {
			t.Fatalf("echo: %q %v", got, err)
		}
		if st := rec.statuses(); len(st) == 0 || st[0] != http.StatusUnauthorized {
			t.Errorf("want the first request answered 401 (no token yet), got %v", st)
		}
		if n := h.count(); n != 1 {
			t.Errorf("want one token fetched, got %d", n)
		}
		if aud := jwtClaims(h.token(0))["aud"]; aud != g.resource {
			t.Errorf("token aud: want %q, got %v", g.resource, aud)
		}
	})

	t.Run("no-allow-list-403", func(t *testing.T) {
		rec := &recorder{base: http.DefaultTransport}
		h := &ccHandler{clientID: "svc-denied", secret: "svc-denied-secret"}
		cs, err := goSession(ctx, g, h, rec)
		if err == nil {
			cs.Close()
			t.Fatalf("svc-denied (sub, email and groups on no allow-list) connected")
		}
		if len(rec.find(http.StatusForbidden)) == 0 {
			t.Errorf("want a 403 for svc-denied, wire: %v (err %v)", rec.statuses(), err)
		}
		// The same, request by request.
		tok := h.token(-1)
		resp, body, err := mcpPost(ctx, g.resource, tok, "", initializeMsg(1))
		if err != nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST with svc-denied's token: want 403, got %v %v %s", resp, err, body)
		}
	})

	t.Run("other-audience-401", func(t *testing.T) {
		other := fmt.Sprintf("http://127.0.0.1:%d/mcp", freePort(t))
		tok := clientCredentials(t, providerTokenEndpoint(t), "svc-allowed", "svc-allowed-secret", other)
		if aud := jwtClaims(tok)["aud"]; aud != other {
			t.Fatalf("provider: token aud %v, want %q", aud, other)
		}
		resp, body, err := mcpPost(ctx, g.resource, tok, "", initializeMsg(1))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("token for another audience: want 401, got %d: %s", resp.StatusCode, body)
		}
		if ch := resp.Header.Get("WWW-Authenticate"); !strings.Contains(ch, `error="invalid_token"`) || !strings.Contains(ch, "resource_metadata=") {
			t.Errorf("401 challenge: want error=\"invalid_token\" and resource_metadata, got %q", ch)
		}
		// And through the SDK, whose handler keeps asking for the wrong audience: refused.
		rec := &recorder{base: http.DefaultTransport}
		h := &ccHandler{clientID: "svc-allowed", secret: "svc-allowed-secret", resource: other}
		if cs, err := goSession(ctx, g, h, rec); err == nil {
			cs.Close()
			t.Errorf("the Go SDK connected with a token for %s", other)
		}
	})

	t.Run("expired-401-then-refresh", func(t *testing.T) {
		rec := &recorder{base: http.DefaultTransport}
		h := &ccHandler{clientID: "svc-short", secret: "svc-short-secret"}
		cs, err := goSession(ctx, g, h, rec)
		if err != nil {
			t.Fatalf("connect as svc-short: %v (wire %v)", err, rec.statuses())
		}
		defer cs.Close()
		if got, err := echo(ctx, cs, "fresh"); err != nil || got != "Echo: fresh" {
			t.Fatalf("echo with a fresh token: %q %v", got, err)
		}
		first := h.token(0)
		exp, _ := jwtClaims(first)["exp"].(float64)
		if exp == 0 {
			t.Fatalf("token has no exp: %v", jwtClaims(first))
		}
		iat, _ := jwtClaims(first)["iat"].(float64)
		if life := exp - iat; life > 10 {
			t.Fatalf("provider: svc-short's token lives %vs, want %ds (SHORT_TOKEN_TTL)", life, shortTokenTTL)
		}
		wait := time.Until(time.Unix(int64(exp), 0)) + 1500*time.Millisecond
		t.Logf("waiting %s for svc-short's %ds token to expire", wait.Round(time.Millisecond), shortTokenTTL)
		time.Sleep(wait)

		resp, body, err := mcpPost(ctx, g.resource, first, "", initializeMsg(1))
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("expired token: want 401, got %v %v %s", resp, err, body)
		}
		if ch := resp.Header.Get("WWW-Authenticate"); !strings.Contains(ch, `error="invalid_token"`) {
			t.Errorf("expired token challenge: want error=\"invalid_token\", got %q", ch)
		}

		before := len(rec.find(http.StatusUnauthorized))
		got, err := echo(ctx, cs, "after refresh")
		if err != nil || got != "Echo: after refresh" {
			t.Fatalf("echo after the token expired: want the SDK to get a new token and succeed, got %q %v (wire %v)", got, err, rec.statuses())
		}
		if after := len(rec.find(http.StatusUnauthorized)); after != before+1 {
			t.Errorf("want exactly one 401 for the expired token in the session, got %d (wire %v)", after-before, rec.statuses())
		}
		if n := h.count(); n != 2 {
			t.Errorf("want two token fetches (initial + refresh), got %d", n)
		}
	})
}

// Scenario 4: SIGKILL the MCP server mid-session; 503 + Retry-After while it restarts, then a
// new session works.
func scenarioCrash(t *testing.T) {
	// Probing every 100 ms must not run into the rate limit (503s count against it too).
	g := startGateway(t, map[string]string{"MCP_SPAWN_RESTART_INITIAL": "1s", "RATE_LIMIT_RPM": "100000"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tok := clientCredentials(t, providerTokenEndpoint(t), "svc-allowed", "svc-allowed-secret", g.resource)
	staticTS := func() *ccHandler {
		return &ccHandler{ts: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok, TokenType: "Bearer"})}
	}

	cs, err := goSession(ctx, g, staticTS(), &recorder{base: http.DefaultTransport})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer cs.Close()
	if _, err := echo(ctx, cs, "before crash"); err != nil {
		t.Fatalf("echo before the crash: %v", err)
	}
	victim := g.serverProcess(t)
	t.Logf("SIGKILL server-everything pid %d (%s)", victim.pid, victim.cmdline)
	killed := time.Now()
	if err := syscall.Kill(victim.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}

	// Probe with new sessions until one succeeds; record what the gateway said meanwhile.
	type probe struct {
		at         time.Duration
		status     int
		retryAfter string
	}
	var probes []probe
	var saw503 bool
	for {
		if time.Since(killed) > 45*time.Second {
			t.Fatalf("no successful request within 45s of the crash; probes: %+v", probes)
		}
		resp, body, err := mcpPost(ctx, g.resource, tok, "", initializeMsg(1))
		if err != nil {
			t.Fatalf("probe: %v", err)
		}
		p := probe{time.Since(killed).Round(time.Millisecond), resp.StatusCode, resp.Header.Get("Retry-After")}
		if len(probes) == 0 || probes[len(probes)-1].status != p.status {
			probes = append(probes, p)
		}
		if resp.StatusCode == http.StatusOK {
			break
		}
		if resp.StatusCode == http.StatusServiceUnavailable {
			saw503 = true
			if _, ok := retryAfter(resp.Header); !ok {
				t.Errorf("503 at %s without a valid Retry-After (%q): %s", p.at, p.retryAfter, body)
			}
		} else {
			// Even before the supervisor has noticed the crash, a refused
			// connection to a spawned child is a 503: it is coming back.
			t.Errorf("while restarting: want 503 + Retry-After, got %d at %s: %s", resp.StatusCode, p.at, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("status changes after the crash: %+v", probes)
	if !saw503 {
		t.Errorf("never saw 503 while the child restarted (probes %+v)", probes)
	}
	fresh := g.serverProcess(t)
	if fresh.pid == victim.pid {
		t.Errorf("the server process was not replaced")
	}

	cs2, err := goSession(ctx, g, staticTS(), &recorder{base: http.DefaultTransport})
	if err != nil {
		t.Fatalf("new session after the restart: %v", err)
	}
	defer cs2.Close()
	if got, err := echo(ctx, cs2, "after restart"); err != nil || got != "Echo: after restart" {
		t.Fatalf("echo in a new session after the restart: %q %v", got, err)
	}
}

// Scenario 5: SIGTERM with a stream open: exit within the grace, with the child's status, and
// nothing of the process tree left.
func scenarioShutdown(t *testing.T) {
	g := startGateway(t, map[string]string{"SHUTDOWN_GRACE": "5s"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tok := clientCredentials(t, providerTokenEndpoint(t), "svc-allowed", "svc-allowed-secret", g.resource)

	resp, body, err := mcpPost(ctx, g.resource, tok, "", initializeMsg(1))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("initialize: %v %v %s", resp, err, body)
	}
	sid := resp.Header.Get("Mcp-Session-Id")
	if sid == "" {
		t.Fatalf("no session id")
	}
	if resp, body, err := mcpPost(ctx, g.resource, tok, sid, map[string]any{"jsonrpc": "2.0", "method": "notifications/initialized"}); err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("notifications/initialized: %v %v %s", resp, err, body)
	}

	// The standalone SSE stream: GET /mcp with the session.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.resource, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Mcp-Session-Id", sid)
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	stream, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET stream: %v", err)
	}
	defer stream.Body.Close()
	if stream.StatusCode != http.StatusOK || !strings.HasPrefix(stream.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("GET stream: %d %s", stream.StatusCode, stream.Header.Get("Content-Type"))
	}
	streamEnded := make(chan time.Time, 1)
	go func() {
		sc := bufio.NewScanner(stream.Body)
		for sc.Scan() {
		}
		streamEnded <- time.Now()
	}()
	time.Sleep(300 * time.Millisecond)
	select {
	case <-streamEnded:
		t.Fatalf("the SSE stream ended before the shutdown")
	default:
	}

	tree := descendants(g.pid())
	if len(tree) == 0 {
		t.Fatalf("the gateway has no child processes")
	}
	t.Logf("process tree before SIGTERM: %d processes", len(tree))
	sent := time.Now()
	if err := syscall.Kill(g.pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.done:
	case <-time.After(g.grace + 5*time.Second):
		t.Fatalf("the gateway did not exit within %s of SIGTERM (grace %s)", g.grace+5*time.Second, g.grace)
	}
	took := time.Since(sent)
	t.Logf("the gateway exited %s after SIGTERM (grace %s): %v", took.Round(time.Millisecond), g.grace, g.err)
	if took > g.grace+time.Second {
		t.Errorf("exit took %s, more than the grace %s", took, g.grace)
	}
	select {
	case end := <-streamEnded:
		t.Logf("the open stream ended %s after SIGTERM", end.Sub(sent).Round(time.Millisecond))
	case <-time.After(2 * time.Second):
		t.Errorf("the open SSE stream was still open after the gateway exited")
	}

	// The gateway's exit status is the child's, as it logged it.
	code := g.cmd.ProcessState.ExitCode()
	var logged []string
	childStatus := -1
	for _, l := range g.logLines() {
		msg, _ := l["@message"].(string)
		if s, ok := l["status"].(float64); ok {
			logged = append(logged, fmt.Sprintf("%s: status %v", msg, s))
			if msg == "stopped" {
				childStatus = int(s)
			}
		}
	}
	t.Logf("exit status %d; status lines in the log: %v", code, logged)
	if childStatus < 0 {
		t.Errorf("the gateway logged no final status line (\"stopped\" with status)")
	} else if code != childStatus {
		t.Errorf("exit status %d differs from the child status it logged (%d)", code, childStatus)
	}

	// Nothing of the tree is left.
	deadline := time.Now().Add(2 * time.Second)
	for {
		left := alive(tree)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, p := range left {
				t.Errorf("left running after the gateway exited: pid %d %s (%s)", p.pid, p.comm, p.cmdline)
			}
			killAll(left)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(g.spawned), time.Second); err == nil {
		c.Close()
		t.Errorf("something still listens on the child's port %d", g.spawned)
	}
}

// Scenario 6: RATE_LIMIT_RPM=5; a burst of 10 from one identity gets 429 + Retry-After while
// another identity proceeds.
func scenarioRateLimit(t *testing.T) {
	g := startGateway(t, map[string]string{"RATE_LIMIT_RPM": "5"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	te := providerTokenEndpoint(t)
	a := clientCredentials(t, te, "svc-allowed", "svc-allowed-secret", g.resource)
	b := clientCredentials(t, te, "svc-other", "svc-other-secret", g.resource)

	var statuses []int
	var limited int
	for i := 0; i < 10; i++ {
		resp, body, err := mcpPost(ctx, g.resource, a, "", initializeMsg(i+1))
		if err != nil {
			t.Fatal(err)
		}
		statuses = append(statuses, resp.StatusCode)
		switch resp.StatusCode {
		case http.StatusOK:
		case http.StatusTooManyRequests:
			limited++
			if n, ok := retryAfter(resp.Header); !ok || n < 1 {
				t.Errorf("429 without a valid Retry-After (%q): %s", resp.Header.Get("Retry-After"), body)
			}
		default:
			t.Errorf("request %d: unexpected %d: %s", i+1, resp.StatusCode, body)
		}
	}
	t.Logf("burst of 10 from svc-allowed: %v", statuses)
	if ok := 10 - limited; ok > 5 || ok < 4 {
		t.Errorf("want about 5 admitted (burst = RATE_LIMIT_RPM) and the rest 429, got %v", statuses)
	}
	if statuses[0] != http.StatusOK || statuses[9] != http.StatusTooManyRequests {
		t.Errorf("want the burst to start admitted and end limited, got %v", statuses)
	}
	resp, body, err := mcpPost(ctx, g.resource, b, "", initializeMsg(1))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("another identity (svc-other) during svc-allowed's limit: want 200, got %v %v %s", resp, err, body)
	}
}
