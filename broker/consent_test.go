package broker

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The consent page: HTML, one POST form whose buttons are decision =
// approve / deny, the client's name escaped, its redirect host shown, and
// no framing.
func TestConsentPage(t *testing.T) {
	e := newEnv(t, nil)
	c := e.register(map[string]any{
		"client_name":   "<script>alert(1)</script>Evil\u202eCorp",
		"redirect_uris": []string{"https://app.example.com/cb"},
	})
	resp := newBrowser(t).get(newAuthRequest(c).url(e.origin))
	if resp.status != http.StatusOK {
		t.Fatalf("status %d", resp.status)
	}
	h := resp.header
	for k, want := range map[string]string{
		"Content-Type":    "text/html; charset=utf-8",
		"X-Frame-Options": "DENY",
		"Cache-Control":   "no-store",
		"Referrer-Policy": "same-origin", // no-referrer would make the form's Origin "null"
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: got %q, want %q", k, got, want)
		}
	}
	csp := h.Get("Content-Security-Policy")
	for _, d := range []string{"frame-ancestors 'none'", "default-src 'none'"} {
		if !strings.Contains(csp, d) {
			t.Errorf("CSP %q lacks %q", csp, d)
		}
	}
	body := resp.body
	if n := strings.Count(body, "<form"); n != 1 || !strings.Contains(body, `<form method="post" action="/oauth/consent">`) {
		t.Errorf("want one POST form to /oauth/consent, got %d forms", n)
	}
	buttons := regexp.MustCompile(`<button type="submit" name="decision" value="(\w+)"`).FindAllStringSubmatch(body, -1)
	if len(buttons) != 2 || buttons[0][1] != "approve" || buttons[1][1] != "deny" {
		t.Errorf("buttons: %v", buttons)
	}
	if strings.Contains(body, "<script>") || !strings.Contains(body, "&lt;script&gt;") {
		t.Error("client name not escaped")
	}
	if strings.Contains(body, "\u202e") {
		t.Error("bidirectional override in the client name kept")
	}
	if !strings.Contains(body, "app.example.com") {
		t.Error("redirect host not shown")
	}
}

// A name of 100 letters without a space, or a long resource URL, wraps
// on a phone's screen instead of widening the page past it (Chromium at
// 360 px scrolled sideways, the buttons shrunk): the pages' style breaks
// a word anywhere when nothing else fits.
func TestConsentPageWrapsLongWords(t *testing.T) {
	e := newEnv(t, nil)
	c := e.register(map[string]any{"client_name": strings.Repeat("A", 100), "redirect_uris": []string{"https://app.example.com/cb"}})
	resp := newBrowser(t).get(newAuthRequest(c).url(e.origin))
	body := regexp.MustCompile(`(?m)^<style>body\{[^}]*\}`).FindString(resp.body)
	if !strings.Contains(body, "overflow-wrap:anywhere") {
		t.Errorf("the body's style %q lets a long word widen the page", body)
	}
}

// Deny answers the client access_denied, with state and iss.
func TestConsentDeny(t *testing.T) {
	e := newEnv(t, nil)
	a := newAuthRequest(e.publicClient())
	br := newBrowser(t)
	form := consentForm(t, br.get(a.url(e.origin)), "deny")
	resp := br.post(e.origin+ConsentPath, form, e.origin)
	q := resp.location(t).Query()
	if resp.status != http.StatusSeeOther || q.Get("error") != "access_denied" || q.Get("state") != a.state || q.Get("iss") != e.origin {
		t.Fatalf("deny: %d %v", resp.status, q)
	}
	// The flow is over: approving it now fails.
	form.Set("decision", "approve")
	if r := br.post(e.origin+ConsentPath, form, e.origin); r.status != http.StatusBadRequest {
		t.Fatalf("approve after deny: %d", r.status)
	}
}

