package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/broker"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/gate"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/policy"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/supervisor"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/wellknown"
)

// Config is the gateway's whole configuration: the components' own config
// types, filled by parseConfig from flags and the environment and validated
// there, once. Each component's New then checks only for programmer errors.
// serve adds what exists only at run time (loggers, clients, the parts one
// part hands another).
type Config struct {
	Provider  provider.Config
	WellKnown wellknown.Config
	Gate      gate.Config

	// Broker is broker mode's authorization server (AUTH_SERVER_MODE=broker).
	// The settings it shares with the other parts (RESOURCE_URL,
	// SCOPES_SUPPORTED, GROUPS_CLAIM, REGISTER_REDIRECT_URIS, CLOCK_SKEW)
	// are copied into it when it is built.
	Broker broker.Config

	// AcceptProviderTokens is ACCEPT_PROVIDER_TOKENS: in broker mode, the
	// provider's own access tokens are accepted too (when OIDC_AUDIENCE
	// allows them; see providerFallback).
	AcceptProviderTokens bool

	// Supervisor runs the MCP server as the gateway's child when its
	// Command (MCP_SPAWN_CMD) or Args (a command after --) is set.
	Supervisor supervisor.Config

	// Upstream is MCP_UPSTREAM_URL, an MCP server the gateway does not
	// run; nil when it runs one.
	Upstream *url.URL

	Listen ListenConfig
	Log    LogConfig

	// RateLimitRPM is the per-subject budget in requests per minute
	// (RATE_LIMIT_RPM), with a burst of the same size.
	RateLimitRPM int

	// ScopeGrants is BROKER_SCOPE_GRANTS: which users broker mode grants
	// the scopes MCP_POLICY asks for (broker.Config.GrantScopes, through
	// ScopeGrants.Hook). Nil: none set.
	ScopeGrants *policy.Grants

	// StoreURL is STORE_URL: the Redis that replicas share their limits,
	// used codes and revocations through (store.RedisConfig.URL). Empty:
	// this process's memory. It may hold a password: it is never logged,
	// never echoed in an error, and never passed to the child.
	StoreURL string

	// dev: dev mode supplies the issuer, the resource and its audience, an
	// allowed subject and (when none is named) the upstream itself, so
	// they are not required; and it binds loopback only.
	dev bool

	// warnings name variables that look like misspelt settings, and
	// settings that do not apply in the chosen mode; serve logs them once
	// the logger exists.
	warnings []string

	// set names the variables given a value (by flag or environment), for
	// the defaults and warnings that depend on the mode.
	set map[string]bool
}

// BrokerMode reports whether the gateway runs broker mode's authorization
// server.
func (c *Config) BrokerMode() bool { return c.WellKnown.Mode == wellknown.ModeBroker }

// ListenConfig is the public listener's and the metrics listener's.
type ListenConfig struct {
	Host              string // "": every interface
	Port              int
	MetricsAddr       string // host:port; "": no metrics listener
	ReadHeaderTimeout time.Duration
	ShutdownGrace     time.Duration // the drain's; the child's stop grace is Supervisor.StopGrace
}

// LogConfig is the root logger's.
type LogConfig struct {
	Level  hclog.Level
	Format string // "json", "text", or "": json unless stderr is a terminal
}

// Spawned reports whether the gateway runs the MCP server as its child.
func (c *Config) Spawned() bool { return c.Supervisor.Command != "" || len(c.Supervisor.Args) > 0 }

// setting is one configuration value: its environment variable, its
// default, its meaning, and the typed flag that parses a value into its
// place in a Config. The flag's name is the variable's, lower-case and
// dashed (OIDC_ISSUER_URL: --oidc-issuer-url).
type setting struct {
	env   string
	def   string // "": none
	usage string
	value flag.Value
}

func (s setting) flag() string { return flagName(s.env) }

func flagName(env string) string { return strings.ReplaceAll(strings.ToLower(env), "_", "-") }

