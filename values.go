package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/broker"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/gate"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/policy"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/redirecturi"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/store"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/wellknown"
)

// value is a typed flag: Set parses its argument, blanks trimmed, and
// stores the result in every destination. A parser's error reads after the
// name of the variable or flag: `is not a port number`, `entry "x" is ...`.
type value[T any] struct {
	dst   []*T
	parse func(string) (T, error)
	raw   string
}

// bind makes the flag that parses into dst.
func bind[T any](parse func(string) (T, error), dst ...*T) flag.Value {
	return &value[T]{dst: dst, parse: parse}
}

func (v *value[T]) Set(s string) error {
	s = strings.TrimSpace(s)
	x, err := v.parse(s)
	if err != nil {
		return err
	}
	for _, d := range v.dst {
		*d = x
	}
	v.raw = s
	return nil
}

func (v *value[T]) String() string { return v.raw }

// The parsers. An empty string is the zero value where "unset" means
// something (an optional URL, an empty list); a number or a duration must
// be given.

func text(s string) (string, error) { return s, nil }

// httpURL parses an absolute http or https URL.
func httpURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("%s is not an absolute http(s) URL", shown(s))
	}
	return u, nil
}

// shown is s quoted for an error message, its user information (a password,
// a token) replaced: configuration errors go to the terminal and to the
// container's log. The authority is found as url.Parse finds it (after
// "//", up to the first "/", "?" or "#"; the user information up to its
// last "@"), also when the rest of s does not parse, and from the start
// when s has no "//" (user:password@host, the scheme forgotten).
func shown(s string) string {
	start := 0
	if i := strings.Index(s, "//"); i >= 0 {
		start = i + 2
	}
	auth := s[start:]
	if end := strings.IndexAny(auth, "/?#"); end >= 0 {
		auth = auth[:end]
	}
	if at := strings.LastIndex(auth, "@"); at >= 0 {
		s = s[:start] + "REDACTED" + s[start+at:]
	}
	return strconv.Quote(s)
}

// issuerURL is OIDC_ISSUER_URL: absolute https, or http on loopback, with
// no query or fragment (RFC 8414 §2, OpenID Connect Discovery §4), not
// even an empty one, and no user information: direct mode publishes it
// as it is in the protected-resource metadata, which anyone may read.
func issuerURL(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	u, err := httpURL(s)
	switch {
	case err != nil:
		return "", err
	case u.User != nil: // the value is not repeated: it holds a password
		return "", errors.New("must not contain user information (it would be published in the discovery documents)")
	case u.Scheme == "http" && !isLoopbackHost(u.Hostname()):
		return "", fmt.Errorf("%s must use https (http is allowed only for loopback addresses)", shown(s))
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#"):
		return "", fmt.Errorf("%s must not have a query or fragment", shown(s))
	}
	return s, nil
}

// resourceURL is RESOURCE_URL, kept exactly as given (RFC 9728 §3.3): an
// absolute http(s) URL without query, fragment (RFC 9728 §1.2) or user
// information, whose path is clean.
func resourceURL(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	u, err := httpURL(s)
	switch {
	case err != nil:
		return "", err
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#"):
		return "", fmt.Errorf("%s must not have a query or fragment (RFC 9728 §1.2)", shown(s))
	case u.User != nil:
		return "", fmt.Errorf("%s must not contain user information", shown(s))
	case u.RawPath != "" || strings.Contains(u.Path, "//") || hasDotSegment(u.Path):
		return "", fmt.Errorf("%s must have a clean path", shown(s))
	case u.Path != "" && gate.PathProblem(u.Path) != "":
		// The gate routes the decoded path (its MCP endpoint and the
		// metadata's well-known path): it must be plain path characters.
		return "", fmt.Errorf("%s must have a path of letters, digits and -._~$&+,=:@/ only (%s)", shown(s), gate.PathProblem(u.Path))
	case u.Path != "" && gate.PathProblem(u.EscapedPath()) != "":
		// Requests name it escaped, and the gate checks that form too: a
		// "%" in the path (%25) builds a route no request can reach.
		return "", fmt.Errorf("%s must have a path of letters, digits and -._~$&+,=:@/ only (%s)", shown(s), gate.PathProblem(u.EscapedPath()))
	}
	return s, nil
}

