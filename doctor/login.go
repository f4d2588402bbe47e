package doctor

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// login runs the authorization-code flow with PKCE (OAuth 2.1 §4.1, RFC
// 7636) as an MCP client does: a client of its own, the browser sent to the
// authorization endpoint, the redirect received on a loopback listener (RFC
// 8252 §7.3), state and iss checked (RFC 9207), the code exchanged with
// resource (RFC 8707), then initialize and tools/list with the token, and
// the token's claims compared with what the resource expects. It is long
// because it is one sequence whose steps share their values; each step
// reports its own check and the flow stops where a client would.
func (c *checker) login(ctx context.Context) {
	l := c.cfg.Login
	authzEP, tokenEP := str(c.as.doc, "authorization_endpoint"), str(c.as.doc, "token_endpoint")
	if checkEndpointURL(authzEP) != nil || checkEndpointURL(tokenEP) != nil {
		c.fail("login", "cannot log in without usable authorization and token endpoints (see as.endpoints)", "fix as.endpoints first")
		return
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(l.RedirectPort)))
	if err != nil {
		c.fail("login", "listen for the callback: "+err.Error(), "choose a free port with --redirect-port")
		return
	}
	defer ln.Close()
	redirectURI := fmt.Sprintf("http://127.0.0.1:%d/callback", ln.Addr().(*net.TCPAddr).Port)

	cl, ok := c.loginClient(ctx, redirectURI)
	if !ok {
		return
	}

	verifier := randomString()
	sum := sha256.Sum256([]byte(verifier))
	state := randomString()
	q := url.Values{
		"response_type":         {"code"},
		"client_id":             {cl.clientID},
		"redirect_uri":          {redirectURI},
		"code_challenge":        {base64.RawURLEncoding.EncodeToString(sum[:])},
		"code_challenge_method": {"S256"},
		"state":                 {state},
	}
	if scope := c.scope(); scope != "" {
		q.Set("scope", scope)
	}
	resource := c.resource()
	if c.prm != nil && c.prm.resource != "" {
		q.Set("resource", resource) // RFC 8707 §2.1, as clients send it: the metadata's resource
	}
	authURL, _ := url.Parse(authzEP)
	merged := authURL.Query() // RFC 6749 §3.1: keep the endpoint's own query
	for k, v := range q {
		merged[k] = v
	}
	authURL.RawQuery = merged.Encode()

	callback := make(chan url.Values, 1)
	srv := &http.Server{Handler: callbackHandler(callback), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close(); <-served }()

	fmt.Fprintf(l.Prompt, "\nOpen this URL in a browser and log in (doctor waits %s for the redirect to %s):\n\n  %s\n\n",
		l.Wait, redirectURI, authURL.String())
	if l.OpenBrowser != nil {
		if err := l.OpenBrowser(ctx, authURL.String()); err != nil {
			fmt.Fprintf(l.Prompt, "(could not open a browser: %v; open the URL yourself)\n", err)
		}
	}
	timer := time.NewTimer(l.Wait)
	defer timer.Stop()
	var params url.Values
	select {
	case params = <-callback:
	case <-timer.C:
		c.fail("login.authorize", "no redirect reached "+redirectURI+" within "+l.Wait.String(),
			"finish the login in the browser within the wait, and check that the browser can reach "+redirectURI)
		return
	case <-ctx.Done():
		c.fail("login.authorize", "the overall deadline passed while waiting for the login", "raise --timeout")
		return
	}

	if got := params.Get("state"); got != state {
		c.fail("login.state", fmt.Sprintf("the redirect's state %q is not the one sent: clients drop the response (RFC 6749 §10.12)", shorten(got, 40)),
			"return the client's state parameter unchanged in every authorization response")
		return
	}
	c.ok("login.state", "state returned unchanged")
	c.checkResponseIss(params)
	if e := params.Get("error"); e != "" {
		c.fail("login.authorize", "the authorization server answered error="+e+" "+shorten(params.Get("error_description"), 200),
			authorizeErrorFix(e, resource))
		return
	}
	code := params.Get("code")
	if code == "" {
		c.fail("login.authorize", "the redirect carries neither code nor error", "redirect with code, state and iss (RFC 6749 §4.1.2, RFC 9207)")
		return
	}
	c.ok("login.authorize", "the browser came back to "+redirectURI+" with a code")

	tok, ok := c.exchange(ctx, tokenEP, cl, code, redirectURI, verifier, resource)
	if !ok {
		return
	}
	if l.ShowToken {
		c.report.Token = tok
	}
	mcpOK := c.checkMCP(ctx, tok)
	c.checkClaims(tok, resource, mcpOK)
}

