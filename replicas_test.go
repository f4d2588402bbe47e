package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/devissuer"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/store/redistest"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// replica is one in-process gateway of several that share a Redis.
type replica struct {
	base string
	run  *running
}

// startReplicas starts n gateways on one issuer and one upstream, sharing
// STORE_URL; extra adds settings to each.
func startReplicas(t *testing.T, n int, storeURL string, extra map[string]string) (*devissuer.Issuer, []replica) {
	t.Helper()
	is := testkit.StartIssuer(t, nil)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}")
	}))
	t.Cleanup(up.Close)
	var rs []replica
	for range n {
		env := gatewayEnv(is.URL, map[string]string{
			"OIDC_AUDIENCE": gwAudience, "RESOURCE_URL": gwAudience, "MCP_UPSTREAM_URL": up.URL, "STORE_URL": storeURL,
		})
		for k, v := range extra {
			env[k] = v
		}
		r := startRun(t, nil, env)
		rs = append(rs, replica{base: "http://" + r.addr(t), run: r})
	}
	// Ready as a load balancer sees it (the provider's keys loaded), and
	// the store probed once.
	for _, r := range rs {
		testkit.WaitFor(t, "the gateway ready, its store probed", 10*time.Second, func() bool {
			status, detail := testkit.StoreCheck(t, r.base)
			return status == http.StatusOK && detail != "" && detail != "redis not checked yet"
		})
	}
	return is, rs
}

