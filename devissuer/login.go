package devissuer

import (
	"crypto/rand"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// The demo identity: what the login page proposes unless DefaultIdentity
// says otherwise.
const (
	DemoSubject = "demo-user"
	DemoEmail   = "demo@example.com"
)

// codeTTL is the lifetime of an authorization code (RFC 6749 §4.1.2: short).
const codeTTL = time.Minute

// Identity is who a login logs in as.
type Identity struct {
	Subject string
	Email   string
	Groups  []string
}

// client is a registered OAuth client. An empty secret is a public client,
// which must use PKCE.
type client struct {
	secret    string
	redirects []string
}

// grant is what a code or refresh token stands for.
type grant struct {
	clientID  string
	redirect  string
	challenge string // PKCE S256 code challenge; "" if none was sent
	nonce     string
	scope     string
	id        Identity
	authTime  time.Time
	expires   time.Time
}

// AddClient registers an OAuth client with its exact redirect URIs. An empty
// secret registers a public client, which must use PKCE (S256).
func (is *Issuer) AddClient(id, secret string, redirectURIs ...string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.clients[id] = client{secret: secret, redirects: slices.Clone(redirectURIs)}
}

// SetDisabled disables (or enables again) a subject: its refresh tokens
// and userinfo requests are refused, as a provider does for a user removed
// or locked out.
func (is *Issuer) SetDisabled(sub string, disabled bool) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.disabled[sub] = disabled
}

// TokenHits counts token endpoint requests; RefreshHits those of them with
// grant_type=refresh_token.
func (is *Issuer) TokenHits() int64   { return is.tokenHits.Load() }
func (is *Issuer) RefreshHits() int64 { return is.refreshHits.Load() }

// authRequest is an authorization request (OpenID Connect Core 1.0
// §3.1.2.1) as the login page carries it in hidden fields.
type authRequest struct {
	ClientID, RedirectURI, ResponseType, Scope, State, Nonce string
	CodeChallenge, CodeChallengeMethod                       string
}

func readAuthRequest(v url.Values) authRequest {
	return authRequest{
		ClientID:            v.Get("client_id"),
		RedirectURI:         v.Get("redirect_uri"),
		ResponseType:        v.Get("response_type"),
		Scope:               v.Get("scope"),
		State:               v.Get("state"),
		Nonce:               v.Get("nonce"),
		CodeChallenge:       v.Get("code_challenge"),
		CodeChallengeMethod: v.Get("code_challenge_method"),
	}
}

// serveAuthorize shows the login page (GET) and logs in or refuses (POST).
func (is *Issuer) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	var v url.Values
	switch r.Method {
	case http.MethodGet:
		v = r.URL.Query()
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		v = r.PostForm
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	req := readAuthRequest(v)
	is.mu.Lock()
	c, ok := is.clients[req.ClientID]
	is.mu.Unlock()
	// RFC 6749 §4.1.2.1: without a valid client and redirect URI, tell the
	// user, never redirect.
	if !ok {
		http.Error(w, "unknown client_id", http.StatusBadRequest)
		return
	}
	if !slices.Contains(c.redirects, req.RedirectURI) {
		http.Error(w, "redirect_uri is not registered for this client", http.StatusBadRequest)
		return
	}
	if errCode, desc := is.checkAuthRequest(req, c); errCode != "" {
		is.redirect(w, r, req, url.Values{"error": {errCode}, "error_description": {desc}})
		return
	}
	if r.Method == http.MethodGet {
		is.loginPage(w, req, "")
		return
	}
	if v.Get("action") != "login" {
		is.redirect(w, r, req, url.Values{"error": {"access_denied"}, "error_description": {"the user refused the login"}})
		return
	}
	id := Identity{Subject: strings.TrimSpace(v.Get("sub")), Email: strings.TrimSpace(v.Get("email"))}
	for g := range strings.SplitSeq(v.Get("groups"), ",") {
		if g = strings.TrimSpace(g); g != "" {
			id.Groups = append(id.Groups, g)
		}
	}
	if id.Subject == "" {
		is.loginPage(w, req, "The subject must not be empty.")
		return
	}
	now := is.now()
	code := rand.Text()
	is.mu.Lock()
	for k, g := range is.codes { // drop expired codes
		if now.After(g.expires) {
			delete(is.codes, k)
		}
	}
	is.codes[code] = &grant{
		clientID: req.ClientID, redirect: req.RedirectURI, challenge: req.CodeChallenge,
		nonce: req.Nonce, scope: req.Scope, id: id, authTime: now, expires: now.Add(codeTTL),
	}
	is.mu.Unlock()
	is.redirect(w, r, req, url.Values{"code": {code}})
}

