package broker

import (
	"encoding/json"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// writeJSON answers v as JSON that no cache keeps (RFC 6749 §5.1: token
// responses are no-store; so is everything else of the broker's that is
// not a public document).
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":"server_error"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// oauthError answers an error in the RFC 6749 §5.2 form (also RFC 7591
// §3.2.2 and RFC 7009 §2.2.1).
func oauthError(w http.ResponseWriter, status int, code, description string) {
	writeJSON(w, status, struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description,omitempty"`
	}{code, description})
}

// tooMany answers 429 with Retry-After (RFC 6585 §4).
func tooMany(w http.ResponseWriter, wait time.Duration, description string) {
	w.Header().Set("Retry-After", retryAfter(wait))
	oauthError(w, http.StatusTooManyRequests, "too_many_requests", description)
}

// unavailable answers 503 with Retry-After: something the broker needs
// (the store, the provider) failed, and failing closed is the safe answer.
func unavailable(w http.ResponseWriter, description string) {
	w.Header().Set("Retry-After", "5")
	oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", description)
}

func retryAfter(wait time.Duration) string {
	return strconv.FormatInt(max(1, int64(math.Ceil(wait.Seconds()))), 10)
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

// responseQuery is the query of an authorization response to p.
func (b *Broker) responseQuery(u *url.URL, p *pending, params url.Values) string {
	q := u.Query()
	for k, v := range params {
		if len(v) > 0 && v[0] != "" {
			q[k] = v
		}
	}
	if p.State != "" {
		q.Set("state", p.State)
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