// Consent CSRF: a post that did not come from this browser's own consent
// page is refused.
func TestConsentCSRF(t *testing.T) {
	e := newEnv(t, nil)
	a := newAuthRequest(e.register(map[string]any{"client_name": "Mallory", "redirect_uris": []string{malloryRedirect}}))

	// The attacker gets a flow id by opening the consent page themselves.
	attacker := newBrowser(t)
	attackerForm := consentForm(t, attacker.get(a.url(e.origin)), "approve")
	victim := newBrowser(t)
	victimForm := consentForm(t, victim.get(a.url(e.origin)), "approve")
	// with is victimForm with the field k set to v, or removed when v is "".
	with := func(k, v string) url.Values {
		f := url.Values{}
		for name, vs := range victimForm {
			f[name] = vs
		}
		if v == "" {
			f.Del(k)
		} else {
			f.Set(k, v)
		}
		return f
	}
	other := e.publicClient()

	tests := []struct {
		name   string
		br     *browser
		form   url.Values
		origin string
		site   string
		want   int
	}{
		{name: "attacker's flow posted from the victim's browser", br: victim, form: attackerForm, origin: e.origin, want: 400},
		{name: "cross-site post (Origin)", br: victim, form: victimForm, origin: "https://mallory.example", want: 403},
		{name: "cross-site post (Sec-Fetch-Site)", br: victim, form: victimForm, site: "cross-site", want: 403},
		{name: "null origin", br: victim, form: victimForm, origin: "null", want: 403},
		{name: "no flow", br: victim, form: with("flow", ""), origin: e.origin, want: 400},
		{name: "made-up flow", br: victim, form: with("flow", strings.Repeat("A", 26)), origin: e.origin, want: 400},
		{name: "no client", br: victim, form: with("client", ""), origin: e.origin, want: 400},
		{name: "another client than the flow's", br: victim, form: with("client", other.ID), origin: e.origin, want: 400},
		{name: "no decision", br: victim, form: with("decision", ""), origin: e.origin, want: 400},
		{name: "browser without cookies", br: newBrowser(t), form: victimForm, origin: e.origin, want: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptestPost(t, e.origin+ConsentPath, tt.form)
			if tt.origin != "" {
				req.Header.Set("Origin", tt.origin)
			}
			if tt.site != "" {
				req.Header.Set("Sec-Fetch-Site", tt.site)
			}
			resp := tt.br.do(req)
			if resp.status != tt.want || resp.header.Get("Location") != "" {
				t.Fatalf("status %d (Location %q), want %d", resp.status, resp.header.Get("Location"), tt.want)
			}
		})
	}
	// The victim's own consent still works afterwards.
	resp := victim.post(e.origin+ConsentPath, victimForm, e.origin)
	if resp.status != http.StatusSeeOther || !strings.HasPrefix(resp.header.Get("Location"), e.is.URL) {
		t.Fatalf("victim's approval: %d %s", resp.status, resp.header.Get("Location"))
	}
}

func httptestPost(t *testing.T, u string, form url.Values) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

// Approval is remembered per client in this browser only.
func TestConsentRemembered(t *testing.T) {
	e := newEnv(t, nil)
	c := e.publicClient()
	br := newBrowser(t)
	e.code(br, newAuthRequest(c), alice)

	// The same client again: straight to the provider.
	resp := br.get(newAuthRequest(c).url(e.origin))
	if resp.status != http.StatusSeeOther || !strings.HasPrefix(resp.header.Get("Location"), e.is.URL) {
		t.Fatalf("approved client: %d %s", resp.status, resp.header.Get("Location"))
	}
	// Another client: consent again.
	if r := br.get(newAuthRequest(e.publicClient()).url(e.origin)); r.status != http.StatusOK {
		t.Fatalf("other client: %d, want the consent page", r.status)
	}
	// Another browser: consent again.
	if r := newBrowser(t).get(newAuthRequest(c).url(e.origin)); r.status != http.StatusOK {
		t.Fatalf("other browser: %d, want the consent page", r.status)
	}
}

// An approval covers the scopes the consent page named: a request of the
// same client for other scopes (a step-up) shows the page again, naming
// them, instead of widening the access silently.
func TestConsentRememberedScopes(t *testing.T) {
	e := newEnv(t, nil)
	c := e.publicClient()
	br := newBrowser(t)
	narrow := newAuthRequest(c)
	narrow.extra = url.Values{"scope": {"mcp:read"}}
	e.code(br, narrow, alice)

	wide := newAuthRequest(c)
	wide.extra = url.Values{"scope": {"mcp:read mcp:write"}}
	resp := br.get(wide.url(e.origin))
	if resp.status != http.StatusOK || !strings.Contains(resp.body, "<code>mcp:read mcp:write</code>") {
		t.Fatalf("wider scopes: %d %s, want the consent page naming them", resp.status, resp.header.Get("Location"))
	}
	e.code(br, wide, alice)

	// Both sets are remembered now, in whatever order they are asked for.
	for _, scope := range []string{"mcp:read", "mcp:write mcp:read"} {
		a := newAuthRequest(c)
		a.extra = url.Values{"scope": {scope}}
		if r := br.get(a.url(e.origin)); r.status != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), e.is.URL) {
			t.Errorf("scope %q approved before: %d %s, want the provider", scope, r.status, r.header.Get("Location"))
		}
	}
}

