// Package supervisor owns the MCP server the gateway runs as its child: it starts
// it in its own process group, waits until its port answers, restarts it with
// backoff when it exits, forwards signals to its group, reaps zombies, and stops
// the whole group on shutdown. It does not own the gateway's signal handling
// (main turns SIGTERM/SIGINT into a cancelled context and passes other signals
// to Signal) nor the HTTP side (the gate asks Endpoint on every request).
//
// # Failures
//
// A child that exits is restarted with exponential backoff (Config.MaxRestarts
// can bound how often). A command that cannot start at all ends Run instead,
// with a *StartError that carries the exit status a shell would report (127
// not found, 126 not executable); Config.FailFast extends that to any child
// that exits before it was ready. While a child
// does not listen, Run says every few seconds which port it waits on and how
// the child is told it.
//
// # Reaping
//
// A wait4(-1) reaper and os/exec cannot share a process: the reaper can collect
// the status that cmd.Wait is about to wait for. So one goroutine owns all
// waiting while Run runs. It calls wait4(-1, WNOHANG) until nothing is left on
// every SIGCHLD (and on a periodic tick, as a backstop for coalesced signals),
// and hands each status to whoever registered that pid; a pid nobody registered
// is an orphaned descendant and is simply reaped. The child is started with
// os.StartProcess while holding the reaper's lock, and its pid is registered
// before the lock is released, so the reaper can never see the child's exit
// before it knows whom to give it to. (The same lock covers the wait4 that
// os.StartProcess does itself when exec fails.) Nothing calls cmd.Wait: the
// child's stdout and stderr are pipes read by our own goroutines, and a child's
// exit is reported only once both reached EOF (bounded, in case an escaped
// descendant keeps a pipe open).
//
// As PID 1 orphans are reparented to us by the kernel. Elsewhere Run makes the
// gateway a child subreaper (PR_SET_CHILD_SUBREAPER) so orphans of the child's
// tree come to us and are reaped the same way; if that fails it logs a warning.
// Orphans that left the child's process group (descendants that called
// setsid), which signals to the group miss, are ended with the child, SIGTERM
// then SIGKILL after StopGrace, before a restart and at shutdown: in /proc they
// are the gateway's children outside the child's group (endStrays). A
// gateway that is PID 1 without a child of its own reaps with ReapOrphans.
//
// # The child's view of the gateway
//
// The child runs as the gateway's user, so /proc would show it the
// gateway's environment, which holds the secrets the caller keeps out of
// Config.Env, and its memory. Run makes the process non-dumpable while it
// runs (PR_SET_DUMPABLE 0), which makes those files the kernel's to guard.
//
// While Run runs, nothing else in the process may wait for child processes
// (os/exec's Wait would fail with "no child processes").
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// Config says what to run and how to supervise it. Zero durations take the
// documented defaults.
type Config struct {
	// Command is run through /bin/sh -c (MCP_SPAWN_CMD). Exactly one of
	// Command and Args must be set. "{port}" is replaced by the child's port.
	Command string
	// Args is an argv run directly, without a shell (the launcher form
	// `mcp-oauth-proxy -- cmd args`); Args[0] is looked up in PATH. Each
	// "{port}" in an argument is replaced by the child's port.
	Args []string
	// Port is the loopback port the child listens on. 0: a free 127.0.0.1
	// port is picked before each start.
	Port int
	// ReadyPath "" makes readiness a TCP connect to 127.0.0.1:Port; otherwise
	// it is an HTTP GET of this path, and any HTTP answer counts.
	ReadyPath string
	// ReadyTimeout is how long a starting child may take to answer before it
	// is stopped and counted as a failed start. 0: 120s.
	ReadyTimeout time.Duration
	// PollInterval is the time between readiness probes. 0: 100ms.
	PollInterval time.Duration
	// WaitLogInterval is the time between the info lines that say a
	// starting child is still awaited, naming its port and how it is told
	// the port. 0: 5s.
	WaitLogInterval time.Duration
	// FailFast makes a child that exits before it was ready end Run with a
	// *StartError (its status and last output lines) instead of being
	// restarted: for development, where such an exit is a mistake to show,
	// not a crash to ride out. A child that was ready, or that is stopped
	// for not listening within ReadyTimeout, is restarted either way. Off
	// (production), only what no restart can cure ends Run (see
	// StartError); crashes are restarted with backoff.
	FailFast bool
	// Env is the child's environment, with PORT replaced by the child's
	// port. The caller removes its own configuration and secrets first (the
	// gateway drops every variable it reads). nil: an environment with only
	// PORT.
	Env []string
	// InitialBackoff is the first restart delay. 0: 500ms.
	InitialBackoff time.Duration
	// MaxBackoff caps the restart delay. 0: 30s.
	MaxBackoff time.Duration
	// ResetAfter is how long a child must have been ready for the restart
	// delay to start again from InitialBackoff. 0: 60s.
	ResetAfter time.Duration
	// MaxRestarts 0 means restart forever; otherwise Run returns an error
	// when a restart would be the (MaxRestarts+1)th within RestartWindow.
	MaxRestarts int
	// RestartWindow is the window MaxRestarts counts in. 0: 10m.
	RestartWindow time.Duration
	// StopGrace is the time between SIGTERM and SIGKILL to the child's
	// process group, on shutdown and after a failed start. 0: 10s, unless
	// NoStopGrace.
	StopGrace time.Duration
	// NoStopGrace gives the child no time at all to stop: SIGKILL follows
	// SIGTERM at once, to the leader and to what is left of its group.
	// StopGrace must then be 0.
	NoStopGrace bool
	// Logger receives the supervisor's own messages. nil: a null logger.
	Logger hclog.Logger
	// ChildLogger receives the child's output, one entry per line at info
	// level with keys "stream" ("stdout" or "stderr") and "pid".
	// nil: Logger.Named("child").
	ChildLogger hclog.Logger
	// Now is the clock for the backoff reset and the restart window.
	// nil: time.Now.
	Now func() time.Time
}

