package gate

import (
	"net/http"
	"strings"
	"testing"
)

// TestSessionsBoundToSubject: an MCP session belongs to the subject it was
// given to. Another allow-listed user holding its ID, the server's bare ID
// or a forged seal get 404 (a session the server does not know: the client
// starts a new one) and reach nothing; its owner's requests carry the
// server's own ID. Over the gate's own client and httputil.ReverseProxy.
// Without the binding, bob's request went into alice's session.
func TestSessionsBoundToSubject(t *testing.T) {
	env := newIssuer(t)
	for _, own := range []bool{true, false} {
		s := newSetup(t, env, func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Mcp-Session-Id") == "" {
				w.Header().Set("Mcp-Session-Id", "s-alice") // an initialize: the server opens a session
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}`))
		}, func(c *Config) {
			if !own {
				c.Transport = &http.Transport{}
			}
		})
		alice := bearerHeader(env.token(t, "alice", nil))
		bob := bearerHeader(env.token(t, "bob", map[string]any{"email": "bob@example.com", "email_verified": true}))
		post := func(h http.Header, session ...string) (*http.Response, string) {
			h = h.Clone()
			for _, v := range session {
				h.Add("Mcp-Session-Id", v)
			}
			return s.do(t, http.MethodPost, "/", h, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		}

		resp, _ := post(alice)
		sealed := resp.Header.Get("Mcp-Session-Id")
		if !strings.HasPrefix(sealed, "s-alice.") || len(sealed) != len("s-alice.")+sessionMACLen {
			t.Fatalf("own client %v: the session ID the client got: %q, want the server's sealed", own, sealed)
		}
		if resp, body := post(alice, sealed); resp.StatusCode != 200 {
			t.Errorf("own client %v: the owner's request: %d %s", own, resp.StatusCode, body)
		}
		before := len(s.up.requests())
		if got := s.up.requests()[before-1].Header.Get("Mcp-Session-Id"); got != "s-alice" {
			t.Errorf("own client %v: the server got session ID %q, want its own s-alice", own, got)
		}
		for _, c := range []struct {
			name    string
			h       http.Header
			session []string
			status  int
		}{
			{"another user holding the ID", bob, []string{sealed}, 404},
			{"the server's bare ID", alice, []string{"s-alice"}, 404},
			{"a forged seal", alice, []string{"s-alice." + strings.Repeat("A", sessionMACLen)}, 404},
			{"a seal for another ID", alice, []string{"s-bob" + sealed[len("s-alice"):]}, 404},
			{"two IDs", alice, []string{sealed, sealed}, 400},
		} {
			resp, body := post(c.h, c.session...)
			if resp.StatusCode != c.status {
				t.Errorf("own client %v, %s: status %d (%s), want %d", own, c.name, resp.StatusCode, body, c.status)
			}
			if c.status == 404 && !strings.Contains(body, `"code":-32001`) {
				t.Errorf("own client %v, %s: body %s, want a JSON-RPC session-not-found error", own, c.name, body)
			}
		}
		if n := len(s.up.requests()); n != before {
			t.Errorf("own client %v: %d refused requests reached the server", own, n-before)
		}
	}
}
