package provider

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// fuzzRSAKey is a fixed key, so that every fuzzing worker process holds the
// key set the coordinator minted the seed corpus with (a fresh devissuer
// would generate new keys in each process). It signs nothing but tests.
const fuzzRSAKey = `-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEA5qrjQqkryGiWaQtVnHvGDcxC9HNxbkjy2qBf6BzKxbT4tF6q
ZjJ5gJoaqfRN0YJJ/L023YTeBjwWzbSbog2Vdhun2mRxIH4hVY7P7biZF2nzE3Gv
3ordKzTDZtAASasga1V5888T+7uonWFjTLXFYbIZcPsVYx5BN+xxymEo3FImarYT
fhiiQnfIx9p5ssrnRKUbAM/2vSCVbxeMQL/IS7OGzs2zjtVhWnKCGOEHt4cOxvhl
YnlreIrAFA9/uaHyiusJ4RhOi9VdxKnJPhVaCII3ZKjE06F3dFowKxo3rLIP5bdk
nMM4WXpA3rpsniGYWiLR5jCaepJqfzDvqQ2VNwIDAQABAoIBABV0FghLJ6akuOiI
L1bghCkgXacoCDK+V31R+9mLY/3uDlDoRRJAO4tkdHpoyHFl8W+vltIU23mE+TH5
9vJO2nR5BKw2j0xQWYAASlfNGsqnW1OW9/PLbTU+27WiPtnwhTwLtSNMl9/f3OzW
SUqx1UEi3rmNVg3j8HjnutBHJ7+7ObZDIogzbSB4wGBaKdhmjRUISDAbuNKI1k+Z
7PoTxfxefjUSzOjCB50lgQ0dYX5P+xTVZydChre5pM+hhAqL7T+dPmAPWo0zX990
bC+QrsA9AlxPO5dUJnB53nvB22l+76JG3qxOJqMjTpfcIcPzdZA549FsIhYIX91p
Gcgdu3ECgYEA9tbcbeWbjZV5IHFETS8NwDmaGGYzN9yt6C04s3GX94kiS0i+WdNH
6XMKtjQHXXbk+WeEE+lRZqilJb+C/4iBHWnQJ6o88YUWSj234r80ek3P6erTIFyU
i8+SWznLDDgKM/k6bautrGA1paTo08WEg6TrUjfrbt8UU7ItKm1Oe+0CgYEA7zpi
Tq9Who3kcT6m/kqovAvajDSV7j3BvXNdIO+af8BV0jxLd1/tNhVjyMKPhlBc7AoQ
OGnwIfL3FH6sqHPhbBD044DmLGx/+eaUOptYcmFcJpz2i81FoRxMOryZiyEeTkdw
BFUJNyMLscztDWej0jjdnkj/ca7u0dGmbQL72TMCgYEApIY90joyXkJ8w7T7U37D
aZZ7MTwdc2Rxvck2e9SA+Aq9gvRve6upyN5XC27OYeu3Xs0yaZsgGI7b1Lc7d1ri
xFoc1fNQP6L3YnCUulu7fLGUnVNZeb57fFzULl3tCq3njxDVcvf1AGn4F/o8/bov
QxePifOfxvyFreua0yacI1kCgYEAnCxhQTz2H6FCISvlmNzkit6yLhWmS4HFmQhX
I8lH8158qGL0YVoeYdBU9BsP139fKjjnneyK957F7ntD/DSqVQI83MipexbZ9Sqy
WhBQDVvB7PNLgLjhW+w9V5sIIevc/P1mA24ANh6K4+gEWVvvdq3pAAxntq+c+R0E
qOXpxEECgYB8SQGnZ7mGlgKGlnJ5gaSNgz2iu6A47uF08qVP/5fsJHU5SuK91YBy
ZA8Oz5JGv+/COKnBc8YwkQUedfqyA2f6WyG7bW54LaKFmBPGQHG5qThgXgMmMgpN
Wq99bbeSPZ/oV0UZ4kEd+kWeF2DYhCVVp/JfnggMxED0jXC5UO3dbA==
-----END RSA PRIVATE KEY-----`

// fuzzKeys are the signing keys of FuzzVerify's issuer, all deterministic.
type fuzzKeys struct {
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
	ed  ed25519.PrivateKey
}