// loginClient returns the client to log in with: the one given, or a new
// one from dynamic registration.
func (c *checker) loginClient(ctx context.Context, redirectURI string) (*registration, bool) {
	l := c.cfg.Login
	if l.ClientID != "" {
		kind := "a public client"
		if l.ClientSecret != "" {
			kind = "a confidential client"
		}
		c.ok("login.client", "client "+l.ClientID+" from --client-id, "+kind+"; its redirect URIs must allow "+redirectURI)
		return &registration{clientID: l.ClientID, clientSecret: l.ClientSecret}, true
	}
	if str(c.as.doc, "registration_endpoint") == "" {
		c.fail("login.client", "no registration_endpoint to register a client with",
			"pass a pre-registered client with --client-id (and --client-secret), whose redirect URIs allow http://127.0.0.1/callback")
		return nil, false
	}
	reg, problem := c.register(ctx, "mcp-oauth-proxy doctor", redirectURI)
	if reg == nil {
		c.fail("login.client", "dynamic registration refused: "+problem,
			"allow open registration of public clients with loopback redirect URIs (RFC 8252 §7.3), or pass a pre-registered client with --client-id")
		return nil, false
	}
	if msg := c.authMethodProblem(reg); msg != "" {
		c.warn("login.client", "registered client "+reg.clientID+" by dynamic registration, but "+msg,
			"answer a public client's registration with token_endpoint_auth_method none and no secret")
	} else {
		c.ok("login.client", "registered client "+reg.clientID+" by dynamic registration")
	}
	return reg, true
}

// resource is the RFC 8707 resource clients ask tokens for: the metadata's,
// else the URL.
func (c *checker) resource() string {
	if c.prm != nil && c.prm.resource != "" {
		return c.prm.resource
	}
	return strings.TrimSpace(c.cfg.URL)
}

// checkResponseIss: RFC 9207 §2.4 as MCP 2026-07-28 clients apply it: a
// present iss must equal the metadata's issuer exactly; an absent one is an
// error when the metadata advertises authorization_response_iss_parameter_supported.
func (c *checker) checkResponseIss(params url.Values) {
	advertised := c.as.doc["authorization_response_iss_parameter_supported"] == true
	iss, present := params["iss"]
	switch {
	case present && len(iss) == 1 && iss[0] == c.as.issuer:
		c.ok("login.iss", "iss="+iss[0]+", the metadata's issuer (RFC 9207)")
	case present:
		c.fail("login.iss", "the authorization response's iss "+strings.Join(iss, ",")+" is not the metadata's issuer "+c.as.issuer+": MCP 2026-07-28 clients (TypeScript and Python SDK 2.x) reject this login; doctor goes on as a 1.x client would",
			facadeFix)
	case advertised:
		c.fail("login.iss", "the metadata advertises authorization_response_iss_parameter_supported, but the response has no iss: MCP 2026-07-28 clients reject it; doctor goes on as a 1.x client would",
			"send iss in every authorization response, or stop advertising authorization_response_iss_parameter_supported")
	default:
		c.ok("login.iss", "no iss in the response, and none advertised: clients accept that (RFC 9207 §2.4)")
	}
}

