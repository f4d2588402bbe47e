package broker

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/redirecturi"
)

// Bounds of a registration: the client_id carries all of it, so it stays
// small enough for URLs and access tokens. Each redirect URI and the name
// are bounded, and so is the client_id they make together: it travels in
// the authorization request's URL (at most maxAuthorizeQuery, beside a
// redirect_uri and a state that may take 4.5 KiB percent-encoded), the
// consent form (maxConsentBody), and every access token (its client_id
// claim) and refresh token, beside an identity of up to 4 KiB. Ten
// redirect URIs of 512 bytes would make a client_id of 7 KiB that no
// browser login could complete, so such a registration is refused.
const (
	maxRegisterBody    = 16 << 10
	maxRedirectURIs    = 10
	maxRedirectURILen  = 512
	maxClientNameRunes = 100
	maxClientIDLen     = 2048
)

// registration is the RFC 7591 §3.2.1 answer.
type registration struct {
	ClientID                string   `json:"client_id"`
	ClientSecret            string   `json:"client_secret,omitempty"`
	ClientIDIssuedAt        int64    `json:"client_id_issued_at"`
	ClientSecretExpiresAt   *int64   `json:"client_secret_expires_at,omitempty"`
	RedirectURIs            []string `json:"redirect_uris"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	ClientName              string   `json:"client_name,omitempty"`
}

// serveRegister is dynamic client registration (RFC 7591 §3), the only
// registration in broker mode: public clients by default
// (token_endpoint_auth_method "none"), confidential ones on request.
func (b *Broker) serveRegister(w http.ResponseWriter, r *http.Request) {
	if wait, over := limited(r.Context(), b.regLimit, "broker-register:"+b.clientIP(r)); over {
		tooMany(w, wait, "too many registrations from this address; retry later")
		return
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		oauthError(w, http.StatusBadRequest, "invalid_client_metadata", "the request body must be application/json")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRegisterBody))
	if err != nil {
		why := "the request body could not be read" // cut off, or too slow (the gate's body bound)
		if _, big := errors.AsType[*http.MaxBytesError](err); big {
			why = fmt.Sprintf("the request body must be at most %d bytes", maxRegisterBody)
		}
		oauthError(w, http.StatusBadRequest, "invalid_client_metadata", why)
		return
	}
	rec, code, err := b.parseRegistration(body)
	if err != nil {
		// Clients show little more than "registration failed"; the
		// operator finds here which URI or field, and why.
		reason := err.Error()
		if len(reason) > 600 { // a field's value may be up to the body's size
			n := 600
			for n > 0 && !utf8.RuneStart(reason[n]) {
				n-- // never inside a character
			}
			reason = reason[:n] + "..."
		}
		b.log.Info("registration refused", "error", code, "reason", reason)
		oauthError(w, http.StatusBadRequest, code, err.Error())
		return
	}
	now := b.now()
	rec.Version, rec.IssuedAt = 1, now.Unix()
	var secret string
	if rec.Auth != "" {
		buf := make([]byte, 32)
		_, _ = rand.Read(buf) // never fails (crypto/rand)
		secret = base64.RawURLEncoding.EncodeToString(buf)
		sum := sha256.Sum256([]byte(secret))
		rec.Secret = sum[:]
	}
	id, err := b.seal.seal(purposeClient, time.Time{}, rec)
	if err != nil {
		b.log.Error("register client", "error", err)
		oauthError(w, http.StatusInternalServerError, "server_error", "the registration could not be made")
		return
	}
	if len(id) > maxClientIDLen {
		desc := fmt.Sprintf("the redirect_uris and client_name are too long together: the client_id, which carries them, "+
			"would be %d characters, and at most %d can be used; register fewer or shorter redirect URIs", len(id), maxClientIDLen)
		b.log.Info("registration refused", "error", "invalid_client_metadata", "reason", desc)
		oauthError(w, http.StatusBadRequest, "invalid_client_metadata", desc)
		return
	}
	c := &client{id: id, rec: *rec}
	reg := registration{
		ClientID:                id,
		ClientSecret:            secret,
		ClientIDIssuedAt:        rec.IssuedAt,
		RedirectURIs:            rec.Redirects,
		TokenEndpointAuthMethod: c.authMethod(),
		GrantTypes:              []string{grantCode, grantRefresh},
		ResponseTypes:           []string{"code"},
		ClientName:              rec.Name,
	}
	if rec.NoRefresh {
		reg.GrantTypes = []string{grantCode}
	}
	if secret != "" {
		never := int64(0) // RFC 7591 §3.2.1: 0 means it does not expire
		reg.ClientSecretExpiresAt = &never
	}
	b.log.Info("client registered", "client", c.key(), "client_name", rec.Name,
		"redirect_uris", rec.Redirects, "token_endpoint_auth_method", reg.TokenEndpointAuthMethod)
	writeJSON(w, http.StatusCreated, reg)
}

// parseRegistration validates client metadata (RFC 7591 §2) and returns the
// record to seal, or the RFC 7591 §3.2.2 error code and why.
func (b *Broker) parseRegistration(body []byte) (*clientRecord, string, error) {
	const bad = "invalid_client_metadata"
	var md map[string]json.RawMessage
	if err := json.Unmarshal(body, &md); err != nil || md == nil {
		return nil, bad, errors.New("the request body must be a JSON object")
	}
	rec := &clientRecord{}
	redirects, err := b.redirectList(md["redirect_uris"])
	if err != nil {
		return nil, "invalid_redirect_uri", err
	}
	for _, u := range redirects {
		if !b.redirectAllowed(u) {
			return nil, "invalid_redirect_uri", fmt.Errorf("redirect uri %q is not allowed by this gateway", u)
		}
	}
	rec.Redirects = redirects

	method, err := authMethodOf(md)
	if err != nil {
		return nil, bad, err
	}
	switch method {
	case "", authNone:
	case authSecretBasic, authSecretPost:
		rec.Auth = method
	default:
		return nil, bad, fmt.Errorf("token_endpoint_auth_method %q is not supported (none, client_secret_basic, client_secret_post)", method)
	}
	if err := parseClientFields(md, rec); err != nil {
		return nil, bad, err
	}
	return rec, "", nil
}

// redirectList validates redirect_uris (RFC 7591 §2): a non-empty array of
// at most 10 strings, each of a shape redirecturi.Check allows (with
// REGISTER_REDIRECT_SCHEMES) and at most 512 bytes, returned without
// duplicates. The same rules hold for registrations and for Client ID
// Metadata Documents.
func (b *Broker) redirectList(raw json.RawMessage) ([]string, error) {
	var redirects []string
	if err := strictStrings(raw, &redirects); err != nil || len(redirects) == 0 {
		return nil, errors.New("redirect_uris must be a non-empty array of strings")
	}
	if len(redirects) > maxRedirectURIs {
		return nil, fmt.Errorf("at most %d redirect_uris", maxRedirectURIs)
	}
	var out []string
	for _, u := range redirects {
		if len(u) > maxRedirectURILen {
			return nil, fmt.Errorf("a redirect uri is longer than %d bytes", maxRedirectURILen)
		}
		if err := redirecturi.Check(u, b.schemes); err != nil {
			return nil, err
		}
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out, nil
}

// authMethodOf returns token_endpoint_auth_method, "" when absent or null.
func authMethodOf(md map[string]json.RawMessage) (string, error) {
	var method string
	if raw, ok := md["token_endpoint_auth_method"]; ok && string(raw) != "null" {
		if json.Unmarshal(raw, &method) != nil {
			return "", errors.New("token_endpoint_auth_method must be a string")
		}
	}
	return method, nil
}

// parseClientFields applies grant_types, response_types and client_name
// (RFC 7591 §2) to rec, for registrations and metadata documents alike.
func parseClientFields(md map[string]json.RawMessage, rec *clientRecord) error {
	if raw, ok := md["grant_types"]; ok && string(raw) != "null" {
		var grants []string
		if err := strictStrings(raw, &grants); err != nil {
			return errors.New("grant_types must be an array of strings")
		}
		for _, g := range grants {
			if g != grantCode && g != grantRefresh {
				return fmt.Errorf("grant type %q is not supported (authorization_code, refresh_token)", g)
			}
		}
		if !slices.Contains(grants, grantCode) {
			return errors.New("grant_types must include authorization_code")
		}
		rec.NoRefresh = !slices.Contains(grants, grantRefresh)
	}
	if raw, ok := md["response_types"]; ok && string(raw) != "null" {
		var types []string
		if err := strictStrings(raw, &types); err != nil {
			return errors.New("response_types must be an array of strings")
		}
		for _, t := range types {
			if t != "code" {
				return fmt.Errorf("response type %q is not supported (code)", t)
			}
		}
	}
	if raw, ok := md["client_name"]; ok && string(raw) != "null" {
		var name string
		if json.Unmarshal(raw, &name) != nil {
			return errors.New("client_name must be a string")
		}
		rec.Name = cleanName(name)
	}
	return nil
}

// strictStrings decodes an array of strings; absent or null fails.
func strictStrings(raw json.RawMessage, out *[]string) error {
	if len(raw) == 0 || string(raw) == "null" {
		return errors.New("absent")
	}
	return json.Unmarshal(raw, out)
}

// cleanName makes a client-chosen name fit for a consent page and a log
// line: control and format characters (bidirectional overrides included)
// become spaces, runs of spaces one, and it is cut to 100 characters.
func cleanName(s string) string { return cleanText(s, maxClientNameRunes) }

// cleanText is s fit for a page: control and format characters
// (bidirectional overrides included) become spaces, runs of spaces one,
// and it is cut to max characters.
func cleanText(s string, max int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	var sb strings.Builder
	n := 0
	space := false
	for _, c := range strings.TrimSpace(s) {
		if unicode.IsControl(c) || unicode.Is(unicode.Cf, c) || unicode.IsSpace(c) {
			space = true
			continue
		}
		if space && sb.Len() > 0 {
			sb.WriteByte(' ')
			n++
		}
		space = false
		if n >= max {
			break
		}
		sb.WriteRune(c)
		n++
	}
	return sb.String()
}
