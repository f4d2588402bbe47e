package doctor

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

const (
	prmWellKnown  = "/.well-known/oauth-protected-resource"
	asWellKnown   = "/.well-known/oauth-authorization-server"
	oidcWellKnown = "/.well-known/openid-configuration"
)

// protectedResource is the RFC 9728 document that was found.
type protectedResource struct {
	resource string
	servers  []string
	scopes   []string
}

// authServer is the RFC 8414 (or OpenID) document that was found.
type authServer struct {
	doc    map[string]any
	issuer string
	url    string // where it was fetched
}

// attempt describes one failed fetch for a message.
func attempt(u string, res *response, err error) string {
	switch {
	case err != nil:
		return u + " (" + err.Error() + ")"
	case res == nil:
		return u
	default:
		return fmt.Sprintf("%s (%d)", u, res.status)
	}
}

// checkProtectedResource finds the protected-resource metadata where clients
// look for it: only at the challenge's resource_metadata URL when there is
// one (the TypeScript SDK looks nowhere else), otherwise at the path-suffixed
// well-known URL and then the root one (RFC 9728 §3.1; MCP authorization,
// protected resource metadata discovery).
func (c *checker) checkProtectedResource(ctx context.Context) {
	if c.challenge != nil && c.challenge.resourceMetadata != "" {
		u := c.challenge.resourceMetadata
		res, doc, err := c.getJSON(ctx, u)
		if doc != nil {
			c.ok("prm", "protected-resource metadata at "+u+", the URL in the challenge")
			c.checkPRMDocument(doc)
			return
		}
		first := attempt(u, res, err)
		var tried []string
		doc, where := c.findWellKnownPRM(ctx, &tried)
		if doc == nil {
			c.fail("prm", "no protected-resource metadata at the challenge's URL "+first+" nor at "+strings.Join(tried, ", "),
				"serve the RFC 9728 metadata at the URL the challenge names")
			return
		}
		c.fail("prm", "the challenge's resource_metadata "+first+" does not answer, though the metadata is at "+where+": TypeScript SDK clients look only at the challenge's URL",
			`make the challenge's resource_metadata "`+where+`"`)
		c.checkPRMDocument(doc)
		return
	}
	var tried []string
	doc, where := c.findWellKnownPRM(ctx, &tried)
	if doc == nil {
		c.fail("prm", "no protected-resource metadata at "+strings.Join(tried, ", "),
			"serve RFC 9728 metadata at "+c.prmCandidates()[0]+" (and name it in the 401's resource_metadata)")
		return
	}
	c.ok("prm", "protected-resource metadata at "+where)
	c.checkPRMDocument(doc)
}

// prmCandidates lists the well-known URLs in the clients' order: the
// path-suffixed form (a trailing slash dropped, as the TypeScript SDK does),
// then the root form.
func (c *checker) prmCandidates() []string {
	o := origin(c.target)
	p := strings.TrimSuffix(c.target.EscapedPath(), "/")
	if p == "" {
		return []string{o + prmWellKnown}
	}
	return []string{o + prmWellKnown + p, o + prmWellKnown}
}

// findWellKnownPRM tries prmCandidates: a 4xx or 502 moves on, anything
// else stops, as in the TypeScript SDK. It appends what failed to tried.
func (c *checker) findWellKnownPRM(ctx context.Context, tried *[]string) (map[string]any, string) {
	for _, u := range c.prmCandidates() {
		res, doc, err := c.getJSON(ctx, u)
		if doc != nil {
			return doc, u
		}
		if err != nil && res != nil {
			*tried = append(*tried, u+" (not JSON: "+err.Error()+")")
			return nil, ""
		}
		*tried = append(*tried, attempt(u, res, err))
		if err != nil || !(res.status >= 400 && res.status < 500 || res.status == http.StatusBadGateway) {
			return nil, ""
		}
	}
	return nil, ""
}

