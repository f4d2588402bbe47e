package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/gate"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/store"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// BenchmarkAdmit is the gate's admit path (a cached token, allow-list, rate
// limiter, proxy with a canned answer, the JSON audit line to io.Discard)
// for a tools/call POST, with metrics and the MCP audit read off and on.
func BenchmarkAdmit(b *testing.B) {
	const body = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello, world"}}}`
	for _, c := range []struct {
		name    string
		metrics bool
		audit   bool
	}{
		{"off", false, false},
		{"audit", false, true},
		{"metrics", true, false},
		{"on", true, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			m := New()
			env := newIssuer(b, m)
			limits, err := store.NewLimiter(store.LimiterConfig{PerMinute: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			subjects, err := store.NewAdmission(limits, store.NewMemory(store.MemoryConfig{}))
			if err != nil {
				b.Fatal(err)
			}
			failures, err := store.NewLimiter(store.LimiterConfig{PerMinute: gate.DefaultFailedAuthPerIPPerMinute})
			if err != nil {
				b.Fatal(err)
			}
			cfg := gate.Config{
				Verifier:            env.p,
				Upstream:            gate.Static(&url.URL{Scheme: "http", Host: "127.0.0.1:1"}),
				UpstreamPath:        "/mcp",
				ResourceMetadataURL: "https://mcp.example.com/.well-known/oauth-protected-resource",
				AllowSubs:           []string{"alice"},
				SubjectLimiter:      subjects,
				FailedAuthLimiter:   failures,
				Transport:           testkit.CannedUpstream{},
				Logger:              hclog.New(&hclog.LoggerOptions{Name: "gate", Output: io.Discard, JSONFormat: true, Level: hclog.Info}),
				MCPAuditBytes:       -1,
			}
			if c.metrics {
				cfg.Metrics = m
			}
			if c.audit {
				cfg.MCPAuditBytes = 0 // the default bound
			}
			g, err := gate.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			tok := env.token(b, "alice", audience, time.Hour, nil)
			req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			req.RemoteAddr = "192.0.2.1:1234"
			w := httptest.NewRecorder()
			if g.ServeHTTP(w, req); w.Code != 200 { // warm: the token cache
				b.Fatalf("status: got %d (%s)", w.Code, w.Body)
			}
			testkit.ServeLoop(b, g, req, body, "")
		})
	}
}

// BenchmarkRequest is the cost of counting one proxied request.
func BenchmarkRequest(b *testing.B) {
	m := New()
	o := gate.Outcome{Class: gate.ClassProxied, Status: 200, Duration: 3 * time.Millisecond, Upstream: 2 * time.Millisecond}
	b.ReportAllocs()
	for b.Loop() {
		m.Request(o)
	}
}