func newFuzzKeys(t testing.TB) *fuzzKeys {
	t.Helper()
	block, _ := pem.Decode([]byte(fuzzRSAKey))
	rk, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	scalar := sha256.Sum256([]byte("fuzz ec key"))
	ek, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), scalar[:])
	if err != nil {
		t.Fatal(err)
	}
	seed := sha256.Sum256([]byte("fuzz ed25519 key"))
	return &fuzzKeys{rsa: rk, ec: ek, ed: ed25519.NewKeyFromSeed(seed[:])}
}

// fuzzIssuer is the issuer URL of FuzzVerify's tokens. It is fixed, so the
// seed tokens minted by the coordinator carry the iss every worker expects;
// the provider's HTTP client dials the test server whatever the URL says.
const fuzzIssuer = "http://127.0.0.1:9"

// serveFuzzIssuer serves discovery and the JWKS (RS256, ES256 and EdDSA keys)
// on 127.0.0.1 and returns a client that reaches it as fuzzIssuer.
func serveFuzzIssuer(t testing.TB, k *fuzzKeys) *http.Client {
	t.Helper()
	const url = fuzzIssuer
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			_ = json.NewEncoder(w).Encode(map[string]any{"issuer": url, "jwks_uri": url + "/jwks"})
		case "/jwks":
			_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
				{Key: k.rsa.Public(), KeyID: "rsa", Algorithm: "RS256", Use: "sig"},
				{Key: k.ec.Public(), KeyID: "ec", Algorithm: "ES256", Use: "sig"},
				{Key: k.ed.Public(), KeyID: "ed", Algorithm: "EdDSA", Use: "sig"},
			}})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
}

// newFuzzProvider runs a Provider of fuzzIssuer, reached through client,
// without a cache, on a clock stopped at now, and waits until it is ready.
func newFuzzProvider(t testing.TB, client *http.Client, now time.Time) *Provider {
	t.Helper()
	p := New(Config{
		IssuerURL: fuzzIssuer, Audiences: []string{testAudience}, CacheTTL: -1, HTTPClient: client,
		Logger: hclog.NewNullLogger(), Now: func() time.Time { return now },
	})
	testkit.Run(t, p)
	testkit.WaitReady(t, p)
	return p
}

