package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// replicas is the topology of examples/replicas run for real: two gateway processes (each
// spawning its own server-everything) sharing one redis-server, behind Debian's nginx running
// the example's own nginx.conf. RESOURCE_URL is nginx's, as in a deployment; each gateway
// can also be addressed directly.
type replicas struct {
	redis    *redisServer
	lb       *nginxServer
	gw       [2]*gateway
	resource string // RESOURCE_URL: nginx's URL + /mcp
	issuer   string // the broker's issuer: nginx's origin
}

// redisPassword is the Redis password of the replica tests (STORE_URL carries it, as the
// examples' does).
const redisPassword = "e2e-replicas-redis-password"

// startReplicas starts the topology in broker mode with settings over brokerSettings'. Redis
// runs with its append-only file, as the examples run it.
func startReplicas(t *testing.T, settings map[string]string) *replicas {
	t.Helper()
	r := &replicas{redis: startRedis(t, redisOptions{Password: redisPassword, AppendOnly: true})}
	ports := [2]int{freePort(t), freePort(t)}
	r.lb = startExampleNginx(t, fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1]))
	r.issuer, r.resource = r.lb.URL, r.lb.URL+"/mcp"
	for i, port := range ports {
		s := brokerSettings(map[string]string{
			"PORT":            strconv.Itoa(port),
			"RESOURCE_URL":    r.resource,
			"OIDC_AUDIENCE":   r.resource,
			"STORE_URL":       r.redis.URL,
			"TRUSTED_PROXIES": "127.0.0.1/32",
		})
		for k, v := range settings {
			s[k] = v
		}
		r.gw[i] = startGateway(t, s)
	}
	return r
}

// startReplicasTimed is startReplicas for the whole test (a subtest's cleanup would stop
// it), its time in the suite's table as the scenario name.
func startReplicasTimed(t *testing.T, name string, settings map[string]string) *replicas {
	t.Helper()
	start := time.Now()
	r := startReplicas(t, settings)
	harness.mu.Lock()
	harness.timings = append(harness.timings, timing{name: name, d: time.Since(start), ok: true})
	harness.mu.Unlock()
	return r
}

