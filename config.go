package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config is the gateway's whole configuration, read once from flags and the
// environment and validated before any listener opens.
type Config struct {
	// Provider.
	IssuerURL     string
	Audiences     []string
	ClockSkew     time.Duration
	JWKSCooldown  time.Duration
	GroupsClaim   string
	MaxTokenBytes int
	MaxTokenLife  time.Duration // 0: no maximum

	// This gateway.
	ResourceURL       *url.URL
	ResourceURLRaw    string // exactly as configured (RFC 9728 §3.3)
	ListenHost        string
	Port              int
	LogLevel          string
	LogFormat         string
	MetricsAddr       string // "": no metrics listener
	MCPAudit          bool   // name the JSON-RPC method and tool in the audit log
	ShutdownGrace     time.Duration
	ReadHeaderTimeout time.Duration
	AuthServerMode    string // "facade" or "direct"
	ScopesSupported   []string
	RequiredScopes    []string
	CORSOrigins       []string
	MaxBodyBytes      int64
	TrustedProxies    []netip.Prefix

	// Allow-list and limits.
	AllowSubs    []string
	AllowEmails  []string
	AllowGroups  []string
	RateLimitRPM int

	// Static client registration.
	StaticClientID       string
	StaticClientSecret   string
	RegisterRedirectURIs []string

	// Upstream: exactly one of UpstreamURL, SpawnCmd, SpawnArgs.
	UpstreamURL       *url.URL
	UpstreamPath      string
	SpawnCmd          string   // run through /bin/sh -c
	SpawnArgs         []string // the launcher form: everything after --
	SpawnPort         int      // 0: pick a free loopback port for each start
	SpawnReadyPath    string
	SpawnReadyTimeout time.Duration
	RestartInitial    time.Duration
	RestartMax        time.Duration
	RestartResetAfter time.Duration
	MaxRestarts       int // 0: unlimited
	RestartWindow     time.Duration
}

// Spawned reports whether the gateway runs the MCP server as its child.
func (c *Config) Spawned() bool { return c.SpawnCmd != "" || len(c.SpawnArgs) > 0 }

// errHelp is returned by parseConfig when the user asked for --help.
var errHelp = errors.New("help requested")

// configError lists every configuration problem at once; run maps it to
// exit status 2.
type configError struct {
	problems []string
	hint     string // a last line for a newcomer; "" for none
}

func (e *configError) Error() string {
	msg := "invalid configuration:\n  " + strings.Join(e.problems, "\n  ")
	if e.hint != "" {
		msg += "\n" + e.hint
	}
	return msg
}

// setting is one configuration value: its flag, its environment variable,
// its default and its meaning. The table in settings() is the single source
// of truth for --help and the README.
type setting struct {
	flag, env, def, usage string
	val                   *string
}

