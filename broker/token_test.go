package broker

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/devissuer"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
)

// A code used twice fails, and revokes what its first use issued.
func TestCodeReplay(t *testing.T) {
	e := newEnv(t, nil)
	a := newAuthRequest(e.publicClient())
	code := e.code(newBrowser(t), a, alice)
	first := e.redeem(a, code)
	if first.status != http.StatusOK {
		t.Fatalf("first use: %d %s", first.status, first.Desc)
	}
	e.mustVerify(first.AccessToken)
	second := e.redeem(a, code)
	if second.status != http.StatusBadRequest || second.Error != "invalid_grant" {
		t.Fatalf("second use: %d %s", second.status, second.Error)
	}
	if got := e.verifyReason(first.AccessToken); got != ReasonRevoked {
		t.Fatalf("first access token after the replay: got %q, want revoked", got)
	}
	if r := e.refresh(a.client, first.RefreshToken); r.Error != "invalid_grant" {
		t.Fatalf("first refresh token after the replay: %d %s", r.status, r.Error)
	}
}

// Everything a code is bound to is checked at the token endpoint.
func TestCodeBindings(t *testing.T) {
	e := newEnv(t, nil)
	c := e.publicClient()
	other := e.publicClient()
	a := newAuthRequest(c)
	code := e.code(newBrowser(t), a, alice)
	base := func() url.Values {
		return url.Values{
			"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {a.redirect},
			"code_verifier": {a.verifier}, "client_id": {c.ID},
		}
	}
	with := func(k, v string) url.Values {
		f := base()
		if v == "" {
			f.Del(k)
		} else {
			f.Set(k, v)
		}
		return f
	}
	tests := []struct {
		name      string
		form      url.Values
		wantCode  int
		wantError string
	}{
		{name: "another client", form: with("client_id", other.ID), wantCode: 400, wantError: "invalid_grant"},
		{name: "no client", form: with("client_id", ""), wantCode: 401, wantError: "invalid_client"},
		{name: "unknown client", form: with("client_id", "nobody"), wantCode: 401, wantError: "invalid_client"},
		{name: "pkce verifier missing", form: with("code_verifier", ""), wantCode: 400, wantError: "invalid_request"},
		{name: "pkce verifier wrong", form: with("code_verifier", oauth2.GenerateVerifier()), wantCode: 400, wantError: "invalid_grant"},
		{name: "pkce challenge as verifier (plain)", form: with("code_verifier", oauth2.S256ChallengeFromVerifier(a.verifier)), wantCode: 400, wantError: "invalid_grant"},
		{name: "pkce verifier too short", form: with("code_verifier", "abc"), wantCode: 400, wantError: "invalid_grant"},
		{name: "redirect uri missing", form: with("redirect_uri", ""), wantCode: 400, wantError: "invalid_request"},
		{name: "redirect uri other port", form: with("redirect_uri", "http://127.0.0.1:7778/callback"), wantCode: 400, wantError: "invalid_grant"},
		{name: "resource naming another server", form: with("resource", "https://other.example/mcp"), wantCode: 400, wantError: "invalid_target"},
		{name: "tampered code", form: with("code", code[:len(code)-2]+"AA"), wantCode: 400, wantError: "invalid_grant"},
		{name: "a refresh-token-shaped code", form: with("code", "x"), wantCode: 400, wantError: "invalid_grant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.token(tt.form)
			if r.status != tt.wantCode || r.Error != tt.wantError {
				t.Fatalf("got %d %s (%s), want %d %s", r.status, r.Error, r.Desc, tt.wantCode, tt.wantError)
			}
		})
	}
	// None of those used the code up.
	if r := e.token(base()); r.status != http.StatusOK {
		t.Fatalf("the right request afterwards: %d %s %s", r.status, r.Error, r.Desc)
	}
}

// A code lives 60 seconds.
func TestCodeExpires(t *testing.T) {
	e := newEnv(t, nil)
	a := newAuthRequest(e.publicClient())
	code := e.code(newBrowser(t), a, alice)
	e.clock.Advance(61 * time.Second)
	if r := e.redeem(a, code); r.Error != "invalid_grant" || !strings.Contains(r.Desc, "expired") {
		t.Fatalf("expired code: %d %s %s", r.status, r.Error, r.Desc)
	}
}

// A code sealed for one purpose does not open as another: a code is not a
// refresh token, and the reverse.
func TestSealedPurposes(t *testing.T) {
	e := newEnv(t, nil)
	c, tr := e.tokens()
	if r := e.token(url.Values{"grant_type": {"authorization_code"}, "code": {tr.RefreshToken}, "client_id": {c.ID},
		"redirect_uri": {clientRedirect}, "code_verifier": {oauth2.GenerateVerifier()}}); r.Error != "invalid_grant" {
		t.Fatalf("refresh token as a code: %d %s", r.status, r.Error)
	}
	if r := e.refresh(c, c.ID); r.Error != "invalid_grant" {
		t.Fatalf("client id as a refresh token: %d %s", r.status, r.Error)
	}
}

// Refresh tokens rotate; a rotated one used again revokes the family.
func TestRefreshReuse(t *testing.T) {
	e := newEnv(t, nil)
	c, tr := e.tokens()
	r1 := e.mustRefresh(c, tr.RefreshToken, "refresh")
	r2 := e.mustRefresh(c, r1.RefreshToken, "second refresh")
	// The first refresh token, already rotated, is presented again (it
	// leaked): refused, and the whole family is revoked.
	if r := e.refresh(c, tr.RefreshToken); r.Error != "invalid_grant" {
		t.Fatalf("reused refresh token: %d %s", r.status, r.Error)
	}
	if r := e.refresh(c, r2.RefreshToken); r.Error != "invalid_grant" {
		t.Fatalf("latest refresh token after the reuse: %d %s", r.status, r.Error)
	}
	for _, at := range []string{tr.AccessToken, r1.AccessToken, r2.AccessToken} {
		if got := e.verifyReason(at); got != ReasonRevoked {
			t.Fatalf("access token of the family: got %q, want revoked", got)
		}
	}
	// Another login of the same user is not affected.
	_, other := e.tokens()
	e.mustVerify(other.AccessToken)
}

