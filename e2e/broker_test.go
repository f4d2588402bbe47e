package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"golang.org/x/oauth2"
)

// brokerSettings are a gateway's settings in broker mode, with oidc-provider as the provider:
// the gateway's own client there, its secret, and the provider's access tokens accepted for
// machine clients (OIDC_AUDIENCE stays the resource, which is not the client id).
func brokerSettings(extra map[string]string) map[string]string {
	s := map[string]string{
		"AUTH_SERVER_MODE":   "broker",
		"OIDC_CLIENT_ID":     gatewayClientID,
		"OIDC_CLIENT_SECRET": gatewayClientSecret,
		"BROKER_SECRET":      brokerSecret,
	}
	for k, v := range extra {
		s[k] = v
	}
	return s
}

// TestBrokerMode runs MCP clients through the gateway in broker mode in front of
// oidc-provider: each registers at the gateway, is approved on the gateway's consent page,
// the user logs in at the provider, the gateway's callback answers the client with its own
// code and iss, and the client redeems it for the gateway's tokens, calls a tool through the
// gate, refreshes and calls again.
func TestBrokerMode(t *testing.T) {
	t.Parallel()
	needSuite(t)
	timed(t, "broker-ts-client-2x", func(t *testing.T) {
		g := startGateway(t, brokerSettings(nil))
		r := runTS2Client(t, g, "--refresh")
		checkBrokerLogin(t, g, r.Flow.AuthorizationResponse.Iss, r.Flow.Authorization.Endpoint, r.Flow.Authorization.Hops, r.Flow.Tokens.Claims)
		if !r.Flow.AuthorizationResponse.StateMatches || !r.Flow.AuthorizationResponse.Code {
			t.Errorf("authorization response: %+v", r.Flow.AuthorizationResponse)
		}
		for _, c := range []struct {
			what, method, url, grant string
			status, want             int
		}{
			{"registration at the gateway", "POST", g.url + "/oauth/register", "", http.StatusCreated, 1},
			{"code redeemed at the gateway", "POST", g.url + "/oauth/token", "authorization_code", http.StatusOK, 1},
			{"refresh at the gateway", "POST", g.url + "/oauth/token", "refresh_token", http.StatusOK, 1},
			{"the client never talks to the provider", "", harness.issuer, "", 0, 0},
		} {
			n := 0
			for _, q := range r.Requests {
				if (c.method == "" || q.Method == c.method) && strings.HasPrefix(q.URL, c.url) && (c.grant == "" || q.Grant == c.grant) && (c.status == 0 || q.Status == c.status) {
					n++
				}
			}
			if n != c.want {
				t.Errorf("%s: %d requests, want %d", c.what, n, c.want)
			}
		}
		if r.Echo != "Echo: hello through the gateway" || r.EchoAfterRefresh != "Echo: after the refresh" {
			t.Errorf("tools/call before and after the refresh: %q, %q", r.Echo, r.EchoAfterRefresh)
		}
		if len(r.Flow.Refreshed) != 1 || r.Flow.Refreshed[0].Claims["jti"] == r.Flow.Tokens.Claims["jti"] {
			t.Errorf("want one new access token from the refresh, got %+v", r.Flow.Refreshed)
		}
		// A machine client keeps using the provider's own tokens (OIDC_AUDIENCE is the resource).
		tok := clientCredentials(t, providerTokenEndpoint(t), "svc-allowed", "svc-allowed-secret", g.resource)
		if resp, body, err := mcpPost(context.Background(), g.resource, tok, "", initializeMsg(1)); err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("a provider token for OIDC_AUDIENCE: %v %v %s", resp, err, body)
		}
		t.Logf("negotiated %s (%s era)", r.ProtocolVersion, r.Era)
	})

	timed(t, "broker-ts-sdk-1x", func(t *testing.T) {
		g := startGateway(t, brokerSettings(map[string]string{"ACCEPT_PROVIDER_TOKENS": "false"}))
		r := runTSClient(t, g, "--refresh")
		checkBrokerLogin(t, g, "", r.Flow.Authorization.Endpoint, r.Flow.Authorization.Hops, r.Flow.Tokens.Claims)
		if got := requestsTo(r, "POST", g.url+"/oauth/register"); len(got) != 1 || got[0] != http.StatusCreated {
			t.Errorf("registration at the gateway: %v", got)
		}
		if r.Echo != "Echo: hello through the gateway" || r.EchoAfterRefresh != "Echo: after the refresh" {
			t.Errorf("tools/call before and after the refresh: %q, %q", r.Echo, r.EchoAfterRefresh)
		}
		if len(r.Flow.Refreshed) != 1 || r.Flow.Refreshed[0].Claims["iss"] != g.url {
			t.Errorf("want one access token of the gateway's from the refresh, got %+v", r.Flow.Refreshed)
		}
		if len(r.LongRunning.Progress) < 4 || r.Resource.URI == "" || r.SessionID == "" {
			t.Errorf("streamed progress, resources/read and the session: %+v %+v %q", r.LongRunning, r.Resource, r.SessionID)
		}
		// ACCEPT_PROVIDER_TOKENS=false: the provider's own tokens are refused.
		tok := clientCredentials(t, providerTokenEndpoint(t), "svc-allowed", "svc-allowed-secret", g.resource)
		if resp, body, err := mcpPost(context.Background(), g.resource, tok, "", initializeMsg(1)); err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("a provider token with ACCEPT_PROVIDER_TOKENS=false: %v %v %s", resp, err, body)
		}
	})

	// Cursor registers its app's cursor:// callback beside two others, in one request; the
	// gateway's default REGISTER_REDIRECT_SCHEMES lets it through, and the code comes back
	// to that scheme. The strict 2.x client plays Cursor's registration.
	timed(t, "broker-cursor-redirect", func(t *testing.T) {
		g := startGateway(t, brokerSettings(nil))
		cursor := "cursor://anysphere.cursor-mcp/oauth/callback"
		r := runTS2Client(t, g, "--redirect-uris", cursor+",https://www.cursor.com/agents/mcp/oauth/callback,http://localhost:8787/callback")
		checkBrokerLogin(t, g, r.Flow.AuthorizationResponse.Iss, r.Flow.Authorization.Endpoint, r.Flow.Authorization.Hops, r.Flow.Tokens.Claims)
		if n := r.count("POST", g.url+"/oauth/register", "", http.StatusCreated); n != 1 {
			t.Errorf("registrations accepted: %d, want 1", n)
		}
		// The driver takes a code only from a redirect to the redirect_uri it asked for.
		if got := r.Flow.Authorization.Params["redirect_uri"]; got != cursor || !r.Flow.AuthorizationResponse.Code || !r.Flow.AuthorizationResponse.StateMatches {
			t.Errorf("authorization with redirect_uri %q: response %+v, want a code at %s", got, r.Flow.AuthorizationResponse, cursor)
		}
		if r.Echo != "Echo: hello through the gateway" {
			t.Errorf("tools/call: %q", r.Echo)
		}
	})

	timed(t, "broker-go-sdk", func(t *testing.T) {
		g := startGateway(t, brokerSettings(nil))
		scenarioGoSDKBroker(t, g)
	})
}

