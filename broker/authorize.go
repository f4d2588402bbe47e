package broker

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/redirecturi"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/respond"
)

// Bounds of an authorization request: it travels sealed in a cookie, which
// browsers keep only up to 4096 bytes (name and value, RFC 6265 §6.1).
// What of it the client chooses is bounded here and at registration
// (maxRedirectURILen), so that the flow cookie of every request the
// broker accepts fits; TestFlowCookieSize measures it at these limits.
const (
	maxAuthorizeQuery = 8 << 10
	maxStateLen       = 1024
	maxCookieBytes    = 4096
)

// Stages of a flow.
const (
	stageConsent = "consent" // the consent page is shown
	stageLogin   = "login"   // the browser went to the provider
)

// pending is a validated authorization request (OAuth 2.1 §4.1.1).
type pending struct {
	// Client is the clientBinding of the client_id, not the client_id:
	// a registration's client_id carries the whole registration (up to
	// maxClientIDLen), too much to seal into a cookie beside the rest.
	Client   string `json:"ck"`
	Redirect string `json:"r"`
	// State is the client's state, byte for byte. As []byte it is base64
	// in the JSON, 4/3 of its size whatever it holds (a JSON string would
	// take up to six bytes for one, and turn invalid UTF-8 into U+FFFD).
	State     []byte   `json:"sb,omitempty"`
	Challenge string   `json:"h"`            // PKCE S256 code challenge (RFC 7636 §4.2)
	Scopes    []string `json:"sc,omitempty"` // requested, within Config.Scopes
	Resource  string   `json:"rs"`           // RFC 8707; always RESOURCE_URL
}

// clientKey is the clientKey of p's client: the first 16 characters of
// its binding (both are base64url of the same SHA-256, and 12 bytes are
// 16 characters).
func (p *pending) clientKey() string { return p.Client[:min(len(p.Client), 16)] }

// flowRecord is a login in progress, sealed in the flow cookie named after
// its id. The id is also the state of the upstream login, so the
// provider's answer is accepted only in the browser that started it.
type flowRecord struct {
	ID       string  `json:"id"`
	Stage    string  `json:"st"`
	Req      pending `json:"p"`
	Nonce    string  `json:"n,omitempty"` // OpenID Connect Core 1.0 §3.1.2.1
	Verifier string  `json:"v,omitempty"` // PKCE verifier of the upstream login
}

// serveAuthorize is the authorization endpoint (OAuth 2.1 §4.1.1,
// RFC 6749 §3.1). Until the client and its redirect URI are validated,
// errors are pages at the gateway and never redirects (RFC 6749
// §4.1.2.1: an open redirector otherwise); afterwards they go to the
// client with state and iss, straight away only once this browser has
// approved the client (rejectRequest).
func (b *Broker) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if b.pageOverIPLimit(w, r) {
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil || len(r.URL.RawQuery) > maxAuthorizeQuery {
		b.errorPage(w, http.StatusBadRequest, "Bad request", "The application sent a malformed authorization request.")
		return
	}
	q = withoutEmpty(q)
	if len(q["client_id"]) != 1 || len(q["redirect_uri"]) > 1 {
		b.errorPage(w, http.StatusBadRequest, "Bad request", "The authorization request must name exactly one client_id and at most one redirect_uri.")
		return
	}
	c, err := b.lookupClient(ctx, q.Get("client_id"), forAuthorization, b.clientIP(r))
	if err != nil {
		b.clientErrorPage(w, q.Get("client_id"), err)
		return
	}
	redirect := q.Get("redirect_uri")
	if redirect == "" {
		b.errorPage(w, http.StatusBadRequest, "Bad request", "The authorization request has no redirect_uri.")
		return
	}
	if !c.redirectRegistered(redirect) {
		b.errorPage(w, http.StatusBadRequest, "Unregistered redirect URI",
			"The application asked to be answered at an address it did not register. Nothing was sent to it.")
		return
	}
	// A registration sealed before redirecturi.Parse refused non-ASCII
	// could name a host that only looks like another (clаude.ai): never
	// show it, nor send anyone there.
	if _, err := redirecturi.Parse(redirect); err != nil {
		b.errorPage(w, http.StatusBadRequest, "Invalid redirect URI",
			"The application registered an address this gateway no longer accepts (a host name must be ASCII, internationalized ones in punycode). Nothing was sent to it. Remove the server from the application and add it again.")
		return
	}
	p := &pending{Client: clientBinding(c.id), Redirect: redirect, State: []byte(q.Get("state")), Resource: b.resource}
	if code, desc := b.checkAuthorize(q, p); code != "" {
		b.rejectRequest(w, r, c, p, code, desc)
		return
	}
	b.startFlow(w, r, c, p)
}

