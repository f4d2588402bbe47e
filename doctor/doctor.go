// Package doctor tells an operator why an MCP client will not connect to an
// MCP server. Given only the server's URL, it walks the steps a client of the
// MCP 2026-07-28 authorization specification takes before its first tool
// call (the unauthenticated request and its challenge, RFC 9728 protected-
// resource metadata, RFC 8414 / OpenID authorization-server metadata, client
// registration, the RFC 9207 iss check) and reports one Check per rule, each
// warning or failure with a one-sentence fix. With Login set it also runs the
// real authorization-code flow with a client of its own and calls tools/list
// with the token it got.
//
// It works against any MCP server: it never imports the gateway's packages
// nor reads its configuration. It does not verify token signatures (it
// decodes a JWT's claims to compare them, and says so), never prints a token
// unless asked, and never opens a browser unless the caller supplies the hook
// that does.
package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Status is the outcome of one check.
type Status string

// The outcomes, worst last.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Check is one rule and what the server did about it.
type Check struct {
	// ID names the rule, stable across versions ("challenge", "as.issuer").
	ID string `json:"id"`
	// Status is OK, Warn or Fail.
	Status Status `json:"status"`
	// Message says what was found, in one sentence.
	Message string `json:"message"`
	// Fix says what to change, in one sentence; empty when Status is OK.
	Fix string `json:"fix,omitempty"`
}

// Report is the outcome of a Run.
type Report struct {
	URL    string  `json:"url"`
	Checks []Check `json:"checks"`
	// Failed is true when any check failed.
	Failed bool `json:"failed"`
	// Token is the access token obtained by Login, only with Login.ShowToken.
	Token string `json:"access_token,omitempty"`
}

// Config configures a Run. Only URL is required.
type Config struct {
	// URL is the MCP endpoint exactly as a user would paste it into a
	// client: an absolute http or https URL.
	URL string

	// Transport makes every request. Nil means a new http.Transport with
	// the system's trusted roots and the environment's proxy settings.
	// Redirects are handled by the checks themselves, never by the client.
	Transport http.RoundTripper

	// RequestTimeout bounds each request, body included. 0 means 10 s. The
	// whole run is bounded by ctx (Run adds 2 minutes, plus Login.Wait, when
	// ctx has no deadline).
	RequestTimeout time.Duration

	// Origin is the Origin sent by the CORS probe, the way a browser-based
	// client would. Empty means "http://localhost:6274", MCP Inspector's.
	Origin string

	// Register runs a dynamic client registration dry run: it CREATES a
	// client at the authorization server.
	Register bool

	// Login, when non-nil, runs the authorization-code flow after the
	// discovery checks.
	Login *Login

	// OnCheck, when non-nil, is called with each check as it is made (so a
	// terminal can show progress while a login waits). It must not block.
	OnCheck func(Check)

	// Now is the clock for certificate and token lifetimes. Nil means time.Now.
	Now func() time.Time
}

// Login configures the authorization-code flow of Config.Login.
type Login struct {
	// ClientID and ClientSecret name a client registered in advance. Empty
	// ClientID means register one by RFC 7591 dynamic registration, which
	// needs the server to offer it. Empty ClientSecret means a public client.
	ClientID     string
	ClientSecret string

	// RedirectPort is the loopback callback listener's port (redirect URI
	// http://127.0.0.1:PORT/callback). 0 means any free port, which a
	// client registered in advance accepts only if its authorization server
	// allows any loopback port (RFC 8252 §7.3).
	RedirectPort int

	// Scope is the scope to ask for. Empty means the challenge's scope, else
	// the protected-resource metadata's scopes_supported, as clients do.
	Scope string

	// Prompt receives the authorization URL and what to do with it. Nil
	// means io.Discard, which leaves nobody able to log in unless
	// OpenBrowser is set.
	Prompt io.Writer

	// OpenBrowser, when non-nil, is asked to open the authorization URL. Its
	// error is reported and the flow keeps waiting for the callback. Nil
	// means the URL is only printed. Tests and CI MUST leave it nil.
	OpenBrowser func(ctx context.Context, url string) error

	// Wait bounds the wait for the browser's callback. 0 means 5 minutes.
	Wait time.Duration

	// ShowToken puts the access token in the report. Otherwise it is never
	// printed.
	ShowToken bool
}

// ErrUsage marks an error in the Config, such as a URL that is not an
// absolute http or https URL.
var ErrUsage = errors.New("usage")

const (
	defaultRequestTimeout = 10 * time.Second
	defaultDeadline       = 2 * time.Minute
	defaultLoginWait      = 5 * time.Minute
	defaultOrigin         = "http://localhost:6274"
	maxBody               = 1 << 20 // bound on every response body read
	userAgent             = "mcp-oauth-proxy-doctor"
)

