package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// protocolVersion is the MCP revision doctor speaks in initialize and sends
// in MCP-Protocol-Version on metadata requests, as the SDK clients do.
const protocolVersion = "2025-11-25"

// initializeBody is the first request a client sends, without a token.
const initializeBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"` + protocolVersion +
	`","capabilities":{},"clientInfo":{"name":"` + userAgent + `","version":"1"}}}`

// challengeInfo is what the 401 said.
type challengeInfo struct {
	resourceMetadata string // absolute URL, or ""
	scope            string
}

// mcpHeaders are the headers of an MCP POST (Streamable HTTP transport,
// plus the 2026-07-28 Mcp-Method header).
func mcpHeaders(method string) http.Header {
	return http.Header{
		"Content-Type": {"application/json"},
		"Accept":       {"application/json, text/event-stream"},
		"Mcp-Method":   {method},
	}
}

// checkTransport sends the first, unauthenticated request and checks TLS
// and the port on its connection; it then checks the challenge. It reports
// false when nothing further can work (the certificate is refused).
func (c *checker) checkTransport(ctx context.Context) bool {
	res, err := c.send(ctx, http.MethodPost, c.target.String(), mcpHeaders("initialize"), []byte(initializeBody))
	if !c.checkTLS(res, err) {
		return false
	}
	c.checkPort()
	c.checkChallenge(res, err)
	return true
}

// checkTLS: MCP authorization requires https for every endpoint but
// loopback ones (MCP authorization, communication security); hosted clients
// refuse a certificate a browser would refuse.
func (c *checker) checkTLS(res *response, err error) bool {
	host := c.target.Hostname()
	if c.target.Scheme == "http" {
		if isLoopback(host) {
			c.warn("tls", "plain http on a loopback address: fine for local clients, but hosted clients such as claude.ai cannot reach it",
				"publish the server at a public https URL (a reverse proxy or tunnel with a valid certificate) before connecting hosted clients")
		} else {
			c.fail("tls", "plain http: MCP authorization requires https for every endpoint that is not loopback, and clients refuse to send tokens over http",
				"serve the endpoint over https with a certificate from a public CA")
		}
		return true
	}
	if err != nil {
		var ce certError
		if errors.As(err, &ce) {
			c.fail("tls", "the TLS handshake with "+c.target.Host+" failed: "+err.Error(),
				"install a certificate from a public CA (for example Let's Encrypt) covering "+host+", with its full chain")
			return false
		}
		return true // not a TLS problem: the challenge check reports it
	}
	if res.tls == nil || len(res.tls.PeerCertificates) == 0 {
		return true
	}
	if len(res.tls.VerifiedChains) == 0 {
		c.warn("tls", "the certificate was not verified (the transport skips verification)",
			"run doctor without a transport that skips certificate verification")
		return true
	}
	leaf := res.tls.PeerCertificates[0]
	left := leaf.NotAfter.Sub(c.cfg.Now())
	if left < 14*24*time.Hour {
		c.warn("tls", fmt.Sprintf("the certificate for %s expires in %s (%s)", host, left.Round(time.Hour), leaf.NotAfter.UTC().Format(time.DateOnly)),
			"renew the certificate now, and automate its renewal")
		return true
	}
	c.ok("tls", fmt.Sprintf("valid certificate for %s, issued by %q, expires %s", host, leaf.Issuer.CommonName, leaf.NotAfter.UTC().Format(time.DateOnly)))
	return true
}

// checkPort: some hosted clients (claude.ai among them) connect only to 443.
func (c *checker) checkPort() {
	if c.target.Scheme != "https" {
		return
	}
	if p := c.target.Port(); p != "" && p != "443" {
		c.warn("port", "port "+p+": some hosted clients, claude.ai among them, connect only to port 443",
			"serve the endpoint on port 443 (a reverse proxy can forward 443 to this port)")
		return
	}
	c.ok("port", "port 443")
}