// Status is a snapshot of the supervisor, for /readyz and logs.
type Status struct {
	State    string // "starting", "ready", "backoff", "stopping" or "stopped"
	Starts   int    // child processes started so far (a command that failed to exec is not one)
	Restarts int    // restarts so far (the first start is not one)
	LastExit string // how the last child ended, e.g. "exit status 3", "signal: killed"; "" if none has
	Blocked  string // what keeps the child from running or being ready, e.g. "not started: port 3001 is in use by another process"; "" if nothing
	Port     int    // the current (or last) child's port; 0 before the first start
	PID      int    // the current child's pid; 0 when none runs
}

// States reported by Status, all of them listed by States.
const (
	StateStarting = "starting"
	StateReady    = "ready"
	StateBackoff  = "backoff"
	StateStopping = "stopping"
	StateStopped  = "stopped"
)

// States lists every Status.State, for callers that report them all (a
// metric per state).
func States() []string {
	return []string{StateStarting, StateReady, StateBackoff, StateStopping, StateStopped}
}

// outputBound is how long a child's exit waits for its stdout and stderr to
// reach EOF after its process group is gone (an escaped descendant may hold
// them open), as exec.Cmd.WaitDelay does.
const outputBound = 2 * time.Second

// killBound is how long processes sent SIGKILL may take to be gone before
// the supervisor says so and goes on: SIGKILL cannot be caught, only a
// process in uninterruptible sleep outlasts it for long.
const killBound = 5 * time.Second

// Supervisor runs one child at a time. Build it with New and run it with Run,
// once.
type Supervisor struct {
	cfg      Config
	log      hclog.Logger
	childLog hclog.Logger
	now      func() time.Time

	started atomic.Bool
	ready   atomic.Bool
	target  atomic.Pointer[url.URL]

	mu       sync.Mutex // guards the fields below and signals to the group
	state    string
	starts   int
	restarts int
	lastExit string
	exitCode int
	port     int
	pid      int
	pgid     int    // the current child's group while it may have members; 0: none
	blocked  string // Status.Blocked

	reap reaper
}