// startExampleNginx runs examples/replicas/nginx.conf with Debian's nginx on a free loopback
// port in front of the two upstreams (host:port) that replace gateway-1 and gateway-2. The
// file is included in an http block as the nginx image includes it; only the two servers,
// the listen port and the access log's path are replaced, each of which must be found
// exactly once (else the example changed and this test must follow it).
func startExampleNginx(t *testing.T, upstream1, upstream2 string) *nginxServer {
	t.Helper()
	bin := lookTool("nginx", "/usr/sbin/nginx")
	if bin == "" {
		missing(t, "nginx (Debian package: apt-get install --no-install-recommends nginx-light)")
	}
	example, err := os.ReadFile(filepath.Join(harness.dir, "..", "examples", "replicas", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	n := &nginxServer{Addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), accessLog: filepath.Join(dir, "access.log"), errorLog: filepath.Join(dir, "error.log")}
	n.URL = "http://" + n.Addr
	site := string(example)
	for _, r := range []struct {
		old, new string
		n        int
	}{
		{"server gateway-1:8080;", "server " + upstream1 + ";", 2}, // in both upstream blocks
		{"server gateway-2:8080;", "server " + upstream2 + ";", 2},
		{"listen 8080;", "listen " + n.Addr + ";", 1},
		{"access_log /var/log/nginx/access.log replicas;", "access_log " + n.accessLog + " replicas;", 1},
	} {
		if c := strings.Count(site, r.old); c != r.n {
			t.Fatalf("examples/replicas/nginx.conf has %q %d times, want %d: the example changed, update startExampleNginx", r.old, c, r.n)
		}
		site = strings.ReplaceAll(site, r.old, r.new)
	}
	sitePath := filepath.Join(dir, "default.conf")
	if err := os.WriteFile(sitePath, []byte(site), 0o600); err != nil {
		t.Fatal(err)
	}
	// What the nginx image's own nginx.conf provides around the site's file.
	conf := nginxConf(dir, n.errorLog, "  include "+sitePath+";\n")
	runNginx(t, bin, dir, conf, n)
	return n
}

// TestReplicas: what two replicas on one Redis must share, each replica addressed directly
// (the OAuth steps split between them as a load balancer could split them) and both through
// nginx (a real client's login).
func TestReplicas(t *testing.T) {
	needSuite(t)
	const grace = 5 * time.Second // BROKER_REFRESH_REUSE_GRACE, short so that the test can outwait it
	r := startReplicasTimed(t, "replicas-start", map[string]string{"BROKER_REFRESH_REUSE_GRACE": grace.String()})
	a, b := r.gw[0], r.gw[1]

	timed(t, "replicas-code-issued-at-a-redeemed-at-b", func(t *testing.T) {
		c := registerAt(t, a.url, false)
		code, verifier := r.codeVia(t, c, a)
		first := tokenAt(t, b.url, c, codeGrant(c, code, verifier))
		if first.Status != http.StatusOK || first.AccessToken == "" {
			t.Fatalf("the code issued at A, redeemed at B: %d %s", first.Status, first.Error)
		}
		if got := mcpStatus(t, a.url, first.AccessToken); got != http.StatusOK {
			t.Fatalf("the access token from B, at A: %d, want 200", got)
		}
		again := tokenAt(t, a.url, c, codeGrant(c, code, verifier))
		if again.Status != http.StatusBadRequest || again.Error != "invalid_grant" {
			t.Errorf("the same code again at A: %d %q, want 400 invalid_grant", again.Status, again.Error)
		}
		// OAuth 2.1 §4.1.3: the second use revokes what the first one issued, at every replica.
		for _, g := range r.gw {
			if got := mcpStatus(t, g.url, first.AccessToken); got != http.StatusUnauthorized {
				t.Errorf("the first redemption's access token at %s after the code's reuse: %d, want 401", g.url, got)
			}
		}
	})

	timed(t, "replicas-refresh-rotated-at-a-replayed-at-b", func(t *testing.T) {
		c := registerAt(t, b.url, false)
		code, verifier := r.codeVia(t, c, b)
		first := tokenAt(t, a.url, c, codeGrant(c, code, verifier))
		if first.Status != http.StatusOK || first.RefreshToken == "" {
			t.Fatalf("redeem: %d %s (refresh token %t)", first.Status, first.Error, first.RefreshToken != "")
		}
		start := time.Now()
		rotated := tokenAt(t, a.url, c, refreshGrant(first.RefreshToken))
		if rotated.Status != http.StatusOK || rotated.RefreshToken == "" || rotated.RefreshToken == first.RefreshToken {
			t.Fatalf("the refresh at A: %d %s", rotated.Status, rotated.Error)
		}
		used := time.Now() // A claimed the token before it answered
		for _, g := range r.gw {
			if got := mcpStatus(t, g.url, rotated.AccessToken); got != http.StatusOK {
				t.Fatalf("the rotated access token at %s: %d, want 200", g.url, got)
			}
		}
		// Within the grace window the same token at B is a concurrent refresh or a retry: B
		// reads when A used it from Redis and rotates it to a sibling (oidc-provider keeps its
		// own refresh token for a confidential client, so the provider accepts it again).
		sibling := tokenAt(t, b.url, c, refreshGrant(first.RefreshToken))
		if sibling.Status != http.StatusOK || sibling.RefreshToken == "" || sibling.RefreshToken == rotated.RefreshToken {
			t.Fatalf("the used refresh token again at B, %s after its first use (window %s): %d %q, want 200 and another refresh token",
				time.Since(start).Round(time.Millisecond), grace, sibling.Status, sibling.Error)
		}
		if got := mcpStatus(t, a.url, rotated.AccessToken); got != http.StatusOK {
			t.Errorf("the rotated access token at A after a reuse within the window: %d, want 200", got)
		}
		time.Sleep(time.Until(used.Add(grace + 300*time.Millisecond)))
		replay := tokenAt(t, b.url, c, refreshGrant(first.RefreshToken))
		if replay.Status != http.StatusBadRequest || replay.Error != "invalid_grant" {
			t.Errorf("the rotated-out refresh token replayed at B after the window: %d %q, want 400 invalid_grant", replay.Status, replay.Error)
		}
		// The replay revoked the family: its access tokens at both replicas, its newest
		// refresh tokens too.
		for _, g := range r.gw {
			for name, tok := range map[string]string{"first": first.AccessToken, "rotated": rotated.AccessToken, "sibling": sibling.AccessToken} {
				if got := mcpStatus(t, g.url, tok); got != http.StatusUnauthorized {
					t.Errorf("the family's %s access token at %s after the replay: %d, want 401", name, g.url, got)
				}
			}
		}
		for name, rt := range map[string]string{"rotated": rotated.RefreshToken, "sibling": sibling.RefreshToken} {
			if last := tokenAt(t, a.url, c, refreshGrant(rt)); last.Status != http.StatusBadRequest || last.Error != "invalid_grant" {
				t.Errorf("the family's %s refresh token at A after the replay: %d %q, want 400 invalid_grant", name, last.Status, last.Error)
			}
		}
	})

	timed(t, "replicas-client-registered-at-a-known-at-b", func(t *testing.T) {
		c := registerAt(t, a.url, true) // confidential: B must also check its secret
		page := get(t, b.url+"/oauth/authorize?"+newAuthorization(c, r.resource).query.Encode())
		if page.status != http.StatusOK || !strings.Contains(page.body, c.name) {
			t.Fatalf("B's consent page for A's client: %d, want 200 naming %q: %.300s", page.status, c.name, page.body)
		}
		unknown := c
		unknown.id = "not-a-registration"
		if page := get(t, b.url+"/oauth/authorize?"+newAuthorization(unknown, r.resource).query.Encode()); page.status == http.StatusOK {
			t.Fatalf("B's answer to an unknown client: 200, so the check above proves nothing")
		}
		code, verifier := r.codeVia(t, c, b)
		wrong := c
		wrong.secret = "not-the-secret"
		if got := tokenAt(t, b.url, wrong, codeGrant(wrong, code, verifier)); got.Status != http.StatusUnauthorized || got.Error != "invalid_client" {
			t.Errorf("A's client with a wrong secret at B: %d %q, want 401 invalid_client", got.Status, got.Error)
		}
		if got := tokenAt(t, b.url, c, codeGrant(c, code, verifier)); got.Status != http.StatusOK {
			t.Errorf("A's client with its secret at B: %d %q, want 200", got.Status, got.Error)
		}
	})

	timed(t, "replicas-ts-client-2x-through-nginx", func(t *testing.T) {
		before := len(r.lb.upstreamsUsed(0))
		res := runTS2ClientAt(t, "node", r.resource, "--refresh")
		if res.Echo != "Echo: hello through the gateway" || res.EchoAfterRefresh != "Echo: after the refresh" {
			t.Errorf("tools/call before and after the refresh: %q, %q", res.Echo, res.EchoAfterRefresh)
		}
		if res.Flow.AuthorizationResponse.Iss != r.issuer || res.Flow.Tokens.Claims["iss"] != r.issuer || res.Flow.Tokens.Claims["aud"] != r.resource {
			t.Errorf("iss %q, claims %v: want the load balancer's origin %q and resource", res.Flow.AuthorizationResponse.Iss, res.Flow.Tokens.Claims, r.issuer)
		}
		// Every request the client made, and the browser's three at the gateway (authorize,
		// consent, callback), went through nginx: OAuth on both replicas, the MCP session
		// on one.
		want := len(res.Requests) + 3
		served := r.lb.upstreamsUsed(before + want)[before:]
		if len(served) != want {
			t.Fatalf("nginx logged %d requests of this login, want %d", len(served), want)
		}
		paths := r.lb.requestPaths()[before:]
		byKind := map[string]map[string]int{"oauth": {}, "mcp": {}}
		for i, up := range served {
			kind := "mcp"
			if strings.HasPrefix(paths[i], "/oauth/") || strings.HasPrefix(paths[i], "/.well-known/") {
				kind = "oauth"
			}
			byKind[kind][up]++
		}
		t.Logf("upstreams: OAuth and discovery %v, MCP %v", byKind["oauth"], byKind["mcp"])
		for _, g := range r.gw {
			if byKind["oauth"][strings.TrimPrefix(g.url, "http://")] == 0 {
				t.Errorf("no OAuth request of the login reached %s: %v", g.url, byKind["oauth"])
			}
		}
		if len(byKind["mcp"]) != 1 {
			t.Errorf("the MCP requests of one client went to %d replicas, want 1 (its session lives in one MCP server): %v", len(byKind["mcp"]), byKind["mcp"])
		}
	})
}

// TestReplicasRedisDown: the per-subject limit of two replicas is one, and Redis stopped in
// the middle of a run and started again loses nothing: valid access tokens keep working,
// codes and refresh tokens are refused (503) while it is down and good once, exactly once,
// afterwards, limits fall back to each replica's own and are shared again, /readyz stays 200
// naming Redis's state.
func TestReplicasRedisDown(t *testing.T) {
	needSuite(t)
	r := startReplicasTimed(t, "replicas-start-rpm-5", map[string]string{"RATE_LIMIT_RPM": "5"})
	a, b := r.gw[0], r.gw[1]
	tokenEndpoint := providerTokenEndpoint(t)

	timed(t, "replicas-shared-limit", func(t *testing.T) {
		tok := clientCredentials(t, tokenEndpoint, "svc-allowed", "svc-allowed-secret", r.resource)
		admitted, refused := spread(t, r, tok, 10)
		if sum(admitted) != 5 || sum(refused) != 5 || admitted[0] == 0 || admitted[1] == 0 || refused[0] == 0 || refused[1] == 0 {
			t.Errorf("10 requests over two replicas with RATE_LIMIT_RPM=5: admitted %v, refused %v (per replica); want 5 and 5 in all, each replica both admitting and refusing", admitted, refused)
		}
	})

	timed(t, "replicas-redis-down", func(t *testing.T) {
		// Before: alice logs in (code redeemed at A), and a second login's code is kept.
		// Alice's access token is used 5 times in all, once before the outage and twice
		// during and after it: within RATE_LIMIT_RPM, so every refusal is Redis's doing.
		c := registerAt(t, a.url, false)
		code1, verifier1 := r.codeVia(t, c, a)
		login := tokenAt(t, a.url, c, codeGrant(c, code1, verifier1))
		if login.Status != http.StatusOK {
			t.Fatalf("redeem before the outage: %d %s", login.Status, login.Error)
		}
		if got := mcpStatus(t, a.url, login.AccessToken); got != http.StatusOK {
			t.Fatalf("the access token before the outage: %d", got)
		}
		code2, verifier2 := r.codeVia(t, c, b)

		r.redis.Stop(t)
		for _, g := range r.gw {
			if got := mcpStatus(t, g.url, login.AccessToken); got != http.StatusOK {
				t.Errorf("a valid access token at %s with Redis down: %d, want 200", g.url, got)
			}
		}
		for _, g := range r.gw {
			got := tokenAt(t, g.url, c, codeGrant(c, code2, verifier2))
			t.Logf("a code redeemed at %s with Redis down: %d %s, Retry-After: %s", g.url, got.Status, got.Error, got.Header.Get("Retry-After"))
			if _, ok := retryAfter(got.Header); got.Status != http.StatusServiceUnavailable || got.Error != "temporarily_unavailable" || !ok {
				t.Errorf("a code redeemed at %s with Redis down: %d %q Retry-After %q, want 503 temporarily_unavailable with Retry-After",
					g.url, got.Status, got.Error, got.Header.Get("Retry-After"))
			}
		}
		if got := tokenAt(t, b.url, c, refreshGrant(login.RefreshToken)); got.Status != http.StatusServiceUnavailable || got.Error != "temporarily_unavailable" {
			t.Errorf("a refresh with Redis down: %d %q, want 503 temporarily_unavailable", got.Status, got.Error)
		}
		// A login that reaches the callback now cannot claim its one use: refused, never
		// completed twice.
		if _, err := r.tryCodeVia(t, c, a); err == nil || !strings.Contains(err.Error(), "503") {
			t.Errorf("a login completed with Redis down: %v, want the callback's 503", err)
		}
		// Limits: each replica's own budget, full for a subject Redis never reported.
		other := clientCredentials(t, tokenEndpoint, "svc-other", "svc-other-secret", r.resource)
		admitted, refused := spread(t, r, other, 12)
		if admitted != [2]int{5, 5} || refused != [2]int{1, 1} {
			t.Errorf("12 requests over two replicas with Redis down: admitted %v, refused %v; want 5 and 1 at each (each replica's own limit)", admitted, refused)
		}
		for _, g := range r.gw {
			if status, detail := testkit.StoreCheck(t, g.url); status != http.StatusOK || !strings.HasPrefix(detail, "redis unreachable for ") {
				t.Errorf("/readyz at %s with Redis down: %d %q, want 200 naming Redis unreachable", g.url, status, detail)
			}
		}

		r.redis.Start(t)
		back := time.Now()
		for _, g := range r.gw {
			waitReachable(t, g.url)
		}
		t.Logf("both replicas saw Redis again %s after it was back", time.Since(back).Round(time.Millisecond))
		for _, g := range r.gw {
			if got := mcpStatus(t, g.url, login.AccessToken); got != http.StatusOK {
				t.Errorf("the access token at %s after the outage: %d, want 200", g.url, got)
			}
		}
		// The kept code, redeemed at both replicas at once: exactly one succeeds.
		var wg sync.WaitGroup
		answers := make([]tokenAnswer, 2)
		for i, g := range r.gw {
			wg.Add(1)
			go func() {
				defer wg.Done()
				answers[i] = postToken(g.url, c, codeGrant(c, code2, verifier2))
			}()
		}
		wg.Wait()
		if st := []int{answers[0].Status, answers[1].Status}; !(st[0] == 200 && st[1] == 400 || st[0] == 400 && st[1] == 200) {
			t.Errorf("the code kept through the outage, redeemed at A and B at once: %v (%q, %q), want one 200 and one 400", st, answers[0].Error, answers[1].Error)
		}
		if got := tokenAt(t, b.url, c, refreshGrant(login.RefreshToken)); got.Status != http.StatusOK {
			t.Errorf("the refresh after the outage: %d %q, want 200", got.Status, got.Error)
		}
		// Redis kept what it held (appendonly): the code used before the outage is still used.
		// Without the append-only file it would be redeemed a second time here.
		if keys, err := r.redis.Do("KEYS", "mop:v:code:*"); err != nil || len(keys.([]any)) != 2 {
			t.Errorf("used codes in Redis after its restart: %v %v, want the two", keys, err)
		}
		if got := tokenAt(t, b.url, c, codeGrant(c, code1, verifier1)); got.Status != http.StatusBadRequest || got.Error != "invalid_grant" {
			t.Errorf("the code used before the outage, again after it: %d %q, want 400 invalid_grant", got.Status, got.Error)
		}
		// Limits: shared again. svc-other's budget spent during the outage was each
		// replica's own; Redis's is full, and admits 5 of 10 over both.
		other = clientCredentials(t, tokenEndpoint, "svc-other", "svc-other-secret", r.resource)
		admitted, refused = spread(t, r, other, 10)
		if sum(admitted) != 5 || sum(refused) != 5 {
			t.Errorf("10 requests over two replicas after the outage: admitted %v, refused %v; want 5 and 5 in all", admitted, refused)
		}
		for _, g := range r.gw {
			var down, up int
			for _, l := range g.logLines() {
				msg, _ := l["@message"].(string)
				switch {
				case strings.HasPrefix(msg, "redis unreachable:"):
					down++
				case strings.HasPrefix(msg, "redis reachable again"):
					up++
				}
			}
			if down != 1 || up != 1 {
				t.Errorf("%s logged 'redis unreachable' %d times and 'reachable again' %d times, want once each", g.url, down, up)
			}
		}
	})
}

// spread sends n MCP requests with tok, alternately to each replica directly, and counts
// the admitted (200) and refused (429, with Retry-After) per replica.
func spread(t *testing.T, r *replicas, tok string, n int) (admitted, refused [2]int) {
	t.Helper()
	for i := range n {
		resp, body, err := mcpPost(context.Background(), r.gw[i%2].url+"/mcp", tok, "", initializeMsg(1))
		if err != nil {
			t.Fatal(err)
		}
		switch resp.StatusCode {
		case http.StatusOK:
			admitted[i%2]++
		case http.StatusTooManyRequests:
			if _, ok := retryAfter(resp.Header); !ok {
				t.Errorf("request %d: 429 without Retry-After", i)
			}
			refused[i%2]++
		default:
			t.Fatalf("request %d at %s: %d %s", i, r.gw[i%2].url, resp.StatusCode, body)
		}
	}
	return admitted, refused
}

func sum(v [2]int) int { return v[0] + v[1] }

// mcpStatus is the status of an initialize with tok at the replica base.
func mcpStatus(t *testing.T, base, tok string) int {
	t.Helper()
	resp, _, err := mcpPost(context.Background(), base+"/mcp", tok, "", initializeMsg(1))
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode
}

// waitReachable waits until the replica at base says, in /readyz, that Redis answers.
func waitReachable(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, detail := testkit.StoreCheck(t, base)
		if detail == "redis reachable" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not see Redis again after 10 s: %q", base, detail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// requestPaths lists the path of each request nginx has logged (the example's log format:
// $remote_addr "$request" ... | $upstream_addr), in the order of upstreamsUsed.
func (n *nginxServer) requestPaths() []string {
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(readFile(n.accessLog)), "\n") {
		if !strings.Contains(line, " | ") {
			continue
		}
		_, req, _ := strings.Cut(line, `"`)
		path := ""
		if f := strings.Fields(req); len(f) >= 2 {
			path = f[1]
		}
		out = append(out, path)
	}
	return out
}

// regClient is an MCP client registered at a replica (RFC 7591).
type regClient struct {
	id, secret, name, redirect string
}

// registerAt registers a client at the replica base: public, or confidential with a secret
// sent in the body (client_secret_post).
func registerAt(t *testing.T, base string, confidential bool) regClient {
	t.Helper()
	c := regClient{name: "replica client " + rand.Text()[:8], redirect: fmt.Sprintf("http://127.0.0.1:%d/callback", freePort(t))}
	method := "none"
	if confidential {
		method = "client_secret_post"
	}
	body, _ := json.Marshal(map[string]any{
		"client_name": c.name, "redirect_uris": []string{c.redirect}, "token_endpoint_auth_method": method,
		"grant_types": []string{"authorization_code", "refresh_token"}, "response_types": []string{"code"},
	})
	resp, err := http.Post(base+"/oauth/register", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var reg struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &reg) != nil || reg.ClientID == "" || confidential != (reg.ClientSecret != "") {
		t.Fatalf("register at %s: %d %s", base, resp.StatusCode, b)
	}
	c.id, c.secret = reg.ClientID, reg.ClientSecret
	return c
}

// authorization is one authorization request (PKCE S256) and its verifier.
type authorization struct {
	query    url.Values
	verifier string
}

func newAuthorization(c regClient, resource string) authorization {
	verifier := rand.Text() + rand.Text()
	sum := sha256.Sum256([]byte(verifier))
	return authorization{verifier: verifier, query: url.Values{
		"response_type": {"code"}, "client_id": {c.id}, "redirect_uri": {c.redirect}, "resource": {resource},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
		"state": {rand.Text()},
	}}
}

// codeVia logs alice in for client c and returns the code the replica at issued, with its
// PKCE verifier. The browser goes through nginx (the consent page, the provider's login)
// until the provider sends it back to the gateway's callback, which it then sends to the
// replica at, as the load balancer could have.
func (r *replicas) codeVia(t *testing.T, c regClient, at *gateway) (code, verifier string) {
	t.Helper()
	a, err := r.tryCodeVia(t, c, at)
	if err != nil {
		t.Fatal(err)
	}
	return a.query.Get("code"), a.verifier
}

// tryCodeVia is codeVia returning the failure; the authorization's query is then the
// client's redirect's.
func (r *replicas) tryCodeVia(t *testing.T, c regClient, at *gateway) (authorization, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	auth := newAuthorization(c, r.resource)
	callback, hops, err := userAgentWith(ctx, jar, r.issuer+"/oauth/authorize?"+auth.query.Encode(), r.issuer+"/oauth/callback")
	if err != nil {
		return auth, fmt.Errorf("the login up to the callback: %w (hops %v)", err, hops)
	}
	resp, hops, err := userAgentWith(ctx, jar, at.url+"/oauth/callback?"+callback.Encode(), c.redirect)
	if err != nil {
		return auth, fmt.Errorf("the callback at %s: %w (hops %v)", at.url, err, hops)
	}
	if resp.Get("state") != auth.query.Get("state") || resp.Get("iss") != r.issuer || resp.Get("code") == "" {
		return auth, fmt.Errorf("the authorization response %v: want a code, our state and iss %s", resp, r.issuer)
	}
	verifier := auth.verifier
	auth.query, auth.verifier = resp, verifier
	return auth, nil
}

func codeGrant(c regClient, code, verifier string) url.Values {
	return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier}, "redirect_uri": {c.redirect}}
}

