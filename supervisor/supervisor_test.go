package supervisor

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no command", Config{}},
		{"both forms", Config{Command: "true", Args: []string{"true"}}},
		{"empty argv0", Config{Args: []string{""}}},
		{"port out of range", Config{Command: "true", Port: 70000}},
		{"relative ready path", Config{Command: "true", ReadyPath: "healthz"}},
		{"initial above max", Config{Command: "true", InitialBackoff: time.Minute, MaxBackoff: time.Second}},
		{"negative grace", Config{Command: "true", StopGrace: -1}},
		{"a grace and none", Config{Command: "true", StopGrace: time.Second, NoStopGrace: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
}

// TestExitCodes: a child's status, as a shell reports it, for crashes that
// are restarted.
func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      Config
		code     int
		lastExit string
	}{
		{"exit 0", Config{Command: "exit 0"}, 0, "exit status 0"},
		{"exit 3", Config{Command: "exit 3"}, 3, "exit status 3"},
		{"false", Config{Args: []string{"false"}}, 1, "exit status 1"},
		{"killed by SIGUSR1", Config{Command: "kill -USR1 $$"}, 128 + 10, "signal: user defined signal 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startSup(t, tc.cfg)
			h.nextDelay(t)
			if err := h.stop(t); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got := h.s.ExitCode(); got != tc.code {
				t.Errorf("ExitCode = %d, want %d", got, tc.code)
			}
			st := h.s.Status()
			if st.LastExit != tc.lastExit || st.State != StateStopped || st.Restarts != 0 {
				t.Errorf("Status = %+v, want LastExit %q, stopped, no restart", st, tc.lastExit)
			}
			// The log line: status a number, as on every other line that
			// has one (a log store fixes a key's type from its first line
			// and drops lines that disagree), the words beside it.
			if e := h.log.find(t, "child exited"); len(e) != 1 || e[0].Status != tc.code || e[0].Exit != tc.lastExit {
				t.Errorf("child exited lines %+v, want one with status %d, exit %q", e, tc.code, tc.lastExit)
			}
		})
	}
}

// TestUnstartableStopsRun: a first start that cannot execute the program, or
// whose child exits 126 or 127 (what sh reports for a command it cannot
// run), ends Run with a StartError naming the command, without a restart.
func TestUnstartableStopsRun(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, []byte("echo hi\n"), 0o644)
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("\x00\x01\x02 not a program"), 0o755)
	missing := filepath.Join(dir, "missing")
	const shellSays = `(/bin/)?sh: (line )?1: ` // dash, bash or busybox, before its message
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // the error's text, a regular expression
	}{
		{"args: no such file", Config{Args: []string{missing, "--port", "{port}"}},
			regexp.QuoteMeta(fmt.Sprintf("cannot start the MCP server: %q: no such file or directory (exit 127)", missing))},
		{"args: not in PATH", Config{Args: []string{"no-such-command-zz9"}},
			regexp.QuoteMeta(`cannot start the MCP server: "no-such-command-zz9": executable file not found in $PATH (exit 127)`)},
		{"args: not executable", Config{Args: []string{plain}},
			regexp.QuoteMeta(fmt.Sprintf("cannot start the MCP server: %q: permission denied (exit 126)", plain))},
		{"args: exec format error", Config{Args: []string{garbage}},
			regexp.QuoteMeta(fmt.Sprintf("cannot start the MCP server: %q: exec format error (exit 126)", garbage))},
		{"args: the program exits 127", Config{Args: []string{"sh", "-c", "exit 127"}},
			regexp.QuoteMeta(`cannot start the MCP server: "sh": command not found (exit 127)`)},
		// The reason is what the shell printed last, in its own words.
		{"sh: command not found", Config{Command: "no-such-command-zz9 --port {port}"},
			`cannot start the MCP server: "no-such-command-zz9 --port {port}": ` + shellSays + `no-such-command-zz9: (command )?not found \(exit 127\)`},
		{"sh: not executable", Config{Command: plain},
			fmt.Sprintf(`cannot start the MCP server: %q: %s%s: permission denied \(exit 126\)`, plain, shellSays, regexp.QuoteMeta(plain))},
		{"sh: exit 127", Config{Command: "exit 127"},
			regexp.QuoteMeta(`cannot start the MCP server: "exit 127": command not found (exit 127)`)},
		{"sh: syntax error", Config{Command: "echo {port}; if then fi"},
			`cannot start the MCP server: "echo \{port\}; if then fi": the shell cannot read it: .*syntax error.* \(exit 2\)`},
		{"sh: exit 126", Config{Command: "echo cannot run it >&2; exit 126"},
			regexp.QuoteMeta(`cannot start the MCP server: "echo cannot run it >&2; exit 126": cannot run it (exit 126)`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startSup(t, tc.cfg)
			err := h.wait(t)
			var se *StartError
			if !errors.As(err, &se) {
				t.Fatalf("Run = %v, want a *StartError; logs:\n%s", err, h.logs())
			}
			if got := err.Error(); !regexp.MustCompile("(?i)^" + tc.want + "$").MatchString(got) {
				t.Errorf("error:\n got %s\nwant %s", got, tc.want)
			}
			if got := h.s.ExitCode(); got != se.Code {
				t.Errorf("ExitCode = %d, StartError.Code = %d", got, se.Code)
			}
			if st := h.s.Status(); st.Restarts != 0 || st.State != StateStopped {
				t.Errorf("Status = %+v, want stopped without a restart", st)
			}
			if d := h.log.find(t, "restarting child after a delay"); len(d) != 0 {
				t.Errorf("a restart was scheduled:\n%s", h.logs())
			}
		})
	}
}

// TestLaterExecFailureIsRestarted: what is fatal at the first start is a
// crash like any other once the command has run: the binary may be in the
// middle of an upgrade.
func TestLaterExecFailureIsRestarted(t *testing.T) {
	dir := t.TempDir()
	h := startSup(t, Config{
		Command:        fmt.Sprintf(`if [ -f %[1]s/ran ]; then exit 127; fi; touch %[1]s/ran; exit 1`, dir),
		InitialBackoff: time.Millisecond,
		MaxBackoff:     time.Millisecond,
	})
	h.nextDelay(t)
	h.nextDelay(t)
	h.nextDelay(t)
	if err := h.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if got := h.s.Status().Restarts; got < 2 {
		t.Errorf("Restarts = %d, want at least 2", got)
	}
}

