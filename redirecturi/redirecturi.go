// Package redirecturi owns the rules for the OAuth redirect URIs the
// gateway lets clients register (RFC 6749 §3.1.2, RFC 8252 §7, RFC 9700
// §4.1): which URIs are safe to send a user's browser to with a code
// (Check, widened by the operator's REGISTER_REDIRECT_SCHEMES, each entry
// checked by CheckScheme), the operator's REGISTER_REDIRECT_URIS list of
// exact URIs and loopback patterns (List), and how a redirect URI
// presented at authorization matches a registered one (Registered).
//
// Facade mode's static-client registration (wellknown) and broker mode's
// registrations and Client ID Metadata Documents (broker) both use it.
// What REGISTER_REDIRECT_URIS means differs by mode, deliberately, and is
// said where each mode applies it: in facade mode it replaces Check (the
// provider's own redirect-URI list stays the final boundary), in broker
// mode it only narrows Check (the gateway itself sends the browser back
// with its code). This package holds no state and imports only the
// standard library.
package redirecturi

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Parse checks a redirection endpoint's shape, absolute and without a
// fragment (RFC 6749 §3.1.2), and ASCII, and returns it parsed.
//
// A URI is ASCII (RFC 3986 §2); an internationalized host name is written
// in its A-label form, xn--... (RFC 5890 §2.3.2.1), which is what a
// browser goes to. Go's url.Parse accepts other bytes, and decodes a
// percent-encoded host (cl%D0%B0ude.ai) into its host, so a host that
// merely looks like a trusted one (clаude.ai with a Cyrillic а, or one
// reversed by U+202E) would be shown to the user on the consent page. The
// host is checked after that decoding, the rest of the URI as given.
func Parse(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("redirect uri %q: %w", raw, err)
	}
	if !isASCII(u.Host) {
		return nil, fmt.Errorf("redirect uri %q: internationalized host names must be given in punycode, xn--... (RFC 5890), not as Unicode or percent-encoded", raw)
	}
	if !isASCII(raw) {
		return nil, fmt.Errorf("redirect uri %q: must be ASCII: percent-encode other characters (RFC 3986 §2.1)", raw)
	}
	if !u.IsAbs() || u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, fmt.Errorf("redirect uri %q: must be an absolute URI without a fragment", raw)
	}
	return u, nil
}

// isASCII reports whether s has only ASCII bytes.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// Check returns why raw may not be registered as a redirect URI, or nil.
// It accepts the redirect URIs of native and web OAuth clients (RFC 8252
// §7, RFC 9700 §4.1): https with a host; http on a loopback host,
// 127.0.0.1, [::1] or localhost, with any port or none (RFC 8252 §7.3); a
// private-use scheme in reverse domain form, so one with a dot (RFC 8252
// §7.1: com.example.app:/cb); and a private-use scheme of schemes
// (REGISTER_REDIRECT_SCHEMES, lower case, each passed CheckScheme) when
// the URI names a host or a path (cursor://anysphere.cursor-mcp/cb).
// Anything else, javascript:, data:, file:, http to another host, is
// refused: the user's browser would be sent there with an authorization
// code. No URI may carry user information (https://claude.ai@evil.example),
// a space, a control character or anything but ASCII (Parse).
func Check(raw string, schemes []string) error {
	u, err := Parse(raw)
	if err != nil {
		return err
	}
	if u.User != nil {
		return fmt.Errorf("redirect uri %q: must not contain user information", raw)
	}
	for _, c := range raw {
		if c <= ' ' || c == 0x7f {
			return fmt.Errorf("redirect uri %q: must not contain a space or control character", raw)
		}
	}
	switch {
	case u.Scheme == "https":
		if u.Host == "" || u.Opaque != "" {
			return fmt.Errorf("redirect uri %q: an https redirect uri must name a host", raw)
		}
		return nil
	case u.Scheme == "http":
		if _, ok := loopback(u); !ok {
			return fmt.Errorf("redirect uri %q: http is allowed only on a loopback host: 127.0.0.1, [::1] or localhost (RFC 8252 §7.3)", raw)
		}
		return nil
	case strings.Contains(u.Scheme, "."):
		return nil
	case slices.Contains(schemes, u.Scheme):
		if u.Host == "" && u.Path == "" && u.Opaque == "" {
			return fmt.Errorf("redirect uri %q: a private-use redirect uri must name a host or a path", raw)
		}
		return nil
	}
	return fmt.Errorf("redirect uri %q: scheme %q is not allowed: use https, http on a loopback host, or a private-use scheme, which must contain a dot (reverse domain form such as com.example.app, RFC 8252 §7.1) or be listed in REGISTER_REDIRECT_SCHEMES", raw, u.Scheme)
}

