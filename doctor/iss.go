package doctor

import (
	"context"
	"net/url"
	"strings"
)

// facadeFix is the fix for an issuer that is a rewrite of the provider's.
const facadeFix = "let clients use the provider's own issuer (list it in authorization_servers: AUTH_SERVER_MODE=direct for this gateway), or make the server an authorization server that issues its own codes with its own iss (AUTH_SERVER_MODE=broker)"

// checkIssParameter checks RFC 9207 against what the login will do. MCP
// 2026-07-28 clients compare a present iss with the metadata's issuer, and
// require it when the metadata advertises
// authorization_response_iss_parameter_supported. The trap is a facade: a
// server that publishes metadata with its own issuer while the login
// happens at a provider that sends its own iss. The sign of one is an
// authorization_endpoint on another origin than the issuer; the proof is
// that origin's own metadata naming another issuer and advertising iss.
func (c *checker) checkIssParameter(ctx context.Context) {
	advertised := c.as.doc["authorization_response_iss_parameter_supported"] == true
	iss, _ := url.Parse(c.as.issuer)
	authz, err := url.Parse(str(c.as.doc, "authorization_endpoint"))
	if iss == nil || err != nil || !authz.IsAbs() || sameOrigin(iss, authz) {
		if advertised {
			c.ok("as.iss", "advertises iss in authorization responses (RFC 9207); clients will require it (--login checks it)")
		} else {
			c.ok("as.iss", "does not advertise iss in authorization responses; clients accept its absence and compare any iss they get with the issuer (--login checks it)")
		}
		return
	}
	p := c.findProvider(ctx, authz)
	switch {
	case p == nil:
		c.warn("as.iss", "the login happens at "+origin(authz)+", not at the issuer "+c.as.issuer+", and that origin's own metadata was not found: if it sends iss (RFC 9207), MCP 2026-07-28 clients reject every login",
			"run doctor with --login to see what the authorization response carries")
	case p.issuer == c.as.issuer:
		c.ok("as.iss", "the login happens at "+origin(authz)+", whose own metadata names the same issuer "+c.as.issuer)
	case p.doc["authorization_response_iss_parameter_supported"] == true:
		c.fail("as.iss", "issuer "+c.as.issuer+" is a rewrite of "+p.issuer+": the login happens there, that provider sends iss="+p.issuer+" (it advertises authorization_response_iss_parameter_supported at "+p.url+"), and MCP 2026-07-28 clients (TypeScript and Python SDK 2.x) reject the login at its last step (RFC 9207)",
			facadeFix)
	case advertised:
		c.fail("as.iss", "the metadata advertises iss, but the login happens at "+p.issuer+", another issuer, whose iss cannot equal "+c.as.issuer+" (RFC 9207)",
			facadeFix)
	default:
		c.warn("as.iss", "issuer "+c.as.issuer+" is a rewrite of "+p.issuer+", where the login happens; that provider does not advertise iss, but if it sends one, MCP 2026-07-28 clients reject the login (RFC 9207)",
			"run doctor with --login to see what the authorization response carries; if it has iss, "+facadeFix)
	}
}

// findProvider looks for the metadata of the server that hosts authz: its
// issuer is the origin or a parent path of the endpoint (Keycloak:
// /realms/x/protocol/openid-connect/auth under /realms/x). Only a document
// whose authorization_endpoint is authz counts. At most six candidate
// issuers, each at its two usual locations.
func (c *checker) findProvider(ctx context.Context, authz *url.URL) *authServer {
	o := origin(authz)
	segs := strings.Split(strings.Trim(authz.EscapedPath(), "/"), "/")
	candidates := []string{""}
	for i := 1; i < len(segs) && len(candidates) < 6; i++ {
		candidates = append(candidates, "/"+strings.Join(segs[:i], "/"))
	}
	var urls []string
	for _, p := range candidates {
		if p == "" {
			urls = append(urls, o+oidcWellKnown, o+asWellKnown)
		} else {
			urls = append(urls, o+p+oidcWellKnown, o+asWellKnown+p)
		}
	}
	want := str(c.as.doc, "authorization_endpoint")
	for _, u := range urls {
		res, doc, err := c.getJSON(ctx, u)
		if err != nil && res == nil {
			return nil // unreachable: stop looking
		}
		if doc != nil && str(doc, "authorization_endpoint") == want {
			return &authServer{doc: doc, issuer: str(doc, "issuer"), url: u}
		}
	}
	return nil
}