// upstreamURL is MCP_UPSTREAM_URL.
func upstreamURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, nil
	}
	u, err := httpURL(s)
	switch {
	case err != nil:
		return nil, err
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return nil, fmt.Errorf("%s must not have a query, fragment or user information", shown(s))
	}
	return u, nil
}

// upstreamPath is MCP_UPSTREAM_PATH, without its trailing slashes: a clean
// absolute path whose characters need no escaping (RFC 3986 §3.3 pchar
// without ";" and "%"), so it is its own escaped form.
func upstreamPath(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	bad := !strings.HasPrefix(s, "/") || strings.Contains(s, "//") || hasDotSegment(s)
	for i := 0; i < len(s) && !bad; i++ {
		c := s[i]
		bad = !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("/-._~!$&'()*+,=:@", c) >= 0)
	}
	if bad {
		return "", fmt.Errorf("%q must be a clean absolute path such as /mcp", s)
	}
	return strings.TrimRight(s, "/"), nil
}

func hasDotSegment(p string) bool {
	return strings.Contains(p+"/", "/./") || strings.Contains(p+"/", "/../")
}

// readyPath is MCP_SPAWN_READY_PATH: an absolute path, perhaps with a
// query, written as it is requested (RFC 3986 §3.3 and §3.4: pchar, "/"
// and "?", anything else percent-encoded), so the probe asks for exactly
// that; no fragment, which a request never carries.
func readyPath(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if !strings.HasPrefix(s, "/") {
		return "", fmt.Errorf("%q must start with /", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			i += 2
		case c == '%':
			return "", fmt.Errorf("%q is not a URL path such as /healthz: a %% must start two hexadecimal digits (RFC 3986 §2.1)", s)
		case 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("/?-._~!$&'()*+,;=:@", c) >= 0:
		default:
			return "", fmt.Errorf("%q is not a URL path such as /healthz: %q must be percent-encoded (RFC 3986 §2.1)", s, s[i:i+1])
		}
	}
	return s, nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// port parses a port number from min to 65535; empty is 0 when min is 1
// (an optional port).
func port(min int) func(string) (int, error) {
	return func(s string) (int, error) {
		if s == "" && min == 1 {
			return 0, nil
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < min || n > 65535 {
			return 0, fmt.Errorf("%q is not a port number (%d-65535)", s, min)
		}
		return n, nil
	}
}

func whole(min int) func(string) (int, error) {
	return func(s string) (int, error) {
		n, err := strconv.Atoi(s)
		switch {
		case err != nil:
			return 0, fmt.Errorf("%q is not a whole number", s)
		case n < min:
			return 0, fmt.Errorf("%q must be at least %d", s, min)
		}
		return n, nil
	}
}

func whole64(min int) func(string) (int64, error) {
	return func(s string) (int64, error) {
		n, err := whole(min)(s)
		return int64(n), err
	}
}

// maxSeconds is the largest number of whole seconds a time.Duration holds.
const maxSeconds = math.MaxInt64 / int64(time.Second)

// duration parses Go syntax ("30s", "2m") or a bare number of seconds,
// which must fit a time.Duration (about 292 years).
func duration(positive bool) func(string) (time.Duration, error) {
	return func(s string) (time.Duration, error) {
		d, err := time.ParseDuration(s)
		if err != nil {
			switch {
			case isSeconds(s):
				// ParseInt's range error comes with the nearest int64:
				// its sign says which end.
				n, nerr := strconv.ParseInt(s, 10, 64)
				switch {
				case n < 0:
					d = -1 // refused below, however large
				case nerr != nil || n > maxSeconds:
					return 0, fmt.Errorf("%q is too large (at most %d seconds)", s, maxSeconds)
				default:
					d = time.Duration(n) * time.Second
				}
			case !durationSyntax(s):
				return 0, fmt.Errorf("%q is not a duration such as 30s or 2m", s)
			case s[0] == '-':
				d = -1 // refused below, however large
			default:
				// Spelled right, so ParseDuration refused its size.
				return 0, fmt.Errorf("%q is too large (at most %d seconds)", s, maxSeconds)
			}
		}
		switch {
		case positive && d <= 0:
			return 0, fmt.Errorf("%q must be positive", s)
		case d < 0:
			return 0, fmt.Errorf("%q must be zero or positive", s)
		}
		return d, nil
	}
}

// isSeconds reports whether s is a bare number of seconds: digits, with
// at most a sign before them.
func isSeconds(s string) bool {
	if s != "" && (s[0] == '-' || s[0] == '+') {
		s = s[1:]
	}
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// durationSyntax reports whether s is spelled as time.ParseDuration reads
// a duration (a sign, then numbers each with a unit), whatever its size,
// so that a refusal can tell a value too large from a misspelt one.
func durationSyntax(s string) bool {
	if s != "" && (s[0] == '-' || s[0] == '+') {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for s != "" {
		i, digits := 0, 0
		for ; i < len(s) && '0' <= s[i] && s[i] <= '9'; i++ {
			digits++
		}
		if i < len(s) && s[i] == '.' {
			for i++; i < len(s) && '0' <= s[i] && s[i] <= '9'; i++ {
				digits++
			}
		}
		j := i
		for j < len(s) && s[j] != '.' && (s[j] < '0' || s[j] > '9') {
			j++
		}
		switch s[i:j] {
		case "ns", "us", "\u00b5s", "\u03bcs", "ms", "s", "m", "h":
		default:
			return false
		}
		if digits == 0 {
			return false
		}
		s = s[j:]
	}
	return true
}

// oneOf accepts one of values, case-insensitively, or empty.
func oneOf(values ...string) func(string) (string, error) {
	return func(s string) (string, error) {
		l := strings.ToLower(s)
		for _, v := range values {
			if l == v {
				return l, nil
			}
		}
		if s == "" {
			return "", nil
		}
		return "", fmt.Errorf("%q is not %s", s, strings.Join(values, " or "))
	}
}

// authServerMode is AUTH_SERVER_MODE.
func authServerMode(s string) (string, error) {
	m, err := oneOf(wellknown.ModeFacade, wellknown.ModeDirect, wellknown.ModeBroker)(s)
	if err == nil && m == "" {
		err = errors.New(`"" is not facade or direct or broker`)
	}
	return m, err
}

// boolean is a true/false setting.
func boolean(s string) (bool, error) {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("%q is not true or false", s)
	}
	return v, nil
}

// negated is a true/false setting that fills a field of the opposite
// meaning (CIMD_ENABLED into broker.Config.DisableCIMD, whose zero value
// is the default).
func negated(s string) (bool, error) {
	v, err := boolean(s)
	return !v, err
}

// cimdAllowHost is one CIMD_ALLOW_HOSTS entry, as the broker reads it.
func cimdAllowHost(s string) (string, error) {
	if err := broker.CheckAllowHost(s); err != nil {
		return "", fmt.Errorf("entry %w", err)
	}
	return s, nil
}

// brokerSecret is BROKER_SECRET or BROKER_SECRET_PREVIOUS: any string of at
// least 32 bytes, the input keying material of HKDF (RFC 5869). Its value
// is never repeated in an error.
func brokerSecret(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	if len(s) < 32 {
		return nil, fmt.Errorf("is %d bytes long; it must be at least 32 (e.g. the output of openssl rand -base64 32)", len(s))
	}
	return []byte(s), nil
}

// scopeList is a list of scopes separated by spaces (as in OAuth's scope
// parameter, RFC 6749 §3.3) or commas (as every other list setting).
func scopeList(s string) ([]string, error) {
	return list(scope)(strings.Join(strings.Fields(s), ","))
}

// logLevel is LOG_LEVEL. go-hclog has no fatal level: "fatal" logs errors
// only, as "error" does.
func logLevel(s string) (hclog.Level, error) {
	switch strings.ToLower(s) {
	case "fatal":
		return hclog.Error, nil
	case "trace", "debug", "info", "warn", "error":
		return hclog.LevelFromString(s), nil
	}
	return hclog.NoLevel, fmt.Errorf("%q is not one of trace, debug, info, warn, error, fatal", s)
}

// auditBytes is MCP_AUDIT, a boolean, as gate.Config.MCPAuditBytes: true
// reads the gate's default amount of each body, false none.
func auditBytes(s string) (int, error) {
	on, err := strconv.ParseBool(s)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%q is not true or false", s)
	case on:
		return 0, nil // gate.DefaultMCPAuditBytes
	}
	return -1, nil
}

func ipHost(s string) (string, error) {
	if s != "" && s != "localhost" && net.ParseIP(s) == nil {
		return "", fmt.Errorf("%q is not an IP address", s)
	}
	return s, nil
}

// hostPort is METRICS_ADDR: an IP address (or none, or localhost) and a
// port.
func hostPort(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	host, p, err := net.SplitHostPort(s)
	n, perr := strconv.Atoi(p)
	switch {
	case err != nil || perr != nil || n < 0 || n > 65535:
		return "", fmt.Errorf("%q is not host:port such as 127.0.0.1:9090", s)
	case host != "" && host != "localhost" && net.ParseIP(host) == nil:
		return "", fmt.Errorf("%q: the host is not an IP address", s)
	}
	return s, nil
}

// list parses a comma-separated list, dropping blanks; an entry with an
// ASCII control character (a newline that should have been a comma) is
// refused, and item, when not nil, checks (and may rewrite) each entry.
func list(item func(string) (string, error)) func(string) ([]string, error) {
	return func(s string) ([]string, error) {
		var out []string
		for _, f := range strings.Split(s, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			if strings.ContainsFunc(f, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				return nil, fmt.Errorf("entry %q contains a control character (entries are separated by commas)", f)
			}
			if item != nil {
				var err error
				if f, err = item(f); err != nil {
					return nil, err
				}
			}
			out = append(out, f)
		}
		return out, nil
	}
}

// storeURL is STORE_URL. Its error never repeats the value, which may
// hold a password.
func storeURL(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if err := store.CheckRedisURL(s); err != nil {
		return "", err
	}
	return s, nil
}

// lowerCase folds ASCII letters only, as the gate compares identities: a
// Unicode-aware lowering would map U+212A KELVIN SIGN to k.
func lowerCase(s string) (string, error) {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b), nil
}

// origin is one CORS_ALLOW_ORIGINS entry, "*" or an origin in the form a
// browser sends it in the Origin header (RFC 6454 §6.2), which the gate
// compares exactly: what has one meaning is rewritten so (a lower-case
// scheme and host, no default port, no lone trailing "/"), and what
// cannot match any Origin header is refused.
func origin(s string) (string, error) {
	if s == "*" {
		return s, nil
	}
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Host == "" || u.Opaque != "" || (u.Scheme != "http" && u.Scheme != "https"):
		return "", fmt.Errorf("entry %s is not an origin such as https://claude.ai (or *)", shown(s))
	case u.User != nil:
		return "", fmt.Errorf("entry %s must not contain user information (an origin is a scheme, a host and a port)", shown(s))
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#"):
		return "", fmt.Errorf("entry %s must not have a query or fragment (an origin is a scheme, a host and a port)", shown(s))
	case u.Path != "" && u.Path != "/":
		return "", fmt.Errorf("entry %s must not have a path (an origin is a scheme, a host and a port)", shown(s))
	}
	host, _ := lowerCase(u.Hostname())
	if err := originHost(host); err != nil {
		return "", fmt.Errorf("entry %s: %w", shown(s), err)
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() {
		host = "[" + ip.String() + "]" // as browsers write it: compressed, lower-case
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		switch {
		case err != nil || n < 1 || n > 65535:
			return "", fmt.Errorf("entry %s: the port is not a port number (1-65535)", shown(s))
		case n != map[string]int{"http": 80, "https": 443}[u.Scheme]: // a default port is left out
			host += ":" + strconv.Itoa(n)
		}
	}
	return u.Scheme + "://" + host, nil
}

// originHost checks an origin's host, lower-cased: an IP address or a name
// of ASCII letters, digits, "-", "_" and ".", as a browser's Origin header
// has it (a name in another script arrives in its xn-- form).
func originHost(host string) error {
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	for i := 0; i < len(host); i++ {
		switch c := host[i]; {
		case c == '*':
			return errors.New("wildcards are not supported; list each origin")
		case c >= 0x80:
			return errors.New("the host is not ASCII; give its xn-- form, as browsers send it")
		case !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.'):
			return fmt.Errorf("the host has %q, which no browser's Origin header has", c)
		}
	}
	return nil
}

// redirectURI is one REGISTER_REDIRECT_URIS entry: a loopback pattern or
// an absolute URI (broker mode asks more of it: config.go).
func redirectURI(s string) (string, error) {
	if err := redirecturi.CheckEntry(s); err != nil {
		return "", fmt.Errorf("entry rejected: %w", err)
	}
	return s, nil
}

// redirectSchemes is REGISTER_REDIRECT_SCHEMES: URI schemes, each checked
// by redirecturi.CheckScheme and lower-cased, or "none" alone.
func redirectSchemes(s string) ([]string, error) {
	if strings.EqualFold(strings.TrimSpace(s), "none") {
		return nil, nil
	}
	return list(func(e string) (string, error) {
		if strings.EqualFold(e, "none") {
			return "", fmt.Errorf("%q: none stands alone (no scheme without a dot), not beside schemes", s)
		}
		return redirecturi.CheckScheme(e)
	})(s)
}

// scope is one scope-token, 1*NQCHAR (RFC 6749 §3.3): printable ASCII
// without space, '"' or '\', so that it stands in a challenge's quoted
// scope (RFC 6750 §3) as it is.
func scope(s string) (string, error) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return "", fmt.Errorf("entry %q is not a scope: printable ASCII without spaces, quotes or backslashes (RFC 6749 §3.3)", s)
		}
	}
	return s, nil
}