// New checks cfg for programmer errors (the caller validates what users
// set, with messages that name their settings) and applies its defaults. It
// starts nothing; whether the command can be run is found out by Run.
func New(cfg Config) (*Supervisor, error) {
	switch {
	case cfg.Command == "" && len(cfg.Args) == 0:
		return nil, errors.New("new supervisor: no command (set Command or Args)")
	case cfg.Command != "" && len(cfg.Args) > 0:
		return nil, errors.New("new supervisor: both Command and Args are set; set exactly one")
	case len(cfg.Args) > 0 && cfg.Args[0] == "":
		return nil, errors.New("new supervisor: Args[0] is empty")
	case cfg.Port < 0 || cfg.Port > 65535:
		return nil, fmt.Errorf("new supervisor: port %d out of range", cfg.Port)
	case cfg.ReadyPath != "" && cfg.ReadyPath[0] != '/':
		return nil, fmt.Errorf("new supervisor: ready path %q must start with /", cfg.ReadyPath)
	case cfg.MaxRestarts < 0:
		return nil, fmt.Errorf("new supervisor: max restarts %d is negative", cfg.MaxRestarts)
	case cfg.NoStopGrace && cfg.StopGrace != 0:
		return nil, fmt.Errorf("new supervisor: stop grace %s with NoStopGrace", cfg.StopGrace)
	}
	for _, d := range []time.Duration{cfg.ReadyTimeout, cfg.PollInterval, cfg.WaitLogInterval, cfg.InitialBackoff, cfg.MaxBackoff, cfg.ResetAfter, cfg.RestartWindow, cfg.StopGrace} {
		if d < 0 {
			return nil, fmt.Errorf("new supervisor: negative duration %s", d)
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.ReadyTimeout, 120*time.Second)
	def(&cfg.PollInterval, 100*time.Millisecond)
	def(&cfg.WaitLogInterval, 5*time.Second)
	def(&cfg.InitialBackoff, 500*time.Millisecond)
	def(&cfg.MaxBackoff, 30*time.Second)
	def(&cfg.ResetAfter, 60*time.Second)
	def(&cfg.RestartWindow, 10*time.Minute)
	if !cfg.NoStopGrace {
		def(&cfg.StopGrace, 10*time.Second)
	}
	if cfg.InitialBackoff > cfg.MaxBackoff {
		return nil, fmt.Errorf("new supervisor: initial backoff %s exceeds max backoff %s", cfg.InitialBackoff, cfg.MaxBackoff)
	}
	cfg.Args = append([]string(nil), cfg.Args...)
	cfg.Env = append([]string(nil), cfg.Env...)
	s := &Supervisor{cfg: cfg, log: cfg.Logger, childLog: cfg.ChildLogger, now: cfg.Now, state: StateStarting}
	if s.log == nil {
		s.log = hclog.NewNullLogger()
	}
	if s.childLog == nil {
		s.childLog = s.log.Named("child")
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// Endpoint returns http://127.0.0.1:<port> of the current child and whether it
// is ready now. It is cheap (atomic loads). Before the first start the URL is
// nil.
func (s *Supervisor) Endpoint() (*url.URL, bool) {
	u := s.target.Load()
	return u, u != nil && s.ready.Load()
}

// Status returns a snapshot of the supervisor's state.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Status{State: s.state, Starts: s.starts, Restarts: s.restarts, LastExit: s.lastExit, Blocked: s.blocked, Port: s.port, PID: s.pid}
}

// Ready reports whether the child is ready to serve, with its state, its
// restarts and how the last child ended, for /readyz.
func (s *Supervisor) Ready() (ok bool, detail string) {
	st := s.Status()
	detail = fmt.Sprintf("%s, %d restarts", st.State, st.Restarts)
	if st.LastExit != "" {
		detail += ", last exit: " + st.LastExit
	}
	if st.Blocked != "" {
		detail += ", " + st.Blocked
	}
	return st.State == StateReady, detail
}

// ExitCode returns the last child's status as a shell reports it: its exit
// code, 128+N when it was killed by signal N, 127 when the command was not
// found and 126 when it was not executable. 0 if no child was ever started.
// Meaningful once Run has returned.
func (s *Supervisor) ExitCode() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exitCode
}

// Signal forwards sig to the child's whole process group, without a restart.
// It does nothing when no child runs or sig is not a syscall.Signal.
func (s *Supervisor) Signal(sig os.Signal) {
	ss, ok := sig.(syscall.Signal)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pgid == 0 {
		return
	}
	if err := syscall.Kill(-s.pgid, ss); err != nil && !errors.Is(err, syscall.ESRCH) {
		s.log.Warn("forward signal to child", "signal", ss.String(), "pid", s.pgid, "error", err)
		return
	}
	s.log.Info("signal forwarded to child", "signal", ss.String(), "pid", s.pgid)
}

func (s *Supervisor) setState(state string) {
	s.mu.Lock()
	s.state = state
	s.mu.Unlock()
}

// Run is the oklog/run actor. It starts the child, waits for readiness,
// restarts it with backoff when it exits, and reaps zombies. When ctx is done
// it sends SIGTERM to the child's process group, SIGKILL after StopGrace,
// waits until the group is gone and returns nil. It returns an error only
// when it cannot go on: a *StartError when the command cannot be started (or,
// with FailFast, exited before it was ready), or an error when the restart
// limit was exceeded. Every goroutine it starts has ended when it returns.
func (s *Supervisor) Run(ctx context.Context) error {
	if s.started.Swap(true) {
		return errors.New("run supervisor: already run")
	}
	if os.Getpid() != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			s.log.Warn("cannot become a child subreaper; orphans of the child go to the system's init", "error", err)
		} else {
			defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) //nolint:errcheck // best effort
		}
	}
	// Hide the gateway's environment and memory from the child (the
	// package comment's "The child's view of the gateway"). The child's
	// exec makes it dumpable again: only the gateway is hidden.
	was, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err == nil {
		err = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	}
	if err != nil {
		s.log.Warn("cannot make the gateway non-dumpable; the child can read its environment and memory in /proc", "error", err)
	} else {
		defer unix.Prctl(unix.PR_SET_DUMPABLE, uintptr(was), 0, 0, 0) //nolint:errcheck // best effort
	}
	// Before the reaper starts, since the check waits for its own process.
	if e := s.checkSyntax(); e != nil {
		s.mu.Lock()
		s.exitCode, s.lastExit, s.state = e.Code, e.Reason, StateStopped
		s.mu.Unlock()
		return e
	}
	stopReaper := s.reap.start(s.log)
	defer func() {
		if os.Getpid() == 1 {
			s.sweep()
		}
		stopReaper()
		s.ready.Store(false)
		s.mu.Lock()
		s.state, s.pid = StateStopped, 0
		s.mu.Unlock()
	}()

	b := backoff.NewExponentialBackOff()
	b.InitialInterval = s.cfg.InitialBackoff
	b.MaxInterval = s.cfg.MaxBackoff
	b.MaxElapsedTime = 0 // never give up on our own; MaxRestarts decides
	// Multiplier 2 with ±20% jitter: each delay is longer than the one
	// before until MaxBackoff, and children of many gateways still spread.
	b.Multiplier = 2
	b.RandomizationFactor = 0.2
	b.Reset()

	var restartTimes []time.Time
	// first: no start was tried yet (a wait for a taken port is none).
	for first := true; ; {
		if ctx.Err() != nil {
			return nil
		}
		a := s.runOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err := s.unrecoverable(a, first); err != nil {
			return err
		}
		first = first && a.portTaken != 0
		if a.execErr != nil {
			s.log.Error("start child", "error", a.execErr)
		}
		if a.readyFor >= s.cfg.ResetAfter {
			b.Reset()
		}
		if a.portTaken != 0 {
			// Nothing ran: not a restart, and no restart limit applies.
			delay := b.NextBackOff()
			s.log.Info("trying the child's port again after a delay", "port", a.portTaken, "duration", delay)
			if !sleepCtx(ctx, delay) {
				return nil
			}
			continue
		}
		now := s.now()
		if s.cfg.MaxRestarts > 0 {
			kept := restartTimes[:0]
			for _, t := range restartTimes {
				if now.Sub(t) < s.cfg.RestartWindow {
					kept = append(kept, t)
				}
			}
			restartTimes = append(kept, now)
			if len(restartTimes) > s.cfg.MaxRestarts {
				st := s.Status()
				return fmt.Errorf("supervise child: it exited (%s) and would be restarted more than %d times within %s", st.LastExit, s.cfg.MaxRestarts, s.cfg.RestartWindow)
			}
		}
		delay := b.NextBackOff()
		s.setState(StateBackoff)
		s.log.Info("restarting child after a delay", "duration", delay)
		if !sleepCtx(ctx, delay) {
			return nil
		}
		s.mu.Lock()
		s.restarts++
		s.mu.Unlock()
	}
}