// Two refreshes racing with one token, with no grace window (strict
// one-time use, the Config's zero value): one wins, and the family ends.
func TestRefreshRace(t *testing.T) {
	e := newEnv(t, nil)
	c, tr := e.tokens()
	results := make(chan *tokenReply, 2)
	for range 2 {
		go func() { results <- e.refresh(c, tr.RefreshToken) }()
	}
	ok := 0
	for range 2 {
		if r := <-results; r.status == http.StatusOK {
			ok++
		}
	}
	if ok != 1 {
		t.Fatalf("%d refreshes succeeded, want 1", ok)
	}
}

// noUpstreamRefresh makes the provider give no refresh token (it lists no
// offline_access), so a refresh is the broker's decision alone.
func noUpstreamRefresh(is *devissuer.Issuer) {
	is.Extra = map[string]any{"scopes_supported": []string{"openid", "email"}}
}

func withGrace(c *Config) { c.RefreshReuseGrace = 30 * time.Second }

// Within RefreshReuseGrace of its first use a refresh token is accepted
// again (a concurrent refresh, a retry after a lost answer): it rotates to
// a sibling in the same family, and every token stays valid. After the
// window the same token is a leak: the family ends, siblings included.
func TestRefreshReuseGrace(t *testing.T) {
	e := newEnvIssuer(t, noUpstreamRefresh, withGrace)
	c, tr := e.tokens()
	r1 := e.mustRefresh(c, tr.RefreshToken, "refresh")
	e.clock.Advance(30 * time.Second)
	r2 := e.mustRefresh(c, tr.RefreshToken, "the same token 30 s after its first use")
	if r2.RefreshToken == r1.RefreshToken {
		t.Fatal("the sibling has the first refresh's refresh token")
	}
	r3 := e.mustRefresh(c, r2.RefreshToken, "the sibling rotating on")
	for _, at := range []string{tr.AccessToken, r1.AccessToken, r2.AccessToken, r3.AccessToken} {
		e.mustVerify(at)
	}
	e.clock.Advance(time.Second)
	if r := e.refresh(c, tr.RefreshToken); r.Error != "invalid_grant" {
		t.Fatalf("the same token 31 s after its first use: %d %s, want invalid_grant", r.status, r.Error)
	}
	for _, at := range []string{r1.AccessToken, r2.AccessToken, r3.AccessToken} {
		if got := e.verifyReason(at); got != ReasonRevoked {
			t.Fatalf("an access token of the family after the late reuse: got %q, want revoked", got)
		}
	}
	for _, rt := range []string{r1.RefreshToken, r3.RefreshToken} {
		if r := e.refresh(c, rt); r.Error != "invalid_grant" {
			t.Fatalf("a refresh token of the family after the late reuse: %d %s", r.status, r.Error)
		}
	}
}

// Two refreshes racing with one token within the grace window both
// succeed, with different refresh tokens, and the family lives on.
func TestRefreshRaceWithinGrace(t *testing.T) {
	e := newEnvIssuer(t, noUpstreamRefresh, withGrace)
	c, tr := e.tokens()
	results := make(chan *tokenReply, 2)
	for range 2 {
		go func() { results <- e.refresh(c, tr.RefreshToken) }()
	}
	a, b := <-results, <-results
	if a.status != http.StatusOK || b.status != http.StatusOK || a.RefreshToken == b.RefreshToken {
		t.Fatalf("racing refreshes: %d %s and %d %s, want two 200s with two refresh tokens", a.status, a.Desc, b.status, b.Desc)
	}
	for _, r := range []*tokenReply{a, b} {
		e.mustVerify(r.AccessToken)
		e.mustRefresh(c, r.RefreshToken, "refresh after the race")
	}
}

// With a provider that rotates its own refresh tokens, a reuse within the
// window reaches the provider with a token it has rotated already: the
// client gets invalid_grant ("just used"), and the session is not ended.
// After the window, the provider's refusal ends the family as before.
func TestRefreshReuseGraceRotatingProvider(t *testing.T) {
	e := newEnv(t, withGrace)
	c, tr := e.tokens()
	r1 := e.mustRefresh(c, tr.RefreshToken, "refresh")
	if r := e.refresh(c, tr.RefreshToken); r.Error != "invalid_grant" || !strings.Contains(r.Desc, "just used") {
		t.Fatalf("reuse within the window: %d %s %q, want invalid_grant, just used", r.status, r.Error, r.Desc)
	}
	e.mustVerify(r1.AccessToken)
	r2 := e.mustRefresh(c, r1.RefreshToken, "the newer token after a reuse within the window")
	e.clock.Advance(31 * time.Second)
	if r := e.refresh(c, r1.RefreshToken); r.Error != "invalid_grant" {
		t.Fatalf("reuse after the window: %d %s", r.status, r.Error)
	}
	if got := e.verifyReason(r2.AccessToken); got != ReasonRevoked {
		t.Fatalf("the family's access token after a reuse past the window: got %q, want revoked", got)
	}
}