// prefixes is TRUSTED_PROXIES: CIDRs, or addresses taken as one-address
// prefixes.
func prefixes(s string) ([]netip.Prefix, error) {
	entries, _ := list(nil)(s)
	var out []netip.Prefix
	for _, e := range entries {
		pfx, err := netip.ParsePrefix(e)
		if err != nil {
			a, aerr := netip.ParseAddr(e)
			if aerr != nil {
				return nil, fmt.Errorf("entry %q is not a CIDR such as 10.0.0.0/8", e)
			}
			pfx = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, pfx.Masked())
	}
	return out, nil
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// mcpPolicy is MCP_POLICY (package policy has the grammar). A rule that
// cannot be read is shown with a caret under the column that failed.
func mcpPolicy(s string) (*policy.Policy, error) {
	p, err := policy.Parse(s)
	if err != nil {
		return nil, ruleError(err)
	}
	if p.Len() == 0 {
		return nil, nil // no rules: no policy, and no cost
	}
	return p, nil
}

// scopeGrants is BROKER_SCOPE_GRANTS (policy.ParseGrants has the grammar).
func scopeGrants(s string) (*policy.Grants, error) {
	g, err := policy.ParseGrants(s)
	if err != nil {
		return nil, ruleError(err)
	}
	if len(g.Scopes()) == 0 {
		return nil, nil
	}
	return g, nil
}

// ruleError renders a *policy.ParseError to read after the variable's
// name, the rule and a caret under the column below it.
func ruleError(err error) error {
	var pe *policy.ParseError
	if !errors.As(err, &pe) {
		return err
	}
	caret := strings.ReplaceAll(pe.Caret(), "\n", "\n    ")
	return fmt.Errorf("rule %d, column %d: %s:\n    %s", pe.Rule, pe.Column, pe.Reason, caret)
}