// settings binds every setting to its place in c, in the order --help and
// the README list them. It is the only list of settings: parsing, --help,
// the README test, the misspelling warnings and the child's environment all
// read it. A value one component needs twice goes to every destination
// (bind takes several); each parser checks one value, and checks that span
// settings are in concerns.
func settings(c *Config) []setting {
	p, w, g, s, l, b := &c.Provider, &c.WellKnown, &c.Gate, &c.Supervisor, &c.Listen, &c.Broker
	return []setting{
		{"OIDC_ISSUER_URL", "", "issuer URL of the OIDC provider (https, or http on loopback); required", bind(issuerURL, &p.IssuerURL, &w.IssuerURL)},
		{"OIDC_AUDIENCE", "", "accepted aud values of the provider's access tokens, comma-separated (any one matches); required, except in broker mode", bind(list(nil), &p.Audiences)},
		{"RESOURCE_URL", "", "this gateway's public URL, the RFC 9728 resource; required", bind(resourceURL, &w.ResourceURL)},
		{"ALLOW_SUBS", "", "allowed token sub values, comma-separated", bind(list(nil), &g.AllowSubs)},
		{"ALLOW_EMAILS", "", "allowed token email values, comma-separated, case-insensitive", bind(list(lowerCase), &g.AllowEmails)},
		{"ALLOW_GROUPS", "", "allowed groups claim values, comma-separated", bind(list(nil), &g.AllowGroups)},
		{"GROUPS_CLAIM", "groups", "name of the token claim holding groups (string or array)", bind(text, &p.GroupsClaim)},
		{"MCP_UPSTREAM_URL", "", "URL of an existing HTTP MCP server to proxy to", bind(upstreamURL, &c.Upstream)},
		{"MCP_SPAWN_CMD", "", "command (run with /bin/sh -c) that starts the MCP server as a child", bind(text, &s.Command)},
		{"MCP_SPAWN_PORT", "", "loopback port the child listens on; empty: a free port is chosen and passed as PORT and {port}", bind(port(1), &s.Port)},
		{"MCP_UPSTREAM_PATH", "", "path prefix on the upstream that requests are forwarded under, e.g. /mcp", bind(upstreamPath, &g.UpstreamPath)},
		{"MCP_SPAWN_READY_PATH", "", "HTTP path polled for readiness (any answer counts); empty: a TCP connect", bind(readyPath, &s.ReadyPath)},
		{"MCP_SPAWN_READY_TIMEOUT", "120s", "how long a starting child may take to answer before it is stopped and retried", bind(duration(true), &s.ReadyTimeout)},
		{"MCP_SPAWN_RESTART_INITIAL", "500ms", "first delay before restarting a child that exited; every delay varies by ±20% (jitter)", bind(duration(true), &s.InitialBackoff)},
		{"MCP_SPAWN_RESTART_MAX", "30s", "cap of the doubling delay between restarts; with the ±20% jitter a delay can reach 1.2 times it", bind(duration(true), &s.MaxBackoff)},
		{"MCP_SPAWN_RESTART_RESET", "60s", "time a child must stay ready before the restart delay resets", bind(duration(true), &s.ResetAfter)},
		{"MCP_SPAWN_MAX_RESTARTS", "0", "exit non-zero after this many restarts within the window; 0: unlimited", bind(whole(0), &s.MaxRestarts)},
		{"MCP_SPAWN_RESTART_WINDOW", "10m", "window for MCP_SPAWN_MAX_RESTARTS", bind(duration(true), &s.RestartWindow)},
		{"LISTEN_HOST", "", "address to listen on; empty: every interface", bind(ipHost, &l.Host)},
		{"PORT", "8080", "port to listen on", bind(port(0), &l.Port)},
		{"LOG_LEVEL", "info", "trace, debug, info, warn, error or fatal", bind(logLevel, &c.Log.Level)},
		{"LOG_FORMAT", "", "json or text; empty: json unless stderr is a terminal", bind(oneOf("json", "text"), &c.Log.Format)},
		{"METRICS_ADDR", "", "host:port of a separate listener serving Prometheus metrics at /metrics, e.g. 127.0.0.1:9090; empty: no metrics", bind(hostPort, &l.MetricsAddr)},
		{"MCP_AUDIT", "true", "true: the audit log names the JSON-RPC method, tool and resource URI of each proxied POST (read from its first 64 KiB)", bind(auditBytes, &g.MCPAuditBytes)},
		{"RATE_LIMIT_RPM", "60", "requests per minute per token subject (burst of the same size)", bind(whole(1), &c.RateLimitRPM)},
		{"STORE_URL", "", "Redis shared by replicas (limits, used codes, revocations): redis://:password@host:6379/0, rediss:// for TLS; empty: this process's memory", bind(storeURL, &c.StoreURL)},
		{"CORS_ALLOW_ORIGINS", "https://claude.ai,https://claude.com", "allowed browser origins as the Origin header has them (scheme://host[:port], no path), comma-separated; * allows any", bind(list(origin), &g.CORSOrigins)},
		{"STATIC_CLIENT_ID", "", "pre-created client id handed out by POST /oauth/register (facade mode); in broker mode the fallback for OIDC_CLIENT_ID, never handed out", bind(text, &w.StaticClientID)},
		{"STATIC_CLIENT_SECRET", "", "its secret; set both or neither", bind(text, &w.StaticClientSecret)},
		{"REGISTER_REDIRECT_URIS", "", "redirect URIs /oauth/register accepts, comma-separated (http://127.0.0.1:* patterns allowed); empty: https, http on loopback hosts, private-use schemes with a dot (com.example.app:/cb) and those of REGISTER_REDIRECT_SCHEMES", bind(list(redirectURI), &w.RedirectURIs)},
		{"REGISTER_REDIRECT_SCHEMES", "cursor,vscode,vscode-insiders,windsurf", "private-use URI schemes without a dot whose redirect URIs clients may register too, comma-separated: Cursor's cursor://anysphere.cursor-mcp/oauth/callback, and the editors' schemes that their extensions (Cline, Roo Code) receive callbacks on; none: only schemes with a dot", bind(redirectSchemes, &w.RedirectSchemes)},
		{"SCOPES_SUPPORTED", "openid,profile,email,offline_access", "scopes advertised in the discovery documents; broker mode's default leaves out offline_access", bind(list(scope), &w.Scopes, &g.ChallengeScopes)},
		{"REQUIRED_SCOPES", "", "scopes every token must carry (403 insufficient_scope otherwise)", bind(list(scope), &g.RequiredScopes)},
		{"MCP_POLICY", "", "per-tool rules, e.g. tool:delete_*=group:admins; tool:write_file=scope:files:write (docs/policy.md); empty: every call the allow-list admits", bind(mcpPolicy, &g.Policy)},
		{"BROKER_SCOPE_GRANTS", "", "broker mode: who is granted the scopes MCP_POLICY asks for, e.g. files:write=group:editors; deploy=group:ops|sub:alice (docs/policy.md)", bind(scopeGrants, &c.ScopeGrants)},
		{"AUTH_SERVER_MODE", "facade", "facade: the gateway advertises itself as the authorization server, the provider logs users in; direct: the provider's issuer; broker: the gateway is the authorization server, logs users in at the provider and issues its own tokens", bind(authServerMode, &w.Mode)},
		{"OIDC_CLIENT_ID", "", "broker mode: the gateway's own client at the provider, whose redirect URI is the origin of RESOURCE_URL + /oauth/callback; empty: STATIC_CLIENT_ID", bind(text, &b.ClientID)},
		{"OIDC_CLIENT_SECRET", "", "its secret (empty with OIDC_CLIENT_ID set: a public client, PKCE only); both empty: STATIC_CLIENT_SECRET", bind(text, &b.ClientSecret)},
		{"OIDC_SCOPES", "openid email profile", "broker mode: scopes of the login at the provider, space- or comma-separated (offline_access is added when the provider lists it)", bind(scopeList, &b.UpstreamScopes)},
		{"BROKER_SECRET", "", "broker mode: at least 32 bytes (openssl rand -base64 32) from which the signing and sealing keys are derived, so restarts and replicas agree; empty: random keys, lost at restart", bind(brokerSecret, &b.Secret)},
		{"BROKER_SECRET_PREVIOUS", "", "broker mode: the previous BROKER_SECRET during a rotation; what it signed or sealed is still accepted", bind(brokerSecret, &b.PreviousSecret)},
		{"BROKER_ACCESS_TOKEN_TTL", "1h", "broker mode: lifetime of the gateway's own access tokens", bind(duration(true), &b.AccessTokenTTL)},
		{"BROKER_SESSION_TTL", "720h", "broker mode: absolute lifetime of a login's refresh tokens (at most 24h when the provider gives no refresh token)", bind(duration(true), &b.SessionTTL)},
		{"BROKER_REFRESH_REUSE_GRACE", "30s", "broker mode: for this long after a refresh token's first use it is accepted again (clients that refresh concurrently or retry a lost answer), rotating to another token of the same session; a reuse after it ends the session (at most 5m; 0: never)", bind(duration(false), &b.RefreshReuseGrace)},
		{"CIMD_ENABLED", "true", "broker mode: accept clients identified by a Client ID Metadata Document (an https URL as client_id); false: not advertised, such clients register instead (for gateways that cannot fetch from the internet)", bind(negated, &b.DisableCIMD)},
		{"CIMD_ALLOW_HOSTS", "", "broker mode: host or host:port entries, comma-separated, whose Client ID Metadata Documents are fetched on any address (loopback, private) and over http too: for tests and clients inside your network", bind(list(cimdAllowHost), &b.CIMDAllowHosts)},
		{"ACCEPT_PROVIDER_TOKENS", "true", "broker mode: also accept the provider's own access tokens (machine clients) when OIDC_AUDIENCE is set and is not OIDC_CLIENT_ID; false: only the gateway's own", bind(boolean, &c.AcceptProviderTokens)},
		{"CLOCK_SKEW", "30s", "tolerance for exp, nbf and iat", bind(duration(false), &p.ClockSkew)},
		{"JWKS_REFRESH_COOLDOWN", "30s", "least time between JWKS fetches caused by unknown key ids", bind(duration(true), &p.RefreshCooldown)},
		{"MAX_TOKEN_BYTES", "16384", "largest bearer token accepted, in bytes", bind(whole(1), &g.MaxTokenBytes)},
		{"MAX_TOKEN_LIFETIME", "0", "reject the provider's tokens whose exp is further than this from now (not broker mode's own); 0: no limit", bind(duration(false), &p.MaxTokenLifetime)},
		{"MAX_BODY_BYTES", "10485760", "largest request body forwarded, in bytes (413 beyond)", bind(whole64(1), &g.MaxBodyBytes)},
		{"MAX_CONCURRENT_PER_SUBJECT", "64", "requests of one token subject in flight at once, event streams included until they end (429 beyond); 0: no limit", bind(whole(0), &g.MaxConcurrentPerSubject)},
		{"TRUSTED_PROXIES", "", "CIDRs whose X-Forwarded-For is believed for the client IP, comma-separated", bind(prefixes, &g.TrustedProxies)},
		{"SHUTDOWN_GRACE", "10s", "time for in-flight requests, then for the child, to finish on shutdown; 0: none (the child is sent SIGKILL right after SIGTERM)", bind(duration(false), &l.ShutdownGrace, &s.StopGrace)},
		{"READ_HEADER_TIMEOUT", "10s", "time a client has to send its request headers, and the body of a request not admitted by a token (slow clients are cut)", bind(duration(true), &l.ReadHeaderTimeout, &g.BodyTimeout)},
	}
}