// checkBrokerLogin checks what every client's login through the broker shares: the
// authorization endpoint is the gateway's, the user went through its consent page, the
// provider and its callback, the response's iss (when the driver reports it) is the gateway,
// and the access token is the gateway's, for the resource, for alice.
func checkBrokerLogin(t *testing.T, g *gateway, iss, endpoint string, hops []string, claims map[string]any) {
	t.Helper()
	if endpoint != g.url+"/oauth/authorize" {
		t.Errorf("authorization endpoint %q, want the gateway's", endpoint)
	}
	if iss != "" && iss != g.url {
		t.Errorf("authorization response iss %q, want the gateway %q", iss, g.url)
	}
	path := strings.Join(hops, " | ")
	t.Logf("the login: %s", path)
	for _, want := range []string{"200 /oauth/authorize", "303 POST /oauth/consent", "/auth", "303 /oauth/callback"} {
		if !strings.Contains(path, want) {
			t.Errorf("the login's hops %q lack %q", path, want)
		}
	}
	if claims["iss"] != g.url || claims["aud"] != g.resource || claims["email"] != "alice@example.com" || claims["sub"] != "user-alice" {
		t.Errorf("access token claims %v: want the gateway's, for %s, alice's", claims, g.resource)
	}
}

// scenarioGoSDKBroker: the Go SDK's own OAuth client (auth.AuthorizationCodeHandler, dynamic
// registration) logs in through the broker; its token source is then marked expired, so the
// SDK refreshes at the gateway before the next call.
func scenarioGoSDKBroker(t *testing.T, g *gateway) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	redirect := fmt.Sprintf("http://127.0.0.1:%d/callback", freePort(t))
	rec := &recorder{base: http.DefaultTransport}
	var hops []string
	var src *expirableSource
	h, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		DynamicClientRegistrationConfig: &auth.DynamicClientRegistrationConfig{Metadata: &oauthex.ClientRegistrationMetadata{
			ClientName: "mcp-oauth-proxy e2e (Go SDK)", RedirectURIs: []string{redirect}, TokenEndpointAuthMethod: "none",
			GrantTypes: []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
		}},
		RedirectURL: redirect,
		AuthorizationCodeFetcher: func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
			q, h, err := userAgent(ctx, args.URL, redirect)
			hops = h
			if err != nil {
				return nil, err
			}
			return &auth.AuthorizationResult{Code: q.Get("code"), State: q.Get("state"), Iss: q.Get("iss")}, nil
		},
		Client: &http.Client{Transport: rec, Timeout: 30 * time.Second},
		NewTokenSource: func(ctx context.Context, cfg *oauth2.Config, tok *oauth2.Token) (oauth2.TokenSource, error) {
			src = &expirableSource{ctx: ctx, cfg: cfg, tok: tok}
			return src, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "mcp-oauth-proxy-e2e-go", Version: "1.0.0"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint: g.resource, HTTPClient: &http.Client{Transport: rec}, OAuthHandler: h, DisableStandaloneSSE: true, MaxRetries: -1,
	}, nil)
	if err != nil {
		t.Fatalf("connect: %v (hops %v, wire %v)", err, hops, rec.statuses())
	}
	defer cs.Close()
	if got, err := echo(ctx, cs, "from go"); err != nil || got != "Echo: from go" {
		t.Fatalf("echo: %q %v", got, err)
	}
	first := src.current()
	checkBrokerLogin(t, g, "", g.url+"/oauth/authorize", hops, jwtClaims(first.AccessToken))

	src.expire()
	if got, err := echo(ctx, cs, "after the refresh"); err != nil || got != "Echo: after the refresh" {
		t.Fatalf("echo after the refresh: %q %v (wire %v)", got, err, rec.statuses())
	}
	second := src.current()
	if src.refreshes() != 1 || second.AccessToken == first.AccessToken || second.RefreshToken == first.RefreshToken {
		t.Errorf("want one refresh with a new access token and a rotated refresh token, got %d refreshes", src.refreshes())
	}
	var tokenCalls int
	for _, e := range rec.log {
		if e.method == http.MethodPost && e.path == "/oauth/token" && e.status == http.StatusOK {
			tokenCalls++
		}
	}
	if tokenCalls != 2 {
		t.Errorf("want two successful token requests at the gateway (code, refresh), got %d", tokenCalls)
	}
}

