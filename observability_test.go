package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// metricsAddr finds the metrics listener's address in the gateway's JSON log.
func metricsAddr(logs string) string { return loggedAddr(logs, "metrics listening") }

// TestObservability runs the gateway in-process with METRICS_ADDR, sends
// scripted traffic, and checks what an operator sees: the counters on the
// metrics listener, nothing of them on the public one, and JSON log lines
// carrying request IDs (kept or generated, and passed to the upstream) and
// the MCP tool.
func TestObservability(t *testing.T) {
	is := testkit.StartIssuer(t, nil)
	var mu sync.Mutex
	var upstreamIDs []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		upstreamIDs = append(upstreamIDs, r.Header.Get("X-Request-Id"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Request-Id", "upstream-own-id") // must not reach the client
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	}))
	t.Cleanup(upstream.Close)

	env := gatewayEnv(is.URL, map[string]string{"MCP_UPSTREAM_URL": upstream.URL, "METRICS_ADDR": "127.0.0.1:0"})
	gw := startRun(t, nil, env)
	stderr := &gw.stderr
	var addr, maddr string
	testkit.WaitFor(t, "both listening log lines", 5*time.Second, func() bool {
		addr, maddr = listenAddr(stderr.String()), metricsAddr(stderr.String())
		return addr != "" && maddr != ""
	})
	base, metricsURL := "http://"+addr, "http://"+maddr+"/metrics"
	answered := 0.0 // requests the gateway answered so far
	testkit.WaitFor(t, "readiness", 10*time.Second, func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		answered++
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	// A request is counted just after its answer was sent: wait for the
	// counts to catch up before comparing them.
	counted := func() float64 {
		sum := 0.0
		for series, v := range testkit.Scrape(t, metricsURL) {
			if strings.HasPrefix(series, "mcp_oauth_proxy_requests_total{") {
				sum += v
			}
		}
		return sum
	}
	testkit.WaitFor(t, "the readiness probes to be counted", 5*time.Second, func() bool { return counted() == answered })
	token, err := is.AccessToken("alice", "https://mcp.example.com/mcp", time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	mallory, err := is.AccessToken("mallory", "https://mcp.example.com/mcp", time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := testkit.Scrape(t, metricsURL)

	send := func(method, path, tok, id, body string) *http.Response {
		t.Helper()
		h := http.Header{}
		if body != "" {
			h.Set("Content-Type", "application/json")
		}
		if id != "" {
			h.Set("X-Request-Id", id)
		}
		return exchange(t, http.DefaultClient, method, base+path, tok, h, strings.NewReader(body))
	}
	const call = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}`
	const batch = `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add"}}]`

	// Scripted traffic.
	kept := send(http.MethodPost, "/mcp", token, "client-id.42:a_b-c", call)
	generated := send(http.MethodPost, "/mcp", token, "bad id with spaces", batch)
	send(http.MethodPost, "/mcp", token, "", toolsList)
	send(http.MethodPost, "/mcp", "", "", toolsList)          // no_token
	send(http.MethodPost, "/mcp", "not.a.jwt", "", toolsList) // invalid
	send(http.MethodPost, "/mcp", mallory, "", toolsList)     // forbidden
	send(http.MethodGet, "/healthz", "", "", "")              // public
	publicMetrics, err := http.Get(base + "/metrics")         // never served here: no_token
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(publicMetrics.Body)
	publicMetrics.Body.Close()
	publicAuthed := send(http.MethodGet, "/metrics", token, "", "") // proxied to the MCP server, not ours

	if kept.StatusCode != http.StatusOK || kept.Header.Get("X-Request-Id") != "client-id.42:a_b-c" {
		t.Errorf("a well-formed X-Request-Id: got %d, X-Request-Id %q, want 200 and it kept", kept.StatusCode, kept.Header.Values("X-Request-Id"))
	}
	genID := generated.Header.Get("X-Request-Id")
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(genID) || len(generated.Header.Values("X-Request-Id")) != 1 {
		t.Errorf("a malformed X-Request-Id: got %q, want one generated 32-hex-digit id", generated.Header.Values("X-Request-Id"))
	}
	if publicMetrics.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /metrics on the public port without a token: got %d, want 401", publicMetrics.StatusCode)
	}
	if strings.Contains(string(b), "mcp_oauth_proxy_") || strings.Contains(string(b), "go_goroutines") {
		t.Errorf("the public port served metrics: %q", b)
	}
	if publicAuthed.StatusCode != http.StatusOK {
		t.Errorf("GET /metrics with a token: got %d, want 200 from the MCP server", publicAuthed.StatusCode)
	}
	mu.Lock()
	ids := append([]string(nil), upstreamIDs...)
	mu.Unlock()
	if len(ids) < 2 || ids[0] != "client-id.42:a_b-c" || ids[1] != genID {
		t.Errorf("upstream saw X-Request-Id %q, want the kept one then %q", ids, genID)
	}

	answered += 9
	testkit.WaitFor(t, "the traffic to be counted", 5*time.Second, func() bool { return counted() == answered })
	after := testkit.Scrape(t, metricsURL)
	delta := func(series string) float64 { return after[series] - before[series] }
	for _, c := range []struct {
		series string
		want   float64
	}{
		{`mcp_oauth_proxy_auth_admitted_total`, 4},
		{`mcp_oauth_proxy_auth_rejected_total{reason="no_token"}`, 2},
		{`mcp_oauth_proxy_auth_rejected_total{reason="invalid"}`, 1},
		{`mcp_oauth_proxy_auth_rejected_total{reason="forbidden"}`, 1},
		{`mcp_oauth_proxy_auth_rejected_total{reason="expired"}`, 0},
		{`mcp_oauth_proxy_requests_total{code="200",route="proxied"}`, 4},
		{`mcp_oauth_proxy_requests_total{code="401",route="rejected"}`, 3},
		{`mcp_oauth_proxy_requests_total{code="403",route="rejected"}`, 1},
		{`mcp_oauth_proxy_requests_total{code="200",route="public"}`, 1},
		{`mcp_oauth_proxy_request_duration_seconds_count{route="proxied"}`, 4},
		{`mcp_oauth_proxy_upstream_duration_seconds_count`, 4},
	} {
		if got := delta(c.series); got != c.want {
			t.Errorf("%s moved by %v, want %v", c.series, got, c.want)
		}
	}
	for _, series := range []string{
		`mcp_oauth_proxy_jwks_refresh_total{result="ok"}`,
		`mcp_oauth_proxy_provider_metadata_fetch_total{result="ok"}`,
		`go_goroutines`,
		`process_resident_memory_bytes`,
	} {
		if after[series] < 1 {
			t.Errorf("%s = %v, want at least 1", series, after[series])
		}
	}
	if v, ok := after[`mcp_oauth_proxy_open_streams`]; !ok || v != 0 {
		t.Errorf("open_streams = %v (present %v), want 0", v, ok)
	}
	if _, ok := after[`mcp_oauth_proxy_store_memory_entries`]; !ok || after[`mcp_oauth_proxy_store_memory_capacity`] != 1<<20 {
		t.Errorf("memory store: entries present %v, capacity %v; want present and 2^20", ok, after[`mcp_oauth_proxy_store_memory_capacity`])
	}
	for series := range after {
		if strings.Contains(series, "alice") || strings.Contains(series, "/mcp") || strings.Contains(series, token) {
			t.Errorf("series %s carries a subject, path or token", series)
		}
	}

	if err := gw.stop(t); err != nil {
		t.Errorf("run returned %v, want nil", err)
	}

	// The log: every line JSON; every gate line about a request names it.
	var proxied, rejected []map[string]any
	for _, m := range testkit.JSONLines(t, stderr.String()) {
		if m["@module"] != "mcp-oauth-proxy.gate" {
			continue
		}
		if id, _ := m["request_id"].(string); id == "" {
			t.Errorf("gate log line without request_id: %v", m)
		}
		if ip := m["client_ip"]; m["@message"] != "proxy: upstream failed" && ip != "127.0.0.1" {
			t.Errorf("gate log line with client_ip %v, want the client's address 127.0.0.1 (no port): %v", ip, m)
		}
		switch m["@message"] {
		case "proxied":
			proxied = append(proxied, m)
		case "rejected":
			rejected = append(rejected, m)
		}
	}
	if len(proxied) != 4 || len(rejected) != 4 {
		t.Fatalf("got %d proxied and %d rejected lines, want 4 and 4", len(proxied), len(rejected))
	}
	for i, want := range []map[string]any{
		{"request_id": "client-id.42:a_b-c", "mcp_method": "tools/call", "mcp_tool": "echo"},
		{"request_id": genID, "mcp_method": "tools/call,tools/call", "mcp_tool": "echo,add", "mcp_batch": 2.0},
		{"mcp_method": "tools/list", "mcp_tool": nil},
	} {
		for k, v := range want {
			if proxied[i][k] != v {
				t.Errorf("proxied line %d: %s = %v, want %v (%v)", i, k, proxied[i][k], v, proxied[i])
			}
		}
	}
	if strings.Contains(stderr.String(), token) {
		t.Error("a token appeared in the logs")
	}
}

