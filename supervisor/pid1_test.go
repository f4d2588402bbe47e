package supervisor

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pid1 is the test binary running pid1Harness as PID 1 of a new PID
// namespace.
type pid1 struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	more  chan struct{} // signalled on each new line
	done  chan struct{} // closed after Wait
	err   error
}

// startPID1 runs the harness with the child command cmd and extra
// environment; it skips when PID namespaces are not permitted.
func startPID1(t *testing.T, command string, env ...string) *pid1 {
	t.Helper()
	return startHarness(t, syscall.CLONE_NEWPID, command, env...)
}

// startHarness runs the harness in the new namespaces of cloneflags.
func startHarness(t *testing.T, cloneflags uintptr, command string, env ...string) *pid1 {
	t.Helper()
	return runHarness(t, harnessCmd(testBin(t), cloneflags, command, env...))
}

// harnessCmd is the command that runs bin, a copy of the test binary, as
// the harness.
func harnessCmd(bin string, cloneflags uintptr, command string, env ...string) *exec.Cmd {
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{"SVTEST_HELPER=pid1", "SVTEST_CMD=" + command}, env...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: cloneflags, Setpgid: true}
	return cmd
}

// runHarness starts cmd, from harnessCmd, and follows its log.
func runHarness(t *testing.T, cmd *exec.Cmd) *pid1 {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) {
			t.Skipf("creating namespaces needs CAP_SYS_ADMIN (root): %v", err)
		}
		t.Fatal(err)
	}
	p := &pid1{cmd: cmd, more: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			select {
			case p.more <- struct{}{}:
			default:
			}
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	})
	return p
}

func (p *pid1) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// waitLog waits for a log line containing s.
func (p *pid1) waitLog(t *testing.T, s string) {
	t.Helper()
	p.waitLogCount(t, s, 1)
}

// waitLogCount waits for n log lines containing s.
func (p *pid1) waitLogCount(t *testing.T, s string, n int) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		if strings.Count(p.logs(), s) >= n {
			return
		}
		select {
		case <-p.more:
		case <-p.done:
			if strings.Count(p.logs(), s) >= n {
				return
			}
			t.Fatalf("harness exited before logging %q %d times:\n%s", s, n, p.logs())
		case <-timeout:
			t.Fatalf("no %d log lines with %q:\n%s", n, s, p.logs())
		}
	}
}

// exitCode waits for the harness to exit and returns its status.
func (p *pid1) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("harness did not exit:\n%s", p.logs())
	}
	var ee *exec.ExitError
	if p.err != nil && !errors.As(p.err, &ee) {
		t.Fatal(p.err)
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *pid1) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

func TestPID1ExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		command string
		waitFor string // log text after which SIGTERM is sent
		env     []string
		want    int
	}{
		{"child exited 3, stopped during backoff", "exit 3", "restarting child after a delay", []string{"SVTEST_INITIAL=1h"}, 3},
		{"child killed by SIGTERM", "echo up; exec sleep 100", `"@message":"up"`, nil, 143},
		// "up" comes from the background job itself, once it runs a new
		// program. Between fork and exec it is still the trapping shell:
		// a TERM then runs the trap's handler, which only notes it, and
		// the program exec'd next never sees it. "up" from the parent (as
		// in `sleep 100 & echo up`) can come before that exec.
		{"child traps TERM and exits 7", `trap 'exit 7' TERM; sh -c 'echo up; exec sleep 100' & wait`, `"@message":"up"`, nil, 7},
		{"child ignores TERM and is killed", "trap '' TERM; echo up; sleep 100", `"@message":"up"`, []string{"SVTEST_GRACE=300ms"}, 137},
		{"three-level tree all get TERM", `sh -c 'sh -c "sleep 100" & sleep 100' & echo up; wait`, `"@message":"up"`, nil, 143},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startPID1(t, tc.command, tc.env...)
			p.waitLog(t, tc.waitFor)
			p.signal(t, syscall.SIGTERM)
			if got := p.exitCode(t); got != tc.want {
				t.Errorf("exit code %d, want %d:\n%s", got, tc.want, p.logs())
			}
			if tc.want != 137 && strings.Contains(p.logs(), "killing it") {
				t.Errorf("needed SIGKILL:\n%s", p.logs())
			}
		})
	}
}

