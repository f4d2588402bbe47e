// Command mcp-oauth-proxy puts an HTTP MCP server on the public internet
// behind OAuth: it admits only bearer JWTs from the operator's own OIDC
// provider (or, in broker mode, its own tokens, issued after a login at
// that provider), for allow-listed identities, within a rate limit, and (in
// spawn mode) runs the MCP server itself as a supervised child, as a
// container's PID 1.
//
// This file is wiring only: configuration, logger, components, listener,
// and one oklog/run actor per long-lived part. The settings are in
// config.go, the public routes in routes.go, the exit statuses in exit.go.
package main

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	oklog "github.com/oklog/run"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/broker"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/gate"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/healthz"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/metrics"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/supervisor"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/wellknown"
)

func main() {
	err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr)
	os.Exit(exit(err, os.Stderr))
}

// run is the whole program; main and the tests call it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	// A write to stdout or stderr whose reader is gone (`gateway 2>&1 |
	// shipper`, and the shipper died) must fail, not end the gateway and
	// orphan its child: Go's runtime dies of SIGPIPE on fd 1 and 2 unless
	// the program is notified of it (os/signal). The log writers drop
	// failed writes. Not signal.Ignore: an ignored disposition is
	// inherited across exec, and the child would get it too.
	pipe := make(chan os.Signal, 1) // never read: the signal only needs a taker
	signal.Notify(pipe, syscall.SIGPIPE)
	defer signal.Stop(pipe)
	if len(args) > 0 {
		args = args[1:] // the program's name
	}
	if len(args) > 0 {
		switch args[0] {
		case "dev":
			return runDev(ctx, args[1:], getenv, stdout, stderr)
		case "healthcheck":
			return runHealthcheck(ctx, args[1:], getenv, stdout)
		case "doctor":
			return runDoctor(ctx, args[1:], getenv, stdout, stderr)
		case "version", "--version", "-version":
			printVersion(stdout)
			return nil
		case "help", "--help", "-help", "-h":
			printUsage(stdout)
			return nil
		}
	}
	cfg, err := configure(args, getenv, false)
	if errors.Is(err, errHelp) {
		printUsage(stdout)
		return nil
	}
	if err != nil {
		return err
	}
	ln, err := listen(cfg)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, newLogger(cfg.Log, stderr), ln, nil)
}

// listen opens the public listener.
func listen(cfg *Config) (net.Listener, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.Listen.Host, strconv.Itoa(cfg.Listen.Port)))
	if err != nil {
		return nil, fmt.Errorf("listen on port %d (set PORT to choose another): %w", cfg.Listen.Port, err)
	}
	return ln, nil
}

// logs is where the gateway's lines go: the root logger, and when it
// writes JSON, the gate's audit lines (gate.Config.AuditOutput), which the
// gate encodes itself, written to the same output so that lines never
// interleave: through the batch, or else under the logger's own lock.
type logs struct {
	root  hclog.Logger
	audit io.Writer    // nil (text format): the audit lines go through root
	batch *batchWriter // nil, or what holds the lines briefly (logwriter.go)
}

// stopping says the gateway is stopping: from now on a log output that
// takes nothing holds up no line for long (batchWriter), so that it cannot
// keep the child from being stopped.
func (l logs) stopping() {
	if l.batch != nil {
		l.batch.Stopping()
	}
}

// close writes the lines held back; later lines go straight out.
func (l logs) close() {
	if l.batch != nil {
		l.batch.Close()
	}
}

