package broker

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

func (e *env) revoke(c registered, tok, hint string) *tokenReply {
	e.t.Helper()
	form := url.Values{"token": {tok}, "client_id": {c.ID}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	return e.postToken(RevokePath, form)
}

// Revoking a refresh token revokes its family: every refresh and access
// token of that login.
func TestRevokeRefreshToken(t *testing.T) {
	e := newEnv(t, nil)
	c, tr := e.tokens()
	r1 := e.refresh(c, tr.RefreshToken)
	if r := e.revoke(c, r1.RefreshToken, "refresh_token"); r.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.status, r.Error)
	}
	if r := e.refresh(c, r1.RefreshToken); r.Error != "invalid_grant" {
		t.Fatalf("refresh after revocation: %d %s", r.status, r.Error)
	}
	for _, at := range []string{tr.AccessToken, r1.AccessToken} {
		if got := e.verifyReason(at); got != ReasonRevoked {
			t.Fatalf("access token after revocation: %q", got)
		}
	}
}

// Revoking an access token refuses its jti until it expires; the rest of
// the family goes on.
func TestRevokeAccessToken(t *testing.T) {
	e := newEnv(t, nil)
	c, tr := e.tokens()
	e.mustVerify(tr.AccessToken) // cached: revocation must still apply
	if r := e.revoke(c, tr.AccessToken, ""); r.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.status, r.Error)
	}
	if got := e.verifyReason(tr.AccessToken); got != ReasonRevoked {
		t.Fatalf("revoked access token: %q", got)
	}
	r := e.refresh(c, tr.RefreshToken)
	if r.status != http.StatusOK {
		t.Fatalf("refresh after revoking an access token: %d %s", r.status, r.Error)
	}
	e.mustVerify(r.AccessToken)
	// Expired anyway: revoking it is a no-op answered 200.
	e.clock.Advance(2 * time.Hour)
	if r := e.revoke(c, r.AccessToken, "access_token"); r.status != http.StatusOK {
		t.Fatalf("revoke expired: %d", r.status)
	}
}

// A client cannot revoke another client's tokens; unknown tokens are
// answered 200 (RFC 7009 §2.2); client authentication applies.
func TestRevokeRules(t *testing.T) {
	e := newEnv(t, nil)
	c, tr := e.tokens()
	other := e.publicClient()
	if r := e.revoke(other, tr.RefreshToken, ""); r.status != http.StatusBadRequest || r.Error != "unauthorized_client" {
		t.Fatalf("another client's refresh token: %d %s", r.status, r.Error)
	}
	if r := e.revoke(other, tr.AccessToken, ""); r.status != http.StatusBadRequest {
		t.Fatalf("another client's access token: %d %s", r.status, r.Error)
	}
	e.mustVerify(tr.AccessToken)
	if r := e.refresh(c, tr.RefreshToken); r.status != http.StatusOK {
		t.Fatalf("tokens after another client's attempts: %d", r.status)
	}
	for _, tok := range []string{"garbage", "a.b.c", ""} {
		r := e.revoke(c, tok, "")
		want := http.StatusOK
		if tok == "" {
			want = http.StatusBadRequest
		}
		if r.status != want {
			t.Errorf("token %q: %d, want %d", tok, r.status, want)
		}
	}
	if r := e.postToken(RevokePath, url.Values{"token": {tr.AccessToken}, "client_id": {"nobody"}}); r.status != http.StatusUnauthorized {
		t.Fatalf("unknown client: %d", r.status)
	}
	two := http.Header{"Authorization": {"Bearer a", "Bearer b"}}
	if r := e.postTokenHeader(RevokePath, url.Values{"token": {tr.AccessToken}, "client_id": {c.ID}}, two); r.status != http.StatusBadRequest || r.Error != "invalid_request" {
		t.Fatalf("two Authorization headers: %d %s", r.status, r.Error)
	}
}
