package broker

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// maxUserinfoBody bounds a userinfo answer.
const maxUserinfoBody = 1 << 20

// endpoints are what the broker needs of the provider's discovery document
// (OpenID Connect Discovery 1.0 §3).
type endpoints struct {
	issuer, auth, token, userinfo string
	offline                       bool // scopes_supported lists offline_access
	issParam                      bool // authorization_response_iss_parameter_supported (RFC 9207 §3)
	basic                         bool // the token endpoint takes client_secret_basic
}

// endpoints reads the provider's last good discovery document.
func (b *Broker) endpoints() (*endpoints, error) {
	m, err := b.upstream.Metadata()
	if err != nil {
		return nil, fmt.Errorf("provider metadata: %w", err)
	}
	var e endpoints
	for _, f := range []struct {
		name     string
		dst      *string
		required bool
	}{
		{"issuer", &e.issuer, true},
		{"authorization_endpoint", &e.auth, true},
		{"token_endpoint", &e.token, true},
		{"userinfo_endpoint", &e.userinfo, false},
	} {
		raw, ok := m[f.name]
		if !ok && !f.required {
			continue
		}
		if json.Unmarshal(raw, f.dst) != nil || !isHTTPURL(*f.dst) {
			if !f.required {
				*f.dst = ""
				continue
			}
			return nil, fmt.Errorf("provider metadata: %s is not an absolute http(s) URL", f.name)
		}
	}
	var scopes, methods []string
	_ = json.Unmarshal(m["scopes_supported"], &scopes) // absent or malformed: none known
	e.offline = slices.Contains(scopes, "offline_access")
	_ = json.Unmarshal(m["authorization_response_iss_parameter_supported"], &e.issParam)
	if err := json.Unmarshal(m["token_endpoint_auth_methods_supported"], &methods); err != nil || methods == nil {
		methods = []string{"client_secret_basic"} // RFC 8414 §2: the default
	}
	e.basic = slices.Contains(methods, "client_secret_basic")
	return &e, nil
}

func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

// oauth2Config is the gateway's own client at the provider.
func (b *Broker) oauth2Config(e *endpoints) *oauth2.Config {
	scopes := slices.Clone(b.upScopes)
	if e.offline && !slices.Contains(scopes, "offline_access") {
		scopes = append(scopes, "offline_access")
	}
	style := oauth2.AuthStyleInParams
	if b.secret != "" && e.basic {
		style = oauth2.AuthStyleInHeader
	}
	return &oauth2.Config{
		ClientID:     b.clientID,
		ClientSecret: b.secret,
		Endpoint:     oauth2.Endpoint{AuthURL: e.auth, TokenURL: e.token, AuthStyle: style},
		RedirectURL:  b.issuer + CallbackPath,
		Scopes:       scopes,
	}
}

// authParams are the extra parameters of the upstream authorization
// request.
func (b *Broker) authParams(e *endpoints) map[string]string {
	if b.upParams != nil {
		return b.upParams
	}
	if strings.TrimSuffix(e.issuer, "/") == "https://accounts.google.com" {
		// Google ignores offline_access; it gives a refresh token for
		// access_type=offline.
		return map[string]string{"access_type": "offline"}
	}
	return nil
}

// upstreamCtx carries the broker's HTTP client to x/oauth2 and go-oidc,
// which take it from the context (their API, not a choice of ours).
func (b *Broker) upstreamCtx(ctx context.Context) context.Context {
	return oidc.ClientContext(context.WithValue(ctx, oauth2.HTTPClient, b.httpClient), b.httpClient)
}

// upstreamLogin is what the provider said at a login or refresh.
type upstreamLogin struct {
	id      identity
	refresh string // the provider's refresh token, "" if it gave none
}

// errRefused: the provider refused (a 4xx answer to the token or userinfo
// request, e.g. invalid_grant for a disabled user); any other failure is
// taken as transient.
var errRefused = errors.New("the provider refused")

// classify names a token endpoint failure by its status and OAuth error
// code only: the provider's body is not logged.
func classify(op string, err error) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response == nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if s := re.Response.StatusCode; s >= 400 && s < 500 {
		return fmt.Errorf("%s: %w: status %d %s", op, errRefused, s, sanitize(re.ErrorCode))
	}
	return fmt.Errorf("%s: status %d %s", op, re.Response.StatusCode, sanitize(re.ErrorCode))
}

