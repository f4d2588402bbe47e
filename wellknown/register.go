package wellknown

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/respond"
)

// maxRegisterBody bounds a registration request's body.
const maxRegisterBody = 64 << 10

// Client authentication methods (RFC 7591 §2).
const (
	authSecretBasic = "client_secret_basic"
	authSecretPost  = "client_secret_post"
)

// registration is the RFC 7591 §3.2.1 answer.
type registration struct {
	ClientID                string   `json:"client_id"`
	ClientSecret            string   `json:"client_secret"`
	ClientIDIssuedAt        int64    `json:"client_id_issued_at"`
	ClientSecretExpiresAt   int64    `json:"client_secret_expires_at"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	RedirectURIs            []string `json:"redirect_uris,omitempty"`
	ClientName              string   `json:"client_name,omitempty"`
	Scope                   string   `json:"scope,omitempty"`
}

// serveRegister answers RFC 7591 §3.1 registration with the static client.
func (s *Server) serveRegister(w http.ResponseWriter, r *http.Request) {
	if !s.registering {
		respond.Error(w, http.StatusNotFound, "not_found", "registration is not enabled")
		return
	}
	if !allowMethods(w, r, http.MethodPost) {
		return
	}
	now := s.now()
	if s.limiter != nil {
		if ok, wait := s.limiter.Allow(r.Context(), s.cfg.ClientKey(r)); !ok {
			w.Header().Set("Retry-After", respond.RetryAfter(wait))
			respond.Error(w, http.StatusTooManyRequests, "too_many_requests", "too many registrations from this address; retry later")
			return
		}
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		respond.Error(w, http.StatusBadRequest, "invalid_client_metadata", "the request body must be application/json")
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRegisterBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			respond.Error(w, http.StatusBadRequest, "invalid_client_metadata", fmt.Sprintf("the request body exceeds %d bytes", maxRegisterBody))
			return
		}
		respond.Error(w, http.StatusBadRequest, "invalid_client_metadata", "the request body could not be read")
		return
	}
	var md map[string]json.RawMessage
	if err := json.Unmarshal(raw, &md); err != nil || md == nil {
		respond.Error(w, http.StatusBadRequest, "invalid_client_metadata", "the request body must be a JSON object")
		return
	}
	var redirects []string
	if v, ok := md["redirect_uris"]; ok && string(v) != "null" {
		if err := json.Unmarshal(v, &redirects); err != nil {
			respond.Error(w, http.StatusBadRequest, "invalid_client_metadata", "redirect_uris must be an array of strings")
			return
		}
	}
	if err := s.checkRedirects(redirects); err != nil {
		respond.Error(w, http.StatusBadRequest, "invalid_redirect_uri", err.Error())
		return
	}
	pm, err := s.cfg.Metadata.Metadata()
	if err != nil {
		// Without the provider's document the auth method would be a guess.
		s.logger.Debug("registration without authorization server metadata", "error", err)
		unavailable(w)
		return
	}
	var name, asked string
	_ = json.Unmarshal(md["client_name"], &name) // a string or nothing
	_ = json.Unmarshal(md["token_endpoint_auth_method"], &asked)

	reg := registration{
		ClientID:                s.cfg.StaticClientID,
		ClientSecret:            s.cfg.StaticClientSecret,
		ClientIDIssuedAt:        now.Unix(),
		ClientSecretExpiresAt:   0, // never
		TokenEndpointAuthMethod: authMethod(pm, asked),
		GrantTypes:              []string{"authorization_code", "refresh_token"},
		ResponseTypes:           []string{"code"},
		RedirectURIs:            redirects,
		ClientName:              name,
		Scope:                   strings.Join(s.cfg.Scopes, " "),
	}
	body, err := json.Marshal(reg)
	if err != nil {
		s.logger.Error("encode registration", "error", err)
		respond.Error(w, http.StatusInternalServerError, "server_error", "the registration could not be encoded")
		return
	}
	s.logger.Info("client registered", "client_name", truncate(name, 200), "redirect_uris", redirects,
		"token_endpoint_auth_method", reg.TokenEndpointAuthMethod)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store") // RFC 7591 §3.2.1: the answer holds a secret
	h.Set("Pragma", "no-cache")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(body)
}

// authMethod picks the token endpoint auth method the static client's secret
// is used with, among those the provider advertises (RFC 8414 §2: absent
// means client_secret_basic). Never "none": a secret paired with "none"
// makes clients send no secret and the token request fail.
func authMethod(pm map[string]json.RawMessage, asked string) string {
	supported := []string{authSecretBasic}
	if v, ok := pm["token_endpoint_auth_methods_supported"]; ok {
		var list []string
		if err := json.Unmarshal(v, &list); err == nil && list != nil {
			supported = list
		}
	}
	has := func(m string) bool {
		for _, s := range supported {
			if s == m {
				return true
			}
		}
		return false
	}
	switch {
	case asked == authSecretPost && has(authSecretPost):
		return authSecretPost
	case has(authSecretBasic):
		return authSecretBasic
	default:
		return authSecretPost
	}
}

// redirectRule is one REGISTER_REDIRECT_URIS entry.
type redirectRule struct {
	exact string // an exact URI, or "" for a loopback pattern
	host  string // loopback pattern: host name or address, without brackets
	path  string // loopback pattern: required path, "" for any
}

// CheckRedirectURI reports why one REGISTER_REDIRECT_URIS entry is neither
// an absolute URI nor one of the loopback patterns of Config.RedirectURIs,
// or nil: the caller validates the setting with it, naming the variable.
func CheckRedirectURI(entry string) error {
	_, err := parseRedirectRule(strings.TrimSpace(entry))
	return err
}

func parseRedirectRules(entries []string) ([]redirectRule, error) {
	var rules []redirectRule
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
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
			return redirectRule{}, fmt.Errorf("redirect uri pattern %q: only a path may follow the port", e)
		}
		return redirectRule{host: p.host, path: rest}, nil
	}
	if strings.Contains(e, "*") {
		return redirectRule{}, fmt.Errorf("redirect uri pattern %q: only http://127.0.0.1:*, http://localhost:* and http://[::1]:* take a wildcard", e)
	}
	if _, err := parseRedirectURI(e); err != nil {
		return redirectRule{}, err
	}
	return redirectRule{exact: e}, nil
}

// parseRedirectURI checks a redirection endpoint's shape: absolute, no
// fragment (RFC 6749 §3.1.2).
func parseRedirectURI(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("redirect uri %q: %w", raw, err)
	}
	if !u.IsAbs() || u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, fmt.Errorf("redirect uri %q: must be an absolute URI without a fragment", raw)
	}
	return u, nil
}

// checkRedirects returns why the requested redirect URIs cannot be
// registered, or nil. With REGISTER_REDIRECT_URIS each must match one of its
// rules; without, each must be safe to send a user's browser to
// (safeRedirect).
func (s *Server) checkRedirects(uris []string) error {
	if len(s.redirects) > 0 && len(uris) == 0 {
		return errors.New("redirect_uris is required")
	}
	for _, raw := range uris {
		u, err := parseRedirectURI(raw)
		if err != nil {
			return err
		}
		if len(s.redirects) > 0 {
			if !s.redirectAllowed(raw, u) {
				return fmt.Errorf("redirect uri %q is not allowed by this gateway", raw)
			}
			continue
		}
		if err := safeRedirect(raw, u); err != nil {
			return err
		}
	}
	return nil
}

// safeRedirect accepts the redirect URIs of native and web OAuth clients
// (RFC 8252 §7, RFC 9700 §4.1): https with a host; http only on a loopback
// host, 127.0.0.1, [::1] or localhost (RFC 8252 §7.3; MCP Inspector uses
// localhost), with any port; a private-use scheme in reverse domain form,
// so one with a dot (RFC 8252 §7.1: com.example.app:/cb). Anything else,
// javascript:, data:, file:, or http to another host, is refused: the
// provider would send the user there with an authorization code. No URI
// may carry user information (https://claude.ai@evil.example).
func safeRedirect(raw string, u *url.URL) error {
	if u.User != nil {
		return fmt.Errorf("redirect uri %q: must not contain user information", raw)
	}
	switch {
	case u.Scheme == "https":
		if u.Host == "" || u.Opaque != "" {
			return fmt.Errorf("redirect uri %q: an https redirect uri must name a host", raw)
		}
		return nil
	case u.Scheme == "http":
		for _, host := range [...]string{"127.0.0.1", "::1", "localhost"} {
			if loopback(u, host) {
				return nil
			}
		}
		return fmt.Errorf("redirect uri %q: http is allowed only on a loopback host: 127.0.0.1, [::1] or localhost (RFC 8252 §7.3)", raw)
	case strings.Contains(u.Scheme, "."):
		return nil
	}
	return fmt.Errorf("redirect uri %q: scheme %q is not allowed: use https, http on a loopback host, or a private-use scheme in reverse domain form such as com.example.app (RFC 8252 §7.1); REGISTER_REDIRECT_URIS can list others", raw, u.Scheme)
}

func (s *Server) redirectAllowed(raw string, u *url.URL) bool {
	for _, rule := range s.redirects {
		if rule.exact != "" {
			if raw == rule.exact {
				return true
			}
			continue
		}
		// Loopback pattern: the path (with no query) when one is given.
		if !loopback(u, rule.host) {
			continue
		}
		if rule.path == "" || (u.EscapedPath() == rule.path && u.RawQuery == "" && !u.ForceQuery) {
			return true
		}
	}
	return false
}

// loopback reports whether u is an http URI on host (a name or an address
// without brackets) with any valid port (RFC 8252 §7.3) and no user
// information. Host names compare with ASCII letters folded only.
func loopback(u *url.URL, host string) bool {
	if u.Scheme != "http" || u.User != nil || u.Opaque != "" || lowerASCII(u.Hostname()) != host {
		return false
	}
	if port := u.Port(); port != "" {
		n, err := strconv.Atoi(port)
		return err == nil && n >= 1 && n <= 65535
	}
	return !strings.HasSuffix(u.Host, ":")
}

// lowerASCII folds s's ASCII letters to lower case, and nothing else:
// strings.EqualFold would take "localhoſt" (U+017F LONG S) for localhost.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