// TestFailFast: with FailFast (development), a child that exits before it
// was ready ends Run with its status and last lines; without it, the same
// child is restarted with backoff. A child that was ready is restarted
// either way.
func TestFailFast(t *testing.T) {
	lines := `for i in $(seq 30); do echo line $i; done; `
	for _, tc := range []struct {
		name    string
		command string
		code    int
		reason  string
	}{
		{"exits 3", lines + "exit 3", 3, "exited before it was ready"},
		{"killed by a signal", lines + "kill -KILL $$", 137, "killed by SIGKILL before it was ready"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startSup(t, Config{Command: tc.command, FailFast: true})
			err := h.wait(t)
			var se *StartError
			if !errors.As(err, &se) {
				t.Fatalf("Run = %v, want a *StartError", err)
			}
			want := fmt.Sprintf("cannot start the MCP server: %q: %s (exit %d)", tc.command, tc.reason, tc.code)
			if se.Error() != want || se.Code != tc.code || h.s.ExitCode() != tc.code {
				t.Errorf("error %q, code %d, ExitCode %d; want %q, %d", se, se.Code, h.s.ExitCode(), want, tc.code)
			}
			var wantTail []string
			for i := 11; i <= 30; i++ {
				wantTail = append(wantTail, fmt.Sprintf("line %d", i))
			}
			if !slices.Equal(se.Tail, wantTail) {
				t.Errorf("Tail = %q, want %q", se.Tail, wantTail)
			}
		})
	}

	t.Run("off: restarted with backoff", func(t *testing.T) {
		h := startSup(t, Config{Args: []string{"false"}, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
		h.nextDelay(t)
		h.nextDelay(t)
		if err := h.stop(t); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	})

	t.Run("on: a child that was ready is restarted", func(t *testing.T) {
		h := startSup(t, Config{
			Args:     []string{testBin(t)},
			Env:      []string{"SVTEST_HELPER=serve"},
			FailFast: true,
		})
		waitFor(t, "ready", func() bool { _, ok := h.s.Endpoint(); return ok })
		syscall.Kill(h.s.Status().PID, syscall.SIGKILL)
		h.nextDelay(t)
		if err := h.stop(t); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	})
}

// TestStartErrorTailBounded: the lines kept for a StartError are bounded
// in number and length whatever the child writes.
func TestStartErrorTailBounded(t *testing.T) {
	h := startSup(t, Config{
		Command:  `for i in $(seq 1000); do echo $i; done; head -c 204800 /dev/zero | tr '\0' x; echo; echo last; exit 1`,
		FailFast: true,
	})
	var se *StartError
	if err := h.wait(t); !errors.As(err, &se) {
		t.Fatalf("Run = %v, want a *StartError", err)
	}
	if len(se.Tail) != tailLines || se.Tail[len(se.Tail)-1] != "last" {
		t.Fatalf("Tail: %d lines, last %q; want %d, \"last\"", len(se.Tail), se.Tail[len(se.Tail)-1], tailLines)
	}
	for _, l := range se.Tail {
		if len(l) > tailLineMax+len("…") {
			t.Errorf("a kept line has %d bytes", len(l))
		}
	}
	if got := se.Tail[len(se.Tail)-2]; got != strings.Repeat("x", tailLineMax)+"…" {
		t.Errorf("long line kept as %d bytes %.20q", len(got), got)
	}
}

func TestExitCodeZeroBeforeStart(t *testing.T) {
	s, err := New(Config{Command: "true"})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.ExitCode(); got != 0 {
		t.Errorf("ExitCode = %d, want 0", got)
	}
	if u, ok := s.Endpoint(); u != nil || ok {
		t.Errorf("Endpoint = %v, %v before Run", u, ok)
	}
}

func TestStopTermsWholeTree(t *testing.T) {
	dir := t.TempDir()
	h := startSup(t, Config{
		Command:      fmt.Sprintf(`sh -c 'sleep 100 & echo $! > %[1]s/leaf; wait' & echo $! > %[1]s/mid; wait`, dir),
		ReadyTimeout: time.Hour,
	})
	leaf, mid := readPID(t, dir+"/leaf"), readPID(t, dir+"/mid")
	top := h.s.Status().PID
	if top == 0 {
		t.Fatal("no child pid")
	}
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
	for name, pid := range map[string]int{"sh": top, "wrapper": mid, "sleep": leaf} {
		if alive(pid) {
			t.Errorf("%s (pid %d) survived the stop", name, pid)
		}
	}
	if got := h.s.ExitCode(); got != 128+15 {
		t.Errorf("ExitCode = %d, want 143", got)
	}
	if strings.Contains(h.logs(), "killing it") {
		t.Errorf("needed SIGKILL; SIGTERM should have been enough:\n%s", h.logs())
	}
}

func TestIgnoringTermIsKilledAfterGrace(t *testing.T) {
	dir := t.TempDir()
	h := startSup(t, Config{
		Command:      fmt.Sprintf(`trap '' TERM; echo $$ > %s/ready; while :; do sleep 1; done`, dir),
		ReadyTimeout: time.Hour,
		StopGrace:    200 * time.Millisecond,
	})
	pid := readPID(t, dir+"/ready")
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
	if got := h.s.ExitCode(); got != 137 {
		t.Errorf("ExitCode = %d, want 137", got)
	}
	if got := h.s.Status().LastExit; got != "signal: killed" {
		t.Errorf("LastExit = %q", got)
	}
	if alive(pid) {
		t.Errorf("child %d survived", pid)
	}
}

// TestStoppedChildGetsTerm: a child that is stopped (SIGSTOP, SIGTSTP)
// when the gateway stops it gets SIGCONT after SIGTERM, and so acts on the
// SIGTERM at once rather than being killed when the grace ends.
func TestStoppedChildGetsTerm(t *testing.T) {
	dir := t.TempDir()
	h := startSup(t, Config{
		Command:      fmt.Sprintf(`trap 'exit 0' TERM; echo $$ > %s/pid; kill -STOP $$; while :; do sleep 0.05; done`, dir),
		ReadyTimeout: time.Hour,
		StopGrace:    time.Hour, // a killed child would hold the test up
	})
	pid := readPID(t, dir+"/pid")
	waitFor(t, "the child stopped", func() bool { st, _, _ := procStat(pid); return st == 'T' })
	stopped := make(chan error, 1)
	go func() { stopped <- h.stop(t) }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		syscall.Kill(-pid, syscall.SIGKILL) // end the test
		t.Fatalf("a stopped child did not act on SIGTERM; logs:\n%s", h.logs())
	}
	if got := h.s.ExitCode(); got != 0 {
		t.Errorf("ExitCode = %d, want 0 (its TERM trap's)", got)
	}
}