// settings lists every setting in the order --help prints them.
func settings() []*setting {
	s := func(flag, env, def, usage string) *setting {
		return &setting{flag: flag, env: env, def: def, usage: usage, val: new(string)}
	}
	return []*setting{
		s("oidc-issuer-url", "OIDC_ISSUER_URL", "", "issuer URL of the OIDC provider (https, or http on loopback); required"),
		s("oidc-audience", "OIDC_AUDIENCE", "", "accepted aud values, comma-separated (any one matches); required"),
		s("resource-url", "RESOURCE_URL", "", "this gateway's public URL, the RFC 9728 resource; required"),
		s("allow-subs", "ALLOW_SUBS", "", "allowed token sub values, comma-separated"),
		s("allow-emails", "ALLOW_EMAILS", "", "allowed token email values, comma-separated, case-insensitive"),
		s("allow-groups", "ALLOW_GROUPS", "", "allowed groups claim values, comma-separated"),
		s("groups-claim", "GROUPS_CLAIM", "groups", "name of the token claim holding groups (string or array)"),
		s("mcp-upstream-url", "MCP_UPSTREAM_URL", "", "URL of an existing HTTP MCP server to proxy to"),
		s("mcp-spawn-cmd", "MCP_SPAWN_CMD", "", "command (run with /bin/sh -c) that starts the MCP server as a child"),
		s("mcp-spawn-port", "MCP_SPAWN_PORT", "", "loopback port the child listens on; empty: a free port is chosen and passed as PORT and {port}"),
		s("mcp-upstream-path", "MCP_UPSTREAM_PATH", "", "path prefix on the upstream that requests are forwarded under, e.g. /mcp"),
		s("mcp-spawn-ready-path", "MCP_SPAWN_READY_PATH", "", "HTTP path polled for readiness (any answer counts); empty: a TCP connect"),
		s("mcp-spawn-ready-timeout", "MCP_SPAWN_READY_TIMEOUT", "120s", "how long a starting child may take to answer before it is stopped and retried"),
		s("mcp-spawn-restart-initial", "MCP_SPAWN_RESTART_INITIAL", "500ms", "first delay before restarting a child that exited"),
		s("mcp-spawn-restart-max", "MCP_SPAWN_RESTART_MAX", "30s", "longest delay between restarts"),
		s("mcp-spawn-restart-reset", "MCP_SPAWN_RESTART_RESET", "60s", "time a child must stay ready before the restart delay resets"),
		s("mcp-spawn-max-restarts", "MCP_SPAWN_MAX_RESTARTS", "0", "exit non-zero after this many restarts within the window; 0: unlimited"),
		s("mcp-spawn-restart-window", "MCP_SPAWN_RESTART_WINDOW", "10m", "window for MCP_SPAWN_MAX_RESTARTS"),
		s("listen-host", "LISTEN_HOST", "", "address to listen on; empty: every interface"),
		s("port", "PORT", "8080", "port to listen on"),
		s("log-level", "LOG_LEVEL", "info", "trace, debug, info, warn, error or fatal"),
		s("log-format", "LOG_FORMAT", "", "json or text; empty: json unless stderr is a terminal"),
		s("metrics-addr", "METRICS_ADDR", "", "host:port of a separate listener serving Prometheus metrics at /metrics, e.g. 127.0.0.1:9090; empty: no metrics"),
		s("mcp-audit", "MCP_AUDIT", "true", "true: the audit log names the JSON-RPC method, tool and resource URI of each proxied POST (read from its first 64 KiB)"),
		s("rate-limit-rpm", "RATE_LIMIT_RPM", "60", "requests per minute per token subject (burst of the same size)"),
		s("cors-allow-origins", "CORS_ALLOW_ORIGINS", "https://claude.ai,https://claude.com", "allowed browser origins, comma-separated; * allows any"),
		s("static-client-id", "STATIC_CLIENT_ID", "", "pre-created client id handed out by POST /oauth/register"),
		s("static-client-secret", "STATIC_CLIENT_SECRET", "", "its secret; set both or neither"),
		s("register-redirect-uris", "REGISTER_REDIRECT_URIS", "", "redirect URIs /oauth/register accepts, comma-separated (http://127.0.0.1:* patterns allowed); empty: https, http on loopback hosts, and private-use schemes with a dot (com.example.app:/cb)"),
		s("scopes-supported", "SCOPES_SUPPORTED", "openid,profile,email,offline_access", "scopes advertised in the discovery documents"),
		s("required-scopes", "REQUIRED_SCOPES", "", "scopes every token must carry (403 insufficient_scope otherwise)"),
		s("auth-server-mode", "AUTH_SERVER_MODE", "facade", "facade: the gateway advertises itself as the authorization server; direct: the provider's issuer"),
		s("clock-skew", "CLOCK_SKEW", "30s", "tolerance for exp, nbf and iat"),
		s("jwks-refresh-cooldown", "JWKS_REFRESH_COOLDOWN", "30s", "least time between JWKS fetches caused by unknown key ids"),
		s("max-token-bytes", "MAX_TOKEN_BYTES", "16384", "largest bearer token accepted, in bytes"),
		s("max-token-lifetime", "MAX_TOKEN_LIFETIME", "0", "reject tokens whose exp is further than this from now; 0: no limit"),
		s("max-body-bytes", "MAX_BODY_BYTES", "10485760", "largest request body forwarded, in bytes (413 beyond)"),
		s("trusted-proxies", "TRUSTED_PROXIES", "", "CIDRs whose X-Forwarded-For is believed for the client IP, comma-separated"),
		s("shutdown-grace", "SHUTDOWN_GRACE", "10s", "time for in-flight requests, then for the child, to finish on shutdown"),
		s("read-header-timeout", "READ_HEADER_TIMEOUT", "10s", "time a client has to send its request headers (slow clients are cut)"),
	}
}

