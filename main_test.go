package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/demo"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// TestRunOnPortZero runs the whole gateway in-process, as main does, against
// a real issuer and a real MCP server.
func TestRunOnPortZero(t *testing.T) {
	is := testkit.StartIssuer(t, nil)
	upstream := httptest.NewServer(demo.Handler())
	t.Cleanup(upstream.Close)

	gw := startRun(t, nil, gatewayEnv(is.URL, map[string]string{"MCP_UPSTREAM_URL": upstream.URL}))
	base := "http://" + gw.addr(t)
	waitReady(t, base)

	token, err := is.AccessToken("alice", "https://mcp.example.com/mcp", time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, _ := mcpPost(t, base+"/mcp", "", toolsList); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without a token: got %d, want 401", resp.StatusCode)
	} else if got := resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, `resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"`) {
		t.Errorf("challenge %q lacks the resource metadata URL", got)
	}
	resp, body := mcpPost(t, base+"/mcp", token, toolsList)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"echo"`) {
		t.Errorf("with a token: got %d %q, want 200 listing echo", resp.StatusCode, body)
	}
	// Without a static client /oauth/register is the gateway's 404, even with
	// a valid token: it is never proxied.
	for _, tok := range []string{"", token} {
		resp, body := mcpPost(t, base+"/oauth/register", tok, `{"redirect_uris":["http://127.0.0.1/cb"]}`)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "not_found") {
			t.Errorf("POST /oauth/register (token %v): got %d %q, want the gateway's 404", tok != "", resp.StatusCode, body)
		}
	}
	for _, path := range []string{"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-authorization-server"} {
		r, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusOK {
			t.Errorf("GET %s: got %d, want 200", path, r.StatusCode)
		}
	}

	if err := gw.stop(t); err != nil {
		t.Errorf("run returned %v, want nil after a clean shutdown", err)
	}
	if strings.Contains(gw.stderr.String(), token) {
		t.Error("a token appeared in the logs")
	}
}

func TestRunRejectsBadConfigBeforeListening(t *testing.T) {
	var stdout, stderr testkit.LogBuffer
	err := run(context.Background(), []string{"mcp-oauth-proxy"}, envOf(map[string]string{"RATE_LIMIT_RPM": "many"}), &stdout, &stderr)
	if got := exitStatus(err); got != 2 {
		t.Fatalf("got exit status %d, want 2", got)
	}
	for _, want := range []string{"OIDC_ISSUER_URL", "RATE_LIMIT_RPM"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

// TestMisspeltVariables: a variable that looks like a misspelt setting is
// named, with the setting meant, among the errors of an invalid
// configuration and as a warning in the log of a valid one.
func TestMisspeltVariables(t *testing.T) {
	t.Setenv("ALLOW_EMAIL", "me@example.com")
	env := validEnv()
	delete(env, "ALLOW_EMAILS")
	var stdout, stderr testkit.LogBuffer
	err := run(t.Context(), []string{"mcp-oauth-proxy"}, envOf(env), &stdout, &stderr)
	want := "ALLOW_EMAIL is set but is not a setting; did you mean ALLOW_EMAILS?"
	if exitStatus(err) != 2 || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want a configuration error saying %q", err, want)
	}

	is := testkit.StartIssuer(t, nil)
	gw := startRun(t, nil, gatewayEnv(is.URL, map[string]string{"MCP_UPSTREAM_URL": "http://127.0.0.1:1"}))
	gw.addr(t)
	if !strings.Contains(gw.stderr.String(), `"@level":"warn","@message":"`+want) {
		t.Errorf("the log does not warn %q:\n%s", want, gw.stderr.String())
	}
}

// TestConfigWarningsLogged: the warnings of the checks that span settings
// (a setting the mode does not read) reach the log, beside the
// misspellings'.
func TestConfigWarningsLogged(t *testing.T) {
	t.Setenv("ALLOW_EMAIL", "me@example.com")
	is := testkit.StartIssuer(t, nil)
	gw := startRun(t, nil, gatewayEnv(is.URL, map[string]string{"MCP_UPSTREAM_URL": "http://127.0.0.1:1", "BROKER_SECRET": strings.Repeat("x", 32)}))
	gw.addr(t)
	for _, want := range []string{"ALLOW_EMAIL is set but is not a setting", "BROKER_SECRET is set but only AUTH_SERVER_MODE=broker reads it (the mode is facade)"} {
		if !strings.Contains(gw.stderr.String(), `"@level":"warn","@message":"`+want) {
			t.Errorf("the log does not warn %q:\n%s", want, gw.stderr.String())
		}
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"mcp-oauth-proxy", "--version"}, envOf(nil), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "mcp-oauth-proxy ") || !strings.Contains(out.String(), "go1.") {
		t.Errorf("got %q, want the version and the Go version", out.String())
	}
}