// TestNoStopGrace: with no grace the child's TERM trap never gets to run
// its course, on shutdown nor in what is left of the group of a child that
// exited: SIGKILL follows SIGTERM at once. The traps would write their
// file after a second.
func TestNoStopGrace(t *testing.T) {
	const trap = `trap 'sleep 1; echo late > %s; exit 0' TERM; echo $$ > %s; while :; do sleep 0.05; done`
	t.Run("shutdown", func(t *testing.T) {
		dir := t.TempDir()
		h := startSup(t, Config{Command: fmt.Sprintf(trap, dir+"/late", dir+"/pid"), ReadyTimeout: time.Hour, NoStopGrace: true})
		readPID(t, dir+"/pid")
		if err := h.stop(t); err != nil {
			t.Fatal(err)
		}
		if got := h.s.ExitCode(); got != 137 {
			t.Errorf("ExitCode = %d, want 137 (SIGKILL)", got)
		}
		if _, err := os.Stat(dir + "/late"); err == nil {
			t.Error("the child's TERM trap ran to its end")
		}
	})
	t.Run("the rest of the group", func(t *testing.T) {
		dir := t.TempDir()
		h := startSup(t, Config{Command: fmt.Sprintf("sh -c \"%s\" & sleep 0.2; exit 3", fmt.Sprintf(trap, dir+"/late", dir+"/pid")), NoStopGrace: true})
		h.nextDelay(t) // the group is gone before a restart is scheduled
		if _, err := os.Stat(dir + "/late"); err == nil {
			t.Error("the background job's TERM trap ran to its end")
		}
		if bg := readPID(t, dir+"/pid"); alive(bg) {
			t.Errorf("background job %d is still there", bg)
		}
		if strings.Contains(h.logs(), "did not stop in time") {
			t.Errorf("warned of a grace there is none of:\n%s", h.logs())
		}
	})
}

func TestBackgroundJobDoesNotSurviveLeader(t *testing.T) {
	dir := t.TempDir()
	h := startSup(t, Config{Command: fmt.Sprintf(`sleep 100 & echo $! > %s/bg; exit 3`, dir)})
	h.nextDelay(t) // the group is gone before a restart is scheduled
	bg := readPID(t, dir+"/bg")
	if alive(bg) {
		t.Errorf("background sleep %d is still there", bg)
	}
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
	if got := h.s.ExitCode(); got != 3 {
		t.Errorf("ExitCode = %d, want 3", got)
	}
}

func TestCrashLoopBacksOffRecoversAndResets(t *testing.T) {
	dir := t.TempDir()
	clock := testkit.NewClock(time.Unix(1e9, 0))
	initial := 20 * time.Millisecond
	h := startSup(t, Config{
		Command:        fmt.Sprintf(`if [ -f %s/ok ]; then exec %s; fi; exit 1`, dir, testBin(t)),
		Env:            []string{"PATH=" + os.Getenv("PATH"), "SVTEST_HELPER=serve"},
		InitialBackoff: initial,
		MaxBackoff:     10 * time.Second,
		ResetAfter:     time.Minute,
		Now:            clock.Now,
	})
	var delays []time.Duration
	for range 3 {
		delays = append(delays, h.nextDelay(t))
	}
	for i := 1; i < len(delays); i++ {
		if delays[i] <= delays[i-1] {
			t.Fatalf("delays %v do not grow", delays)
		}
	}
	// Fixed: the next start comes up and stays.
	os.WriteFile(dir+"/ok", nil, 0o644)
	waitFor(t, "ready after the fix", func() bool { _, ok := h.s.Endpoint(); return ok })
	if got := h.s.Status().Restarts; got != 3 {
		t.Errorf("Restarts = %d, want 3", got)
	}

	// A crash right after becoming ready: the delay keeps growing.
	syscall.Kill(h.s.Status().PID, syscall.SIGKILL)
	d4 := h.nextDelay(t)
	if d4 <= delays[2] {
		t.Errorf("delay after a short-lived run = %v, want more than %v", d4, delays[2])
	}
	waitFor(t, "ready again", func() bool { _, ok := h.s.Endpoint(); return ok })

	// A crash after a stable period: the delay starts again.
	clock.Advance(2 * time.Minute)
	syscall.Kill(h.s.Status().PID, syscall.SIGKILL)
	if d5 := h.nextDelay(t); d5 > initial*12/10 {
		t.Errorf("delay after a stable run = %v, want at most %v", d5, initial*12/10)
	}
	if got := h.s.Status().LastExit; got != "signal: killed" {
		t.Errorf("LastExit = %q", got)
	}
}

func TestReadyTimeoutStopsAndRetries(t *testing.T) {
	dir := t.TempDir()
	h := startSup(t, Config{
		Command:        fmt.Sprintf(`echo $$ >> %s/pids; exec sleep 100`, dir),
		ReadyTimeout:   150 * time.Millisecond,
		InitialBackoff: 10 * time.Millisecond,
		MaxBackoff:     10 * time.Millisecond,
	})
	h.nextDelay(t)
	first := readPID(t, dir+"/pids")
	if alive(first) {
		t.Errorf("child %d still runs after the readiness timeout", first)
	}
	if got := h.s.Status().LastExit; got != "signal: terminated" {
		t.Errorf("LastExit = %q, want signal: terminated", got)
	}
	e := h.log.find(t, "child did not listen in time; stopping it")
	if len(e) == 0 || e[0].Port == 0 || e[0].Duration != 150*time.Millisecond || !strings.Contains(e[0].Hint, "only in the PORT environment variable") {
		t.Errorf("timeout message %+v does not name the port, the wait and how the port is told:\n%s", e, h.logs())
	}
	waitFor(t, "a second start", func() bool {
		b, _ := os.ReadFile(dir + "/pids")
		return len(strings.Fields(string(b))) >= 2
	})
	if st := h.s.Status(); st.Restarts < 1 {
		t.Errorf("Restarts = %d", st.Restarts)
	}
}