func refreshGrant(refresh string) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}}
}

// tokenAnswer is a token endpoint's answer.
type tokenAnswer struct {
	Status       int         `json:"-"`
	Header       http.Header `json:"-"`
	AccessToken  string      `json:"access_token"`
	RefreshToken string      `json:"refresh_token"`
	Error        string      `json:"error"`
}

// tokenAt posts form, as client c, to the token endpoint of the replica base.
func tokenAt(t *testing.T, base string, c regClient, form url.Values) tokenAnswer {
	t.Helper()
	a := postToken(base, c, form)
	if a.Status == 0 {
		t.Fatalf("token request at %s: %s", base, a.Error)
	}
	return a
}

// postToken is tokenAt for any goroutine: a failed request is Status 0, the error in Error.
func postToken(base string, c regClient, form url.Values) tokenAnswer {
	f := url.Values{"client_id": {c.id}}
	if c.secret != "" {
		f.Set("client_secret", c.secret)
	}
	for k, v := range form {
		f[k] = v
	}
	resp, err := http.PostForm(base+"/oauth/token", f)
	if err != nil {
		return tokenAnswer{Error: err.Error()}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := tokenAnswer{}
	if err := json.Unmarshal(b, &a); err != nil {
		return tokenAnswer{Error: fmt.Sprintf("HTTP %d, not JSON: %.200s", resp.StatusCode, b)}
	}
	a.Status, a.Header = resp.StatusCode, resp.Header
	return a
}

// fetched is a page fetched without following redirects.
type fetched struct {
	status int
	body   string
}

func get(t *testing.T, u string) fetched {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fetched{resp.StatusCode, string(b)}
}
