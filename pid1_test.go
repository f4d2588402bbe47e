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
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN) to create a PID namespace")
	}
	bin := buildBinary(t)
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
			cmd := exec.Command(bin)
			cmd.Env = append([]string{
				"PATH=" + os.Getenv("PATH"), "PORT=0", "LISTEN_HOST=127.0.0.1", "LOG_FORMAT=json",
				"OIDC_ISSUER_URL=http://127.0.0.1:1", "OIDC_AUDIENCE=x", "RESOURCE_URL=http://127.0.0.1", "ALLOW_SUBS=x",
				"SHUTDOWN_GRACE=5s", "MCP_SPAWN_CMD=" + tc.cmd,
			}, tc.env...)
			var out testkit.LogBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Setpgid: true}
			if err := cmd.Start(); err != nil {
				t.Skipf("cannot create a PID namespace here (needs CAP_SYS_ADMIN): %v", err)
			}
			waitErr := make(chan error, 1)
			go func() { waitErr <- cmd.Wait() }()
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				<-waitErr
				waitErr <- nil
			})
			testkit.WaitFor(t, "the child to be set up", 15*time.Second, func() bool {
				return strings.Contains(out.String(), `"@message":"`+tc.ready)
			})
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			var err error
			select {
			case err = <-waitErr:
				waitErr <- err
			case <-time.After(20 * time.Second):
				t.Fatalf("PID 1 did not exit after SIGTERM; log:\n%s", out.String())
			}
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatal(err)
			}
			if got := cmd.ProcessState.ExitCode(); got != tc.want {
				t.Errorf("exit status %d, want %d; log:\n%s", got, tc.want, out.String())
			}
			if killed := strings.Contains(out.String(), "killing it"); killed != (tc.want == 137) {
				t.Errorf("SIGKILL used: %v, want %v; log:\n%s", killed, tc.want == 137, out.String())
			}
		})
	}
}

// TestUpstreamModeReapsAsPID1: as PID 1 without a child of its own
// (MCP_UPSTREAM_URL), the gateway still gets the namespace's orphans (of a
// `docker exec` that left something in the background), and must reap
// them rather than let them stay zombies.
func TestUpstreamModeReapsAsPID1(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN) to create a PID namespace")
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Skip("needs nsenter (util-linux) to start processes in the gateway's namespace")
	}
	cmd := exec.Command(buildBinary(t))
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "PORT=0", "LISTEN_HOST=127.0.0.1", "LOG_FORMAT=json",
		"OIDC_ISSUER_URL=http://127.0.0.1:1", "OIDC_AUDIENCE=x", "RESOURCE_URL=http://127.0.0.1", "ALLOW_SUBS=x",
		"MCP_UPSTREAM_URL=http://127.0.0.1:1",
	}
	var out testkit.LogBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot create a PID namespace here (needs CAP_SYS_ADMIN): %v", err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-waitErr
	}()
	testkit.WaitFor(t, "the gateway to listen", 15*time.Second, func() bool {
		return strings.Contains(out.String(), `"@message":"listening"`)
	})
	gw := cmd.Process.Pid
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
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN) to create a PID namespace")
	}
	var script strings.Builder
	for _, s := range forwarded {
		n := int(s.(syscall.Signal))
		script.WriteString("trap 'echo got " + strconv.Itoa(n) + "' " + strconv.Itoa(n) + "; ")
	}
	script.WriteString("echo up; while :; do sleep 0.05; done")
	cmd := exec.Command(buildBinary(t))
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "PORT=0", "LISTEN_HOST=127.0.0.1", "LOG_FORMAT=json",
		"OIDC_ISSUER_URL=http://127.0.0.1:1", "OIDC_AUDIENCE=x", "RESOURCE_URL=http://127.0.0.1", "ALLOW_SUBS=x",
		"SHUTDOWN_GRACE=2s", "MCP_SPAWN_CMD=" + script.String(),
	}
	var out testkit.LogBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot create a PID namespace here (needs CAP_SYS_ADMIN): %v", err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-waitErr
	}()
	testkit.WaitFor(t, "the child to be set up", 15*time.Second, func() bool {
		return strings.Contains(out.String(), `"@message":"up"`)
	})
	for _, s := range forwarded {
		if err := cmd.Process.Signal(s); err != nil {
			t.Fatalf("%v: %v\n%s", s, err, out.String())
		}
		got := `"@message":"got ` + strconv.Itoa(int(s.(syscall.Signal))) + `"`
		testkit.WaitFor(t, "the child to get "+s.String(), 10*time.Second, func() bool {
			return strings.Contains(out.String(), got)
		})
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waitErr:
		waitErr <- err
	case <-time.After(20 * time.Second):
		t.Fatalf("PID 1 did not exit after SIGTERM; log:\n%s", out.String())
	}
	if got := cmd.ProcessState.ExitCode(); got != 143 {
		t.Errorf("exit status %d, want 143 (the child killed by SIGTERM); log:\n%s", got, out.String())
	}
}
