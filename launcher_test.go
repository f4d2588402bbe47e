package main

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// TestLauncherForm runs `mcp-oauth-proxy -- CMD ARGS...` with no spawn
// port: the arguments reach the child exactly, {port} and PORT carry the
// port the gateway chose, the gateway proxies there, and a crashed child
// is restarted.
func TestLauncherForm(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("MOP_TEST_ARGV_SERVER", "1")       // inherited by the child
	t.Setenv("STATIC_CLIENT_SECRET", "hunter2") // must not be
	is := testkit.StartIssuer(t, nil)
	env := gatewayEnv(is.URL, map[string]string{
		"OIDC_AUDIENCE":             "https://mcp.example.com",
		"RESOURCE_URL":              "https://mcp.example.com",
		"MCP_SPAWN_RESTART_INITIAL": "50ms",
	})
	childArgs := []string{"two words", `"quoted" 'single'`, "$HOME", "--port={port}", "{port}"}
	gw := startRun(t, append([]string{"--", self}, childArgs...), env)
	addr := gw.addr(t)
	token, err := is.AccessToken("alice", "https://mcp.example.com", time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}

	var got struct {
		Args       []string
		Port, Path string
		Secret     string
	}
	ask := func(path string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			got.Args = nil
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode
	}
	testkit.WaitFor(t, "the child to be ready", 10*time.Second, func() bool { return ask("/hello") == http.StatusOK })
	firstPort := got.Port
	// /readyz reports the supervisor's own account of the child.
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var ready struct {
		Checks map[string]struct {
			Ready  bool
			Detail string
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&ready); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if c := ready.Checks["child"]; !c.Ready || c.Detail != "ready, 0 restarts" {
		t.Errorf("/readyz child: got %+v, want ready with detail %q", c, "ready, 0 restarts")
	}
	want := []string{"two words", `"quoted" 'single'`, "$HOME", "--port=" + firstPort, firstPort}
	if strings.Join(got.Args, "\x00") != strings.Join(want, "\x00") {
		t.Errorf("child argv: got %q, want %q", got.Args, want)
	}
	if firstPort == "" || firstPort == "0" {
		t.Errorf("child PORT: got %q, want the chosen port", firstPort)
	}
	if got.Path != "/hello" {
		t.Errorf("child path: got %q, want /hello", got.Path)
	}
	if got.Secret != "" {
		t.Errorf("the child received STATIC_CLIENT_SECRET")
	}
	if !strings.Contains(gw.stderr.String(), firstPort) {
		t.Errorf("the chosen port %s is not logged", firstPort)
	}

	// Crash it: requests get 502/503 while it is down, then it is back.
	ask("/crash")
	testkit.WaitFor(t, "the restarted child", 10*time.Second, func() bool { return ask("/again") == http.StatusOK })
	if got.Path != "/again" {
		t.Errorf("after restart: got path %q, want /again", got.Path)
	}
	if !strings.Contains(gw.stderr.String(), "exit status 3") {
		t.Errorf("the crash's exit status is not logged")
	}

	// The child was stopped with SIGTERM: 128+15.
	if got := exitStatus(gw.stop(t)); got != 143 {
		t.Errorf("got exit status %d, want 143 (the child's SIGTERM)", got)
	}
}

// TestShutdownGraceZero: SHUTDOWN_GRACE=0 gives the child no time either:
// SIGKILL right after SIGTERM, so its TERM trap (which would write a file
// after a second) never runs to its end.
func TestShutdownGraceZero(t *testing.T) {
	dir := t.TempDir()
	is := testkit.StartIssuer(t, nil)
	gw := startRun(t, nil, gatewayEnv(is.URL, map[string]string{
		"SHUTDOWN_GRACE": "0",
		"MCP_SPAWN_CMD":  "trap 'sleep 1; echo late > " + dir + "/late; exit 0' TERM; echo $$ > " + dir + "/pid; while :; do sleep 0.05; done",
	}))
	gw.addr(t)
	testkit.WaitFor(t, "the child", 10*time.Second, func() bool { _, err := os.Stat(dir + "/pid"); return err == nil })
	if got := exitStatus(gw.stop(t)); got != 137 {
		t.Errorf("got exit status %d, want 137 (the child's SIGKILL)", got)
	}
	if _, err := os.Stat(dir + "/late"); err == nil {
		t.Error("the child's TERM trap ran to its end")
	}
}

// TestDevModeWithOwnServer: `dev -- CMD ARGS...` puts the developer's own
// server behind the development issuer instead of the demo server.
func TestDevModeWithOwnServer(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("MOP_TEST_ARGV_SERVER", "1")
	gw := startRun(t, []string{"dev", "--", self, "mine"}, map[string]string{"PORT": "0", "LOG_FORMAT": "json"})
	var mcpURL, token string
	testkit.WaitFor(t, "dev mode's instructions", 10*time.Second, func() bool {
		for _, l := range strings.Split(gw.stdout.String(), "\n") {
			f := strings.Fields(l)
			if len(f) == 3 && f[0] == "MCP" && f[1] == "URL:" {
				mcpURL = f[2]
			}
			if v, ok := strings.CutPrefix(l, "TOKEN='"); ok {
				token = strings.TrimSuffix(v, "'")
			}
		}
		return mcpURL != "" && token != ""
	})
	var got struct{ Args []string }
	testkit.WaitFor(t, "the developer's server behind the gateway", 10*time.Second, func() bool {
		req, _ := http.NewRequest(http.MethodGet, mcpURL, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&got) == nil
	})
	if len(got.Args) != 1 || got.Args[0] != "mine" {
		t.Errorf("got child args %q, want [mine]", got.Args)
	}
	// Stopped with its child running, dev mode exits 0.
	if err := gw.stop(t); exitStatus(err) != 0 {
		t.Errorf("run returned %v, exit status %d, want 0", err, exitStatus(err))
	}
}
