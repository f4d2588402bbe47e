// Package devissuer is a small OpenID Connect issuer that lives in the
// gateway's own process: it serves a discovery document and a JWKS with fresh
// RSA, EC and Ed25519 keys, mints signed access tokens on request, and logs
// people in: an authorization endpoint whose login page asks which identity
// to log in as (subject, email, groups), a token endpoint (authorization
// code with PKCE, refresh token) issuing ID tokens and access tokens, and a
// userinfo endpoint.
//
// It exists for two users: `mcp-oauth-proxy dev`, so a newcomer can see the
// gateway work (broker mode's login included) without owning an identity
// provider, and the tests, which need a real issuer with real keys on
// 127.0.0.1. It checks no password: anyone who reaches it may log in as
// anyone. Clients are registered in code (AddClient), never over HTTP. It
// MUST NOT be used to protect anything real.
package devissuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Key ids of the keys every Issuer holds.
const (
	KeyRS256 = "rs256-key"
	KeyES256 = "es256-key"
	KeyEdDSA = "eddsa-key"
)

// Issuer is an in-process OIDC issuer. Its zero value is not usable; call New.
type Issuer struct {
	// URL is the issuer URL (no trailing slash). Set it before serving: it
	// is the "issuer" of the discovery document and the default "iss".
	URL string

	// Extra is merged into the discovery document (e.g. endpoints a test
	// wants advertised). Nil adds nothing.
	Extra map[string]any

	// DefaultIdentity is the identity the login page proposes. A zero
	// Subject means DemoSubject with DemoEmail and no groups.
	DefaultIdentity Identity

	// GroupsOnlyInUserinfo leaves the groups claim out of ID tokens (the
	// userinfo endpoint still answers it), as providers that put groups in
	// userinfo only do.
	GroupsOnlyInUserinfo bool

	// Now is the clock of the login, token and userinfo endpoints and of
	// AccessToken. Nil means time.Now. Set it before serving.
	Now func() time.Time

	// IDTokenHook, if set, is called with the claims of every ID token
	// before it is signed and may change them (tests: a wrong issuer,
	// audience or nonce). Nil changes nothing. Set it before serving.
	IDTokenHook func(claims map[string]any)

	mu        sync.Mutex
	keys      map[string]*signingKey // by kid
	published map[string]bool        // kids served in the JWKS
	down      bool
	clients   map[string]client // by client id
	codes     map[string]*grant // authorization codes, single use
	refresh   map[string]*grant // refresh tokens, rotated on use
	disabled  map[string]bool   // subjects refused at refresh and userinfo

	tokenHits   atomic.Int64
	refreshHits atomic.Int64

	discoveryHits atomic.Int64
	jwksHits      atomic.Int64
}

type signingKey struct {
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

// New returns an issuer with freshly generated RS256, ES256 and EdDSA keys,
// all published in its JWKS.
func New() (*Issuer, error) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate rsa key: %w", err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ec key: %w", err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return &Issuer{
		keys: map[string]*signingKey{
			KeyRS256: {alg: jose.RS256, priv: rsaKey},
			KeyES256: {alg: jose.ES256, priv: ecKey},
			KeyEdDSA: {alg: jose.EdDSA, priv: edKey},
		},
		published: map[string]bool{KeyRS256: true, KeyES256: true, KeyEdDSA: true},
		clients:   map[string]client{},
		codes:     map[string]*grant{},
		refresh:   map[string]*grant{},
		disabled:  map[string]bool{},
	}, nil
}

// AddKey generates a new RSA key under kid; it is published in the JWKS only
// if publish is true (a test can publish it later with Publish).
func (is *Issuer) AddKey(kid string, publish bool) error {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generate rsa key: %w", err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.keys[kid] = &signingKey{alg: jose.RS256, priv: k}
	is.published[kid] = publish
	return nil
}

// Publish adds kid's public key to the JWKS.
func (is *Issuer) Publish(kid string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.published[kid] = true
}

// Unpublish removes kid's public key from the JWKS.
func (is *Issuer) Unpublish(kid string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.published[kid] = false
}

// SetDown makes every endpoint answer 503 (a provider outage) while down is true.
func (is *Issuer) SetDown(down bool) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.down = down
}

// DiscoveryHits and JWKSHits count the requests served (outages included).
func (is *Issuer) DiscoveryHits() int64 { return is.discoveryHits.Load() }
func (is *Issuer) JWKSHits() int64      { return is.jwksHits.Load() }

