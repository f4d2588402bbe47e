package main

// The in-process gateway harness of the root tests, in one place: run() on
// 127.0.0.1:0 (startRun, startGateway), the development issuer that signs
// its tokens (startIssuer, mustToken), the binary for tests that need a
// real process (buildBinary), and the child the launcher tests spawn
// (argvServer).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/devissuer"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// waitReady waits until the gateway at base answers /readyz with 200.
func waitReady(t *testing.T, base string) {
	t.Helper()
	testkit.WaitFor(t, "readiness", 10*time.Second, func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// gatewayEnv is the configuration of an in-process test gateway: issuer,
// audience and resource https://mcp.example.com/mcp, subject alice allowed,
// loopback on a free port, JSON logs, a 2 s grace; extra adds or overrides.
func gatewayEnv(issuerURL string, extra map[string]string) map[string]string {
	env := map[string]string{
		"OIDC_ISSUER_URL": issuerURL,
		"OIDC_AUDIENCE":   "https://mcp.example.com/mcp",
		"RESOURCE_URL":    "https://mcp.example.com/mcp",
		"ALLOW_SUBS":      "alice",
		"PORT":            "0",
		"LISTEN_HOST":     "127.0.0.1",
		"LOG_FORMAT":      "json",
		"SHUTDOWN_GRACE":  "2s",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// terminate sends SIGTERM to cmd and returns how it exited, failing the
// test if it is still running after 15 s.
func terminate(t *testing.T, cmd *exec.Cmd) error {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err := <-waitErr:
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("still running 15 s after SIGTERM")
		return nil
	}
}

// running is run() started in a goroutine, as main starts it, stopped when
// the test ends if the test did not stop it.
type running struct {
	stdout, stderr testkit.LogBuffer
	cancel         context.CancelFunc
	done           chan error
	stopOnce       sync.Once
	err            error
}

// startRun calls run with args (after the program name) and env.
func startRun(t *testing.T, args []string, env map[string]string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() {
		r.done <- run(ctx, append([]string{"mcp-oauth-proxy"}, args...), envOf(env), &r.stdout, &r.stderr)
	}()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// addr waits for the "listening" log line and returns the address in it.
func (r *running) addr(t *testing.T) string {
	t.Helper()
	var addr string
	testkit.WaitFor(t, "the listening log line", 5*time.Second, func() bool { addr = listenAddr(r.stderr.String()); return addr != "" })
	return addr
}

// stop ends the run as SIGTERM would and returns what run returned.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.stopOnce.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(15 * time.Second):
			r.err = errors.New("run did not return within 15 s of its context ending")
			t.Error(r.err)
		}
	})
	return r.err
}

// listenAddr finds the gateway's address in its JSON log.
func listenAddr(logs string) string { return loggedAddr(logs, "listening") }

// loggedAddr finds the addr of the first JSON log line whose message is msg.
func loggedAddr(logs, msg string) string {
	for _, line := range strings.Split(logs, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["@message"] != msg {
			continue
		}
		if a, ok := m["addr"].(string); ok {
			return a
		}
	}
	return ""
}

func mcpPost(t *testing.T, url, token, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

const toolsList = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`

// binary builds the gateway once per test run, static (CGO_ENABLED=0) as
// the Dockerfile builds it.
var binary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func buildBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		binary.dir, binary.err = os.MkdirTemp("", "mop-bin-")
		if binary.err != nil {
			return
		}
		binary.path = filepath.Join(binary.dir, "mcp-oauth-proxy")
		cmd := exec.Command("go", "build", "-trimpath", "-o", binary.path, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binary.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

func TestMain(m *testing.M) {
	if os.Getenv("MOP_TEST_ARGV_SERVER") == "1" {
		argvServer()
		return
	}
	code := m.Run()
	if binary.dir != "" {
		os.RemoveAll(binary.dir)
	}
	os.Exit(code)
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

// gateway is an in-process run() on 127.0.0.1:0 in front of a recording
// upstream, stopped when the test ends.
type gateway struct {
	base   string
	is     *devissuer.Issuer
	logs   *testkit.LogBuffer
	up     *httptest.Server
	upHits atomic.Int64
}

const gwAudience = "https://mcp.example.com/mcp"

// startGateway runs the gateway with the test defaults plus env; upstream,
// if not nil, answers proxied requests (else 200 "{}").
func startGateway(t *testing.T, env map[string]string, upstream http.HandlerFunc) *gateway {
	t.Helper()
	g := &gateway{is: testkit.StartIssuer(t, nil)}
	g.up = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.upHits.Add(1)
		if upstream != nil {
			upstream(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}")
	}))
	t.Cleanup(g.up.Close)
	full := gatewayEnv(g.is.URL, map[string]string{"OIDC_AUDIENCE": gwAudience, "RESOURCE_URL": gwAudience, "MCP_UPSTREAM_URL": g.up.URL})
	for k, v := range env {
		full[k] = v
	}
	r := startRun(t, nil, full)
	g.logs = &r.stderr
	g.base = "http://" + r.addr(t)
	waitReady(t, g.base)
	return g
}

func (g *gateway) token(t testing.TB, sub string, extra map[string]any) string {
	t.Helper()
	tok, err := g.is.AccessToken(sub, gwAudience, time.Hour, extra)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// rawRequest writes req on a new connection and reads one response.
func (g *gateway) rawRequest(t *testing.T, req string) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(g.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// do sends one request (exchange) and returns its status.
func do(t testing.TB, c *http.Client, method, url, token string, body io.Reader) int {
	t.Helper()
	return exchange(t, c, method, url, token, nil, body).StatusCode
}

// exchange sends one request with a bearer token (none when token is "")
// and header, reads the answer's body away and returns the answer.
func exchange(t testing.TB, c *http.Client, method, url, token string, header http.Header, body io.Reader) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func mustToken(t *testing.T, g *gateway, sub, aud string, ttl time.Duration) string {
	t.Helper()
	tok, err := g.is.AccessToken(sub, aud, ttl, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// argvServer is the child of the launcher tests (the test binary re-executed
// with MOP_TEST_ARGV_SERVER=1): it answers every request with its argv and
// PORT, on 127.0.0.1:$PORT, and exits with status 3 on /crash.
func argvServer() {
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("PORT"))
	if err != nil {
		os.Exit(1)
	}
	_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/crash" {
			os.Exit(3)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"args": os.Args[1:], "port": os.Getenv("PORT"), "path": r.URL.Path, "secret": os.Getenv("STATIC_CLIENT_SECRET")})
	}))
}

// envOf returns a getenv over m.
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}