// checkChallenge: an unauthenticated request gets 401 with a Bearer
// challenge (RFC 6750 §3) naming the protected-resource metadata (RFC 9728
// §5.1) and, as MCP asks, the scope to request.
func (c *checker) checkChallenge(res *response, err error) {
	if err != nil {
		c.fail("challenge", "POST "+c.target.String()+" without a token: "+err.Error(),
			"check the URL, DNS and firewall, and that the server is up and reachable from where clients connect")
		return
	}
	switch {
	case res.status == http.StatusUnauthorized:
	case res.status >= 200 && res.status < 300:
		c.fail("challenge", fmt.Sprintf("POST without a token answered %d: the endpoint requires no authorization, so clients never log in", res.status),
			"if the server should be protected, put it behind OAuth so that requests without a token get 401; if it is meant to be public, no login is needed")
		return
	case res.status >= 300 && res.status < 400:
		c.fail("challenge", fmt.Sprintf("POST without a token answered %d, a redirect to %q: clients expect the endpoint itself to answer 401", res.status, res.header.Get("Location")),
			"give clients the final URL of the MCP endpoint, exactly, so that no redirect is needed")
		return
	case res.status == http.StatusNotFound:
		c.fail("challenge", "POST without a token answered 404: no MCP endpoint at this URL",
			"use the endpoint's full URL, path included (often /mcp)")
		return
	case res.status == http.StatusForbidden:
		c.fail("challenge", "POST without a token answered 403: clients start a login only on 401",
			"answer requests without a token with 401 and a WWW-Authenticate: Bearer challenge (RFC 6750 §3)")
		return
	case res.status == http.StatusMethodNotAllowed:
		c.fail("challenge", "POST answered 405: the Streamable HTTP transport's endpoint must accept POST",
			"point clients at the Streamable HTTP endpoint (not an SSE-only or GET-only URL)")
		return
	default:
		c.fail("challenge", fmt.Sprintf("POST without a token answered %d, not 401", res.status),
			"answer requests without a token with 401 and a WWW-Authenticate: Bearer challenge (RFC 6750 §3)")
		return
	}
	values := res.header.Values("WWW-Authenticate")
	if len(values) == 0 {
		c.fail("challenge", "401 without a WWW-Authenticate header: clients cannot learn where to log in from it",
			`add WWW-Authenticate: Bearer resource_metadata="<metadata URL>", scope="<scopes>" to every 401 (RFC 9728 §5.1)`)
		return
	}
	var bearer *authChallenge
	for _, v := range values {
		chs, err := parseChallenges(v)
		if err != nil {
			c.fail("challenge", fmt.Sprintf("401 with an unparseable WWW-Authenticate %q: %v", shorten(v, 120), err),
				`send it in RFC 9110 §11.6.1 syntax: Bearer resource_metadata="https://...", scope="..."`)
			return
		}
		for i := range chs {
			if strings.EqualFold(chs[i].scheme, "Bearer") && bearer == nil {
				bearer = &chs[i]
			}
		}
	}
	if bearer == nil {
		c.fail("challenge", fmt.Sprintf("401 whose WWW-Authenticate %q has no Bearer challenge", shorten(strings.Join(values, ", "), 120)),
			"add a Bearer challenge (RFC 6750 §3): MCP clients look only at that one")
		return
	}
	info := &challengeInfo{scope: bearer.params["scope"]}
	c.challenge = info
	c.ok("challenge", "POST without a token answered 401 with a Bearer challenge")

	rm, has := bearer.params["resource_metadata"]
	switch u, err := url.Parse(rm); {
	case !has || rm == "":
		c.warn("challenge.metadata", "the challenge has no resource_metadata: clients fall back to the well-known locations",
			`add resource_metadata="<absolute URL of the protected-resource metadata>" to the challenge (RFC 9728 §5.1)`)
	case err != nil || !u.IsAbs() || (u.Scheme != "https" && u.Scheme != "http"):
		c.fail("challenge.metadata", fmt.Sprintf("resource_metadata %q is not an absolute http(s) URL: clients ignore it or stop", rm),
			"make resource_metadata the absolute URL of the protected-resource metadata")
	default:
		info.resourceMetadata = rm
		c.ok("challenge.metadata", "resource_metadata="+rm)
	}
	switch {
	case info.scope == "":
		c.warn("challenge.scope", "the challenge has no scope: clients fall back to scopes_supported or ask for none",
			`add scope="<the scopes a client needs>" to the challenge (MCP authorization, scope selection)`)
	case contains(strings.Fields(info.scope), "offline_access"):
		c.warn("challenge.scope", fmt.Sprintf("scope=%q asks for offline_access, which MCP 2026-07-28 says a challenge should not: clients ask for it and some providers refuse it", info.scope),
			"drop offline_access from the challenge's scope (SCOPES_SUPPORTED for this gateway); the authorization server decides about refresh tokens")
	default:
		c.ok("challenge.scope", fmt.Sprintf("scope=%q", info.scope))
	}
}