// TestWaitingForPortIsLogged: while a child does not listen (here sleep,
// a server that ignores PORT), a line at info every WaitLogInterval names
// the port and how the server is told it.
func TestWaitingForPortIsLogged(t *testing.T) {
	fixed, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		hint string
	}{
		{"PORT only", Config{Command: "exec sleep 100"}, "told to the server only in the PORT environment variable; a server that ignores PORT needs {port} in its command"},
		{"{port} in the command", Config{Command: "exec sleep 100 {port}"}, "in the PORT environment variable and as {port} in its command"},
		{"{port} in the arguments", Config{Args: []string{"sleep", "100", "{port}"}}, "in the PORT environment variable and as {port} in its command"},
		{"a fixed port", Config{Command: "exec sleep 100", Port: fixed}, "the port is fixed (MCP_SPAWN_PORT) and in the PORT environment variable"},
		// Listening on "localhost" can give the IPv6 loopback alone.
		{"on the IPv6 loopback", Config{Args: []string{testBin(t)}, Env: []string{"SVTEST_HELPER=serve", "SVTEST_HOST=::1"}}, "listens on [::1]:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if slices.Contains(tc.cfg.Env, "SVTEST_HOST=::1") {
				l, err := net.Listen("tcp", "[::1]:0")
				if err != nil {
					t.Skipf("no IPv6 loopback here: %v", err)
				}
				l.Close()
			}
			tc.cfg.WaitLogInterval = 20 * time.Millisecond
			tc.cfg.ReadyTimeout = time.Hour
			h := startSup(t, tc.cfg)
			var e []entry
			waitFor(t, "two waiting lines", func() bool {
				e = h.log.find(t, "waiting for the child to listen")
				return len(e) >= 2
			})
			st := h.s.Status()
			if e[0].Port != st.Port || e[0].PID != st.PID || e[0].Duration != 20*time.Millisecond || e[1].Duration != 40*time.Millisecond {
				t.Errorf("waiting lines %+v, want port %d, pid %d, 20ms then 40ms", e[:2], st.Port, st.PID)
			}
			if !strings.Contains(e[0].Hint, tc.hint) {
				t.Errorf("hint %q, want it to contain %q", e[0].Hint, tc.hint)
			}
		})
	}
}

func TestRestartWaitsForOldGroupToReleasePort(t *testing.T) {
	dir := t.TempDir()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	bin := testBin(t)
	// First start: a background server holds the port and takes 300ms to go
	// after SIGTERM; the leader exits 1. The restarted server needs the port.
	h := startSup(t, Config{
		Command:        fmt.Sprintf(`if [ -f %[1]s/first ]; then exec %[2]s; fi; touch %[1]s/first; SVTEST_TERM_DELAY=300ms %[2]s & while [ ! -f %[1]s/up ]; do sleep 0.01; done; exit 1`, dir, bin),
		Env:            []string{"PATH=" + os.Getenv("PATH"), "SVTEST_HELPER=serve", "SVTEST_BINDFAIL=" + dir + "/bindfail"},
		Port:           port,
		InitialBackoff: time.Millisecond,
		MaxBackoff:     time.Millisecond,
	})
	waitFor(t, "first ready", func() bool { _, ok := h.s.Endpoint(); return ok })
	os.WriteFile(dir+"/up", nil, 0o644)
	h.nextDelay(t)
	waitFor(t, "ready after restart", func() bool {
		_, ok := h.s.Endpoint()
		return ok && h.s.Status().Restarts == 1
	})
	if b, err := os.ReadFile(dir + "/bindfail"); err == nil {
		t.Fatalf("restarted child could not bind: %s", b)
	}
	if st := h.s.Status(); st.Restarts != 1 || st.LastExit != "exit status 1" {
		t.Errorf("Status = %+v", st)
	}
}

