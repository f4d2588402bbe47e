package broker

import (
	"html"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// toCallback runs a login up to the provider's redirect back to the
// broker, and returns that URL (not yet followed).
func (e *env) toCallback(br *browser, a *authRequest, as who) *url.URL {
	e.t.Helper()
	resp := br.get(a.url(e.origin))
	if resp.status == http.StatusOK {
		resp = br.post(e.origin+ConsentPath, consentForm(e.t, resp, "approve"), e.origin)
	}
	return e.providerLogin(br, resp.location(e.t), as)
}

// Login CSRF and state tampering: the provider's answer is accepted only
// in the browser that started the login, once.
func TestCallbackBoundToBrowser(t *testing.T) {
	e := newEnv(t, nil)
	a := newAuthRequest(e.publicClient())
	attacker := newBrowser(t)
	back := e.toCallback(attacker, a, who{sub: "mallory", email: "mallory@example.com"})

	// The attacker sends the victim to their own callback URL.
	victim := newBrowser(t)
	if r := victim.get(back.String()); r.status != http.StatusBadRequest || r.header.Get("Location") != "" {
		t.Fatalf("someone else's callback: %d %s", r.status, r.header.Get("Location"))
	}
	// Tampered state in the attacker's own browser.
	q := back.Query()
	q.Set("state", strings.Repeat("B", 26))
	tampered := *back
	tampered.RawQuery = q.Encode()
	if r := attacker.get(tampered.String()); r.status != http.StatusBadRequest {
		t.Fatalf("tampered state: %d", r.status)
	}
	// The real one works, once.
	if r := attacker.get(back.String()); r.status != http.StatusSeeOther {
		t.Fatalf("own callback: %d %s", r.status, r.body)
	}
	if r := attacker.get(back.String()); r.status != http.StatusBadRequest {
		t.Fatalf("callback replayed: %d", r.status)
	}
}

// A flow cookie copied into another browser still serves one callback
// only (the store claims the flow).
func TestCallbackFlowSingleUse(t *testing.T) {
	e := newEnv(t, nil)
	a := newAuthRequest(e.publicClient())
	br := newBrowser(t)
	back := e.toCallback(br, a, alice)
	u, _ := url.Parse(e.origin)
	cookies := br.c.Jar.Cookies(u)
	if r := br.get(back.String()); r.status != http.StatusSeeOther {
		t.Fatalf("callback: %d", r.status)
	}
	thief := newBrowser(t)
	thief.c.Jar.SetCookies(u, cookies)
	if r := thief.get(back.String()); r.status != http.StatusBadRequest {
		t.Fatalf("callback with a copied flow cookie: %d", r.status)
	}
}

// ID tokens with the wrong issuer, audience or nonce, or none at all, end
// the login with an error to the client and no code.
func TestCallbackIDTokenChecks(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(map[string]any)
	}{
		{name: "wrong issuer", tamper: func(c map[string]any) { c["iss"] = "https://evil.example" }},
		{name: "wrong audience", tamper: func(c map[string]any) { c["aud"] = "another-client" }},
		{name: "wrong nonce", tamper: func(c map[string]any) { c["nonce"] = "replayed-nonce" }},
		{name: "no nonce", tamper: func(c map[string]any) { delete(c, "nonce") }},
		{name: "expired", tamper: func(c map[string]any) { c["exp"] = c["iat"].(int64) - 60 }},
		{name: "no subject", tamper: func(c map[string]any) { delete(c, "sub") }},
		{name: "groups of the wrong type", tamper: func(c map[string]any) { c["groups"] = map[string]any{"a": 1} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.is.IDTokenHook = tt.tamper
			a := newAuthRequest(e.publicClient())
			resp := e.login(newBrowser(t), a, alice)
			q := resp.location(t).Query()
			if resp.status != http.StatusSeeOther || q.Get("error") != "server_error" || q.Has("code") || q.Get("state") != a.state || q.Get("iss") != e.origin {
				t.Fatalf("got %d %v, want an error redirect without a code", resp.status, q)
			}
		})
	}
}

// A refusal at the provider reaches the client as access_denied.
func TestCallbackProviderRefusal(t *testing.T) {
	e := newEnv(t, nil)
	a := newAuthRequest(e.publicClient())
	br := newBrowser(t)
	resp := br.get(a.url(e.origin))
	resp = br.post(e.origin+ConsentPath, consentForm(t, resp, "approve"), e.origin)
	toProvider := resp.location(t)
	form := toProvider.Query()
	form.Set("action", "deny")
	back := br.post(e.is.URL+upstreamLoginURL, form, e.is.URL).location(t)
	final := br.get(back.String())
	q := final.location(t).Query()
	if q.Get("error") != "access_denied" || q.Get("state") != a.state || q.Get("iss") != e.origin {
		t.Fatalf("refusal: %v", q)
	}
}

