package gate

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/store"
)

// revocable is a Verifier that leaves revocation to the gate, as the
// broker's does in production (broker.Config.CallerChecksRevocation): the
// identity names the token's revocation keys.
type revocable struct {
	v    Verifier
	keys []string
}

func (r revocable) Verify(ctx context.Context, raw string) (*provider.Identity, error) {
	id, err := r.v.Verify(ctx, raw)
	if err != nil {
		return nil, err
	}
	cp := *id
	cp.Revocation = r.keys
	return &cp, nil
}

// TestAdmissionRevocation: a token revoked after it was issued is refused
// at the admission (401 invalid_token), counts as a failed authentication
// of its client, and never reaches the upstream.
func TestAdmissionRevocation(t *testing.T) {
	env := newIssuer(t)
	revocations := store.NewMemory(store.MemoryConfig{})
	s := newSetup(t, env, nil, func(c *Config) {
		c.Verifier = revocable{env.p, []string{"jti:t1", "fam:f1"}}
		a, err := store.NewAdmission(testLimiter(t, 1000, c.Now), revocations)
		if err != nil {
			t.Fatal(err)
		}
		c.SubjectLimiter = a
		c.FailedAuthLimiter = testLimiter(t, 1, c.Now)
	})
	tok := env.token(t, "alice", nil)
	if resp, _ := s.do(t, "GET", "/", bearerHeader(tok), nil); resp.StatusCode != 200 {
		t.Fatalf("before revocation: status %d, want 200", resp.StatusCode)
	}
	if err := revocations.Revoke(context.Background(), "fam:f1", time.Hour); err != nil {
		t.Fatal(err)
	}
	resp, body := s.do(t, "GET", "/", bearerHeader(tok), nil)
	if got, want := resp.StatusCode, 401; got != want {
		t.Fatalf("revoked: status %d, want %d (%s)", got, want, body)
	}
	if got := resp.Header.Get("Www-Authenticate"); !strings.Contains(got, `error="invalid_token"`) || !strings.Contains(got, "revoked") {
		t.Errorf("WWW-Authenticate: got %q, want invalid_token, revoked", got)
	}
	if got, want := len(s.up.requests()), 1; got != want {
		t.Errorf("upstream requests: got %d, want %d", got, want)
	}
	// The failed-authentication budget (1 a minute) was spent by the
	// revoked token: the client's next attempt is refused before Verify.
	if resp, _ := s.do(t, "GET", "/", bearerHeader(tok), nil); resp.StatusCode != 429 {
		t.Errorf("after a revoked token: status %d, want 429", resp.StatusCode)
	}
}

// TestAdmissionMissing: a verifier that leaves revocation to the gate, and
// a gate with no admission to check it: every such token is refused (503),
// never admitted unchecked.
func TestAdmissionMissing(t *testing.T) {
	env := newIssuer(t)
	s := newSetup(t, env, nil, func(c *Config) {
		c.Verifier = revocable{env.p, []string{"jti:t1"}}
		c.SubjectLimiter = nil
	})
	resp, _ := s.do(t, "GET", "/", bearerHeader(env.token(t, "alice", nil)), nil)
	if got, want := resp.StatusCode, 503; got != want {
		t.Fatalf("status %d, want %d", got, want)
	}
	if got := len(s.up.requests()); got != 0 {
		t.Errorf("upstream requests: got %d, want 0", got)
	}
	// A provider's token (no revocation keys) passes without a limiter.
	s = newSetup(t, env, nil, func(c *Config) { c.SubjectLimiter = nil })
	if resp, _ := s.do(t, "GET", "/", bearerHeader(env.token(t, "alice", nil)), nil); resp.StatusCode != 200 {
		t.Errorf("without revocation keys: status %d, want 200", resp.StatusCode)
	}
}