// A session costs the store one key however often it refreshes: its
// generation moves on, where each rotation used to leave a claim of its own
// until the session ended (so one user refreshing in a loop could fill the
// store and lock every token request out).
func TestRefreshOneKeyPerSession(t *testing.T) {
	e := newEnvIssuer(t, noUpstreamRefresh, withGrace)
	c, tr := e.tokens()
	rt := e.mustRefresh(c, tr.RefreshToken, "first refresh").RefreshToken
	before := e.store.Len()
	for i := range 100 {
		rt = e.mustRefresh(c, rt, fmt.Sprintf("refresh %d", i+2)).RefreshToken
	}
	if after := e.store.Len(); after != before {
		t.Fatalf("store keys after 100 more refreshes of one session: %d, was %d", after, before)
	}
	if r := e.refresh(c, tr.RefreshToken); r.Error != "invalid_grant" {
		t.Fatalf("the first refresh token after 101 rotations: %d %s, want invalid_grant", r.status, r.Error)
	}
	if r := e.refresh(c, rt); r.Error != "invalid_grant" {
		t.Fatalf("the latest refresh token after an old one's reuse: %d %s, want invalid_grant", r.status, r.Error)
	}
}

// Siblings from a race within the window are one line, not two sessions:
// once one of them is used, the other is reuse after the window, and it
// ends the family.
func TestRefreshSiblingsStayOneLine(t *testing.T) {
	e := newEnvIssuer(t, noUpstreamRefresh, withGrace)
	c, tr := e.tokens()
	a := e.mustRefresh(c, tr.RefreshToken, "refresh")
	b := e.mustRefresh(c, tr.RefreshToken, "the same token again, a sibling")
	next := e.mustRefresh(c, a.RefreshToken, "one sibling rotating on")
	e.clock.Advance(31 * time.Second)
	if r := e.refresh(c, b.RefreshToken); r.Error != "invalid_grant" {
		t.Fatalf("the other sibling after the window: %d %s, want invalid_grant", r.status, r.Error)
	}
	if got := e.verifyReason(next.AccessToken); got != ReasonRevoked {
		t.Fatalf("the family's access token after the sibling's reuse: got %q, want revoked", got)
	}
}

// The window holds for a token however far the session rotated since its
// first use: a request still holding it (one of several processes that
// each refresh at start, one of them slow) gets a token of the generation
// still in line, not one the family has left. After the window the same
// token ends the session.
func TestRefreshStragglerWithinGrace(t *testing.T) {
	e := newEnvIssuer(t, noUpstreamRefresh, withGrace)
	c, tr := e.tokens()
	r2 := e.mustRefresh(c, tr.RefreshToken, "refresh")
	r3 := e.mustRefresh(c, r2.RefreshToken, "the token it returned, at once")
	e.clock.Advance(2 * time.Second)
	late := e.mustRefresh(c, tr.RefreshToken, "the first token again, 2 s after its first use")
	var rec refreshRecord
	if err := e.b.seal.open(purposeRefresh, late.RefreshToken, &rec); err != nil || rec.Gen != 3 {
		t.Fatalf("the straggler's refresh token: generation %d (%v), want 3, the one in line", rec.Gen, err)
	}
	r4 := e.mustRefresh(c, r3.RefreshToken, "the session's newest token")
	r5 := e.mustRefresh(c, late.RefreshToken, "the straggler's token, within the window of its generation")
	for _, r := range []*tokenReply{r3, r4, late, r5} {
		e.mustVerify(r.AccessToken)
	}
	e.clock.Advance(29 * time.Second)
	if r := e.refresh(c, tr.RefreshToken); r.Error != "invalid_grant" {
		t.Fatalf("the first token 31 s after its first use: %d %s, want invalid_grant", r.status, r.Error)
	}
	if got := e.verifyReason(r5.AccessToken); got != ReasonRevoked {
		t.Fatalf("the family after a reuse past the window: got %q, want revoked", got)
	}
}

