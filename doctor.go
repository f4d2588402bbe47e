package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"sync"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/doctor"
)

// doctorUsage is the doctor subcommand's help.
const doctorUsage = `Usage: mcp-oauth-proxy doctor [flags] URL

Walks what an MCP client (2026-07-28 authorization) does against the MCP
endpoint URL, and prints one line per check: ok, warn or FAIL, each warning
and failure with its fix. It needs only the URL and works against any MCP
server. Exit status: 0 when nothing failed, 1 otherwise, 2 for usage errors.

Flags:
`

// runDoctor is `mcp-oauth-proxy doctor`: it parses its flags, runs the
// doctor package against the URL and prints the report.
func runDoctor(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), doctorUsage)
		fs.PrintDefaults()
	}
	asJSON := fs.Bool("json", false, "print the checks as one JSON document")
	register := fs.Bool("register", false, "dry-run dynamic client registration: this CREATES a client at the authorization server")
	login := fs.Bool("login", false, "run the real login in a browser, then initialize and tools/list with the token")
	clientID := fs.String("client-id", getenv("DOCTOR_CLIENT_ID"), "with --login: a pre-registered client instead of dynamic registration [DOCTOR_CLIENT_ID]")
	// The secret's default is not the environment's: the flag package
	// prints defaults in the usage, which --help and every flag mistake show.
	clientSecret := fs.String("client-secret", "", "with --client-id: its secret; prefer the environment variable, flags show in process lists (default: DOCTOR_CLIENT_SECRET)")
	redirectPort := fs.Int("redirect-port", 0, "with --login: port of the loopback callback http://127.0.0.1:PORT/callback (0: any free port)")
	scope := fs.String("scope", "", "with --login: the scope to ask for (default: the challenge's, else scopes_supported)")
	showToken := fs.Bool("show-token", false, "with --login: print the access token (treat it as a password)")
	noBrowser := fs.Bool("no-browser", getenv("DOCTOR_NO_BROWSER") != "", "with --login: only print the authorization URL, never open a browser [DOCTOR_NO_BROWSER]")
	loginWait := fs.Duration("login-wait", 5*time.Minute, "with --login: how long to wait for the browser to come back")
	timeout := fs.Duration("timeout", 0, "bound on the whole run (default 2m, plus --login-wait with --login)")
	requestTimeout := fs.Duration("request-timeout", 10*time.Second, "bound on each request")
	origin := fs.String("origin", "http://localhost:6274", "Origin of the CORS probe (a browser-based client's; default MCP Inspector's)")

	// Flags may come before or after the URL.
	var target string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return &status{code: 2}
		}
		if fs.NArg() == 0 {
			break
		}
		if target != "" {
			return &status{code: 2, err: fmt.Errorf("doctor takes one URL; got %q and %q", target, fs.Arg(0))}
		}
		target, args = fs.Arg(0), fs.Args()[1:]
	}
	if target == "" {
		fs.Usage()
		return &status{code: 2, err: errors.New("doctor needs the MCP endpoint's URL, e.g. mcp-oauth-proxy doctor https://mcp.example.com/mcp")}
	}
	if *clientSecret == "" {
		*clientSecret = getenv("DOCTOR_CLIENT_SECRET")
	}
	if *requestTimeout <= 0 || *loginWait <= 0 || *timeout < 0 {
		return &status{code: 2, err: errors.New("doctor: --request-timeout and --login-wait must be positive, --timeout not negative")}
	}

	cfg := doctor.Config{URL: target, RequestTimeout: *requestTimeout, Origin: *origin, Register: *register}
	if *login {
		cfg.Login = &doctor.Login{
			ClientID:     *clientID,
			ClientSecret: *clientSecret,
			RedirectPort: *redirectPort,
			Scope:        *scope,
			Prompt:       stderr,
			Wait:         *loginWait,
			ShowToken:    *showToken,
		}
		if !*noBrowser && browserAvailable(getenv) {
			cfg.Login.OpenBrowser = openBrowser
		}
	}
	if !*asJSON {
		var header sync.Once
		cfg.OnCheck = func(ch doctor.Check) {
			header.Do(func() { fmt.Fprintf(stdout, "mcp-oauth-proxy doctor %s\n\n", target) })
			_ = doctor.WriteCheckText(stdout, ch)
		}
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	report, err := doctor.Run(ctx, cfg)
	if err != nil {
		return &status{code: 2, err: fmt.Errorf("doctor: %w", err)}
	}
	if *asJSON {
		err = report.WriteJSON(stdout)
	} else {
		err = report.WriteSummary(stdout)
	}
	if err != nil {
		return &status{code: 1, err: fmt.Errorf("doctor: write the report: %w", err)}
	}
	if report.Failed {
		return &status{code: 1}
	}
	return nil
}

// browserAvailable: a desktop session, and not CI.
func browserAvailable(getenv func(string) string) bool {
	if getenv("CI") != "" {
		return false
	}
	switch runtime.GOOS {
	case "darwin", "windows":
		return true
	}
	return getenv("DISPLAY") != "" || getenv("WAYLAND_DISPLAY") != ""
}

// openBrowser asks the desktop to open u. The browser outlives doctor, so
// the launcher is started and released, not waited for.
func openBrowser(_ context.Context, u string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", u)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", u)
	default:
		cmd = exec.Command("xdg-open", u)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("open a browser: %w", err)
	}
	return cmd.Process.Release()
}
