package gate

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/policy"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/store"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/store/redistest"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// benchGate is the gate the admit benchmarks measure: alice allowed by
// email, limits that never refuse, a canned upstream answer; mod changes
// what a benchmark varies.
func benchGate(b *testing.B, env *issuerEnv, mod func(*Config)) http.Handler {
	b.Helper()
	cfg := Config{
		Verifier:            env.p,
		Upstream:            Static(&url.URL{Scheme: "http", Host: "127.0.0.1:1"}),
		UpstreamPath:        "/mcp",
		ResourceMetadataURL: testMetadataURL,
		AllowEmails:         []string{"alice@example.com"},
		SubjectLimiter:      testAdmission(b, 1<<30, nil),
		FailedAuthLimiter:   testLimiter(b, DefaultFailedAuthPerIPPerMinute, nil),
		Transport:           testkit.CannedUpstream{},
	}
	if mod != nil {
		mod(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return g
}

// benchToolsCallBody is the tools/call the admit benchmarks send.
const benchToolsCallBody = `{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"search_documents","arguments":{"query":"quarterly report","limit":10},"_meta":{"progressToken":"p-42"}}}`

// loopToolsCall sends benchToolsCallBody through g until the benchmark
// ends, failing on any answer but 200, or on another body than reply
// when reply is set. header adds request headers.
func loopToolsCall(b *testing.B, g http.Handler, tok string, header map[string]string, reply string) {
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(benchToolsCallBody))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	req.RemoteAddr = "192.0.2.1:1234"
	testkit.ServeLoop(b, g, req, benchToolsCallBody, reply)
}

// BenchmarkAdmit is the hot path: a valid token (verification cache hit),
// failed-authentication limit's check, allow-list, rate limiter and the proxy with a canned upstream response.
func BenchmarkAdmit(b *testing.B) {
	env := newIssuer(b)
	g := benchGate(b, env, nil)
	tok := env.token(b, "alice", map[string]any{"email": "alice@example.com"})
	req := httptest.NewRequest(http.MethodPost, "/", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	req.RemoteAddr = "192.0.2.1:1234"
	w := httptest.NewRecorder()
	g.ServeHTTP(w, req)
	if w.Code != 200 {
		b.Fatalf("status: got %d, want 200 (%s)", w.Code, w.Body)
	}
	testkit.ServeLoop(b, g, req, "", "")
}

// BenchmarkAdmitShared is the admit path of a token that names revocation
// keys (as the broker's do), with the admission in memory and in a real
// Redis on loopback (redis-server): ns/op, and the round trips to Redis per
// request, counted by a go-redis hook.
func BenchmarkAdmitShared(b *testing.B) {
	env := newIssuer(b)
	srv := redistest.Start(b, redistest.Options{})
	rs, err := store.OpenRedis(store.RedisConfig{URL: srv.URL()})
	if err != nil {
		b.Fatal(err)
	}
	defer rs.Close()
	shared, err := rs.Limiter("sub", store.LimiterConfig{PerMinute: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		admit Admitter
	}{
		{"memory", testAdmission(b, 1<<30, nil)},
		{"redis", shared},
	} {
		b.Run(c.name, func(b *testing.B) {
			g := benchGate(b, env, func(cfg *Config) {
				cfg.Verifier, cfg.SubjectLimiter = revocable{env.p, []string{"jti:abc", "fam:def"}}, c.admit
			})
			req := httptest.NewRequest(http.MethodPost, "/", nil)
			req.Header.Set("Authorization", "Bearer "+env.token(b, "alice", map[string]any{"email": "alice@example.com"}))
			req.Header.Set("Content-Type", "application/json")
			req.RemoteAddr = "192.0.2.1:1234"
			g.ServeHTTP(httptest.NewRecorder(), req) // warm: the token cache, the script
			trips := rs.RoundTrips()
			testkit.ServeLoop(b, g, req, "", "")
			b.ReportMetric(float64(rs.RoundTrips()-trips)/float64(b.N), "roundtrips/op")
		})
	}
}

// BenchmarkFraming is the admit path for a body framed by Content-Length
// and for a chunked one, which the gate answers with Connection: close
// (RFC 9112 §6.1: it cannot tell whether a Content-Length came too). It
// measures what the framing check costs each.
func BenchmarkFraming(b *testing.B) {
	env := newIssuer(b)
	g := benchGate(b, env, func(cfg *Config) {
		cfg.UpstreamPath, cfg.AllowEmails, cfg.AllowSubs, cfg.MCPAuditBytes = "", nil, []string{"alice"}, -1
	})
	tok := env.token(b, "alice", nil)
	const body = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	for _, chunked := range []bool{false, true} {
		name := "content-length"
		if chunked {
			name = "chunked"
		}
		b.Run(name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			req.RemoteAddr = "192.0.2.1:1234"
			if chunked {
				req.ContentLength, req.TransferEncoding = -1, []string{"chunked"}
			}
			testkit.ServeLoop(b, g, req, body, "")
		})
	}
}

// BenchmarkFramingCheck is the framing check alone, per request: the admit
// path's own noise (tens of microseconds on a shared machine) hides it.
func BenchmarkFramingCheck(b *testing.B) {
	for _, chunked := range []bool{false, true} {
		name := "content-length"
		if chunked {
			name = "chunked"
		}
		b.Run(name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader("{}"))
			if chunked {
				req.ContentLength, req.TransferEncoding = -1, []string{"chunked"}
			}
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				delete(w.Header(), "Connection")
				closeIfAmbiguous(w, req)
			}
			if got, want := w.Header().Get("Connection") == "close", chunked; got != want {
				b.Fatalf("Connection: close set: got %v, want %v", got, want)
			}
		})
	}
}