// authorizeErrorFix suggests a fix for an error from the authorization
// endpoint (RFC 6749 §4.1.2.1, RFC 8707 §2).
func authorizeErrorFix(e, resource string) string {
	switch e {
	case "invalid_target":
		return "let the authorization server issue tokens for the resource " + resource + " (RFC 8707), or make the metadata's resource one it accepts"
	case "invalid_scope":
		return "advertise in the challenge and scopes_supported only scopes the authorization server grants this client"
	case "access_denied":
		return "log in as a user who is allowed, and approve the consent screen"
	case "unauthorized_client":
		return "allow the authorization-code grant for this client at the authorization server"
	}
	return "read error_description above; the authorization server's log says more"
}

// exchange redeems the code at the token endpoint (OAuth 2.1 §4.1.3).
func (c *checker) exchange(ctx context.Context, tokenEP string, cl *registration, code, redirectURI, verifier, resource string) (string, bool) {
	form := url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {code},
		"redirect_uri":  {redirectURI},
		"code_verifier": {verifier},
	}
	if c.prm != nil && c.prm.resource != "" {
		form.Set("resource", resource)
	}
	hdr := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}, "Accept": {"application/json"}}
	switch c.clientAuth(cl) {
	case "client_secret_basic": // RFC 6749 §2.3.1: each part form-encoded first
		hdr.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString(
			[]byte(url.QueryEscape(cl.clientID)+":"+url.QueryEscape(cl.clientSecret))))
	case "client_secret_post":
		form.Set("client_id", cl.clientID)
		form.Set("client_secret", cl.clientSecret)
	default:
		form.Set("client_id", cl.clientID)
	}
	res, err := c.send(ctx, http.MethodPost, tokenEP, hdr, []byte(form.Encode()))
	if err != nil {
		c.fail("login.token", "POST "+tokenEP+": "+err.Error(), "make the token endpoint reachable from the client")
		return "", false
	}
	doc, derr := decodeObject(res.body)
	if res.status != http.StatusOK {
		msg := fmt.Sprintf("the token endpoint answered %d", res.status)
		fix := "read error_description; the authorization server's log says more"
		if derr == nil && str(doc, "error") != "" {
			msg += ": " + str(doc, "error") + " " + shorten(str(doc, "error_description"), 200)
			switch str(doc, "error") {
			case "invalid_target":
				fix = "let the authorization server issue tokens for the resource " + resource + " (RFC 8707)"
			case "invalid_client":
				fix = "check the client's authentication method and secret (token_endpoint_auth_method of the registration)"
			case "invalid_grant":
				fix = "the code, redirect URI or PKCE verifier did not match: check the authorization server's log"
			}
		}
		c.fail("login.token", msg, fix)
		return "", false
	}
	tok := str(doc, "access_token")
	if derr != nil || tok == "" {
		c.fail("login.token", "the token endpoint answered 200 without an access_token", "answer with access_token and token_type (RFC 6749 §5.1)")
		return "", false
	}
	if tt := str(doc, "token_type"); !strings.EqualFold(tt, "Bearer") {
		c.fail("login.token", fmt.Sprintf("token_type %q: MCP clients send Bearer tokens only", tt), "issue Bearer access tokens (RFC 6750) to MCP clients")
		return "", false
	}
	msg := "the token endpoint issued a Bearer access token"
	if v, ok := doc["expires_in"].(json.Number); ok {
		msg += " (expires_in " + v.String() + " s)"
	}
	if str(doc, "refresh_token") != "" {
		msg += " and a refresh token"
	} else {
		msg += ", no refresh token (clients will need a new login when it expires)"
	}
	if !c.cfg.Login.ShowToken {
		msg += "; not shown (--show-token shows it)"
	}
	c.ok("login.token", msg)
	return tok, true
}