func TestPID1ReapsOrphans(t *testing.T) {
	p := startPID1(t, `for i in $(seq 50); do (sleep 0.3 &); done; echo spawned; exec sleep 100`)
	p.waitLog(t, `"@message":"spawned"`)
	harness := p.cmd.Process.Pid
	sawOrphans := false
	deadline := time.Now().Add(20 * time.Second)
	for {
		kids := childrenOf(harness)
		zombies := 0
		for _, st := range kids {
			if st == 'Z' {
				zombies++
			}
		}
		if len(kids) > 1 {
			sawOrphans = true
		}
		if sawOrphans && len(kids) == 1 && zombies == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PID 1 still has %d children, %d of them zombies (saw orphans: %v)", len(kids), zombies, sawOrphans)
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.signal(t, syscall.SIGTERM)
	if got := p.exitCode(t); got != 143 {
		t.Errorf("exit code %d, want 143", got)
	}
}

// TestPID1StraysGetTerm: as PID 1 too (with a /proc of its namespace, as
// in a container), a process that left the child's group with setsid gets
// SIGTERM, and time to act on it, before the final sweep's SIGKILL. Where
// /proc shows another PID namespace, its pids are not taken for ours: the
// final sweep alone ends the stray.
func TestPID1StraysGetTerm(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		term bool // the stray got SIGTERM first
	}{
		{"a /proc of its own", []string{"SVTEST_PROC=1"}, true},
		{"the parent namespace's /proc", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := startHarness(t, syscall.CLONE_NEWPID|syscall.CLONE_NEWNS, fmt.Sprintf(`setsid sh -c 'trap "echo term > %[1]s/term; exit 0" TERM; echo up > %[1]s/up; while :; do sleep 0.05; done' >/dev/null 2>&1 & while [ ! -f %[1]s/up ]; do sleep 0.01; done; echo up; exec sleep 100`, dir), tc.env...)
			p.waitLog(t, `"@message":"up"`)
			p.signal(t, syscall.SIGTERM)
			if got := p.exitCode(t); got != 143 {
				t.Errorf("exit code %d, want 143:\n%s", got, p.logs())
			}
			if b, _ := os.ReadFile(dir + "/term"); (string(b) == "term\n") != tc.term {
				t.Errorf("the stray's TERM trap wrote %q, want it run: %v:\n%s", b, tc.term, p.logs())
			}
			if signalled := strings.Contains(p.logs(), "left outside its process group"); signalled != tc.term {
				t.Errorf("strays signalled: %v, want %v:\n%s", signalled, tc.term, p.logs())
			}
		})
	}
}

// TestPID1SecondTermWaitsForChild: a second SIGTERM while the child runs
// its TERM trap does not end PID 1 before the child. The trap waits for a
// file the test creates only once the harness has logged the second TERM.
func TestPID1SecondTermWaitsForChild(t *testing.T) {
	goFile := t.TempDir() + "/go"
	p := startPID1(t, fmt.Sprintf(`trap 'echo stopping; while [ ! -f %s ]; do sleep 0.01; done; echo finishing; exit 0' TERM; sh -c 'echo up; exec sleep 100' & wait`, goFile))
	p.waitLog(t, `"@message":"up"`)
	p.signal(t, syscall.SIGTERM)
	p.waitLog(t, `"@message":"stopping"`)
	p.signal(t, syscall.SIGTERM)
	p.waitLogCount(t, "harness got a stop signal", 2)
	if err := os.WriteFile(goFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := p.exitCode(t); got != 0 {
		t.Errorf("exit code %d, want 0 (the child's, after its trap ran):\n%s", got, p.logs())
	}
	if !strings.Contains(p.logs(), `"@message":"finishing"`) {
		t.Errorf("the child's trap did not finish:\n%s", p.logs())
	}
}

func TestPID1ForwardsHUP(t *testing.T) {
	p := startPID1(t, `trap 'echo got-hup' HUP; echo up; while :; do sleep 0.05; done`)
	p.waitLog(t, `"@message":"up"`)
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, `"@message":"got-hup"`)
	p.signal(t, syscall.SIGTERM)
	p.exitCode(t)
	if strings.Contains(p.logs(), "restarting child") {
		t.Errorf("SIGHUP caused a restart:\n%s", p.logs())
	}
}

// TestNoShellStopsRun: in an image without /bin/sh (distroless), a Command
// cannot run at all. The harness hides /usr/bin (where /bin/sh lives here)
// in its own mount namespace and must exit 127 with an error that says the
// command needs /bin/sh.
func TestNoShellStopsRun(t *testing.T) {
	if _, err := os.Stat("/usr/bin/sh"); err != nil {
		t.Skipf("the test hides /usr/bin to remove /bin/sh, and sh is not there: %v", err)
	}
	p := startHarness(t, syscall.CLONE_NEWPID|syscall.CLONE_NEWNS, "true", "SVTEST_HIDE=/usr/bin")
	if got := p.exitCode(t); got != 127 {
		t.Fatalf("exit code %d, want 127:\n%s", got, p.logs())
	}
	want := `cannot start the MCP server: \"true\": it needs /bin/sh: no such file or directory (exit 127)`
	if !strings.Contains(p.logs(), want) {
		t.Errorf("no log line with %s:\n%s", want, p.logs())
	}
}

// TestChildCannotReadGateway: the child runs as the gateway's user, yet
// it cannot read the gateway's environment in /proc, which holds the
// secrets kept out of the child's own. As root the test runs the harness
// and so its child as another user, as a container's non-root user would.
func TestChildCannotReadGateway(t *testing.T) {
	bin := testBin(t)
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		// The test binary's directory is root's alone: copy it where
		// the other user can run it.
		dir := t.TempDir()
		for _, d := range []string{filepath.Dir(dir), dir} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		b, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		bin = dir + "/harness"
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			t.Fatal(err)
		}
		cred = &syscall.Credential{Uid: 65534, Gid: 65534}
	}
	cmd := harnessCmd(bin, 0, `if head -c1 /proc/$PPID/environ >/dev/null 2>&1; then echo environ-readable; else echo environ-denied; fi; exec sleep 100`)
	cmd.Dir = "/"
	cmd.SysProcAttr.Credential = cred
	p := runHarness(t, cmd)
	p.waitLog(t, `"@message":"environ-`)
	if !strings.Contains(p.logs(), `"@message":"environ-denied"`) {
		t.Errorf("the child can read the gateway's environment:\n%s", p.logs())
	}
	p.signal(t, syscall.SIGTERM)
	if got := p.exitCode(t); got != 143 {
		t.Errorf("exit code %d, want 143:\n%s", got, p.logs())
	}
}
