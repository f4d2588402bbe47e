package broker

import (
	"net/http"
	"slices"
	"strings"
	"time"
)

// Cookies. Every broker cookie is HttpOnly, SameSite=Lax (sent on the
// provider's top-level redirect back to the callback, never on a
// cross-site POST) and Path=/; on an https origin it is also Secure with
// the __Host- prefix, so no other host (a sibling subdomain) can set or
// shadow it (RFC 6265bis §4.1.3.2; MCP security best practices, consent
// cookies). Every value is a sealed record: nobody can forge one.
const (
	consentCookie = "mcp-consent"
	flowCookie    = "mcp-flow-" // + the flow id
	maxFlows      = 8           // flow cookies a browser may hold at once
	maxApproved   = 32          // clients remembered in the consent cookie
)

type cookieNames struct {
	prefix string // "__Host-" on https, "" on http
	secure bool
}

func newCookieNames(https bool) cookieNames {
	if https {
		return cookieNames{prefix: "__Host-", secure: true}
	}
	return cookieNames{}
}

func (c cookieNames) set(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{
		Name: c.prefix + name, Value: value, Path: "/", MaxAge: int(maxAge / time.Second),
		HttpOnly: true, Secure: c.secure, SameSite: http.SameSiteLaxMode,
	})
}

func (c cookieNames) clear(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{
		Name: c.prefix + name, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: c.secure, SameSite: http.SameSiteLaxMode,
	})
}

func (c cookieNames) get(r *http.Request, name string) string {
	ck, err := r.Cookie(c.prefix + name)
	if err != nil {
		return ""
	}
	return ck.Value
}

// flowNames returns the names (without prefix) of the flow cookies r
// carries.
func (c cookieNames) flowNames(r *http.Request) []string {
	var names []string
	for _, ck := range r.Cookies() {
		if n, ok := strings.CutPrefix(ck.Name, c.prefix+flowCookie); ok && n != "" {
			names = append(names, flowCookie+n)
		}
	}
	return names
}

// consentRecord is the consent cookie: what this browser approved, newest
// last, each an approvalEntry.
type consentRecord struct {
	Clients []string `json:"c"`
}

// approvalEntry names, in the consent cookie, c approved for exactly
// scopes (in any order): the consent page named them, so a request for
// other scopes (a step-up adding files:write) shows the page again rather
// than widening the access the user saw.
func approvalEntry(c *client, scopes []string) string {
	s := slices.Clone(scopes)
	slices.Sort(s)
	return c.approvalKey() + "." + clientKey(strings.Join(s, " "))
}

// approved reports whether the browser of r approved c for scopes.
func (b *Broker) approved(r *http.Request, c *client, scopes []string) bool {
	return slices.Contains(b.approvals(r).Clients, approvalEntry(c, scopes))
}

// approvedAny reports whether the browser of r approved c for any scopes:
// the user saw on the consent page where c's answers go.
func (b *Broker) approvedAny(r *http.Request, c *client) bool {
	return slices.ContainsFunc(b.approvals(r).Clients, func(e string) bool {
		return strings.HasPrefix(e, c.approvalKey()+".")
	})
}

// approvals opens the consent cookie of r; none or unreadable is empty.
func (b *Broker) approvals(r *http.Request) consentRecord {
	var rec consentRecord
	if b.seal.open(purposeConsent, b.cookies.get(r, consentCookie), &rec) != nil {
		return consentRecord{}
	}
	return rec
}

// remember adds c approved for scopes to the consent cookie, keeping the
// newest maxApproved entries.
func (b *Broker) remember(w http.ResponseWriter, r *http.Request, c *client, scopes []string) error {
	rec := b.approvals(r)
	entry := approvalEntry(c, scopes)
	rec.Clients = slices.DeleteFunc(rec.Clients, func(k string) bool { return k == entry })
	rec.Clients = append(rec.Clients, entry)
	if n := len(rec.Clients); n > maxApproved {
		rec.Clients = rec.Clients[n-maxApproved:]
	}
	v, err := b.seal.seal(purposeConsent, b.now().Add(consentTTL), rec)
	if err != nil {
		return err
	}
	b.cookies.set(w, consentCookie, v, consentTTL)
	return nil
}