// childPort is the port the next child listens on: Config.Port, or a free
// one the kernel offers, asked again (three tries in all) when another
// process answers on it already. taken: another process answers on port.
func (s *Supervisor) childPort() (port int, taken bool, err error) {
	if s.cfg.Port != 0 {
		return s.cfg.Port, portTaken(s.cfg.Port), nil
	}
	for range 3 { // a port taken since the kernel offered it: ask again
		if port, err = freePort(); err != nil {
			return 0, false, err
		}
		if taken = portTaken(port); !taken {
			break
		}
	}
	return port, taken, nil
}

// sleepCtx waits d, or less when ctx is done: it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// runOnce starts one child and supervises it until it exits, fails to become
// ready in time, or ctx is done; in every case its whole group is gone when
// runOnce returns. It reports how the start went.
func (s *Supervisor) runOnce(ctx context.Context) attempt {
	port, taken, err := s.childPort()
	if err != nil {
		s.log.Error("pick a port for the child", "error", err)
		s.recordExit(1, "no free port")
		return attempt{}
	}
	if taken {
		// Another process answers where the child would: the readiness
		// probe would take it for the child, and the gate would send it
		// the admitted requests. No child is started until it is gone.
		s.log.Error("the child's port is in use by another process; the MCP server is not started until it is free",
			"port", port, "hint", takenPortHint(port))
		s.mu.Lock()
		s.state, s.port, s.blocked = StateBackoff, port, fmt.Sprintf("not started: port %d is in use by another process", port)
		s.mu.Unlock()
		return attempt{portTaken: port}
	}
	s.target.Store(&url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(port)})
	s.mu.Lock()
	s.state, s.port, s.blocked = StateStarting, port, ""
	s.mu.Unlock()

	c, err := s.start(port)
	if err != nil {
		var ee *execError
		if errors.As(err, &ee) {
			code := execExitCode(err)
			s.recordExit(code, fmt.Sprintf("exit status %d", code))
			return attempt{execErr: err} // Run logs it or returns it
		}
		s.log.Error("start child", "error", err)
		s.recordExit(1, "exit status 1")
		return attempt{}
	}
	s.mu.Lock()
	s.starts++
	s.mu.Unlock()
	s.log.Info("child started", "pid", c.pid, "port", port)

	var a attempt
	var readySince time.Time
	a.ws, a.exited, readySince = s.awaitReady(ctx, c, port)
	if !readySince.IsZero() {
		a.ready = true
		select {
		case a.ws = <-c.status:
			a.exited = true
		case <-ctx.Done():
		}
	}
	s.ready.Store(false)
	if a.exited {
		s.setState(StateBackoff)
	} else if ctx.Err() != nil {
		s.setState(StateStopping)
	}
	var end stopping
	if !a.exited {
		a.ws, end = s.stopGroup(c)
	}
	s.finish(c, a.ws, a.exited, end)
	a.tail = c.tail.snapshot()
	if a.ready {
		a.readyFor = s.now().Sub(readySince)
	}
	return a
}