// acceptAll accepts and closes connections on l until it is closed: another
// process's server, as far as a probe can tell.
func acceptAll(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// TestPortTakenByAnotherProcess: when something already answers on the
// child's port, no child is started (the readiness probe would take the
// other process for it, and the gate would send it the admitted requests):
// the error and /readyz say why, and the child starts once the port is free,
// without counting a restart. With FailFast the start fails at once.
func TestPortTakenByAnotherProcess(t *testing.T) {
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	port := other.Addr().(*net.TCPAddr).Port
	go acceptAll(other) // answers, as a server would
	cfg := Config{
		Args:           []string{testBin(t)},
		Env:            []string{"SVTEST_HELPER=serve"},
		Port:           port,
		InitialBackoff: 20 * time.Millisecond,
		MaxBackoff:     20 * time.Millisecond,
	}
	h := startSup(t, cfg)
	waitFor(t, "two refusals", func() bool {
		return len(h.log.find(t, "trying the child's port again after a delay")) >= 2
	})
	e := h.log.find(t, "the child's port is in use by another process; the MCP server is not started until it is free")
	if len(e) == 0 || e[0].Port != port || !strings.Contains(e[0].Hint, "MCP_SPAWN_PORT") {
		t.Errorf("error lines %+v, want the port %d and a hint naming MCP_SPAWN_PORT", e, port)
	}
	want := fmt.Sprintf("not started: port %d is in use by another process", port)
	if ok, detail := h.s.Ready(); ok || !strings.Contains(detail, want) {
		t.Errorf("Ready() = %v, %q; want false naming %q", ok, detail, want)
	}
	if _, ok := h.s.Endpoint(); ok {
		t.Error("Endpoint ready while another process holds the port")
	}
	if st := h.s.Status(); st.Starts != 0 || st.Restarts != 0 {
		t.Errorf("Status = %+v, want no start and no restart", st)
	}

	other.Close()
	waitFor(t, "ready once the port is free", func() bool { _, ok := h.s.Endpoint(); return ok })
	if st := h.s.Status(); st.Starts != 1 || st.Restarts != 0 || st.Blocked != "" {
		t.Errorf("Status = %+v, want one start, no restart, nothing blocked", st)
	}

	t.Run("FailFast", func(t *testing.T) {
		again, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer again.Close()
		cfg := cfg
		cfg.Port, cfg.FailFast = again.Addr().(*net.TCPAddr).Port, true
		h := startSup(t, cfg)
		var se *StartError
		if err := h.wait(t); !errors.As(err, &se) || se.Code != 1 || !strings.Contains(se.Reason, "is in use by another process") {
			t.Fatalf("Run = %v, want a *StartError with code 1 naming the port in use", err)
		}
		if st := h.s.Status(); st.Starts != 0 {
			t.Errorf("Status = %+v, want no start", st)
		}
	})

	// The first start tried is still the first: a program that cannot be
	// run ends Run with 127 once the port is free, as it would have at once.
	t.Run("then a command that cannot run", func(t *testing.T) {
		again, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg := cfg
		cfg.Args, cfg.Port = []string{"/nonexistent/server"}, again.Addr().(*net.TCPAddr).Port
		h := startSup(t, cfg)
		waitFor(t, "a refusal", func() bool {
			return len(h.log.find(t, "trying the child's port again after a delay")) >= 1
		})
		again.Close()
		var se *StartError
		if err := h.wait(t); !errors.As(err, &se) || se.Code != 127 {
			t.Fatalf("Run = %v, want a *StartError with code 127", err)
		}
	})
}

// TestPortTakenAfterTheCheck: a process that takes the port after the
// check and before the child listens is not taken for the child: the probe
// looks up who holds the listening socket (here the test's own process,
// which is no descendant of itself).
func TestPortTakenAfterTheCheck(t *testing.T) {
	dir := t.TempDir()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	h := startSup(t, Config{
		Command:      fmt.Sprintf(`while [ ! -f %s/go ]; do sleep 0.01; done; exec %s`, dir, testBin(t)),
		Env:          []string{"PATH=" + os.Getenv("PATH"), "SVTEST_HELPER=serve"},
		Port:         port,
		ReadyTimeout: time.Hour,
	})
	waitFor(t, "child started", func() bool { return h.s.Status().PID != 0 })
	other, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	go acceptAll(other)
	waitFor(t, "the error line", func() bool {
		return len(h.log.find(t, "another process answers on the child's port; the child is not ready while it does")) == 1
	})
	time.Sleep(50 * time.Millisecond) // a few more probes, each answered by the other process
	if _, ok := h.s.Endpoint(); ok {
		t.Error("Endpoint ready while another process answers on the port")
	}
	want := fmt.Sprintf("not ready: port %d is answered by another process", port)
	if ok, detail := h.s.Ready(); ok || !strings.Contains(detail, want) {
		t.Errorf("Ready() = %v, %q; want false naming %q", ok, detail, want)
	}
	if n := len(h.log.find(t, "another process answers on the child's port; the child is not ready while it does")); n != 1 {
		t.Errorf("%d error lines, want 1", n)
	}

	other.Close()
	os.WriteFile(dir+"/go", nil, 0o644)
	waitFor(t, "ready once the child listens", func() bool { _, ok := h.s.Endpoint(); return ok })
	if st := h.s.Status(); st.Starts != 1 || st.Restarts != 0 || st.Blocked != "" {
		t.Errorf("Status = %+v, want one start, no restart, nothing blocked", st)
	}
}

// TestParseProcAddr reads addresses as /proc/net/tcp{,6} print them: 32-bit
// words in the machine's byte order.
func TestParseProcAddr(t *testing.T) {
	word := func(b ...byte) string { return fmt.Sprintf("%08X", binary.NativeEndian.Uint32(b)) }
	for _, tc := range []struct {
		in   string
		ip   string
		port int
	}{
		{word(127, 0, 0, 1) + ":1F90", "127.0.0.1", 8080},
		{word(0, 0, 0, 0) + ":0BB9", "0.0.0.0", 3001},
		{word(0, 0, 0, 0) + word(0, 0, 0, 0) + word(0, 0, 0xff, 0xff) + word(127, 0, 0, 1) + ":0050", "127.0.0.1", 80},
		{strings.Repeat("0", 32) + ":FFFF", "::", 65535},
	} {
		ip, port, ok := parseProcAddr(tc.in)
		if !ok || !ip.Equal(net.ParseIP(tc.ip)) || port != tc.port {
			t.Errorf("parseProcAddr(%q) = %v, %d, %v; want %s, %d", tc.in, ip, port, ok, tc.ip, tc.port)
		}
	}
	for _, bad := range []string{"", "0100007F", "0100007F:", "0100007F:10000", "XX00007F:0050", "01007F:0050"} {
		if _, _, ok := parseProcAddr(bad); ok {
			t.Errorf("parseProcAddr(%q) accepted", bad)
		}
	}
}

func TestEndpointReadiness(t *testing.T) {
	dir := t.TempDir()
	h := startSup(t, Config{
		Command: fmt.Sprintf(`while [ ! -f %s/go ]; do sleep 0.01; done; exec %s`, dir, testBin(t)),
		Env:     []string{"PATH=" + os.Getenv("PATH"), "SVTEST_HELPER=serve"},
	})
	waitFor(t, "child started", func() bool { return h.s.Status().PID != 0 })
	u, ok := h.s.Endpoint()
	if ok || u == nil || h.s.Status().State != StateStarting {
		t.Fatalf("Endpoint = %v, %v, state %s while starting", u, ok, h.s.Status().State)
	}
	os.WriteFile(dir+"/go", nil, 0o644)
	waitFor(t, "ready", func() bool { _, ok := h.s.Endpoint(); return ok })
	u, _ = h.s.Endpoint()
	st := h.s.Status()
	if want := "http://127.0.0.1:" + strconv.Itoa(st.Port); u.String() != want || st.State != StateReady {
		t.Errorf("Endpoint = %v (want %s), state %s", u, want, st.State)
	}
	resp, err := http.Get(u.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" {
		t.Errorf("body = %q", body)
	}
}

func TestReadyPathAnyHTTPAnswer(t *testing.T) {
	h := startSup(t, Config{
		Args:      []string{testBin(t)},
		Env:       []string{"SVTEST_HELPER=serve"},
		ReadyPath: "/no-such-path",
	})
	waitFor(t, "ready", func() bool { _, ok := h.s.Endpoint(); return ok })
}

// TestReadyPathThatCannotBeRequested: a ready path the probe cannot make a
// request of is said once, and in the status, not taken for a child that
// does not listen.
func TestReadyPathThatCannotBeRequested(t *testing.T) {
	h := startSup(t, Config{
		Args:            []string{testBin(t)},
		Env:             []string{"SVTEST_HELPER=serve"},
		ReadyPath:       "/%zz",
		WaitLogInterval: 50 * time.Millisecond,
	})
	const msg = "cannot probe the child's readiness; it is never ready"
	waitFor(t, "the probe's error", func() bool { return strings.Contains(h.logs(), msg) })
	if st := h.s.Status(); !strings.Contains(st.Blocked, `invalid URL escape "%zz"`) {
		t.Errorf("Blocked = %q, want the request's error", st.Blocked)
	}
	waitFor(t, "more probes", func() bool { return len(h.log.find(t, "waiting for the child to listen")) >= 3 })
	if n := len(h.log.find(t, msg)); n != 1 {
		t.Errorf("said %d times, want once:\n%s", n, h.logs())
	}
}

func TestCancelDuringStartup(t *testing.T) {
	h := startSup(t, Config{Command: "exec sleep 100", ReadyTimeout: time.Hour})
	waitFor(t, "child started", func() bool { return h.s.Status().PID != 0 })
	pid := h.s.Status().PID
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
	if got := h.s.ExitCode(); got != 143 {
		t.Errorf("ExitCode = %d, want 143", got)
	}
	if alive(pid) {
		t.Errorf("child %d survived", pid)
	}
	if st := h.s.Status(); st.Restarts != 0 || st.State != StateStopped || st.PID != 0 {
		t.Errorf("Status = %+v", st)
	}
	if d := h.log.find(t, "restarting child after a delay"); len(d) != 0 {
		t.Error("a restart was scheduled after cancel")
	}
}

func TestCancelDuringBackoff(t *testing.T) {
	dir := t.TempDir()
	h := startSup(t, Config{Command: fmt.Sprintf("echo x >> %s/starts; exit 1", dir)})
	h.nextDelay(t) // an hour
	if got := h.s.Status().State; got != StateBackoff {
		t.Errorf("State = %s, want backoff", got)
	}
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dir + "/starts")
	if n := strings.Count(string(b), "x"); n != 1 || h.s.Status().Restarts != 0 {
		t.Errorf("%d starts, %d restarts; want 1 and 0", n, h.s.Status().Restarts)
	}
	if got := h.s.ExitCode(); got != 1 {
		t.Errorf("ExitCode = %d, want 1", got)
	}
}