// checkCORS: browser-based clients (MCP Inspector, web apps) can read the 401
// and its challenge only through CORS. Hosted clients such as claude.ai
// connect from their servers, so a problem here is only a warning.
func (c *checker) checkCORS(ctx context.Context) {
	const reqHeaders = "authorization, content-type, mcp-method, mcp-protocol-version"
	o := c.cfg.Origin
	why := " (browser-based clients such as MCP Inspector at " + o + "; hosted clients such as claude.ai are not affected)"
	pre, err := c.send(ctx, http.MethodOptions, c.target.String(), http.Header{
		"Origin":                         {o},
		"Access-Control-Request-Method":  {http.MethodPost},
		"Access-Control-Request-Headers": {reqHeaders},
	}, nil)
	if err != nil {
		c.warn("cors", "the CORS preflight failed: "+err.Error()+why, "answer OPTIONS preflights from "+o)
		return
	}
	var problems, fixes []string
	problem := func(p, fix string) {
		problems = append(problems, p)
		if !contains(fixes, fix) {
			fixes = append(fixes, fix)
		}
	}
	allowOrigin := "allow the origin " + o + " (CORS_ALLOW_ORIGINS for this gateway)"
	if pre.status < 200 || pre.status > 299 {
		problem(fmt.Sprintf("the preflight answered %d", pre.status), "answer OPTIONS preflights from "+o+" with 204 and the Access-Control-Allow-* headers")
	} else {
		if !allowsOrigin(pre.header, o) {
			problem("the preflight does not allow the origin", allowOrigin)
		}
		if m := pre.header.Get("Access-Control-Allow-Methods"); !listHas(m, "POST") && !listHas(m, "*") {
			problem("the preflight does not allow POST", "list POST in Access-Control-Allow-Methods")
		}
		if h := pre.header.Get("Access-Control-Allow-Headers"); !listHas(h, "*") {
			var missing []string
			for _, want := range strings.Split(reqHeaders, ", ") {
				if !listHas(h, want) {
					missing = append(missing, want)
				}
			}
			if len(missing) > 0 {
				problem("the preflight does not allow the request headers "+strings.Join(missing, ", "),
					"list "+strings.Join(missing, ", ")+" in Access-Control-Allow-Headers")
			}
		}
	}
	res, err := c.send(ctx, http.MethodPost, c.target.String(), withHeader(mcpHeaders("initialize"), "Origin", o), []byte(initializeBody))
	switch {
	case err != nil:
		problem("the POST with an Origin failed: "+err.Error(), "answer POSTs that carry an Origin header")
	case res.status == http.StatusForbidden:
		problem("a POST from that origin is refused with 403", allowOrigin)
	case !allowsOrigin(res.header, o):
		problem(fmt.Sprintf("the %d answer has no Access-Control-Allow-Origin for it", res.status), allowOrigin)
	case res.status == http.StatusUnauthorized && !listHas(res.header.Get("Access-Control-Expose-Headers"), "WWW-Authenticate") &&
		!listHas(res.header.Get("Access-Control-Expose-Headers"), "*"):
		problem("the 401 does not expose WWW-Authenticate (Access-Control-Expose-Headers), so the browser hides the challenge",
			"add WWW-Authenticate to Access-Control-Expose-Headers")
	}
	if len(problems) > 0 {
		c.warn("cors", "from origin "+o+": "+strings.Join(problems, "; ")+why, strings.Join(fixes, "; "))
		return
	}
	c.ok("cors", "a browser client at "+o+" passes the preflight and can read the challenge (WWW-Authenticate exposed)")
}

func withHeader(h http.Header, k, v string) http.Header {
	h.Set(k, v)
	return h
}

func allowsOrigin(h http.Header, o string) bool {
	a := h.Get("Access-Control-Allow-Origin")
	return a == "*" || a == o
}

// listHas reports whether a comma-separated header value holds want,
// case-insensitively.
func listHas(list, want string) bool {
	for _, v := range strings.Split(list, ",") {
		if strings.EqualFold(strings.TrimSpace(v), want) {
			return true
		}
	}
	return false
}

