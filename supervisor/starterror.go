package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// StartError is Run's error when the MCP server cannot be started in a way
// that restarting would not cure:
//
//   - /bin/sh cannot parse Command (sh -n, before anything runs): Code 2;
//   - the first start cannot execute the program (not found, not
//     executable, no /bin/sh for Command): Code 127 or 126;
//   - the first child exits with status 127 or 126 before it was ready
//     (through /bin/sh -c, a command that is not found makes sh exit 127);
//   - with Config.FailFast, any child exits before it was ready: Code is its
//     status (128+N when signal N ended it); or its port is in use by
//     another process: Code 1.
//
// The caller exits with Code, prints Error (one line) and then Tail, the
// child's last output lines, which say why more often than the status does.
// ExitCode returns the same Code once Run has returned.
type StartError struct {
	Command string   // what was run: Config.Command, or Config.Args[0]
	Code    int      // exit status for the caller, as a shell reports it
	Reason  string   // why, one line: "no such file or directory", "exited before it was ready"
	Tail    []string // the child's last output lines, oldest first; nil when no process ran
}

func (e *StartError) Error() string {
	return fmt.Sprintf("cannot start the MCP server: %q: %s (exit %d)", e.Command, e.Reason, e.Code)
}

// attempt is how one start ended.
type attempt struct {
	execErr   error         // the program could not be executed; nothing ran
	ready     bool          // the child answered at least once
	readyFor  time.Duration // how long it was ready
	exited    bool          // it exited on its own (we did not stop it)
	ws        syscall.WaitStatus
	tail      []string // its last output lines
	portTaken int      // nothing ran: another process answers on this port
}

// unrecoverable returns the StartError that ends Run after a, or nil when a
// restart may help. first: a was the first start.
func (s *Supervisor) unrecoverable(a attempt, first bool) *StartError {
	e := &StartError{Command: s.cfg.Command}
	if e.Command == "" {
		e.Command = s.cfg.Args[0]
	}
	if a.execErr != nil {
		if !first && !s.cfg.FailFast {
			return nil
		}
		e.Code, e.Reason = execExitCode(a.execErr), execReason(a.execErr)
		if s.cfg.Command != "" {
			e.Reason = "it needs " + shell + ": " + e.Reason
		}
		return e
	}
	if a.portTaken != 0 {
		if !s.cfg.FailFast {
			return nil // it may go away (an earlier child's escaped descendant): retried with backoff
		}
		e.Code, e.Reason = 1, fmt.Sprintf("port %d is in use by another process", a.portTaken)
		return e
	}
	if !a.exited || a.ready {
		return nil
	}
	e.Code, _ = describe(a.ws)
	e.Tail = a.tail
	switch {
	case first && (e.Code == 126 || e.Code == 127):
		// The status means "not executable" or "not found"; what the
		// shell or launcher printed last usually names what.
		e.Reason = "command not found"
		if e.Code == 126 {
			e.Reason = "command not executable"
		}
		if len(a.tail) > 0 {
			e.Reason = a.tail[len(a.tail)-1]
		}
	case s.cfg.FailFast:
		e.Reason = "exited before it was ready"
		if a.ws.Signaled() {
			e.Reason = "killed by " + unix.SignalName(a.ws.Signal()) + " before it was ready"
		}
	default:
		return nil
	}
	return e
}

// checkSyntax has the shell read Config.Command without running it (sh
// -n): a command it cannot parse makes sh exit 2 at every start, which
// would be restarted for ever. That is a StartError with Code 2 and the
// shell's words instead, before anything runs. Without Command, without a
// shell (start says so) or when the check itself cannot run, it is nil.
func (s *Supervisor) checkSyntax() *StartError {
	if s.cfg.Command == "" {
		return nil
	}
	if _, err := os.Stat(shell); err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, shell, "-n", "-c", strings.ReplaceAll(s.cfg.Command, "{port}", "1"))
	cmd.Env, cmd.Dir = []string{}, "/"
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	var ee *exec.ExitError
	if err := cmd.Run(); !errors.As(err, &ee) || ctx.Err() != nil {
		return nil
	}
	// The reason is the shell's first line; the lines after it (bash
	// repeats the line it could not read) are the tail.
	e := &StartError{Command: s.cfg.Command, Code: 2, Reason: "the shell cannot read it"}
	for _, l := range strings.Split(out.String(), "\n") {
		switch l = strings.TrimSpace(l); {
		case l == "":
		case e.Reason == "the shell cannot read it":
			e.Reason += ": " + l
		case len(e.Tail) < tailLines:
			e.Tail = append(e.Tail, l)
		}
	}
	return e
}

// execExitCode maps an exec failure as a shell does: 127 not found, 126 not
// executable.
func execExitCode(err error) int {
	switch {
	case errors.Is(err, exec.ErrNotFound):
		return 127
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.ENOEXEC), errors.Is(err, syscall.EISDIR):
		return 126
	default: // ENOENT, ENOTDIR, anything else
		return 127
	}
}

// execReason is an exec failure without the operation and path around it:
// "no such file or directory", "executable file not found in $PATH".
func execReason(err error) string {
	var ee *exec.Error
	if errors.As(err, &ee) && errors.Is(ee.Err, exec.ErrNotFound) {
		return ee.Err.Error()
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	if errors.As(err, &ee) {
		return ee.Err.Error()
	}
	return err.Error()
}

// The child's last lines kept for a StartError: enough to show a stack
// trace's head or a usage message, bounded whatever the child writes.
const (
	tailLines   = 20
	tailLineMax = 512 // bytes; longer lines are cut
)

// tail keeps the last tailLines lines of a child's stdout and stderr, in the
// order they were read.
type tail struct {
	mu    sync.Mutex
	lines []string
}

func (t *tail) add(line string) {
	if len(line) > tailLineMax {
		cut := tailLineMax
		for cut > 0 && !utf8.RuneStart(line[cut]) {
			cut--
		}
		line = line[:cut] + "…"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == tailLines {
		copy(t.lines, t.lines[1:])
		t.lines = t.lines[:tailLines-1]
	}
	t.lines = append(t.lines, line)
}

// snapshot returns the lines kept so far, oldest first.
func (t *tail) snapshot() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.lines...)
}
