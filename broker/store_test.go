package broker

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/store"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/store/redistest"
)

// With CallerChecksRevocation, Verify needs no store: the identity names
// the token's revocation keys, and an admission over the broker's store
// refuses the token once it is revoked.
func TestCallerChecksRevocation(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.CallerChecksRevocation = true })
	c, tr := e.tokens()
	limits, err := store.NewLimiter(store.LimiterConfig{PerMinute: 100})
	if err != nil {
		t.Fatal(err)
	}
	admission, err := store.NewAdmission(limits, e.store)
	if err != nil {
		t.Fatal(err)
	}

	e.b.store = failingStore{} // Verify must not ask it
	id := e.mustVerify(tr.AccessToken)
	cached := e.mustVerify(tr.AccessToken)
	for _, got := range [][]string{id.Revocation, cached.Revocation} {
		if len(got) != 2 || !slices.ContainsFunc(got, func(k string) bool { return len(k) > 4 && k[:4] == "jti:" }) ||
			!slices.ContainsFunc(got, func(k string) bool { return len(k) > 4 && k[:4] == "fam:" }) {
			t.Fatalf("Revocation: got %q, want a jti: and a fam: key", got)
		}
	}
	e.b.store = e.store
	if ok, _, revoked := admission.Admit(context.Background(), id.Subject, id.Revocation); !ok || revoked {
		t.Fatalf("before revocation: ok %v revoked %v", ok, revoked)
	}
	if r := e.revoke(c, tr.RefreshToken, ""); r.status != http.StatusOK {
		t.Fatalf("revoke: %d", r.status)
	}
	id = e.mustVerify(tr.AccessToken) // still verifies: revocation is the caller's
	if _, _, revoked := admission.Admit(context.Background(), id.Subject, id.Revocation); !revoked {
		t.Errorf("after the family's revocation: admitted, want revoked")
	}
}

// The broker on a real Redis that stops and starts again (keeping its
// data, as with an append-only file): while it is down codes and refresh
// tokens are refused with 503 and Retry-After and access tokens still
// verify; after it is back, a code redeemed before the outage is still
// used, one issued before it is redeemed once, and never twice.
func TestRedisDownAtTheTokenEndpoint(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Persist: true})
	rs, err := store.OpenRedis(store.RedisConfig{URL: srv.URL(), Retry: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	e := newEnv(t, func(c *Config) { c.Store, c.CallerChecksRevocation = rs, true })

	c := e.publicClient()
	used := newAuthRequest(c)
	usedCode := e.code(newBrowser(t), used, alice)
	tr := e.redeem(used, usedCode)
	if tr.status != http.StatusOK {
		t.Fatalf("redeem: %d %s", tr.status, tr.Desc)
	}
	pending := newAuthRequest(c)
	pendingCode := e.code(newBrowser(t), pending, alice)

	srv.Stop()
	for name, r := range map[string]*tokenReply{
		"redeem a new code":    e.redeem(pending, pendingCode),
		"redeem the used code": e.redeem(used, usedCode),
		"refresh":              e.refresh(c, tr.RefreshToken),
	} {
		if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
			t.Errorf("%s with Redis down: got %d (Retry-After %q), want 503 with Retry-After", name, r.status, r.header.Get("Retry-After"))
		}
	}
	e.mustVerify(tr.AccessToken)

	srv.Restart()
	time.Sleep(20 * time.Millisecond) // past Retry: the next request asks Redis again
	next := e.refresh(c, tr.RefreshToken)
	if next.status != http.StatusOK {
		t.Fatalf("refresh after the outage: got %d %s, want 200", next.status, next.Desc)
	}
	if r := e.redeem(pending, pendingCode); r.status != http.StatusOK {
		t.Errorf("the code pending during the outage: got %d %s, want 200", r.status, r.Desc)
	}
	if r := e.redeem(pending, pendingCode); r.status != http.StatusBadRequest {
		t.Errorf("that code again: got %d, want 400", r.status)
	}
	// Redis kept the first use of the code through its restart: a second
	// use is refused and revokes what the first one issued.
	if r := e.redeem(used, usedCode); r.status != http.StatusBadRequest || r.Error != "invalid_grant" {
		t.Errorf("the code used before the outage: got %d %s, want 400 invalid_grant", r.status, r.Error)
	}
	if r := e.refresh(c, next.RefreshToken); r.status != http.StatusBadRequest {
		t.Errorf("refresh after the code's reuse: got %d, want 400 (the family is revoked)", r.status)
	}
}

// TestCallbackWithTheStoreDown: a login that reaches the callback while the
// store cannot claim its one use gets a 503 page and keeps its flow cookie,
// so reloading the callback once the store answers completes the sign-in
// (the provider's code is redeemed only after the claim), exactly once.
func TestCallbackWithTheStoreDown(t *testing.T) {
	e := newEnv(t, nil)
	c := e.publicClient()
	a := newAuthRequest(c)
	br := newBrowser(t)
	resp := br.get(a.url(e.origin))
	if resp.status == http.StatusOK {
		resp = br.post(e.origin+ConsentPath, consentForm(t, resp, "approve"), e.origin)
	}
	if resp.status != http.StatusSeeOther {
		t.Fatalf("authorize: %d\n%s", resp.status, resp.body)
	}
	back := e.providerLogin(br, resp.location(t), alice)

	e.b.store = failingStore{}
	down := br.get(back.String())
	if down.status != http.StatusServiceUnavailable {
		t.Fatalf("callback with the store down: %d, want 503\n%s", down.status, down.body)
	}
	for _, sc := range down.header.Values("Set-Cookie") {
		if strings.HasPrefix(sc, flowCookie) || strings.Contains(sc, flowCookie) {
			t.Errorf("callback with the store down cleared the login's cookie: %s", sc)
		}
	}

	e.b.store = e.store
	again := br.get(back.String())
	q := again.location(t).Query()
	if again.status != http.StatusSeeOther || q.Get("code") == "" || q.Get("state") != a.state {
		t.Fatalf("callback reloaded once the store answers: %d %v, want the client's redirect with a code", again.status, q)
	}
	if tr := e.redeem(a, q.Get("code")); tr.status != http.StatusOK {
		t.Errorf("redeem the code: %d %s", tr.status, tr.Error)
	}
	if third := br.get(back.String()); third.status != http.StatusBadRequest {
		t.Errorf("the callback a third time: %d, want 400 (one use)", third.status)
	}
}