// rejectRequest answers an authorization error (RFC 6749 §4.1.2.1) found
// once the client and its redirect URI are valid, before the user approved
// the client in this request. Valid is not trusted: anyone can register a
// client whose redirect URI is a phishing page and send a wrong request on
// purpose, and an automatic redirect would take users there from the
// gateway's own URL with nothing shown (RFC 9700 §4.11.2: redirect
// automatically only to a redirect URI the server trusts; otherwise it may
// inform the user and let them decide). So the error is redirected
// straight away only when this browser approved the client before, having
// seen on the consent page where its answers go; otherwise a page names
// the error and that destination, with a link to the same redirect that
// the user may follow.
func (b *Broker) rejectRequest(w http.ResponseWriter, r *http.Request, c *client, p *pending, code, desc string) {
	params := url.Values{"error": {code}, "error_description": {desc}}
	if b.approvedAny(r, c) {
		b.redirectToClient(w, r, p, params)
		return
	}
	status := http.StatusBadRequest
	if code == "server_error" {
		status = http.StatusInternalServerError
	}
	d := pageRejected{
		Code:        code,
		Description: respond.Description(desc),
		Continue:    safeURL(b.clientRedirectURL(p, params)),
	}
	d.Destination, d.Where, _ = destination(p.Redirect)
	b.page(w, status, d)
}

// checkAuthorize applies the rules of an authorization request whose
// client and redirect URI are valid, filling p. It returns an RFC 6749
// §4.1.2.1 error code and description, or "".
func (b *Broker) checkAuthorize(q url.Values, p *pending) (code, desc string) {
	for k, v := range q {
		switch {
		case len(v) > 1 && k == "resource": // RFC 8707 §2: one resource only here
			return "invalid_target", "this authorization server issues tokens only for " + b.resource
		case len(v) > 1: // RFC 6749 §3.1
			return "invalid_request", paramName(k) + " is given more than once"
		}
	}
	switch {
	case !q.Has("response_type"): // RFC 6749 §4.1.2.1: a missing parameter
		return "invalid_request", "response_type is required; it must be code"
	case q.Get("response_type") != "code":
		return "unsupported_response_type", "only response_type=code is supported"
	case len(p.State) > maxStateLen:
		return "invalid_request", "state is too long"
	case q.Get("code_challenge") == "":
		return "invalid_request", "code_challenge is required (PKCE with S256)"
	case q.Get("code_challenge_method") != "S256":
		// RFC 7636 §4.4.1; OAuth 2.1 §4.1.1: plain (the default when the
		// method is absent) is refused.
		return "invalid_request", "code_challenge_method must be S256"
	case !isChallenge(q.Get("code_challenge")):
		return "invalid_request", "code_challenge must be a base64url SHA-256 (43 characters)"
	}
	p.Challenge = q.Get("code_challenge")
	if rs, ok := q["resource"]; ok && rs[0] != b.resource {
		return "invalid_target", "this authorization server issues tokens only for " + b.resource // RFC 8707 §2
	}
	p.Scopes = b.requestedScopes(q.Get("scope"))
	return "", ""
}

// pageOverIPLimit charges r to its address's budget (Config.IPLimiter)
// and, past it, answers with a page a person can read; it reports whether
// it answered. For the pages of a sign-in: authorization and consent.
func (b *Broker) pageOverIPLimit(w http.ResponseWriter, r *http.Request) bool {
	wait, over := limited(r.Context(), b.ipLimit, b.ipKey(r))
	if over {
		w.Header().Set("Retry-After", respond.RetryAfter(wait))
		b.errorPage(w, http.StatusTooManyRequests, "Too many requests", "Too many sign-ins from your address. Wait a minute and try again.")
	}
	return over
}