// PublicKey returns the public key of kid, or nil.
func (is *Issuer) PublicKey(kid string) crypto.PublicKey {
	is.mu.Lock()
	defer is.mu.Unlock()
	if k, ok := is.keys[kid]; ok {
		return k.priv.Public()
	}
	return nil
}

// ServeHTTP serves /.well-known/openid-configuration, /jwks, /authorize
// (the login page), /token and /userinfo.
func (is *Issuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	is.mu.Lock()
	down := is.down
	is.mu.Unlock()
	switch r.URL.Path {
	case "/authorize", "/token", "/userinfo":
		if down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		switch r.URL.Path {
		case "/authorize":
			is.serveAuthorize(w, r)
		case "/token":
			is.serveToken(w, r)
		default:
			is.serveUserinfo(w, r)
		}
	case "/.well-known/openid-configuration":
		is.discoveryHits.Add(1)
		if down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		doc := map[string]any{
			"issuer":                                         is.URL,
			"jwks_uri":                                       is.URL + "/jwks",
			"authorization_endpoint":                         is.URL + "/authorize",
			"token_endpoint":                                 is.URL + "/token",
			"userinfo_endpoint":                              is.URL + "/userinfo",
			"response_types_supported":                       []string{"code"},
			"subject_types_supported":                        []string{"public"},
			"id_token_signing_alg_values_supported":          []string{"RS256", "ES256", "EdDSA"},
			"token_endpoint_auth_methods_supported":          []string{"none", "client_secret_basic", "client_secret_post"},
			"grant_types_supported":                          []string{"authorization_code", "refresh_token"},
			"code_challenge_methods_supported":               []string{"S256"},
			"scopes_supported":                               []string{"openid", "email", "profile", "groups", "offline_access"},
			"claims_supported":                               []string{"sub", "email", "email_verified", "groups", "nonce"},
			"authorization_response_iss_parameter_supported": true,
		}
		for k, v := range is.Extra {
			doc[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	case "/jwks":
		is.jwksHits.Add(1)
		if down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		is.mu.Lock()
		var set jose.JSONWebKeySet
		for kid, k := range is.keys {
			if is.published[kid] {
				set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.priv.Public(), KeyID: kid, Algorithm: string(k.alg), Use: "sig"})
			}
		}
		is.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	default:
		http.NotFound(w, r)
	}
}

// Token is what Mint signs. Claims are the JWT claims; fields left nil or
// zero are filled with defaults by Claims' caller, never by Mint.
type Token struct {
	KeyID  string         // default KeyRS256
	Type   string         // the JOSE "typ" header; default "at+jwt"
	Header map[string]any // extra JOSE header fields (jku, crit, ...)
	Claims map[string]any
}

// Mint signs t with the key named by t.KeyID and returns the compact JWT.
func (is *Issuer) Mint(t Token) (string, error) {
	kid := t.KeyID
	if kid == "" {
		kid = KeyRS256
	}
	is.mu.Lock()
	k, ok := is.keys[kid]
	is.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("mint token: no key %q", kid)
	}
	typ := t.Type
	if typ == "" {
		typ = "at+jwt"
	}
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ)).WithHeader("kid", kid)
	for h, v := range t.Header {
		opts = opts.WithHeader(jose.HeaderKey(h), v)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.priv}, opts)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	payload, err := json.Marshal(t.Claims)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return obj.CompactSerialize()
}

// AccessToken mints an RS256 at+jwt for sub with the given audience, valid
// for ttl from now, with extra claims merged in (an extra claim set to nil is
// removed, so a test can drop exp or sub).
func (is *Issuer) AccessToken(sub, aud string, ttl time.Duration, extra map[string]any) (string, error) {
	now := is.now()
	claims := map[string]any{
		"iss": is.URL,
		"sub": sub,
		"aud": aud,
		"iat": now.Unix(),
		"exp": now.Add(ttl).Unix(),
		"jti": fmt.Sprintf("%d", now.UnixNano()),
	}
	for k, v := range extra {
		if v == nil {
			delete(claims, k)
		} else {
			claims[k] = v
		}
	}
	return is.Mint(Token{Claims: claims})
}

func (is *Issuer) now() time.Time {
	if is.Now != nil {
		return is.Now()
	}
	return time.Now()
}