// A refresh token sealed before generations (an ID, no generation) still
// works once after an upgrade, rotating to the first generation, and its
// reuse after the window still ends the session.
func TestRefreshTokenWithoutGeneration(t *testing.T) {
	e := newEnvIssuer(t, noUpstreamRefresh, withGrace)
	c, tr := e.tokens()
	var rec refreshRecord
	if err := e.b.seal.open(purposeRefresh, tr.RefreshToken, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Gen != 1 || rec.ID == "" {
		t.Fatalf("the code's refresh token: generation %d, ID %q; want 1 and an ID", rec.Gen, rec.ID)
	}
	rec.Gen, rec.ID = 0, "legacy-id"
	old, err := e.b.seal.seal(purposeRefresh, time.Unix(rec.End, 0), &rec)
	if err != nil {
		t.Fatal(err)
	}
	r1 := e.mustRefresh(c, old, "a token from before generations")
	var next refreshRecord
	if err := e.b.seal.open(purposeRefresh, r1.RefreshToken, &next); err != nil || next.Gen != 1 {
		t.Fatalf("what it rotated to: generation %d (%v), want 1", next.Gen, err)
	}
	r2 := e.mustRefresh(c, r1.RefreshToken, "its successor")
	e.clock.Advance(31 * time.Second)
	if r := e.refresh(c, old); r.Error != "invalid_grant" {
		t.Fatalf("the old token again after the window: %d %s, want invalid_grant", r.status, r.Error)
	}
	if got := e.verifyReason(r2.AccessToken); got != ReasonRevoked {
		t.Fatalf("the family after the old token's reuse: got %q, want revoked", got)
	}
}

// Two refreshes racing with one token, the provider rotating its own: the
// provider lets one through and refuses the other, whose answer may come
// before the winner has moved the family on. The refused one waits for
// that and answers "just used"; the winner's session lives. (Before the
// wait, 12 races in 20 ended the session.)
func TestRefreshRaceRotatingProvider(t *testing.T) {
	for i := range 10 {
		e := newEnv(t, withGrace)
		c, tr := e.tokens()
		results := make(chan *tokenReply, 2)
		for range 2 {
			go func() { results <- e.refresh(c, tr.RefreshToken) }()
		}
		var won, lost []*tokenReply
		for range 2 {
			if r := <-results; r.status == http.StatusOK {
				won = append(won, r)
			} else {
				lost = append(lost, r)
			}
		}
		if len(won) != 1 {
			t.Fatalf("race %d: %d refreshes won, want 1", i, len(won))
		}
		if lost[0].Error != "invalid_grant" || !strings.Contains(lost[0].Desc, "just used") {
			t.Fatalf("race %d: %d won; the other: %d %s %q; want one 200 and invalid_grant, just used",
				i, len(won), lost[0].status, lost[0].Error, lost[0].Desc)
		}
		e.mustVerify(won[0].AccessToken)
		e.mustRefresh(c, won[0].RefreshToken, fmt.Sprintf("race %d: the winner's token", i))
	}
}

// With the window on, a refusal no concurrent refresh explains (the user
// was disabled at the provider) still ends the family, once the wait for
// such a refresh is over.
func TestRefreshRefusedWithinGrace(t *testing.T) {
	e := newEnv(t, withGrace)
	c, tr := e.tokens()
	e.is.SetDisabled(aliceSub, true)
	if r := e.refresh(c, tr.RefreshToken); r.Error != "invalid_grant" || !strings.Contains(r.Desc, "no longer accepts") {
		t.Fatalf("refresh of a user the provider disabled: %d %s %q", r.status, r.Error, r.Desc)
	}
	if got := e.verifyReason(tr.AccessToken); got != ReasonRevoked {
		t.Fatalf("the family's access token after the refusal: got %q, want revoked", got)
	}
}

// A user removed from the allow-list loses access at the next refresh,
// and the family's access tokens are revoked.
func TestRefreshAllowListRemoved(t *testing.T) {
	e := newEnv(t, nil)
	e.setAllowed(aliceSub)
	c, tr := e.tokens()
	e.setAllowed("bob")
	if r := e.refresh(c, tr.RefreshToken); r.Error != "invalid_grant" {
		t.Fatalf("refresh after removal: %d %s", r.status, r.Error)
	}
	if got := e.verifyReason(tr.AccessToken); got != ReasonRevoked {
		t.Fatalf("access token after removal: got %q, want revoked", got)
	}
}

// The provider is asked at every refresh when it gave a refresh token; a
// user disabled there loses access at the next refresh.
func TestRefreshUpstream(t *testing.T) {
	e := newEnv(t, nil)
	c, tr := e.tokens()
	before := e.is.RefreshHits()
	r1 := e.refresh(c, tr.RefreshToken)
	if r1.status != http.StatusOK || e.is.RefreshHits() != before+1 {
		t.Fatalf("refresh: %d, provider refreshes %d -> %d", r1.status, before, e.is.RefreshHits())
	}
	e.is.SetDisabled(aliceSub, true)
	if r := e.refresh(c, r1.RefreshToken); r.Error != "invalid_grant" || !strings.Contains(r.Desc, "identity provider") {
		t.Fatalf("refresh of a disabled user: %d %s %s", r.status, r.Error, r.Desc)
	}
	if got := e.verifyReason(r1.AccessToken); got != ReasonRevoked {
		t.Fatalf("access token of a disabled user: got %q, want revoked", got)
	}
}

// Groups changed at the provider reach the next access token.
func TestRefreshRereadsIdentity(t *testing.T) {
	e := newEnv(t, nil)
	e.is.GroupsOnlyInUserinfo = true
	c, tr := e.tokens()
	r := e.refresh(c, tr.RefreshToken)
	if got := e.mustVerify(r.AccessToken).Groups; len(got) != 1 || got[0] != "mcp-users" {
		t.Fatalf("groups after refresh: %v", got)
	}
}

// The provider unreachable at refresh: 503, and the refresh token is not
// used up, so the client can retry.
func TestRefreshUpstreamDown(t *testing.T) {
	e := newEnv(t, nil)
	c, tr := e.tokens()
	e.is.SetDown(true)
	r := e.refresh(c, tr.RefreshToken)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("provider down: %d %s", r.status, r.Error)
	}
	e.is.SetDown(false)
	if r := e.refresh(c, tr.RefreshToken); r.status != http.StatusOK {
		t.Fatalf("retry: %d %s %s", r.status, r.Error, r.Desc)
	}
}

// The session's absolute lifetime ends the family however often it
// rotates.
func TestSessionLifetime(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SessionTTL = 48 * time.Hour })
	c, tr := e.tokens()
	rt := tr.RefreshToken
	for range 47 {
		e.clock.Advance(time.Hour)
		r := e.refresh(c, rt)
		if r.status != http.StatusOK {
			t.Fatalf("refresh within the session: %d %s", r.status, r.Desc)
		}
		rt = r.RefreshToken
		if r.ExpiresIn > 3600 {
			t.Fatalf("expires_in %d", r.ExpiresIn)
		}
	}
	e.clock.Advance(90 * time.Minute)
	if r := e.refresh(c, rt); r.Error != "invalid_grant" {
		t.Fatalf("refresh after the session's end: %d %s", r.status, r.Error)
	}
}