// exchange redeems the provider's code (PKCE verifier of the flow) and
// reads the user from the verified ID token: signature (the provider's
// JWKS), issuer, audience = the gateway's client id, expiry and the flow's
// nonce (OpenID Connect Core 1.0 §3.1.3.7), falling back to userinfo for
// groups the ID token does not carry.
func (b *Broker) exchange(ctx context.Context, e *endpoints, code string, f *flowRecord) (*upstreamLogin, error) {
	ctx = b.upstreamCtx(ctx)
	tok, err := b.oauth2Config(e).Exchange(ctx, code, oauth2.VerifierOption(f.Verifier))
	if err != nil {
		return nil, classify("exchange code", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, errors.New("exchange code: the provider sent no ID token (is openid among OIDC_SCOPES?)")
	}
	var id identity
	if _, err := b.readIDToken(ctx, e, raw, f.Nonce, &id); err != nil {
		return nil, err
	}
	return b.completeIdentity(ctx, e, tok, id)
}

// readIDToken verifies an ID token and reads its claims into id, and
// reports whether it carried the groups claim. A non-empty nonce must
// match (a refresh's ID token has none to check); a subject already in id
// must not change (Core §12.2).
func (b *Broker) readIDToken(ctx context.Context, e *endpoints, raw, nonce string, id *identity) (groupsSeen bool, err error) {
	v := oidc.NewVerifier(e.issuer, b.upstream.KeySet(), &oidc.Config{
		ClientID:             b.clientID,
		SupportedSigningAlgs: []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"},
		Now:                  b.now,
	})
	idt, err := v.Verify(ctx, raw)
	if err != nil {
		return false, fmt.Errorf("verify id token: %w", err)
	}
	if nonce != "" && subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return false, errors.New("verify id token: nonce does not match the login")
	}
	var c map[string]json.RawMessage
	if err := idt.Claims(&c); err != nil {
		return false, fmt.Errorf("verify id token: %w", err)
	}
	before := id.Sub
	seen, err := readClaims(c, b.groupsClaim, id)
	switch {
	case err != nil:
		return false, fmt.Errorf("verify id token: %w", err)
	case id.Sub == "":
		return false, errors.New("verify id token: no sub")
	case before != "" && id.Sub != before:
		return false, errors.New("verify id token: the subject changed")
	}
	return seen, nil
}

// completeIdentity asks userinfo (Core §5.3) for what the ID token left
// out (groups, email) when the provider has a userinfo endpoint.
func (b *Broker) completeIdentity(ctx context.Context, e *endpoints, tok *oauth2.Token, id identity) (*upstreamLogin, error) {
	if (id.Groups == nil || id.Email == "") && e.userinfo != "" && tok.AccessToken != "" {
		c, err := b.userinfo(ctx, e, tok.AccessToken)
		if err != nil {
			return nil, err
		}
		sub := id.Sub
		if _, err := readClaims(c, b.groupsClaim, &id); err != nil {
			return nil, fmt.Errorf("userinfo: %w", err)
		}
		if id.Sub != sub { // Core §5.3.2: sub MUST match the ID token's
			return nil, errors.New("userinfo: sub differs from the ID token's")
		}
	}
	if err := id.checkSize(); err != nil {
		return nil, err
	}
	return &upstreamLogin{id: id, refresh: tok.RefreshToken}, nil
}

// refresh refreshes at the provider (RFC 6749 §6) with its refresh token
// and reads the user again (Core §12.2: a new ID token must name the same
// subject). A refusal (errRefused) means the user lost access there.
func (b *Broker) refresh(ctx context.Context, e *endpoints, refreshToken string, prev identity) (*upstreamLogin, error) {
	ctx = b.upstreamCtx(ctx)
	tok, err := b.oauth2Config(e).TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		return nil, classify("refresh at the provider", err)
	}
	id := identity{Sub: prev.Sub, Email: prev.Email, Unverified: prev.Unverified, Groups: prev.Groups}
	seen := false
	if raw, _ := tok.Extra("id_token").(string); raw != "" {
		if seen, err = b.readIDToken(ctx, e, raw, "", &id); err != nil {
			return nil, err
		}
	}
	if !seen && e.userinfo != "" {
		id.Groups = nil // userinfo tells afresh
	}
	login, err := b.completeIdentity(ctx, e, tok, id)
	if err != nil {
		return nil, err
	}
	if login.refresh == "" { // x/oauth2 keeps the old one when none is sent
		login.refresh = refreshToken
	}
	return login, nil
}

// userinfo fetches the userinfo endpoint with the provider's access token.
func (b *Broker) userinfo(ctx context.Context, e *endpoints, accessToken string) (map[string]json.RawMessage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.userinfo, nil)
	if err != nil {
		return nil, fmt.Errorf("userinfo: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Accept", "application/json")
	resp, err := b.httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("userinfo: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		return nil, fmt.Errorf("userinfo: %w: status %d", errRefused, resp.StatusCode)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("userinfo: status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxUserinfoBody+1))
	if err != nil {
		return nil, fmt.Errorf("userinfo: %w", err)
	}
	if len(body) > maxUserinfoBody {
		return nil, errors.New("userinfo: answer larger than 1 MiB")
	}
	var c map[string]json.RawMessage
	if err := json.Unmarshal(body, &c); err != nil || c == nil {
		return nil, errors.New("userinfo: not a JSON object (a signed userinfo answer is not supported)")
	}
	return c, nil
}