// expirableSource is the Go SDK handler's token source (its NewTokenSource hook): the
// oauth2 package's refreshing source, whose current token a test can mark expired so that the
// next request refreshes first.
type expirableSource struct {
	mu    sync.Mutex
	ctx   context.Context
	cfg   *oauth2.Config
	tok   *oauth2.Token
	count int
}

func (s *expirableSource) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok.Valid() {
		return s.tok, nil
	}
	t, err := s.cfg.TokenSource(s.ctx, s.tok).Token() // refreshes: the token is not valid
	if err != nil {
		return nil, err
	}
	s.tok, s.count = t, s.count+1
	return t, nil
}

func (s *expirableSource) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := *s.tok
	t.Expiry = time.Now().Add(-time.Minute)
	s.tok = &t
}

func (s *expirableSource) current() oauth2.Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	return *s.tok
}

func (s *expirableSource) refreshes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// userAgent is a browser without rendering for the Go tests: it follows redirects with a
// cookie jar, answers the gateway's consent page as the user would (its form, Allow), lets
// the provider's scripted login log alice in, and stops at a redirect to stopAt, whose query
// it returns with the hops taken.
func userAgent(ctx context.Context, start, stopAt string) (url.Values, []string, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, nil, err
	}
	return userAgentWith(ctx, jar, start, stopAt)
}