// Without a refresh token from the provider, a session lasts at most 24 h
// whatever SessionTTL says, and access tokens never outlive it.
func TestSessionWithoutUpstreamRefresh(t *testing.T) {
	// The provider lists no offline_access, so the broker does not ask for
	// it and the provider gives no refresh token.
	e := newEnvIssuer(t, func(is *devissuer.Issuer) {
		is.Extra = map[string]any{"scopes_supported": []string{"openid", "email"}}
	}, nil)
	c, tr := e.tokens()
	before := e.is.RefreshHits()
	e.clock.Advance(23*time.Hour + 30*time.Minute)
	r := e.refresh(c, tr.RefreshToken)
	if r.status != http.StatusOK || e.is.RefreshHits() != before {
		t.Fatalf("refresh at 23.5 h: %d %s (provider refreshes %d -> %d)", r.status, r.Desc, before, e.is.RefreshHits())
	}
	if r.ExpiresIn != 1800 {
		t.Fatalf("expires_in at 23.5 h: got %d, want 1800 (the session's end)", r.ExpiresIn)
	}
	e.clock.Advance(time.Hour)
	if r := e.refresh(c, r.RefreshToken); r.Error != "invalid_grant" {
		t.Fatalf("refresh at 24.5 h: %d %s", r.status, r.Error)
	}
}

// A refresh may narrow the scope, never widen it (RFC 6749 §6).
func TestRefreshScope(t *testing.T) {
	e := newEnv(t, nil)
	c, tr := e.tokens()
	r := e.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tr.RefreshToken}, "client_id": {c.ID}, "scope": {"mcp:read"}})
	if r.status != http.StatusOK || r.Scope != "mcp:read" {
		t.Fatalf("narrowed: %d %q", r.status, r.Scope)
	}
	// The refresh token keeps the original grant.
	r = e.refresh(c, r.RefreshToken)
	if r.Scope != testScopes {
		t.Fatalf("next refresh: %q, want %q", r.Scope, testScopes)
	}
	r = e.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r.RefreshToken}, "client_id": {c.ID}, "scope": {"mcp:read admin"}})
	if r.Error != "invalid_scope" {
		t.Fatalf("widened: %d %s", r.status, r.Error)
	}
}

// Parameters sent without a value are treated as omitted (RFC 6749 §3.1,
// §3.2), at the authorization endpoint and at the token endpoint: an empty
// resource names no resource, an empty scope at a refresh asks for what
// was requested at login, an empty client_secret is no secret, and an
// empty value beside a real one does not make a parameter given twice.
func TestEmptyParametersOmitted(t *testing.T) {
	e := newEnv(t, nil)
	c := e.publicClient()
	a := newAuthRequest(c)
	a.extra = url.Values{"resource": {""}, "scope": {"", testScopes}}
	code := e.code(newBrowser(t), a, alice)
	tr := e.token(url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {a.redirect},
		"code_verifier": {a.verifier}, "client_id": {c.ID}, "resource": {""}, "client_secret": {""},
	})
	if tr.status != http.StatusOK || tr.Scope != testScopes {
		t.Fatalf("redeem with empty resource and client_secret: %d %s %s, scope %q", tr.status, tr.Error, tr.Desc, tr.Scope)
	}
	for _, scope := range []string{"", " "} {
		r := e.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tr.RefreshToken}, "client_id": {c.ID}, "scope": {scope}, "resource": {""}})
		if r.status != http.StatusOK || r.Scope != testScopes {
			t.Fatalf("refresh with scope %q: %d %s %s, scope %q, want %q", scope, r.status, r.Error, r.Desc, r.Scope, testScopes)
		}
		if got := strings.Join(e.mustVerify(r.AccessToken).Scopes, " "); got != testScopes {
			t.Fatalf("refresh with scope %q: token scopes %q, want %q", scope, got, testScopes)
		}
		tr = r
	}
}

// GrantScopes decides at login and again at every refresh.
func TestGrantScopesHook(t *testing.T) {
	var writers []string
	e := newEnv(t, func(c *Config) {
		c.GrantScopes = func(id *provider.Identity, requested []string) []string {
			out := []string{"admin"} // never requested: ignored
			for _, s := range requested {
				if s != "mcp:write" || id.Email == aliceEmail && len(writers) > 0 {
					out = append(out, s)
				}
			}
			return out
		}
	})
	c, tr := e.tokens()
	if tr.Scope != "mcp:read" {
		t.Fatalf("granted at login: %q", tr.Scope)
	}
	writers = []string{aliceEmail}
	r := e.refresh(c, tr.RefreshToken)
	if r.Scope != testScopes {
		t.Fatalf("granted at refresh: %q", r.Scope)
	}
}

