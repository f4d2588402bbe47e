package main

// What the root tests of broker mode share: a gateway in broker mode in
// front of the development issuer and the demo MCP server (startBroker), a
// browser made of an http.Client with a cookie jar that submits the
// gateway's and the issuer's HTML forms as a person would (browserClient,
// readForm), and an MCP client's side of OAuth (registerClient, authorize,
// tokenRequest).

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/devissuer"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

const (
	brokerTestSecret = "a broker secret of at least thirty-two bytes"
	gwClientID       = "gateway"
	gwClientSecret   = "gateway-secret"
)

// brokerGateway is an in-process gateway in broker mode.
type brokerGateway struct {
	base, mcp string // origin; RESOURCE_URL
	is        *devissuer.Issuer
	run       *running
}

// startBroker runs the gateway in broker mode on its own loopback address
// (the browser follows redirects to it), with the gateway's client
// registered at the development issuer; extra adds or overrides settings.
func startBroker(t *testing.T, extra map[string]string) *brokerGateway {
	t.Helper()
	is := testkit.StartIssuer(t, nil)
	env := map[string]string{
		"AUTH_SERVER_MODE":   "broker",
		"OIDC_CLIENT_ID":     gwClientID,
		"OIDC_CLIENT_SECRET": gwClientSecret,
		"OIDC_AUDIENCE":      "", // none: only the broker's tokens
		"BROKER_SECRET":      brokerTestSecret,
	}
	for k, v := range extra {
		env[k] = v
	}
	mcpURL, run := startGatewayRun(t, is.URL, env)
	g := &brokerGateway{base: strings.TrimSuffix(mcpURL, "/mcp"), mcp: mcpURL, is: is, run: run}
	is.AddClient(gwClientID, gwClientSecret, g.base+"/oauth/callback")
	return g
}

// browserClient is a browser without HTML rendering: cookies kept,
// redirects followed, until a redirect to stopAt (the MCP client's redirect
// URI), whose response is returned instead.
type browserClient struct {
	c     *http.Client
	pages []string // "status URL" of every response, for failure messages
}

func newBrowserClient(t *testing.T, stopAt string) *browserClient {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	b := &browserClient{}
	b.c = &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if strings.HasPrefix(req.URL.String(), stopAt) || len(via) > 10 {
			return http.ErrUseLastResponse
		}
		// A browser sends Origin with a POST, not with the GET a 303
		// turns it into (Fetch standard); net/http would copy it.
		if req.Method == http.MethodGet {
			req.Header.Del("Origin")
		}
		return nil
	}}
	return b
}

// page is one response as the browser saw it.
type page struct {
	status int
	url    *url.URL
	header http.Header
	body   string
}

func (b *browserClient) do(t *testing.T, req *http.Request) page {
	t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v (pages %v)", req.Method, req.URL, err, b.pages)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	b.pages = append(b.pages, resp.Status+" "+resp.Request.URL.String())
	return page{resp.StatusCode, resp.Request.URL, resp.Header, string(body)}
}

func (b *browserClient) get(t *testing.T, u string) page {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b.do(t, req)
}

// submit posts form as the browser submits a page's form: to its action,
// with Origin the page's origin (browsers send it with every POST).
func (b *browserClient) submit(t *testing.T, from page, f htmlForm) page {
	t.Helper()
	action, err := from.url.Parse(f.action)
	if err != nil {
		t.Fatalf("form action %q: %v", f.action, err)
	}
	req, err := http.NewRequest(http.MethodPost, action.String(), strings.NewReader(f.fields.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", from.url.Scheme+"://"+from.url.Host)
	return b.do(t, req)
}

// htmlForm is a page's form: its action and the fields a browser would
// send (hidden and text inputs with their values; the pressed button is
// added by the caller).
type htmlForm struct {
	action string
	fields url.Values
}

var (
	formTag  = regexp.MustCompile(`(?s)<form\b([^>]*)>(.*?)</form>`)
	inputTag = regexp.MustCompile(`<input\b([^>]*)>`)
	attr     = regexp.MustCompile(`([a-zA-Z_-]+)="([^"]*)"`)
)

func attrs(s string) map[string]string {
	m := map[string]string{}
	for _, a := range attr.FindAllStringSubmatch(s, -1) {
		m[a[1]] = html.UnescapeString(a[2])
	}
	return m
}

// readForm reads the first form of p, which must be an HTML page.
func readForm(t *testing.T, p page) htmlForm {
	t.Helper()
	if ct := p.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Fatalf("%s: Content-Type %q, want an HTML page: %.300s", p.url, ct, p.body)
	}
	m := formTag.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("%s (%d): no form on the page: %.500s", p.url, p.status, p.body)
	}
	f := htmlForm{action: attrs(m[1])["action"], fields: url.Values{}}
	if method := attrs(m[1])["method"]; !strings.EqualFold(method, "post") {
		t.Fatalf("%s: form method %q, want post", p.url, method)
	}
	for _, in := range inputTag.FindAllStringSubmatch(m[2], -1) {
		a := attrs(in[1])
		if a["name"] != "" && (a["type"] == "hidden" || a["type"] == "text") {
			f.fields.Set(a["name"], a["value"])
		}
	}
	return f
}