// clientAuth picks the token endpoint authentication (RFC 8414 §2: absent
// token_endpoint_auth_methods_supported means client_secret_basic).
func (c *checker) clientAuth(cl *registration) string {
	if cl.clientSecret == "" {
		return "none"
	}
	if cl.authMethod == "client_secret_basic" || cl.authMethod == "client_secret_post" {
		return cl.authMethod
	}
	methods, listed := strs(c.as.doc, "token_endpoint_auth_methods_supported")
	if listed && !contains(methods, "client_secret_basic") && contains(methods, "client_secret_post") {
		return "client_secret_post"
	}
	return "client_secret_basic"
}

// checkMCP calls initialize and tools/list with the token.
func (c *checker) checkMCP(ctx context.Context, tok string) bool {
	names, refused, err := c.listTools(ctx, tok)
	switch {
	case err != nil:
		c.fail("login.mcp", "with the token: "+err.Error(), "check the MCP server behind the authorization: it should answer initialize and tools/list")
		return false
	case refused != nil:
		why := fmt.Sprintf("the resource answered %d to the token its own authorization server issued", refused.status)
		if chs, err := parseChallenges(refused.header.Get("WWW-Authenticate")); err == nil {
			for _, ch := range chs {
				if e := ch.params["error"]; e != "" {
					why += ": " + e + " " + shorten(ch.params["error_description"], 160)
				}
			}
		}
		fix := "check the resource's log: most often the token's aud or iss is not what it accepts (see the token checks below)"
		if refused.status == http.StatusForbidden {
			fix = "let this identity in (the allow-list: ALLOW_EMAILS, ALLOW_SUBS, ALLOW_GROUPS for this gateway), or grant the scope the challenge asks for"
		}
		c.fail("login.mcp", why, fix)
		return false
	}
	list := strings.Join(names, ", ")
	c.ok("login.mcp", fmt.Sprintf("initialize and tools/list with the token: %d tools (%s)", len(names), shorten(list, 120)))
	return true
}