// newLogger builds the root logger: JSON unless asked for text or writing
// to a terminal. Lines to a file or pipe are written in batches (logwriter.go).
func newLogger(lc LogConfig, w io.Writer) logs {
	json := lc.Format == "json"
	terminal := false
	f, isFile := w.(*os.File)
	if isFile {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			terminal = true
		}
	}
	if lc.Format == "" {
		json = !terminal
	}
	var batch *batchWriter
	if isFile && !terminal {
		batch = newBatchWriter(w, batchInterval, batchSize)
		w = batch
	}
	mu := new(sync.Mutex) // held by the logger while it writes a line
	l := logs{root: hclog.New(&hclog.LoggerOptions{Name: "mcp-oauth-proxy", Level: lc.Level, Output: w, JSONFormat: json, Mutex: mu}), batch: batch}
	switch {
	case !json:
		l.root = textLogger{l.root} // values with a backslash quoted unambiguously (logtext.go)
	case batch != nil:
		l.audit = batch // keeps each Write whole and in order itself
	default:
		l.audit = lockedWriter{mu: mu, w: w}
	}
	return l
}

// lockedWriter writes under the root logger's lock, so a line written
// through it and the logger's own lines never interleave.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// serve runs the gateway on ln until ctx ends, a terminating signal
// arrives, or a part fails; it returns a *stopped unless the exit status is
// 0. extra adds actors (dev mode's issuer and demo server).
func serve(ctx context.Context, cfg *Config, lg logs, ln net.Listener, extra []actor) error {
	defer lg.close() // last: the lines logged on the way out are written too
	defer ln.Close() // on every path out; a second Close after Serve is harmless
	logger := lg.root
	for _, w := range cfg.warnings {
		logger.Warn(w)
	}
	// Metrics, when METRICS_ADDR is set: a registry of the gateway's own,
	// served on a listener of its own, never on ln.
	var metricsLn net.Listener
	if cfg.Listen.MetricsAddr != "" {
		var err error
		if metricsLn, err = net.Listen("tcp", cfg.Listen.MetricsAddr); err != nil {
			return fmt.Errorf("listen for metrics on %s: %w", cfg.Listen.MetricsAddr, err)
		}
		defer metricsLn.Close()
	}
	p, err := build(cfg, lg, metricsLn != nil)
	if err != nil {
		return err
	}
	defer p.endStreams()
	defer p.state.close() // after every actor stopped: draining requests may use it

	// Keep every signal registration until serve returns: after signal.Stop
	// a second SIGTERM would kill the gateway before its child.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, append([]os.Signal{syscall.SIGTERM, syscall.SIGINT}, forwarded...)...)
	defer signal.Stop(sigs)

	var g oklog.Group
	{ // Signals: SIGTERM/SIGINT stop everything; the rest go to the child.
		a := signalActor(ctx, sigs, logger, p.supervisor, lg.stopping)
		g.Add(a.execute, a.interrupt)
	}
	{ // The public listener. Its interrupt drains: it returns once in-flight
		// requests finished or the grace ran out, so the child (next actor)
		// is stopped only after that.
		srv := newHTTPServer(p.handler, cfg.Listen, logger)
		g.Add(func() error {
			logger.Info("listening", "addr", ln.Addr().String(), "resource", cfg.WellKnown.ResourceURL)
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve: %w", err)
			}
			return nil
		}, onceFunc(func() {
			p.endStreams()
			drainCtx, cancel := context.WithTimeout(context.Background(), cfg.Listen.ShutdownGrace)
			defer cancel()
			if err := srv.Shutdown(drainCtx); err != nil {
				logger.Warn("requests still open after the shutdown grace; closing them", "error", err)
				_ = srv.Close()
			}
			// Event streams the gate relays after their handler returned
			// are connections Shutdown no longer sees: endStreams closed
			// them, and each ends at once; wait for their audit lines, but
			// never hold the exit on them: within what is left of the
			// grace, or 1 s, so that the whole shutdown stays within
			// 2 x SHUTDOWN_GRACE (docs/supervisor.md) and 1 s.
			deadline, _ := drainCtx.Deadline()
			if !waitGroupFor(p.detached, max(time.Until(deadline), time.Second)) {
				logger.Warn("event streams still ending after the shutdown grace; their audit lines may be missing")
			}
		}))
	}
	if p.supervisor != nil { // The child.
		supCtx, stop := context.WithCancel(context.Background())
		g.Add(func() error { return p.supervisor.Run(supCtx) }, func(error) { stop() })
	} else if os.Getpid() == 1 { // PID 1 without a child: orphans come to it all the same.
		reapCtx, stop := context.WithCancel(context.Background())
		g.Add(func() error { supervisor.ReapOrphans(reapCtx, logger.Named("supervisor")); return nil }, func(error) { stop() })
	}
	{ // The provider's discovery and keys.
		provCtx, stop := context.WithCancel(context.Background())
		g.Add(func() error { return p.provider.Run(provCtx) }, func(error) { stop() })
	}
	if p.state.redis != nil { // Redis's health probe (the client reconnects by itself).
		probeCtx, stop := context.WithCancel(context.Background())
		g.Add(func() error { return p.state.redis.Run(probeCtx) }, func(error) { stop() })
	}
	if metricsLn != nil { // Metrics, last to stop, so a drain can be watched.
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", p.metrics.Handler()) // the only route
		a := serverActor(newHTTPServer(mux, cfg.Listen, logger), metricsLn, func() {
			logger.Info("metrics listening", "addr", metricsLn.Addr().String())
		})
		g.Add(a.execute, a.interrupt)
	}
	for _, a := range extra {
		g.Add(a.execute, a.interrupt)
	}

	err = g.Run()
	var sigErr oklog.SignalError
	end := &stopped{spawned: p.supervisor != nil, dev: cfg.dev}
	switch {
	case errors.As(err, &end.start):
		end.failed = true // said on stderr by exit, with the child's last lines
	case !errors.As(err, &sigErr) && !errors.Is(err, context.Canceled) && err != nil:
		logger.Error("stopping", "error", err)
		end.failed = true
	}
	if p.supervisor != nil {
		end.child = p.supervisor.ExitCode()
	}
	status := exitStatus(end)
	logger.Info("stopped", "status", status)
	if status != 0 {
		return end
	}
	return nil
}

