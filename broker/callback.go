package broker

import (
	"crypto/rand"
	"errors"
	"net/http"
	"net/url"
	"slices"

	"golang.org/x/oauth2"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
)

// toUpstream sends the browser to the provider's login (OpenID Connect
// Core 1.0 §3.1.2.1) as the gateway's own client: a fresh nonce, PKCE S256
// (RFC 7636), and state = the flow id, whose sealed record (with nonce and
// verifier) goes in this browser's flow cookie, so the provider's answer
// is accepted only here (login CSRF, RFC 9700 §4.7).
func (b *Broker) toUpstream(w http.ResponseWriter, r *http.Request, f *flowRecord) {
	e, err := b.endpoints()
	if err != nil {
		b.log.Warn("provider not ready for a login", "error", err)
		b.redirectToClient(w, r, &f.Req, url.Values{"error": {"temporarily_unavailable"}, "error_description": {"the identity provider is not reachable; try again"}})
		return
	}
	f.Stage, f.Nonce, f.Verifier = stageLogin, rand.Text(), oauth2.GenerateVerifier()
	if err := b.setFlow(w, f); err != nil {
		b.log.Error("set login flow", "error", err)
		b.redirectToClient(w, r, &f.Req, url.Values{"error": {"server_error"}})
		return
	}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(f.Verifier), oauth2.SetAuthURLParam("nonce", f.Nonce)}
	for k, v := range b.authParams(e) {
		opts = append(opts, oauth2.SetAuthURLParam(k, v))
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Location", b.oauth2Config(e).AuthCodeURL(f.ID, opts...))
	w.WriteHeader(http.StatusSeeOther)
}

// serveCallback is the redirect URI of the gateway's client at the
// provider. It checks that this browser started the login (the flow
// cookie named by state) and that the flow is used once, redeems the
// provider's code, verifies the ID token, applies the allow-list, and
// answers the MCP client with the broker's own code.
func (b *Broker) serveCallback(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	id := q.Get("state")
	f, ok := b.openFlow(r, id, stageLogin)
	if !ok {
		b.errorPage(w, http.StatusBadRequest, "Sign-in not recognized",
			"This sign-in was not started in this browser, was already completed, or took longer than 10 minutes. Start again from your application.")
		return
	}
	first, err := b.store.Claim(ctx, "flow:"+id, flowTTL)
	if err != nil {
		// The flow cookie stays: nothing was spent (the provider's code is
		// redeemed only after the claim), so reloading this page once the
		// store answers again completes the sign-in.
		b.log.Error("claim login flow", "error", err)
		b.errorPage(w, http.StatusServiceUnavailable, "Try again", "The gateway cannot complete sign-ins right now. Reload this page in a minute.")
		return
	}
	b.cookies.clear(w, flowCookie+id)
	if !first {
		b.errorPage(w, http.StatusBadRequest, "Sign-in not recognized", "This sign-in was already completed. Start again from your application.")
		return
	}
	p := &f.Req
	fail := func(code, desc string) {
		b.redirectToClient(w, r, p, url.Values{"error": {code}, "error_description": {desc}})
	}
	if e := q.Get("error"); e != "" {
		b.log.Info("provider refused the login", "error", sanitize(e))
		code, desc := upstreamError(e)
		fail(code, desc)
		return
	}
	e, err := b.endpoints()
	if err != nil {
		b.log.Warn("provider not ready for a callback", "error", err)
		fail("temporarily_unavailable", "the identity provider is not reachable; try again")
		return
	}
	// RFC 9207 §2.4 for the gateway's own login: when the provider says
	// who answered, it must be the provider (mix-up defence).
	if iss := q.Get("iss"); (iss != "" || e.issParam) && iss != e.issuer {
		b.log.Warn("provider callback with a wrong iss; refused")
		fail("server_error", "the identity provider's answer was not valid")
		return
	}
	code := q.Get("code")
	if code == "" {
		fail("server_error", "the identity provider sent no code")
		return
	}
	login, err := b.exchange(ctx, e, code, f)
	if err != nil {
		b.log.Warn("login at the provider failed", "error", err)
		if errors.Is(err, errRefused) {
			fail("access_denied", "the identity provider refused the login")
		} else {
			fail("server_error", "the login at the identity provider could not be completed")
		}
		return
	}
	user := login.id.forProvider()
	if b.allow != nil && !b.allow(user) {
		b.log.Info("login refused by the allow-list", "sub", login.id.Sub, "email", login.id.Email)
		b.page(w, http.StatusForbidden, pageDenied{
			// The provider's words, on the gateway's page: a U+202E in
			// an email would reverse the page's own text after it.
			Who:      cleanText(login.id.who(), 254),
			Resource: b.resource,
			Continue: safeURL(b.clientRedirectURL(p, url.Values{"error": {"access_denied"}, "error_description": {"this account is not allowed here"}})),
		})
		return
	}
	now := b.now()
	rec := codeRecord{
		ID:       rand.Text(),
		Req:      *p,
		User:     login.id,
		AuthTime: now.Unix(),
		Upstream: login.refresh,
	}
	rec.Req.State = nil // returned now; not needed at the token endpoint
	rec.Granted = b.grantScopes(user, p.Scopes)
	sealed, err := b.seal.seal(purposeCode, now.Add(codeTTL), rec)
	if err != nil {
		b.log.Error("seal code", "error", err)
		fail("server_error", "")
		return
	}
	b.log.Info("login", "sub", login.id.Sub, "email", login.id.Email, "client", p.clientKey())
	b.redirectToClient(w, r, p, url.Values{"code": {sealed}})
}

// grantScopes applies Config.GrantScopes to requested, keeping only what
// was requested.
func (b *Broker) grantScopes(user *provider.Identity, requested []string) []string {
	if b.grant == nil {
		return slices.Clone(requested)
	}
	var out []string
	for _, s := range b.grant(user, slices.Clone(requested)) {
		if slices.Contains(requested, s) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// upstreamError maps the provider's error (RFC 6749 §4.1.2.1, OpenID
// Connect Core §3.1.2.6) to the one the client gets: a refusal by the user
// or the provider is access_denied, an outage temporarily_unavailable,
// anything else (a misconfiguration of the gateway's client) server_error.
func upstreamError(code string) (string, string) {
	switch code {
	case "access_denied", "login_required", "consent_required", "interaction_required", "account_selection_required":
		return "access_denied", "the identity provider refused the login"
	case "temporarily_unavailable":
		return "temporarily_unavailable", "the identity provider is unavailable; try again"
	}
	return "server_error", "the identity provider answered with an error"
}

// sanitize makes a value from a request fit for a log line.
func sanitize(s string) string {
	const max = 64
	out := make([]byte, 0, min(len(s), max))
	for i := 0; i < len(s) && len(out) < max; i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			out = append(out, c)
		}
	}
	return string(out)
}
