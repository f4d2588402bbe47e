package gate

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strings"
)

// MCP sessions (revisions before 2026-07-28) belong to the user who opened
// them. The MCP server cannot see to it: the gate hands it no identity, so
// to the server every request is the same anonymous caller, and anyone
// holding another user's Mcp-Session-Id could send requests into that
// session and resume its event streams. The specification asks servers to
// bind session IDs to the user; the gate does it for them, statelessly.
//
// The session ID the client sees is the server's followed by "." and a MAC
// of the server's ID and the token subject that received it. A request's
// ID is opened with the caller's subject: the server's ID goes on, and an
// ID that is not this subject's (another user's, forged, or sealed with
// another key: before a restart, or at another replica, unless they share
// BROKER_SECRET) is answered 404, which is how a server says a session is
// gone (the client starts a new one).

// sessionHeader is the MCP session header, in canonical form.
const sessionHeader = "Mcp-Session-Id"

// sessionMACLen is the MAC's length in the client's session ID: 128 bits,
// base64url without padding.
const sessionMACLen = 22

// sessions binds session IDs to subjects with a key of this process.
type sessions struct{ key [32]byte }

// newSessions seals with key, or with a random key when key is nil.
func newSessions(key []byte) *sessions {
	s := &sessions{}
	if copy(s.key[:], key) == 0 {
		_, _ = rand.Read(s.key[:]) // never fails (crypto/rand, Go 1.24+)
	}
	return s
}

func (s *sessions) mac(sub, id string) string {
	m := hmac.New(sha256.New, s.key[:])
	m.Write([]byte(sub))
	m.Write([]byte{0})
	m.Write([]byte(id))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))[:sessionMACLen]
}

// seal is the session ID the client sees for the server's id, given to sub.
func (s *sessions) seal(sub, id string) string { return id + "." + s.mac(sub, id) }

// open returns the server's session ID in the client's v, if it is sub's.
func (s *sessions) open(sub, v string) (id string, ok bool) {
	i := strings.LastIndexByte(v, '.')
	if i < 0 || len(v)-i-1 != sessionMACLen {
		return "", false
	}
	id = v[:i]
	return id, hmac.Equal([]byte(v[i+1:]), []byte(s.mac(sub, id)))
}

// sealAnswer replaces the server's session IDs in an answer's header h
// with the ones the client sees.
func (s *sessions) sealAnswer(h http.Header, sub string) {
	v := h[sessionHeader]
	if len(v) == 0 {
		return
	}
	sealed := make([]string, len(v))
	for i := range v {
		sealed[i] = s.seal(sub, v[i])
	}
	h[sessionHeader] = sealed
}
