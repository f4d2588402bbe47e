package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// The test binary doubles as the fixtures: with SVTEST_HELPER set, TestMain
// runs a helper instead of the tests.
//
//	serve: an HTTP server on 127.0.0.1:$PORT (SVTEST_HOST: on that host
//	       instead) answering "ok". SVTEST_ARGS_OUT:
//	       write {"args","port"} there first; SVTEST_BINDFAIL: create this
//	       file if the port is taken; SVTEST_HUP_FILE: append "HUP" on SIGHUP;
//	       SVTEST_TERM_DELAY: on SIGTERM wait this long, then exit 0.
//	pid1:  the gateway's supervisor with main's signal handling, exiting
//	       with ExitCode() (run as PID 1 in a new PID namespace).
//	       SVTEST_HIDE: first cover this directory with an empty tmpfs
//	       (in a new mount namespace). SVTEST_PROC: first mount a /proc of
//	       its own PID namespace, as a container has (in a new mount
//	       namespace).
func TestMain(m *testing.M) {
	switch os.Getenv("SVTEST_HELPER") {
	case "serve":
		helperServe()
	case "pid1":
		os.Exit(pid1Harness())
	default:
		os.Exit(m.Run())
	}
}

func helperServe() {
	port := os.Getenv("PORT")
	if out := os.Getenv("SVTEST_ARGS_OUT"); out != "" {
		b, _ := json.Marshal(map[string]any{"args": os.Args[1:], "port": port})
		if err := os.WriteFile(out, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	// Handle signals before listening: the supervisor counts the child
	// ready once it listens, and tests signal it from then on.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP)
	host := "127.0.0.1"
	if h := os.Getenv("SVTEST_HOST"); h != "" {
		host = h
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		if f := os.Getenv("SVTEST_BINDFAIL"); f != "" {
			os.WriteFile(f, []byte(err.Error()), 0o644)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		for sig := range sigs {
			if sig == syscall.SIGHUP {
				if f := os.Getenv("SVTEST_HUP_FILE"); f != "" {
					fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
					if err == nil {
						fh.WriteString("HUP\n")
						fh.Close()
					}
				}
				continue
			}
			if d, err := time.ParseDuration(os.Getenv("SVTEST_TERM_DELAY")); err == nil {
				time.Sleep(d)
			}
			l.Close()
			os.Exit(0)
		}
	}()
	http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	select {}
}

// pid1Harness runs the supervisor the way main does: signal.Notify stays
// registered until exit, TERM/INT cancel the context, other signals are
// forwarded.
func pid1Harness() int {
	log := hclog.New(&hclog.LoggerOptions{Name: "supervisor", Output: os.Stderr, JSONFormat: true, Level: hclog.Debug})
	if dir := os.Getenv("SVTEST_HIDE"); dir != "" {
		// In our own mount namespace: keep the mount to ourselves, then
		// cover dir with an empty tmpfs.
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			log.Error("harness: make mounts private", "error", err)
			return 1
		}
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, ""); err != nil {
			log.Error("harness: hide "+dir, "error", err)
			return 1
		}
	}
	if os.Getenv("SVTEST_PROC") != "" {
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			log.Error("harness: make mounts private", "error", err)
			return 1
		}
		if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
			log.Error("harness: mount /proc", "error", err)
			return 1
		}
	}
	dur := func(name string, def time.Duration) time.Duration {
		if d, err := time.ParseDuration(os.Getenv(name)); err == nil {
			return d
		}
		return def
	}
	sv, err := New(Config{
		Command:        os.Getenv("SVTEST_CMD"),
		Env:            os.Environ(),
		ReadyTimeout:   time.Hour,
		PollInterval:   10 * time.Millisecond,
		InitialBackoff: dur("SVTEST_INITIAL", 10*time.Millisecond),
		MaxBackoff:     time.Hour,
		StopGrace:      dur("SVTEST_GRACE", 5*time.Second),
		Logger:         log,
	})
	if err != nil {
		log.Error("harness", "error", err)
		return 1
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT, syscall.SIGWINCH, syscall.SIGALRM, syscall.SIGPWR, syscall.SIGABRT, syscall.SIGTRAP, syscall.SIGSYS, syscall.SIGSTKFLT) // as main.go's forwarded
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for sig := range sigs {
			if sig == syscall.SIGTERM || sig == syscall.SIGINT {
				log.Info("harness got a stop signal", "signal", sig.String(), "pid", os.Getpid())
				cancel()
				continue
			}
			sv.Signal(sig)
		}
	}()
	err = sv.Run(ctx)
	code := sv.ExitCode()
	if err != nil {
		log.Error("harness", "error", err)
		if code == 0 {
			code = 1
		}
	}
	log.Info("harness exiting", "status", code)
	return code
}