// TestDevMode runs `mcp-oauth-proxy dev` as a user would and follows what
// it prints.
func TestDevMode(t *testing.T) {
	bin := buildBinary(t)
	port := freePort(t)
	cmd := exec.Command(bin, "dev")
	cmd.Env = append(os.Environ(), "PORT="+port, "LOG_FORMAT=json")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testkit.LogBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	var printed strings.Builder
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	lines := make(chan string)
	go func() {
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var mcpURL, token string
	var script strings.Builder // the printed commands, from TOKEN= to done
	deadline := time.After(20 * time.Second)
	for done := false; !done; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("dev exited before printing its commands; stderr:\n%s", stderr.String())
			}
			printed.WriteString(l + "\n")
			f := strings.Fields(l)
			if len(f) == 3 && f[0] == "MCP" && f[1] == "URL:" {
				mcpURL = f[2]
			}
			if v, ok := strings.CutPrefix(l, "TOKEN='"); ok {
				token = strings.TrimSuffix(v, "'")
			}
			if token != "" {
				script.WriteString(l + "\n")
			}
			done = l == "done"
		case <-deadline:
			t.Fatalf("dev printed no token and commands; stdout so far:\n%s", printed.String())
		}
	}
	go func() {
		for range lines {
		}
	}()
	if want := "http://127.0.0.1:" + port + "/mcp"; mcpURL != want {
		t.Errorf("got MCP URL %q, want %q", mcpURL, want)
	}
	for _, want := range []string{"NOT FOR PRODUCTION", "Node 22", "ALLOW_GROUPS=admins", "consent page"} {
		if !strings.Contains(printed.String(), want) {
			t.Errorf("dev mode does not say %q:\n%s", want, printed.String())
		}
	}
	if strings.Contains(stderr.String(), "BROKER_SECRET") {
		t.Errorf("dev mode warns of its random broker keys:\n%s", stderr.String())
	}
	waitReady(t, "http://127.0.0.1:"+port)
	resp, body := mcpPost(t, mcpURL, token, toolsList)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"echo"`) || !strings.Contains(body, `"count"`) {
		t.Errorf("tools/list with the printed token: got %d %q", resp.StatusCode, body)
	}
	resp, body = mcpPost(t, mcpURL, token, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello gateway"}}}`)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "hello gateway") {
		t.Errorf("echo with the printed token: got %d %q", resp.StatusCode, body)
	}
	if resp, _ := mcpPost(t, mcpURL, token[:len(token)-4]+"AAAA", toolsList); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a wrong token: got %d, want 401", resp.StatusCode)
	}
	// The printed commands, run as printed: initialize, then tools/list in
	// the demo server's session (e2e runs them against server-everything).
	t.Run("printed commands", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			t.Skip("curl is not installed: the printed commands cannot run")
		}
		out, err := exec.Command("sh", "-c", script.String()).CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"echo"`) {
			t.Errorf("the printed commands: %v\n%s\nscript:\n%s", err, out, script.String())
		}
	})

	// healthcheck against the live gateway, then against nothing.
	hc := exec.Command(bin, "healthcheck")
	hc.Env = append(os.Environ(), "PORT="+port)
	if out, err := hc.CombinedOutput(); err != nil {
		t.Errorf("healthcheck against a live gateway: %v %s", err, out)
	}

	if err := terminate(t, cmd); err != nil {
		t.Errorf("dev after SIGTERM: %v, want exit 0; stderr:\n%s", err, stderr.String())
	}
	if strings.Contains(stderr.String(), token) {
		t.Error("the token appeared in the logs")
	}

	hc = exec.Command(bin, "healthcheck")
	hc.Env = append(os.Environ(), "PORT="+port)
	if err := hc.Run(); err == nil {
		t.Error("healthcheck with no gateway running exited 0, want 1")
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("healthcheck with no gateway: %v, want exit status 1", err)
	}
}

func TestDevModeRefusesNonLoopback(t *testing.T) {
	var stdout, stderr testkit.LogBuffer
	err := run(context.Background(), []string{"mcp-oauth-proxy", "dev"}, envOf(map[string]string{"LISTEN_HOST": "0.0.0.0", "PORT": "0"}), &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("got %v, want a refusal naming loopback", err)
	}
}

// TestCtrlCExitStatus: Ctrl-C (SIGINT) with a child running ends dev mode
// with status 0, and the gateway with the child's status (128+SIGTERM), as
// a container runtime expects.
func TestCtrlCExitStatus(t *testing.T) {
	bin := buildBinary(t)
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want int
	}{
		{"dev mode", []string{"dev"}, nil, 0},
		{"production", nil, []string{"OIDC_ISSUER_URL=http://127.0.0.1:1", "OIDC_AUDIENCE=x", "RESOURCE_URL=http://127.0.0.1", "ALLOW_SUBS=x"}, 143},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, append(tc.args, "--", "sh", "-c", "echo up; exec sleep 100")...)
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "PORT=0", "LISTEN_HOST=127.0.0.1", "LOG_FORMAT=json"}, tc.env...)
			var out testkit.LogBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waitErr := make(chan error, 1)
			go func() { waitErr <- cmd.Wait() }()
			t.Cleanup(func() { _ = cmd.Process.Kill() })
			testkit.WaitFor(t, "the child to be up", 10*time.Second, func() bool { return strings.Contains(out.String(), `"@message":"up"`) })
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			select {
			case <-waitErr:
			case <-time.After(15 * time.Second):
				t.Fatalf("still running 15 s after SIGINT; output:\n%s", out.String())
			}
			if got := cmd.ProcessState.ExitCode(); got != tc.want {
				t.Errorf("exit status %d, want %d; output:\n%s", got, tc.want, out.String())
			}
		})
	}
}

// TestStaticBinaryAsPID1 runs the CGO_ENABLED=0 binary, as the image does,
// as PID 1 of a new PID namespace, probes it with the healthcheck
// subcommand, and stops it with SIGTERM.
func TestStaticBinaryAsPID1(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN) to create a PID namespace")
	}
	static := buildBinary(t)
	is := testkit.StartIssuer(t, nil)
	upstream := httptest.NewServer(demo.Handler())
	t.Cleanup(upstream.Close)
	port := freePort(t)
	cmd := exec.Command(static)
	cmd.Env = []string{"PORT=" + port, "LISTEN_HOST=127.0.0.1", "OIDC_ISSUER_URL=" + is.URL, "OIDC_AUDIENCE=x",
		"RESOURCE_URL=https://mcp.example.com", "ALLOW_SUBS=alice", "MCP_UPSTREAM_URL=" + upstream.URL}
	var stderr testkit.LogBuffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot create a PID namespace here: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	testkit.WaitFor(t, "the healthcheck to pass", 10*time.Second, func() bool {
		hc := exec.Command(static, "healthcheck")
		hc.Env = []string{"PORT=" + port}
		return hc.Run() == nil
	})
	// The log is copied from a pipe: wait for the line rather than expect it.
	testkit.WaitFor(t, "the listening line in the log", 5*time.Second, func() bool { return strings.Contains(stderr.String(), "listening") })
	if err := terminate(t, cmd); err != nil {
		t.Errorf("PID 1 after SIGTERM: %v, want exit 0; log:\n%s", err, stderr.String())
	}
}

// TestStderrReaderGone: the gateway's stderr is a pipe whose reader goes
// away (a log shipper that died) while the child writes lines: the gateway
// keeps serving, and SIGTERM stops it and its child as usual, rather than
// SIGPIPE ending it and leaving the child behind.
func TestStderrReaderGone(t *testing.T) {
	bin := buildBinary(t)
	is := testkit.StartIssuer(t, nil)
	dir := t.TempDir()
	port := freePort(t)
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "PORT=" + port, "LISTEN_HOST=127.0.0.1", "LOG_FORMAT=json",
		"OIDC_ISSUER_URL=" + is.URL, "OIDC_AUDIENCE=x", "RESOURCE_URL=https://mcp.example.com", "ALLOW_SUBS=alice", "SHUTDOWN_GRACE=5s",
		"MCP_SPAWN_CMD=echo $$ > " + dir + "/pid; i=0; while :; do i=$((i+1)); echo line $i; echo $i > " + dir + "/n.tmp; mv " + dir + "/n.tmp " + dir + "/n; sleep 0.02; done"}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	sc := bufio.NewScanner(r)
	for sc.Scan() && !strings.Contains(sc.Text(), `"@message":"listening"`) {
	}
	r.Close() // the shipper is gone
	lines := func() int {
		b, _ := os.ReadFile(dir + "/n")
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	var child int
	testkit.WaitFor(t, "the child's pid", 10*time.Second, func() bool {
		b, _ := os.ReadFile(dir + "/pid")
		child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return child > 0
	})
	t.Cleanup(func() { _ = syscall.Kill(-child, syscall.SIGKILL) }) // its group, should it outlive the gateway
	since := lines()
	// Each of the child's lines is logged: many batches meet the closed pipe.
	testkit.WaitFor(t, "the child's lines", 10*time.Second, func() bool { return lines() >= since+25 })
	resp, err := http.Get("http://127.0.0.1:" + port + "/healthz")
	if err != nil {
		t.Fatalf("the gateway no longer serves: %v", err)
	}
	resp.Body.Close()
	err = terminate(t, cmd)
	if got := cmd.ProcessState.ExitCode(); got != 143 {
		t.Errorf("exit status %d (%v), want 143 (the child's SIGTERM)", got, err)
	}
	if syscall.Kill(child, 0) == nil {
		t.Errorf("the child %d outlived the gateway", child)
	}
}

// TestDevModeStopsOnAServerThatCannotStart: in dev mode a command that
// cannot run, or a server that exits before it ever listened, stops the
// gateway with one line naming the command, the server's last lines and its
// status, instead of restarting it forever.
func TestDevModeStopsOnAServerThatCannotStart(t *testing.T) {
	bin := buildBinary(t)
	cases := []struct {
		name       string
		args       []string
		wantStatus int
		wantOut    []string
	}{
		{"no such program", []string{"--", "/nonexistent/mcp-server"}, 127,
			[]string{`cannot start the MCP server: "/nonexistent/mcp-server"`, "(exit 127)"}},
		{"a shell command not found", []string{"--mcp-spawn-cmd", "no-such-mcp-server --port {port}"}, 127,
			[]string{`cannot start the MCP server: "no-such-mcp-server --port {port}"`, "not found"}},
		{"exits before it listens", []string{"--", "sh", "-c", "echo missing API_KEY >&2; exit 3"}, 3,
			[]string{`cannot start the MCP server: "sh"`, "its last lines:", "missing API_KEY"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, append([]string{"dev"}, tc.args...)...)
			cmd.Env = append(os.Environ(), "PORT=0", "LOG_FORMAT=json")
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("dev %v: %v, want an exit status\n%s", tc.args, err, out)
			}
			if got := ee.ExitCode(); got != tc.wantStatus {
				t.Errorf("exit status %d, want %d\n%s", got, tc.wantStatus, out)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if n := strings.Count(string(out), "child started"); n != 1 && tc.wantStatus != 127 {
				t.Errorf("the child started %d times, want once (no restart)\n%s", n, out)
			}
		})
	}
}

// overlapWriter records writes and whether two were ever in progress at
// once.
type overlapWriter struct {
	in      atomic.Int32
	overlap atomic.Bool
	mu      sync.Mutex
	writes  []string
}

func (w *overlapWriter) Write(p []byte) (int, error) {
	if w.in.Add(1) > 1 {
		w.overlap.Store(true)
	}
	runtime.Gosched() // let another writer in, if anything lets it
	w.mu.Lock()
	w.writes = append(w.writes, string(p))
	w.mu.Unlock()
	w.in.Add(-1)
	return len(p), nil
}

// TestLogsAuditOutput checks the logger's wiring of the gate's audit
// lines: an output only for JSON, whose writes and the logger's own are
// whole lines that never overlap.
func TestLogsAuditOutput(t *testing.T) {
	for _, c := range []struct {
		format string
		audit  bool
	}{{"json", true}, {"text", false}} {
		t.Run(c.format, func(t *testing.T) {
			var out overlapWriter
			lg := newLogger(LogConfig{Format: c.format, Level: hclog.Info}, &out)
			if got := lg.audit != nil; got != c.audit {
				t.Fatalf("audit output: got %v, want %v", got, c.audit)
			}
			if !c.audit {
				return
			}
			const writers, lines = 4, 200
			var wg sync.WaitGroup
			for range writers {
				wg.Add(2)
				go func() {
					defer wg.Done()
					for range lines {
						lg.root.Named("gate").Info("rejected", "status", 401)
					}
				}()
				go func() {
					defer wg.Done()
					for range lines {
						_, _ = lg.audit.Write([]byte(`{"@message":"proxied"}` + "\n"))
					}
				}()
			}
			wg.Wait()
			if out.overlap.Load() {
				t.Error("an audit line and a logger line were written at once")
			}
			if got, want := len(out.writes), 2*writers*lines; got != want {
				t.Errorf("writes: got %d, want %d", got, want)
			}
			for _, w := range out.writes {
				if strings.Count(w, "\n") != 1 || !strings.HasSuffix(w, "\n") {
					t.Fatalf("write is not one line: %q", w)
				}
			}
		})
	}
}

// TestHealthcheckReadsSettingsAsTheGateway: the probe reads PORT and
// LISTEN_HOST as the gateway does, blanks trimmed, so a gateway that runs
// with PORT=" 8080 " is found; a value the gateway would refuse is named.
func TestHealthcheckReadsSettingsAsTheGateway(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.WriteHeader(http.StatusOK)
		}
	}))
	defer srv.Close()
	_, p, _ := net.SplitHostPort(srv.Listener.Addr().String())
	var out strings.Builder
	env := envOf(map[string]string{"PORT": " " + p + " ", "LISTEN_HOST": " 127.0.0.1\t"})
	if err := runHealthcheck(context.Background(), nil, env, &out); err != nil || out.String() != "ok\n" {
		t.Errorf("healthcheck with blanks around PORT and LISTEN_HOST: %v %q, want ok", err, out.String())
	}
	for _, tc := range []struct{ port, host, want string }{
		{"80a", "", "healthcheck: PORT \"80a\" is not a port number"},
		{p, "gateway.local", "healthcheck: LISTEN_HOST \"gateway.local\" is not an IP address"},
	} {
		err := runHealthcheck(context.Background(), nil, envOf(map[string]string{"PORT": tc.port, "LISTEN_HOST": tc.host}), &out)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("PORT %q LISTEN_HOST %q: %v, want %q", tc.port, tc.host, err, tc.want)
		}
	}
}

// TestShutdownWaitsForDetachedStreams: every event stream open when the
// gateway stops has its audit line written before run returns (main exits
// then), though the gate relays them after their handlers returned, on
// connections http.Server.Shutdown no longer sees.
func TestShutdownWaitsForDetachedStreams(t *testing.T) {
	is := testkit.StartIssuer(t, nil)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: open\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(upstream.Close)
	// One subject holds all 100 streams: no per-subject concurrency limit.
	gw := startRun(t, nil, gatewayEnv(is.URL, map[string]string{"MCP_UPSTREAM_URL": upstream.URL, "RATE_LIMIT_RPM": "1000", "MAX_CONCURRENT_PER_SUBJECT": "0"}))
	base := "http://" + gw.addr(t)
	waitReady(t, base)
	token, err := is.AccessToken("alice", "https://mcp.example.com/mcp", time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	var opened sync.WaitGroup
	var streaming atomic.Int64
	for range n {
		opened.Add(1)
		go func() {
			defer opened.Done()
			req, _ := http.NewRequest(http.MethodGet, base+"/mcp", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Accept", "text/event-stream")
			resp, err := client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || line != "data: open\n" {
				t.Errorf("first event: got %q, %v", line, err)
			}
			streaming.Add(1)
			_, _ = io.Copy(io.Discard, resp.Body) // until the gateway ends it
		}()
	}
	testkit.WaitFor(t, "the streams", 10*time.Second, func() bool { return streaming.Load() == n || t.Failed() })
	if err := gw.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	if got := strings.Count(gw.stderr.String(), `"@message":"proxied"`); got != n {
		t.Errorf("proxied lines when run returned: got %d, want %d", got, n)
	}
	opened.Wait()
}

func TestWaitGroupFor(t *testing.T) {
	var wg sync.WaitGroup
	if !waitGroupFor(&wg, time.Millisecond) {
		t.Error("an empty group: not done")
	}
	wg.Add(1)
	if waitGroupFor(&wg, 20*time.Millisecond) {
		t.Error("a group never done: reported done")
	}
	go func() { time.Sleep(10 * time.Millisecond); wg.Done() }()
	if !waitGroupFor(&wg, 5*time.Second) {
		t.Error("a group done after 10 ms: not done within 5 s")
	}
}
