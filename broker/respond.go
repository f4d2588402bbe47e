package broker

import (
	"encoding/json"
	"net/http"
	"net/url"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/respond"
)

// writeJSON answers v as JSON that no cache keeps (RFC 6749 §5.1: token
// responses are no-store; so is everything else of the broker's that is
// not a public document), with respond's headers and, for OAuth 2.0
// clients and caches, Pragma: no-cache (RFC 6749 §5.1).
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(respond.ErrorBody("server_error", ""))
	}
	w.Header().Set("Pragma", "no-cache")
	respond.JSON(w, status, string(body))
}

// oauthError answers an error in the RFC 6749 §5.2 form (also RFC 7591
// §3.2.2 and RFC 7009 §2.2.1), never cached.
func oauthError(w http.ResponseWriter, status int, code, description string) {
	w.Header().Set("Pragma", "no-cache")
	respond.Error(w, status, code, description)
}

// tooMany answers 429 with Retry-After (RFC 6585 §4).
func tooMany(w http.ResponseWriter, wait time.Duration, description string) {
	w.Header().Set("Retry-After", respond.RetryAfter(wait))
	oauthError(w, http.StatusTooManyRequests, "too_many_requests", description)
}

// unavailable answers 503 with Retry-After: something the broker needs
// (the store, the provider) failed, and failing closed is the safe answer.
func unavailable(w http.ResponseWriter, description string) {
	w.Header().Set("Retry-After", "5")
	oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", description)
}

// redirectToClient sends an authorization response (RFC 6749 §4.1.2 and
// §4.1.2.1) to a validated redirect URI: params, the client's state
// untouched, and iss, the broker's issuer (RFC 9207 §2), on success and on
// error alike. The redirect URI's own query is kept (RFC 6749 §3.1.2).
func (b *Broker) redirectToClient(w http.ResponseWriter, r *http.Request, p *pending, params url.Values) {
	u, err := url.Parse(p.Redirect)
	if err != nil { // cannot happen: it was parsed when registered
		b.page(w, http.StatusBadRequest, pageError{Title: "Bad redirect URI", Message: "The application's redirect URI cannot be used."})
		return
	}
	u.RawQuery = b.responseQuery(u, p, params)
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Location", u.String())
	// 303 after a POST (the consent form) so the browser does not post
	// again (RFC 9700 §4.11); after a GET it means the same as 302.
	w.WriteHeader(http.StatusSeeOther)
}

// responseQuery is the query of an authorization response to p. Its
// error_description holds only what RFC 6749 §4.1.2.1 allows
// (respond.Description).
func (b *Broker) responseQuery(u *url.URL, p *pending, params url.Values) string {
	q := u.Query()
	for k, v := range params {
		switch {
		case len(v) == 0 || v[0] == "":
		case k == "error_description":
			q.Set(k, respond.Description(v[0]))
		default:
			q[k] = v
		}
	}
	if len(p.State) > 0 {
		q.Set("state", string(p.State))
	}
	q.Set("iss", b.issuer)
	return q.Encode()
}

// clientRedirectURL is the URL redirectToClient would redirect to.
func (b *Broker) clientRedirectURL(p *pending, params url.Values) string {
	u, err := url.Parse(p.Redirect)
	if err != nil {
		return ""
	}
	u.RawQuery = b.responseQuery(u, p, params)
	return u.String()
}