// checkPRMDocument checks the fields clients use.
func (c *checker) checkPRMDocument(doc map[string]any) {
	prm := &protectedResource{resource: str(doc, "resource")}
	c.prm = prm
	c.checkResource(prm.resource)

	servers, ok := strs(doc, "authorization_servers")
	var bad []string
	for _, s := range servers {
		if err := checkIssuerURL(s); err != nil {
			bad = append(bad, err.Error())
		}
	}
	switch {
	case wrongType(doc, "authorization_servers"):
		c.fail("prm.authorization_servers", "authorization_servers"+wrongTypeFail,
			`list the issuers as strings: "authorization_servers": ["<issuer URL>"] (RFC 9728 §2)`)
	case !ok || len(servers) == 0:
		c.fail("prm.authorization_servers", "the metadata lists no authorization_servers, so clients do not know where to log in",
			`add "authorization_servers": ["<issuer URL of the authorization server>"] (RFC 9728 §2; MCP requires at least one)`)
	case len(bad) > 0 && checkIssuerURL(servers[0]) != nil:
		c.fail("prm.authorization_servers", "authorization_servers[0]: "+bad[0],
			"list the authorization server's issuer: an https URL without query or fragment (RFC 8414 §2)")
	default:
		prm.servers = servers
		msg := "authorization_servers[0] = " + servers[0]
		if len(servers) > 1 {
			msg += fmt.Sprintf(" (%d listed; clients use the first)", len(servers))
		}
		c.ok("prm.authorization_servers", msg)
	}

	prm.scopes, _ = strs(doc, "scopes_supported")
	if contains(prm.scopes, "offline_access") {
		c.warn("prm.scopes", "scopes_supported lists offline_access, which MCP 2026-07-28 says resources should not advertise: clients then ask for it and some providers refuse",
			"drop offline_access from the protected-resource metadata's scopes_supported (the authorization server decides about refresh tokens)")
	}
}

// checkIssuerURL checks an issuer identifier's shape (RFC 8414 §2): https
// (http only on loopback), no query, no fragment.
func checkIssuerURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil || !u.IsAbs() || u.Host == "":
		return fmt.Errorf("%q is not an absolute URL", s)
	case u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname())):
		return fmt.Errorf("%q is not https", s)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return fmt.Errorf("%q has a query or fragment", s)
	}
	return nil
}

// checkResource compares the metadata's resource with the URL. RFC 9728
// §3.3 asks for the exact URL the client used; the TypeScript and Python
// SDKs accept a resource on the same origin whose path is a prefix of the
// URL's (as draft-ietf-oauth-rfc9728bis proposes) and then ask for tokens
// for that resource.
func (c *checker) checkResource(resource string) {
	want := strings.TrimSpace(c.cfg.URL)
	if resource == "" {
		c.fail("prm.resource", "the metadata has no resource",
			`add "resource": "`+want+`" (RFC 9728 §2)`)
		return
	}
	if resource == want {
		c.ok("prm.resource", "resource = "+resource+", the URL itself (RFC 9728 §3.3)")
		return
	}
	fix := `make resource exactly "` + want + `" (RESOURCE_URL for this gateway), or give clients the URL "` + resource + `"`
	r, err := url.Parse(resource)
	if err != nil || !r.IsAbs() {
		c.fail("prm.resource", fmt.Sprintf("resource %q is not an absolute URL", resource), fix)
		return
	}
	if sameOrigin(r, c.target) && pathPrefix(r.Path, c.target.Path) {
		c.warn("prm.resource", "resource "+resource+" is not the URL "+want+" but a parent of it: the TypeScript and Python SDKs accept that and ask for tokens for "+resource+", stricter clients refuse it (RFC 9728 §3.3)", fix)
		return
	}
	msg := "resource " + resource + " does not match the URL " + want + ": clients refuse the metadata (RFC 9728 §3.3)"
	if strings.TrimSuffix(resource, "/") == strings.TrimSuffix(want, "/") {
		msg = "resource " + resource + " differs from the URL " + want + " by a trailing slash, which makes it another resource: clients refuse the metadata (RFC 9728 §3.3)"
	}
	c.fail("prm.resource", msg, fix)
}