// Cookies: HttpOnly and SameSite=Lax always; Secure with the __Host-
// prefix on an https origin.
func TestConsentCookieAttributes(t *testing.T) {
	for _, tt := range []struct {
		issuer     string
		wantPrefix string
		wantSecure bool
	}{
		{issuer: "https://mcp.example.com", wantPrefix: "__Host-", wantSecure: true},
		{issuer: "http://127.0.0.1:8080", wantPrefix: "", wantSecure: false},
	} {
		t.Run(tt.issuer, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.Issuer = tt.issuer })
			c := e.publicClient()
			a := newAuthRequest(c)
			a.extra = url.Values{"resource": {e.origin + "/mcp"}}
			// The page, then the approval, served in-process (the issuer is
			// not this server's address).
			rec := httptest.NewRecorder()
			e.b.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, a.url(tt.issuer), nil))
			flowCk := rec.Result().Cookies()
			if len(flowCk) != 1 {
				t.Fatalf("cookies of the consent page: %v", flowCk)
			}
			form := consentForm(t, &response{status: rec.Code, body: rec.Body.String()}, "approve")
			req := httptestPost(t, tt.issuer+ConsentPath, form)
			req.Header.Set("Origin", tt.issuer)
			req.AddCookie(flowCk[0])
			rec = httptest.NewRecorder()
			e.b.Handler().ServeHTTP(rec, req)
			if rec.Code != http.StatusSeeOther {
				t.Fatalf("approve: %d %s", rec.Code, rec.Body)
			}
			names := map[string]bool{}
			for _, ck := range append(flowCk, rec.Result().Cookies()...) {
				names[ck.Name] = true
				if !strings.HasPrefix(ck.Name, tt.wantPrefix+"mcp-") || ck.Secure != tt.wantSecure || !ck.HttpOnly ||
					ck.SameSite != http.SameSiteLaxMode || ck.Path != "/" || ck.Domain != "" {
					t.Errorf("cookie %s: secure %v httponly %v samesite %v path %q domain %q", ck.Name, ck.Secure, ck.HttpOnly, ck.SameSite, ck.Path, ck.Domain)
				}
			}
			if !names[tt.wantPrefix+"mcp-consent"] {
				t.Errorf("no consent cookie among %v", names)
			}
		})
	}
}

// A browser piling up flows gets its flow cookies dropped, so its requests
// never grow past what servers accept.
func TestFlowCookiesBounded(t *testing.T) {
	e := newEnv(t, nil)
	a := newAuthRequest(e.publicClient())
	br := newBrowser(t)
	u, _ := url.Parse(e.origin)
	for range 3 * maxFlows {
		br.get(a.url(e.origin))
		if n := len(br.c.Jar.Cookies(u)); n > maxFlows {
			t.Fatalf("%d cookies held", n)
		}
	}
}

