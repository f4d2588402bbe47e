package provider

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/tokencache"
)

// maxTokenSize bounds the tokens Verify looks at; the gate caps sizes first.
const maxTokenSize = 64 << 10

// unknownKIDFetchTimeout bounds a JWKS fetch made on behalf of a token with an
// unknown kid (the HTTP client's own timeout applies too).
const unknownKIDFetchTimeout = 10 * time.Second

// supportedAlgs are the asymmetric JWS algorithms accepted (RFC 7518 §3.1,
// RFC 8037 §3.1). "none" and the HMAC algorithms are absent on purpose: a
// resource server holds no shared secret with the provider.
func supportedAlgs() []string {
	return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
}

// Identity is what a verified access token says about its bearer. A returned
// *Identity may be shared with other callers (it comes from the cache):
// callers MUST treat it, and its slices, as read-only.
type Identity struct {
	Subject string
	Email   string
	// EmailVerified is true when the token's email_verified is JSON true or
	// the string "true", or when the claim is absent (many access tokens
	// carry none: the provider's email is trusted). Any other value, null
	// and "false", "0", "" included, is false.
	EmailVerified bool
	Groups        []string // from Config.GroupsClaim (string or array of strings)
	Scopes        []string // from "scope" (space-delimited), else "scp" (array or space-delimited string)
	Audience      []string
	ClientID      string // client_id, else azp
	Expiry        time.Time

	// Revocation lists the store keys under which this token may have been
	// revoked (the broker's "jti:<jti>" and "fam:<session>"), for a caller
	// that checks revocation itself: the gate's admission, in the same
	// round trip as the subject's rate limit. Nil: the verifier checked it
	// already, or the token cannot be revoked here (a provider's token).
	Revocation []string
}

// Reasons a token is rejected (TokenError.Reason).
const (
	ReasonMalformed   = "malformed"     // not a compact JWS, or a JOSE header we refuse (crit, typ)
	ReasonSignature   = "signature"     // signature does not verify
	ReasonAlgorithm   = "algorithm"     // alg not accepted, or not the alg of the key
	ReasonIssuer      = "issuer"        // iss is not the configured issuer
	ReasonAudience    = "audience"      // aud holds none of the configured audiences
	ReasonExpired     = "expired"       // exp is past (beyond the skew)
	ReasonNotYetValid = "not_yet_valid" // nbf or iat is in the future (beyond the skew)
	ReasonClaims      = "claims"        // a claim is missing or of the wrong type (exp, sub, ...)
	ReasonLifetime    = "lifetime"      // exp is further away than MaxTokenLifetime
	ReasonUnknownKey  = "unknown_key"   // no key of the JWKS matches the token's kid (or alg)
)

// TokenError is why a token was rejected; the gate answers 401 invalid_token
// (RFC 6750 §3.1). Verify returns it as *TokenError. Description never
// contains the token nor values taken from it, so it can go in an
// error_description.
type TokenError struct {
	Reason      string // one of the Reason constants
	Description string
}

func (e *TokenError) Error() string { return "verify token: " + e.Description }

func tokenErr(reason, desc string) *TokenError { return &TokenError{Reason: reason, Description: desc} }

// Verify checks a bearer JWT access token (RFC 9068 §4) and returns what it
// says about its bearer. It returns ErrNotReady until the keys have been
// loaded once, and a *TokenError when the token is not acceptable. A token
// verified recently is answered from the cache, never past its exp.
func (p *Provider) Verify(ctx context.Context, raw string) (*Identity, error) {
	if raw == "" || len(raw) > maxTokenSize {
		return nil, tokenErr(ReasonMalformed, "token is empty or too large")
	}
	ks := p.keys.Load()
	if ks == nil {
		return nil, ErrNotReady
	}
	var key tokencache.Key
	if p.cache != nil {
		key = tokencache.KeyOf(raw)
		if id, ok := p.cache.Get(key, p.now()); ok {
			return id, nil
		}
	}
	id, gen, err := p.verify(ctx, raw, ks)
	if err != nil {
		return nil, err
	}
	if p.cache != nil {
		p.cache.Put(gen, key, id, id.Expiry, p.now())
	}
	return id, nil
}

// joseHeader is the part of the JOSE header (RFC 7515 §4.1) looked at before
// the signature is checked.
type joseHeader struct {
	alg, kid, typ string
	hasKID        bool
}