// sameOrigin compares scheme, host and port, with default ports elided.
func sameOrigin(a, b *url.URL) bool {
	port := func(u *url.URL) string {
		if p := u.Port(); p != "" {
			return p
		}
		if strings.EqualFold(u.Scheme, "https") {
			return "443"
		}
		return "80"
	}
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}

// pathPrefix reports whether the configured path is the requested path or a
// parent of it, segment-wise (the SDKs' checkResourceAllowed).
func pathPrefix(configured, requested string) bool {
	if len(requested) < len(configured) {
		return false
	}
	if !strings.HasSuffix(configured, "/") {
		configured += "/"
	}
	if !strings.HasSuffix(requested, "/") {
		requested += "/"
	}
	return strings.HasPrefix(requested, configured)
}

// discoveryURL is one place a client looks for authorization-server metadata.
type discoveryURL struct {
	url  string
	oidc bool
}

// discoveryURLs lists where clients look for the metadata of the
// authorization server at issuer: for an issuer without a path, RFC 8414
// then OpenID discovery at the root; with a path P, RFC 8414 path insertion
// (§3.1), OpenID discovery with insertion, then OpenID discovery appended to
// P (OpenID Connect Discovery 1.0 §4). This is the TypeScript and Python
// SDKs' order.
func discoveryURLs(issuer string) []discoveryURL {
	u, err := url.Parse(issuer)
	if err != nil {
		return nil
	}
	o := origin(u)
	p := strings.TrimSuffix(u.EscapedPath(), "/")
	if p == "" {
		return []discoveryURL{{o + asWellKnown, false}, {o + oidcWellKnown, true}}
	}
	return []discoveryURL{{o + asWellKnown + p, false}, {o + oidcWellKnown + p, true}, {o + p + oidcWellKnown, true}}
}

// checkAuthorizationServer finds and checks the authorization server's
// metadata. It reports false when there is none to go on with.
func (c *checker) checkAuthorizationServer(ctx context.Context) bool {
	var asURL string
	legacy := false
	switch {
	case c.prm != nil && len(c.prm.servers) > 0:
		asURL = c.prm.servers[0]
	case c.prm != nil:
		return false // prm.authorization_servers said why
	default:
		// No protected-resource metadata: clients fall back to the MCP
		// server's origin as the authorization server (MCP 2025-03-26).
		asURL = origin(c.target) + "/"
		legacy = true
	}
	var tried []string
	var found *authServer
	var oidc bool
	for _, d := range discoveryURLs(asURL) {
		res, doc, err := c.getJSON(ctx, d.url)
		if doc != nil {
			found, oidc = &authServer{doc: doc, issuer: str(doc, "issuer"), url: d.url}, d.oidc
			break
		}
		if err == nil && (res.status >= 400 && res.status < 500 || res.status == http.StatusBadGateway) {
			tried = append(tried, attempt(d.url, res, nil))
			continue
		}
		what := attempt(d.url, res, err)
		if err != nil && res != nil {
			what = d.url + " (not JSON: " + err.Error() + ")"
		}
		c.fail("as.discovery", "fetching the authorization server's metadata stopped at "+what+": clients stop there too",
			"make "+d.url+" answer 200 with the metadata, or 404 so that clients try the next location")
		return false
	}
	if found == nil {
		msg := "no authorization-server metadata for " + asURL + " at " + strings.Join(tried, ", ")
		fix := "serve RFC 8414 metadata at " + discoveryURLs(asURL)[0].url
		if legacy {
			msg += " (without protected-resource metadata, clients treat the MCP server's origin as the authorization server)"
			fix = "serve the protected-resource metadata first (see prm); it names the authorization server"
		}
		c.fail("as.discovery", msg, fix)
		return false
	}
	kind := "RFC 8414 metadata"
	if oidc {
		kind = "OpenID discovery document"
	}
	where := "authorization-server " + kind + " at " + found.url
	if legacy {
		where += " (legacy fallback: the MCP server's origin)"
	}
	c.ok("as.discovery", where)
	c.as = found

	c.checkIssuer(asURL, legacy)
	c.checkEndpoints(oidc)
	c.checkPKCE()
	c.checkRegistration()
	c.checkIssParameter(ctx)
	return true
}

