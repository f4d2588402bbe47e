package broker

import (
	"crypto/subtle"
	"net/http"
	"net/url"
	"strings"
)

// maxConsentBody bounds the consent form: its flow id, its decision and
// its client_id (at most maxClientIDLen, or a metadata URL of at most 512
// bytes, 1536 percent-encoded).
const maxConsentBody = 4 << 10

// consentData is what the consent page shows of a client (MCP security
// best practices, confused deputy: the user must see who will receive
// access, and where).
func (b *Broker) consentData(c *client, p *pending, flowID string) pageConsent {
	d := pageConsent{
		Name:     c.rec.Name,
		Resource: b.resource,
		Scopes:   strings.Join(p.Scopes, " "),
		Action:   ConsentPath,
		Flow:     flowID,
		Client:   c.id,
	}
	var onDevice bool
	d.Destination, d.Where, onDevice = destination(p.Redirect)
	if c.doc != nil {
		// draft §8.5: the host is what the user can rely on; the gateway
		// fetched the document from it (over TLS unless it is an http
		// host of CIMD_ALLOW_HOSTS).
		d.MetadataURL, d.MetadataHost, d.HostVerified = c.id, c.doc.Host, c.doc.Scheme == "https"
		// MCP 2026-07-28 security considerations: a document cannot
		// prevent localhost impersonation, so the page warns when the
		// access stays on this device (a private-use scheme alike).
		d.Unvouched = onDevice
	}
	return d
}

// destination says where a redirect URI sends the user's browser, for a
// page: its host (ASCII, as registration requires), or for loopback and
// private-use schemes what on this device receives it (where), which
// onDevice reports.
func destination(redirect string) (dest, where string, onDevice bool) {
	u, err := url.Parse(redirect)
	switch {
	case err != nil:
		return redirect, "", true
	case u.Scheme == "https":
		return u.Host, "", false
	case u.Scheme == "http": // loopback only (registration)
		return u.Host, "a program on this computer", true
	default: // a private-use scheme, RFC 8252 §7.1
		return u.Scheme + ":", "the app on this device that claims this scheme", true
	}
}

// serveConsent receives the consent form (POST): decision=approve sends the
// browser to the provider and remembers the approval; decision=deny
// answers the client access_denied.
//
// CSRF: the form names its flow, whose sealed record is in an HttpOnly
// SameSite=Lax cookie of this browser (a cross-site POST does not carry it,
// and no other site can read the flow id from the page); and a request
// whose Origin (or Sec-Fetch-Site) says it came from elsewhere is refused.
//
// The form also carries the client_id, which the flow cookie holds only by
// its clientBinding (a client_id can be 2 KiB); one that does not match
// the cookie's is refused like a missing flow.
//
// The form is charged to the per-IP limit like the authorization request:
// the flow cookie is not used up here (only at the callback), so without
// it one flow could be posted again and again, each approval a log line,
// a sealed cookie and, for a no-store metadata document, a fetch.
func (b *Broker) serveConsent(w http.ResponseWriter, r *http.Request) {
	if b.pageOverIPLimit(w, r) {
		return
	}
	if !b.sameOrigin(r) {
		b.errorPage(w, http.StatusForbidden, "Request refused", "The consent form was submitted from another site.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxConsentBody)
	if err := r.ParseForm(); err != nil {
		b.errorPage(w, http.StatusBadRequest, "Bad request", "The consent form could not be read.")
		return
	}
	id, clientID := r.PostForm.Get("flow"), r.PostForm.Get("client")
	f, ok := b.openFlow(r, id, stageConsent)
	if !ok || clientBinding(clientID) != f.Req.Client {
		b.errorPage(w, http.StatusBadRequest, "Consent expired",
			"This consent page has expired or was opened in another browser. Start again from your application.")
		return
	}
	c, err := b.lookupClient(r.Context(), clientID, forAuthorization, b.clientIP(r))
	if err != nil {
		b.clientErrorPage(w, clientID, err)
		return
	}
	if !c.redirectRegistered(f.Req.Redirect) { // a metadata document changed meanwhile
		b.errorPage(w, http.StatusBadRequest, "Unregistered redirect URI",
			"The application's metadata no longer lists the address it asked to be answered at. Nothing was sent to it.")
		return
	}
	switch r.PostForm.Get("decision") {
	case "approve":
		if err := b.remember(w, r, c, f.Req.Scopes); err != nil {
			b.log.Error("seal consent", "error", err)
			b.redirectToClient(w, r, &f.Req, url.Values{"error": {"server_error"}})
			return
		}
		b.log.Info("client approved", "client", c.key(), "client_name", c.rec.Name)
		b.toUpstream(w, r, f)
	case "deny":
		b.cookies.clear(w, flowCookie+f.ID)
		b.redirectToClient(w, r, &f.Req, url.Values{"error": {"access_denied"}, "error_description": {"the user denied access"}})
	default:
		b.errorPage(w, http.StatusBadRequest, "Bad request", "The consent form must say approve or deny.")
	}
}

// sameOrigin reports whether a form post comes from the broker's own
// pages, as far as the browser says: Origin, when sent, must be the
// issuer's origin; else Sec-Fetch-Site, when sent, must be same-origin.
func (b *Broker) sameOrigin(r *http.Request) bool {
	if o := r.Header.Values("Origin"); len(o) > 0 {
		return len(o) == 1 && strings.EqualFold(o[0], b.origin)
	}
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" {
		return s == "same-origin"
	}
	return true
}

// openFlow opens the flow cookie of id and checks its stage.
func (b *Broker) openFlow(r *http.Request, id, stage string) (*flowRecord, bool) {
	if !isFlowID(id) {
		return nil, false
	}
	var f flowRecord
	if b.seal.open(purposeFlow, b.cookies.get(r, flowCookie+id), &f) != nil {
		return nil, false
	}
	if subtle.ConstantTimeCompare([]byte(f.ID), []byte(id)) != 1 || f.Stage != stage || len(f.Req.Client) != clientBindingLen {
		return nil, false
	}
	return &f, true
}

// isFlowID: rand.Text's alphabet and length (RFC 4648 base32, 26 letters).
func isFlowID(s string) bool {
	if len(s) != 26 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'A' && c <= 'Z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}