// concerns are the checks that span settings, one small function each.
// Whether a setting is required lives here rather than in the table because
// it depends on the mode: dev mode supplies some values itself, and another
// AUTH_SERVER_MODE may not need what this one does.
func concerns() []func(*Config, *problems) {
	return []func(*Config, *problems){
		checkProvider, checkResource, checkAllowList, checkUpstream,
		checkRestarts, checkShutdown, checkListen, checkDevSecret, checkMetrics, checkStaticClient, checkBroker, checkScopeGrants,
		checkRequiredScopes, checkStore,
	}
}

func checkProvider(c *Config, p *problems) {
	if c.dev {
		return // dev mode's own issuer, and the resource as audience
	}
	if c.Provider.IssuerURL == "" && !p.reported("OIDC_ISSUER_URL") {
		p.add("OIDC_ISSUER_URL is required (the issuer URL of your OIDC provider)")
	}
	if len(c.Provider.Audiences) == 0 && !c.BrokerMode() && !p.reported("OIDC_AUDIENCE") {
		p.add("OIDC_AUDIENCE is required (the aud value your provider puts in access tokens; several may be given, comma-separated; AUTH_SERVER_MODE=broker needs none)")
	}
}

// checkResource: RESOURCE_URL is required, and plain http is for loopback:
// elsewhere bearer tokens (and in broker mode the authorization server's
// codes and refresh tokens) would cross the network in clear text, so it
// is warned of. Dev mode binds loopback only.
func checkResource(c *Config, p *problems) {
	if c.WellKnown.ResourceURL == "" && !c.dev && !p.reported("RESOURCE_URL") {
		p.add("RESOURCE_URL is required (this gateway's public URL, e.g. https://mcp.example.com)")
	}
	u, err := url.Parse(c.WellKnown.ResourceURL)
	if err != nil || u.Scheme != "http" || isLoopbackHost(u.Hostname()) || c.dev {
		return
	}
	w := fmt.Sprintf("RESOURCE_URL %s is plain http on a host that is not loopback: bearer tokens cross the network in clear text; use https (a TLS-terminating proxy in front of the gateway)", c.WellKnown.ResourceURL)
	if c.BrokerMode() {
		w += ". In broker mode the gateway is the authorization server too: login codes and refresh tokens travel in clear as well, and its issuer must be https (RFC 8414 §2), so clients may refuse it"
	}
	c.warnings = append(c.warnings, w)
}