func TestSignalForwardedToGroupWithoutRestart(t *testing.T) {
	dir := t.TempDir()
	hup := dir + "/hup"
	h := startSup(t, Config{
		Command: fmt.Sprintf(`trap 'echo sh >> %s' HUP; %s & while :; do wait; done`, hup, testBin(t)),
		Env:     []string{"PATH=" + os.Getenv("PATH"), "SVTEST_HELPER=serve", "SVTEST_HUP_FILE=" + hup},
	})
	waitFor(t, "ready", func() bool { _, ok := h.s.Endpoint(); return ok })
	pid := h.s.Status().PID
	h.s.Signal(syscall.SIGHUP)
	waitFor(t, "both processes saw SIGHUP", func() bool {
		b, _ := os.ReadFile(hup)
		return strings.Contains(string(b), "sh\n") && strings.Contains(string(b), "HUP\n")
	})
	st := h.s.Status()
	if _, ok := h.s.Endpoint(); !ok || st.PID != pid || st.Restarts != 0 || st.State != StateReady {
		t.Errorf("after SIGHUP: ready %v, status %+v (pid was %d)", ok, st, pid)
	}
}

func TestOutputLinesIntact(t *testing.T) {
	h := startSup(t, Config{
		Command: `printf 'one\ntwo\n'; printf 'on stderr\n' >&2; head -c 204800 /dev/zero | tr '\0' x; printf '\n\npartial'`,
	})
	h.nextDelay(t) // output is read before the exit is reported
	var stdout, stderr []string
	pid := 0
	for _, e := range h.child.entries(t) {
		switch e.Stream {
		case "stdout":
			stdout = append(stdout, e.Message)
		case "stderr":
			stderr = append(stderr, e.Message)
		default:
			t.Errorf("entry without stream: %+v", e)
		}
		if pid == 0 {
			pid = e.PID
		}
		if e.PID != pid || pid == 0 {
			t.Errorf("entry pid %d, want %d", e.PID, pid)
		}
	}
	if len(stdout) < 6 || stdout[0] != "one" || stdout[1] != "two" || stdout[len(stdout)-2] != "" || stdout[len(stdout)-1] != "partial" {
		t.Fatalf("stdout lines: %d, first %q, last %q", len(stdout), stdout[:min(2, len(stdout))], stdout[max(0, len(stdout)-2):])
	}
	long := strings.Join(stdout[2:len(stdout)-2], "")
	if long != strings.Repeat("x", 204800) {
		t.Errorf("long line: %d bytes in %d pieces, want 204800 x", len(long), len(stdout)-4)
	}
	for _, piece := range stdout[2 : len(stdout)-2] {
		if len(piece) > maxLine {
			t.Errorf("piece of %d bytes", len(piece))
		}
	}
	if !slices.Equal(stderr, []string{"on stderr"}) {
		t.Errorf("stderr = %q", stderr)
	}
}