// CheckScheme validates one REGISTER_REDIRECT_SCHEMES entry, a private-use
// URI scheme whose redirect URIs Check accepts although it has no dot, and
// returns it in lower case (schemes are case-insensitive, RFC 3986 §3.1).
// It refuses what is not a scheme, http and https (they have rules of
// their own), schemes the browser or the system handles itself (a code
// sent to javascript:, data: or file: would be read or run there), and
// schemes a web page can claim for itself with registerProtocolHandler
// (web+ schemes and HTML's safelist, such as mailto:), since the code
// would then reach a web site rather than an app on the user's device.
func CheckScheme(s string) (string, error) {
	name := lowerASCII(strings.TrimSpace(s))
	if !isScheme(name) {
		return "", fmt.Errorf("entry %q is not a URI scheme (a letter, then letters, digits, +, - or .; without \":\")", s)
	}
	switch {
	case name == "http" || name == "https":
		return "", fmt.Errorf("entry %q: https and http on loopback hosts are always accepted, and http elsewhere never", s)
	case slices.Contains(browserSchemes, name):
		return "", fmt.Errorf("entry %q: the browser or the system handles this scheme itself, so a code sent there would not reach an app", s)
	case strings.HasPrefix(name, "web+") || slices.Contains(claimableSchemes, name):
		return "", fmt.Errorf("entry %q: a web page can claim this scheme (registerProtocolHandler), so a code sent there could reach a web site", s)
	}
	return name, nil
}