// oauthClient is an MCP client registered at the broker.
type oauthClient struct {
	id, redirect string
}

// registerClient registers a public client (RFC 7591) with a loopback
// redirect URI.
func registerClient(t *testing.T, base string) oauthClient {
	t.Helper()
	redirect := "http://127.0.0.1:" + freePort(t) + "/callback"
	body, _ := json.Marshal(map[string]any{
		"client_name": "root test client", "redirect_uris": []string{redirect},
		"token_endpoint_auth_method": "none", "grant_types": []string{"authorization_code", "refresh_token"},
	})
	resp, err := http.Post(base+"/oauth/register", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var reg struct {
		ClientID string `json:"client_id"`
	}
	if resp.StatusCode != http.StatusCreated || json.NewDecoder(resp.Body).Decode(&reg) != nil || reg.ClientID == "" {
		t.Fatalf("register: status %d", resp.StatusCode)
	}
	return oauthClient{id: reg.ClientID, redirect: redirect}
}

// authRequest is one authorization request with its PKCE verifier.
type authRequest struct {
	c               oauthClient
	verifier, state string
	resource, scope string
}

func newAuthRequest(c oauthClient, resource string) *authRequest {
	return &authRequest{c: c, verifier: rand.Text() + rand.Text(), state: rand.Text(), resource: resource}
}

func (a *authRequest) url(base string) string {
	sum := sha256.Sum256([]byte(a.verifier))
	q := url.Values{
		"response_type": {"code"}, "client_id": {a.c.id}, "redirect_uri": {a.c.redirect},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
		"state": {a.state}, "resource": {a.resource},
	}
	if a.scope != "" {
		q.Set("scope", a.scope)
	}
	return base + "/oauth/authorize?" + q.Encode()
}

// authorize plays the user from the authorization URL: the gateway's
// consent page (approved), the issuer's login page (as id), and returns the
// last page: a redirect to the client (its Location holds the response),
// or the page the flow stopped at.
func authorize(t *testing.T, base string, a *authRequest, id devissuer.Identity) (page, *browserClient) {
	t.Helper()
	b := newBrowserClient(t, a.c.redirect)
	consent := b.get(t, a.url(base))
	if consent.status != http.StatusOK {
		t.Fatalf("authorize: status %d: %.300s", consent.status, consent.body)
	}
	f := readForm(t, consent)
	f.fields.Set("decision", "approve")
	login := b.submit(t, consent, f)
	if login.status != http.StatusOK || !strings.Contains(login.body, `name="sub"`) {
		t.Fatalf("after consent: %d at %s, want the issuer's login page (pages %v): %.300s", login.status, login.url, b.pages, login.body)
	}
	f = readForm(t, login)
	f.fields.Set("sub", id.Subject)
	f.fields.Set("email", id.Email)
	f.fields.Set("groups", strings.Join(id.Groups, ","))
	f.fields.Set("action", "login")
	return b.submit(t, login, f), b
}

// callback reads the authorization response from the redirect to the
// client.
func callback(t *testing.T, last page, a *authRequest) url.Values {
	t.Helper()
	loc, err := url.Parse(last.header.Get("Location"))
	if last.status != http.StatusSeeOther || err != nil || !strings.HasPrefix(loc.String(), a.c.redirect) {
		t.Fatalf("want a redirect to %s, got %d Location %q: %.300s", a.c.redirect, last.status, last.header.Get("Location"), last.body)
	}
	return loc.Query()
}

// tokenReply is the token endpoint's answer.
type tokenReply struct {
	status       int
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
	Error        string `json:"error"`
	Desc         string `json:"error_description"`
	header       http.Header
}

func tokenRequest(t *testing.T, base string, form url.Values, origin string) tokenReply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/oauth/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := tokenReply{status: resp.StatusCode, header: resp.Header}
	_ = json.NewDecoder(resp.Body).Decode(&r)
	return r
}

// redeem exchanges the code of an authorization response.
func redeem(t *testing.T, base string, a *authRequest, code string) tokenReply {
	t.Helper()
	return tokenRequest(t, base, url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {a.c.redirect},
		"client_id": {a.c.id}, "code_verifier": {a.verifier}, "resource": {a.resource},
	}, "")
}

func refresh(t *testing.T, base string, c oauthClient, rt, resource string) tokenReply {
	t.Helper()
	return tokenRequest(t, base, url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {c.id}, "resource": {resource},
	}, "")
}

// login runs a whole login as id and returns the tokens.
func (g *brokerGateway) login(t *testing.T, id devissuer.Identity) (oauthClient, tokenReply) {
	t.Helper()
	c := registerClient(t, g.base)
	a := newAuthRequest(c, g.mcp)
	last, _ := authorize(t, g.base, a, id)
	q := callback(t, last, a)
	tr := redeem(t, g.base, a, q.Get("code"))
	if tr.status != http.StatusOK || tr.AccessToken == "" {
		t.Fatalf("redeem: %d %s", tr.status, tr.Error)
	}
	return c, tr
}