// parts are the gateway's components, built from the configuration.
type parts struct {
	provider   *provider.Provider
	supervisor *supervisor.Supervisor // nil: the MCP server is not the gateway's to run
	metrics    *metrics.Metrics       // nil: no metrics listener
	state      *state                 // limits, one-time values, revocations
	handler    http.Handler           // the public listener's: the gate
	endStreams context.CancelFunc     // ends open event streams when shutdown begins
	detached   *sync.WaitGroup        // the streams the gate relays after their handler returned
}

// sessionKey is the key the gate seals MCP session IDs with
// (gate/session.go): derived from BROKER_SECRET in broker mode, so replicas
// with one secret seal alike; nil otherwise (a random key of this process).
func sessionKey(cfg *Config) []byte {
	if !cfg.BrokerMode() || cfg.Broker.Secret == nil {
		return nil
	}
	// hkdf.Key fails only for a length over 255 hashes.
	key, _ := hkdf.Key(sha256.New, cfg.Broker.Secret, []byte("mcp-oauth-proxy gate"), "mcp session ids", 32)
	return key
}

// build makes the parts; it starts nothing. cfg was validated, so an error
// here is a programmer error or the machine's (no /bin/sh).
func build(cfg *Config, lg logs, withMetrics bool) (*parts, error) {
	logger := lg.root
	p := &parts{}
	var gateMetrics gate.Metrics // stays a nil interface without metrics
	pc, wc, gc := cfg.Provider, cfg.WellKnown, cfg.Gate
	gc.SessionKey = sessionKey(cfg)
	if withMetrics {
		p.metrics = metrics.New()
		gateMetrics, pc.OnFetch = p.metrics, p.metrics.Fetch
	}
	pc.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	pc.Logger = logger.Named("provider")
	var fb fallback // broker mode: what becomes of tokens that are not the broker's
	if cfg.BrokerMode() {
		fb = providerFallback(cfg)
		pc.Audiences = fb.audiences
	}
	// What the provider's metadata, once known, says about the settings:
	// facade mode's RFC 9207 warning, broker mode's groups scope.
	watch := newAdvice(cfg, logger)
	if watch != nil {
		onFetch := pc.OnFetch
		pc.OnFetch = func(kind, result string) {
			if onFetch != nil {
				onFetch(kind, result)
			}
			watch.fetched()
		}
	}
	p.provider = provider.New(pc)

	// What is remembered across requests (in memory, or in the Redis of
	// STORE_URL): the budgets per subject (with the revocation check, one
	// admission), per client for failed authentications and for
	// registrations, and one-time values and revocations.
	st, err := newState(cfg, logger, p.metrics)
	if err != nil {
		return nil, err
	}
	p.state = st
	gc.SubjectLimiter, gc.FailedAuthLimiter = st.subjects, st.failures

	// Every scope the policy asks for is one a client may request (RFC
	// 9728 §2 scopes_supported); the 401 challenge keeps SCOPES_SUPPORTED
	// only, so a first login asks for no more than that (step-up later).
	wc.Scopes = appendMissing(wc.Scopes, cfg.Gate.Policy.Scopes())
	wc.Metadata = p.provider
	wc.RegisterLimiter = st.register
	wc.ClientKey = gate.ClientKey(cfg.Gate.TrustedProxies)
	wc.Logger = logger.Named("wellknown")
	wk, err := wellknown.New(wc)
	if err != nil {
		st.close()
		return nil, err
	}

	ready := readyChecks(p.provider, lg, st, watch)
	if cfg.Spawned() {
		sc := cfg.Supervisor
		sc.Env = childEnvironment(os.Environ())
		sc.Logger, sc.ChildLogger = logger.Named("supervisor"), logger.Named("child")
		if p.supervisor, err = supervisor.New(sc); err != nil {
			st.close()
			return nil, err
		}
		gc.Upstream, gc.UpstreamRestarts = p.supervisor, true
		ready = append(ready, healthz.Check{Name: "child", Part: p.supervisor})
		if p.metrics != nil {
			p.metrics.WatchChild(p.supervisor)
		}
	} else {
		gc.Upstream = gate.Static(cfg.Upstream)
	}

	// Streams never finish on their own: they end when shutdown begins, so
	// the drain waits only for requests that do.
	streams, endStreams := context.WithCancel(context.Background())
	gc.Verifier = p.provider
	var b *broker.Broker // broker mode's authorization server; nil in the other modes
	if cfg.BrokerMode() {
		allow := gate.NewAllowList(gc.AllowSubs, gc.AllowEmails, gc.AllowGroups)
		if b, err = newBroker(cfg, st, wk, p.provider, allow, logger); err != nil {
			endStreams()
			st.close()
			return nil, err
		}
		gc.Verifier = b.WithFallback(nil)
		if fb.accept {
			gc.Verifier = b.WithFallback(p.provider)
		}
		if fb.warn {
			logger.Warn("broker mode: " + fb.why)
		} else {
			logger.Info("broker mode: "+fb.why, "issuer", b.Issuer())
		}
	}
	gc.Public = publicRoutes(wk, ready, b)
	gc.ResourceMetadataURL = wk.ResourceMetadataURL()
	gc.Shutdown = streams
	p.detached = new(sync.WaitGroup)
	gc.Detached = p.detached
	gc.Logger, gc.AuditOutput = logger.Named("gate"), lg.audit
	gc.Metrics = gateMetrics
	if p.handler, err = gate.New(gc); err != nil {
		endStreams()
		st.close()
		return nil, err
	}
	p.endStreams = endStreams
	return p, nil
}