// userAgentWith is userAgent with the browser's cookies in jar, for a walk in several parts.
func userAgentWith(ctx context.Context, jar http.CookieJar, start, stopAt string) (url.Values, []string, error) {
	var hops []string
	hop := func(status int, r *http.Request) {
		method := ""
		if r.Method == http.MethodPost {
			method = "POST "
		}
		hops = append(hops, fmt.Sprintf("%d %s%s", status, method, r.URL.Path))
	}
	var final *url.URL
	client := &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		hop(req.Response.StatusCode, via[len(via)-1])
		if strings.HasPrefix(req.URL.String(), stopAt) {
			final = req.URL
			return http.ErrUseLastResponse
		}
		if len(via) > 20 {
			return errors.New("too many redirects")
		}
		req.Header.Del("Origin") // a browser's GET after a 303 carries none
		return nil
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, start, nil)
	if err != nil {
		return nil, nil, err
	}
	for i := 0; i < 3; i++ {
		resp, err := client.Do(req)
		if err != nil {
			return nil, hops, err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if final != nil {
			return final.Query(), hops, nil
		}
		hop(resp.StatusCode, resp.Request)
		action, fields, ok := consentForm(string(body), resp.Request.URL)
		if resp.StatusCode != http.StatusOK || !ok {
			return nil, hops, fmt.Errorf("the login stopped at %s with %d: %.300s", resp.Request.URL, resp.StatusCode, body)
		}
		fields.Set("decision", "approve")
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, action, strings.NewReader(fields.Encode()))
		if err != nil {
			return nil, hops, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", resp.Request.URL.Scheme+"://"+resp.Request.URL.Host)
	}
	return nil, hops, errors.New("the consent page came back again and again")
}

var (
	formRE   = regexp.MustCompile(`(?s)<form\b([^>]*)>(.*?)</form>`)
	hiddenRE = regexp.MustCompile(`<input\b[^>]*type="hidden"[^>]*>`)
	attrRE   = regexp.MustCompile(`([a-z_-]+)="([^"]*)"`)
)

// consentForm reads the gateway's consent page: the action of its POST form and its hidden
// fields; ok is false when the page is not one (no form with a decision=approve button).
func consentForm(page string, at *url.URL) (action string, fields url.Values, ok bool) {
	m := formRE.FindStringSubmatch(page)
	if m == nil || !strings.Contains(m[2], `name="decision" value="approve"`) {
		return "", nil, false
	}
	attrs := func(s string) map[string]string {
		out := map[string]string{}
		for _, a := range attrRE.FindAllStringSubmatch(s, -1) {
			out[a[1]] = html.UnescapeString(a[2])
		}
		return out
	}
	form := attrs(m[1])
	if !strings.EqualFold(form["method"], "post") {
		return "", nil, false
	}
	u, err := at.Parse(form["action"])
	if err != nil {
		return "", nil, false
	}
	fields = url.Values{}
	for _, in := range hiddenRE.FindAllString(m[2], -1) {
		a := attrs(in)
		fields.Set(a["name"], a["value"])
	}
	return u.String(), fields, true
}