// Confidential clients authenticate with their secret, by HTTP Basic or
// in the form; public clients with their client_id alone.
func TestClientAuthentication(t *testing.T) {
	e := newEnv(t, nil)
	conf := e.register(map[string]any{"redirect_uris": []string{clientRedirect}, "token_endpoint_auth_method": "client_secret_basic"})
	if conf.Secret == "" {
		t.Fatal("no secret for a confidential client")
	}
	pub := e.publicClient()
	codeFor := func(c registered) (*authRequest, url.Values) {
		a := newAuthRequest(c)
		code := e.code(newBrowser(t), a, alice)
		return a, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {a.redirect}, "code_verifier": {a.verifier}}
	}
	tests := []struct {
		name      string
		client    registered
		form      url.Values // added to the code request
		basic     []string
		header    http.Header // raw headers, instead of basic
		wantCode  int
		wantError string
		wantBasic bool // a WWW-Authenticate: Basic challenge
	}{
		{name: "confidential, basic", client: conf, basic: []string{conf.ID, conf.Secret}, wantCode: 200},
		{name: "confidential, post", client: conf, form: url.Values{"client_id": {conf.ID}, "client_secret": {conf.Secret}}, wantCode: 200},
		{name: "confidential, no secret", client: conf, form: url.Values{"client_id": {conf.ID}}, wantCode: 401, wantError: "invalid_client"},
		{name: "confidential, wrong secret (basic)", client: conf, basic: []string{conf.ID, "wrong"}, wantCode: 401, wantError: "invalid_client", wantBasic: true},
		{name: "confidential, wrong secret (post)", client: conf, form: url.Values{"client_id": {conf.ID}, "client_secret": {"wrong"}}, wantCode: 401, wantError: "invalid_client"},
		{name: "two methods at once", client: conf, basic: []string{conf.ID, conf.Secret}, form: url.Values{"client_secret": {conf.Secret}}, wantCode: 400, wantError: "invalid_request"},
		{name: "basic and another client_id", client: conf, basic: []string{conf.ID, conf.Secret}, form: url.Values{"client_id": {pub.ID}}, wantCode: 400, wantError: "invalid_request"},
		{name: "public, client_id only", client: pub, form: url.Values{"client_id": {pub.ID}}, wantCode: 200},
		{name: "public with a made-up secret", client: pub, form: url.Values{"client_id": {pub.ID}, "client_secret": {"x"}}, wantCode: 401, wantError: "invalid_client"},
		{name: "basic, not base64", client: conf, form: url.Values{"client_id": {conf.ID}}, header: http.Header{"Authorization": {"Basic %%%"}}, wantCode: 401, wantError: "invalid_client", wantBasic: true},
		{name: "basic, no colon", client: conf, form: url.Values{"client_id": {conf.ID}}, header: http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(conf.ID))}}, wantCode: 401, wantError: "invalid_client", wantBasic: true},
		{name: "basic, nothing after the scheme", client: pub, form: url.Values{"client_id": {pub.ID}}, header: http.Header{"Authorization": {"basic"}}, wantCode: 401, wantError: "invalid_client", wantBasic: true},
		{name: "two authorization headers", client: conf, header: http.Header{"Authorization": {basicHeader(conf.ID, conf.Secret), basicHeader(pub.ID, "x")}}, wantCode: 400, wantError: "invalid_request"},
		{name: "two authorization headers, public client", client: pub, form: url.Values{"client_id": {pub.ID}}, header: http.Header{"Authorization": {"Bearer a", "Bearer b"}}, wantCode: 400, wantError: "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, form := codeFor(tt.client)
			for k, v := range tt.form {
				form[k] = v
			}
			var r *tokenReply
			if tt.header != nil {
				r = e.postTokenHeader(TokenPath, form, tt.header)
			} else {
				r = e.token(form, tt.basic...)
			}
			if r.status != tt.wantCode || r.Error != tt.wantError {
				t.Fatalf("got %d %s (%s), want %d %s", r.status, r.Error, r.Desc, tt.wantCode, tt.wantError)
			}
			if got := strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic"); got != tt.wantBasic {
				t.Fatalf("Basic challenge: got %v, want %v", got, tt.wantBasic)
			}
		})
	}
}

// basicHeader is an Authorization header of HTTP Basic credentials (RFC
// 6749 §2.3.1: each form-encoded first).
func basicHeader(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
}

// Malformed token requests get RFC 6749 §5.2 errors, never cached.
func TestTokenRequestErrors(t *testing.T) {
	e := newEnv(t, nil)
	c := e.publicClient()
	post := func(contentType, query, body string) *tokenReply {
		req, _ := http.NewRequest(http.MethodPost, e.origin+TokenPath+query, strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		resp, err := (&http.Client{}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		r := &tokenReply{status: resp.StatusCode, header: resp.Header}
		_ = jsonDecode(resp, r)
		return r
	}
	form := "client_id=" + url.QueryEscape(c.ID)
	tests := []struct {
		name, ct, query, body string
		wantError             string
	}{
		{name: "json body", ct: "application/json", body: `{"grant_type":"refresh_token"}`, wantError: "invalid_request"},
		{name: "parameters in the url", ct: "application/x-www-form-urlencoded", query: "?grant_type=refresh_token", body: form, wantError: "invalid_request"},
		{name: "parameter twice", ct: "application/x-www-form-urlencoded", body: form + "&grant_type=a&grant_type=b", wantError: "invalid_request"},
		{name: "no grant type", ct: "application/x-www-form-urlencoded", body: form, wantError: "invalid_request"},
		{name: "client credentials", ct: "application/x-www-form-urlencoded", body: form + "&grant_type=client_credentials", wantError: "unsupported_grant_type"},
		{name: "password", ct: "application/x-www-form-urlencoded", body: form + "&grant_type=password&username=a&password=b", wantError: "unsupported_grant_type"},
		{name: "no code", ct: "application/x-www-form-urlencoded", body: form + "&grant_type=authorization_code&redirect_uri=" + url.QueryEscape(clientRedirect) + "&code_verifier=" + oauth2.GenerateVerifier(), wantError: "invalid_request"},
		{name: "empty code", ct: "application/x-www-form-urlencoded", body: form + "&grant_type=authorization_code&code=&redirect_uri=" + url.QueryEscape(clientRedirect) + "&code_verifier=" + oauth2.GenerateVerifier(), wantError: "invalid_request"},
		{name: "no redirect uri", ct: "application/x-www-form-urlencoded", body: form + "&grant_type=authorization_code&code=abc&code_verifier=" + oauth2.GenerateVerifier(), wantError: "invalid_request"},
		{name: "no code verifier", ct: "application/x-www-form-urlencoded", body: form + "&grant_type=authorization_code&code=abc&redirect_uri=" + url.QueryEscape(clientRedirect), wantError: "invalid_request"},
		{name: "no refresh token", ct: "application/x-www-form-urlencoded", body: form + "&grant_type=refresh_token", wantError: "invalid_request"},
		{name: "body too large", ct: "application/x-www-form-urlencoded", body: form + "&x=" + strings.Repeat("a", 70<<10), wantError: "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := post(tt.ct, tt.query, tt.body)
			if r.status != http.StatusBadRequest || r.Error != tt.wantError {
				t.Fatalf("got %d %q, want 400 %q", r.status, r.Error, tt.wantError)
			}
			if r.header.Get("Cache-Control") != "no-store" || r.header.Get("Content-Type") != "application/json" {
				t.Fatalf("headers: %v", r.header)
			}
		})
	}
}

// Per-IP and per-client limits at the token endpoint answer 429 with
// Retry-After, and neither uses a refresh token up.
func TestTokenRateLimits(t *testing.T) {
	ipLim, clientLim := &denyLimiter{budget: 1000}, &denyLimiter{budget: 1}
	e := newEnv(t, func(c *Config) { c.IPLimiter, c.ClientLimiter = ipLim, clientLim })
	conf := e.register(map[string]any{"redirect_uris": []string{clientRedirect}, "token_endpoint_auth_method": "client_secret_basic"})
	a := newAuthRequest(conf)
	code := e.code(newBrowser(t), a, alice)
	tr := e.token(url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {a.redirect}, "code_verifier": {a.verifier}}, conf.ID, conf.Secret)
	if tr.status != http.StatusOK {
		t.Fatalf("redeem: %d %s %s", tr.status, tr.Error, tr.Desc)
	}
	refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tr.RefreshToken}}
	r := e.token(refresh, conf.ID, conf.Secret)
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "2" {
		t.Fatalf("over the client limit: %d Retry-After %q", r.status, r.header.Get("Retry-After"))
	}
	if k := clientLim.keys[len(clientLim.keys)-1]; k != "broker-client:"+clientKey(conf.ID) {
		t.Fatalf("client limiter key: %q", k)
	}
	ipLim.mu.Lock()
	ipLim.budget = 0
	ipLim.mu.Unlock()
	if r := e.token(refresh, conf.ID, conf.Secret); r.status != http.StatusTooManyRequests {
		t.Fatalf("over the IP limit: %d", r.status)
	}
	ipLim.mu.Lock()
	ipLim.budget = 1000
	ipLim.mu.Unlock()
	clientLim.mu.Lock()
	clientLim.budget = 1000
	clientLim.mu.Unlock()
	if r := e.token(refresh, conf.ID, conf.Secret); r.status != http.StatusOK {
		t.Fatalf("after the limits: %d %s", r.status, r.Desc)
	}
}