// Every registration the broker accepts can complete a browser login.
// The flow cookie, which browsers drop past 4096 bytes (name and value),
// stays within that at every limit a client controls: the largest
// registration accepted, a 512-byte redirect URI and a 1024-byte state
// made of what JSON escapes. A registration too large for a login is
// refused, saying why.
func TestFlowCookieSize(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		// A longer RESOURCE_URL than the test server's, as deployments have.
		c.ResourceURL += "/" + strings.Repeat("r", 60)
	})
	worst := func(prefix string, n int) string {
		return (prefix + strings.Repeat(`"&<>\`, n))[:n]
	}
	redirect := worst("https://a.example/cb?", maxRedirectURILen)
	name := strings.Repeat(`"`, maxClientNameRunes)

	// The largest registration accepted: the worst redirect URI, then
	// others until the client_id would be too large.
	var c registered
	redirects := []string{redirect}
	for i := 0; ; i++ {
		redirects = append(redirects, fmt.Sprintf("https://a.example/%d/", i)+strings.Repeat("p", 80))
		status, body := e.registerRaw(map[string]any{"redirect_uris": redirects, "client_name": name, "token_endpoint_auth_method": "client_secret_post"})
		if status == http.StatusCreated {
			var reg registration
			if err := json.Unmarshal([]byte(body), &reg); err != nil {
				t.Fatal(err)
			}
			c = registered{ID: reg.ClientID, Secret: reg.ClientSecret, Redirects: []string{redirect}}
			continue
		}
		if status != http.StatusBadRequest || !strings.Contains(body, "client_id, which carries them") || c.ID == "" {
			t.Fatalf("registration of %d redirect URIs: %d %s", len(redirects), status, body)
		}
		break
	}
	if len(c.ID) < maxClientIDLen-150 {
		t.Fatalf("the largest registration accepted has a client_id of %d characters, want nearly %d", len(c.ID), maxClientIDLen)
	}

	a := newAuthRequest(c)
	a.state = worst("\x01\xff", maxStateLen)
	a.extra = url.Values{"resource": nil}
	br := newBrowser(t)
	sizes := func(what string, r *response) {
		t.Helper()
		cks := (&http.Response{Header: r.header}).Cookies()
		if len(cks) == 0 {
			t.Fatalf("%s: no cookie set (status %d)\n%s", what, r.status, r.body)
		}
		for _, ck := range cks {
			// On an https origin the name has the __Host- prefix too.
			if n := len("__Host-") + len(ck.Name) + len(ck.Value); n > maxCookieBytes {
				t.Errorf("%s: cookie %s of %d bytes, browsers keep %d", what, ck.Name, n, maxCookieBytes)
			} else {
				t.Logf("%s: cookie %s of %d bytes", what, ck.Name, n)
			}
		}
	}
	page := br.get(a.url(e.origin))
	sizes("the consent page", page)
	resp := br.post(e.origin+ConsentPath, consentForm(t, page, "approve"), e.origin)
	if resp.status != http.StatusSeeOther {
		t.Fatalf("approve: %d\n%s", resp.status, resp.body)
	}
	sizes("the approval", resp)
	back := br.get(e.providerLogin(br, resp.location(t), alice).String())
	q := back.location(t).Query()
	if back.status != http.StatusSeeOther || q.Get("state") != a.state || q.Get("code") == "" {
		t.Fatalf("callback: %d, state returned intact %v, code %v", back.status, q.Get("state") == a.state, q.Get("code") != "")
	}
	tr := e.token(url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")}, "redirect_uri": {redirect},
		"code_verifier": {a.verifier}, "client_id": {c.ID}, "client_secret": {c.Secret}})
	if tr.status != http.StatusOK {
		t.Fatalf("redeem: %d %s %s", tr.status, tr.Error, tr.Desc)
	}
	if r := e.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tr.RefreshToken}, "client_id": {c.ID}, "client_secret": {c.Secret}}); r.status != http.StatusOK {
		t.Fatalf("refresh: %d %s %s", r.status, r.Error, r.Desc)
	}
	e.mustVerify(tr.AccessToken)

	// The reviewer's registration: ten redirect URIs of about 500 bytes and a
	// name of 100 characters.
	var long []string
	for i := range maxRedirectURIs {
		long = append(long, fmt.Sprintf("https://app.example/%d/", i)+strings.Repeat("p", 480))
	}
	status, body := e.registerRaw(map[string]any{"redirect_uris": long, "client_name": strings.Repeat("n", 100)})
	if status != http.StatusBadRequest || !strings.Contains(body, `"error":"invalid_client_metadata"`) || !strings.Contains(body, "register fewer or shorter redirect URIs") {
		t.Fatalf("a registration whose client_id could not complete a login: %d %s", status, body)
	}
}

// The consent cookie at its largest (maxApproved entries, each a client
// and its scopes) stays within what browsers keep.
func TestConsentCookieSize(t *testing.T) {
	e := newEnv(t, nil)
	var rec consentRecord
	for i := range maxApproved {
		c := &client{id: fmt.Sprintf("client-%d", i)}
		rec.Clients = append(rec.Clients, approvalEntry(c, strings.Fields(testScopes)))
	}
	v, err := e.b.seal.seal(purposeConsent, e.b.now().Add(consentTTL), rec)
	if err != nil {
		t.Fatal(err)
	}
	n := len("__Host-") + len(consentCookie) + len(v)
	t.Logf("consent cookie: %d bytes", n)
	if n > maxCookieBytes {
		t.Fatalf("consent cookie of %d bytes, more than %d", n, maxCookieBytes)
	}
}

// The consent form is charged to the per-IP limit: its flow cookie is used
// up only at the callback, so one flow posted again and again (its cookie
// replayed, as a script does) would otherwise be an approval, a log line
// and a sealed cookie per request without end.
func TestConsentRateLimited(t *testing.T) {
	lim := &denyLimiter{budget: 3} // the authorization request and two posts
	e := newEnv(t, func(c *Config) { c.IPLimiter = lim })
	page := newBrowser(t).get(newAuthRequest(e.publicClient()).url(e.origin))
	form := consentForm(t, page, "approve")
	cookies := (&http.Response{Header: page.header}).Cookies()
	var statuses []int
	for range 4 {
		req := httptestPost(t, e.origin+ConsentPath, form)
		req.Header.Set("Origin", e.origin)
		for _, c := range cookies {
			req.AddCookie(c)
		}
		statuses = append(statuses, newBrowser(t).do(req).status)
	}
	want := []int{http.StatusSeeOther, http.StatusSeeOther, http.StatusTooManyRequests, http.StatusTooManyRequests}
	if !slices.Equal(statuses, want) {
		t.Fatalf("statuses of one consent form posted 4 times: got %v, want %v", statuses, want)
	}
	if len(lim.keys) != 5 || lim.keys[4] != lim.keys[0] || !strings.HasPrefix(lim.keys[4], "broker-ip:127.0.0.1") {
		t.Fatalf("limiter keys: %q", lim.keys)
	}
}