// fuzzSign signs claims with key under alg and the given header fields.
func fuzzSign(t testing.TB, alg jose.SignatureAlgorithm, key crypto.Signer, header map[string]any, claims map[string]any) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	for h, v := range header {
		opts = opts.WithHeader(jose.HeaderKey(h), v)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// FuzzVerify feeds random and mutated JWTs to a provider holding a real key
// set. Invariant: Verify never panics, and accepts a string only if its
// header and payload segments are, character for character, those of a token
// the key holder signed, and its signature segment is that token's signature
// — identical for RS256 and EdDSA (deterministic), and for ES256 a valid
// ECDSA signature by the published key over that same signing input (ECDSA
// signatures are not unique: each signing draws a new one, and (r, n−s)
// verifies as well as (r, s)). In particular no other base64url spelling of
// the same bytes is accepted (the unused low bits of a segment's last
// character must be zero), so a verified token has exactly one spelling.
func FuzzVerify(f *testing.F) {
	k := newFuzzKeys(f)
	client := serveFuzzIssuer(f, k)
	iss := fuzzIssuer
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := newFuzzProvider(f, client, now)

	claims := func(extra map[string]any) map[string]any {
		c := map[string]any{"iss": iss, "sub": "user-1", "aud": testAudience, "iat": now.Unix() - 60, "exp": now.Unix() + 3600}
		for n, v := range extra {
			if v == nil {
				delete(c, n)
			} else {
				c[n] = v
			}
		}
		return c
	}
	rs := func(h map[string]any, c map[string]any) string {
		if h == nil {
			h = map[string]any{}
		}
		if _, ok := h["kid"]; !ok {
			h["kid"] = "rsa"
		}
		return fuzzSign(f, jose.RS256, k.rsa, h, c)
	}
	valid := []string{
		rs(map[string]any{"typ": "at+jwt"}, claims(nil)),
		rs(nil, claims(map[string]any{"aud": []string{"x", testAudience}, "scope": "a b", "email": "a@example.com"})),
		rs(map[string]any{"jku": iss + "/jwks", "x5u": iss + "/x5u"}, claims(nil)), // ignored headers
		fuzzSign(f, jose.ES256, k.ec, map[string]any{"kid": "ec"}, claims(nil)),
		fuzzSign(f, jose.EdDSA, k.ed, map[string]any{"kid": "ed"}, claims(nil)),
		fuzzSign(f, jose.EdDSA, k.ed, nil, claims(nil)), // no kid: every fitting key is tried
	}
	// Signing inputs the key holder signed, with their signature segment.
	signed := map[string]string{}
	for _, v := range valid {
		if _, err := p.Verify(context.Background(), v); err != nil {
			f.Fatalf("seed token does not verify: %v", err)
		}
		i := strings.LastIndexByte(v, '.')
		signed[v[:i]] = v[i+1:]
		f.Add(v)
	}

	enc := base64.RawURLEncoding
	parts := strings.Split(valid[0], ".")
	forged, _ := json.Marshal(claims(map[string]any{"sub": "admin"}))
	der, _ := x509.MarshalPKIXPublicKey(k.rsa.Public())
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	hsInput := enc.EncodeToString([]byte(`{"alg":"HS256","kid":"rsa"}`)) + "." + enc.EncodeToString(forged)
	mac := hmac.New(sha256.New, pemKey)
	mac.Write([]byte(hsInput))
	foreign, _ := ecdsa.ParseRawPrivateKey(elliptic.P256(), big.NewInt(12345).FillBytes(make([]byte, 32)))
	for _, s := range []string{
		parts[0] + "." + enc.EncodeToString(forged) + "." + parts[2],                               // tampered payload
		enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString(forged) + ".",      // alg none
		hsInput + "." + enc.EncodeToString(mac.Sum(nil)),                                           // HS256 keyed with the public key
		fuzzSign(f, jose.ES256, foreign, map[string]any{"kid": "ec"}, claims(nil)),                 // right kid, wrong key
		fuzzSign(f, jose.ES256, k.ec, map[string]any{"kid": "rsa"}, claims(nil)),                   // kid of a key of another type
		rs(map[string]any{"crit": []string{"exp"}, "exp": 1}, claims(nil)),                         // crit
		rs(map[string]any{"kid": "nope"}, claims(nil)),                                             // unknown kid
		rs(nil, claims(map[string]any{"exp": nil})),                                                // no exp
		rs(nil, claims(map[string]any{"exp": now.Unix() - 3600})),                                  // expired
		rs(nil, claims(map[string]any{"aud": "other"})),                                            // wrong aud
		rs(map[string]any{"typ": "JWT"}, claims(map[string]any{"aud": "client-id", "nonce": "n"})), // an ID token
		fuzzSign(f, jose.ES256, foreign, map[string]any{"kid": "ec", "jwk": jose.JSONWebKey{Key: foreign.Public(), KeyID: "ec", Algorithm: "ES256"}}, claims(nil)), // key in the token
		fuzzSign(f, jose.ES256, foreign, map[string]any{"jku": "http://127.0.0.1:1/jwks"}, claims(nil)),                                                            // key at the token's URL
		"", ".", "..", "a.b.c", "e30.e30.", "e30.e30.e30", strings.Repeat("A", 100) + "..",
	} {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, raw string) {
		id, err := p.Verify(context.Background(), raw)
		if err != nil {
			if id != nil {
				t.Fatalf("Verify returned an identity with error %v", err)
			}
			return
		}
		i := strings.LastIndexByte(raw, '.')
		input, sig := raw[:i], raw[i+1:]
		want, ok := signed[input]
		if !ok {
			t.Fatalf("accepted a token whose header and payload the key holder never signed: %q", raw)
		}
		if sig == want {
			return
		}
		// Only ECDSA may have another signature over the same input; check
		// it with crypto/ecdsa itself, not with the code under test.
		h, _, _ := strings.Cut(input, ".")
		hb, _ := enc.DecodeString(h)
		var hdr struct{ Alg string }
		_ = json.Unmarshal(hb, &hdr)
		sb, err := base64.RawURLEncoding.Strict().DecodeString(sig)
		if hdr.Alg != "ES256" || err != nil || len(sb) != 64 {
			t.Fatalf("accepted a %s token whose signature differs from the signed one: %q", hdr.Alg, raw)
		}
		digest := sha256.Sum256([]byte(input))
		r, s := new(big.Int).SetBytes(sb[:32]), new(big.Int).SetBytes(sb[32:])
		if !ecdsa.Verify(&k.ec.PublicKey, digest[:], r, s) {
			t.Fatalf("accepted an ES256 token whose signature does not verify: %q", raw)
		}
	})
}