// authChallenge is one challenge of a WWW-Authenticate header.
type authChallenge struct {
	scheme string
	params map[string]string // lower-cased names
	token  string            // token68, if any
}

// parseChallenges parses a WWW-Authenticate value (RFC 9110 §11.6.1):
// comma-separated challenges, each a scheme followed by a token68 or by
// comma-separated auth-params whose values are tokens or quoted strings.
func parseChallenges(s string) ([]authChallenge, error) {
	p := &headerParser{s: s}
	var out []authChallenge
	for {
		p.skipSpaceAndCommas()
		if p.done() {
			break
		}
		scheme := p.token()
		if scheme == "" {
			return nil, fmt.Errorf("expected an auth scheme at %q", p.rest())
		}
		ch := authChallenge{scheme: scheme, params: map[string]string{}}
		if p.done() || p.peek() == ',' {
			out = append(out, ch)
			continue
		}
		if !p.space() {
			return nil, fmt.Errorf("expected a space after %q", scheme)
		}
		// A token68 stands alone before the end or the next challenge;
		// anything else is a list of auth-params.
		save := p.i
		if t := p.token68(); t != "" {
			p.skipSpace()
			if p.done() || p.peek() == ',' {
				ch.token = t
				out = append(out, ch)
				continue
			}
			p.i = save
		}
		for {
			p.skipSpace()
			save := p.i
			name := p.token()
			p.skipSpace()
			if name == "" || p.done() || p.peek() != '=' {
				p.i = save // the next challenge begins here
				break
			}
			p.i++ // '='
			p.skipSpace()
			var val string
			if !p.done() && p.peek() == '"' {
				v, err := p.quoted()
				if err != nil {
					return nil, err
				}
				val = v
			} else {
				val = p.token()
				if val == "" {
					return nil, fmt.Errorf("parameter %s has no value", name)
				}
			}
			k := strings.ToLower(name)
			if _, dup := ch.params[k]; dup {
				return nil, fmt.Errorf("parameter %s appears twice", name)
			}
			ch.params[k] = val
			p.skipSpace()
			if p.done() {
				break
			}
			if p.peek() != ',' {
				return nil, fmt.Errorf("expected a comma after parameter %s at %q", name, p.rest())
			}
			p.skipSpaceAndCommas()
		}
		out = append(out, ch)
	}
	return out, nil
}

type headerParser struct {
	s string
	i int
}

func (p *headerParser) done() bool   { return p.i >= len(p.s) }
func (p *headerParser) peek() byte   { return p.s[p.i] }
func (p *headerParser) rest() string { return shorten(p.s[p.i:], 40) }

func (p *headerParser) skipSpace() {
	for !p.done() && (p.peek() == ' ' || p.peek() == '\t') {
		p.i++
	}
}

func (p *headerParser) space() bool {
	start := p.i
	p.skipSpace()
	return p.i > start
}

func (p *headerParser) skipSpaceAndCommas() {
	for !p.done() && (p.peek() == ' ' || p.peek() == '\t' || p.peek() == ',') {
		p.i++
	}
}

// token reads an RFC 9110 §5.6.2 token.
func (p *headerParser) token() string {
	start := p.i
	for !p.done() && isTchar(p.peek()) {
		p.i++
	}
	return p.s[start:p.i]
}

// token68 reads an RFC 9110 §11.2 token68.
func (p *headerParser) token68() string {
	start := p.i
	for !p.done() && (isAlnum(p.peek()) || strings.IndexByte("-._~+/", p.peek()) >= 0) {
		p.i++
	}
	for !p.done() && p.peek() == '=' {
		p.i++
	}
	return p.s[start:p.i]
}

// quoted reads an RFC 9110 §5.6.4 quoted-string.
func (p *headerParser) quoted() (string, error) {
	p.i++ // opening quote
	var b strings.Builder
	for !p.done() {
		ch := p.peek()
		p.i++
		switch ch {
		case '"':
			return b.String(), nil
		case '\\':
			if p.done() {
				return "", errors.New("unterminated quoted string")
			}
			b.WriteByte(p.peek())
			p.i++
		default:
			b.WriteByte(ch)
		}
	}
	return "", errors.New("unterminated quoted string")
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func isTchar(c byte) bool {
	return isAlnum(c) || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