// readyChecks are /readyz's checks of everything but the child: the
// provider's keys, the log output, the shared store and, when the provider's
// metadata bears on the mode, that advice (watch, which learns the metadata
// from md here).
func readyChecks(md *provider.Provider, lg logs, st *state, watch *advice) []healthz.Check {
	ready := []healthz.Check{{Name: "provider", Part: md}}
	if lg.batch != nil { // an output that takes nothing holds every request
		ready = append(ready, healthz.Check{Name: "log", Part: lg.batch})
	}
	if st.redis != nil { // named in /readyz, never making it 503
		ready = append(ready, healthz.Check{Name: "store", Part: st.redis})
	}
	if watch != nil {
		watch.md = md
		if watch.iss {
			ready = append(ready, healthz.Check{Name: "auth_server_mode", Part: watch})
		}
	}
	return ready
}

// newHTTPServer is the HTTP server of both listeners: bounded headers
// (431 past 32 KiB), slow clients cut after READ_HEADER_TIMEOUT, idle
// keep-alive connections closed after 2 minutes, no timeout on a response
// (streams stay open), and its errors logged (serverLog).
func newHTTPServer(h http.Handler, lc ListenConfig, logger hclog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lc.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          log.New(serverLog{logger.Named("http")}, "", 0),
	}
}

