package broker

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Token endpoint authentication methods (RFC 7591 §2).
const (
	authNone        = "none"
	authSecretBasic = "client_secret_basic"
	authSecretPost  = "client_secret_post"
)

// Grant types (RFC 7591 §2).
const (
	grantCode    = "authorization_code"
	grantRefresh = "refresh_token"
)

// clientRecord is a registration, sealed into the client_id itself: the
// client_id is the whole registration, so it survives restarts and every
// replica sharing BROKER_SECRET knows it, with no database.
type clientRecord struct {
	Version   int      `json:"v"`
	Name      string   `json:"n,omitempty"`
	Redirects []string `json:"r"`
	Auth      string   `json:"a,omitempty"` // "" means none
	Secret    []byte   `json:"s,omitempty"` // SHA-256 of the client secret
	NoRefresh bool     `json:"nr,omitempty"`
	IssuedAt  int64    `json:"i"`
}

// client is a known client: a registration, or a Client ID Metadata
// Document (doc is its URL; rec holds what the document says).
type client struct {
	id  string
	rec clientRecord
	doc *url.URL
}

func (c *client) authMethod() string {
	if c.rec.Auth == "" {
		return authNone
	}
	return c.rec.Auth
}

// key is a short, stable name for the client (cookies, rate limits, logs):
// the first 96 bits of the SHA-256 of its client_id.
func (c *client) key() string { return clientKey(c.id) }

// approvalKey names c in the consent cookie. A registration cannot change;
// a metadata document can (draft §8.4), so its approval covers the
// redirect URIs and name it had: a document that adds a redirect URI asks
// the user again.
func (c *client) approvalKey() string {
	if c.doc == nil {
		return c.key()
	}
	return clientKey(c.id + "\x00" + strings.Join(c.rec.Redirects, "\x00") + "\x00" + c.rec.Name)
}

func clientKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

// errUnknownClient: the client_id is not one the broker issued (or its key
// was rotated out).
var errUnknownClient = errors.New("unknown client")

// lookupClient returns the client a client_id names: a registration
// sealed into it, or the client whose metadata document is at that URL
// (an error of the document is a *cimdError). A sealed registration is
// base64url, which has no colon; a client_id with one is a URL.
func (b *Broker) lookupClient(ctx context.Context, id string, mode lookupMode) (*client, error) {
	if strings.Contains(id, ":") {
		return b.documentClient(ctx, id, mode)
	}
	var rec clientRecord
	if err := b.seal.open(purposeClient, id, &rec); err != nil || rec.Version != 1 || len(rec.Redirects) == 0 {
		return nil, errUnknownClient
	}
	return &client{id: id, rec: rec}, nil
}

// redirectRegistered reports whether redirect is one of c's redirect URIs:
// an exact string match (OAuth 2.1 §4.1.1, RFC 9700 §4.1.3), except that a
// loopback http redirect URI matches on any port (RFC 8252 §7.3).
func (c *client) redirectRegistered(redirect string) bool {
	if slices.Contains(c.rec.Redirects, redirect) {
		return true
	}
	req, ok := loopbackParts(redirect)
	if !ok {
		return false
	}
	for _, reg := range c.rec.Redirects {
		if r, ok := loopbackParts(reg); ok && r == req {
			return true
		}
	}
	return false
}

// loopbackParts returns an http loopback URI without its port (scheme,
// host, path and query exactly as given), or false for any other URI.
func loopbackParts(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.User != nil || u.Fragment != "" || strings.Contains(raw, "#") || u.Opaque != "" {
		return "", false
	}
	if !isLoopbackHost(u.Hostname()) {
		return "", false
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", false
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return "", false
	}
	return "http://" + strings.ToLower(u.Hostname()) + "\x00" + u.EscapedPath() + "?" + u.RawQuery + strconv.FormatBool(u.ForceQuery), true
}

// isLoopbackHost: 127.0.0.0/8, ::1 and localhost (RFC 8252 §7.3 and §8.3:
// localhost is not recommended, but MCP clients use it).
func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// checkRedirectShape returns why raw may not be registered as a redirect
// URI, or nil: https; http on a loopback host; or a private-use scheme
// with a dot, as a reversed domain name (RFC 8252 §7.1). Never a fragment
// (RFC 6749 §3.1.2), user info, or a scheme such as javascript: or data:.
func checkRedirectShape(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("redirect uri %q is not a URI", raw)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return fmt.Errorf("redirect uri %q has a fragment", raw)
	}
	if u.User != nil {
		return fmt.Errorf("redirect uri %q has user info", raw)
	}
	for _, c := range raw {
		if c <= ' ' || c == 0x7f {
			return fmt.Errorf("redirect uri %q has a space or control character", raw)
		}
	}
	switch u.Scheme {
	case "https":
		if u.Host == "" || u.Opaque != "" {
			return fmt.Errorf("redirect uri %q has no host", raw)
		}
		return nil
	case "http":
		if _, ok := loopbackParts(raw); !ok {
			return fmt.Errorf("redirect uri %q: http is allowed only on a loopback host (127.0.0.1, [::1], localhost)", raw)
		}
		return nil
	case "":
		return fmt.Errorf("redirect uri %q is not absolute", raw)
	}
	if !strings.Contains(u.Scheme, ".") {
		return fmt.Errorf("redirect uri %q: a private-use scheme must contain a dot (reversed domain name, RFC 8252 §7.1)", raw)
	}
	return nil
}