func (p *Provider) verify(ctx context.Context, raw string, ks *keySet) (*Identity, uint64, error) {
	h, herr := parseHeader(raw)
	if herr != nil {
		return nil, 0, herr
	}
	cands, kerr := candidates(ks, h)
	if kerr != nil && h.hasKID && kerr.Reason == ReasonUnknownKey {
		// A key may have been published since the last fetch.
		if p.refetchForKID(ctx) {
			ks = p.keys.Load()
			cands, kerr = candidates(ks, h)
		}
	}
	if kerr != nil {
		return nil, 0, kerr
	}

	payload, serr := verifySignature(raw, h.alg, cands)
	if serr != nil {
		return nil, 0, serr
	}
	id, err := p.checkClaims(payload)
	if err != nil {
		return nil, 0, err
	}
	return id, ks.gen, nil
}

// parseHeader reads the JOSE header of a compact JWS (RFC 7515 §7.1) and
// refuses what we do not accept, before any key is looked at.
func parseHeader(raw string) (joseHeader, *TokenError) {
	var h joseHeader
	dots := 0
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c == '.':
			dots++
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default: // also refuses the JSON serialization and whitespace
			return h, tokenErr(ReasonMalformed, "token is not a compact JWS")
		}
	}
	if dots != 2 {
		return h, tokenErr(ReasonMalformed, "token is not a compact JWS")
	}
	// One spelling per token: base64url decoders (ours and go-jose's)
	// ignore the unused low bits of a segment's last character, so without
	// this check a verified token would have up to 16 spellings for each
	// segment (found by FuzzVerify).
	for rest := raw; rest != ""; {
		var seg string
		seg, rest, _ = strings.Cut(rest, ".")
		if !canonicalBase64(seg) {
			return h, tokenErr(ReasonMalformed, "token is not canonical base64url")
		}
	}
	seg, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return h, tokenErr(ReasonMalformed, "token header is not base64url")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil || fields == nil {
		return h, tokenErr(ReasonMalformed, "token header is not a JSON object")
	}
	if err := json.Unmarshal(fields["alg"], &h.alg); err != nil || h.alg == "" {
		return h, tokenErr(ReasonMalformed, "token header has no alg")
	}
	if !slices.Contains(supportedAlgs(), h.alg) {
		return h, tokenErr(ReasonAlgorithm, "token algorithm is not accepted")
	}
	// RFC 7515 §4.1.11: we understand no extension, so any crit header
	// makes the token unacceptable (go-jose itself accepts crit ["b64"]).
	// b64 (RFC 7797) is refused as well.
	if _, ok := fields["crit"]; ok {
		return h, tokenErr(ReasonMalformed, "token has a crit header")
	}
	if _, ok := fields["b64"]; ok {
		return h, tokenErr(ReasonMalformed, "token has a b64 header")
	}
	if r, ok := fields["kid"]; ok {
		if err := json.Unmarshal(r, &h.kid); err != nil {
			return h, tokenErr(ReasonMalformed, "token kid is not a string")
		}
		h.hasKID = true
	}
	if r, ok := fields["typ"]; ok {
		if err := json.Unmarshal(r, &h.typ); err != nil {
			return h, tokenErr(ReasonMalformed, "token typ is not a string")
		}
		// RFC 9068 §2.1 (at+jwt), RFC 7519 §5.1 (JWT); no other type.
		switch strings.ToLower(h.typ) {
		case "jwt", "at+jwt", "application/at+jwt":
		default:
			return h, tokenErr(ReasonMalformed, "token type is not an access token")
		}
	}
	return h, nil
}

// canonicalBase64 reports whether seg, made of base64url characters, is the
// one unpadded base64url spelling of its bytes (RFC 7515 §2, RFC 4648 §3.5):
// its length is not 1 mod 4 and the unused low bits of its last character
// are zero.
func canonicalBase64(seg string) bool {
	if seg == "" {
		return true
	}
	var v byte
	switch c := seg[len(seg)-1]; {
	case c >= 'A' && c <= 'Z':
		v = c - 'A'
	case c >= 'a' && c <= 'z':
		v = c - 'a' + 26
	case c >= '0' && c <= '9':
		v = c - '0' + 52
	case c == '-':
		v = 62
	default: // '_'
		v = 63
	}
	switch len(seg) % 4 {
	case 1:
		return false
	case 2:
		return v&0x0f == 0
	case 3:
		return v&0x03 == 0
	}
	return true
}