// The provider's own iss in its answer must be the provider (RFC 9207).
func TestCallbackProviderIss(t *testing.T) {
	e := newEnv(t, nil)
	a := newAuthRequest(e.publicClient())
	br := newBrowser(t)
	back := e.toCallback(br, a, alice)
	q := back.Query()
	q.Set("iss", "https://evil.example")
	back.RawQuery = q.Encode()
	resp := br.get(back.String())
	if got := resp.location(t).Query(); got.Get("error") != "server_error" || got.Has("code") {
		t.Fatalf("mixed-up iss: %v", got)
	}
}

// A user the allow-list refuses sees a page at the gateway, whose Continue
// link gives the client access_denied; no code is issued.
func TestCallbackNotAllowed(t *testing.T) {
	e := newEnv(t, nil)
	e.setAllowed("bob")
	a := newAuthRequest(e.publicClient())
	resp := e.login(newBrowser(t), a, alice)
	if resp.status != http.StatusForbidden || !strings.HasPrefix(resp.header.Get("Content-Type"), "text/html") {
		t.Fatalf("status %d %s", resp.status, resp.header.Get("Content-Type"))
	}
	if !strings.Contains(resp.body, "Signed in as "+aliceEmail+"; not allowed here") {
		t.Fatalf("page does not say who is signed in:\n%s", resp.body)
	}
	if strings.Contains(resp.body, "code=") {
		t.Fatal("a code on the not-allowed page")
	}
	m := strings.Index(resp.body, `href="`)
	if m < 0 {
		t.Fatal("no Continue link")
	}
	href := resp.body[m+len(`href="`):]
	href = html.UnescapeString(href[:strings.Index(href, `"`)])
	u, err := url.Parse(href)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if !strings.HasPrefix(href, clientRedirect+"?") || q.Get("error") != "access_denied" || q.Get("state") != a.state || q.Get("iss") != e.origin {
		t.Fatalf("Continue: %s", href)
	}
}

// The not-allowed page names the identity without its control and format
// characters: an email with a U+202E, as a provider that lets users
// choose their email may hand over, would reverse the page's text.
func TestCallbackNotAllowedIdentityCleaned(t *testing.T) {
	e := newEnv(t, nil)
	e.setAllowed("bob")
	resp := e.login(newBrowser(t), newAuthRequest(e.publicClient()), who{sub: "mallory", email: "mallory\u202emoc.elgoog@example.com"})
	if resp.status != http.StatusForbidden {
		t.Fatalf("status %d", resp.status)
	}
	if strings.Contains(resp.body, "\u202e") || !strings.Contains(resp.body, "Signed in as mallory moc.elgoog@example.com; not allowed here") {
		t.Fatalf("the page shows the identity as sent:\n%s", resp.body)
	}
}

// Groups come from userinfo when the ID token has none.
func TestCallbackGroupsFromUserinfo(t *testing.T) {
	e := newEnv(t, nil)
	e.is.GroupsOnlyInUserinfo = true
	_, tr := e.tokens()
	if got := e.mustVerify(tr.AccessToken).Groups; !slices.Equal(got, []string{"mcp-users"}) {
		t.Fatalf("groups: got %v", got)
	}
}

// An identity too large to carry in a code is refused with a page, not
// cut (cutting groups could drop one a policy denies).
func TestCallbackIdentityTooLarge(t *testing.T) {
	e := newEnv(t, nil)
	groups := make([]string, 300)
	for i := range groups {
		groups[i] = "a-rather-long-group-name-" + strings.Repeat("x", 10)
	}
	a := newAuthRequest(e.publicClient())
	resp := e.login(newBrowser(t), a, who{sub: aliceSub, email: aliceEmail, groups: strings.Join(groups, ",")})
	if q := resp.location(t).Query(); q.Get("error") != "server_error" || q.Has("code") {
		t.Fatalf("too large: %v", q)
	}
}

// The upstream login uses the gateway's own client, PKCE S256, a nonce,
// the callback as redirect URI, and offline_access since the provider
// lists it.
func TestUpstreamRequest(t *testing.T) {
	e := newEnv(t, nil)
	br := newBrowser(t)
	resp := br.get(newAuthRequest(e.publicClient()).url(e.origin))
	resp = br.post(e.origin+ConsentPath, consentForm(t, resp, "approve"), e.origin)
	q := resp.location(t).Query()
	for k, want := range map[string]string{
		"client_id":             gatewayClientID,
		"redirect_uri":          e.origin + CallbackPath,
		"response_type":         "code",
		"code_challenge_method": "S256",
		"scope":                 "openid email profile offline_access",
	} {
		if q.Get(k) != want {
			t.Errorf("%s: got %q, want %q", k, q.Get(k), want)
		}
	}
	if len(q.Get("nonce")) < 20 || len(q.Get("code_challenge")) != 43 || len(q.Get("state")) != 26 {
		t.Errorf("nonce, challenge or state missing: %v", q)
	}
}