// TestChildMetrics runs the gateway in spawn mode with METRICS_ADDR and
// crashes its child: the child_* metrics follow.
func TestChildMetrics(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("MOP_TEST_ARGV_SERVER", "1") // the child is argvServer
	is := testkit.StartIssuer(t, nil)
	env := gatewayEnv(is.URL, map[string]string{
		"OIDC_AUDIENCE":             "https://mcp.example.com",
		"RESOURCE_URL":              "https://mcp.example.com",
		"METRICS_ADDR":              "127.0.0.1:0",
		"MCP_SPAWN_RESTART_INITIAL": "50ms",
	})
	gw := startRun(t, []string{"--", self}, env)
	stderr := &gw.stderr
	var addr, maddr string
	testkit.WaitFor(t, "both listening log lines", 5*time.Second, func() bool {
		addr, maddr = listenAddr(stderr.String()), metricsAddr(stderr.String())
		return addr != "" && maddr != ""
	})
	metricsURL := "http://" + maddr + "/metrics"
	ready := func() bool { return testkit.Scrape(t, metricsURL)[`mcp_oauth_proxy_child_state{state="ready"}`] == 1 }
	testkit.WaitFor(t, "child_state ready", 20*time.Second, ready)
	waitReady(t, "http://"+addr) // the provider's keys too: the crash request must be admitted
	m := testkit.Scrape(t, metricsURL)
	if m[`mcp_oauth_proxy_child_starts_total`] != 1 || m[`mcp_oauth_proxy_child_restarts_total`] != 0 {
		t.Errorf("after the first start: starts %v, restarts %v, want 1 and 0", m[`mcp_oauth_proxy_child_starts_total`], m[`mcp_oauth_proxy_child_restarts_total`])
	}
	if _, ok := m[`mcp_oauth_proxy_child_last_exit_code`]; ok {
		t.Error("child_last_exit_code is reported before any child exited")
	}

	token, err := is.AccessToken("alice", "https://mcp.example.com", time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/crash", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	testkit.WaitFor(t, "a restarted, ready child", 20*time.Second, func() bool {
		m = testkit.Scrape(t, metricsURL)
		return m[`mcp_oauth_proxy_child_restarts_total`] == 1 && m[`mcp_oauth_proxy_child_state{state="ready"}`] == 1
	})
	if m[`mcp_oauth_proxy_child_starts_total`] != 2 || m[`mcp_oauth_proxy_child_last_exit_code`] != 3 {
		t.Errorf("after a crash: starts %v, last exit code %v, want 2 and 3", m[`mcp_oauth_proxy_child_starts_total`], m[`mcp_oauth_proxy_child_last_exit_code`])
	}
	states := 0
	for series, v := range m {
		if strings.HasPrefix(series, "mcp_oauth_proxy_child_state{") {
			states++
			if v != 0 && series != `mcp_oauth_proxy_child_state{state="ready"}` {
				t.Errorf("%s = %v, want 0", series, v)
			}
		}
	}
	if states != 5 {
		t.Errorf("got %d child_state series, want one per state (5)", states)
	}
	_ = gw.stop(t)
}

