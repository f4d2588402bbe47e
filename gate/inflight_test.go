package gate

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// TestConcurrentPerSubject: a subject holds at most
// MaxConcurrentPerSubject requests at once, open event streams included
// (relayed in the handler, or detached); past it 429, while another
// subject is served; a stream that ends gives its place back.
func TestConcurrentPerSubject(t *testing.T) {
	env := newIssuer(t)
	alice := bearerHeader(env.token(t, "alice", nil))
	bob := bearerHeader(env.token(t, "bob", map[string]any{"email": "bob@example.com", "email_verified": true}))
	stream := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}
	for _, tt := range []struct {
		name     string
		shutdown bool
	}{
		{name: "relayed in the handler"},
		{name: "detached", shutdown: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			shutdown, cancel := context.WithCancel(context.Background())
			defer cancel()
			s := newSetup(t, env, stream, func(c *Config) {
				c.MaxConcurrentPerSubject = 2
				if tt.shutdown {
					c.Shutdown = shutdown
				}
			})
			first := s.openStream(t, "/mcp", alice.Clone())
			var got []int
			got = append(got, first.StatusCode, s.openStream(t, "/mcp", alice.Clone()).StatusCode)
			third := s.openStream(t, "/mcp", alice.Clone())
			got = append(got, third.StatusCode, s.openStream(t, "/mcp", bob.Clone()).StatusCode)
			want := []int{http.StatusOK, http.StatusOK, http.StatusTooManyRequests, http.StatusOK}
			if !equalInts(got, want) {
				t.Fatalf("alice's three streams, then bob's: got %v, want %v", got, want)
			}
			if third.Header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
			first.Body.Close()
			testkit.WaitFor(t, "alice's first stream to end", 10*time.Second, func() bool { return s.gate.inFlight.Count("alice") == 1 })
			if r := s.openStream(t, "/mcp", alice.Clone()); r.StatusCode != http.StatusOK {
				t.Fatalf("alice's stream after one ended: %d", r.StatusCode)
			}
		})
	}
}
