package supervisor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
)

// maxLine is about the longest piece of a line logged as one entry; longer
// lines are split into pieces of this size (3 bytes more when a character
// would be cut), nothing is dropped.
const maxLine = 64 * 1024

// shell runs Config.Command, as `sh -c` does for MCP_SPAWN_CMD.
const shell = "/bin/sh"

// execError is a start that failed because the program could not be run at
// all (not found, not executable, no shell), as opposed to a shortage of
// resources (pipes, file descriptors) that a later start may not meet.
type execError struct{ err error }

func (e *execError) Error() string { return e.err.Error() }
func (e *execError) Unwrap() error { return e.err }

// child is one started process: its pid (also its process group id), the
// channel the reaper delivers its status on, its output readers and the last
// lines they read.
type child struct {
	pid     int
	status  <-chan syscall.WaitStatus
	outDone chan struct{} // closed when stdout and stderr both reached EOF
	readers []*os.File
	tail    *tail
}

// start starts the child on port: in its own process group, stdin on
// /dev/null, stdout and stderr on pipes read line by line into the child
// logger.
func (s *Supervisor) start(port int) (*child, error) {
	p := strconv.Itoa(port)
	var name string
	var argv []string
	if s.cfg.Command != "" {
		name, argv = shell, []string{shell, "-c", strings.ReplaceAll(s.cfg.Command, "{port}", p)}
	} else {
		argv = make([]string, len(s.cfg.Args))
		for i, a := range s.cfg.Args {
			argv[i] = strings.ReplaceAll(a, "{port}", p)
		}
		path, err := exec.LookPath(argv[0])
		if err != nil {
			return nil, fmt.Errorf("start child: %w", &execError{err})
		}
		name = path
	}

	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("start child: %w", err)
	}
	defer devnull.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start child: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("start child: %w", err)
	}
	attr := &os.ProcAttr{
		Env:   childEnv(s.cfg.Env, port),
		Files: []*os.File{devnull, outW, errW},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	pid, status, err := s.reap.startProcess(name, argv, attr)
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("start child: %w", &execError{err})
	}
	s.mu.Lock()
	s.pid, s.pgid = pid, pid
	s.mu.Unlock()
	if s.cfg.Port == 0 {
		s.log.Info("chose a port for the child", "port", port)
	}

	c := &child{pid: pid, status: status, outDone: make(chan struct{}), readers: []*os.File{outR, errR}, tail: &tail{}}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); copyLines(outR, s.childLog, c.tail, "stdout", pid) }()
	go func() { defer wg.Done(); copyLines(errR, s.childLog, c.tail, "stderr", pid) }()
	go func() { wg.Wait(); close(c.outDone) }()
	return c, nil
}

// waitOutput waits until the output readers have reached EOF, at most d;
// then it closes the pipes, which ends the readers either way, and waits for
// them.
func (c *child) waitOutput(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.outDone:
	case <-t.C:
	}
	for _, r := range c.readers {
		r.Close()
	}
	<-c.outDone
}

// copyLines logs r line by line and keeps the last lines in t. Lines longer
// than maxLine are logged in pieces of about maxLine bytes, cut between
// UTF-8 characters (a character cut in two would be logged as two U+FFFD);
// a last line without a newline is logged too.
func copyLines(r io.Reader, log hclog.Logger, t *tail, stream string, pid int) {
	br := bufio.NewReaderSize(r, maxLine)
	var carry []byte // the start of a character the last piece ended in
	for {
		line, err := br.ReadSlice('\n')
		if len(carry) > 0 {
			line, carry = append(carry, line...), nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			line, carry = cutCharacter(line)
		}
		if len(line) > 0 {
			text := string(line)
			if t, ok := strings.CutSuffix(text, "\n"); ok {
				text = strings.TrimSuffix(t, "\r")
			}
			log.Info(text, "stream", stream, "pid", pid)
			t.add(text)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// cutCharacter splits a piece of a line before the UTF-8 character it ends
// in the middle of, if any; rest is a copy.
func cutCharacter(piece []byte) (whole, rest []byte) {
	for i := len(piece) - 1; i >= 0 && i >= len(piece)-utf8.UTFMax; i-- {
		if utf8.RuneStart(piece[i]) {
			if !utf8.FullRune(piece[i:]) {
				return piece[:i], append([]byte(nil), piece[i:]...)
			}
			break
		}
	}
	return piece, nil
}

// childEnv is base with PORT=port in place of any PORT it has.
func childEnv(base []string, port int) []string {
	env := make([]string, 0, len(base)+1)
	for _, kv := range base {
		if !strings.HasPrefix(kv, "PORT=") {
			env = append(env, kv)
		}
	}
	return append(env, "PORT="+strconv.Itoa(port))
}

// probe polls the child's port until it answers (true) or ctx is done. An
// answer counts only when the socket listening there is not another
// process's (owner.go).
func (s *Supervisor) probe(ctx context.Context, port int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	attemptTimeout := max(s.cfg.PollInterval, time.Second)
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	said, saidReq := false, false
	for {
		ok, err := s.probeOnce(ctx, client, addr, attemptTimeout)
		if err != nil && !saidReq {
			// Nothing the child does can fix it: say so once, rather
			// than a "did not listen in time" that blames the child.
			saidReq = true
			s.log.Error("cannot probe the child's readiness; it is never ready", "port", port, "error", err)
			s.mu.Lock()
			s.blocked = "not ready: the readiness request cannot be made: " + err.Error()
			s.mu.Unlock()
		}
		if ok {
			if !foreignListener(port) {
				return true
			}
			if !said {
				said = true
				s.log.Error("another process answers on the child's port; the child is not ready while it does",
					"port", port, "hint", takenPortHint(port))
				s.mu.Lock()
				s.blocked = fmt.Sprintf("not ready: port %d is answered by another process", port)
				s.mu.Unlock()
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// probeOnce reports whether the child answers once. Its error is not the
// child's: a readiness request that cannot be made (a ReadyPath that is
// not a URL path).
func (s *Supervisor) probeOnce(ctx context.Context, client *http.Client, addr string, timeout time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if s.cfg.ReadyPath == "" {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return false, nil
		}
		conn.Close()
		return true, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+s.cfg.ReadyPath, nil)
	if err != nil {
		return false, fmt.Errorf("ready path %q: %w", s.cfg.ReadyPath, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, nil
	}
	resp.Body.Close()
	return true, nil // any HTTP answer counts
}

// portTaken reports whether something answers on 127.0.0.1:port before the
// child is started: what the readiness probe would take for the child.
func portTaken(port int) bool {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
