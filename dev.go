package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
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
// no upstream or spawn command is given, a built-in demo MCP server. It
// binds loopback only. The developer's own settings are read as usual;
// dev mode supplies the issuer, adds its subject to the allow-list, and
// makes the resource (and the audience) the gateway's own loopback URL
// unless they are set.
func runDev(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := configure(args, devEnv(getenv), true)
	if errors.Is(err, errHelp) {
		printUsage(stdout)
		return nil
	}
	if err != nil {
		return err
	}
	issuer, err := devissuer.New()
	if err != nil {
		return err
	}
	issuerLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for the development issuer: %w", err)
	}
	defer issuerLn.Close()
	issuer.URL = "http://" + issuerLn.Addr().String()
	cfg.Provider.IssuerURL, cfg.WellKnown.IssuerURL = issuer.URL, issuer.URL
	cfg.Gate.AllowSubs = append(cfg.Gate.AllowSubs, devSubject)
	// A developer's server that exits before it ever listened stops dev
	// mode with its status and last lines, rather than restarting forever.
	cfg.Supervisor.FailFast = true
	extra := []actor{serverActor(&http.Server{Handler: issuer, ReadHeaderTimeout: 10 * time.Second}, issuerLn, nil)}

	// The demo server stands in only when the developer names no server of
	// their own: no upstream URL, no spawn command, no command after --.
	if cfg.Upstream == nil && !cfg.Spawned() {
		demoLn, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("listen for the demo server: %w", err)
		}
		defer demoLn.Close()
		cfg.Upstream = &url.URL{Scheme: "http", Host: demoLn.Addr().String()}
		extra = append(extra, serverActor(&http.Server{Handler: demo.Handler(), ReadHeaderTimeout: 10 * time.Second}, demoLn, nil))
	}

	ln, err := listen(cfg)
	if err != nil {
		return err
	}
	defer ln.Close()
	// The listener is open, so the port is the real one.
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok {
		cfg.Listen.Port = tcp.Port
	}
	if cfg.WellKnown.ResourceURL == "" {
		cfg.WellKnown.ResourceURL = "http://" + ln.Addr().String() + "/mcp"
	}
	if len(cfg.Provider.Audiences) == 0 {
		cfg.Provider.Audiences = []string{cfg.WellKnown.ResourceURL}
	}
	token, err := issuer.AccessToken(devSubject, cfg.Provider.Audiences[0], devTTL, map[string]any{
		"email": devEmail, "email_verified": true, "scope": "openid profile email",
	})
	if err != nil {
		return err
	}
	printDevInstructions(stdout, cfg.WellKnown.ResourceURL, token)
	return serve(ctx, cfg, newLogger(cfg.Log, stderr), ln, extra)
}

// devEnv is the environment as dev mode reads it: the developer's, without
// OIDC_ISSUER_URL (dev mode's issuer is the only one), and with loopback
// and MCP Inspector's local origins as defaults.
func devEnv(getenv func(string) string) func(string) string {
	defaults := map[string]string{
		"LISTEN_HOST":        "127.0.0.1",
		"CORS_ALLOW_ORIGINS": "https://claude.ai,https://claude.com,http://localhost:6274,http://127.0.0.1:6274",
	}
	return func(k string) string {
		if k == "OIDC_ISSUER_URL" {
			return ""
		}
		if v := getenv(k); v != "" {
			return v
		}
		return defaults[k]
	}
}

// printDevInstructions tells the developer the MCP URL, the token and how
// to try them.
func printDevInstructions(w io.Writer, mcpURL, token string) {
	fmt.Fprintf(w, `
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
}