// redirectRule is one REGISTER_REDIRECT_URIS entry.
type redirectRule struct {
	exact string // an exact URI, or "" for a loopback pattern
	host  string // loopback pattern: host, without brackets
	path  string // loopback pattern: required path, "" for any
}

// CheckRedirectURI reports why one REGISTER_REDIRECT_URIS entry is
// neither a redirect URI the broker would register nor one of its loopback
// patterns, or nil: main validates the setting with it in broker mode,
// naming the variable (the broker's rules are stricter than facade mode's:
// a private-use scheme needs a dot).
func CheckRedirectURI(entry string) error {
	_, err := parseRedirectRule(strings.TrimSpace(entry))
	return err
}

func parseRedirectRules(entries []string) ([]redirectRule, error) {
	var rules []redirectRule
	for _, e := range entries {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		rule, err := parseRedirectRule(e)
		if err != nil {
			return nil, err
		}
		rules = append(rules, rule)
	}
	return rules, nil
}

func parseRedirectRule(e string) (redirectRule, error) {
	for _, p := range [...]struct{ prefix, host string }{
		{"http://127.0.0.1:*", "127.0.0.1"}, {"http://localhost:*", "localhost"}, {"http://[::1]:*", "::1"},
	} {
		if len(e) < len(p.prefix) || !strings.EqualFold(e[:len(p.prefix)], p.prefix) {
			continue
		}
		rest := e[len(p.prefix):]
		if rest != "" && (!strings.HasPrefix(rest, "/") || strings.ContainsAny(rest, "?#")) {
			return redirectRule{}, fmt.Errorf("redirect uri pattern %q: only a path may follow the port", e)
		}
		return redirectRule{host: p.host, path: rest}, nil
	}
	if strings.Contains(e, "*") {
		return redirectRule{}, fmt.Errorf("redirect uri pattern %q: only http://127.0.0.1:*, http://localhost:* and http://[::1]:* take a wildcard", e)
	}
	if err := checkRedirectShape(e); err != nil {
		return redirectRule{}, err
	}
	return redirectRule{exact: e}, nil
}

// redirectAllowed reports whether REGISTER_REDIRECT_URIS allows raw (any
// URI when there are no rules).
func (b *Broker) redirectAllowed(raw string) bool {
	if len(b.redirects) == 0 {
		return true
	}
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	for _, rule := range b.redirects {
		if rule.exact != "" {
			if raw == rule.exact {
				return true
			}
			continue
		}
		if _, ok := loopbackParts(raw); !ok || !strings.EqualFold(u.Hostname(), rule.host) {
			continue
		}
		if rule.path == "" || (u.EscapedPath() == rule.path && u.RawQuery == "" && !u.ForceQuery) {
			return true
		}
	}
	return false
}

// clientError is an OAuth error of client authentication.
type clientError struct {
	status      int
	code        string
	description string
	basic       bool // the client tried HTTP Basic: answer with a Basic challenge
}

// authenticateClient identifies the client of a token or revocation
// request (RFC 6749 §2.3.1, §3.2.1): HTTP Basic or client_secret in the
// form for confidential clients, client_id alone for public ones; exactly
// one method per request.
func (b *Broker) authenticateClient(ctx context.Context, r *http.Request, form url.Values) (*client, *clientError) {
	id, secret, basic := r.BasicAuth()
	formID, formSecret := form.Get("client_id"), form.Get("client_secret")
	_, formHasSecret := form["client_secret"]
	if basic {
		// §2.3.1: the credentials are form-encoded before Basic encoding.
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		secret, err2 = url.QueryUnescape(secret)
		if err1 != nil || err2 != nil || id == "" {
			return nil, &clientError{http.StatusUnauthorized, "invalid_client", "the client credentials are malformed", true}
		}
		if formHasSecret {
			return nil, &clientError{http.StatusBadRequest, "invalid_request", "use one client authentication method, not two", true}
		}
		if formID != "" && formID != id {
			return nil, &clientError{http.StatusBadRequest, "invalid_request", "client_id differs from the authenticated client", true}
		}
	} else {
		id, secret = formID, formSecret
	}
	if id == "" {
		return nil, &clientError{http.StatusUnauthorized, "invalid_client", "client_id is required", false}
	}
	c, err := b.lookupClient(ctx, id, forToken)
	var ce *cimdError
	switch {
	case errors.As(err, &ce) && ce.transient:
		return nil, &clientError{http.StatusServiceUnavailable, "temporarily_unavailable", "the client's metadata document cannot be fetched right now (" + ce.msg + "); try again", basic}
	case errors.As(err, &ce):
		return nil, &clientError{http.StatusUnauthorized, "invalid_client", "the client's metadata document cannot be used: " + ce.msg, basic}
	case err != nil:
		return nil, &clientError{http.StatusUnauthorized, "invalid_client", "the client is not registered here; register it again", basic}
	}
	if c.authMethod() == authNone {
		if basic || formHasSecret {
			return nil, &clientError{http.StatusUnauthorized, "invalid_client", "this public client has no secret", basic}
		}
		return c, nil
	}
	if !basic && !formHasSecret {
		return nil, &clientError{http.StatusUnauthorized, "invalid_client", "this confidential client must authenticate", false}
	}
	sum := sha256.Sum256([]byte(secret))
	if len(c.rec.Secret) != sha256.Size || subtle.ConstantTimeCompare(sum[:], c.rec.Secret) != 1 {
		return nil, &clientError{http.StatusUnauthorized, "invalid_client", "the client secret is wrong", basic}
	}
	return c, nil
}
