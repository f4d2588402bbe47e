package wellknown

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/redirecturi"
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
		s.logger.Info("registration refused", "error", "invalid_redirect_uri", "reason", truncate(err.Error(), 600))
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
		Scope:                   strings.Join(grantable(s.cfg.Scopes, pm), " "), // as the metadata says
	}
	body, err := json.Marshal(reg)
	if err != nil {
		s.logger.Error("encode registration", "error", err)
		respond.Error(w, http.StatusInternalServerError, "server_error", "the registration could not be encoded")
		return
	}
	s.logger.Info("client registered", "client_name", truncate(name, 200), "redirect_uris", redirects,
		"token_endpoint_auth_method", reg.TokenEndpointAuthMethod)
	w.Header().Set("Pragma", "no-cache") // RFC 7591 §3.2.1: the answer holds a secret, so no-store too
	respond.JSON(w, http.StatusCreated, string(body))
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

// checkRedirects returns why the requested redirect URIs cannot be
// registered, or nil. With REGISTER_REDIRECT_URIS each must be on the
// list; without, each must pass redirecturi.Check. In facade mode the list
// replaces Check rather than narrowing it, as broker mode's does: the
// gateway only hands out the static client, and the provider's own
// redirect-URI list for that client stays the final boundary, so an
// operator may list a client whose URI Check refuses (a private-use scheme
// without a dot, such as Cursor's cursor://).
func (s *Server) checkRedirects(uris []string) error {
	if !s.redirects.Empty() && len(uris) == 0 {
		return errors.New("redirect_uris is required")
	}
	for _, raw := range uris {
		if _, err := redirecturi.Parse(raw); err != nil {
			return err
		}
		if !s.redirects.Empty() {
			if !s.redirects.Allows(raw) {
				return fmt.Errorf("redirect uri %q is not allowed by this gateway", raw)
			}
			continue
		}
		if err := redirecturi.Check(raw, s.cfg.RedirectSchemes); err != nil {
			return fmt.Errorf("%w; REGISTER_REDIRECT_URIS can list others", err)
		}
	}
	return nil
}

// truncate cuts s to at most n bytes, never inside a character, and marks
// the cut with "...".
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}