// ipKey is r's key in Config.IPLimiter.
func (b *Broker) ipKey(r *http.Request) string { return "broker-ip:" + b.clientIP(r) }

// paramName names a request parameter in an error that the rejected
// page shows: "parameter state", or "a parameter" when the name is not
// one a client would send (over 32 bytes, or other than letters, digits,
// '_', '-' and '.'), so that whoever wrote the link cannot put a
// sentence of their own on the gateway's page.
func paramName(k string) string {
	if len(k) > 32 {
		return "a parameter"
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; !isBase64URL(c) && c != '.' {
			return "a parameter"
		}
	}
	return "parameter " + k
}

// withoutEmpty drops the parameters sent without a value, which RFC 6749
// §3.1 and §3.2 say MUST be treated as omitted: "resource=" names no
// resource, "scope=" asks for no particular scope, and an empty value
// beside a real one does not make the parameter given twice.
func withoutEmpty(v url.Values) url.Values {
	for k, vs := range v {
		if vs = slices.DeleteFunc(vs, func(s string) bool { return s == "" }); len(vs) == 0 {
			delete(v, k)
		} else {
			v[k] = vs
		}
	}
	return v
}

// isChallenge reports whether s has the shape of an S256 code challenge:
// BASE64URL(SHA256(verifier)), 43 characters (RFC 7636 §4.2).
func isChallenge(s string) bool {
	if len(s) != 43 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isBase64URL(s[i]) {
			return false
		}
	}
	return true
}

func isBase64URL(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// requestedScopes limits a requested scope to Config.Scopes (RFC 6749
// §3.3: the server may grant less than asked). No scope asks for all.
func (b *Broker) requestedScopes(scope string) []string {
	if strings.TrimSpace(scope) == "" {
		return slices.Clone(b.scopes)
	}
	var out []string
	for s := range strings.FieldsSeq(scope) {
		if slices.Contains(b.scopes, s) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// startFlow begins the login of a validated request: straight to the
// provider when this browser already approved the client for these
// scopes, else the consent page first.
func (b *Broker) startFlow(w http.ResponseWriter, r *http.Request, c *client, p *pending) {
	// A browser looping on the authorization endpoint would pile up flow
	// cookies until its requests got too large: past maxFlows, drop them.
	if names := b.cookies.flowNames(r); len(names) >= maxFlows {
		for _, n := range names {
			b.cookies.clear(w, n)
		}
	}
	f := &flowRecord{ID: rand.Text(), Req: *p}
	if b.approved(r, c, p.Scopes) {
		b.toUpstream(w, r, f)
		return
	}
	f.Stage = stageConsent
	if err := b.setFlow(w, f); err != nil {
		b.log.Error("set consent flow", "error", err)
		b.rejectRequest(w, r, c, p, "server_error", "")
		return
	}
	b.page(w, http.StatusOK, b.consentData(c, p, f.ID))
}

// setFlow seals f into its flow cookie. A cookie larger than browsers keep
// would be dropped without a word, and the login would fail at its next
// step as if it had expired; the bounds of requests and registrations keep
// every flow cookie within maxCookieBytes (TestFlowCookieSize), and this
// refuses one that is not (a SCOPES_SUPPORTED or RESOURCE_URL of
// kilobytes) rather than set it.
func (b *Broker) setFlow(w http.ResponseWriter, f *flowRecord) error {
	v, err := b.seal.seal(purposeFlow, b.now().Add(flowTTL), f)
	if err != nil {
		return err
	}
	name := flowCookie + f.ID
	if n := len(b.cookies.prefix) + len(name) + len(v); n > maxCookieBytes {
		return fmt.Errorf("flow cookie of %d bytes, more than the %d browsers keep", n, maxCookieBytes)
	}
	b.cookies.set(w, name, v, flowTTL)
	return nil
}
