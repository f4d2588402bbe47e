package broker

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/tokencache"
)

// maxTokenSize bounds the tokens Verify looks at.
const maxTokenSize = 16 << 10

// ReasonRevoked is the provider.TokenError reason of a broker token that
// was revoked (RFC 7009), alone or with its family.
const ReasonRevoked = "revoked"

// ErrNotBrokerToken is returned by Verify for a token that is not the
// broker's: no key of the broker's signed it and its iss is not the
// broker's issuer. Main's verifier then asks the provider (when provider
// tokens are accepted) or rejects it.
var ErrNotBrokerToken = errors.New("broker: not a token of this authorization server")

// atClaims are the claims of the broker's access tokens (RFC 9068 §2.2).
type atClaims struct {
	Iss           string   `json:"iss"`
	Sub           string   `json:"sub"`
	Aud           string   `json:"aud"`
	Exp           int64    `json:"exp"`
	Iat           int64    `json:"iat"`
	Jti           string   `json:"jti"`
	ClientID      string   `json:"client_id"`
	Scope         string   `json:"scope,omitempty"`
	AuthTime      int64    `json:"auth_time,omitempty"`
	Email         string   `json:"email,omitempty"`
	EmailVerified *bool    `json:"email_verified,omitempty"`
	Groups        []string `json:"groups,omitempty"`
	Sid           string   `json:"sid"` // the refresh-token family: revoking it revokes this token too
}

// mintAccess signs an access token (RFC 9068) for user, valid for
// AccessTokenTTL but never past the session's end.
func (b *Broker) mintAccess(clientID string, user *identity, scopes []string, family string, authTime int64, now, end time.Time) (string, time.Time, error) {
	exp := now.Add(b.accessTTL)
	if exp.After(end) {
		exp = end
	}
	c := atClaims{
		Iss: b.issuer, Sub: user.Sub, Aud: b.resource, Exp: exp.Unix(), Iat: now.Unix(),
		Jti: rand.Text(), ClientID: clientID, Scope: strings.Join(scopes, " "), AuthTime: authTime,
		Email: user.Email, Groups: user.Groups, Sid: family,
	}
	if user.Email != "" {
		v := !user.Unverified
		c.EmailVerified = &v
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", time.Time{}, err
	}
	k := &b.keys.sign[0]
	input := k.header + "." + base64.RawURLEncoding.EncodeToString(payload)
	sig := ed25519.Sign(k.priv, []byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), exp, nil
}

// Verify checks one of the broker's access tokens, with no network: the
// signature (the current or the previous key), iss, aud = RESOURCE_URL,
// exp and iat (with ClockSkew), then revocation of its jti and of its
// family in the store, on every call, unless Config.CallerChecksRevocation
// leaves that to the caller (the identity then names the keys to check).
// It returns ErrNotBrokerToken for a token that is not the broker's, a
// *provider.TokenError for one that is not acceptable (Reason
// ReasonRevoked when revoked), and an error that is provider.ErrNotReady
// (the gate answers 503) when the store cannot say.
// A verified token is remembered (by its SHA-256) until VerifyCacheTTL or
// its exp; the returned *provider.Identity may be shared and MUST be
// treated as read-only.
func (b *Broker) Verify(ctx context.Context, raw string) (*provider.Identity, error) {
	if raw == "" || len(raw) > maxTokenSize {
		return nil, &provider.TokenError{Reason: provider.ReasonMalformed, Description: "token is empty or too large"}
	}
	now := b.now()
	var key tokencache.Key
	if b.cache != nil {
		key = tokencache.KeyOf(raw)
		if e, ok := b.cache.Get(key, now); ok {
			if b.callerRevs {
				return e.id, nil
			}
			if err := b.checkRevoked(ctx, e.revocation[:]); err != nil {
				return nil, err
			}
			return e.id, nil
		}
	}
	c, err := b.parseAccess(raw)
	if err != nil {
		return nil, err
	}
	if err := b.checkTimes(c, now); err != nil {
		return nil, err
	}
	rev := [2]string{"jti:" + c.Jti, "fam:" + c.Sid}
	id := tokenIdentity(c)
	if b.callerRevs {
		id.Revocation = []string{rev[0], rev[1]}
	} else if err := b.checkRevoked(ctx, rev[:]); err != nil {
		return nil, err
	}
	if b.cache != nil {
		b.cache.Put(0, key, &cacheEntry{id: id, revocation: rev}, id.Expiry, now)
	}
	return id, nil
}

func tokenErr(reason, desc string) *provider.TokenError {
	return &provider.TokenError{Reason: reason, Description: desc}
}

