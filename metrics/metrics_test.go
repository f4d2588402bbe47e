package metrics

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/devissuer"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/gate"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/policy"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/store"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/supervisor"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

const audience = "my-mcp"

// scrape reads m's exposition and returns each sample by its series.
func scrape(t testing.TB, m *Metrics) map[string]float64 {
	t.Helper()
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("scrape: %d %s", w.Code, w.Body)
	}
	return testkit.ParseMetrics(t, w.Body)
}

// issuer is a running devissuer and a provider that loaded its keys,
// reporting its fetches to m.
type issuer struct {
	is *devissuer.Issuer
	p  *provider.Provider
}

func newIssuer(t testing.TB, m *Metrics) *issuer {
	t.Helper()
	is := testkit.StartIssuer(t, nil)
	p := runProvider(t, provider.Config{IssuerURL: is.URL, Audiences: []string{audience}, OnFetch: m.Fetch})
	testkit.WaitReady(t, p)
	return &issuer{is: is, p: p}
}

// runProvider runs a provider of cfg until the test ends.
func runProvider(t testing.TB, cfg provider.Config) *provider.Provider {
	t.Helper()
	p := provider.New(cfg)
	testkit.Run(t, p)
	return p
}

func (e *issuer) token(t testing.TB, sub, aud string, ttl time.Duration, extra map[string]any) string {
	t.Helper()
	tok, err := e.is.AccessToken(sub, aud, ttl, extra)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type notReady struct{ u *url.URL }

func (n notReady) Endpoint() (*url.URL, bool) { return n.u, false }

// TestRejectionReasons sends one request per way the gate refuses, through
// a gate counting into a real registry, and checks each moves exactly its
// reason and its status.
func TestRejectionReasons(t *testing.T) {
	m := New()
	env := newIssuer(t, m)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	t.Cleanup(up.Close)
	upURL, _ := url.Parse(up.URL)
	alice := env.token(t, "alice", audience, time.Hour, nil)

	limiter := func(perMinute int) *store.Limiter {
		l, err := store.NewLimiter(store.LimiterConfig{PerMinute: perMinute})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	newGate := func(mod func(*gate.Config)) http.Handler {
		cfg := gate.Config{
			Verifier:            env.p,
			Upstream:            gate.Static(upURL),
			ResourceMetadataURL: "https://mcp.example.com/.well-known/oauth-protected-resource",
			AllowSubs:           []string{"alice"},
			CORSOrigins:         []string{"https://claude.ai"},
			Metrics:             m,
			Logger:              hclog.NewNullLogger(),
		}
		if mod != nil {
			mod(&cfg)
		}
		g, err := gate.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	req := func(method, target string, h http.Header, body string) *http.Request {
		r := httptest.NewRequest(method, target, strings.NewReader(body))
		for k, v := range h {
			r.Header[k] = v
		}
		r.RemoteAddr = "192.0.2.1:1234"
		return r
	}
	auth := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	seen := map[string]bool{}

	for _, c := range []struct {
		reason string
		status int
		mod    func(*gate.Config)
		r      *http.Request
	}{
		{gate.RejectOrigin, 403, nil, req("POST", "/mcp", http.Header{"Origin": {"https://evil.example"}}, "")},
		{gate.RejectPath, 400, nil, req("GET", "/a/../b", auth(alice), "")},
		{gate.RejectNoToken, 401, nil, req("GET", "/mcp", nil, "")},
		{gate.RejectBadRequest, 400, nil, req("GET", "/mcp", http.Header{"Authorization": {"Bearer a", "Bearer b"}}, "")},
		{gate.RejectIPLimited, 429, func(c *gate.Config) { c.FailedAuthLimiter = limiter(1) }, nil}, // below
		{gate.RejectInvalid, 401, nil, req("GET", "/mcp", auth("not.a.jwt"), "")},
		{gate.RejectExpired, 401, nil, req("GET", "/mcp", auth(env.token(t, "alice", audience, -time.Hour, nil)), "")},
		{gate.RejectAudience, 401, nil, req("GET", "/mcp", auth(env.token(t, "alice", "someone-else", time.Hour, nil)), "")},
		{gate.RejectProviderNotReady, 503, func(c *gate.Config) {
			c.Verifier = provider.New(provider.Config{IssuerURL: "http://127.0.0.1:1", Audiences: []string{audience}})
		}, req("GET", "/mcp", auth(alice), "")},
		{gate.RejectForbidden, 403, nil, req("GET", "/mcp", auth(env.token(t, "mallory", audience, time.Hour, nil)), "")},
		{gate.RejectInsufficientScope, 403, func(c *gate.Config) { c.RequiredScopes = []string{"mcp:admin"} }, req("GET", "/mcp", auth(alice), "")},
		{gate.RejectRateLimited, 429, func(c *gate.Config) {
			a, err := store.NewAdmission(limiter(1), store.NewMemory(store.MemoryConfig{}))
			if err != nil {
				t.Fatal(err)
			}
			c.SubjectLimiter = a
		}, nil}, // below
		{gate.RejectTooLarge, 413, func(c *gate.Config) { c.MaxBodyBytes = 4 }, req("POST", "/mcp", auth(alice), "too large")},
		{gate.RejectUpstreamNotReady, 503, func(c *gate.Config) { c.Upstream = notReady{upURL} }, req("GET", "/mcp", auth(alice), "")},
		{gate.RejectBadBody, 400, withPolicy(t, "tool:x=deny"), req("POST", "/mcp", auth(alice), `{"method":"tools/call"`)},
		{gate.RejectHeaderMismatch, 400, withPolicy(t, "tool:x=deny"),
			req("POST", "/mcp", http.Header{"Authorization": {"Bearer " + alice}, "Mcp-Method": {"tools/list"}}, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"y"}}`)},
		{gate.RejectPolicyDenied, 403, withPolicy(t, "tool:y=any; tool:x=deny"), req("POST", "/mcp", auth(alice), `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}`)},
		{gate.RejectSession, 404, nil, req("POST", "/mcp", http.Header{"Authorization": {"Bearer " + alice}, "Mcp-Session-Id": {"not-one-the-gate-gave"}}, `{"jsonrpc":"2.0","id":1,"method":"ping"}`)},
	} {
		t.Run(c.reason, func(t *testing.T) {
			seen[c.reason] = true
			g := newGate(c.mod)
			switch c.reason { // the limits need a first request to use up
			case gate.RejectIPLimited:
				g.ServeHTTP(httptest.NewRecorder(), req("GET", "/mcp", auth("not.a.jwt"), ""))
				c.r = req("GET", "/mcp", auth("still.not.a.jwt"), "")
			case gate.RejectRateLimited:
				g.ServeHTTP(httptest.NewRecorder(), req("GET", "/mcp", auth(alice), ""))
				c.r = req("GET", "/mcp", auth(alice), "")
			}
			before := scrape(t, m)
			w := httptest.NewRecorder()
			g.ServeHTTP(w, c.r)
			if w.Code != c.status {
				t.Fatalf("status %d, want %d", w.Code, c.status)
			}
			after := scrape(t, m)
			for series, v := range after {
				if !strings.HasPrefix(series, "mcp_oauth_proxy_auth_") && !strings.HasPrefix(series, "mcp_oauth_proxy_requests_total") {
					continue
				}
				want := 0.0
				switch series {
				case `mcp_oauth_proxy_auth_rejected_total{reason="` + c.reason + `"}`,
					`mcp_oauth_proxy_requests_total{code="` + strconv.Itoa(c.status) + `",route="rejected"}`:
					want = 1
				}
				if got := v - before[series]; got != want {
					t.Errorf("%s moved by %v, want %v", series, got, want)
				}
			}
			if c.reason == gate.RejectPolicyDenied {
				series := `mcp_oauth_proxy_policy_decisions_total{decision="deny",rule="2"}`
				if got := after[series] - before[series]; got != 1 {
					t.Errorf("%s moved by %v, want 1", series, got)
				}
			}
		})
	}
	for _, r := range gate.RejectReasons() {
		if !seen[r] {
			t.Errorf("reason %s is not tested", r)
		}
	}
	for series := range scrape(t, m) {
		if strings.Contains(series, "alice") || strings.Contains(series, "mallory") || strings.Contains(series, "/mcp") {
			t.Errorf("series %s carries a subject or a path", series)
		}
	}
}

// TestStreamsAndDurations: an open event stream shows in open_streams until
// it ends, its time to headers in upstream_duration_seconds, and its
// lifetime not in request_duration_seconds.
func TestStreamsAndDurations(t *testing.T) {
	m := New()
	env := newIssuer(t, m)
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, ": hello\n\n")
			w.(http.Flusher).Flush()
			<-release
			return
		}
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	}))
	t.Cleanup(up.Close)
	upURL, _ := url.Parse(up.URL)
	g, err := gate.New(gate.Config{
		Verifier:            env.p,
		Upstream:            gate.Static(upURL),
		ResourceMetadataURL: "https://mcp.example.com/.well-known/oauth-protected-resource",
		AllowSubs:           []string{"alice"},
		Metrics:             m,
		Public:              []gate.Route{{Method: http.MethodGet, Path: "/healthz", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}},
	})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(g)
	t.Cleanup(front.Close)
	tok := env.token(t, "alice", audience, time.Hour, nil)

	before := scrape(t, m)
	req, _ := http.NewRequest(http.MethodGet, front.URL+"/mcp", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	if line != ": hello\n" {
		t.Fatalf("stream began with %q", line)
	}
	if got := scrape(t, m)["mcp_oauth_proxy_open_streams"]; got != 1 {
		t.Errorf("open_streams with a stream open: %v, want 1", got)
	}
	close(release)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	post, _ := http.NewRequest(http.MethodPost, front.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	post.Header.Set("Authorization", "Bearer "+tok)
	post.Header.Set("Content-Type", "application/json")
	if resp, err := front.Client().Do(post); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	if resp, err := front.Client().Get(front.URL + "/healthz"); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}

	var after map[string]float64
	deadline := time.Now().Add(5 * time.Second)
	for { // counted just after the answer was sent
		after = scrape(t, m)
		if after[`mcp_oauth_proxy_requests_total{code="200",route="public"}`]-before[`mcp_oauth_proxy_requests_total{code="200",route="public"}`] == 1 &&
			after[`mcp_oauth_proxy_auth_admitted_total`]-before[`mcp_oauth_proxy_auth_admitted_total`] == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	for series, want := range map[string]float64{
		`mcp_oauth_proxy_open_streams`:                                             0,
		`mcp_oauth_proxy_auth_admitted_total`:                                      2,
		`mcp_oauth_proxy_requests_total{code="200",route="proxied"}`:               2,
		`mcp_oauth_proxy_requests_total{code="200",route="public"}`:                1,
		`mcp_oauth_proxy_upstream_duration_seconds_count`:                          2, // the stream's headers too
		`mcp_oauth_proxy_request_duration_seconds_count{route="proxied"}`:          1, // not the stream
		`mcp_oauth_proxy_request_duration_seconds_count{route="public"}`:           1,
		`mcp_oauth_proxy_request_duration_seconds_bucket{route="proxied",le="60"}`: 1,
	} {
		if got := after[series] - before[series]; got != want {
			t.Errorf("%s moved by %v, want %v", series, got, want)
		}
	}
}

// TestFetches: the provider's discovery and JWKS fetches are counted by
// result.
func TestFetches(t *testing.T) {
	m := New()
	newIssuer(t, m)
	got := scrape(t, m)
	for _, series := range []string{`mcp_oauth_proxy_jwks_refresh_total{result="ok"}`, `mcp_oauth_proxy_provider_metadata_fetch_total{result="ok"}`} {
		if got[series] != 1 {
			t.Errorf("%s = %v, want 1", series, got[series])
		}
	}

	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusBadGateway) }))
	t.Cleanup(down.Close)
	m2 := New()
	runProvider(t, provider.Config{IssuerURL: down.URL, Audiences: []string{audience}, OnFetch: m2.Fetch})
	testkit.WaitFor(t, "a failed discovery fetch to be counted", 5*time.Second, func() bool {
		return scrape(t, m2)[`mcp_oauth_proxy_provider_metadata_fetch_total{result="error"}`] >= 1
	})
	if got := scrape(t, m2)[`mcp_oauth_proxy_provider_metadata_fetch_total{result="ok"}`]; got != 0 {
		t.Errorf("metadata ok = %v, want 0", got)
	}
}

// TestStoreHooks: the store's operations are counted by op and result,
// round trips (not skipped ones) timed, and the fallback state is a gauge;
// every op and result has its series from the start.
func TestStoreHooks(t *testing.T) {
	m := New()
	onOp, onFallback := m.StoreHooks()
	got := scrape(t, m)
	for _, op := range store.Ops() {
		for _, res := range store.Results() {
			series := `mcp_oauth_proxy_store_operations_total{op="` + op + `",result="` + res + `"}`
			if v, ok := got[series]; !ok || v != 0 {
				t.Errorf("%s: got %v (present %v), want 0", series, v, ok)
			}
		}
	}
	onOp(store.OpAdmit, store.ResultOK, 300*time.Microsecond)
	onOp(store.OpAdmit, store.ResultOK, 300*time.Microsecond)
	onOp(store.OpAdmit, store.ResultError, 300*time.Millisecond)
	onOp(store.OpClaim, store.ResultSkipped, 0)
	onFallback(true)
	got = scrape(t, m)
	for series, want := range map[string]float64{
		`mcp_oauth_proxy_store_operations_total{op="admit",result="ok"}`:          2,
		`mcp_oauth_proxy_store_operations_total{op="admit",result="error"}`:       1,
		`mcp_oauth_proxy_store_operations_total{op="claim",result="skipped"}`:     1,
		`mcp_oauth_proxy_store_round_trip_seconds_count{op="admit"}`:              3,
		`mcp_oauth_proxy_store_round_trip_seconds_bucket{op="admit",le="0.0005"}`: 2,
		`mcp_oauth_proxy_store_round_trip_seconds_count{op="claim"}`:              0,
		`mcp_oauth_proxy_store_fallback`:                                          1,
	} {
		if got[series] != want {
			t.Errorf("%s = %v, want %v", series, got[series], want)
		}
	}
	onFallback(false)
	if got := scrape(t, m)[`mcp_oauth_proxy_store_fallback`]; got != 0 {
		t.Errorf("fallback after recovery = %v, want 0", got)
	}
}

// TestMemoryStore: the memory store's entries are read at each scrape, so
// an operator sees it fill before its claims fail.
func TestMemoryStore(t *testing.T) {
	m := New()
	mem := store.NewMemory(store.MemoryConfig{MaxEntries: 1024})
	m.WatchMemoryStore(mem.Len, mem.Cap())
	if got := scrape(t, m); got[`mcp_oauth_proxy_store_memory_entries`] != 0 || got[`mcp_oauth_proxy_store_memory_capacity`] != 1024 {
		t.Fatalf("empty: %v", got)
	}
	for _, k := range []string{"code:a", "code:b", "rt:c"} {
		if _, err := mem.Claim(context.Background(), k, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if got := scrape(t, m)[`mcp_oauth_proxy_store_memory_entries`]; got != 3 {
		t.Errorf("entries after 3 claims = %v, want 3", got)
	}
}

// TestRegistryIsOwn: two Metrics do not share a registry, and the global
// one is untouched.
func TestRegistryIsOwn(t *testing.T) {
	a, b := New(), New()
	a.Stream(+1)
	if got := scrape(t, b)["mcp_oauth_proxy_open_streams"]; got != 0 {
		t.Errorf("a second registry sees the first's gauge: %v", got)
	}
	for _, series := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := scrape(t, a)[series]; !ok {
			t.Errorf("%s missing", series)
		}
	}
}

// exited is a supervisor's status after one crash, for the child_* series.
type exited struct{}

func (exited) Status() supervisor.Status {
	return supervisor.Status{State: supervisor.StateReady, Starts: 2, Restarts: 1, LastExit: "exit status 3"}
}
func (exited) ExitCode() int { return 3 }

// TestExamplesUseRealMetrics: every mcp_oauth_proxy_* name in the example
// dashboard and alerts is one this package exposes.
func TestExamplesUseRealMetrics(t *testing.T) {
	m := New()
	m.WatchChild(exited{})
	m.StoreHooks() // with STORE_URL
	m.Request(gate.Outcome{Class: gate.ClassProxied, Status: 200, Upstream: time.Millisecond})
	exposed := map[string]bool{}
	for series := range scrape(t, m) {
		name, _, _ := strings.Cut(series, "{")
		exposed[name] = true
	}
	if !exposed["mcp_oauth_proxy_child_last_exit_code"] || !exposed["mcp_oauth_proxy_child_state"] {
		t.Fatal("the child's metrics are not exposed")
	}
	name := regexp.MustCompile(`mcp_oauth_proxy_[a-z_]+`)
	for _, file := range []string{"../examples/grafana-dashboard.json", "../examples/prometheus-alerts.yaml"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		used := name.FindAllString(string(b), -1)
		if len(used) == 0 {
			t.Errorf("%s uses no metric", file)
		}
		for _, n := range used {
			if !exposed[n] {
				t.Errorf("%s uses %s, which is not exposed", file, n)
			}
		}
	}
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string }
		}
	}
	b, _ := os.ReadFile("../examples/grafana-dashboard.json")
	if err := json.Unmarshal(b, &dash); err != nil || len(dash.Panels) == 0 {
		t.Fatalf("the dashboard is not a JSON dashboard with panels: %v", err)
	}
}

// withPolicy sets MCP_POLICY.
func withPolicy(t *testing.T, rules string) func(*gate.Config) {
	t.Helper()
	p, err := policy.Parse(rules)
	if err != nil {
		t.Fatal(err)
	}
	return func(c *gate.Config) { c.Policy = p }
}