// parseConfig reads flags (which win) and the environment into a Config,
// reporting every problem at once.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*Config, error) {
	all := settings()
	fs := flag.NewFlagSet("mcp-oauth-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { printUsage(stderr, all) }
	for _, s := range all {
		v := getenv(s.env)
		if v == "" {
			v = s.def
		}
		fs.StringVar(s.val, s.flag, v, s.usage)
	}
	// The launcher form: everything after "--" is the child's argv.
	var spawnArgs []string
	for i, a := range args {
		if a == "--" {
			spawnArgs = append([]string{}, args[i+1:]...)
			args = args[:i]
			break
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, errHelp
		}
		return nil, &configError{problems: []string{err.Error()}}
	}
	if fs.NArg() > 0 {
		return nil, &configError{problems: []string{fmt.Sprintf("unexpected argument %q (put the child's command after --)", fs.Arg(0))}}
	}
	get := func(env string) string {
		for _, s := range all {
			if s.env == env {
				return strings.TrimSpace(*s.val)
			}
		}
		panic("unknown setting " + env) // a programming error, never input
	}

	var p problems
	c := &Config{SpawnArgs: spawnArgs}

	c.IssuerURL = get("OIDC_ISSUER_URL")
	if c.IssuerURL == "" {
		p.add("OIDC_ISSUER_URL is required (the issuer URL of your OIDC provider)")
	} else if u, err := url.Parse(c.IssuerURL); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		p.addf("OIDC_ISSUER_URL %q is not an absolute http(s) URL", c.IssuerURL)
	} else if u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
		p.addf("OIDC_ISSUER_URL %q must use https (http is allowed only for loopback addresses)", c.IssuerURL)
	} else if u.RawQuery != "" || u.Fragment != "" {
		p.addf("OIDC_ISSUER_URL %q must not have a query or fragment", c.IssuerURL)
	}
	c.Audiences = splitList(get("OIDC_AUDIENCE"))
	if len(c.Audiences) == 0 {
		p.add("OIDC_AUDIENCE is required (the aud value your provider puts in access tokens; several may be given, comma-separated)")
	}

	c.ResourceURLRaw = get("RESOURCE_URL")
	if c.ResourceURLRaw == "" {
		p.add("RESOURCE_URL is required (this gateway's public URL, e.g. https://mcp.example.com)")
	} else if u, err := url.Parse(c.ResourceURLRaw); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		p.addf("RESOURCE_URL %q is not an absolute http(s) URL", c.ResourceURLRaw)
	} else if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(c.ResourceURLRaw, "#") {
		p.addf("RESOURCE_URL %q must not have a query or fragment (RFC 9728 §1.2)", c.ResourceURLRaw)
	} else if u.User != nil {
		p.addf("RESOURCE_URL %q must not contain user information", c.ResourceURLRaw)
	} else if u.RawPath != "" || strings.Contains(u.Path, "//") || strings.Contains(u.Path+"/", "/./") || strings.Contains(u.Path+"/", "/../") {
		p.addf("RESOURCE_URL %q must have a clean path", c.ResourceURLRaw)
	} else {
		c.ResourceURL = u
	}

	c.AllowSubs = splitList(get("ALLOW_SUBS"))
	c.AllowEmails = splitList(get("ALLOW_EMAILS"))
	for i, e := range c.AllowEmails {
		c.AllowEmails[i] = strings.ToLower(e)
	}
	c.AllowGroups = splitList(get("ALLOW_GROUPS"))
	if len(c.AllowSubs)+len(c.AllowEmails)+len(c.AllowGroups) == 0 {
		p.add("at least one of ALLOW_SUBS, ALLOW_EMAILS or ALLOW_GROUPS is required (nobody would be admitted)")
	}
	c.GroupsClaim = get("GROUPS_CLAIM")
	if c.GroupsClaim == "" {
		p.add("GROUPS_CLAIM must not be empty")
	}

	// Upstream: exactly one source.
	upstream := get("MCP_UPSTREAM_URL")
	c.SpawnCmd = get("MCP_SPAWN_CMD")
	sources := 0
	for _, set := range []bool{upstream != "", c.SpawnCmd != "", len(spawnArgs) > 0} {
		if set {
			sources++
		}
	}
	switch {
	case sources == 0:
		p.add("one of MCP_UPSTREAM_URL, MCP_SPAWN_CMD or a command after -- is required (where the MCP server is)")
	case upstream != "" && c.SpawnCmd != "":
		p.add("MCP_UPSTREAM_URL and MCP_SPAWN_CMD are both set; set exactly one")
	case len(spawnArgs) > 0 && c.SpawnCmd != "":
		p.add("a command after -- and MCP_SPAWN_CMD are both given; give exactly one")
	case len(spawnArgs) > 0 && upstream != "":
		p.add("a command after -- and MCP_UPSTREAM_URL are both given; give exactly one")
	}
	if len(spawnArgs) > 0 && spawnArgs[0] == "" {
		p.add("the command after -- is empty")
	}
	if upstream != "" {
		u, err := url.Parse(upstream)
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
			p.addf("MCP_UPSTREAM_URL %q is not an absolute http(s) URL", upstream)
		case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
			p.addf("MCP_UPSTREAM_URL %q must not have a query, fragment or user information", upstream)
		default:
			c.UpstreamURL = u
		}
	}
	c.UpstreamPath = get("MCP_UPSTREAM_PATH")
	if c.UpstreamPath != "" {
		if !strings.HasPrefix(c.UpstreamPath, "/") || strings.ContainsAny(c.UpstreamPath, "?#%\\") ||
			strings.Contains(c.UpstreamPath, "//") || strings.Contains(c.UpstreamPath+"/", "/./") || strings.Contains(c.UpstreamPath+"/", "/../") {
			p.addf("MCP_UPSTREAM_PATH %q must be a clean absolute path such as /mcp", c.UpstreamPath)
		}
		c.UpstreamPath = strings.TrimRight(c.UpstreamPath, "/")
	}
	if v := get("MCP_SPAWN_PORT"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			p.addf("MCP_SPAWN_PORT %q is not a port number (1-65535)", v)
		} else if !c.Spawned() && sources > 0 {
			p.add("MCP_SPAWN_PORT is set but nothing is spawned (set MCP_SPAWN_CMD or give a command after --)")
		} else {
			c.SpawnPort = n
		}
	}
	c.SpawnReadyPath = get("MCP_SPAWN_READY_PATH")
	if c.SpawnReadyPath != "" && !strings.HasPrefix(c.SpawnReadyPath, "/") {
		p.addf("MCP_SPAWN_READY_PATH %q must start with /", c.SpawnReadyPath)
	}
	c.SpawnReadyTimeout = p.duration(get, "MCP_SPAWN_READY_TIMEOUT", true)
	c.RestartInitial = p.duration(get, "MCP_SPAWN_RESTART_INITIAL", true)
	c.RestartMax = p.duration(get, "MCP_SPAWN_RESTART_MAX", true)
	c.RestartResetAfter = p.duration(get, "MCP_SPAWN_RESTART_RESET", true)
	c.MaxRestarts = p.integer(get, "MCP_SPAWN_MAX_RESTARTS", 0)
	c.RestartWindow = p.duration(get, "MCP_SPAWN_RESTART_WINDOW", true)
	if c.RestartMax > 0 && c.RestartInitial > c.RestartMax {
		p.addf("MCP_SPAWN_RESTART_INITIAL (%s) must not exceed MCP_SPAWN_RESTART_MAX (%s)", c.RestartInitial, c.RestartMax)
	}

	c.ListenHost = get("LISTEN_HOST")
	if c.ListenHost != "" && net.ParseIP(c.ListenHost) == nil && c.ListenHost != "localhost" {
		p.addf("LISTEN_HOST %q is not an IP address", c.ListenHost)
	}
	if v := get("PORT"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 65535 {
			p.addf("PORT %q is not a port number (0-65535)", v)
		}
		c.Port = n
	}
	c.LogLevel = strings.ToLower(get("LOG_LEVEL"))
	switch c.LogLevel {
	case "trace", "debug", "info", "warn", "error", "fatal":
	default:
		p.addf("LOG_LEVEL %q is not one of trace, debug, info, warn, error, fatal", get("LOG_LEVEL"))
	}
	c.LogFormat = strings.ToLower(get("LOG_FORMAT"))
	switch c.LogFormat {
	case "", "json", "text":
	default:
		p.addf("LOG_FORMAT %q is not json or text", get("LOG_FORMAT"))
	}
	c.MetricsAddr = get("METRICS_ADDR")
	if c.MetricsAddr != "" {
		host, port, err := net.SplitHostPort(c.MetricsAddr)
		n, perr := strconv.Atoi(port)
		switch {
		case err != nil || perr != nil || n < 0 || n > 65535:
			p.addf("METRICS_ADDR %q is not host:port such as 127.0.0.1:9090", c.MetricsAddr)
		case host != "" && net.ParseIP(host) == nil && host != "localhost":
			p.addf("METRICS_ADDR %q: the host is not an IP address", c.MetricsAddr)
		case n != 0 && n == c.Port && (host == "" || c.ListenHost == "" || host == c.ListenHost):
			p.addf("METRICS_ADDR %q must not be the public port (metrics are never served to the public)", c.MetricsAddr)
		}
	}
	if v, err := strconv.ParseBool(get("MCP_AUDIT")); err != nil {
		p.addf("MCP_AUDIT %q is not true or false", get("MCP_AUDIT"))
	} else {
		c.MCPAudit = v
	}
	c.RateLimitRPM = p.integer(get, "RATE_LIMIT_RPM", 1)
	c.CORSOrigins = splitList(get("CORS_ALLOW_ORIGINS"))
	for _, o := range c.CORSOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || u.Host == "" || u.Path != "" || u.RawQuery != "" || (u.Scheme != "http" && u.Scheme != "https") {
			p.addf("CORS_ALLOW_ORIGINS entry %q is not an origin such as https://claude.ai (or *)", o)
		}
	}

	c.StaticClientID = get("STATIC_CLIENT_ID")
	c.StaticClientSecret = get("STATIC_CLIENT_SECRET")
	if (c.StaticClientID == "") != (c.StaticClientSecret == "") {
		p.add("STATIC_CLIENT_ID and STATIC_CLIENT_SECRET must be set together or both left unset")
	}
	c.RegisterRedirectURIs = splitList(get("REGISTER_REDIRECT_URIS"))
	for _, r := range c.RegisterRedirectURIs {
		pattern := strings.Replace(r, ":*", "", 1)
		u, err := url.Parse(pattern)
		if err != nil || u.Scheme == "" || u.Host == "" {
			p.addf("REGISTER_REDIRECT_URIS entry %q is not an absolute URI", r)
		} else if strings.Contains(r, ":*") && !(u.Scheme == "http" && isLoopbackHost(u.Hostname())) {
			p.addf("REGISTER_REDIRECT_URIS entry %q: a :* port pattern is allowed only for http loopback hosts", r)
		}
	}
	c.ScopesSupported = splitList(get("SCOPES_SUPPORTED"))
	c.RequiredScopes = splitList(get("REQUIRED_SCOPES"))
	for _, list := range [][]string{c.ScopesSupported, c.RequiredScopes} {
		for _, sc := range list {
			if strings.ContainsAny(sc, " \"\\") {
				p.addf("scope %q must not contain spaces, quotes or backslashes (RFC 6749 §3.3)", sc)
			}
		}
	}
	c.AuthServerMode = strings.ToLower(get("AUTH_SERVER_MODE"))
	if c.AuthServerMode != "facade" && c.AuthServerMode != "direct" {
		p.addf("AUTH_SERVER_MODE %q is not facade or direct", get("AUTH_SERVER_MODE"))
	}
	if c.AuthServerMode == "direct" && c.StaticClientID != "" {
		p.add("STATIC_CLIENT_ID needs AUTH_SERVER_MODE=facade (in direct mode clients never see the gateway's registration endpoint)")
	}
	c.ClockSkew = p.duration(get, "CLOCK_SKEW", false)
	c.JWKSCooldown = p.duration(get, "JWKS_REFRESH_COOLDOWN", false)
	c.MaxTokenBytes = p.integer(get, "MAX_TOKEN_BYTES", 1)
	c.MaxTokenLife = p.duration(get, "MAX_TOKEN_LIFETIME", false)
	c.MaxBodyBytes = int64(p.integer(get, "MAX_BODY_BYTES", 1))
	for _, cidr := range splitList(get("TRUSTED_PROXIES")) {
		pfx, err := netip.ParsePrefix(cidr)
		if err != nil {
			if a, aerr := netip.ParseAddr(cidr); aerr == nil {
				pfx = netip.PrefixFrom(a, a.BitLen())
			} else {
				p.addf("TRUSTED_PROXIES entry %q is not a CIDR such as 10.0.0.0/8", cidr)
				continue
			}
		}
		c.TrustedProxies = append(c.TrustedProxies, pfx.Masked())
	}
	c.ShutdownGrace = p.duration(get, "SHUTDOWN_GRACE", false)
	c.ReadHeaderTimeout = p.duration(get, "READ_HEADER_TIMEOUT", true)

	if len(p) > 0 {
		ce := &configError{problems: p}
		if get("OIDC_ISSUER_URL") == "" && get("RESOURCE_URL") == "" {
			ce.hint = "(new here? `mcp-oauth-proxy dev` runs the gateway against a built-in development issuer; --help lists every setting)"
		}
		return nil, ce
	}
	return c, nil
}