// checkAuthRequest returns the error (RFC 6749 §4.1.2.1) of a request whose
// client and redirect URI are valid, or "".
func (is *Issuer) checkAuthRequest(req authRequest, c client) (code, desc string) {
	switch {
	case req.ResponseType != "code":
		return "unsupported_response_type", "only response_type=code is supported"
	case !slices.Contains(strings.Fields(req.Scope), "openid"):
		return "invalid_scope", "scope must include openid"
	case req.CodeChallenge == "" && c.secret == "":
		return "invalid_request", "public clients must use PKCE"
	case req.CodeChallenge != "" && req.CodeChallengeMethod != "S256":
		return "invalid_request", "code_challenge_method must be S256"
	}
	return "", ""
}

// redirect sends the authorization response (RFC 6749 §4.1.2) with state
// and iss (RFC 9207) to the request's redirect URI.
func (is *Issuer) redirect(w http.ResponseWriter, r *http.Request, req authRequest, params url.Values) {
	u, err := url.Parse(req.RedirectURI)
	if err != nil {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	q := u.Query()
	for k, vs := range params {
		q[k] = vs
	}
	if req.State != "" {
		q.Set("state", req.State)
	}
	q.Set("iss", is.URL)
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// loginPage asks which identity to log in as.
func (is *Issuer) loginPage(w http.ResponseWriter, req authRequest, problem string) {
	id := is.DefaultIdentity
	if id.Subject == "" {
		id = Identity{Subject: DemoSubject, Email: DemoEmail}
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	_ = loginTemplate().Execute(w, struct {
		Req     authRequest
		ID      Identity
		Groups  string
		Problem string
	}{req, id, strings.Join(id.Groups, ", "), problem})
}

func loginTemplate() *template.Template {
	return template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Development issuer: log in</title>
<style>
body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#222}
label{display:block;margin:.8rem 0 .2rem;font-weight:600}
input[type=text]{width:100%;padding:.4rem;box-sizing:border-box}
.warn{background:#fff4d6;border:1px solid #e0b84a;padding:.6rem;border-radius:4px}
.problem{color:#a00}
button{margin-top:1.2rem;padding:.5rem 1.2rem;margin-right:.5rem}
</style></head><body>
<h1>Log in to the development issuer</h1>
<p class="warn">This is <code>mcp-oauth-proxy dev</code>'s built-in issuer. It checks no password:
choose the identity to log in as. Never use it to protect anything real.</p>
{{if .Problem}}<p class="problem">{{.Problem}}</p>{{end}}
<form method="post" action="/authorize">
<input type="hidden" name="client_id" value="{{.Req.ClientID}}">
<input type="hidden" name="redirect_uri" value="{{.Req.RedirectURI}}">
<input type="hidden" name="response_type" value="{{.Req.ResponseType}}">
<input type="hidden" name="scope" value="{{.Req.Scope}}">
<input type="hidden" name="state" value="{{.Req.State}}">
<input type="hidden" name="nonce" value="{{.Req.Nonce}}">
<input type="hidden" name="code_challenge" value="{{.Req.CodeChallenge}}">
<input type="hidden" name="code_challenge_method" value="{{.Req.CodeChallengeMethod}}">
<label for="sub">Subject (sub)</label>
<input type="text" id="sub" name="sub" value="{{.ID.Subject}}" required>
<label for="email">Email</label>
<input type="text" id="email" name="email" value="{{.ID.Email}}">
<label for="groups">Groups (comma-separated)</label>
<input type="text" id="groups" name="groups" value="{{.Groups}}">
<button type="submit" name="action" value="login">Log in</button>
<button type="submit" name="action" value="deny" formnovalidate>Cancel</button>
</form>
</body></html>
`))
}
