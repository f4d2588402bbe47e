package broker

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Purposes of sealed records. The purpose is authenticated (GCM's
// additional data), so a record sealed for one use never opens as another:
// a code is not a refresh token, a cookie is not a client_id.
const (
	purposeClient  = "client"
	purposeFlow    = "flow"
	purposeConsent = "consent"
	purposeCode    = "code"
	purposeRefresh = "refresh"
)

const (
	sealVersion   = 1
	sealHeaderLen = 5        // version, key id
	maxSealedLen  = 16 << 10 // base64 characters; refresh tokens are the largest
)

// Errors of open. Their text may reach clients in error_description.
var (
	errSealedInvalid = errors.New("not valid")
	errSealedExpired = errors.New("expired")
)

// sealer seals and opens records: base64url(version | key id | nonce |
// AES-256-GCM(expiry | JSON)). It seals with the current key and opens
// with any key of the keyring.
type sealer struct {
	keys []sealingKey
	now  func() time.Time
}

// seal encodes v as JSON and seals it for purpose. A zero exp never
// expires. The JSON does not escape <, > and & (json.Marshal writes each
// as six bytes): no sealed record is ever read as HTML, and a redirect URI
// full of & must not grow a flow cookie past what browsers keep.
func (s *sealer) seal(purpose string, exp time.Time, v any) (string, error) {
	var buf bytes.Buffer
	buf.Write(make([]byte, 8)) // the expiry, below
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", fmt.Errorf("seal %s: %w", purpose, err)
	}
	pt := bytes.TrimSuffix(buf.Bytes(), []byte("\n")) // Encode ends with a newline
	if !exp.IsZero() {
		binary.BigEndian.PutUint64(pt, uint64(exp.Unix()))
	}
	k := &s.keys[0]
	hdr := []byte{sealVersion, k.id[0], k.id[1], k.id[2], k.id[3]}
	out := k.aead.Seal(hdr, nil, pt, additionalData(purpose, hdr))
	return base64.RawURLEncoding.EncodeToString(out), nil
}

// open opens a record sealed for purpose into v. It fails with
// errSealedExpired past the record's expiry and errSealedInvalid for
// anything else (wrong purpose, unknown or dropped key, tampering).
func (s *sealer) open(purpose, token string, v any) error {
	if token == "" || len(token) > maxSealedLen {
		return errSealedInvalid
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(raw) < sealHeaderLen+8 || raw[0] != sealVersion {
		return errSealedInvalid
	}
	hdr := raw[:sealHeaderLen]
	var pt []byte
	for i := range s.keys {
		k := &s.keys[i]
		if [4]byte(hdr[1:5]) != k.id {
			continue
		}
		pt, err = k.aead.Open(nil, nil, raw[sealHeaderLen:], additionalData(purpose, hdr))
		break
	}
	if pt == nil || err != nil || len(pt) < 8 {
		return errSealedInvalid
	}
	if exp := int64(binary.BigEndian.Uint64(pt[:8])); exp != 0 && s.now().Unix() >= exp {
		return errSealedExpired
	}
	if err := json.Unmarshal(pt[8:], v); err != nil {
		return errSealedInvalid
	}
	return nil
}

func additionalData(purpose string, hdr []byte) []byte {
	ad := make([]byte, 0, len(purpose)+1+len(hdr))
	ad = append(ad, purpose...)
	ad = append(ad, 0)
	return append(ad, hdr...)
}