// checkClaims compares the token's claims with what the resource expects.
// It decodes a JWT without verifying its signature: the resource verifies;
// doctor only reads what the claims say.
func (c *checker) checkClaims(tok, resource string, mcpOK bool) {
	claims, ok := jwtClaims(tok)
	if !ok {
		msg := "the access token is opaque (not a JWT), so its claims cannot be read here"
		if mcpOK {
			c.ok("token", msg+"; the resource accepted it")
		} else {
			c.warn("token", msg+", and the resource refused it",
				"have the provider issue JWT access tokens for the resource (RFC 9068), or have the resource introspect them (RFC 7662)")
		}
		return
	}
	c.ok("token", "a JWT; its claims below are decoded WITHOUT verifying the signature (the resource verifies it)")
	bad := c.warn
	if !mcpOK {
		bad = c.fail
	}

	switch iss, _ := claims["iss"].(string); {
	case iss == c.as.issuer:
		c.ok("token.iss", "iss = "+iss+", the metadata's issuer")
	case mcpOK:
		c.warn("token.iss", fmt.Sprintf("iss %q is not the metadata's issuer %s, yet the resource accepted it: the resource trusts an issuer it does not advertise", iss, c.as.issuer),
			"advertise the issuer whose tokens the resource accepts, or have that issuer's tokens come from the advertised one")
	default:
		c.fail("token.iss", fmt.Sprintf("iss %q is not the metadata's issuer %s", iss, c.as.issuer),
			"make the resource accept tokens from the issuer it advertises")
	}

	auds := audiences(claims["aud"])
	switch {
	case contains(auds, resource):
		c.ok("token.aud", "aud names the resource "+resource+" (RFC 8707)")
	case mcpOK:
		c.warn("token.aud", fmt.Sprintf("aud %v does not name the resource %s, yet the resource accepted it: it does not check the audience, so tokens meant for other services pass too", auds, resource),
			"make the resource require aud = "+resource+" (OIDC_AUDIENCE for this gateway) and the provider put it there")
	default:
		c.fail("token.aud", fmt.Sprintf("aud %v does not name the resource %s", auds, resource),
			"have the provider put "+resource+" in aud (an audience mapper, an API audience, or RFC 8707 resource indicators), or make the resource accept the audience the provider uses")
	}

	switch exp, ok := claims["exp"].(json.Number); {
	case !ok:
		bad("token.exp", "the token has no exp: it never expires", "issue access tokens with exp (RFC 9068 §2.2)")
	default:
		sec, err := exp.Int64()
		at := time.Unix(sec, 0)
		if err != nil || !at.After(c.cfg.Now()) {
			c.fail("token.exp", "exp "+exp.String()+" is not in the future", "check the authorization server's clock and token lifetime")
		} else {
			c.ok("token.exp", "expires in "+at.Sub(c.cfg.Now()).Round(time.Second).String())
		}
	}

	// OpenID Connect's own scopes (OIDC Core §5.4, §11) govern the ID token
	// and userinfo, not access tokens for a resource: only the others are
	// expected in the token.
	granted := scopes(claims)
	var expected []string
	if c.challenge != nil {
		for _, s := range strings.Fields(c.challenge.scope) {
			switch s {
			case "openid", "profile", "email", "address", "phone", "offline_access":
			default:
				expected = append(expected, s)
			}
		}
	}
	var missing []string
	for _, s := range expected {
		if !contains(granted, s) {
			missing = append(missing, s)
		}
	}
	switch {
	case len(missing) > 0 && len(granted) == 0:
		bad("token.scope", "the token carries no scope claim; the challenge asks for "+strings.Join(expected, " "),
			"grant the challenge's scopes to the client, or drop from the challenge the scopes the authorization server never puts in tokens")
	case len(missing) > 0:
		bad("token.scope", "the token's scope "+strings.Join(granted, " ")+" lacks "+strings.Join(missing, " ")+", which the challenge asks for",
			"grant the challenge's scopes to the client, or drop from the challenge the scopes the authorization server never puts in tokens")
	case len(granted) == 0:
		c.ok("token.scope", "no scope claim, and the challenge asks for no scope beyond OpenID Connect's")
	default:
		c.ok("token.scope", "scope "+strings.Join(granted, " "))
	}
}

// jwtClaims decodes a JWS compact serialization's payload, unverified.
func jwtClaims(tok string) (map[string]any, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, false
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, false
	}
	m, err := decodeObject(b)
	return m, err == nil
}

// audiences reads aud, a string or a list (RFC 7519 §4.1.3).
func audiences(v any) []string {
	switch a := v.(type) {
	case string:
		return []string{a}
	case []any:
		var out []string
		for _, x := range a {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// scopes reads scope (RFC 9068 §2.2.3, space-separated) or scp (a list or
// string, as some providers write it).
func scopes(claims map[string]any) []string {
	if s, ok := claims["scope"].(string); ok {
		return strings.Fields(s)
	}
	switch v := claims["scp"].(type) {
	case string:
		return strings.Fields(v)
	case []any:
		return audiences(v)
	}
	return nil
}

// callbackHandler receives the authorization response at /callback: the
// first one goes to ch, later ones are refused.
func callbackHandler(ch chan<- url.Values) http.Handler {
	var once sync.Once
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		first := false
		once.Do(func() {
			first = true
			ch <- r.URL.Query()
		})
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		msg := "doctor received the authorization response. You can close this window and return to the terminal."
		if !first {
			w.WriteHeader(http.StatusConflict)
			msg = "doctor already received an authorization response; this one was ignored."
		}
		_, _ = io.WriteString(w, "<!doctype html><meta charset=utf-8><title>mcp-oauth-proxy doctor</title><p>"+html.EscapeString(msg)+"</p>\n")
	})
}

// randomString is 32 random bytes, base64url: a PKCE verifier (RFC 7636
// §4.1) or a state value.
func randomString() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}