// The per-client budget is not anyone's to spend. A public client's
// client_id is no secret (a metadata document's is a public URL that all
// users of claude.ai share), so junk requests naming it must not lock its
// users out; nor may requests with a wrong secret spend a confidential
// client's budget.
func TestClientBudgetNotSpentByOthers(t *testing.T) {
	clientLim := &denyLimiter{budget: 2}
	e := newEnv(t, func(c *Config) { c.ClientLimiter = clientLim })
	pub, tr := e.tokens()
	for i := range 5 {
		if r := e.refresh(pub, "junk"); r.status != http.StatusBadRequest || r.Error != "invalid_grant" {
			t.Fatalf("junk refresh %d naming a public client: %d %s", i, r.status, r.Error)
		}
	}
	if r := e.refresh(pub, tr.RefreshToken); r.status != http.StatusOK {
		t.Fatalf("the public client's user after junk requests naming it: %d %s %s", r.status, r.Error, r.Desc)
	}

	conf := e.register(map[string]any{"redirect_uris": []string{clientRedirect}, "token_endpoint_auth_method": "client_secret_basic"})
	junk := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"junk"}}
	for i := range 5 {
		if r := e.token(junk, conf.ID, "wrong"); r.status != http.StatusUnauthorized {
			t.Fatalf("wrong secret %d: %d %s", i, r.status, r.Error)
		}
	}
	for i := range 2 {
		if r := e.token(junk, conf.ID, conf.Secret); r.status != http.StatusBadRequest || r.Error != "invalid_grant" {
			t.Fatalf("the confidential client's own request %d: %d %s", i, r.status, r.Error)
		}
	}
	if r := e.token(junk, conf.ID, conf.Secret); r.status != http.StatusTooManyRequests {
		t.Fatalf("the confidential client past its own budget: %d %s", r.status, r.Error)
	}
}

// A failing store fails closed: no code or refresh token is accepted
// without it, and Verify says not ready (the gate answers 503).
func TestStoreDown(t *testing.T) {
	e := newEnv(t, nil)
	c, tr := e.tokens()
	a := newAuthRequest(c)
	code := e.code(newBrowser(t), a, alice)
	e.b.store = failingStore{}
	if r := e.redeem(a, code); r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("redeem with the store down: %d", r.status)
	}
	if r := e.refresh(c, tr.RefreshToken); r.status != http.StatusServiceUnavailable {
		t.Fatalf("refresh with the store down: %d", r.status)
	}
	if _, err := e.b.Verify(context.Background(), tr.AccessToken); !errors.Is(err, provider.ErrNotReady) {
		t.Fatalf("verify with the store down: %v, want ErrNotReady", err)
	}
	e.b.store = e.store
	if r := e.redeem(a, code); r.status != http.StatusOK {
		t.Fatalf("redeem once the store is back: %d %s", r.status, r.Desc)
	}
}

// A client registered without refresh_token gets no refresh token.
func TestNoRefreshGrant(t *testing.T) {
	e := newEnv(t, nil)
	c := e.register(map[string]any{"redirect_uris": []string{clientRedirect}, "grant_types": []string{"authorization_code"}})
	a := newAuthRequest(c)
	tr := e.redeem(a, e.code(newBrowser(t), a, alice))
	if tr.status != http.StatusOK || tr.RefreshToken != "" {
		t.Fatalf("got %d, refresh token %q", tr.status, tr.RefreshToken)
	}
}

