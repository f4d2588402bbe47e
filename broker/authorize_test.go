package broker

import (
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/respond"
)

// Until the client and its redirect URI are valid, every error is a page
// at the gateway and never a redirect: no open redirect, whatever the
// attacker puts in redirect_uri.
func TestAuthorizeNeverRedirectsBeforeValidation(t *testing.T) {
	e := newEnv(t, nil)
	web := e.register(map[string]any{"redirect_uris": []string{"https://app.example.com/cb"}})
	local := e.publicClient()
	tests := []struct {
		name     string
		client   registered
		redirect string
		extra    url.Values
	}{
		{name: "unregistered host", client: web, redirect: "https://evil.example/cb"},
		{name: "look-alike host, suffix", client: web, redirect: "https://app.example.com.evil.example/cb"},
		{name: "look-alike host, user info", client: web, redirect: "https://app.example.com@evil.example/cb"},
		{name: "look-alike host, prefix", client: web, redirect: "https://evilapp.example.com/cb"},
		{name: "added query", client: web, redirect: "https://app.example.com/cb?next=https://evil.example"},
		{name: "added fragment", client: web, redirect: "https://app.example.com/cb#x"},
		{name: "other path", client: web, redirect: "https://app.example.com/cb/../evil"},
		{name: "trailing slash", client: web, redirect: "https://app.example.com/cb/"},
		{name: "http instead of https", client: web, redirect: "http://app.example.com/cb"},
		{name: "upper-case host", client: web, redirect: "https://APP.example.com/cb"},
		{name: "javascript scheme", client: web, redirect: "javascript:alert(1)//https://app.example.com/cb"},
		{name: "data scheme", client: web, redirect: "data:text/html,hi"},
		{name: "loopback, other host", client: local, redirect: "http://localhost:7777/callback"},
		{name: "loopback, other path", client: local, redirect: "http://127.0.0.1:7777/other"},
		{name: "loopback, added query", client: local, redirect: "http://127.0.0.1:7777/callback?x=1"},
		{name: "loopback, https", client: local, redirect: "https://127.0.0.1:7777/callback"},
		{name: "no redirect uri", client: web, redirect: ""},
		{name: "unknown client", client: registered{ID: "not-a-client", Redirects: []string{"https://app.example.com/cb"}}, redirect: "https://app.example.com/cb"},
		{name: "client of another broker secret", client: registered{ID: forgedClientID(t), Redirects: []string{"https://app.example.com/cb"}}, redirect: "https://app.example.com/cb"},
		{name: "client id twice", client: web, redirect: "https://app.example.com/cb", extra: url.Values{"client_id": {web.ID, local.ID}}},
		{name: "no client id", client: web, redirect: "https://app.example.com/cb", extra: url.Values{"client_id": nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuthRequest(tt.client)
			a.redirect = tt.redirect
			a.extra = tt.extra
			if tt.redirect == "" {
				a.extra = url.Values{"redirect_uri": nil}
			}
			resp := newBrowser(t).get(a.url(e.origin))
			if resp.status != http.StatusBadRequest {
				t.Fatalf("status: got %d, want 400\n%s", resp.status, resp.body)
			}
			if loc := resp.header.Get("Location"); loc != "" {
				t.Fatalf("redirected to %q", loc)
			}
			if ct := resp.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
				t.Fatalf("Content-Type: got %q, want text/html", ct)
			}
			if !strings.Contains(resp.header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
				t.Fatal("error page without frame-ancestors 'none'")
			}
		})
	}
}

