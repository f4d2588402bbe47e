package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/broker"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/demo"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/devissuer"
)

// Dev mode's demo identity: the token printed at start-up is for it, the
// development issuer's login page proposes it, and it is added to
// ALLOW_SUBS. devClientID is the gateway's own client at that issuer in
// broker mode.
const (
	devSubject  = devissuer.DemoSubject
	devEmail    = devissuer.DemoEmail
	devTTL      = 12 * time.Hour
	devTTLText  = "12 hours"
	devClientID = "mcp-oauth-proxy-dev"
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
	if cfg.BrokerMode() {
		// The gateway's own client at the development issuer, whose one
		// redirect URI is the broker's callback. The broker's keys are
		// random (no BROKER_SECRET), which dev mode does not warn about.
		callback, err := brokerCallback(cfg.WellKnown.ResourceURL)
		if err != nil {
			return err
		}
		cfg.Broker.ClientID, cfg.Broker.ClientSecret = devClientID, rand.Text()
		issuer.AddClient(cfg.Broker.ClientID, cfg.Broker.ClientSecret, callback)
	}
	// The ready token is the development issuer's, accepted as a provider
	// token: in broker mode through the gate's fallback, since
	// OIDC_AUDIENCE (the MCP URL unless set) is not the gateway's client id.
	var token string
	if !cfg.BrokerMode() || providerFallback(cfg).accept {
		token, err = issuer.AccessToken(devSubject, cfg.Provider.Audiences[0], devTTL, map[string]any{
			"email": devEmail, "email_verified": true, "scope": strings.Join(cfg.WellKnown.Scopes, " "),
		})
		if err != nil {
			return err
		}
	}
	printDevInstructions(stdout, cfg, token)
	return serve(ctx, cfg, newLogger(cfg.Log, stderr), ln, extra)
}

// brokerCallback is the redirect URI of the gateway's own client at the
// provider: the origin of RESOURCE_URL, then /oauth/callback.
func brokerCallback(resourceURL string) (string, error) {
	u, err := url.Parse(resourceURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("dev mode: RESOURCE_URL %q is not an absolute URL", resourceURL)
	}
	return u.Scheme + "://" + u.Host + broker.CallbackPath, nil
}

// devEnv is the environment as dev mode reads it: the developer's, without
// OIDC_ISSUER_URL (dev mode's issuer is the only one), and with broker
// mode, loopback and MCP Inspector's local origins as defaults.
func devEnv(getenv func(string) string) func(string) string {
	defaults := map[string]string{
		"AUTH_SERVER_MODE":   "broker",
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

// printDevInstructions tells the developer the MCP URL, how OAuth clients
// log in, how to try other identities, and a token with commands that
// work against any Streamable HTTP server: initialize, then tools/list in
// the session the server gave (if any; curl sends no header with an empty
// value).
func printDevInstructions(w io.Writer, cfg *Config, token string) {
	mcpURL := cfg.WellKnown.ResourceURL
	fmt.Fprintf(w, `
  mcp-oauth-proxy dev: DEVELOPMENT ISSUER, NOT FOR PRODUCTION.
  Its keys are made fresh at each start and it logs anyone in as anyone.

  MCP URL:  %s
`, mcpURL)
	if cfg.BrokerMode() {
		fmt.Fprintf(w, `
  OAuth clients log in by themselves (broker mode): they register at the gateway, you
  approve them on its consent page, then choose who to be on the development issuer's
  login page (%s by default: any subject, email and groups will do).

  Who gets in: %s always, and whoever ALLOW_SUBS, ALLOW_EMAILS or ALLOW_GROUPS name.
  To try another identity, start with e.g. ALLOW_GROUPS=admins and log in with the
  group admins; log in without it to see the refusal.

  MCP Inspector (needs Node 22 or newer):
    npx @modelcontextprotocol/inspector
  Transport "Streamable HTTP", URL %s, Connect: the login opens in your browser.
`, devSubject, devSubject, mcpURL)
	}
	if token == "" {
		fmt.Fprint(w, "\n  No ready token: ACCEPT_PROVIDER_TOKENS=false accepts only tokens from an OAuth login.\n\n")
		return
	}
	fmt.Fprintf(w, `
  A ready token for %s (%s), valid %s, from the development issuer (accepted as a
  provider token: its audience is OIDC_AUDIENCE, %s). With it, against any
  Streamable HTTP server: initialize, then list the tools in the session it gives.

TOKEN='%s'
URL='%s'
SID=$(curl -sS -D - -o /dev/null "$URL" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
  -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"1.0"}}}' \
  | tr -d '\r' | sed -n 's/^[Mm][Cc][Pp]-[Ss][Ee][Ss][Ss][Ii][Oo][Nn]-[Ii][Dd]: *//p')
for BODY in '{"jsonrpc":"2.0","method":"notifications/initialized"}' '{"jsonrpc":"2.0","id":2,"method":"tools/list"}'; do
  curl -sS "$URL" -H "Authorization: Bearer $TOKEN" -H "Mcp-Session-Id: $SID" -H 'MCP-Protocol-Version: 2025-06-18' \
    -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' -d "$BODY"; echo
done

  MCP Inspector takes the token too (Authentication, Bearer token).

`, devSubject, devEmail, devTTLText, strings.Join(cfg.Provider.Audiences, ","), token, mcpURL)
}
