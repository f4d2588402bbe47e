package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/oauth2"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/devissuer"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/store"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// Test values.
const (
	testSecret       = "0123456789abcdef0123456789abcdef-test-secret"
	gatewayClientID  = "gateway"
	gatewaySecret    = "gateway-secret"
	clientRedirect   = "http://127.0.0.1:7777/callback"
	aliceSub         = "alice"
	aliceEmail       = "alice@example.com"
	malloryRedirect  = "https://mallory.example/cb"
	testScopes       = "mcp:read mcp:write"
	upstreamLoginURL = "/authorize"
)

// env is a broker served on 127.0.0.1 in front of a real devissuer, with a
// real provider.Provider reading the issuer's discovery document and keys.
type env struct {
	t      testing.TB
	clock  *testkit.Clock
	is     *devissuer.Issuer
	prov   *provider.Provider
	store  *store.Memory
	b      *Broker
	srv    *httptest.Server
	origin string

	mu      sync.Mutex
	allowed map[string]bool // by subject; nil allows everyone
}

// newEnv starts an issuer, a provider and a broker. mod may change the
// broker's Config before New.
func newEnv(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	return newEnvIssuer(t, nil, mod)
}

// newEnvIssuer is newEnv with setup called on the issuer before the
// provider reads its discovery document.
func newEnvIssuer(t testing.TB, setup func(*devissuer.Issuer), mod func(*Config)) *env {
	t.Helper()
	e := &env{t: t, clock: testkit.NewClock(time.Now().Truncate(time.Second))}
	is := testkit.StartIssuer(t, func(is *devissuer.Issuer) {
		is.Now = e.clock.Now
		if setup != nil {
			setup(is)
		}
	})
	e.is = is

	var h struct {
		sync.RWMutex
		h http.Handler
	}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.RLock()
		hh := h.h
		h.RUnlock()
		hh.ServeHTTP(w, r)
	}))
	t.Cleanup(e.srv.Close)
	e.origin = e.srv.URL
	is.AddClient(gatewayClientID, gatewaySecret, e.origin+CallbackPath)

	e.prov = provider.New(provider.Config{IssuerURL: is.URL, Audiences: []string{"unused"}, Logger: hclog.NewNullLogger()})
	testkit.Run(t, e.prov)
	testkit.WaitReady(t, e.prov)

	e.store = store.NewMemory(store.MemoryConfig{Now: e.clock.Now})
	cfg := Config{
		ResourceURL:  e.origin + "/mcp",
		Scopes:       strings.Fields(testScopes),
		Secret:       []byte(testSecret),
		Upstream:     e.prov,
		ClientID:     gatewayClientID,
		ClientSecret: gatewaySecret,
		Allow:        e.allow,
		Store:        e.store,
		Now:          e.clock.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.b = b
	h.Lock()
	h.h = e.b.Handler()
	h.Unlock()
	return e
}

func (e *env) allow(id *provider.Identity) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.allowed == nil || e.allowed[id.Subject]
}

// setAllowed makes the allow-list hold exactly subs.
func (e *env) setAllowed(subs ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.allowed = map[string]bool{}
	for _, s := range subs {
		e.allowed[s] = true
	}
}

// browser is a user agent with a cookie jar that does not follow
// redirects by itself.
type browser struct {
	t testing.TB
	c *http.Client
}

func newBrowser(t testing.TB) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

// response is a read response.
type response struct {
	status int
	header http.Header
	body   string
}