// TestBrokerBrowser: a real browser goes through dev mode's pages as a person would: the
// 2026-07-28 client sends it to the gateway's consent page (Allow), then to the development
// issuer's login page, where it logs in as another identity that ALLOW_GROUPS admits.
func TestBrokerBrowser(t *testing.T) {
	t.Parallel()
	needSuite(t)
	timed(t, "broker-browser-dev-mode", func(t *testing.T) {
		node := node22(t)
		chromium(t)
		needNodeModule(t, "puppeteer-core")
		mcpURL, _, _ := startDevWith(t, map[string]string{"ALLOW_GROUPS": "admins"})
		steps, _ := json.Marshal([]browserStep{
			{"expectText": "mcp-oauth-proxy e2e", "selector": "h1"},
			{"click": "button[value=approve]"},
			{"waitFor": "input[name=sub]"},
			{"fill": "input[name=sub]", "value": "zoe"},
			{"fill": "input[name=email]", "value": "zoe@example.com"},
			{"fill": "input[name=groups]", "value": "admins"},
			{"click": "button[value=login]"},
		})
		r := runTS2ClientAt(t, node, mcpURL, "--browser", string(steps), "--refresh")
		base := strings.TrimSuffix(mcpURL, "/mcp")
		// Dev mode's demo server echoes the message as it is.
		if r.Flow.AuthorizationResponse.Iss != base || r.Echo != "hello through the gateway" || r.EchoAfterRefresh != "after the refresh" {
			t.Errorf("iss %q, echo %q, after the refresh %q", r.Flow.AuthorizationResponse.Iss, r.Echo, r.EchoAfterRefresh)
		}
		if sub := r.Flow.Tokens.Claims["sub"]; sub != "zoe" {
			t.Errorf("access token sub %v, want the identity chosen on the login page", sub)
		}
		b := r.Flow.Browser
		if len(b.ConsoleErrors)+len(b.PageErrors) != 0 {
			t.Errorf("the pages logged errors: console %v, page %v", b.ConsoleErrors, b.PageErrors)
		}
		var seen []string
		for _, p := range b.Pages {
			u, _ := url.Parse(p.URL)
			seen = append(seen, fmt.Sprintf("%d %s", p.Status, u.Path))
		}
		path := strings.Join(seen, " | ")
		for _, want := range []string{"200 /oauth/authorize", "303 /oauth/consent", "200 /authorize", "303 /oauth/callback", "200 /callback"} {
			if !strings.Contains(path, want) {
				t.Errorf("the browser's pages %q lack %q", path, want)
			}
		}
		for _, c := range b.Cookies {
			if strings.HasPrefix(c.Name, "mcp-") && (!c.HTTPOnly || c.SameSite != "Lax") {
				t.Errorf("gateway cookie %+v: want HttpOnly and SameSite=Lax", c)
			}
		}
		t.Logf("browser: %s (%d ms)", path, b.ElapsedMs)
	})
}

// TestDevCommands runs the commands dev mode prints, as printed, against server-everything,
// which refuses tools/list outside the session its initialize opened.
func TestDevCommands(t *testing.T) {
	t.Parallel()
	needSuite(t)
	timed(t, "dev-commands-server-everything", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			missing(t, "curl (the commands dev mode prints use it)")
		}
		spawn := fmt.Sprintf(`NODE_OPTIONS="--require=%s" exec npx --no-install @modelcontextprotocol/server-everything streamableHttp`,
			filepath.Join(harness.dir, "loopback.cjs"))
		_, _, printed := startDevWith(t, map[string]string{"MCP_SPAWN_CMD": spawn, "MCP_SPAWN_READY_TIMEOUT": "60s"})
		i := strings.Index(printed, "TOKEN='")
		if i < 0 {
			t.Fatalf("no commands in:\n%s", printed)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "sh", "-c", printed[i:]).CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"name":"echo"`) {
			t.Fatalf("the printed commands against server-everything: %v\n%s", err, out)
		}
		// Without the session header the same tools/list fails: the commands needed it.
		script := strings.ReplaceAll(printed[i:], `-H "Mcp-Session-Id: $SID"`, "")
		out, _ = exec.CommandContext(ctx, "sh", "-c", script).CombinedOutput()
		if strings.Contains(string(out), `"name":"echo"`) {
			t.Errorf("server-everything listed its tools outside a session; the test proves nothing:\n%s", out)
		}
	})
}