// serverLog is net/http's error log. Nearly all of it is what clients
// cause (malformed requests, connections cut, TLS handshakes), so it goes
// at debug, where a client cannot fill the log. A handler's panic is the
// gateway's own fault: net/http recovers it and closes the connection, and
// it goes at error, with its stack, so that it is seen.
type serverLog struct{ l hclog.Logger }

func (s serverLog) Write(p []byte) (int, error) {
	msg := strings.TrimSuffix(string(p), "\n")
	if strings.HasPrefix(msg, "http: panic serving ") {
		s.l.Error("a request handler panicked; its connection was closed", "panic", msg)
	} else {
		s.l.Debug(msg)
	}
	return len(p), nil
}

// waitGroupFor waits for wg at most d, and says whether it was done.
func waitGroupFor(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// actor is one oklog/run actor.
type actor struct {
	execute   func() error
	interrupt func(error)
}

// forwarded are the signals the gateway passes to its child's process
// group (with no child it takes them and does nothing). Beyond those a
// process manager sends (HUP, USR1, USR2, QUIT, WINCH, ALRM, PWR) they
// include ABRT, TRAP, SYS and STKFLT: were they not taken, Go's runtime
// would end the gateway on them at once with a stack dump and status 2, the
// status of a configuration error, leaving the child behind; and any
// process of the namespace, the child included, may send them to PID 1.
var forwarded = []os.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT,
	syscall.SIGWINCH, syscall.SIGALRM, syscall.SIGPWR, syscall.SIGABRT, syscall.SIGTRAP,
	syscall.SIGSYS, syscall.SIGSTKFLT}

// signalActor ends the group on SIGTERM or SIGINT and forwards the other
// signals to the child (sup nil: there is none). stopping is called first
// whenever the group ends, before anything is logged.
func signalActor(ctx context.Context, sigs <-chan os.Signal, logger hclog.Logger, sup *supervisor.Supervisor, stopping func()) actor {
	done := make(chan struct{})
	return actor{func() error {
		for {
			select {
			case <-done:
				return nil
			case <-ctx.Done():
				stopping()
				return ctx.Err()
			case s := <-sigs:
				if s == syscall.SIGTERM || s == syscall.SIGINT {
					stopping()
					logger.Info("shutting down", "signal", s.String())
					return oklog.SignalError{Signal: s}
				}
				if sup != nil {
					logger.Debug("forwarding signal to the child", "signal", s.String())
					sup.Signal(s)
				}
			}
		}
	}, onceFunc(func() { stopping(); close(done) })}
}

// serverActor serves ln with srv until interrupted, which closes both.
// started, if not nil, runs first.
func serverActor(srv *http.Server, ln net.Listener, started func()) actor {
	return actor{func() error {
		if started != nil {
			started()
		}
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
		}
		return nil
	}, onceFunc(func() { _ = srv.Close() })}
}

// onceFunc makes an idempotent interrupt.
func onceFunc(f func()) func(error) {
	o := sync.OnceFunc(f)
	return func(error) { o() }
}

// appendMissing returns list with each of more it lacks appended.
func appendMissing(list, more []string) []string {
	out := slices.Clone(list)
	for _, s := range more {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