// BenchmarkAdmitToolsCall is the admit path of a tools/call through the
// whole gate handler, without a policy and with a policy of 20 rules whose
// last one decides: what MCP_POLICY costs a call (reading the body whole
// and strictly, the header check, the decision, putting the body back).
func BenchmarkAdmitToolsCall(b *testing.B) {
	env := newIssuer(b)
	var rules []string
	for i := range 19 {
		rules = append(rules, "tool:other_"+itoa(i)+"_*=group:g"+itoa(i)+",scope:s"+itoa(i))
	}
	rules = append(rules, "tool:*=any")
	pol, err := policy.Parse(strings.Join(rules, "; "))
	if err != nil {
		b.Fatal(err)
	}
	tok := env.token(b, "alice", map[string]any{"email": "alice@example.com", "groups": []string{"mcp-users"}})
	for _, c := range []struct {
		name   string
		policy *policy.Policy
	}{{"no policy", nil}, {"20 rules", pol}} {
		b.Run(c.name, func(b *testing.B) {
			g := benchGate(b, env, func(cfg *Config) { cfg.Policy = c.policy })
			loopToolsCall(b, g, tok, map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "search_documents"}, "")
		})
	}
}

// auditBenchLogger is the gateway's JSON logger at info, writing to
// io.Discard: what the audit line costs to build, without the write.
func auditBenchLogger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "mcp-oauth-proxy", Output: io.Discard, JSONFormat: true, Level: hclog.Info}).Named("gate")
}

