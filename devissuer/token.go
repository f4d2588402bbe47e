package devissuer

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Token lifetimes of the token endpoint.
const (
	tokenTTL   = time.Hour
	refreshTTL = 30 * 24 * time.Hour
)

// serveToken is the token endpoint (RFC 6749 §3.2): authorization_code
// with PKCE (RFC 7636 §4.6) and refresh_token (rotated on every use).
func (is *Issuer) serveToken(w http.ResponseWriter, r *http.Request) {
	is.tokenHits.Add(1)
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		tokenError(w, http.StatusMethodNotAllowed, "invalid_request")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		tokenError(w, http.StatusBadRequest, "invalid_request")
		return
	}
	f := r.PostForm
	clientID, ok := is.authenticate(r)
	if !ok {
		tokenError(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	now := is.now()
	var g *grant
	switch f.Get("grant_type") {
	case "authorization_code":
		is.mu.Lock()
		g = is.codes[f.Get("code")]
		delete(is.codes, f.Get("code")) // single use, even when refused
		is.mu.Unlock()
		if g == nil || now.After(g.expires) || g.clientID != clientID || g.redirect != f.Get("redirect_uri") {
			tokenError(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		if g.challenge != "" {
			sum := sha256.Sum256([]byte(f.Get("code_verifier")))
			if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(g.challenge)) != 1 {
				tokenError(w, http.StatusBadRequest, "invalid_grant")
				return
			}
		}
	case "refresh_token":
		is.refreshHits.Add(1)
		is.mu.Lock()
		g = is.refresh[f.Get("refresh_token")]
		delete(is.refresh, f.Get("refresh_token")) // rotated
		disabled := g != nil && is.disabled[g.id.Subject]
		is.mu.Unlock()
		if g == nil || now.After(g.expires) || g.clientID != clientID || disabled {
			tokenError(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		g = &grant{clientID: g.clientID, scope: g.scope, id: g.id, authTime: g.authTime} // no nonce after a refresh
	default:
		tokenError(w, http.StatusBadRequest, "unsupported_grant_type")
		return
	}
	resp, err := is.issue(g, now)
	if err != nil {
		tokenError(w, http.StatusInternalServerError, "server_error")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(resp)
}

// authenticate checks the client's credentials (RFC 6749 §2.3.1: HTTP Basic
// or the form; a public client sends its client_id alone).
func (is *Issuer) authenticate(r *http.Request) (string, bool) {
	id, secret, basic := r.BasicAuth()
	if basic {
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		secret, err2 = url.QueryUnescape(secret)
		if err1 != nil || err2 != nil {
			return "", false
		}
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	is.mu.Lock()
	c, ok := is.clients[id]
	is.mu.Unlock()
	if !ok || subtle.ConstantTimeCompare([]byte(c.secret), []byte(secret)) != 1 {
		return "", false
	}
	return id, true
}

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	IDToken      string `json:"id_token,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

// issue mints the tokens of g: an access token, an ID token and, when
// offline_access was granted, a new refresh token.
func (is *Issuer) issue(g *grant, now time.Time) (*tokenResponse, error) {
	common := map[string]any{
		"iss": is.URL, "sub": g.id.Subject, "iat": now.Unix(), "exp": now.Add(tokenTTL).Unix(),
	}
	claims := func(extra map[string]any) map[string]any {
		c := map[string]any{}
		for k, v := range common {
			c[k] = v
		}
		if g.id.Email != "" {
			c["email"] = g.id.Email
			c["email_verified"] = true
		}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	at, err := is.Mint(Token{Claims: claims(map[string]any{
		"aud": g.clientID, "client_id": g.clientID, "scope": g.scope, "jti": rand.Text(), "groups": g.id.Groups,
	})})
	if err != nil {
		return nil, err
	}
	idc := claims(map[string]any{"aud": g.clientID, "azp": g.clientID, "auth_time": g.authTime.Unix()})
	if g.nonce != "" {
		idc["nonce"] = g.nonce
	}
	if !is.GroupsOnlyInUserinfo && len(g.id.Groups) > 0 {
		idc["groups"] = g.id.Groups
	}
	if is.IDTokenHook != nil {
		is.IDTokenHook(idc)
	}
	idt, err := is.Mint(Token{Type: "JWT", Claims: idc})
	if err != nil {
		return nil, err
	}
	resp := &tokenResponse{AccessToken: at, TokenType: "Bearer", ExpiresIn: int64(tokenTTL / time.Second), IDToken: idt, Scope: g.scope}
	if slices.Contains(strings.Fields(g.scope), "offline_access") {
		resp.RefreshToken = rand.Text()
		next := *g
		next.expires = now.Add(refreshTTL)
		is.mu.Lock()
		for k, old := range is.refresh { // drop expired refresh tokens
			if now.After(old.expires) {
				delete(is.refresh, k)
			}
		}
		is.refresh[resp.RefreshToken] = &next
		is.mu.Unlock()
	}
	return resp, nil
}

// serveUserinfo answers the OpenID Connect userinfo endpoint (Core 1.0
// §5.3) for a bearer access token this issuer minted.
func (is *Issuer) serveUserinfo(w http.ResponseWriter, r *http.Request) {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer`)
		tokenError(w, http.StatusUnauthorized, "invalid_token")
		return
	}
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		tokenError(w, http.StatusUnauthorized, "invalid_token")
		return
	}
	payload, err := jws.Verify(is.PublicKey(KeyRS256))
	if err != nil {
		tokenError(w, http.StatusUnauthorized, "invalid_token")
		return
	}
	var c struct {
		Iss    string   `json:"iss"`
		Sub    string   `json:"sub"`
		Exp    int64    `json:"exp"`
		Email  string   `json:"email"`
		Groups []string `json:"groups"`
	}
	if json.Unmarshal(payload, &c) != nil || c.Iss != is.URL || c.Sub == "" || is.now().Unix() >= c.Exp {
		tokenError(w, http.StatusUnauthorized, "invalid_token")
		return
	}
	is.mu.Lock()
	disabled := is.disabled[c.Sub]
	is.mu.Unlock()
	if disabled {
		tokenError(w, http.StatusUnauthorized, "invalid_token")
		return
	}
	out := map[string]any{"sub": c.Sub}
	if c.Email != "" {
		out["email"], out["email_verified"] = c.Email, true
	}
	if c.Groups != nil {
		out["groups"] = c.Groups
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(out)
}

func tokenError(w http.ResponseWriter, status int, code string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code})
}