// parseAccess checks the form and signature of a broker access token and
// its iss, aud and required claims; not its times.
func (b *Broker) parseAccess(raw string) (*atClaims, error) {
	hdr, rest, ok1 := strings.Cut(raw, ".")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(sig, ".") {
		return nil, tokenErr(provider.ReasonMalformed, "token is not a compact JWS")
	}
	// The broker writes one header per key, byte for byte; anything else
	// (another alg, typ, crit, jku, an embedded jwk ...) is not its token.
	var k *signingKey
	for i := range b.keys.sign {
		if hdr == b.keys.sign[i].header {
			k = &b.keys.sign[i]
			break
		}
	}
	if k == nil {
		return nil, b.foreign(payload)
	}
	s, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	if err != nil || len(s) != ed25519.SignatureSize || !ed25519.Verify(k.pub, []byte(raw[:len(hdr)+1+len(payload)]), s) {
		return nil, tokenErr(provider.ReasonSignature, "token signature is not valid")
	}
	body, err := base64.RawURLEncoding.Strict().DecodeString(payload)
	if err != nil {
		return nil, tokenErr(provider.ReasonMalformed, "token payload is not base64url")
	}
	var c atClaims
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, tokenErr(provider.ReasonClaims, "token claims are not valid")
	}
	switch {
	case c.Iss != b.issuer:
		return nil, tokenErr(provider.ReasonIssuer, "token issuer is not this authorization server")
	case c.Aud != b.resource:
		return nil, tokenErr(provider.ReasonAudience, "token audience is not accepted")
	case c.Sub == "", c.ClientID == "", c.Jti == "", c.Sid == "", c.Exp == 0:
		return nil, tokenErr(provider.ReasonClaims, "token lacks a required claim")
	}
	return &c, nil
}

// foreign decides about a token whose header is none of the broker's: it is
// the broker's (signed by a key since dropped, or forged) when its iss is
// the broker's issuer, and someone else's otherwise.
func (b *Broker) foreign(payload string) error {
	body, err := base64.RawURLEncoding.DecodeString(payload)
	if err == nil {
		var c struct {
			Iss string `json:"iss"`
		}
		if json.Unmarshal(body, &c) == nil && c.Iss == b.issuer {
			return tokenErr(provider.ReasonUnknownKey, "token signing key is unknown (it may have been rotated out)")
		}
	}
	return ErrNotBrokerToken
}

// checkTimes applies exp and iat (RFC 7519 §4.1.4, §4.1.6) with the skew.
func (b *Broker) checkTimes(c *atClaims, now time.Time) error {
	if !now.Add(-b.skew).Before(time.Unix(c.Exp, 0)) {
		return tokenErr(provider.ReasonExpired, "token is expired")
	}
	if time.Unix(c.Iat, 0).After(now.Add(b.skew)) {
		return tokenErr(provider.ReasonNotYetValid, "token is issued in the future")
	}
	return nil
}

// checkRevoked asks the store whether the token's jti or family is
// revoked.
func (b *Broker) checkRevoked(ctx context.Context, keys []string) error {
	revoked, err := b.store.Revoked(ctx, keys...)
	if err != nil {
		return storeUnavailable{err}
	}
	if revoked {
		return tokenErr(ReasonRevoked, "token is revoked")
	}
	return nil
}

// storeUnavailable is Verify's error when the store cannot say whether a
// token is revoked: it is provider.ErrNotReady, so the gate answers 503
// with Retry-After instead of accepting a possibly revoked token or
// logging the user out.
type storeUnavailable struct{ err error }

func (e storeUnavailable) Error() string {
	return "verify token: revocation store unavailable: " + e.err.Error()
}
func (e storeUnavailable) Is(target error) bool { return target == provider.ErrNotReady }
func (e storeUnavailable) Unwrap() error        { return e.err }

// TokenVerifier models *provider.Provider (and Broker): it verifies a bearer
// token into an identity.
type TokenVerifier interface {
	Verify(ctx context.Context, raw string) (*provider.Identity, error)
}

// WithFallback returns the verifier the gate uses in broker mode: the
// broker's own tokens are checked by Verify, and any other token is handed
// to fallback (the provider, when its access tokens are accepted). A nil
// fallback refuses every token that is not the broker's.
func (b *Broker) WithFallback(fallback TokenVerifier) TokenVerifier {
	return fallbackVerifier{b: b, next: fallback}
}

type fallbackVerifier struct {
	b    *Broker
	next TokenVerifier // nil: none
}

func (v fallbackVerifier) Verify(ctx context.Context, raw string) (*provider.Identity, error) {
	id, err := v.b.Verify(ctx, raw)
	if !errors.Is(err, ErrNotBrokerToken) {
		return id, err
	}
	if v.next == nil {
		return nil, tokenErr(provider.ReasonIssuer, "token issuer is not accepted")
	}
	return v.next.Verify(ctx, raw)
}