// TestReplicasShareTheSubjectLimit: two gateways with RATE_LIMIT_RPM=5 and
// one Redis admit exactly 5 of 10 requests sent to them in turn.
func TestReplicasShareTheSubjectLimit(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	is, rs := startReplicas(t, 2, srv.URL(), map[string]string{"RATE_LIMIT_RPM": "5"})
	tok, err := is.AccessToken("alice", gwAudience, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	statuses := map[int]int{}
	for i := range 10 {
		resp, _ := mcpPost(t, rs[i%2].base+"/mcp", tok, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
		statuses[resp.StatusCode]++
		if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
			t.Errorf("request %d: 429 without Retry-After", i)
		}
	}
	if statuses[200] != 5 || statuses[429] != 5 {
		t.Errorf("statuses over two replicas: got %v, want 5 × 200 and 5 × 429", statuses)
	}
	for _, r := range rs {
		if code, detail := testkit.StoreCheck(t, r.base); code != 200 || detail != "redis reachable" {
			t.Errorf("/readyz: got %d %q, want 200, redis reachable", code, detail)
		}
	}
}

// TestRedisDownGateway: Redis stops under a running gateway. Valid tokens
// are still admitted (verification never needs Redis; the limit falls back
// to the replica's own state), /readyz stays 200 and says so, the fallback
// is logged once and counted; when Redis is back the gateway uses it again
// by itself.
func TestRedisDownGateway(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	is, rs := startReplicas(t, 1, srv.URL(), map[string]string{"METRICS_ADDR": "127.0.0.1:0"})
	r := rs[0]
	var metricsURL string
	testkit.WaitFor(t, "the metrics listener", 5*time.Second, func() bool {
		a := metricsAddr(r.run.stderr.String())
		metricsURL = "http://" + a + "/metrics"
		return a != ""
	})
	tok, err := is.AccessToken("alice", gwAudience, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	admitted := func() int {
		resp, _ := mcpPost(t, r.base+"/mcp", tok, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
		return resp.StatusCode
	}
	if got := admitted(); got != 200 {
		t.Fatalf("before: %d", got)
	}

	srv.Stop()
	for i := range 5 {
		if got := admitted(); got != 200 {
			t.Errorf("request %d with Redis down: %d, want 200", i, got)
		}
	}
	code, detail := testkit.StoreCheck(t, r.base)
	if code != 200 || !strings.Contains(detail, "unreachable") {
		t.Errorf("/readyz with Redis down: got %d %q, want 200 naming Redis unreachable", code, detail)
	}
	if got, ok := testkit.Scrape(t, metricsURL)["mcp_oauth_proxy_store_fallback"]; !ok || got != 1 {
		t.Errorf("store_fallback with Redis down: %v (present: %v), want 1", got, ok)
	}

	srv.Restart()
	testkit.WaitFor(t, "the gateway to see Redis again", 10*time.Second, func() bool {
		_, detail := testkit.StoreCheck(t, r.base)
		return detail == "redis reachable"
	})
	if got := admitted(); got != 200 {
		t.Errorf("after: %d", got)
	}
	if got, ok := testkit.Scrape(t, metricsURL)["mcp_oauth_proxy_store_fallback"]; !ok || got != 0 {
		t.Errorf("store_fallback after: %v (present: %v), want 0", got, ok)
	}
	logs := r.run.stderr.String()
	if got := strings.Count(logs, "redis unreachable"); got != 1 {
		t.Errorf("'redis unreachable' lines: %d, want 1", got)
	}
	if strings.Contains(logs, "connection pool") {
		t.Errorf("go-redis's own lines reached the log at info level:\n%s", logs)
	}
}

// TestStoreURLPasswordNeverLogged: STORE_URL's password appears in no log
// line, even at trace level through an outage, nor in the error about a
// malformed STORE_URL.
func TestStoreURLPasswordNeverLogged(t *testing.T) {
	const password = "r3dis-pa55word-0123456789"
	srv := redistest.Start(t, redistest.Options{Password: password})
	is, rs := startReplicas(t, 1, srv.URL(), map[string]string{"LOG_LEVEL": "trace"})
	tok, _ := is.AccessToken("alice", gwAudience, time.Hour, nil)
	mcpPost(t, rs[0].base+"/mcp", tok, `{}`)
	srv.Stop()
	mcpPost(t, rs[0].base+"/mcp", tok, `{}`)
	if err := rs[0].run.stop(t); err != nil {
		t.Fatal(err)
	}
	if logs := rs[0].run.stderr.String(); strings.Contains(logs, password) {
		t.Errorf("the password appears in the log:\n%s", logs)
	}
	for _, bad := range []string{
		"http://:" + password + "@redis:6379", "redis://:" + password + "@redis:port/0",
		"redis://:" + password + "@/0", "redis://:" + password + "@redis/0?nope=1",
	} {
		_, err := parseConfig(nil, envOf(gatewayEnv(is.URL, map[string]string{"MCP_UPSTREAM_URL": "http://127.0.0.1:1", "STORE_URL": bad})), false)
		if err == nil || !strings.Contains(err.Error(), "STORE_URL") {
			t.Errorf("STORE_URL %q: got %v, want an error naming STORE_URL", bad, err)
		} else if strings.Contains(err.Error(), password) {
			t.Errorf("the error repeats the password: %v", err)
		}
	}
}

// TestStateRevocationsReachTheAdmission is the contract broker mode's
// wiring relies on: what is revoked in state.values (broker.Config.Store)
// is refused by state.subjects (the gate's admission), in memory and with
// Redis.
func TestStateRevocationsReachTheAdmission(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	for _, tc := range []struct{ name, url string }{{"memory", ""}, {"redis", srv.URL()}} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := newState(&Config{RateLimitRPM: 5, StoreURL: tc.url}, hclog.NewNullLogger(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer st.close()
			ctx := context.Background()
			rev := []string{"jti:" + tc.name, "fam:" + tc.name}
			if ok, _, revoked := st.subjects.Admit(ctx, "alice", rev); !ok || revoked {
				t.Fatalf("before: ok %v revoked %v", ok, revoked)
			}
			if err := st.values.Revoke(ctx, rev[1], time.Minute); err != nil {
				t.Fatal(err)
			}
			if _, _, revoked := st.subjects.Admit(ctx, "alice", rev); !revoked {
				t.Errorf("after the revocation: admitted")
			}
			l, err := st.newLimiter("broker-ip", 1)
			if err != nil {
				t.Fatal(err)
			}
			if ok, _ := l.Allow(ctx, "192.0.2.1"); !ok {
				t.Errorf("a new limiter's first request: refused")
			}
			if ok, _ := l.Allow(ctx, "192.0.2.1"); ok {
				t.Errorf("a new limiter of 1 a minute: second request admitted")
			}
		})
	}
}

// TestReplicasShareSessions: the gateway seals each MCP session ID to the
// subject it was given to (gate/session.go). Broker-mode replicas with one
// BROKER_SECRET seal alike, so a session begun at one is good at the other
// when the MCP server behind them shares its sessions; a replica with
// another secret answers 404, as for a session it does not know.
func TestReplicasShareSessions(t *testing.T) {
	is := testkit.StartIssuer(t, nil)
	var got atomic.Value
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id := r.Header.Get("Mcp-Session-Id"); id != "" {
			got.Store(id)
		} else {
			w.Header().Set("Mcp-Session-Id", "shared-1")
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}")
	}))
	t.Cleanup(up.Close)
	start := func(secret string) string {
		env := gatewayEnv(is.URL, map[string]string{"MCP_UPSTREAM_URL": up.URL, "AUTH_SERVER_MODE": "broker",
			"OIDC_CLIENT_ID": gwClientID, "OIDC_CLIENT_SECRET": gwClientSecret, "BROKER_SECRET": secret})
		base := "http://" + startRun(t, nil, env).addr(t)
		waitReady(t, base)
		return base
	}
	a, b, other := start(brokerTestSecret), start(brokerTestSecret), start(brokerTestSecret+" but another")
	tok, err := is.AccessToken("alice", gwAudience, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	post := func(base, session string) *http.Response {
		h := http.Header{"Content-Type": {"application/json"}}
		if session != "" {
			h.Set("Mcp-Session-Id", session)
		}
		return exchange(t, http.DefaultClient, http.MethodPost, base+"/mcp", tok, h, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	}
	sealed := post(a, "").Header.Get("Mcp-Session-Id")
	if !strings.HasPrefix(sealed, "shared-1.") {
		t.Fatalf("the session ID from replica a: %q, want the server's sealed", sealed)
	}
	if resp := post(b, sealed); resp.StatusCode != 200 || got.Load() != "shared-1" {
		t.Errorf("replica b, same secret: status %d, the server got %v; want 200 and shared-1", resp.StatusCode, got.Load())
	}
	if resp := post(other, sealed); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a replica with another secret: status %d, want 404", resp.StatusCode)
	}
}