// BenchmarkAuditLine is the "proxied" audit line alone, for a tools/call
// answered with 200: through hclog's JSON format, and encoded by the gate
// (Config.AuditOutput), both to io.Discard.
func BenchmarkAuditLine(b *testing.B) {
	env := newIssuer(b)
	for _, c := range []struct {
		name string
		out  io.Writer
	}{{"hclog", nil}, {"encoded", io.Discard}} {
		b.Run(c.name, func(b *testing.B) {
			h, err := New(Config{
				Verifier:            env.p,
				Upstream:            Static(&url.URL{Scheme: "http", Host: "127.0.0.1:1"}),
				ResourceMetadataURL: testMetadataURL,
				Logger:              auditBenchLogger(),
				AuditOutput:         c.out,
			})
			if err != nil {
				b.Fatal(err)
			}
			g := h.(*gate)
			w := &recorder{ResponseWriter: httptest.NewRecorder(), status: 200, bytes: 215,
				id: "0b7c4a1e3c6f4f4e9a537c1d2e0f9a11", client: netip.MustParseAddr("192.0.2.1")}
			end := proxyEnd{sub: "alice", email: "alice@example.com", method: http.MethodPost, path: "/mcp",
				info: mcpInfo{method: "tools/call", tool: "search_documents"}, start: g.now(), audit: true}
			b.ReportAllocs()
			for b.Loop() {
				g.proxied(w, &end)
			}
		})
	}
}

// BenchmarkAdmitAudit is the admit path of a tools/call, as
// BenchmarkAdmitToolsCall without a policy, with the audit line off (a
// null logger) and on (the body read for the line's MCP names, and the
// line itself), through hclog and encoded by the gate.
func BenchmarkAdmitAudit(b *testing.B) {
	env := newIssuer(b)
	tok := env.token(b, "alice", map[string]any{"email": "alice@example.com"})
	for _, c := range []struct {
		name string
		log  hclog.Logger
		out  io.Writer
	}{{"off", nil, nil}, {"hclog", auditBenchLogger(), nil}, {"encoded", auditBenchLogger(), io.Discard}} {
		b.Run(c.name, func(b *testing.B) {
			g := benchGate(b, env, func(cfg *Config) { cfg.Logger, cfg.AuditOutput = c.log, c.out })
			loopToolsCall(b, g, tok, nil, "")
		})
	}
}

// BenchmarkAdmitRelay is the whole hot path of the running gateway: a
// tools/call admitted (token cache hit, allow-list, admission, the body
// read for the audit line, the line encoded to io.Discard) and relayed
// over the gate's own HTTP/1.1 client to a real upstream on loopback. The
// allocations counted include the upstream server's own.
func BenchmarkAdmitRelay(b *testing.B) {
	env := newIssuer(b)
	const reply = `{"jsonrpc":"2.0","id":42,"result":{"content":[{"type":"text","text":"quarterly report: 3 documents found"}],"isError":false}}`
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, reply)
	}))
	b.Cleanup(up.Close)
	u, err := url.Parse(up.URL)
	if err != nil {
		b.Fatal(err)
	}
	g, err := New(Config{
		Verifier:            env.p,
		Upstream:            Static(u),
		UpstreamPath:        "/mcp",
		ResourceMetadataURL: testMetadataURL,
		AllowEmails:         []string{"alice@example.com"},
		SubjectLimiter:      testAdmission(b, 1<<30, nil),
		FailedAuthLimiter:   testLimiter(b, DefaultFailedAuthPerIPPerMinute, nil),
		Logger:              auditBenchLogger(),
		AuditOutput:         io.Discard,
	})
	if err != nil {
		b.Fatal(err)
	}
	tok := env.token(b, "alice", map[string]any{"email": "alice@example.com"})
	loopToolsCall(b, g, tok, map[string]string{"Accept": "application/json, text/event-stream"}, reply)
}

// BenchmarkBearer is the Authorization header parser on an RS256 access
// token of the test issuer, as long as the bench's (~800 bytes).
func BenchmarkBearer(b *testing.B) {
	env := newIssuer(b)
	v := "Bearer " + env.token(b, "alice", map[string]any{"email": "alice@example.com", "groups": []string{"mcp-users", "staff"}})
	b.SetBytes(int64(len(v)))
	b.ReportAllocs()
	for b.Loop() {
		if _, st := bearer(v, DefaultMaxTokenBytes); st != bearerOK {
			b.Fatal(st)
		}
	}
}
