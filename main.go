// Command mcp-oauth-proxy puts an HTTP MCP server on the public internet
// behind OAuth: it admits only bearer JWTs from the operator's own OIDC
// provider, for allow-listed identities, within a rate limit, and (in spawn
// mode) runs the MCP server itself as a supervised child, as a container's
// PID 1.
//
// This file is wiring only: configuration, logger, components, listener,
// and one oklog/run actor per long-lived part.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	oklog "github.com/oklog/run"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/gate"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/healthz"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/metrics"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/supervisor"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/wellknown"
)

func main() {
	err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr)
	os.Exit(exitStatus(err, os.Stderr))
}

// exitError carries the process's exit status out of run.
type exitError struct {
	code int
	err  error // nil: nothing to print
}

func (e *exitError) Error() string {
	if e.err == nil {
		return "exit status " + strconv.Itoa(e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// exitStatus prints err (if it says anything) and maps it to the exit status.
func exitStatus(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(stderr, "mcp-oauth-proxy:", ee.err)
		}
		return ee.code
	}
	var ce *configError
	if errors.As(err, &ce) {
		fmt.Fprintln(stderr, "mcp-oauth-proxy:", err)
		return 2
	}
	fmt.Fprintln(stderr, "mcp-oauth-proxy:", err)
	return 1
}

// run is the whole program; main and the tests call it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 1 {
		switch args[1] {
		case "dev":
			return runDev(ctx, args[2:], getenv, stdout, stderr)
		case "healthcheck":
			return runHealthcheck(ctx, args[2:], getenv, stdout, stderr)
		case "version", "--version", "-version":
			printVersion(stdout)
			return nil
		}
	}
	var rest []string
	if len(args) > 1 {
		rest = args[1:]
	}
	cfg, err := parseConfig(rest, getenv, stderr)
	if errors.Is(err, errHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	logger := newLogger(cfg, stderr)
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.ListenHost, strconv.Itoa(cfg.Port)))
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("listen on port %d (set PORT to choose another): %w", cfg.Port, err)}
	}
	return serve(ctx, cfg, logger, ln, nil)
}

// newLogger builds the root logger: JSON unless asked for text or writing
// to a terminal.
func newLogger(cfg *Config, w io.Writer) hclog.Logger {
	json := cfg.LogFormat == "json"
	if cfg.LogFormat == "" {
		json = true
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				json = false
			}
		}
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       "mcp-oauth-proxy",
		Level:      hclog.LevelFromString(cfg.LogLevel),
		Output:     w,
		JSONFormat: json,
	})
}