// TestOutputCharactersNotSplit: a line cut into pieces of maxLine bytes is
// cut between characters, never inside one (which the JSON log would turn
// into two U+FFFD).
func TestOutputCharactersNotSplit(t *testing.T) {
	chars := []string{"é", "€", "😀"} // 2, 3 and 4 bytes
	var cmd, want []string
	for i, c := range chars {
		// The character starts 1, 2 or 3 bytes before the cut.
		cmd = append(cmd, fmt.Sprintf(`head -c %d /dev/zero | tr '\0' x; printf '%s%s\n'`, maxLine-i-1, octal(c), octal(c)))
		want = append(want, strings.Repeat("x", maxLine-i-1)+c+c)
	}
	h := startSup(t, Config{Command: strings.Join(cmd, "; ")})
	h.nextDelay(t) // output is read before the exit is reported
	var got []string
	pieces := ""
	for _, e := range h.child.entries(t) {
		if !utf8.ValidString(e.Message) || strings.ContainsRune(e.Message, utf8.RuneError) {
			t.Errorf("a piece with a broken character: ...%q", e.Message[max(0, len(e.Message)-8):])
		}
		pieces += e.Message
		if !strings.HasPrefix(e.Message, "x") { // the last piece of a line
			got = append(got, pieces)
			pieces = ""
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("lines put together again differ from the child's (%d lines, want %d)", len(got), len(want))
	}
}

// octal spells s for a shell's printf, which takes \ooo escapes only.
func octal(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		fmt.Fprintf(&b, `\%03o`, c)
	}
	return b.String()
}

func TestChildEnvironment(t *testing.T) {
	dir := t.TempDir()
	h := startSup(t, Config{
		Command: fmt.Sprintf("env > %s/env; exit 0", dir),
		Env:     []string{"PATH=" + os.Getenv("PATH"), "KEEP_ME=yes", "PORT=8080", "PORTABLE=1"},
	})
	h.nextDelay(t)
	b, err := os.ReadFile(dir + "/env")
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Split(strings.TrimSpace(string(b)), "\n")
	port := h.s.Status().Port
	for _, want := range []string{"KEEP_ME=yes", "PORTABLE=1", "PORT=" + strconv.Itoa(port)} {
		if !slices.Contains(env, want) {
			t.Errorf("child env lacks %s", want)
		}
	}
	if strings.Contains(string(b), "PORT=8080") {
		t.Errorf("child env keeps the gateway's own PORT:\n%s", b)
	}
}

func TestArgsReachChildUnchanged(t *testing.T) {
	dir := t.TempDir()
	args := []string{"a b", `it's "quoted"`, "$HOME and $(id) `id`", "", "*", "--port={port}", "{port}{port}"}
	h := startSup(t, Config{
		Args: append([]string{testBin(t)}, args...),
		Env:  []string{"SVTEST_HELPER=serve", "SVTEST_ARGS_OUT=" + dir + "/args.json"},
	})
	waitFor(t, "ready", func() bool { _, ok := h.s.Endpoint(); return ok })
	b, err := os.ReadFile(dir + "/args.json")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Args []string
		Port string
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(h.s.Status().Port)
	want := slices.Clone(args)
	want[5], want[6] = "--port="+port, port+port
	if !slices.Equal(got.Args, want) {
		t.Errorf("argv = %q, want %q", got.Args, want)
	}
	u, _ := h.s.Endpoint()
	if got.Port != port || u.Port() != port || port == "0" {
		t.Errorf("PORT = %s, status port %s, endpoint %v", got.Port, port, u)
	}
	if e := h.log.find(t, "chose a port for the child"); len(e) != 1 || strconv.Itoa(e[0].Port) != port {
		t.Errorf("chosen port not logged:\n%s", h.logs())
	}
}

func TestCommandPortPlaceholder(t *testing.T) {
	dir := t.TempDir()
	h := startSup(t, Config{Command: fmt.Sprintf(`echo "{port} $PORT" > %s/p; exit 0`, dir)})
	h.nextDelay(t)
	b, _ := os.ReadFile(dir + "/p")
	p := strconv.Itoa(h.s.Status().Port)
	if got, want := strings.TrimSpace(string(b)), p+" "+p; got != want {
		t.Errorf("child saw %q, want %q", got, want)
	}
}

func TestChildEnvPort(t *testing.T) {
	got := childEnv([]string{"A=1", "PORT=1", "PORTX=2", "OIDC=keep"}, 42)
	want := []string{"A=1", "PORTX=2", "OIDC=keep", "PORT=42"}
	if !slices.Equal(got, want) {
		t.Errorf("childEnv = %q, want %q", got, want)
	}
}

func TestMaxRestartsExceeded(t *testing.T) {
	h := startSup(t, Config{
		Command:        "exit 3",
		InitialBackoff: time.Millisecond,
		MaxBackoff:     time.Millisecond,
		MaxRestarts:    2,
	})
	err := h.wait(t)
	if err == nil || !strings.Contains(err.Error(), "more than 2") {
		t.Fatalf("Run = %v, want the restart limit error", err)
	}
	if st := h.s.Status(); st.Restarts != 2 || h.s.ExitCode() != 3 {
		t.Errorf("Status = %+v, ExitCode %d", st, h.s.ExitCode())
	}
}