// forgedClientID is a client id sealed under another BROKER_SECRET.
func forgedClientID(t *testing.T) string {
	t.Helper()
	kr, err := newKeyring([]byte("another-secret-another-secret-another-secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &sealer{keys: kr.seal, now: time.Now}
	id, err := s.seal(purposeClient, time.Time{}, clientRecord{Version: 1, Redirects: []string{"https://app.example.com/cb"}})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Loopback redirect URIs match on any port (RFC 8252 §7.3), and nothing
// else about them may differ.
func TestAuthorizeLoopbackAnyPort(t *testing.T) {
	e := newEnv(t, nil)
	c := e.register(map[string]any{"redirect_uris": []string{"http://127.0.0.1:1234/cb", "http://localhost/cb", "http://[::1]:9/cb"}})
	for _, redirect := range []string{
		"http://127.0.0.1:1234/cb", "http://127.0.0.1:55555/cb", "http://127.0.0.1/cb",
		"http://localhost:8080/cb", "http://localhost/cb", "http://[::1]:1/cb",
	} {
		a := newAuthRequest(c)
		a.redirect = redirect
		resp := newBrowser(t).get(a.url(e.origin))
		if resp.status != http.StatusOK {
			t.Errorf("%s: status %d, want the consent page", redirect, resp.status)
		}
	}
}

// Once the client and redirect URI are valid, errors go back to the client
// with state and iss (RFC 6749 §4.1.2.1, RFC 9207): straight away in a
// browser that approved the client before; otherwise through a page that
// names the error and where it goes, whose link is that same redirect
// (RFC 9700 §4.11.2).
func TestAuthorizeErrorsAfterValidation(t *testing.T) {
	e := newEnv(t, nil)
	c := e.publicClient()
	approved := newBrowser(t)
	consent := approved.get(newAuthRequest(c).url(e.origin))
	if r := approved.post(e.origin+ConsentPath, consentForm(t, consent, "approve"), e.origin); r.status != http.StatusSeeOther {
		t.Fatalf("approve: %d\n%s", r.status, r.body)
	}
	tests := []struct {
		name      string
		extra     url.Values
		wantError string
	}{
		{name: "implicit flow", extra: url.Values{"response_type": {"token"}}, wantError: "unsupported_response_type"},
		{name: "no response type", extra: url.Values{"response_type": nil}, wantError: "invalid_request"},
		{name: "empty response type", extra: url.Values{"response_type": {""}}, wantError: "invalid_request"},
		{name: "pkce missing", extra: url.Values{"code_challenge": nil, "code_challenge_method": nil}, wantError: "invalid_request"},
		{name: "pkce plain", extra: url.Values{"code_challenge_method": {"plain"}}, wantError: "invalid_request"},
		{name: "pkce method missing (plain by default)", extra: url.Values{"code_challenge_method": nil}, wantError: "invalid_request"},
		{name: "pkce challenge not a sha-256", extra: url.Values{"code_challenge": {"short"}}, wantError: "invalid_request"},
		{name: "resource naming another server", extra: url.Values{"resource": {"https://other.example/mcp"}}, wantError: "invalid_target"},
		{name: "resource with a trailing slash", extra: url.Values{"resource": {e.origin + "/mcp/"}}, wantError: "invalid_target"},
		{name: "two resources", extra: url.Values{"resource": {e.origin + "/mcp", "https://other.example/mcp"}}, wantError: "invalid_target"},
		{name: "scope twice", extra: url.Values{"scope": {"mcp:read", "mcp:write"}}, wantError: "invalid_request"},
		{name: "state too long", extra: url.Values{"state": {strings.Repeat("s", 2000)}}, wantError: "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuthRequest(c)
			a.extra = tt.extra
			wantState := a.state
			if tt.name == "state too long" {
				wantState = strings.Repeat("s", 2000)
			}
			check := func(what string, loc *url.URL) {
				t.Helper()
				if !strings.HasPrefix(loc.String(), clientRedirect+"?") {
					t.Fatalf("%s: to %s, want the client", what, loc)
				}
				q := loc.Query()
				if q.Get("error") != tt.wantError {
					t.Fatalf("%s: error %q (%s), want %q", what, q.Get("error"), q.Get("error_description"), tt.wantError)
				}
				if q.Get("state") != wantState || q.Get("iss") != e.origin {
					t.Fatalf("%s: state %q iss %q, want the request's state and %q", what, q.Get("state"), q.Get("iss"), e.origin)
				}
				if q.Has("code") {
					t.Fatalf("%s: an error response with a code", what)
				}
			}

			page := newBrowser(t).get(a.url(e.origin))
			if page.status != http.StatusBadRequest || page.header.Get("Location") != "" || !strings.HasPrefix(page.header.Get("Content-Type"), "text/html") {
				t.Fatalf("a browser that never approved the client: %d Location %q, want a 400 page\n%s", page.status, page.header.Get("Location"), page.body)
			}
			if !strings.Contains(page.body, "<code>"+tt.wantError+"</code>") || !strings.Contains(page.body, "<code>127.0.0.1:7777</code>") {
				t.Fatalf("the page does not name the error and the redirect host:\n%s", page.body)
			}
			check("the page's link", rejectedLink(t, page))

			resp := approved.get(a.url(e.origin))
			if resp.status != http.StatusSeeOther {
				t.Fatalf("a browser that approved the client: %d, want 303\n%s", resp.status, resp.body)
			}
			check("the redirect", resp.location(t))
		})
	}
}

// A parameter given twice is named on the rejected page only when its
// name is one a client would send: the name of any other is the link
// author's text, which the gateway's page must not carry.
func TestAuthorizeRepeatedParameterNamed(t *testing.T) {
	e := newEnv(t, nil)
	c := e.publicClient()
	sentence := "Your session expired. Click Return to the application to sign in again"
	for _, tt := range []struct{ name, param, want string }{
		{"a parameter of OAuth", "scope", "parameter scope is given more than once"},
		{"a sentence", sentence, "a parameter is given more than once"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuthRequest(c)
			a.extra = url.Values{tt.param: {"one", "two"}}
			page := newBrowser(t).get(a.url(e.origin))
			if page.status != http.StatusBadRequest || !strings.Contains(page.body, "("+tt.want+")") {
				t.Fatalf("status %d, want a page saying %q:\n%s", page.status, tt.want, page.body)
			}
			if strings.Contains(page.body, sentence) {
				t.Errorf("the page carries the parameter's name:\n%s", page.body)
			}
		})
	}
}

var continueLink = regexp.MustCompile(`<a class="button" href="([^"]*)">Return to the application</a>`)

// rejectedLink returns the link of a page rejecting an authorization
// request.
func rejectedLink(t testing.TB, r *response) *url.URL {
	t.Helper()
	m := continueLink.FindStringSubmatch(r.body)
	if m == nil {
		t.Fatalf("no link back to the application:\n%s", r.body)
	}
	u, err := url.Parse(html.UnescapeString(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// RFC 9700 §4.11.2: a client registered with a phishing page as its
// redirect URI cannot use the gateway as a redirector by sending a wrong
// request on purpose. The user sees where the error would go, and a
// description reflecting what the request sent is cleaned for RFC 6749
// §4.1.2.1 there and in the link.
func TestAuthorizeNoOpenRedirect(t *testing.T) {
	e := newEnv(t, nil)
	evil := e.register(map[string]any{"redirect_uris": []string{"https://evil.example/login"}})
	q := url.Values{"client_id": {evil.ID}, "redirect_uri": {"https://evil.example/login"}, "state": {"x"}}
	resp := newBrowser(t).get(e.origin + AuthorizePath + "?" + q.Encode())
	if resp.status != http.StatusBadRequest || resp.header.Get("Location") != "" {
		t.Fatalf("got %d Location %q, want a page", resp.status, resp.header.Get("Location"))
	}
	if !strings.Contains(resp.body, "<code>evil.example</code>") {
		t.Errorf("the page does not name the redirect host:\n%s", resp.body)
	}
	if link := rejectedLink(t, resp); link.Host != "evil.example" || link.Query().Get("state") != "x" || link.Query().Get("error") == "" {
		t.Errorf("link: %s", link)
	}

	a := newAuthRequest(evil)
	a.extra = url.Values{"sc\u00f6pe\"": {"a", "b"}}
	resp = newBrowser(t).get(a.url(e.origin))
	desc := rejectedLink(t, resp).Query().Get("error_description")
	if desc == "" || desc != respond.Description(desc) || !strings.Contains(html.UnescapeString(resp.body), desc) {
		t.Errorf("error_description %q is not what RFC 6749 §4.1.2.1 allows, or not shown:\n%s", desc, resp.body)
	}
}

// Requested scopes are limited to SCOPES_SUPPORTED; no scope asks for all.
func TestAuthorizeScopes(t *testing.T) {
	e := newEnv(t, nil)
	c := e.publicClient()
	for _, tt := range []struct {
		name, scope, want string
	}{
		{name: "unknown scopes dropped", scope: "mcp:read admin openid", want: "mcp:read"},
		{name: "no scope: all", scope: "", want: testScopes},
		{name: "only unknown: none", scope: "admin", want: ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuthRequest(c)
			a.extra = url.Values{"scope": {tt.scope}}
			tr := e.redeem(a, e.code(newBrowser(t), a, alice))
			if tr.status != http.StatusOK || tr.Scope != tt.want {
				t.Fatalf("scope: got %q (%d %s), want %q", tr.Scope, tr.status, tr.Desc, tt.want)
			}
			if got := strings.Join(e.mustVerify(tr.AccessToken).Scopes, " "); got != tt.want {
				t.Fatalf("token scopes: got %q, want %q", got, tt.want)
			}
		})
	}
}

// state comes back exactly as sent, odd characters included.
func TestAuthorizeStateUntouched(t *testing.T) {
	e := newEnv(t, nil)
	a := newAuthRequest(e.publicClient())
	a.state = `a b+c/d?e=f&g=h%20"<>`
	resp := e.login(newBrowser(t), a, alice)
	if got := resp.location(t).Query().Get("state"); got != a.state {
		t.Fatalf("state: got %q, want %q", got, a.state)
	}
}

// A redirect URI's own query is kept (RFC 6749 §3.1.2).
func TestAuthorizeRedirectQueryKept(t *testing.T) {
	e := newEnv(t, nil)
	c := e.register(map[string]any{"redirect_uris": []string{"https://app.example.com/cb?tenant=7"}})
	a := newAuthRequest(c)
	loc := e.login(newBrowser(t), a, alice).location(t)
	if loc.Host != "app.example.com" || loc.Query().Get("tenant") != "7" || loc.Query().Get("code") == "" {
		t.Fatalf("redirect: %s", loc)
	}
}

// The per-IP limit covers the authorization endpoint, with a page.
func TestAuthorizeRateLimited(t *testing.T) {
	lim := &denyLimiter{budget: 1}
	e := newEnv(t, func(c *Config) { c.IPLimiter = lim })
	a := newAuthRequest(e.publicClient())
	if r := newBrowser(t).get(a.url(e.origin)); r.status != http.StatusOK {
		t.Fatalf("first: %d", r.status)
	}
	r := newBrowser(t).get(a.url(e.origin))
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "2" || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("second: %d Retry-After %q %s", r.status, r.header.Get("Retry-After"), r.header.Get("Content-Type"))
	}
	if !strings.HasPrefix(lim.keys[0], "broker-ip:127.0.0.1") {
		t.Fatalf("limiter key: %q", lim.keys[0])
	}
}