func TestObservabilitySettings(t *testing.T) {
	for _, c := range []struct {
		name    string
		env     map[string]string
		problem string // "" : valid
		check   func(*Config) bool
	}{
		{"metrics off by default", nil, "", func(c *Config) bool { return c.Listen.MetricsAddr == "" && c.Gate.MCPAuditBytes == 0 }},
		{"metrics on loopback", map[string]string{"METRICS_ADDR": "127.0.0.1:9090"}, "", func(c *Config) bool { return c.Listen.MetricsAddr == "127.0.0.1:9090" }},
		{"metrics on every interface", map[string]string{"METRICS_ADDR": ":9090"}, "", nil},
		{"metrics on IPv6 loopback", map[string]string{"METRICS_ADDR": "[::1]:9090"}, "", nil},
		{"a port alone", map[string]string{"METRICS_ADDR": "9090"}, "METRICS_ADDR", nil},
		{"a host name", map[string]string{"METRICS_ADDR": "metrics.internal:9090"}, "METRICS_ADDR", nil},
		{"a bad port", map[string]string{"METRICS_ADDR": "127.0.0.1:99999"}, "METRICS_ADDR", nil},
		{"the public port", map[string]string{"METRICS_ADDR": ":8080", "PORT": "8080"}, "public port", nil},
		{"the public port on loopback", map[string]string{"METRICS_ADDR": "127.0.0.1:8080", "PORT": "8080"}, "public port", nil},
		{"audit off", map[string]string{"MCP_AUDIT": "false"}, "", func(c *Config) bool { return c.Gate.MCPAuditBytes < 0 }},
		{"audit garbage", map[string]string{"MCP_AUDIT": "sometimes"}, "MCP_AUDIT", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := validEnv()
			for k, v := range c.env {
				env[k] = v
			}
			cfg, err := parseConfig(nil, envOf(env), false)
			switch {
			case c.problem == "" && err != nil:
				t.Fatalf("got %v, want valid", err)
			case c.problem != "" && (err == nil || !strings.Contains(err.Error(), c.problem)):
				t.Fatalf("got %v, want a problem naming %s", err, c.problem)
			case c.check != nil && !c.check(cfg):
				t.Errorf("config %+v", cfg)
			}
		})
	}
}