// checkIssuer: RFC 8414 §3.3 (and OpenID Discovery §4.3) — the issuer must
// be identical to the one the well-known URL was built from. The TypeScript
// SDK 2.x and the Python SDK 2.x compare strings; the TypeScript SDK
// tolerates only its own trailing slash on the legacy fallback.
func (c *checker) checkIssuer(asURL string, legacy bool) {
	iss := c.as.issuer
	switch {
	case iss == "":
		c.fail("as.issuer", "the metadata has no issuer",
			`add "issuer": "`+asURL+`" (RFC 8414 §2)`)
	case iss == asURL || legacy && iss == strings.TrimSuffix(asURL, "/"):
		c.ok("as.issuer", "issuer = "+iss+", identical to the URL it was fetched for (RFC 8414 §3.3)")
	case strings.TrimSuffix(iss, "/") == strings.TrimSuffix(asURL, "/"):
		c.fail("as.issuer", "issuer "+iss+" differs from "+asURL+" (authorization_servers[0]) by a trailing slash: MCP 2026-07-28 clients compare them as strings and reject the metadata (RFC 8414 §3.3)",
			`list the issuer exactly as the metadata spells it, "`+iss+`", in authorization_servers`)
	default:
		c.fail("as.issuer", "issuer "+iss+" is not "+asURL+", the authorization server it was fetched for: MCP 2026-07-28 clients reject the metadata (RFC 8414 §3.3)",
			"make the metadata's issuer "+asURL+", or list "+iss+" in authorization_servers if that is the real authorization server")
	}
}

// checkEndpoints: the fields the SDK clients' schemas require, and the
// authorization-code response type.
func (c *checker) checkEndpoints(oidc bool) {
	required := []string{"issuer", "authorization_endpoint", "token_endpoint", "response_types_supported"}
	if oidc {
		required = append(required, "jwks_uri", "subject_types_supported", "id_token_signing_alg_values_supported")
	}
	var missing []string
	for _, k := range required {
		if _, ok := c.as.doc[k]; !ok {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		c.fail("as.endpoints", "the metadata lacks "+strings.Join(missing, ", ")+": SDK clients reject it",
			"add the missing fields (RFC 8414 §2, OpenID Connect Discovery §3)")
		return
	}
	for _, k := range []string{"authorization_endpoint", "token_endpoint"} {
		if err := checkEndpointURL(str(c.as.doc, k)); err != nil {
			c.fail("as.endpoints", k+" "+err.Error(), "publish "+k+" as an absolute https URL")
			return
		}
	}
	if rt, _ := strs(c.as.doc, "response_types_supported"); !contains(rt, "code") {
		c.fail("as.endpoints", "response_types_supported does not list code: clients refuse an authorization server without the authorization-code flow",
			`support and advertise "response_types_supported": ["code"]`)
		return
	}
	c.ok("as.endpoints", "authorization_endpoint "+str(c.as.doc, "authorization_endpoint")+", token_endpoint "+str(c.as.doc, "token_endpoint"))
}

// checkEndpointURL: endpoints must be https but on loopback (OAuth 2.1 §1.5).
func checkEndpointURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case s == "":
		return fmt.Errorf("is missing")
	case err != nil || !u.IsAbs() || u.Host == "":
		return fmt.Errorf("%q is not an absolute URL", s)
	case u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname())):
		return fmt.Errorf("%q is not https", s)
	}
	return nil
}