type problems []string

func (p *problems) add(s string)                    { *p = append(*p, s) }
func (p *problems) addf(f string, a ...interface{}) { p.add(fmt.Sprintf(f, a...)) }

// duration parses a Go duration ("30s"); a bare number is taken as seconds.
func (p *problems) duration(get func(string) string, env string, positive bool) time.Duration {
	v := get(env)
	d, err := time.ParseDuration(v)
	if err != nil {
		if n, nerr := strconv.Atoi(v); nerr == nil {
			d, err = time.Duration(n)*time.Second, nil
		}
	}
	switch {
	case err != nil:
		p.addf("%s %q is not a duration such as 30s or 2m", env, v)
	case d < 0 || (positive && d == 0):
		p.addf("%s %q must be %s", env, v, map[bool]string{true: "positive", false: "zero or positive"}[positive])
	}
	return d
}

func (p *problems) integer(get func(string) string, env string, min int) int {
	v := get(env)
	n, err := strconv.Atoi(v)
	switch {
	case err != nil:
		p.addf("%s %q is not a whole number", env, v)
	case n < min:
		p.addf("%s %q must be at least %d", env, v, min)
	}
	return n
}

// childEnvironment is environ minus every variable the gateway reads (its
// configuration and secrets, from the settings table) and anything under
// the OIDC_ and STATIC_CLIENT_ prefixes, which name provider credentials:
// the MCP server must never see them. Everything else, the server's own
// MCP_* variables included, passes through.
func childEnvironment(environ []string) []string {
	own := map[string]bool{}
	for _, s := range settings() {
		own[s.env] = true
	}
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if own[name] || strings.HasPrefix(name, "OIDC_") || strings.HasPrefix(name, "STATIC_CLIENT_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func printUsage(w io.Writer, all []*setting) {
	fmt.Fprint(w, `Usage:
  mcp-oauth-proxy [flags] [-- COMMAND ARGS...]   run the gateway
  mcp-oauth-proxy dev [flags] [-- COMMAND ARGS...] run it against an embedded development issuer
  mcp-oauth-proxy healthcheck                    probe a running gateway's /healthz on PORT
  mcp-oauth-proxy doctor [flags] URL             say why an MCP client cannot connect to URL
  mcp-oauth-proxy version                        print version information

Every flag defaults to the environment variable named beside it.

Flags:
`)
	for _, s := range all {
		def := s.def
		if def == "" {
			def = "(empty)"
		}
		fmt.Fprintf(w, "  --%s  [%s]  default %s\n      %s\n", s.flag, s.env, def, s.usage)
	}
}
