package provider

import (
	"context"
	"errors"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// KeySet returns the provider's signing keys as a go-oidc KeySet, so ID
// tokens from the provider (broker mode's upstream login, OpenID Connect
// Core 1.0 §3.1.3.7) are checked against the same JWKS the gate uses,
// without a second discovery or key fetch. A token whose kid is unknown
// causes one JWKS fetch, under the same cooldown as Verify. Before the keys
// are loaded it fails with ErrNotReady.
func (p *Provider) KeySet() oidc.KeySet { return providerKeySet{p} }

type providerKeySet struct{ p *Provider }

// VerifySignature implements oidc.KeySet: it returns the payload of jwt
// when one of the provider's keys, chosen by the token's kid and alg (never
// by jku, x5u or an embedded jwk), verifies its signature.
func (s providerKeySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	if len(jwt) > maxTokenSize {
		return nil, errors.New("verify signature: token too large")
	}
	jws, err := jose.ParseSignedCompact(jwt, jwsAlgs())
	if err != nil {
		return nil, errors.New("verify signature: not a compact JWS with an accepted algorithm")
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("verify signature: not exactly one signature")
	}
	h := jws.Signatures[0].Header
	ks := s.p.keys.Load()
	if ks == nil {
		return nil, ErrNotReady
	}
	payload, known := verifyWith(jws, ks, h.KeyID, h.Algorithm)
	if payload == nil && h.KeyID != "" && !known && s.p.refetchForKID(ctx) {
		payload, _ = verifyWith(jws, s.p.keys.Load(), h.KeyID, h.Algorithm)
	}
	if payload == nil {
		return nil, errors.New("verify signature: no key of the provider verifies the token")
	}
	return payload, nil
}

// verifyWith tries the keys of ks with kid (every key when kid is empty)
// that fit alg. known reports whether ks holds a key with that kid.
func verifyWith(jws *jose.JSONWebSignature, ks *keySet, kid, alg string) (payload []byte, known bool) {
	for i := range ks.keys {
		k := &ks.keys[i]
		if kid != "" && k.KeyID != kid {
			continue
		}
		known = true
		if !keyFits(k, alg) {
			continue
		}
		if p, err := jws.Verify(k.Key); err == nil {
			return p, true
		}
	}
	return nil, known
}

func jwsAlgs() []jose.SignatureAlgorithm {
	names := supportedAlgs()
	algs := make([]jose.SignatureAlgorithm, len(names))
	for i, n := range names {
		algs[i] = jose.SignatureAlgorithm(n)
	}
	return algs
}
