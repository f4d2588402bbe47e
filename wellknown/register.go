package wellknown

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
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
		writeError(w, http.StatusNotFound, "not_found", "registration is not enabled")
		return
	}
	if !allowMethods(w, r, http.MethodPost) {
		return
	}
	now := s.now()
	if wait, ok := s.limiter.allow(s.clientIP(r), now); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		writeError(w, http.StatusTooManyRequests, "too_many_requests", "too many registrations from this address; retry later")
		return
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		writeError(w, http.StatusBadRequest, "invalid_client_metadata", "the request body must be application/json")
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRegisterBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeError(w, http.StatusBadRequest, "invalid_client_metadata", fmt.Sprintf("the request body exceeds %d bytes", maxRegisterBody))
			return
		}
		writeError(w, http.StatusBadRequest, "invalid_client_metadata", "the request body could not be read")
		return
	}
	var md map[string]json.RawMessage
	if err := json.Unmarshal(raw, &md); err != nil || md == nil {
		writeError(w, http.StatusBadRequest, "invalid_client_metadata", "the request body must be a JSON object")
		return
	}
	var redirects []string
	if v, ok := md["redirect_uris"]; ok && string(v) != "null" {
		if err := json.Unmarshal(v, &redirects); err != nil {
			writeError(w, http.StatusBadRequest, "invalid_client_metadata", "redirect_uris must be an array of strings")
			return
		}
	}
	if err := s.checkRedirects(redirects); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_redirect_uri", err.Error())
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
		writeError(w, http.StatusInternalServerError, "server_error", "the registration could not be encoded")
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

// clientIP is the address registrations are rate limited by.
func (s *Server) clientIP(r *http.Request) string {
	if s.cfg.ClientIP != nil {
		return s.cfg.ClientIP(r)
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
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
// registered, or nil.
func (s *Server) checkRedirects(uris []string) error {
	if len(s.redirects) > 0 && len(uris) == 0 {
		return errors.New("redirect_uris is required")
	}
	for _, raw := range uris {
		u, err := parseRedirectURI(raw)
		if err != nil {
			return err
		}
		if len(s.redirects) > 0 && !s.redirectAllowed(raw, u) {
			return fmt.Errorf("redirect uri %q is not allowed by this gateway", raw)
		}
	}
	return nil
}

func (s *Server) redirectAllowed(raw string, u *url.URL) bool {
	for _, rule := range s.redirects {
		if rule.exact != "" {
			if raw == rule.exact {
				return true
			}
			continue
		}
		// Loopback pattern: any port (RFC 8252 §7.3), same scheme and host,
		// no user info, and the path (with no query) when one is given.
		if u.Scheme != "http" || u.User != nil || !strings.EqualFold(u.Hostname(), rule.host) || u.Opaque != "" {
			continue
		}
		if port := u.Port(); port != "" {
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				continue
			}
		} else if strings.HasSuffix(u.Host, ":") {
			continue
		}
		if rule.path == "" || (u.EscapedPath() == rule.path && u.RawQuery == "" && !u.ForceQuery) {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