// candidates returns the keys of ks that may have signed a token with header
// h: those with its kid, or without a kid, every key fit for its alg.
func candidates(ks *keySet, h joseHeader) ([]jose.JSONWebKey, *TokenError) {
	var out []jose.JSONWebKey
	found := false
	for _, k := range ks.keys {
		if h.hasKID && k.KeyID != h.kid {
			continue
		}
		found = true
		if keyFits(&k, h.alg) {
			out = append(out, k)
		}
	}
	switch {
	case len(out) > 0:
		return out, nil
	case h.hasKID && found:
		return nil, tokenErr(ReasonAlgorithm, "token algorithm does not match its key")
	default:
		return nil, tokenErr(ReasonUnknownKey, "token signing key is unknown")
	}
}

// keyFits reports whether k may verify a signature made with alg: the key
// type and curve must be those of alg (RFC 7518 §3), and the key's own alg,
// when the JWKS gives one, must be alg (RFC 7517 §4.4).
func keyFits(k *jose.JSONWebKey, alg string) bool {
	if k.Algorithm != "" && k.Algorithm != alg {
		return false
	}
	switch pub := k.Key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return pub.Curve == elliptic.P256()
		case "ES384":
			return pub.Curve == elliptic.P384()
		case "ES512":
			return pub.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// verifySignature checks the signature of raw, a compact JWS (RFC 7515 §5.2)
// whose header parseHeader accepted, made with alg by one of keys, and
// returns its payload. Only the candidate keys, taken from the configured
// JWKS, are tried: jku, x5u and jwk headers are never followed.
func verifySignature(raw, alg string, keys []jose.JSONWebKey) ([]byte, *TokenError) {
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
	if err != nil {
		return nil, tokenErr(ReasonMalformed, "token is not a valid JWS")
	}
	for _, k := range keys {
		// The bare public key, not the JWK: go-jose must not pick a key by
		// the token's own headers.
		if payload, err := jws.Verify(k.Key); err == nil {
			return payload, nil
		}
	}
	return nil, tokenErr(ReasonSignature, "token signature is not valid")
}

// refetchForKID fetches the JWKS again for a token whose kid is unknown, at
// most once per cooldown however many callers ask, and reports whether a
// fetch happened (its own or one it waited for).
func (p *Provider) refetchForKID(ctx context.Context) bool {
	p.kidMu.Lock()
	if f := p.kidFlight; f != nil {
		p.kidMu.Unlock()
		select {
		case <-f:
			return true
		case <-ctx.Done():
			return false
		}
	}
	now := p.now()
	if !p.lastKidFetch.IsZero() && now.Sub(p.lastKidFetch) < p.cooldown {
		p.kidMu.Unlock()
		return false
	}
	d := p.doc.Load()
	if d == nil {
		p.kidMu.Unlock()
		return false
	}
	p.lastKidFetch = now
	f := make(chan struct{})
	p.kidFlight = f
	p.kidMu.Unlock()

	defer func() {
		p.kidMu.Lock()
		p.kidFlight = nil
		p.kidMu.Unlock()
		close(f)
	}()
	// The fetch serves every waiting caller, so it does not end with the
	// first caller's request.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unknownKIDFetchTimeout)
	defer cancel()
	start := time.Now()
	if err := p.loadKeys(fctx, d.jwksURI); err != nil {
		p.log.Warn("provider key fetch for an unknown kid failed", "error", err, "duration", time.Since(start))
		return false
	}
	return true
}

// checkClaims applies RFC 9068 §4 / RFC 7519 §7.2 to a verified payload.
func (p *Provider) checkClaims(payload []byte) (*Identity, error) {
	var c map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	// RFC 7519 §7.2 step 10: one complete JSON object, nothing after it.
	if err := dec.Decode(&c); err != nil || c == nil {
		return nil, tokenErr(ReasonClaims, "token claims are not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, tokenErr(ReasonClaims, "token claims are not a JSON object")
	}
	now := p.now()

	var iss string
	if json.Unmarshal(c["iss"], &iss) != nil || trimSlash(iss) != p.issuer {
		return nil, tokenErr(ReasonIssuer, "token issuer is not the configured issuer")
	}
	aud, ok := stringOrArray(c["aud"])
	if !ok || !slices.ContainsFunc(aud, func(a string) bool { return slices.Contains(p.audiences, a) }) {
		return nil, tokenErr(ReasonAudience, "token audience is not accepted")
	}

	exp, present, ok := numericDate(c["exp"])
	switch {
	case !present:
		return nil, tokenErr(ReasonClaims, "token has no exp")
	case !ok:
		return nil, tokenErr(ReasonClaims, "token exp is not a valid time")
	case !now.Add(-p.skew).Before(exp):
		return nil, tokenErr(ReasonExpired, "token is expired")
	}
	if nbf, present, ok := numericDate(c["nbf"]); present {
		if !ok {
			return nil, tokenErr(ReasonClaims, "token nbf is not a valid time")
		}
		if nbf.After(now.Add(p.skew)) {
			return nil, tokenErr(ReasonNotYetValid, "token is not valid yet")
		}
	}
	if iat, present, ok := numericDate(c["iat"]); present {
		if !ok {
			return nil, tokenErr(ReasonClaims, "token iat is not a valid time")
		}
		if iat.After(now.Add(p.skew)) {
			return nil, tokenErr(ReasonNotYetValid, "token is issued in the future")
		}
	}
	if p.maxLifetime > 0 && exp.Sub(now) > p.maxLifetime {
		return nil, tokenErr(ReasonLifetime, "token lifetime is too long")
	}

	id := &Identity{Audience: aud, Expiry: exp, EmailVerified: true}
	if json.Unmarshal(c["sub"], &id.Subject) != nil || id.Subject == "" {
		return nil, tokenErr(ReasonClaims, "token has no sub")
	}
	if r, ok := c["email"]; ok && !isNull(r) && json.Unmarshal(r, &id.Email) != nil {
		return nil, tokenErr(ReasonClaims, "token email is not a string")
	}
	if r, ok := c["email_verified"]; ok {
		// Present: only true (or "true": some providers send strings)
		// verifies; "0", "no", "" or null must not (fail closed).
		var b bool
		var s string
		switch {
		case isNull(r):
			id.EmailVerified = false
		case json.Unmarshal(r, &b) == nil:
			id.EmailVerified = b
		case json.Unmarshal(r, &s) == nil:
			id.EmailVerified = s == "true"
		default:
			return nil, tokenErr(ReasonClaims, "token email_verified is not a boolean")
		}
	}
	if r, ok := c[p.groupsClaim]; ok && !isNull(r) {
		if id.Groups, ok = stringOrArray(r); !ok {
			return nil, tokenErr(ReasonClaims, "token groups claim is not a string or an array of strings")
		}
	}
	scope, scp := c["scope"], c["scp"]
	if isNull(scope) {
		scope = scp
	}
	if !isNull(scope) {
		var s string
		if json.Unmarshal(scope, &s) == nil {
			id.Scopes = strings.Fields(s)
		} else if id.Scopes, ok = stringOrArray(scope); !ok {
			return nil, tokenErr(ReasonClaims, "token scope is not a string or an array of strings")
		}
	}
	for _, name := range []string{"client_id", "azp"} {
		if r, ok := c[name]; ok && !isNull(r) {
			if json.Unmarshal(r, &id.ClientID) != nil {
				return nil, tokenErr(ReasonClaims, "token "+name+" is not a string")
			}
			if id.ClientID != "" {
				break
			}
		}
	}
	return id, nil
}

func isNull(r json.RawMessage) bool { return len(r) == 0 || string(r) == "null" }

// stringOrArray reads a claim that is a string or an array of strings (as
// aud, RFC 7519 §4.1.3). Absent or null yields ok=false.
func stringOrArray(r json.RawMessage) ([]string, bool) {
	if isNull(r) {
		return nil, false
	}
	var s string
	if json.Unmarshal(r, &s) == nil {
		return []string{s}, true
	}
	var a []string
	if json.Unmarshal(r, &a) == nil {
		return a, true
	}
	return nil, false
}

// numericDate reads a NumericDate (RFC 7519 §2): a JSON number of seconds,
// possibly fractional. present is false when the claim is absent or null; ok
// is false when it is not a number in [0, year 9999].
func numericDate(r json.RawMessage) (t time.Time, present, ok bool) {
	if isNull(r) {
		return time.Time{}, false, false
	}
	if c := r[0]; c != '-' && (c < '0' || c > '9') { // a string is not a number
		return time.Time{}, true, false
	}
	f, err := strconv.ParseFloat(string(r), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > 253402300799 {
		return time.Time{}, true, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, true
}