// awaitReady waits until the child answers on port (readySince is set), it
// exits (exited, with its status), ReadyTimeout passes or ctx is done. Every
// WaitLogInterval it says at info what it waits for.
func (s *Supervisor) awaitReady(ctx context.Context, c *child, port int) (ws syscall.WaitStatus, exited bool, readySince time.Time) {
	probeCtx, stopProbe := context.WithCancel(ctx)
	readyCh := make(chan struct{})
	var probeWG sync.WaitGroup
	probeWG.Add(1)
	go func() {
		defer probeWG.Done()
		if s.probe(probeCtx, port) {
			close(readyCh)
		}
	}()
	defer func() {
		stopProbe()
		probeWG.Wait()
	}()
	timeout := time.NewTimer(s.cfg.ReadyTimeout)
	defer timeout.Stop()
	tick := time.NewTicker(s.cfg.WaitLogInterval)
	defer tick.Stop()
	var waited time.Duration
	for {
		select {
		case <-readyCh:
			readySince = s.now()
			s.ready.Store(true)
			s.mu.Lock()
			s.state, s.blocked = StateReady, ""
			s.mu.Unlock()
			s.log.Info("child ready", "pid", c.pid, "port", port)
			return ws, false, readySince
		case ws = <-c.status:
			return ws, true, readySince
		case <-timeout.C:
			s.log.Error("child did not listen in time; stopping it", "pid", c.pid, "port", port, "duration", s.cfg.ReadyTimeout, "hint", s.waitHint(port))
			return ws, false, readySince
		case <-ctx.Done():
			return ws, false, readySince
		case <-tick.C:
			waited += s.cfg.WaitLogInterval
			s.log.Info("waiting for the child to listen", "pid", c.pid, "port", port, "duration", waited, "hint", s.waitHint(port))
		}
	}
}