// TestHandlerPanicLogged: net/http recovers a handler's panic and logs it
// through the server's error log, which holds mostly what clients cause and
// so runs at debug. A panic is the gateway's own fault and must be seen at
// the default level, with its stack; a client's malformed request stays at
// debug.
func TestHandlerPanicLogged(t *testing.T) {
	var buf testkit.LogBuffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info, JSONFormat: true})
	srv := newHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic("boom in the handler")
	}), ListenConfig{ReadHeaderTimeout: time.Second}, logger)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()

	// A malformed request: net/http answers 400 and logs nothing at info.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
	_, _ = io.ReadAll(c)
	c.Close()

	if _, err := http.Get("http://" + ln.Addr().String() + "/"); err == nil {
		t.Fatal("the panicking handler's connection was not closed")
	}
	var line map[string]any
	testkit.WaitFor(t, "the panic's log line", 5*time.Second, func() bool {
		for _, l := range testkit.JSONLines(t, buf.String()) {
			if l["@message"] == "a request handler panicked; its connection was closed" {
				line = l
				return true
			}
		}
		return false
	})
	if line["@level"] != "error" || !strings.Contains(line["panic"].(string), "boom in the handler") ||
		!strings.Contains(line["panic"].(string), "goroutine") {
		t.Errorf("panic logged as %v; want level error, the panic's value and its stack", line)
	}
	if n := len(testkit.JSONLines(t, buf.String())); n != 1 {
		t.Errorf("%d lines at info; want only the panic's:\n%s", n, buf.String())
	}
}