// olderRefreshRecord is a refresh token as a gateway from before
// generations reads and seals it (refreshRecord at 25b2ac8): no
// generation; its ID is claimed in the store ("rt:"+ID) when used.
type olderRefreshRecord struct {
	Family   string   `json:"f"`
	ID       string   `json:"id"`
	ClientID string   `json:"c"`
	Scopes   []string `json:"sc,omitempty"`
	Resource string   `json:"rs"`
	User     identity `json:"u"`
	AuthTime int64    `json:"at"`
	End      int64    `json:"end"`
	Upstream string   `json:"ur,omitempty"`
}

// olderRefresh does with refresh token rt what a gateway from before
// generations sharing the store does (a replica not yet upgraded, or the
// release before after a rollback): it claims the token by its ID and
// rotates it to one with a new ID and no generation. first is its claim.
func (e *env) olderRefresh(rt string) (next string, first bool) {
	e.t.Helper()
	var rec olderRefreshRecord
	if err := e.b.seal.open(purposeRefresh, rt, &rec); err != nil {
		e.t.Fatal(err)
	}
	end := time.Unix(rec.End, 0)
	first, _, err := e.store.ClaimSince(context.Background(), "rt:"+rec.ID, e.b.until(end))
	if err != nil {
		e.t.Fatal(err)
	}
	rec.ID = rand.Text()
	if next, err = e.b.seal.seal(purposeRefresh, end, &rec); err != nil {
		e.t.Fatal(err)
	}
	return next, first
}

// A gateway from before generations that shares the store (a replica not
// yet upgraded, or a rollback) claims each refresh token by its own ID: if
// tokens had none, every session's would be the one key "rt:", and every
// refresh there after the first would read as a reuse and end its session.
func TestRefreshTokenAtOlderGateway(t *testing.T) {
	e := newEnvIssuer(t, noUpstreamRefresh, withGrace)
	for i := range 3 {
		_, tr := e.tokens()
		if _, first := e.olderRefresh(tr.RefreshToken); !first {
			t.Fatalf("session %d's unused refresh token at an older gateway: already claimed", i+1)
		}
	}
}

// A session whose refresh goes through a gateway from before generations
// (which drops the generation) and back keeps working: the token it
// rotated to must not read as a generation the family already left. A
// reuse of the token the older gateway issued still ends the family.
func TestRefreshThroughOlderGateway(t *testing.T) {
	e := newEnvIssuer(t, noUpstreamRefresh, withGrace)
	c, tr := e.tokens()
	rt := tr.RefreshToken
	for i := range 3 {
		rt = e.mustRefresh(c, rt, fmt.Sprintf("refresh %d", i+1)).RefreshToken
	}
	e.clock.Advance(time.Minute)
	older, first := e.olderRefresh(rt)
	if !first {
		t.Fatal("the current refresh token at an older gateway: already claimed")
	}
	e.clock.Advance(time.Minute)
	r := e.mustRefresh(c, older, "the older gateway's token, back at this one")
	e.clock.Advance(time.Minute)
	r = e.mustRefresh(c, r.RefreshToken, "the refresh after that")
	e.mustVerify(r.AccessToken)
	r = e.mustRefresh(c, r.RefreshToken, "and the next")
	if got := e.refresh(c, older); got.Error != "invalid_grant" {
		t.Fatalf("the older gateway's token again after the window: %d %s, want invalid_grant", got.status, got.Error)
	}
	if got := e.verifyReason(r.AccessToken); got != ReasonRevoked {
		t.Fatalf("the family after that reuse: got %q, want revoked", got)
	}
}

// pollWatch is a Store that reports the first Generation call, which only
// a refused refresh waiting for a concurrent one makes.
type pollWatch struct {
	Store
	once   sync.Once
	polled chan struct{}
}

func (s *pollWatch) Generation(ctx context.Context, key string) (int64, error) {
	s.once.Do(func() { close(s.polled) })
	return s.Store.Generation(ctx, key)
}

// A refused refresh whose client hangs up while it waits for the
// concurrent refresh the provider let through decides as if it had
// waited: the winner's session lives. (Deciding at the hang-up spent the
// token before the winner could and ended the session, the race the wait
// is there to close.)
func TestRefreshRaceLoserHangsUp(t *testing.T) {
	var hold atomic.Bool
	entered, release := make(chan struct{}), make(chan struct{})
	watch := &pollWatch{polled: make(chan struct{})}
	e := newEnv(t, func(c *Config) {
		withGrace(c)
		watch.Store = c.Store
		c.Store = watch
		c.Allow = func(*provider.Identity) bool {
			if hold.CompareAndSwap(true, false) {
				close(entered)
				<-release
			}
			return true
		}
	})
	c, tr := e.tokens()
	hold.Store(true)
	won := make(chan *tokenReply, 1)
	go func() { won <- e.refresh(c, tr.RefreshToken) }()
	<-entered // the winner refreshed at the provider and has not moved the family on

	ctx, cancel := context.WithCancel(context.Background())
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tr.RefreshToken}, "client_id": {c.ID}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.origin+TokenPath, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	hungUp := make(chan struct{})
	go func() {
		defer close(hungUp)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	<-watch.polled // the provider refused the loser, which waits
	cancel()
	<-hungUp
	time.Sleep(300 * time.Millisecond) // the loser's handler sees the hang-up
	close(release)
	r := <-won
	if r.status != http.StatusOK {
		t.Fatalf("the winner: %d %s %q", r.status, r.Error, r.Desc)
	}
	if got := e.verifyReason(r.AccessToken); got != "" {
		t.Fatalf("the winner's access token after the loser hung up: %q, want accepted", got)
	}
	e.mustRefresh(c, r.RefreshToken, "the winner's token")
}