// isScheme reports whether s is a URI scheme (RFC 3986 §3.1): a letter,
// then letters, digits, "+", "-" or ".".
func isScheme(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// browserSchemes are handled by browsers or operating systems themselves
// (WHATWG Fetch's local and fetch schemes, browsers' internal pages and
// extensions, Android's intents), never by the app a client would be.
var browserSchemes = []string{
	"about", "android-app", "blob", "chrome", "chrome-extension", "chrome-search", "chrome-untrusted",
	"data", "devtools", "edge", "file", "filesystem", "ftp", "intent", "jar", "javascript",
	"moz-extension", "ms-browser-extension", "opera", "resource", "safari-extension", "vbscript",
	"view-source", "ws", "wss",
}

// claimableSchemes are HTML's safelisted schemes, which any web page may
// ask the browser to let it handle (registerProtocolHandler), beside
// every web+ scheme.
var claimableSchemes = []string{
	"bitcoin", "ftps", "geo", "im", "irc", "ircs", "magnet", "mailto", "matrix", "mms", "news",
	"nntp", "openpgp4fpr", "sftp", "sip", "sms", "smsto", "ssh", "tel", "urn", "webcal", "wtai", "xmpp",
}

// Registered reports whether the redirect URI presented in an
// authorization request is one of the registered ones: an exact string
// match (OAuth 2.1 §4.1.1, RFC 9700 §4.1.3), except that a loopback http
// redirect URI matches on any port (RFC 8252 §7.3) with its host's ASCII
// letters folded; nothing else about it may differ.
func Registered(registered []string, presented string) bool {
	if slices.Contains(registered, presented) {
		return true
	}
	want, ok := portless(presented)
	if !ok {
		return false
	}
	for _, r := range registered {
		if got, ok := portless(r); ok && got == want {
			return true
		}
	}
	return false
}

// portless returns a loopback http redirect URI without its port (host
// with ASCII letters folded, path and query exactly as given), or false
// for any other URI.
func portless(raw string) (string, bool) {
	u, err := Parse(raw)
	if err != nil {
		return "", false
	}
	host, ok := loopback(u)
	if !ok {
		return "", false
	}
	return "http://" + host + "\x00" + u.EscapedPath() + "?" + u.RawQuery + strconv.FormatBool(u.ForceQuery), true
}

// loopback returns u's host, ASCII letters folded, when u is an http URI
// on a loopback host with a valid port or none (RFC 8252 §7.3) and no user
// information. The loopback hosts are the IP literals 127.0.0.1 and [::1]
// (RFC 8252 §7.3) and localhost (RFC 8252 §8.3 advises against it, but MCP
// clients such as MCP Inspector use it); not other loopback addresses
// (127.0.0.2) or names (a.localhost).
func loopback(u *url.URL) (string, bool) {
	if u.Scheme != "http" || u.User != nil || u.Opaque != "" {
		return "", false
	}
	host := lowerASCII(u.Hostname())
	switch host {
	case "127.0.0.1", "::1", "localhost":
	default:
		return "", false
	}
	if port := u.Port(); port != "" {
		n, err := strconv.Atoi(port)
		return host, err == nil && n >= 1 && n <= 65535
	}
	return host, !strings.HasSuffix(u.Host, ":")
}

// lowerASCII folds s's ASCII letters to lower case, and nothing else:
// strings.EqualFold and strings.ToLower would take "localhoſt" (U+017F
// LONG S) for localhost.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// List is REGISTER_REDIRECT_URIS: exact redirect URIs, and the loopback
// patterns http://127.0.0.1:*, http://localhost:* and http://[::1]:* (any
// port, then optionally an exact path). The zero List is empty.
type List struct {
	rules []rule
}

// rule is one List entry.
type rule struct {
	exact string // an exact URI, or "" for a loopback pattern
	host  string // loopback pattern: host, without brackets
	path  string // loopback pattern: required path, "" for any
}

// ParseList reads REGISTER_REDIRECT_URIS entries (surrounding spaces
// trimmed, empty ones skipped); the error of the first bad one is
// CheckEntry's.
func ParseList(entries []string) (List, error) {
	var l List
	for _, e := range entries {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		r, err := parseRule(e)
		if err != nil {
			return List{}, err
		}
		l.rules = append(l.rules, r)
	}
	return l, nil
}

// CheckEntry reports why one REGISTER_REDIRECT_URIS entry is neither a
// loopback pattern nor an absolute URI without a fragment, or nil. Whether
// an exact entry must also pass Check is the caller's rule.
func CheckEntry(entry string) error {
	_, err := parseRule(strings.TrimSpace(entry))
	return err
}

// IsPattern reports whether entry is one of the loopback patterns (and so
// not an exact URI).
func IsPattern(entry string) bool {
	r, err := parseRule(strings.TrimSpace(entry))
	return err == nil && r.exact == ""
}

func parseRule(e string) (rule, error) {
	// RFC 8252 §7.3: loopback redirect URIs may use any port.
	patterns := [...]struct{ prefix, host string }{
		{"http://127.0.0.1:*", "127.0.0.1"},
		{"http://localhost:*", "localhost"},
		{"http://[::1]:*", "::1"},
	}
	for _, p := range patterns {
		if len(e) < len(p.prefix) || lowerASCII(e[:len(p.prefix)]) != p.prefix {
			continue
		}
		rest := e[len(p.prefix):]
		if rest != "" && (!strings.HasPrefix(rest, "/") || strings.ContainsAny(rest, "?#")) {
			return rule{}, fmt.Errorf("redirect uri pattern %q: only a path may follow the port", e)
		}
		return rule{host: p.host, path: rest}, nil
	}
	if strings.Contains(e, "*") {
		return rule{}, fmt.Errorf("redirect uri pattern %q: only http://127.0.0.1:*, http://localhost:* and http://[::1]:* take a wildcard", e)
	}
	if _, err := Parse(e); err != nil {
		return rule{}, err
	}
	return rule{exact: e}, nil
}

// Empty reports whether the list has no entries.
func (l List) Empty() bool { return len(l.rules) == 0 }

// Allows reports whether raw is one of the list's exact URIs, byte for
// byte, or matches one of its loopback patterns: the pattern's host (ASCII
// letters folded), any valid port, and its path with no query when the
// pattern names one. An empty list allows nothing.
func (l List) Allows(raw string) bool {
	u, err := Parse(raw)
	if err != nil {
		return false
	}
	host, isLoopback := loopback(u)
	for _, r := range l.rules {
		if r.exact != "" {
			if raw == r.exact {
				return true
			}
			continue
		}
		if !isLoopback || host != r.host {
			continue
		}
		if r.path == "" || (u.EscapedPath() == r.path && u.RawQuery == "" && !u.ForceQuery) {
			return true
		}
	}
	return false
}