// waitHint is the hint of the messages of a child that does not listen:
// that it listens on the IPv6 loopback, where the gateway does not
// connect, or else how it is told its port.
func (s *Supervisor) waitHint(port int) string {
	if listensOnIPv6Loopback(port) {
		return fmt.Sprintf("something listens on [::1]:%d, the IPv6 loopback, but the gateway connects to 127.0.0.1:%d: make the server listen on 127.0.0.1 (one told to listen on \"localhost\" may have chosen ::1)", port, port)
	}
	return s.portHint()
}

// portHint says how the child is told its port, for the messages of a child
// that does not listen.
func (s *Supervisor) portHint() string {
	placeholder := strings.Contains(s.cfg.Command, "{port}")
	for _, a := range s.cfg.Args {
		placeholder = placeholder || strings.Contains(a, "{port}")
	}
	switch {
	case s.cfg.Port != 0 && placeholder:
		return "the port is fixed (MCP_SPAWN_PORT); the server is told it in the PORT environment variable and as {port} in its command"
	case s.cfg.Port != 0:
		return "the port is fixed (MCP_SPAWN_PORT) and in the PORT environment variable; a server that reads neither must be set to listen on it"
	case placeholder:
		return "the port is chosen at each start; the server is told it in the PORT environment variable and as {port} in its command"
	default:
		return "the port is chosen at each start and told to the server only in the PORT environment variable; a server that ignores PORT needs {port} in its command (e.g. --port {port}) or a fixed MCP_SPAWN_PORT"
	}
}

// stopping is one child's end under way: when its grace ends, and which
// strays (processes its tree left outside its process group, endStrays)
// were sent which signal.
type stopping struct {
	deadline time.Time
	sent     map[int]syscall.Signal
}

// stopGroup sends SIGTERM to the child's group and to the strays of its
// tree, SIGKILL to the group after StopGrace (at once with NoStopGrace),
// and returns the leader's status once it has it, with the end under way
// for finish to complete.
func (s *Supervisor) stopGroup(c *child) (syscall.WaitStatus, stopping) {
	end := stopping{deadline: time.Now().Add(s.cfg.StopGrace), sent: map[int]syscall.Signal{}}
	s.killGroup(c, syscall.SIGTERM)
	s.signalStrays(c.pid, syscall.SIGTERM, end.sent)
	if s.cfg.NoStopGrace {
		s.log.Info("no stop grace; killing the child", "pid", c.pid)
		s.killGroup(c, syscall.SIGKILL)
		return <-c.status, end
	}
	t := time.NewTimer(s.cfg.StopGrace)
	defer t.Stop()
	select {
	case ws := <-c.status:
		return ws, end
	case <-t.C:
	}
	s.log.Warn("child did not stop in time; killing it", "pid", c.pid, "duration", s.cfg.StopGrace)
	s.killGroup(c, syscall.SIGKILL)
	return <-c.status, end
}

// finish records how the leader ended, makes sure the rest of its group and
// the strays of its tree are gone (within the grace of end, or from now
// when the leader exited by itself) and its output read, and logs its
// exit.
func (s *Supervisor) finish(c *child, ws syscall.WaitStatus, unexpected bool, end stopping) {
	code, desc := describe(ws)
	s.recordExit(code, desc)
	s.mu.Lock()
	s.pid = 0
	s.mu.Unlock()
	if end.sent == nil {
		end = stopping{deadline: time.Now().Add(s.cfg.StopGrace), sent: map[int]syscall.Signal{}}
	}
	// The leader is gone; what is left of its group (an npx tree's node, a
	// background job) must go too before a restart can take the port.
	if s.groupAlive(c.pid) {
		s.killGroup(c, syscall.SIGTERM)
		s.signalStrays(c.pid, syscall.SIGTERM, end.sent)
		if !s.waitGroupGone(c.pid, time.Until(end.deadline)) { // at once with NoStopGrace
			if !s.cfg.NoStopGrace {
				s.log.Warn("child's process group did not stop in time; killing it", "pid", c.pid)
			}
			s.killGroup(c, syscall.SIGKILL)
			if !s.waitGroupGone(c.pid, killBound) {
				s.log.Error("child's process group is still there after SIGKILL", "pid", c.pid)
			}
		}
	}
	s.mu.Lock()
	s.pgid = 0
	s.mu.Unlock()
	s.endStrays(c.pid, end)
	c.waitOutput(outputBound)
	// status is a number, as a shell reports it, like every other line's
	// status (a log store fixes a key's type from the first line it sees);
	// exit says it in words.
	if unexpected {
		s.log.Error("child exited", "pid", c.pid, "status", code, "exit", desc)
	} else {
		s.log.Info("child stopped", "pid", c.pid, "status", code, "exit", desc)
	}
}