// Run walks the checks against cfg.URL and returns the report. Its error is
// non-nil only for an unusable Config (wrapping ErrUsage); whatever the
// server does ends up in the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	u, err := parseTarget(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = defaultRequestTimeout
	}
	if cfg.Origin == "" {
		cfg.Origin = defaultOrigin
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		defer t.CloseIdleConnections()
		cfg.Transport = t
	}
	if l := cfg.Login; l != nil {
		login := *l
		if login.Wait <= 0 {
			login.Wait = defaultLoginWait
		}
		if login.Prompt == nil {
			login.Prompt = io.Discard
		}
		if login.ClientSecret != "" && login.ClientID == "" {
			return nil, fmt.Errorf("%w: a client secret needs its client id", ErrUsage)
		}
		if login.RedirectPort < 0 || login.RedirectPort > 65535 {
			return nil, fmt.Errorf("%w: redirect port %d is not a port", ErrUsage, login.RedirectPort)
		}
		cfg.Login = &login
	}
	if _, ok := ctx.Deadline(); !ok {
		d := defaultDeadline
		if cfg.Login != nil {
			d += cfg.Login.Wait
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	c := &checker{
		cfg:    cfg,
		target: u,
		client: &http.Client{
			Transport:     cfg.Transport,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		report: &Report{URL: u.String()},
	}
	c.walk(ctx)
	return c.report, nil
}

// parseTarget checks the URL's shape; anything wrong is a usage error.
func parseTarget(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: parse url: %v", ErrUsage, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%w: url %q: want an absolute http or https URL, such as https://mcp.example.com/mcp", ErrUsage, raw)
	case u.Host == "":
		return nil, fmt.Errorf("%w: url %q has no host", ErrUsage, raw)
	case u.User != nil:
		return nil, fmt.Errorf("%w: url %q: user info is not allowed", ErrUsage, raw)
	case u.Fragment != "":
		return nil, fmt.Errorf("%w: url %q: a fragment is not allowed (RFC 8707 §2)", ErrUsage, raw)
	}
	return u, nil
}

// checker carries what one run has learnt so far.
type checker struct {
	cfg    Config
	target *url.URL
	client *http.Client
	report *Report

	challenge *challengeInfo     // nil until a Bearer challenge was read
	prm       *protectedResource // nil until found
	as        *authServer        // nil until found
}

// add records a check and tells the caller.
func (c *checker) add(id string, st Status, msg, fix string) {
	ch := Check{ID: id, Status: st, Message: msg}
	if st != OK {
		ch.Fix = fix
	}
	c.report.Checks = append(c.report.Checks, ch)
	if st == Fail {
		c.report.Failed = true
	}
	if c.cfg.OnCheck != nil {
		c.cfg.OnCheck(ch)
	}
}

func (c *checker) ok(id, msg string)        { c.add(id, OK, msg, "") }
func (c *checker) warn(id, msg, fix string) { c.add(id, Warn, msg, fix) }
func (c *checker) fail(id, msg, fix string) { c.add(id, Fail, msg, fix) }

// walk runs the checks in a client's order. A step whose input is missing
// (no metadata, so no issuer) is not run: the failure before it says why.
func (c *checker) walk(ctx context.Context) {
	if !c.checkTransport(ctx) {
		return
	}
	c.checkCORS(ctx)
	c.checkProtectedResource(ctx)
	if !c.checkAuthorizationServer(ctx) {
		return
	}
	if c.cfg.Register {
		c.checkRegister(ctx)
	}
	if c.cfg.Login != nil {
		c.login(ctx)
	}
}

// WriteText writes the report as one line per check, each warning and
// failure followed by its fix, then WriteSummary's lines.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	for _, ch := range r.Checks {
		writeCheckText(&b, ch)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	return r.WriteSummary(w)
}

// WriteSummary writes the access token (only when Login.ShowToken put it in
// the report) and the count of each status.
func (r *Report) WriteSummary(w io.Writer) error {
	var b strings.Builder
	var n [3]int
	for _, ch := range r.Checks {
		switch ch.Status {
		case OK:
			n[0]++
		case Warn:
			n[1]++
		case Fail:
			n[2]++
		}
	}
	if r.Token != "" {
		fmt.Fprintf(&b, "\naccess token (shown because of --show-token; treat it as a password):\n%s\n", r.Token)
	}
	fmt.Fprintf(&b, "\n%d ok, %d warn, %d FAIL\n", n[0], n[1], n[2])
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteCheckText writes one check as WriteText does.
func WriteCheckText(w io.Writer, ch Check) error {
	var b strings.Builder
	writeCheckText(&b, ch)
	_, err := io.WriteString(w, b.String())
	return err
}

func writeCheckText(b *strings.Builder, ch Check) {
	label := map[Status]string{OK: "ok", Warn: "warn", Fail: "FAIL"}[ch.Status]
	fmt.Fprintf(b, "%-4s  %-25s %s\n", label, ch.ID, ch.Message)
	if ch.Fix != "" {
		fmt.Fprintf(b, "      %-25s fix: %s\n", "", ch.Fix)
	}
}

// WriteJSON writes the report as one JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// isLoopback reports whether host (no port) is a loopback name or address.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// origin is scheme://host[:port] of u.
func origin(u *url.URL) string { return u.Scheme + "://" + u.Host }