// logSink is a goroutine-safe sink for hclog's JSON lines. It keeps them
// all and passes every restart delay the supervisor logs to delays, so tests
// see the delays in the log a user reads.
type logSink struct {
	mu      sync.Mutex
	b       bytes.Buffer
	partial []byte
	delays  chan time.Duration // nil: not watched
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Write(p)
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := s.partial[:i]
		s.partial = s.partial[i+1:]
		var e entry
		if s.delays == nil || json.Unmarshal(line, &e) != nil || e.Message != "restarting child after a delay" {
			continue
		}
		select {
		case s.delays <- e.Duration:
		default:
		}
	}
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// entry is one JSON log line, with the keys the tests look at.
type entry struct {
	Message  string        `json:"@message"`
	Stream   string        `json:"stream"`
	PID      int           `json:"pid"`
	Port     int           `json:"port"`
	Duration time.Duration `json:"duration"` // nanoseconds, as every duration the gateway logs in JSON
	Hint     string        `json:"hint"`
	Status   int           `json:"status"` // a number on every line, as the gate's
	Exit     string        `json:"exit"`
}

// entries parses the JSON log lines written so far.
func (s *logSink) entries(t *testing.T) []entry {
	t.Helper()
	var out []entry
	sc := bufio.NewScanner(strings.NewReader(s.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

// find returns the entries whose message is msg.
func (s *logSink) find(t *testing.T, msg string) []entry {
	t.Helper()
	var out []entry
	for _, e := range s.entries(t) {
		if e.Message == msg {
			out = append(out, e)
		}
	}
	return out
}

// testBin is the path of the test binary, the fixtures' executable.
func testBin(t *testing.T) string {
	t.Helper()
	p, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// harness is a Supervisor under test with its logs.
type harness struct {
	s      *Supervisor
	log    *logSink // the supervisor's lines; its restart delays in log.delays
	child  *logSink // the child's lines
	cancel context.CancelFunc
	done   chan error
}

// startSup builds a Supervisor from cfg with short defaults and runs it; the
// test's cleanup stops it.
func startSup(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := newSup(t, cfg)
	h.run(t)
	return h
}

func newSup(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{log: &logSink{delays: make(chan time.Duration, 1000)}, child: &logSink{}}
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "supervisor", Output: h.log, JSONFormat: true, Level: hclog.Debug})
	cfg.ChildLogger = hclog.New(&hclog.LoggerOptions{Name: "child", Output: h.child, JSONFormat: true})
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 10 * time.Millisecond
	}
	if cfg.InitialBackoff == 0 {
		cfg.InitialBackoff = time.Hour
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = time.Hour
	}
	if cfg.StopGrace == 0 && !cfg.NoStopGrace {
		cfg.StopGrace = 5 * time.Second
	}
	if cfg.Env == nil {
		cfg.Env = []string{"PATH=" + os.Getenv("PATH")}
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	return h
}

func (h *harness) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(20 * time.Second):
			t.Errorf("Run did not return after cancel; logs:\n%s", h.logs())
		}
	})
}

// stop cancels Run and returns its error.
func (h *harness) stop(t *testing.T) error {
	t.Helper()
	h.cancel()
	return h.wait(t)
}

func (h *harness) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-h.done:
		h.done <- err // for the cleanup
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("Run did not return; logs:\n%s", h.logs())
		return nil
	}
}

func (h *harness) logs() string { return h.log.String() }

// nextDelay waits for the next restart delay the supervisor logs.
func (h *harness) nextDelay(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-h.log.delays:
		return d
	case <-time.After(20 * time.Second):
		t.Fatalf("no restart scheduled; status %+v; logs:\n%s", h.s.Status(), h.logs())
		return 0
	}
}

// waitFor polls cond until it holds, for as long as a child's start may
// take on a loaded machine.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, what, 20*time.Second, cond)
}

// alive reports whether pid exists (zombies included).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// readPID reads a pid a fixture wrote to path, waiting for it.
func readPID(t *testing.T, path string) int {
	t.Helper()
	var pid int
	waitFor(t, "pid file "+path, func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		pid = n
		return err == nil && n > 0
	})
	return pid
}

// procStat returns the state letter and parent pid of pid from /proc.
func procStat(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	return f[0][0], ppid, true
}

// childrenOf lists the pids whose parent is ppid, with their states.
func childrenOf(ppid int) map[int]byte {
	out := map[int]byte{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, pp, ok := procStat(pid); ok && pp == ppid {
			out[pid] = st
		}
	}
	return out
}