func (s *Supervisor) recordExit(code int, desc string) {
	s.mu.Lock()
	s.exitCode, s.lastExit = code, desc
	s.mu.Unlock()
}

// killGroup signals the child's process group. SIGTERM is followed by
// SIGCONT (as systemd does): a stopped process (SIGSTOP, SIGTSTP) acts on
// a SIGTERM only once continued, and would otherwise be killed when the
// grace ends, without its own stop.
func (s *Supervisor) killGroup(c *child, sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := syscall.Kill(-c.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		s.log.Warn("signal child's process group", "signal", sig.String(), "pid", c.pid, "error", err)
	}
	if sig == syscall.SIGTERM {
		_ = syscall.Kill(-c.pid, syscall.SIGCONT)
	}
}

// groupAlive reports whether process group pgid has members. Zombies count,
// so it reaps first.
func (s *Supervisor) groupAlive(pgid int) bool {
	s.reap.reapNow()
	err := syscall.Kill(-pgid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// waitGroupGone polls until process group pgid is empty or d has passed.
func (s *Supervisor) waitGroupGone(pgid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for s.groupAlive(pgid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// Strays are the processes a child's tree left outside its process group
// (a descendant that left it with setsid, a daemon that detached): signals
// to the group miss them, and once their parent exits the kernel gives
// them to the gateway, as PID 1 or as child subreaper. They are ended with
// the child, lest they pile up with each restart and outlive the gateway:
// every process whose parent is the gateway, other than the child and the
// members of its group, is one. Their own children come to the gateway in
// turn as they die, and are ended the same way.

// signalStrays sends sig to each stray of the child whose process group is
// pgid that sent does not say was sent it (or SIGKILL) already, and notes
// it there. It reports whether any stray is left. It finds none when the
// gateway has no child process left (the usual case, without a look at
// /proc), or when /proc shows another PID namespace than the gateway's.
func (s *Supervisor) signalStrays(pgid int, sig syscall.Signal, sent map[int]syscall.Signal) (left bool) {
	if s.reap.reapNow() || !procIsOurs() {
		return false
	}
	// No child is reaped meanwhile, so a pid found here is still that
	// child's (a zombie at worst) when it is signalled, never a reused one.
	s.reap.holding(func() {
		for _, pid := range outsideGroup(os.Getpid(), pgid) {
			left = true
			if pid == pgid || sent[pid] == sig || sent[pid] == syscall.SIGKILL {
				continue
			}
			sent[pid] = sig
			if sig == syscall.SIGTERM {
				s.log.Warn("ending a process the child left outside its process group", "pid", pid)
			}
			if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
				s.log.Warn("signal a process the child left outside its process group", "pid", pid, "error", err)
			}
			if sig == syscall.SIGTERM {
				_ = syscall.Kill(pid, syscall.SIGCONT) // as killGroup does
			}
		}
	})
	return left
}

// endStrays ends the strays of the child whose group was pgid, its group
// gone: SIGTERM, SIGKILL at end.deadline, until none is left.
func (s *Supervisor) endStrays(pgid int, end stopping) {
	sig := syscall.SIGTERM
	for s.signalStrays(pgid, sig, end.sent) {
		now := time.Now()
		switch {
		case now.After(end.deadline.Add(killBound)):
			s.log.Error("processes the child left outside its process group are still there after SIGKILL")
			return
		case now.After(end.deadline) && sig != syscall.SIGKILL:
			sig = syscall.SIGKILL
			continue // at once
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sweep is PID 1's last act: kill whatever is left in the namespace (what
// endStrays could not find, /proc being another namespace's) and reap it.
func (s *Supervisor) sweep() {
	if err := syscall.Kill(-1, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		s.log.Warn("final sweep", "error", err)
	}
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if s.reap.reapNow() {
			return // no children left
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// describe maps a wait status to the shell's exit code and exec's wording.
func describe(ws syscall.WaitStatus) (int, string) {
	switch {
	case ws.Exited():
		return ws.ExitStatus(), "exit status " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		return 128 + int(ws.Signal()), "signal: " + ws.Signal().String()
	default:
		return 1, fmt.Sprintf("wait status %#x", uint32(ws))
	}
}
