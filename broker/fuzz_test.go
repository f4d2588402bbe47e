package broker

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
)

// fuzzBroker is a broker with fixed keys and clock, and no upstream calls.
func fuzzBroker(t testing.TB) (*Broker, string) {
	t.Helper()
	now := time.Unix(1_800_000_000, 0)
	b, err := New(Config{
		ResourceURL: "https://mcp.example.com/mcp",
		Upstream:    provider.New(provider.Config{IssuerURL: "http://127.0.0.1:1", Audiences: []string{"x"}}),
		ClientID:    "gw", Secret: []byte(testSecret), Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	// The same token in every fuzzing process: fixed claims (mintAccess
	// would pick a random jti), signed with the key derived from the
	// fixed secret (Ed25519 signatures are deterministic).
	k := b.keys.sign[0]
	input := k.header + "." + b64(`{"iss":"https://mcp.example.com","sub":"alice","aud":"https://mcp.example.com/mcp",`+
		`"exp":1800003600,"iat":1800000000,"jti":"J","client_id":"client","scope":"mcp:read","sid":"fam","groups":["g"]}`)
	return b, input + "." + b64(string(ed25519.Sign(k.priv, []byte(input))))
}

// FuzzVerify: Verify never panics, and accepts no spelling of a token but
// the one the broker signed (the header is compared byte for byte, base64
// decoding is strict, and Ed25519 signatures are not malleable).
func FuzzVerify(f *testing.F) {
	b, good := fuzzBroker(f)
	parts := strings.Split(good, ".")
	f.Add(good)
	f.Add(parts[0] + "." + parts[1] + ".")
	f.Add(parts[0] + ".." + parts[2])
	f.Add(good + "=")
	f.Add(strings.ToUpper(good))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("...")
	f.Fuzz(func(t *testing.T, raw string) {
		id, err := b.Verify(context.Background(), raw)
		if err == nil {
			if raw != good || id.Subject != "alice" {
				t.Fatalf("accepted %q", raw)
			}
			return
		}
		var te *provider.TokenError
		if !errors.As(err, &te) && !errors.Is(err, ErrNotBrokerToken) {
			t.Fatalf("unexpected error type: %v", err)
		}
	})
}

// FuzzOpen: a sealed record opens only as sealed, for its purpose.
func FuzzOpen(f *testing.F) {
	b, _ := fuzzBroker(f)
	good, err := b.seal.seal(purposeCode, b.now().Add(time.Minute), codeRecord{ID: "x"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, purposeCode)
	f.Add(good, purposeRefresh)
	f.Add(good[:len(good)-1], purposeCode)
	f.Add("", purposeClient)
	f.Add("AQAAAAA", purposeClient)
	f.Fuzz(func(t *testing.T, token, purpose string) {
		// good is sealed afresh (random nonce) in each fuzzing process, so
		// the property is on what opens, not on its spelling.
		var rec codeRecord
		if err := b.seal.open(purpose, token, &rec); err == nil && (rec.ID != "x" || purpose != purposeCode) {
			t.Fatalf("opened %q for %q", token, purpose)
		}
	})
}

// Ed25519 in Go refuses a signature whose S is not reduced (RFC 8032
// §5.1.7), so adding the group order to S does not make a second valid
// spelling.
func TestSignatureNotMalleable(t *testing.T) {
	b, good := fuzzBroker(t)
	parts := strings.Split(good, ".")
	sig := mustB64(t, parts[2])
	// L, little-endian, added to S (the last 32 bytes).
	l := [32]byte{0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10}
	s := sig[32:]
	var carry uint16
	for i := range 32 {
		v := uint16(s[i]) + uint16(l[i]) + carry
		s[i], carry = byte(v), v>>8
	}
	bad := parts[0] + "." + parts[1] + "." + b64(string(sig[:ed25519.SignatureSize]))
	if _, err := b.Verify(context.Background(), bad); err == nil {
		t.Fatal("accepted a signature with S + L")
	}
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	out, err := b64Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func b64Decode(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
