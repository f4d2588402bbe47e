package broker

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/respond"
)

// HKDF (RFC 5869) inputs. The salt is fixed and public (§3.1: optional);
// each key has its own info (§3.2), so no two keys are related.
const (
	hkdfSalt        = "mcp-oauth-proxy broker"
	infoSigningSeed = "ed25519 signing key seed v1"
	infoSealingKey  = "aes-256-gcm sealing key v1"
	infoSealingID   = "sealing key id v1"
)

// keyring holds the keys derived from BROKER_SECRET and, during a rotation,
// from BROKER_SECRET_PREVIOUS. The first of each list is current: it signs
// and seals; the others only verify and open.
type keyring struct {
	sign []signingKey
	seal []sealingKey
}

// signingKey signs access tokens: Ed25519 (RFC 8032), "EdDSA" in JOSE
// (RFC 8037 §3.1).
//
// Why Ed25519: its private key is a 32-byte seed by definition (RFC 8032
// §5.1.5), so ed25519.NewKeyFromSeed turns HKDF output into the same key on
// every replica and after every restart. An ECDSA P-256 key cannot come
// from ecdsa.GenerateKey (since Go 1.26 it ignores its random reader); it
// would need ecdsa.ParseRawPrivateKey on a scalar we derive ourselves,
// rejecting values outside [1, n-1]. Ed25519 needs nothing of ours, signs
// deterministically, and is accepted by the provider package's verifier
// and by every JOSE library MCP servers use.
type signingKey struct {
	kid    string // RFC 7638 JWK thumbprint
	priv   ed25519.PrivateKey
	pub    ed25519.PublicKey
	header string // base64url JOSE header of tokens signed with it
}

// sealingKey seals records (client registrations, codes, refresh tokens,
// cookies) with AES-256-GCM and a random 96-bit nonce per record. Random
// nonces are safe up to about 2^32 records per key (NIST SP 800-38D §8.3),
// far beyond what a gateway seals before its secret is rotated.
type sealingKey struct {
	id   [4]byte // names the key in a sealed record
	aead cipher.AEAD
}

// newKeyring derives the current keys from secret (random when nil) and
// the previous ones from previous (none when nil).
func newKeyring(secret, previous []byte) (*keyring, error) {
	if secret == nil {
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("derive keys: %w", err)
		}
	}
	kr := &keyring{}
	for _, s := range [][]byte{secret, previous} {
		if s == nil {
			continue
		}
		sk, err := deriveSigningKey(s)
		if err != nil {
			return nil, err
		}
		zk, err := deriveSealingKey(s)
		if err != nil {
			return nil, err
		}
		kr.sign = append(kr.sign, sk)
		kr.seal = append(kr.seal, zk)
	}
	return kr, nil
}

func deriveSigningKey(secret []byte) (signingKey, error) {
	seed, err := hkdf.Key(sha256.New, secret, []byte(hkdfSalt), infoSigningSeed, ed25519.SeedSize)
	if err != nil {
		return signingKey{}, fmt.Errorf("derive signing key: %w", err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return signingKey{}, fmt.Errorf("derive signing key: %w", err)
	}
	k := signingKey{kid: base64.RawURLEncoding.EncodeToString(tp), priv: priv, pub: pub}
	hdr, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{"EdDSA", k.kid, "at+jwt"}) // RFC 9068 §2.1
	if err != nil {
		return signingKey{}, fmt.Errorf("derive signing key: %w", err)
	}
	k.header = base64.RawURLEncoding.EncodeToString(hdr)
	return k, nil
}

func deriveSealingKey(secret []byte) (sealingKey, error) {
	key, err := hkdf.Key(sha256.New, secret, []byte(hkdfSalt), infoSealingKey, 32)
	if err != nil {
		return sealingKey{}, fmt.Errorf("derive sealing key: %w", err)
	}
	id, err := hkdf.Key(sha256.New, secret, []byte(hkdfSalt), infoSealingID, 4)
	if err != nil {
		return sealingKey{}, fmt.Errorf("derive sealing key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return sealingKey{}, fmt.Errorf("derive sealing key: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return sealingKey{}, fmt.Errorf("derive sealing key: %w", err)
	}
	return sealingKey{id: [4]byte(id), aead: aead}, nil
}

// jwksDoc is the JWKS (RFC 7517 §5) of every signing key, current first.
func (kr *keyring) jwksDoc() ([]byte, error) {
	var set jose.JSONWebKeySet
	for _, k := range kr.sign {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.pub, KeyID: k.kid, Algorithm: string(jose.EdDSA), Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("encode jwks: %w", err)
	}
	return b, nil
}

// verifier returns the signing key named kid, or nil.
func (kr *keyring) verifier(kid string) *signingKey {
	for i := range kr.sign {
		if kr.sign[i].kid == kid {
			return &kr.sign[i]
		}
	}
	return nil
}

// serveJWKS serves the public signing keys at jwks_uri (RFC 8414 §2).
func (b *Broker) serveJWKS(w http.ResponseWriter, r *http.Request) {
	respond.Document(w, b.jwks, 5*time.Minute)
}