func checkAllowList(c *Config, p *problems) {
	g := &c.Gate
	if len(g.AllowSubs)+len(g.AllowEmails)+len(g.AllowGroups) == 0 && !c.dev {
		p.add("at least one of ALLOW_SUBS, ALLOW_EMAILS or ALLOW_GROUPS is required (nobody would be admitted)")
	}
}

// checkUpstream: exactly one of MCP_UPSTREAM_URL, MCP_SPAWN_CMD and a
// command after --; dev mode's demo server stands in for none.
func checkUpstream(c *Config, p *problems) {
	hasURL, cmd, args := c.Upstream != nil, c.Supervisor.Command != "", len(c.Supervisor.Args) > 0
	switch {
	case !hasURL && !cmd && !args && !c.dev && !p.reported("MCP_UPSTREAM_URL"):
		p.add("one of MCP_UPSTREAM_URL, MCP_SPAWN_CMD or a command after -- is required (where the MCP server is)")
	case hasURL && cmd:
		p.add("MCP_UPSTREAM_URL and MCP_SPAWN_CMD are both set; set exactly one")
	case args && cmd:
		p.add("a command after -- and MCP_SPAWN_CMD are both given; give exactly one")
	case args && hasURL:
		p.add("a command after -- and MCP_UPSTREAM_URL are both given; give exactly one")
	}
	if args && c.Supervisor.Args[0] == "" {
		p.add("the command after -- is empty")
	}
	if c.Supervisor.Port != 0 && !cmd && !args && (hasURL || c.dev) {
		p.add("MCP_SPAWN_PORT is set but nothing is spawned (set MCP_SPAWN_CMD or give a command after --)")
	}
	// The child listens on 127.0.0.1: a gateway listening there on the same
	// port would take its place, and its readiness probe would find the
	// gateway itself.
	// So would its metrics listener.
	if sp := c.Supervisor.Port; sp != 0 && sp == c.Listen.Port && listensOnLoopback(c.Listen.Host) {
		p.addf("MCP_SPAWN_PORT (%d) is the gateway's own PORT: the MCP server needs a port of its own (or leave MCP_SPAWN_PORT out for a free one)", sp)
	}
	if sp := c.Supervisor.Port; sp != 0 && c.Listen.MetricsAddr != "" {
		host, port, _ := net.SplitHostPort(c.Listen.MetricsAddr) // hostPort checked its shape
		if port == strconv.Itoa(sp) && listensOnLoopback(host) {
			p.addf("MCP_SPAWN_PORT (%d) is the port of METRICS_ADDR (%s): the MCP server needs a port of its own (or leave MCP_SPAWN_PORT out for a free one)", sp, c.Listen.MetricsAddr)
		}
	}
}