func (r *response) location(t testing.TB) *url.URL {
	t.Helper()
	l := r.header.Get("Location")
	if l == "" {
		t.Fatalf("no Location (status %d)\n%s", r.status, r.body)
	}
	u, err := url.Parse(l)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func (br *browser) do(req *http.Request) *response {
	br.t.Helper()
	resp, err := br.c.Do(req)
	if err != nil {
		br.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return &response{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

func (br *browser) get(u string) *response {
	br.t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		br.t.Fatal(err)
	}
	return br.do(req)
}

// post submits a form as a browser does from a page of origin.
func (br *browser) post(u string, form url.Values, origin string) *response {
	br.t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		br.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	return br.do(req)
}

// registration as a test holds it.
type registered struct {
	ID, Secret string
	Redirects  []string
}

// register registers a client through the registration endpoint.
func (e *env) register(md map[string]any) registered {
	e.t.Helper()
	status, body := e.registerRaw(md)
	if status != http.StatusCreated {
		e.t.Fatalf("register: status %d: %s", status, body)
	}
	var reg registration
	if err := json.Unmarshal([]byte(body), &reg); err != nil {
		e.t.Fatal(err)
	}
	return registered{ID: reg.ClientID, Secret: reg.ClientSecret, Redirects: reg.RedirectURIs}
}

func (e *env) registerRaw(md map[string]any) (int, string) {
	e.t.Helper()
	b, _ := json.Marshal(md)
	resp, err := (&http.Client{}).Post(e.origin+RegisterPath, "application/json", bytes.NewReader(b))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// publicClient registers a public client with clientRedirect.
func (e *env) publicClient() registered {
	return e.register(map[string]any{"client_name": "Test Client", "redirect_uris": []string{clientRedirect}})
}

// authRequest is an authorization request of a test client.
type authRequest struct {
	client   registered
	redirect string
	state    string
	verifier string
	extra    url.Values
}

func newAuthRequest(c registered) *authRequest {
	return &authRequest{client: c, redirect: c.Redirects[0], state: "st-" + oauth2.GenerateVerifier()[:8], verifier: oauth2.GenerateVerifier()}
}

func (a *authRequest) url(origin string) string {
	q := url.Values{
		"response_type":         {"code"},
		"client_id":             {a.client.ID},
		"redirect_uri":          {a.redirect},
		"state":                 {a.state},
		"code_challenge":        {oauth2.S256ChallengeFromVerifier(a.verifier)},
		"code_challenge_method": {"S256"},
		"scope":                 {testScopes},
		"resource":              {origin + "/mcp"},
	}
	for k, v := range a.extra {
		if v == nil {
			delete(q, k)
		} else {
			q[k] = v
		}
	}
	return origin + AuthorizePath + "?" + q.Encode()
}

var (
	flowField   = regexp.MustCompile(`name="flow" value="([A-Z2-7]{26})"`)
	clientField = regexp.MustCompile(`name="client" value="([^"]*)"`)
)

// consentFlow returns the flow id of a consent page.
func consentFlow(t testing.TB, r *response) string {
	t.Helper()
	m := flowField.FindStringSubmatch(r.body)
	if r.status != http.StatusOK || m == nil {
		t.Fatalf("not a consent page: status %d\n%s", r.status, r.body)
	}
	return m[1]
}

// consentForm is the consent page's form as its button decision submits
// it: its hidden fields (the flow id and the client_id), and decision.
func consentForm(t testing.TB, r *response, decision string) url.Values {
	t.Helper()
	flow := consentFlow(t, r)
	m := clientField.FindStringSubmatch(r.body)
	if m == nil {
		t.Fatalf("a consent page without its client_id:\n%s", r.body)
	}
	return url.Values{"flow": {flow}, "client": {html.UnescapeString(m[1])}, "decision": {decision}}
}

// who is the identity a test logs in as at the provider.
type who struct {
	sub, email, groups string
}

var alice = who{sub: aliceSub, email: aliceEmail, groups: "mcp-users"}

// providerLogin goes through the provider's login page from the redirect
// to it and returns the provider's redirect back to the broker.
func (e *env) providerLogin(br *browser, toProvider *url.URL, as who) *url.URL {
	e.t.Helper()
	if !strings.HasPrefix(toProvider.String(), e.is.URL+upstreamLoginURL) {
		e.t.Fatalf("not a redirect to the provider: %s", toProvider)
	}
	page := br.get(toProvider.String())
	if page.status != http.StatusOK {
		e.t.Fatalf("provider login page: %d %s", page.status, page.body)
	}
	form := toProvider.Query()
	form.Set("action", "login")
	form.Set("sub", as.sub)
	form.Set("email", as.email)
	form.Set("groups", as.groups)
	resp := br.post(e.is.URL+upstreamLoginURL, form, e.is.URL)
	if resp.status != http.StatusSeeOther {
		e.t.Fatalf("provider login: %d %s", resp.status, resp.body)
	}
	return resp.location(e.t)
}

// login runs a whole browser login for a: authorize, consent (approved
// when the page is shown), the provider's login page as who, and the
// callback. It returns the broker's final answer (a redirect to the client,
// or a page).
func (e *env) login(br *browser, a *authRequest, as who) *response {
	e.t.Helper()
	resp := br.get(a.url(e.origin))
	if resp.status == http.StatusOK {
		resp = br.post(e.origin+ConsentPath, consentForm(e.t, resp, "approve"), e.origin)
	}
	if resp.status != http.StatusSeeOther {
		e.t.Fatalf("authorize: status %d\n%s", resp.status, resp.body)
	}
	back := e.providerLogin(br, resp.location(e.t), as)
	return br.get(back.String())
}

// code runs a login and returns the code of the client's redirect, after
// checking state and iss.
func (e *env) code(br *browser, a *authRequest, as who) string {
	e.t.Helper()
	resp := e.login(br, a, as)
	if resp.status != http.StatusSeeOther {
		e.t.Fatalf("callback: status %d\n%s", resp.status, resp.body)
	}
	q := resp.location(e.t).Query()
	if q.Get("state") != a.state || q.Get("iss") != e.origin || q.Get("code") == "" {
		e.t.Fatalf("authorization response: %v", q)
	}
	return q.Get("code")
}

// tokenReply is a token endpoint answer.
type tokenReply struct {
	status int
	header http.Header
	tokenResponse
	Error string `json:"error"`
	Desc  string `json:"error_description"`
}

// token posts form to the token endpoint, with HTTP Basic credentials
// when basic has an id.
func (e *env) token(form url.Values, basic ...string) *tokenReply {
	e.t.Helper()
	return e.postToken(TokenPath, form, basic...)
}

func (e *env) postToken(path string, form url.Values, basic ...string) *tokenReply {
	e.t.Helper()
	h := http.Header{}
	if len(basic) == 2 {
		r := http.Request{Header: h}
		r.SetBasicAuth(url.QueryEscape(basic[0]), url.QueryEscape(basic[1]))
	}
	return e.postTokenHeader(path, form, h)
}

// postTokenHeader posts form to path with the headers h.
func (e *env) postTokenHeader(path string, form url.Values, h http.Header) *tokenReply {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.origin+path, strings.NewReader(form.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r := &tokenReply{status: resp.StatusCode, header: resp.Header}
	if len(body) > 0 {
		if err := json.Unmarshal(body, r); err != nil {
			e.t.Fatalf("token endpoint: not JSON (%d): %s", resp.StatusCode, body)
		}
	}
	return r
}

// redeem exchanges a code for a's client.
func (e *env) redeem(a *authRequest, code string) *tokenReply {
	e.t.Helper()
	return e.token(url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {a.redirect},
		"code_verifier": {a.verifier}, "client_id": {a.client.ID}, "resource": {e.origin + "/mcp"},
	})
}

// refresh uses a refresh token of client c.
func (e *env) refresh(c registered, rt string) *tokenReply {
	e.t.Helper()
	return e.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {c.ID}})
}

// mustRefresh is refresh that fails the test unless the answer is 200 with
// a new refresh token.
func (e *env) mustRefresh(c registered, rt, what string) *tokenReply {
	e.t.Helper()
	r := e.refresh(c, rt)
	if r.status != http.StatusOK || r.RefreshToken == "" || r.RefreshToken == rt {
		e.t.Fatalf("%s: %d %s %s (a new refresh token: %t)", what, r.status, r.Error, r.Desc, r.RefreshToken != rt)
	}
	return r
}

// tokens logs alice in with a new public client and redeems the code.
func (e *env) tokens() (registered, *tokenReply) {
	e.t.Helper()
	c := e.publicClient()
	a := newAuthRequest(c)
	tr := e.redeem(a, e.code(newBrowser(e.t), a, alice))
	if tr.status != http.StatusOK {
		e.t.Fatalf("redeem: %d %s %s", tr.status, tr.Error, tr.Desc)
	}
	return c, tr
}

// mustVerify verifies an access token and fails the test if it is not
// accepted.
func (e *env) mustVerify(tok string) *provider.Identity {
	e.t.Helper()
	id, err := e.b.Verify(context.Background(), tok)
	if err != nil {
		e.t.Fatalf("verify: %v", err)
	}
	return id
}

// verifyReason returns the TokenError reason Verify gives tok, or "" if it
// accepts it.
func (e *env) verifyReason(tok string) string {
	e.t.Helper()
	_, err := e.b.Verify(context.Background(), tok)
	if err == nil {
		return ""
	}
	var te *provider.TokenError
	if errors.As(err, &te) {
		return te.Reason
	}
	return err.Error()
}

// denyLimiter is a Limiter that refuses every key once its budget is
// spent, and counts what it was asked.
type denyLimiter struct {
	mu     sync.Mutex
	budget int
	keys   []string
}

func (l *denyLimiter) Allow(_ context.Context, key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.keys = append(l.keys, key)
	if l.budget <= 0 {
		return false, 1500 * time.Millisecond
	}
	l.budget--
	return true, 0
}

// failingStore is a Store whose every call fails.
type failingStore struct{}

func (failingStore) Claim(context.Context, string, time.Duration) (bool, error) {
	return false, errors.New("store down")
}
func (failingStore) ClaimSince(context.Context, string, time.Duration) (bool, time.Duration, error) {
	return false, 0, errors.New("store down")
}
func (failingStore) Advance(context.Context, string, int64, time.Duration) (store.Move, error) {
	return store.Move{}, errors.New("store down")
}
func (failingStore) Generation(context.Context, string) (int64, error) {
	return 0, errors.New("store down")
}
func (failingStore) Revoke(context.Context, string, time.Duration) error {
	return errors.New("store down")
}
func (failingStore) Revoked(context.Context, ...string) (bool, error) {
	return false, errors.New("store down")
}

func jsonDecode(resp *http.Response, v any) error { return json.NewDecoder(resp.Body).Decode(v) }