// checkPKCE: MCP requires PKCE with S256; clients MUST refuse to proceed
// when code_challenge_methods_supported is absent (MCP authorization, PKCE;
// RFC 7636 §4.2).
func (c *checker) checkPKCE() {
	methods, ok := strs(c.as.doc, "code_challenge_methods_supported")
	switch {
	case wrongType(c.as.doc, "code_challenge_methods_supported"):
		c.fail("as.pkce", "code_challenge_methods_supported"+wrongTypeFail,
			`advertise "code_challenge_methods_supported": ["S256"]`)
	case !ok:
		c.fail("as.pkce", "the metadata does not advertise code_challenge_methods_supported: MCP clients must refuse to log in without it (the TypeScript SDK still proceeds, stricter clients stop)",
			`advertise "code_challenge_methods_supported": ["S256"] (and support PKCE)`)
	case !contains(methods, "S256"):
		c.fail("as.pkce", "code_challenge_methods_supported is "+fmt.Sprint(methods)+", without S256: every MCP client refuses to log in",
			`support PKCE with S256 and list it in code_challenge_methods_supported`)
	default:
		c.ok("as.pkce", "PKCE with S256")
	}
}

// checkRegistration says how each client family will get a client id:
// pre-registration, Client ID Metadata Documents (CIMD, preferred by MCP
// 2026-07-28), or RFC 7591 dynamic registration (deprecated but still what
// most clients do).
func (c *checker) checkRegistration() {
	cimd := c.as.doc["client_id_metadata_document_supported"] == true
	reg := str(c.as.doc, "registration_endpoint")
	methods, listed := strs(c.as.doc, "token_endpoint_auth_methods_supported")
	public := listed && contains(methods, "none")
	if reg != "" {
		if err := checkEndpointURL(reg); err != nil {
			c.fail("as.registration", "registration_endpoint "+err.Error(), "publish registration_endpoint as an absolute https URL")
			return
		}
	}
	switch {
	case cimd && reg != "":
		c.ok("as.registration", "Client ID Metadata Documents and dynamic registration at "+reg+
			": claude.ai and Claude Desktop use CIMD (when none is among token_endpoint_auth_methods_supported), so do SDK 1.x/2.x apps configured with a metadata URL; MCP Inspector and other SDK apps register dynamically")
	case cimd && !public:
		c.fail("as.registration", "Client ID Metadata Documents only, and token_endpoint_auth_methods_supported lacks none: claude.ai and Claude Desktop use CIMD only for public clients, and nothing else can register",
			`add "none" to token_endpoint_auth_methods_supported, or offer dynamic registration (RFC 7591)`)
	case cimd:
		c.warn("as.registration", "Client ID Metadata Documents only: claude.ai, Claude Desktop and SDK 1.x/2.x apps with a metadata URL connect; MCP Inspector and SDK apps without one stop (\"does not support dynamic client registration\") unless a client id is entered by hand",
			"also offer dynamic registration (RFC 7591), or give those users a pre-registered client id")
	case reg != "":
		c.ok("as.registration", "dynamic registration at "+reg+": claude.ai, Claude Desktop, MCP Inspector and the TypeScript/Python SDKs 1.x and 2.x register there (MCP 2026-07-28 deprecates it in favour of Client ID Metadata Documents)")
	default:
		c.warn("as.registration", "neither dynamic registration nor Client ID Metadata Documents: every client needs a client id entered by hand (claude.ai's and Inspector's advanced settings, SDK apps' stored client information); SDK clients without one stop with \"does not support dynamic client registration\"",
			"offer dynamic registration (RFC 7591) or Client ID Metadata Documents, or hand users a pre-registered client id (STATIC_CLIENT_ID for this gateway)")
	}
}
