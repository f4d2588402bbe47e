package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/demo"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/devissuer"
)

// Dev mode's demo identity: the token printed at start-up is for it, and it
// is added to ALLOW_SUBS.
const (
	devSubject = "demo-user"
	devEmail   = "demo@example.com"
	devTTL     = 12 * time.Hour
)

// runDev runs the gateway against an embedded development issuer and, when
// no upstream or spawn command is given, a built-in demo MCP server. It binds
// loopback only.
func runDev(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	issuer, err := devissuer.New()
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	issuerLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("listen for the development issuer: %w", err)}
	}
	issuer.URL = "http://" + issuerLn.Addr().String()

	// The values dev mode supplies; the user's own environment and flags
	// still win for everything else (and for these, except the issuer).
	overlay := map[string]string{
		"OIDC_ISSUER_URL":    issuer.URL,
		"LISTEN_HOST":        "127.0.0.1",
		"ALLOW_SUBS":         devSubject,
		"CORS_ALLOW_ORIGINS": "https://claude.ai,https://claude.com,http://localhost:6274,http://127.0.0.1:6274",
		"RESOURCE_URL":       "http://127.0.0.1/mcp", // replaced once the port is known
		"OIDC_AUDIENCE":      "dev",                  // likewise
	}
	env := func(k string) string {
		if k == "OIDC_ISSUER_URL" {
			return overlay[k]
		}
		if v := getenv(k); v != "" {
			if k == "ALLOW_SUBS" {
				return v + "," + devSubject
			}
			return v
		}
		return overlay[k]
	}

	var demoLn net.Listener
	var extra []actor
	// The demo server stands in only when the developer names no server of
	// their own: no upstream URL, no spawn command, no command after --.
	ownServer := slices.Contains(args, "--")
	probe, err := parseConfig(args, withDemoUpstream(env, "http://127.0.0.1:1", ownServer), stderr)
	if errors.Is(err, errHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if !isLoopbackHost(probe.ListenHost) {
		return &exitError{code: 2, err: fmt.Errorf("dev mode binds loopback only; LISTEN_HOST %q is not a loopback address", probe.ListenHost)}
	}
	if probe.UpstreamURL != nil && probe.UpstreamURL.Host == "127.0.0.1:1" {
		demoLn, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return &exitError{code: 1, err: fmt.Errorf("listen for the demo server: %w", err)}
		}
		env = withDemoUpstream(env, "http://"+demoLn.Addr().String(), false)
		demoSrv := &http.Server{Handler: demo.Handler(), ReadHeaderTimeout: 10 * time.Second}
		extra = append(extra, actor{
			execute:   func() error { return ignoreClosed(demoSrv.Serve(demoLn)) },
			interrupt: func(error) { _ = demoSrv.Close() },
		})
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(probe.ListenHost, strconv.Itoa(probe.Port)))
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("listen on port %d (set PORT to choose another): %w", probe.Port, err)}
	}
	base := "http://" + ln.Addr().String()
	resource := base + "/mcp"
	if v := getenv("RESOURCE_URL"); v != "" {
		resource = v
	}
	audience := resource
	if v := getenv("OIDC_AUDIENCE"); v != "" {
		audience = v
	}
	final := func(k string) string {
		switch k {
		case "RESOURCE_URL":
			return resource
		case "OIDC_AUDIENCE":
			return audience
		}
		return env(k)
	}
	cfg, err := parseConfig(args, final, stderr)
	if err != nil {
		_ = ln.Close()
		return err
	}
	// The listener is open already, so the port in cfg is the real one.
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok {
		cfg.Port = tcp.Port
	}
	token, err := issuer.AccessToken(devSubject, cfg.Audiences[0], devTTL, map[string]any{
		"email": devEmail, "email_verified": true, "scope": "openid profile email",
	})
	if err != nil {
		return &exitError{code: 1, err: err}
	}

	issuerSrv := &http.Server{Handler: issuer, ReadHeaderTimeout: 10 * time.Second}
	extra = append(extra, actor{
		execute:   func() error { return ignoreClosed(issuerSrv.Serve(issuerLn)) },
		interrupt: func(error) { _ = issuerSrv.Close() },
	})

	mcpURL := cfg.ResourceURLRaw
	fmt.Fprintf(stdout, `
  mcp-oauth-proxy dev: DEVELOPMENT ISSUER, NOT FOR PRODUCTION.
  Its keys are made fresh at each start and it signs whatever it is asked to.

  MCP URL:  %s
  Token for %s (%s), valid %s:

  %s

  List the tools:

  curl -s %s \
    -H 'Authorization: Bearer %s' \
    -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
    -d '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'

  MCP Inspector: npx @modelcontextprotocol/inspector, then choose
  "Streamable HTTP", URL %s, and under Authentication put the token above
  as a Bearer token.

`, mcpURL, devSubject, devEmail, devTTL, token, mcpURL, token, mcpURL)

	return serve(ctx, cfg, newLogger(cfg, stderr), ln, extra)
}

// withDemoUpstream makes env answer MCP_UPSTREAM_URL with u when the user
// named no server of their own.
func withDemoUpstream(env func(string) string, u string, ownServer bool) func(string) string {
	if ownServer || env("MCP_UPSTREAM_URL") != "" || env("MCP_SPAWN_CMD") != "" {
		return env
	}
	return func(k string) string {
		if k == "MCP_UPSTREAM_URL" {
			return u
		}
		return env(k)
	}
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// runHealthcheck probes a running gateway's /healthz on its configured
// PORT (and LISTEN_HOST) and exits 0 when it answers 200, 1 otherwise; for
// a container HEALTHCHECK in an image without a shell or curl.
func runHealthcheck(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	port := getenv("PORT")
	if port == "" {
		port = "8080"
	}
	host := getenv("LISTEN_HOST")
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	if len(args) > 0 {
		return &exitError{code: 2, err: fmt.Errorf("healthcheck takes no arguments (it reads PORT and LISTEN_HOST)")}
	}
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(host, port), Path: "/healthz"}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("healthcheck: %w", err)}
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("healthcheck: %w", err)}
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &exitError{code: 1, err: fmt.Errorf("healthcheck: %s answered %s", u.String(), resp.Status)}
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}

// printVersion prints the version, commit and Go version from the build
// information the Go toolchain stamps into every binary.
func printVersion(w io.Writer) {
	version, commit, modified := "(devel)", "unknown", false
	goVersion := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if modified {
		commit += " (modified)"
	}
	fmt.Fprintf(w, "mcp-oauth-proxy %s\ncommit %s\n%s\n", version, commit, goVersion)
}