func TestMaxRestartsWindowSlides(t *testing.T) {
	// A clock that moves a minute each time it is read: the supervisor
	// reads it once per restart of a child that is never ready, so the
	// restarts are a minute apart, never more than one in the window.
	clock := testkit.NewClock(time.Unix(1e9, 0))
	h := startSup(t, Config{
		Command:        "exit 3",
		InitialBackoff: time.Millisecond,
		MaxBackoff:     time.Millisecond,
		MaxRestarts:    2,
		RestartWindow:  time.Minute,
		Now:            func() time.Time { clock.Advance(time.Minute); return clock.Now() },
	})
	for range 5 {
		h.nextDelay(t)
	}
	if err := h.stop(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func TestSubreaperReapsOrphan(t *testing.T) {
	if os.Getpid() == 1 {
		t.Skip("running as PID 1")
	}
	dir := t.TempDir()
	h := startSup(t, Config{
		Command: fmt.Sprintf(`(setsid sleep 0.5 & echo $! > %s/orphan); exec %s`, dir, testBin(t)),
		Env:     []string{"PATH=" + os.Getenv("PATH"), "SVTEST_HELPER=serve"},
	})
	orphan := readPID(t, dir+"/orphan")
	// Once the subshell that started it has exited, the orphan is ours.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, ppid, ok := procStat(orphan)
		if ok && ppid == os.Getpid() && st != 'Z' {
			break
		}
		if !ok || time.Now().After(deadline) {
			t.Fatalf("orphan %d: parent %d, want us (%d): not a subreaper?", orphan, ppid, os.Getpid())
		}
		time.Sleep(5 * time.Millisecond)
	}
	waitFor(t, "orphan reaped", func() bool { return !alive(orphan) })
	for pid, st := range childrenOf(os.Getpid()) {
		if st == 'Z' {
			t.Errorf("zombie child %d left", pid)
		}
	}
	if _, ok := h.s.Endpoint(); !ok && h.s.Status().Restarts != 0 {
		t.Errorf("the orphan's exit disturbed the child: %+v", h.s.Status())
	}
}

// readPIDs reads the pids a fixture appended to path, one a line, and has
// the test's cleanup kill what is left of them (a process whose command
// line names path's directory).
func readPIDs(t *testing.T, path string, n int) []int {
	t.Helper()
	var pids []int
	waitFor(t, fmt.Sprintf("%d pids in %s", n, path), func() bool {
		b, _ := os.ReadFile(path)
		pids = pids[:0]
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
				pids = append(pids, pid)
			}
		}
		return len(pids) >= n
	})
	for _, pid := range pids {
		t.Cleanup(func() {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Contains(b, []byte(filepath.Dir(path))) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		})
	}
	return pids
}

// TestStraysEnded: a descendant that left the child's process group with
// setsid is the gateway's once its parent exits (a subreaper's, as PID 1's).
// It gets SIGTERM, and SIGKILL after the grace, once the group is gone:
// before a restart, so such processes do not pile up, and at shutdown, so
// they do not outlive the gateway.
func TestStraysEnded(t *testing.T) {
	if os.Getpid() == 1 {
		t.Skip("running as PID 1")
	}
	// The stray notes its SIGTERM in a file; its own TERM-ignoring child
	// (also in the stray's new session) needs SIGKILL.
	const stray = `setsid sh -c 'trap "echo term >> %[1]s/term; exit 0" TERM; echo $$ >> %[1]s/strays; sh -c "trap \"\" TERM; echo \$\$ >> %[1]s/strays; while :; do sleep 0.05; done" & while :; do sleep 0.05; done' >/dev/null 2>&1 &`
	t.Run("before a restart", func(t *testing.T) {
		dir := t.TempDir()
		h := startSup(t, Config{Command: fmt.Sprintf(`: > %[1]s/strays; `+stray+` while [ $(wc -l < %[1]s/strays) -lt 2 ]; do sleep 0.01; done; exit 3`, dir), StopGrace: 200 * time.Millisecond})
		h.nextDelay(t) // after the first child, before its restart
		for _, pid := range readPIDs(t, dir+"/strays", 2) {
			if alive(pid) {
				st, ppid, _ := procStat(pid)
				t.Errorf("stray %d (state %c, parent %d) is still there when the restart is scheduled:\n%s", pid, st, ppid, h.logs())
			}
		}
		if b, _ := os.ReadFile(dir + "/term"); string(b) != "term\n" {
			t.Errorf("the stray's TERM trap wrote %q, want it to have run once", b)
		}
	})
	t.Run("at shutdown", func(t *testing.T) {
		dir := t.TempDir()
		h := startSup(t, Config{Command: fmt.Sprintf(stray+` exec sleep 100`, dir), ReadyTimeout: time.Hour, StopGrace: 200 * time.Millisecond})
		pids := readPIDs(t, dir+"/strays", 2)
		if err := h.stop(t); err != nil {
			t.Fatal(err)
		}
		for _, pid := range pids {
			if alive(pid) {
				t.Errorf("stray %d outlived Run:\n%s", pid, h.logs())
			}
		}
		if b, _ := os.ReadFile(dir + "/term"); string(b) != "term\n" {
			t.Errorf("the stray's TERM trap wrote %q, want it to have run once", b)
		}
	})
	// A stray already the gateway's (its parent, a subshell, exited) gets
	// SIGTERM with the child's group, within the same grace: the child's
	// TERM trap, before it exits, finds the stray's note.
	t.Run("at shutdown, with the child", func(t *testing.T) {
		dir := t.TempDir()
		h := startSup(t, Config{
			Command:      fmt.Sprintf(`(`+stray+`); trap 'while [ ! -f %[1]s/term ]; do sleep 0.01; done; echo yes > %[1]s/together; exit 0' TERM; while :; do sleep 0.05; done`, dir),
			ReadyTimeout: time.Hour, StopGrace: 2 * time.Second,
		})
		readPIDs(t, dir+"/strays", 2)
		if err := h.stop(t); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(dir + "/together"); string(b) != "yes\n" {
			t.Errorf("the child's trap wrote %q: the stray was not sent SIGTERM with the child's group:\n%s", b, h.logs())
		}
		if got := h.s.ExitCode(); got != 0 {
			t.Errorf("ExitCode = %d, want 0 (the child's trap)", got)
		}
	})
}

// TestNoLostStatus runs 500 short-lived children, each leaving orphans for
// the reaper, and checks every exit status arrives intact.
func TestNoLostStatus(t *testing.T) {
	n := 500
	if testing.Short() {
		n = 50
	}
	h := startSup(t, Config{
		Command:        `(true &); (exit 5 &); exit 7`,
		InitialBackoff: time.Microsecond,
		MaxBackoff:     time.Microsecond,
	})
	for i := range n {
		h.nextDelay(t)
		if got := h.s.Status().LastExit; got != "exit status 7" {
			t.Fatalf("run %d: LastExit = %q", i, got)
		}
	}
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
	if got := h.s.ExitCode(); got != 7 && got != 143 {
		t.Errorf("ExitCode = %d", got)
	}
}