// listensOnLoopback reports whether a listener on host takes 127.0.0.1's
// port too: every address (empty, 0.0.0.0, ::) or a loopback one.
func listensOnLoopback(host string) bool {
	if host == "" || isLoopbackHost(host) {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

func checkRestarts(c *Config, p *problems) {
	if s := &c.Supervisor; s.InitialBackoff > s.MaxBackoff {
		p.addf("MCP_SPAWN_RESTART_INITIAL (%s) must not exceed MCP_SPAWN_RESTART_MAX (%s)", s.InitialBackoff, s.MaxBackoff)
	}
}

// checkShutdown: SHUTDOWN_GRACE=0 gives the child no time either (SIGKILL
// right after SIGTERM), where the supervisor's zero StopGrace would be its
// default.
func checkShutdown(c *Config, _ *problems) {
	c.Supervisor.NoStopGrace = c.Listen.ShutdownGrace == 0
}

func checkListen(c *Config, p *problems) {
	if c.dev && !isLoopbackHost(c.Listen.Host) {
		p.addf("dev mode binds loopback only; LISTEN_HOST %q is not a loopback address", c.Listen.Host)
	}
}

// checkDevSecret: dev mode's broker keys are random. Its issuer logs anyone
// in as anyone, and the broker's signing and sealing keys depend on
// BROKER_SECRET alone, so with the secret of a real gateway (dev started
// in that gateway's environment, RESOURCE_URL included) the tokens,
// refresh tokens and client registrations it hands out for any identity
// would be that gateway's own.
func checkDevSecret(c *Config, p *problems) {
	if !c.dev {
		return
	}
	for _, env := range []string{"BROKER_SECRET", "BROKER_SECRET_PREVIOUS"} {
		if c.set[env] && !p.reported(env) {
			p.addf("%s must not be set in dev mode: its issuer logs anyone in as anyone, and a gateway with this secret would accept what dev mode signs (dev mode's keys are random; unset it)", env)
		}
	}
}

// checkMetrics: metrics are never served on the public port.
func checkMetrics(c *Config, p *problems) {
	if c.Listen.MetricsAddr == "" {
		return
	}
	host, port, _ := net.SplitHostPort(c.Listen.MetricsAddr) // hostPort checked its shape
	if port != "0" && port == fmt.Sprint(c.Listen.Port) && (host == "" || c.Listen.Host == "" || host == c.Listen.Host) {
		p.addf("METRICS_ADDR %q must not be the public port (metrics are never served to the public)", c.Listen.MetricsAddr)
	}
}

func checkStaticClient(c *Config, p *problems) {
	w := &c.WellKnown
	if (w.StaticClientID == "") != (w.StaticClientSecret == "") {
		p.add("STATIC_CLIENT_ID and STATIC_CLIENT_SECRET must be set together or both left unset")
	}
	if w.Mode == wellknown.ModeDirect && w.StaticClientID != "" {
		p.add("STATIC_CLIENT_ID needs AUTH_SERVER_MODE=facade (in direct mode clients never see the gateway's registration endpoint)")
	}
}

// checkScopeGrants: grants are the broker's, and each names a scope a
// client can ask for.
func checkScopeGrants(c *Config, p *problems) {
	if c.ScopeGrants == nil {
		return
	}
	if !c.BrokerMode() {
		p.add("BROKER_SCOPE_GRANTS needs AUTH_SERVER_MODE=broker (otherwise the provider decides who gets which scope)")
		return
	}
	for _, sc := range c.ScopeGrants.Scopes() {
		if !slices.Contains(c.WellKnown.Scopes, sc) && !slices.Contains(c.Gate.Policy.Scopes(), sc) {
			p.addf("BROKER_SCOPE_GRANTS grants %q, which neither SCOPES_SUPPORTED nor MCP_POLICY names (no client could ask for it)", sc)
		}
	}
}

// checkRequiredScopes: a scope every token must carry is one a client
// can be granted. Broker mode grants only what it supports (broker.Config
// Scopes, which checkBroker set, and MCP_POLICY's scopes): any other
// required scope would lock everyone out, so it is an error. Elsewhere
// the provider decides what it grants, but a scope that scopes_supported
// does not advertise is one that clients do not ask for: a warning.
func checkRequiredScopes(c *Config, p *problems) {
	for _, sc := range c.Gate.RequiredScopes {
		switch {
		case c.BrokerMode() && !slices.Contains(c.Broker.Scopes, sc) && !slices.Contains(c.Gate.Policy.Scopes(), sc):
			p.addf("REQUIRED_SCOPES names %q, which neither SCOPES_SUPPORTED nor MCP_POLICY names: broker mode never grants it, so every token would be refused", sc)
		case !c.BrokerMode() && !slices.Contains(c.WellKnown.Scopes, sc) && !slices.Contains(c.Gate.Policy.Scopes(), sc):
			c.warnings = append(c.warnings, fmt.Sprintf("REQUIRED_SCOPES names %q, which SCOPES_SUPPORTED does not advertise: clients will not ask for it, and tokens without it are refused (403 insufficient_scope)", sc))
		}
	}
}

// checkStore: replicas that share a store must seal and sign with the same
// keys, so broker mode with STORE_URL needs BROKER_SECRET: random keys
// would make one replica's codes and tokens garbage at the next. Dev mode
// is one process and refuses BROKER_SECRET (checkDevSecret).
func checkStore(c *Config, p *problems) {
	if c.StoreURL != "" && c.BrokerMode() && c.Broker.Secret == nil && !c.dev && !p.reported("BROKER_SECRET") {
		p.add("STORE_URL is set in broker mode without BROKER_SECRET: replicas sharing a store must derive the same keys (set BROKER_SECRET, e.g. openssl rand -base64 32)")
	}
}

// brokerOnly are the settings only broker mode reads.
func brokerOnly() []string {
	return []string{"OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET", "OIDC_SCOPES", "BROKER_SECRET", "BROKER_SECRET_PREVIOUS",
		"BROKER_ACCESS_TOKEN_TTL", "BROKER_SESSION_TTL", "BROKER_REFRESH_REUSE_GRACE", "ACCEPT_PROVIDER_TOKENS", "CIMD_ENABLED", "CIMD_ALLOW_HOSTS"}
}

// checkBroker: broker mode's own settings, and what differs in broker
// mode: the gateway's client at the provider falls back to the static
// client, which is then never handed out (registration is the broker's);
// and offline_access is not a scope of the resource (MCP 2026-07-28: not
// in the protected-resource metadata or a challenge), so the default
// SCOPES_SUPPORTED leaves it out. Outside broker mode its settings are
// ignored, with a warning.
func checkBroker(c *Config, p *problems) {
	b, w := &c.Broker, &c.WellKnown
	if !c.BrokerMode() {
		for _, env := range brokerOnly() {
			if c.set[env] {
				c.warnings = append(c.warnings, fmt.Sprintf("%s is set but only AUTH_SERVER_MODE=broker reads it (the mode is %s)", env, w.Mode))
			}
		}
		if !c.AcceptProviderTokens && !p.reported("ACCEPT_PROVIDER_TOKENS") {
			p.add("ACCEPT_PROVIDER_TOKENS=false needs AUTH_SERVER_MODE=broker (in facade and direct mode the provider's tokens are the only ones)")
		}
		return
	}
	switch {
	case b.ClientID == "" && b.ClientSecret != "":
		p.add("OIDC_CLIENT_SECRET is set without OIDC_CLIENT_ID")
	case b.ClientID == "":
		b.ClientID, b.ClientSecret = w.StaticClientID, w.StaticClientSecret
	}
	w.StaticClientID, w.StaticClientSecret = "", ""
	if b.ClientID == "" && !c.dev {
		p.add("AUTH_SERVER_MODE=broker needs OIDC_CLIENT_ID (or STATIC_CLIENT_ID): the gateway's own client at your provider, whose redirect URI is the origin of RESOURCE_URL + /oauth/callback")
	}
	if b.PreviousSecret != nil && b.Secret == nil && !p.reported("BROKER_SECRET") {
		p.add("BROKER_SECRET_PREVIOUS is set without BROKER_SECRET (during a rotation the new secret is BROKER_SECRET, the old one BROKER_SECRET_PREVIOUS)")
	}
	for _, e := range w.RedirectURIs {
		if err := broker.CheckRedirectURI(e, w.RedirectSchemes); err != nil {
			p.addf("REGISTER_REDIRECT_URIS entry rejected in broker mode: %v", err)
		}
	}
	if b.DisableCIMD && len(b.CIMDAllowHosts) > 0 {
		c.warnings = append(c.warnings, "CIMD_ALLOW_HOSTS is set but CIMD_ENABLED=false: no client metadata document is fetched from any host")
	}
	if b.RefreshReuseGrace > maxRefreshReuseGrace {
		p.addf("BROKER_REFRESH_REUSE_GRACE (%s) must be at most %s: a longer window lets a leaked refresh token go unnoticed", b.RefreshReuseGrace, maxRefreshReuseGrace)
	}
	if b.AccessTokenTTL > b.SessionTTL {
		p.addf("BROKER_ACCESS_TOKEN_TTL (%s) must not exceed BROKER_SESSION_TTL (%s)", b.AccessTokenTTL, b.SessionTTL)
	}
	if !c.set["SCOPES_SUPPORTED"] {
		w.Scopes = without(w.Scopes, "offline_access")
	}
	b.Scopes = slices.Clone(w.Scopes) // what clients may be granted
	w.Scopes = without(w.Scopes, "offline_access")
	c.Gate.ChallengeScopes = without(c.Gate.ChallengeScopes, "offline_access")
}

// maxRefreshReuseGrace bounds BROKER_REFRESH_REUSE_GRACE: enough for any
// concurrent refresh or retry, short enough that reuse detection still
// works.
const maxRefreshReuseGrace = 5 * time.Minute

// without returns list without drop, in a new slice.
func without(list []string, drop string) []string {
	out := make([]string, 0, len(list))
	for _, s := range list {
		if s != drop {
			out = append(out, s)
		}
	}
	return out
}

// errHelp is returned by parseConfig when the user asked for --help.
var errHelp = errors.New("help requested")

// parseConfig fills a Config from args and the environment: a flag given
// with a value wins, then a variable set to something other than blanks,
// then the default. Everything after "--" in args is the child's argv (the
// launcher form). It reports every problem at once in a *configError,
// naming the variable (or flag) of each. dev relaxes what dev mode
// supplies itself.
func parseConfig(args []string, getenv func(string) string, dev bool) (*Config, error) {
	c := &Config{dev: dev, set: map[string]bool{}}
	for i, a := range args {
		if a == "--" {
			c.Supervisor.Args = append([]string{}, args[i+1:]...)
			args = args[:i]
			break
		}
	}
	all := settings(c)
	var p problems
	fs := flag.NewFlagSet("mcp-oauth-proxy", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	for _, s := range all {
		fs.Var(reporting{s.value, "--" + s.flag(), &p}, s.flag(), s.usage)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, errHelp
		}
		return nil, flagError(err, all)
	}
	if fs.NArg() > 0 {
		return nil, strayArgument(fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, s := range all {
		if given[s.flag()] {
			c.set[s.env] = true
			continue
		}
		raw := strings.TrimSpace(getenv(s.env))
		c.set[s.env] = raw != ""
		if raw == "" {
			raw = s.def
		}
		if raw == "" {
			continue // the zero value: unset
		}
		if err := s.value.Set(raw); err != nil {
			p.add(s.env + " " + err.Error())
		}
	}
	for _, check := range concerns() {
		check(c, &p)
	}
	if len(p) > 0 {
		ce := &configError{problems: p}
		if c.Provider.IssuerURL == "" && c.WellKnown.ResourceURL == "" && !dev {
			ce.hints = append(ce.hints, "(new here? `mcp-oauth-proxy dev` runs the gateway against a built-in development issuer)")
		}
		return nil, ce
	}
	return c, nil
}

// configure is parseConfig plus the misspelling warnings (misspelt): the
// variables' names come from os.Environ, since getenv cannot list them.
// When the configuration is invalid a misspelling is a likely cause, so
// the warnings join the error's hints; otherwise serve logs them.
func configure(args []string, getenv func(string) string, dev bool) (*Config, error) {
	warnings := misspelt(os.Environ())
	c, err := parseConfig(args, getenv, dev)
	if ce := (*configError)(nil); errors.As(err, &ce) && !ce.usage {
		ce.hints = append(warnings, ce.hints...)
	}
	if err != nil {
		return nil, err
	}
	c.warnings = append(warnings, c.warnings...) // after those of the concerns
	return c, nil
}

// reporting is a flag whose bad value is noted as a problem, naming the
// flag, so that parsing goes on and every problem is reported at once.
type reporting struct {
	flag.Value
	name string
	p    *problems
}

func (r reporting) Set(s string) error {
	if err := r.Value.Set(s); err != nil {
		r.p.add(r.name + " " + err.Error())
	}
	return nil
}

type problems []string

func (p *problems) add(s string)            { *p = append(*p, s) }
func (p *problems) addf(f string, a ...any) { p.add(fmt.Sprintf(f, a...)) }

// reported says whether a value of one of envs (or of its flag) was
// refused already: its field is then unset, but it is not missing.
func (p *problems) reported(envs ...string) bool {
	for _, q := range *p {
		for _, env := range envs {
			if strings.HasPrefix(q, env+" ") || strings.HasPrefix(q, "--"+flagName(env)+" ") {
				return true
			}
		}
	}
	return false
}

// childEnvironment is environ minus every variable the gateway reads (its
// configuration and secrets, from the settings table) and anything under
// the OIDC_, STATIC_CLIENT_ and BROKER_ prefixes, which name credentials:
// the MCP server must never see them. Everything else, the server's own
// MCP_* variables included, passes through.
func childEnvironment(environ []string) []string {
	own := map[string]bool{}
	for _, s := range settings(new(Config)) {
		own[s.env] = true
	}
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if own[name] || isSecretName(name) {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// isSecretName reports whether a variable's name marks it as a credential
// of the gateway's, set or not.
func isSecretName(name string) bool {
	for _, prefix := range []string{"OIDC_", "STATIC_CLIENT_", "BROKER_"} {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}