// TestNonCanonicalBase64Refused: another spelling of a valid token's
// segments (the unused low bits of a segment's last character set) decodes
// to the same bytes, and is refused, found by FuzzVerify.
func TestNonCanonicalBase64Refused(t *testing.T) {
	k := newFuzzKeys(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := newFuzzProvider(t, serveFuzzIssuer(t, k), now)
	claims := map[string]any{"iss": fuzzIssuer, "sub": "user-1", "aud": testAudience, "exp": now.Unix() + 3600}
	for _, tc := range []struct {
		name string
		raw  string
	}{
		{"RS256", fuzzSign(t, jose.RS256, k.rsa, map[string]any{"kid": "rsa"}, claims)},
		{"ES256", fuzzSign(t, jose.ES256, k.ec, map[string]any{"kid": "ec"}, claims)},
		{"EdDSA", fuzzSign(t, jose.EdDSA, k.ed, map[string]any{"kid": "ed"}, claims)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := p.Verify(context.Background(), tc.raw); err != nil {
				t.Fatalf("valid token: Verify() = %v", err)
			}
			segs := strings.Split(tc.raw, ".")
			for i, seg := range segs {
				if len(seg)%4 == 0 {
					continue // every bit of the last character is used
				}
				alt := []byte(seg)
				last := strings.IndexByte(b64alphabet, alt[len(alt)-1])
				alt[len(alt)-1] = b64alphabet[last|1] // a low bit the decoder ignores
				if dec, _ := base64.RawURLEncoding.DecodeString(string(alt)); string(dec) != string(mustDecode(t, seg)) {
					t.Fatalf("segment %d: the altered spelling decodes differently", i)
				}
				forged := slices.Clone(segs)
				forged[i] = string(alt)
				_, err := p.Verify(context.Background(), strings.Join(forged, "."))
				if got, want := reasonOf(err), ReasonMalformed; got != want {
					t.Errorf("segment %d spelled otherwise: reason %q, want %q (%v)", i, got, want, err)
				}
			}
		})
	}
}

const b64alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func mustDecode(t *testing.T, seg string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestClaimsAreOneJSONObject: a signed payload is accepted only if it is
// one complete JSON object (RFC 7519 §7.2 step 10); whitespace around it is
// JSON's own, anything else after it is refused.
func TestClaimsAreOneJSONObject(t *testing.T) {
	k := newFuzzKeys(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := newFuzzProvider(t, serveFuzzIssuer(t, k), now)
	claims, err := json.Marshal(map[string]any{"iss": fuzzIssuer, "sub": "user-1", "aud": testAudience, "exp": now.Unix() + 3600})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k.rsa}, (&jose.SignerOptions{}).WithHeader("kid", "rsa"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		payload string
		want    string // TokenError reason; "" for success
	}{
		{"the object", string(claims), ""},
		{"whitespace around it", " \n" + string(claims) + "\r\n\t", ""},
		{"a second object", string(claims) + "{}", ReasonClaims},
		{"a stray brace", string(claims) + "}", ReasonClaims},
		{"garbage", string(claims) + "x", ReasonClaims},
		{"an array", "[" + string(claims) + "]", ReasonClaims},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj, err := signer.Sign([]byte(tc.payload))
			if err != nil {
				t.Fatal(err)
			}
			raw, err := obj.CompactSerialize()
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.Verify(context.Background(), raw)
			if got := reasonOf(err); got != tc.want {
				t.Errorf("Verify() reason = %q, want %q (%v)", got, tc.want, err)
			}
		})
	}
}