// serve runs the gateway on ln until ctx ends, a terminating signal
// arrives, or a part fails. extra adds actors (dev mode's issuer and demo
// server); each is stopped after the gateway and its child.
func serve(ctx context.Context, cfg *Config, logger hclog.Logger, ln net.Listener, extra []actor) error {
	defer ln.Close() // on every path out; a second Close after Serve is harmless
	// Metrics, when METRICS_ADDR is set: a registry of the gateway's own,
	// served on a listener of its own, never on ln.
	var met *metrics.Metrics
	var gateMetrics gate.Metrics // stays a nil interface without metrics
	var onFetch func(kind, result string)
	var metricsLn net.Listener
	if cfg.MetricsAddr != "" {
		var err error
		if metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return &exitError{code: 1, err: fmt.Errorf("listen for metrics on %s: %w", cfg.MetricsAddr, err)}
		}
		defer metricsLn.Close()
		met = metrics.New()
		gateMetrics, onFetch = met, met.Fetch
	}
	auditBytes := 0 // gate.DefaultMCPAuditBytes
	if !cfg.MCPAudit {
		auditBytes = -1
	}

	prov := provider.New(provider.Config{
		IssuerURL:        cfg.IssuerURL,
		Audiences:        cfg.Audiences,
		ClockSkew:        cfg.ClockSkew,
		RefreshCooldown:  cfg.JWKSCooldown,
		GroupsClaim:      cfg.GroupsClaim,
		MaxTokenLifetime: cfg.MaxTokenLife,
		HTTPClient:       &http.Client{Timeout: 10 * time.Second},
		Logger:           logger.Named("provider"),
		OnFetch:          onFetch,
	})

	wk, err := wellknown.New(wellknown.Config{
		ResourceURL:        cfg.ResourceURLRaw,
		Mode:               cfg.AuthServerMode,
		IssuerURL:          cfg.IssuerURL,
		Scopes:             cfg.ScopesSupported,
		StaticClientID:     cfg.StaticClientID,
		StaticClientSecret: cfg.StaticClientSecret,
		RedirectURIs:       cfg.RegisterRedirectURIs,
		ClientIP:           gate.ClientIP(cfg.TrustedProxies),
		Metadata:           prov,
		Logger:             logger.Named("wellknown"),
	})
	if err != nil {
		return &exitError{code: 2, err: err}
	}

	var upstream gate.Upstream
	var sup *supervisor.Supervisor
	checks := []healthz.Check{{Name: "provider", Part: prov}}
	if cfg.Spawned() {
		sup, err = supervisor.New(supervisor.Config{
			Command:        cfg.SpawnCmd,
			Args:           cfg.SpawnArgs,
			Port:           cfg.SpawnPort,
			ReadyPath:      cfg.SpawnReadyPath,
			ReadyTimeout:   cfg.SpawnReadyTimeout,
			Env:            childEnvironment(os.Environ()),
			InitialBackoff: cfg.RestartInitial,
			MaxBackoff:     cfg.RestartMax,
			ResetAfter:     cfg.RestartResetAfter,
			MaxRestarts:    cfg.MaxRestarts,
			RestartWindow:  cfg.RestartWindow,
			StopGrace:      cfg.ShutdownGrace,
			Logger:         logger.Named("supervisor"),
			ChildLogger:    logger.Named("child"),
		})
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		upstream = sup
		if met != nil {
			met.WatchChild(sup)
		}
		checks = append(checks, healthz.Check{Name: "child", Part: sup})
	} else {
		upstream = gate.Static(cfg.UpstreamURL)
	}

	// Every public route, in one place. Anything else needs a token.
	routes := []gate.Route{
		{Method: http.MethodGet, Path: "/healthz", Handler: healthz.Live()},
		{Method: http.MethodGet, Path: "/readyz", Handler: healthz.Ready(checks...)},
	}
	for _, p := range wk.ProtectedResourcePaths() {
		routes = append(routes, gate.Route{Method: http.MethodGet, Path: p, Handler: wk.ProtectedResource()})
	}
	for _, p := range wk.AuthorizationServerPaths() {
		routes = append(routes, gate.Route{Method: http.MethodGet, Path: p, Handler: wk.AuthorizationServer()})
	}
	// /oauth/register is the gateway's own path: without a static client it
	// is 404 for every method, never proxied.
	if p := wk.RegisterPath(); p != "" {
		routes = append(routes, gate.Route{Method: http.MethodPost, Path: p, Handler: wk.Register()})
	} else {
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			routes = append(routes, gate.Route{Method: m, Path: wellknown.RegisterPath, Handler: notFound()})
		}
	}

	// Streams never finish on their own: they end when shutdown begins, so
	// the drain waits only for requests that do.
	streamsCtx, endStreams := context.WithCancel(context.Background())
	defer endStreams()
	handler, err := gate.New(gate.Config{
		Verifier:            prov,
		Upstream:            upstream,
		UpstreamRestarts:    sup != nil,
		UpstreamPath:        cfg.UpstreamPath,
		Public:              routes,
		ResourceMetadataURL: wk.ResourceMetadataURL(),
		ChallengeScopes:     cfg.ScopesSupported,
		RequiredScopes:      cfg.RequiredScopes,
		AllowSubs:           cfg.AllowSubs,
		AllowEmails:         cfg.AllowEmails,
		AllowGroups:         cfg.AllowGroups,
		RateLimitRPM:        cfg.RateLimitRPM,
		CORSOrigins:         cfg.CORSOrigins,
		MaxTokenBytes:       cfg.MaxTokenBytes,
		MaxBodyBytes:        cfg.MaxBodyBytes,
		TrustedProxies:      cfg.TrustedProxies,
		Shutdown:            streamsCtx,
		Logger:              logger.Named("gate"),
		Metrics:             gateMetrics,
		MCPAuditBytes:       auditBytes,
	})
	if err != nil {
		return &exitError{code: 2, err: err}
	}

	srv := newHTTPServer(handler, cfg, logger)

	// Keep every signal registration until run returns: after signal.Stop a
	// second SIGTERM would kill the gateway before its child (pid1-notes).
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1,
		syscall.SIGUSR2, syscall.SIGQUIT, syscall.SIGWINCH)
	defer signal.Stop(sigs)

	var g oklog.Group
	{ // Signals: SIGTERM/SIGINT stop everything; the rest go to the child.
		done := make(chan struct{})
		g.Add(func() error {
			for {
				select {
				case <-done:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				case s := <-sigs:
					if s == syscall.SIGTERM || s == syscall.SIGINT {
						logger.Info("shutting down", "signal", s.String())
						return oklog.SignalError{Signal: s}
					}
					if sup != nil {
						logger.Debug("forwarding signal to the child", "signal", s.String())
						sup.Signal(s)
					}
				}
			}
		}, onceFunc(func() { close(done) }))
	}
	{ // The public listener. Its interrupt drains: it returns once in-flight
		// requests finished or the grace ran out, so the child (next actor)
		// is stopped only after that.
		g.Add(func() error {
			logger.Info("listening", "addr", ln.Addr().String(), "resource", cfg.ResourceURLRaw)
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve: %w", err)
			}
			return nil
		}, onceFunc(func() {
			endStreams()
			drainCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
			defer cancel()
			if err := srv.Shutdown(drainCtx); err != nil {
				logger.Warn("requests still open after the shutdown grace; closing them", "error", err)
				_ = srv.Close()
			}
		}))
	}
	if sup != nil { // The child.
		supCtx, stop := context.WithCancel(context.Background())
		g.Add(func() error { return sup.Run(supCtx) }, func(error) { stop() })
	}
	{ // The provider's discovery and keys.
		provCtx, stop := context.WithCancel(context.Background())
		g.Add(func() error { return prov.Run(provCtx) }, func(error) { stop() })
	}
	if metricsLn != nil { // Metrics, last to stop, so a drain can be watched.
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", met.Handler()) // the only route
		msrv := newHTTPServer(mux, cfg, logger)
		g.Add(func() error {
			logger.Info("metrics listening", "addr", metricsLn.Addr().String())
			if err := msrv.Serve(metricsLn); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve metrics: %w", err)
			}
			return nil
		}, onceFunc(func() { _ = msrv.Close() }))
	}
	for _, a := range extra {
		g.Add(a.execute, a.interrupt)
	}

	err = g.Run()
	var sigErr oklog.SignalError
	switch {
	case errors.As(err, &sigErr), errors.Is(err, context.Canceled), err == nil:
		err = nil
	default:
		logger.Error("stopping", "error", err)
	}
	if sup != nil {
		code := sup.ExitCode()
		if err != nil && code == 0 {
			code = 1
		}
		logger.Info("stopped", "status", code)
		if code != 0 || err != nil {
			return &exitError{code: code}
		}
		return nil
	}
	if err != nil {
		return &exitError{code: 1}
	}
	logger.Info("stopped", "status", 0)
	return nil
}

// newHTTPServer is the HTTP server of both listeners: bounded headers
// (431 past 32 KiB), slow clients cut after READ_HEADER_TIMEOUT, idle
// keep-alive connections closed after 2 minutes, no timeout on a response
// (streams stay open), and its errors logged at debug.
func newHTTPServer(h http.Handler, cfg *Config, logger hclog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          logger.Named("http").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
}

// notFound answers 404 with a JSON body.
func notFound() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"error":"not_found"}`+"\n")
	})
}

// actor is one oklog/run actor.
type actor struct {
	execute   func() error
	interrupt func(error)
}

// onceFunc makes an idempotent interrupt.
func onceFunc(f func()) func(error) {
	o := sync.OnceFunc(f)
	return func(error) { o() }
}
