package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// TestSpawnAsPID1 runs the real gateway binary as PID 1 of a new PID
// namespace with MCP_SPAWN_CMD, stops it with SIGTERM and checks that it
// exits with its child's status. The provider is unreachable on purpose:
// that is not fatal, and the supervisor does not depend on it.
func TestSpawnAsPID1(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cmd   string
		ready string // a child line that says it is set up
		env   []string
		want  int
	}{
		{"child killed by SIGTERM", "echo up; exec sleep 100", "up", nil, 143},
		// "up" comes from the background job once it runs a new program:
		// before that exec it is still the trapping shell, and a TERM
		// then would be caught and lost (see supervisor's TestPID1ExitCodes).
		{"child traps TERM and exits 5", `trap 'exit 5' TERM; sh -c 'echo up; exec sleep 100' & wait`, "up", nil, 5},
		{"child ignores TERM, killed after SHUTDOWN_GRACE", "trap '' TERM; echo up; sleep 100", "up", []string{"SHUTDOWN_GRACE=1s"}, 137},
		{"child exited 3, stopped while backing off", "echo up; exit 3", "restarting child", []string{"MCP_SPAWN_RESTART_INITIAL=1h", "MCP_SPAWN_RESTART_MAX=1h"}, 3},
		{"three-level tree stops on SIGTERM", `sh -c 'sh -c "sleep 100" & sleep 100' & echo up; wait`, "up", nil, 143},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := startPID1Gateway(t, append([]string{"SHUTDOWN_GRACE=5s", "MCP_SPAWN_CMD=" + tc.cmd}, tc.env...)...)
			g.waitLog(t, "the child to be set up", tc.ready)
			if got := g.stop(t); got != tc.want {
				t.Errorf("exit status %d, want %d; log:\n%s", got, tc.want, g.out.String())
			}
			if killed := strings.Contains(g.out.String(), "killing it"); killed != (tc.want == 137) {
				t.Errorf("SIGKILL used: %v, want %v; log:\n%s", killed, tc.want == 137, g.out.String())
			}
		})
	}
}

// TestUpstreamModeReapsAsPID1: as PID 1 without a child of its own
// (MCP_UPSTREAM_URL), the gateway still gets the namespace's orphans (of a
// `docker exec` that left something in the background), and must reap
// them rather than let them stay zombies.
func TestUpstreamModeReapsAsPID1(t *testing.T) {
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Skip("needs nsenter (util-linux) to start processes in the gateway's namespace")
	}
	g := startPID1Gateway(t, "MCP_UPSTREAM_URL=http://127.0.0.1:1")
	g.waitLog(t, "the gateway to listen", "listening")
	gw := g.cmd.Process.Pid
	// Two sleeps whose parent subshells exit at once: orphans, and so the
	// gateway's children, until they exit.
	if b, err := exec.Command(nsenter, "-t", strconv.Itoa(gw), "-p", "--", "sh", "-c", "(sleep 0.2 &); (sleep 0.2 &)").CombinedOutput(); err != nil {
		t.Fatalf("nsenter: %v\n%s", err, b)
	}
	testkit.WaitFor(t, "the orphans gone, not left as zombies", 10*time.Second, func() bool {
		return len(childrenOf(gw)) == 0
	})
}

// childrenOf lists the processes whose parent is ppid (zombies included).
func childrenOf(ppid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			out = append(out, pid)
		}
	}
	return out
}

// TestSignalsForwardedAsPID1: as PID 1 the gateway passes every signal of
// forwarded to its child's group and stays up, ABRT, TRAP, SYS and STKFLT
// included, on which Go's runtime would otherwise end it at once (status 2,
// the child left behind).
func TestSignalsForwardedAsPID1(t *testing.T) {
	var script strings.Builder
	for _, s := range forwarded {
		n := int(s.(syscall.Signal))
		script.WriteString("trap 'echo got " + strconv.Itoa(n) + "' " + strconv.Itoa(n) + "; ")
	}
	script.WriteString("echo up; while :; do sleep 0.05; done")
	g := startPID1Gateway(t, "SHUTDOWN_GRACE=2s", "MCP_SPAWN_CMD="+script.String())
	g.waitLog(t, "the child to be set up", "up")
	for _, s := range forwarded {
		if err := g.cmd.Process.Signal(s); err != nil {
			t.Fatalf("%v: %v\n%s", s, err, g.out.String())
		}
		g.waitLog(t, "the child to get "+s.String(), "got "+strconv.Itoa(int(s.(syscall.Signal)))+`"`)
	}
	if got := g.stop(t); got != 143 {
		t.Errorf("exit status %d, want 143 (the child killed by SIGTERM); log:\n%s", got, g.out.String())
	}
}

// pid1Gateway is the gateway binary running as PID 1 of a PID namespace of
// its own.
type pid1Gateway struct {
	cmd     *exec.Cmd
	out     *testkit.LogBuffer
	waitErr chan error // its Wait's result, put back by whoever takes it
}

// startPID1Gateway starts the gateway binary as PID 1 of a new PID
// namespace, with a configuration whose provider is unreachable on
// purpose (that is not fatal) and env after it, and ends it when the test
// does. It skips without root.
func startPID1Gateway(t *testing.T, env ...string) *pid1Gateway {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN) to create a PID namespace")
	}
	cmd := exec.Command(buildBinary(t))
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"), "PORT=0", "LISTEN_HOST=127.0.0.1", "LOG_FORMAT=json",
		"OIDC_ISSUER_URL=http://127.0.0.1:1", "OIDC_AUDIENCE=x", "RESOURCE_URL=http://127.0.0.1", "ALLOW_SUBS=x",
	}, env...)
	g := &pid1Gateway{cmd: cmd, out: new(testkit.LogBuffer), waitErr: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = g.out, g.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot create a PID namespace here (needs CAP_SYS_ADMIN): %v", err)
	}
	go func() { g.waitErr <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-g.waitErr
		g.waitErr <- nil
	})
	return g
}

// waitLog waits until the log has a line whose message starts with msg.
func (g *pid1Gateway) waitLog(t *testing.T, what, msg string) {
	t.Helper()
	testkit.WaitFor(t, what, 15*time.Second, func() bool {
		return strings.Contains(g.out.String(), `"@message":"`+msg)
	})
}

// stop sends SIGTERM and returns the exit status.
func (g *pid1Gateway) stop(t *testing.T) int {
	t.Helper()
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-g.waitErr:
		g.waitErr <- err
	case <-time.After(20 * time.Second):
		t.Fatalf("PID 1 did not exit after SIGTERM; log:\n%s", g.out.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return g.cmd.ProcessState.ExitCode()
}
