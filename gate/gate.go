// Package gate owns the request path of the gateway: CORS, request-target
// hygiene, the exact-match public routes, the bearer token (RFC 6750), its
// verification, the allow-list, required scopes, the revocation check and
// per-subject rate limit (one admission), the per-IP failed-authentication
// limit, request IDs, the audit log (naming the MCP method and tool of
// JSON-RPC POSTs), applying MCP_POLICY to request bodies and listing
// answers, the request counts it hands to Metrics, and the reverse proxy to
// the MCP server.
//
// It does not verify token signatures itself (package provider does, behind
// Verifier), does not keep the limits' budgets or the revocations (Admitter
// and FailureLimiter do: the store package's types), does not serve discovery or health documents (the
// caller passes them in as public Routes), and does not know how the MCP
// server is run (Upstream tells it where the server listens and whether it
// is ready), nor how counts become Prometheus metrics (package metrics
// implements Metrics). Package mcp reads bodies and headers for it, and
// package policy decides.
//
// Order of decisions for every request:
//
//	request ID (X-Request-Id kept if well-formed, else generated; on the response and to the upstream)
//	-> a chunked body (or HTTP/1.0) closes the connection after the answer (RFC 9112 §6.1)
//	-> CORS by the route's policy (preflight answered here; a foreign Origin is 403)
//	-> protocol upgrade? (400 and the connection closed, on every route: never a tunnel)
//	-> path hygiene on the raw request target (400/414)
//	-> public route? (exact method and path; 405 for another method; unknown /.well-known/ is 404)
//	-> bearer token from the Authorization header only (401)
//	-> per-IP failed-authentication limit (429, before any signature check)
//	-> Verify (401 invalid_token; 503 while the provider's keys are not loaded)
//	-> allow-list (403) -> required scopes (403 insufficient_scope)
//	-> per-subject admission: the token revoked? (401) and its subject's
//	   rate limit (429), one decision (one round trip with a shared store)
//	-> body size (413) -> upstream ready? (503)
//	-> the JSON-RPC body: with a policy, read whole and strictly (400), its
//	   Mcp-Method and Mcp-Name headers checked against it (400 -32020), its
//	   calls decided (403 step-up or denied); without one, read as far as
//	   the audit bound for the audit line (and the headers checked when
//	   the body was read whole)
//	-> reverse proxy (with a policy, tools/list, resources/list and
//	   prompts/list answers filtered on the way back): to an http://
//	   upstream over the gate's own HTTP/1.1 client (upstream.go,
//	   relay.go), an event stream of an HTTP/1.1 client relayed after
//	   its handler returned (detach.go); otherwise httputil.ReverseProxy.
package gate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/inflight"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/mcp"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/policy"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/respond"
)

// Verifier models *provider.Provider. Verify returns provider.ErrNotReady
// while the provider's keys are not loaded, and a *provider.TokenError when
// the token is not acceptable.
type Verifier interface {
	Verify(ctx context.Context, raw string) (*provider.Identity, error)
}

// Admitter models *store.Admission and *store.RedisLimiter: the
// per-subject admission. Admit decides in one step (one round trip with a
// shared store) whether any of revocation, the token's revocation keys
// (provider.Identity.Revocation), is revoked, in which case revoked is true
// and nothing is spent; and otherwise whether key's budget has a token,
// taking it (ok) or saying how long until one is left (wait).
type Admitter interface {
	Admit(ctx context.Context, key string, revocation []string) (ok bool, wait time.Duration, revoked bool)
}

// FailureLimiter models *store.Limiter as the failed-authentication limit
// uses it: Peek says, without spending, whether key may try again (or how
// long until it may); Spend records one failure.
type FailureLimiter interface {
	Peek(ctx context.Context, key string) (ok bool, wait time.Duration)
	Spend(ctx context.Context, key string)
}

// Upstream models *supervisor.Supervisor: where the MCP server listens now
// (scheme and host, maybe a base path) and whether it is ready to serve.
type Upstream interface {
	Endpoint() (target *url.URL, ready bool)
}

// Static returns an Upstream that is always ready at u (MCP_UPSTREAM_URL).
func Static(u *url.URL) Upstream { return staticUpstream{u} }

type staticUpstream struct{ u *url.URL }

func (s staticUpstream) Endpoint() (*url.URL, bool) { return s.u, true }

// Metrics receives the gate's counts and timings (a *metrics.Metrics). Its
// methods run on every request: they must be cheap, must not block, and must
// be safe for concurrent use.
type Metrics interface {
	// Request is called once per request, when the gate has answered it.
	Request(Outcome)
	// Stream is called with +1 when a proxied response turns out to be an
	// event stream (text/event-stream) and with -1 when that stream ends.
	Stream(delta int)
}

// Outcome is what the gate did with one request. Every field has a bounded
// set of values: no subject, token or path.
type Outcome struct {
	// Class is ClassPublic, ClassProxied or ClassRejected.
	Class string
	// Reason says why a ClassRejected request was refused: one of
	// RejectReasons(). Empty for the other classes.
	Reason string
	// Status is the response's status code.
	Status int
	// Duration runs from the gate's first decision to the end of the
	// answer (for an event stream: until the stream ended).
	Duration time.Duration
	// Upstream runs from forwarding the request to the upstream's response
	// headers. Zero when no upstream answered (not proxied, or 502).
	Upstream time.Duration
	// Rule and Decision say what the policy decided of the calls in the
	// body (those policy.KindOf names a kind): Rule is the deciding
	// rule's number or "none" (policy.Decision.RuleLabel), Decision
	// "allow", "deny" or "step_up" (policy.Outcome). Both are empty when
	// nothing was decided (no policy, or no call in the body).
	Rule, Decision string
	// Stream is set when the proxied response was an event stream (a GET
	// stream of earlier revisions, a subscriptions/listen POST, a call
	// sending progress): open as long as the server or the client keeps it,
	// so its Duration says nothing of latency.
	Stream bool
}

// Classes of Outcome.
const (
	ClassPublic   = "public"   // a public route, a CORS preflight, or the gate's own 404/405 for them
	ClassProxied  = "proxied"  // passed every check and was forwarded
	ClassRejected = "rejected" // refused by the gate, with a reason
)

// Reasons a request is rejected (Outcome.Reason).
const (
	RejectOrigin            = "origin"             // Origin not allowed (403)
	RejectPath              = "path"               // malformed or over-long request target (400, 414)
	RejectNoToken           = "no_token"           // no Authorization header (401)
	RejectBadRequest        = "bad_request"        // several Authorization headers, a token in the query, or a protocol upgrade (400)
	RejectIPLimited         = "ip_limited"         // the client IP's failed-authentication limit (429)
	RejectInvalid           = "invalid"            // a malformed header or a token that does not verify (401)
	RejectExpired           = "expired"            // an expired token (401)
	RejectAudience          = "audience"           // a token for another audience (401)
	RejectProviderNotReady  = "provider_not_ready" // the provider's keys are not loaded (503)
	RejectForbidden         = "forbidden"          // not on the allow-list (403)
	RejectInsufficientScope = "insufficient_scope" // a required scope is missing (403)
	RejectRateLimited       = "rate_limited"       // the subject's rate limit or concurrency limit (429)
	RejectTooLarge          = "too_large"          // a body larger than MaxBodyBytes (413)
	RejectUpstreamNotReady  = "upstream_not_ready" // the MCP server is not ready, or a stream asked for during shutdown (503)
	RejectBadBody           = "bad_body"           // with a policy, a body that cannot be read strictly (400)
	RejectHeaderMismatch    = "header_mismatch"    // Mcp-Method or Mcp-Name disagrees with the body (400, JSON-RPC -32020)
	RejectPolicyDenied      = "policy_denied"      // the policy denies a call of the body (403, JSON-RPC error)
	RejectSession           = "session"            // an Mcp-Session-Id not given to this subject (404), or several (400)
)

// RejectReasons lists every Outcome.Reason, in the order of the gate's
// decisions.
func RejectReasons() []string {
	return []string{RejectOrigin, RejectPath, RejectNoToken, RejectBadRequest, RejectIPLimited,
		RejectInvalid, RejectExpired, RejectAudience, RejectProviderNotReady, RejectForbidden,
		RejectInsufficientScope, RejectRateLimited, RejectTooLarge, RejectUpstreamNotReady,
		RejectBadBody, RejectHeaderMismatch, RejectPolicyDenied, RejectSession}
}

// Route is a public, unauthenticated route: it matches an exact method and
// an exact, clean path. A GET route also answers HEAD. The same path with
// any other method is 405, never proxied.
type Route struct {
	Method  string
	Path    string
	Handler http.Handler

	// CORS is how the route answers browsers (Fetch standard, CORS
	// protocol): CORSAllowed, CORSAnyOrigin or CORSSameOrigin. Every route
	// of one path must say the same. Empty means CORSAllowed.
	CORS string
}

// CORS policies of a public Route.
const (
	// CORSAllowed: as the MCP endpoint, only the origins of CORSOrigins;
	// another Origin is 403.
	CORSAllowed = ""
	// CORSAnyOrigin: any origin, never with credentials
	// (Access-Control-Allow-Origin: *): for documents and endpoints that
	// read no cookie (metadata, token, registration, revocation, keys),
	// which browser-based OAuth clients call from their own origin.
	CORSAnyOrigin = "any"
	// CORSSameOrigin: the gateway's own origin only (the origin of
	// ResourceMetadataURL); another Origin is 403 and no other origin is
	// ever allowed to read the answer: for pages and form posts that read
	// the gateway's cookies, which a browser reaches by navigation.
	CORSSameOrigin = "same-origin"
)

// Defaults for the zero values of Config.
const (
	DefaultMaxTokenBytes = 16 << 10
	DefaultMaxBodyBytes  = 10 << 20

	// DefaultFailedAuthPerIPPerMinute is the rate (and burst) of the
	// FailedAuthLimiter the gateway is wired with.
	DefaultFailedAuthPerIPPerMinute = 60

	// maxPathBytes bounds the request path; longer is 414.
	maxPathBytes = 4096
)

// Config configures New. Verifier, Upstream and ResourceMetadataURL are
// required; every other field has a documented zero value.
type Config struct {
	// Verifier verifies bearer tokens (a *provider.Provider).
	Verifier Verifier

	// Upstream says where the MCP server is and whether it is ready
	// (Static(url) or a *supervisor.Supervisor).
	Upstream Upstream

	// UpstreamRestarts says the gateway runs the upstream itself and
	// restarts it: a failed round trip (refused, reset, broken pipe) then
	// means the child has just died and is coming back, so the answer is
	// 503 with Retry-After, as while it is not ready, rather than 502.
	// False: such failures are 502.
	UpstreamRestarts bool

	// UpstreamRootCAs are the certificate authorities an https:// upstream's
	// certificate must chain to (verified as always: host name, expiry, TLS
	// 1.2 or later). Nil: the system's roots (on Linux SSL_CERT_FILE and
	// SSL_CERT_DIR choose them; that is how an operator trusts a private
	// CA). Unused with a Transport.
	UpstreamRootCAs *x509.CertPool

	// UpstreamPath (MCP_UPSTREAM_PATH) is a prefix joined after the upstream
	// URL's own path: "/" is sent to UpstreamPath, "/x" to UpstreamPath+"/x".
	// The query is kept. Empty or "/": no prefix. The caller validates it: a
	// clean absolute path whose characters need no escaping (no dot
	// segments, "//", "%", ";", "?" or "#").
	UpstreamPath string

	// Public lists the unauthenticated routes (discovery documents, health).
	Public []Route

	// ResourceMetadataURL is the absolute URL of the RFC 9728 protected
	// resource metadata, sent as resource_metadata in every challenge. It is
	// built from configuration, never from the request's Host.
	ResourceMetadataURL string

	// ChallengeScopes are sent as scope= in 401 challenges
	// (SCOPES_SUPPORTED): what a client asks for at its first login. The
	// scopes a policy asks for come later, by step-up. offline_access is
	// never sent (MCP 2026-07-28 authorization: a resource server does not
	// choose whether the client gets refresh tokens). Empty: no scope
	// attribute.
	ChallengeScopes []string

	// RequiredScopes must all be in the token's scopes, else 403
	// insufficient_scope. Empty: none required.
	RequiredScopes []string

	// AllowSubs, AllowEmails and AllowGroups form the allow-list: a token
	// passes if its sub, its email (only when verified) or any of its
	// groups is listed. Subs and groups compare byte for byte; emails with
	// ASCII letters folded to lower case and every other byte exact (no
	// Unicode folding: U+212A KELVIN SIGN is not "k"). All empty: nobody
	// passes.
	AllowSubs   []string
	AllowEmails []string
	AllowGroups []string

	// SubjectLimiter admits a verified, allowed request: it checks the
	// token's revocation keys (401 invalid_token when revoked, spending the
	// client's failed-authentication budget as any invalid token does) and
	// the per-subject rate limit (RATE_LIMIT_RPM), keyed by the token's
	// subject (429 with Retry-After past it). Nil: no per-subject limit and
	// no revocation check, so the Verifier must check revocation itself; a
	// token whose identity names revocation keys is then refused (503), as
	// they cannot be checked.
	SubjectLimiter Admitter

	// CORSOrigins lists the allowed browser origins; "*" allows any.
	// Empty: no browser origin is allowed (requests without Origin proceed).
	CORSOrigins []string

	// MaxTokenBytes bounds the bearer token; a longer one is 401 before any
	// parsing. Zero: DefaultMaxTokenBytes.
	MaxTokenBytes int

	// MaxBodyBytes bounds a proxied request body; larger is 413.
	// Zero: DefaultMaxBodyBytes.
	MaxBodyBytes int64

	// MaxConcurrentPerSubject bounds the admitted requests of one token
	// subject in flight at once, an event stream counting until it ends;
	// past it a request is 429 (reason rate_limited). SubjectLimiter bounds
	// how fast a subject opens requests, not how many it keeps open: one
	// token could otherwise open a stream a second and hold them all, each
	// a goroutine and two file descriptors, until the process has none
	// left for anyone. Zero: no limit.
	MaxConcurrentPerSubject int

	// SessionKey seals the MCP session IDs clients see to their subjects
	// (session.go): 32 bytes, the same in replicas that share sessions.
	// Nil: a random key of this process.
	SessionKey []byte

	// BodyTimeout bounds the time a request's body may take to arrive
	// until the gate admits the request to the proxy: a public route's
	// body, and the body of a request refused (which the server reads
	// and discards before it answers). Without it a client declaring a
	// body and sending it a byte at a time holds its connection for as
	// long as it likes, without a token. The body of an admitted request
	// has no bound but MaxBodyBytes, as before. Zero: no bound.
	BodyTimeout time.Duration

	// TrustedProxies (TRUSTED_PROXIES): when the socket peer is in one of
	// these prefixes, the rightmost X-Forwarded-For entry not in them is the
	// client IP, and X-Forwarded-Proto is believed. Otherwise the socket
	// address is the client IP. Empty: no proxy is trusted.
	TrustedProxies []netip.Prefix

	// FailedAuthLimiter limits failed authentications per client, keyed as
	// ClientKey keys them (the client IP, an IPv6 client by its /64); past
	// it the gate answers 429 with Retry-After before any signature check.
	// Nil: no limit.
	FailedAuthLimiter FailureLimiter

	// Policy is MCP_POLICY. When set, every request body is read whole
	// (up to MaxBodyBytes) and strictly (package mcp): one that cannot be
	// read so is 400; its Mcp-Method and Mcp-Name headers must agree with
	// it (400, JSON-RPC -32020); its calls (tools/call, resources/read,
	// resources/subscribe, resources/unsubscribe, prompts/get,
	// completion/complete: policy.KindOf) are decided (403 with a step-up
	// challenge, or with a JSON-RPC error when denied), nothing of a
	// refused body reaching the upstream; and answers to tools/list,
	// resources/list and prompts/list lose the entries the caller may not
	// use. Nil: no policy; bodies are read only for the audit line.
	Policy *policy.Policy

	// MaxListingBytes bounds, with a Policy, a listing answer the gate
	// filters: a JSON body, or one event of an event stream. A larger one
	// is refused (502, or an event stream cut there) and logged, never
	// passed unfiltered. Zero: policy.DefaultListingCap (1 MiB).
	MaxListingBytes int

	// Shutdown ends when the server begins to shut down. Open event streams
	// (an event-stream answer to any request: a GET stream of earlier
	// revisions, a 2026-07-28 subscriptions/listen, a call sending
	// progress; they need not finish on their own) are ended then, so the
	// drain waits only for requests that do finish; clients of earlier
	// revisions reconnect with Last-Event-ID, those of 2026-07-28 listen
	// again. Nil: streams are left to the server's own shutdown.
	Shutdown context.Context

	// Detached, when set, counts the event streams relayed after their
	// handler returned (detach.go): one is added before its connection is
	// taken from net/http, and done once the stream ended and its audit
	// line and Metrics were written. http.Server.Shutdown does not wait
	// for them (a hijacked connection is no longer the server's); they end
	// when Shutdown does, and the caller waits on Detached after the
	// server's Shutdown, so none of their audit lines is lost at exit.
	// Nil: nothing waits for them.
	Detached *sync.WaitGroup

	// Transport carries proxied requests through httputil.ReverseProxy.
	// Nil: requests to an http:// upstream go over the gate's own HTTP/1.1
	// client (upstream.go: a bounded pool of keep-alive connections, 5 s
	// dial timeout, no response timeout, no proxy from the environment),
	// and requests to an https:// one through a keep-alive *http.Transport
	// of the same settings.
	Transport http.RoundTripper

	// MaxUpstreamConns bounds the connections the gate's own client (or,
	// for an https:// upstream, its own http.Transport) keeps open to the
	// upstream, busy and idle (an open event stream holds one). A request
	// that finds them all busy waits up to 5 s for one, then gets 503 with
	// Retry-After. Zero: DefaultMaxUpstreamConns. Unused with a Transport.
	MaxUpstreamConns int

	// Logger receives the audit log (info) and proxy errors (warn); every
	// line about a request carries its request_id. The caller names it
	// "gate". Nil: a null logger.
	Logger hclog.Logger

	// AuditOutput, when set, takes the "proxied" audit line, one per
	// proxied request, in Logger's place: the gate encodes it itself,
	// byte for byte the line Logger's JSON format would write (hclog's
	// @level, @message, @module and @timestamp, every key in the sorted
	// order of hclog's map, encoding/json's escaping; auditline.go), and
	// passes it whole, newline included, to one Write, only when Logger
	// would log it (IsInfo). Set it only for a Logger with JSONFormat and hclog's
	// default time settings, no implied arguments (With) and no Exclude,
	// and make each Write go where hclog's own go, as whole as theirs
	// (under the Mutex of its LoggerOptions, or to an output that keeps
	// each Write whole), so lines never interleave.
	// Nil: the line goes through Logger (the text format, any other
	// logger).
	AuditOutput io.Writer

	// Metrics receives the outcome of every request and the number of open
	// event streams. Nil: nothing is counted.
	Metrics Metrics

	// MCPAuditBytes bounds how much of a proxied POST's JSON body
	// (Content-Type application/json) is read to name the JSON-RPC method,
	// the tool (tools/call) and the resource URI (resources/read) in the
	// audit line. The upstream receives the same bytes either way, and a
	// longer body streams through. Read only while the logger logs at info.
	// Zero: DefaultMCPAuditBytes; negative: bodies are not read.
	MCPAuditBytes int

	// Now is the clock of the audit log's sampling and durations (the
	// limiters have their own). Nil: time.Now.
	Now func() time.Time
}

// gate is the http.Handler New returns.
type gate struct {
	verifier     Verifier
	upstream     Upstream
	restarts     bool   // Config.UpstreamRestarts
	upstreamPath string // "" or "/x" (no trailing slash), escaped form in upstreamRaw
	upstreamRaw  string

	public     map[string]map[string]http.Handler // path -> method -> handler
	allow      map[string][]string                // path -> Allow header value
	publicCORS map[string]*cors                   // path -> its CORS, when not g.cors

	allowList      *AllowList
	requiredScopes []string

	maxTokenBytes int
	maxBodyBytes  int64
	bodyTimeout   time.Duration

	cors    cors
	trusted []netip.Prefix

	subLimits Admitter          // nil: no per-subject limit or revocation check
	ipLimits  FailureLimiter    // nil: no failed-auth limit
	inFlight  *inflight.Counter // requests in flight per subject; nil: no bound

	chal     challenges
	sessions *sessions              // binds MCP session IDs to subjects (session.go)
	proxy    *httputil.ReverseProxy // for a Transport, or an https upstream
	conns    *upstreamPool          // the gate's own client; nil with a Transport
	shutdown context.Context        // nil: streams are not ended early
	detached *sync.WaitGroup        // nil: detached streams are not counted
	log      hclog.Logger
	audit    *sampler
	auditOut io.Writer // Config.AuditOutput; nil: proxied lines go through log
	module   string    // log's name: the @module of lines written to auditOut
	lines    sync.Pool // of *[]byte: the buffers of lines written to auditOut
	now      func() time.Time
	metrics  Metrics // nil: none

	auditBytes int        // 0: bodies are not read
	auditPool  *sync.Pool // of *[]byte of auditBytes

	policy     *policy.Policy // nil: none
	maxListing int            // bytes of a listing answer filtered
}

// New validates cfg and returns the gateway's handler. It starts no
// goroutine.
func New(cfg Config) (http.Handler, error) {
	if err := checkConfig(&cfg); err != nil {
		return nil, err
	}
	g := newGate(&cfg)
	policies, err := g.addPublic(cfg.Public)
	if err != nil {
		return nil, err
	}
	if err := g.setCORS(cfg.CORSOrigins, selfOrigin(cfg.ResourceMetadataURL), policies); err != nil {
		return nil, err
	}
	g.setProxy(cfg.Transport, cfg.MaxUpstreamConns, cfg.UpstreamRootCAs)
	return g, nil
}

// checkConfig refuses what only a programmer gets wrong: a missing
// verifier or upstream, a resource metadata URL that is not absolute, an
// upstream path not starting with "/". Public routes are checked as they
// are added (addPublic).
func checkConfig(cfg *Config) error {
	if cfg.Verifier == nil {
		return errors.New("new gate: no verifier")
	}
	if cfg.Upstream == nil {
		return errors.New("new gate: no upstream")
	}
	if u, err := url.Parse(cfg.ResourceMetadataURL); err != nil || !u.IsAbs() {
		return fmt.Errorf("new gate: resource metadata url %q is not absolute", cfg.ResourceMetadataURL)
	}
	if up := strings.TrimRight(cfg.UpstreamPath, "/"); up != "" && !strings.HasPrefix(up, "/") {
		return fmt.Errorf("new gate: upstream path %q does not start with /", cfg.UpstreamPath)
	}
	if n := len(cfg.SessionKey); n != 0 && n != 32 {
		return fmt.Errorf("new gate: session key of %d bytes, want 32", n)
	}
	return nil
}

// newGate is the gate of a checked cfg without its routes, CORS and proxy:
// the decisions' settings with their defaults, the challenges, and the
// audit log's sampler, body buffers and line buffers.
func newGate(cfg *Config) *gate {
	up := strings.TrimRight(cfg.UpstreamPath, "/")
	g := &gate{
		verifier:       cfg.Verifier,
		upstream:       cfg.Upstream,
		restarts:       cfg.UpstreamRestarts,
		upstreamPath:   up,
		upstreamRaw:    up, // needs no escaping (Config.UpstreamPath)
		public:         map[string]map[string]http.Handler{},
		allow:          map[string][]string{},
		publicCORS:     map[string]*cors{},
		allowList:      NewAllowList(cfg.AllowSubs, cfg.AllowEmails, cfg.AllowGroups),
		requiredScopes: cfg.RequiredScopes,
		maxTokenBytes:  cfg.MaxTokenBytes,
		maxBodyBytes:   cfg.MaxBodyBytes,
		bodyTimeout:    cfg.BodyTimeout,
		trusted:        cfg.TrustedProxies,
		log:            cfg.Logger,
		auditOut:       cfg.AuditOutput,
		now:            cfg.Now,
		shutdown:       cfg.Shutdown,
		detached:       cfg.Detached,
		metrics:        cfg.Metrics,
		subLimits:      cfg.SubjectLimiter,
		ipLimits:       cfg.FailedAuthLimiter,
		inFlight:       inflight.New(cfg.MaxConcurrentPerSubject),
		policy:         cfg.Policy,
		maxListing:     cfg.MaxListingBytes,
	}
	if g.maxListing <= 0 {
		g.maxListing = policy.DefaultListingCap
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.maxTokenBytes <= 0 {
		g.maxTokenBytes = DefaultMaxTokenBytes
	}
	if g.maxBodyBytes <= 0 {
		g.maxBodyBytes = DefaultMaxBodyBytes
	}
	g.sessions = newSessions(cfg.SessionKey)
	g.chal = newChallenges(cfg.ResourceMetadataURL, withoutOfflineAccess(cfg.ChallengeScopes), cfg.RequiredScopes)

	if g.log == nil {
		g.log = hclog.NewNullLogger()
	}
	g.module = g.log.Name()
	g.lines.New = func() any { b := make([]byte, 0, 1024); return &b }
	g.audit = newSampler(g.log, 20, g.now)
	switch {
	case cfg.MCPAuditBytes == 0:
		g.auditBytes = DefaultMCPAuditBytes
	case cfg.MCPAuditBytes > 0:
		g.auditBytes = cfg.MCPAuditBytes
	}
	if size := g.auditBytes; size > 0 {
		g.auditPool = &sync.Pool{New: func() any { b := make([]byte, size); return &b }}
	}
	return g
}

// addPublic adds the public routes: exact paths, each method once, HEAD
// answered as GET unless listed, and the Allow header of each path's 405.
// It returns each path's Route.CORS, which must be the same for every
// method of a path.
func (g *gate) addPublic(routes []Route) (map[string]string, error) {
	policies := map[string]string{} // path -> Route.CORS
	for _, rt := range routes {
		if rt.Handler == nil || rt.Method == "" {
			return nil, fmt.Errorf("new gate: public route %q needs a method and a handler", rt.Path)
		}
		if status, reason := checkPath(rt.Path); status != 0 {
			return nil, fmt.Errorf("new gate: public route %q: %s", rt.Path, reason)
		}
		m := g.public[rt.Path]
		if m == nil {
			m = map[string]http.Handler{}
			g.public[rt.Path] = m
		}
		if _, dup := m[rt.Method]; dup {
			return nil, fmt.Errorf("new gate: public route %s %s listed twice", rt.Method, rt.Path)
		}
		m[rt.Method] = rt.Handler
		if policies[rt.Path] != rt.CORS && len(m) > 1 {
			return nil, fmt.Errorf("new gate: public routes of %q differ in CORS policy", rt.Path)
		}
		policies[rt.Path] = rt.CORS
	}
	for path, m := range g.public {
		if h, ok := m[http.MethodGet]; ok {
			if _, ok := m[http.MethodHead]; !ok {
				m[http.MethodHead] = h
			}
		}
		methods := make([]string, 0, len(m))
		for meth := range m {
			methods = append(methods, meth)
		}
		sortStrings(methods)
		g.allow[path] = []string{strings.Join(methods, ", ")}
	}
	return policies, nil
}

// setCORS sets the CORS of the gated routes (origins, CORSOrigins) and of
// each public path by its policy (path -> Route.CORS): the gated routes',
// any origin, or only self, the resource's own origin.
func (g *gate) setCORS(origins []string, self string, policies map[string]string) error {
	g.cors = newCORS(origins)
	anyOrigin, sameOrigin := newCORS([]string{"*"}), newCORS([]string{self})
	for path, policy := range policies {
		switch policy {
		case CORSAllowed:
		case CORSAnyOrigin:
			g.publicCORS[path] = &anyOrigin
		case CORSSameOrigin:
			g.publicCORS[path] = &sameOrigin
		default:
			return fmt.Errorf("new gate: public route %q: unknown CORS policy %q", path, policy)
		}
	}
	return nil
}

// setProxy sets how requests reach the upstream: through transport with
// httputil.ReverseProxy; or, when transport is nil, over the gate's own
// client (a pool of at most maxConns connections, DefaultMaxUpstreamConns
// when not positive) for an http:// upstream, and a keep-alive
// http.Transport of the same settings for an https:// one, verifying its
// certificate against roots (nil: the system's).
func (g *gate) setProxy(transport http.RoundTripper, maxConns int, roots *x509.CertPool) {
	if transport == nil {
		if maxConns <= 0 {
			maxConns = DefaultMaxUpstreamConns
		}
		g.conns = newUpstreamPool(maxConns, time.Now) // real time: it closes real connections
		transport = &http.Transport{
			Proxy:       nil, // never an HTTP_PROXY from the environment for the child
			DialContext: (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
			// HTTP/1.1 only (a DialContext keeps net/http from trying
			// HTTP/2), verified as always: never InsecureSkipVerify.
			TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			// Connecting is bounded as on the http path: a server that
			// accepts and never completes the handshake is 502, not a
			// request that hangs. net/http dials apart from the request,
			// and a request whose body it has not read yet does not see
			// its client leave, so this bound is the only one.
			TLSHandshakeTimeout: dialTimeout,
			// Bounded as the gate's own pool is; bounded (proxy.go) gives up
			// waiting for one as the pool does.
			MaxConnsPerHost: maxConns,
			// As the gate's own client reads a head (upstreamparse.go);
			// net/http's default is 10 MiB.
			MaxResponseHeaderBytes: maxResponseHeadBytes,
			MaxIdleConns:           512,
			MaxIdleConnsPerHost:    256,
			IdleConnTimeout:        90 * time.Second,
			ExpectContinueTimeout:  time.Second,
			DisableCompression:     true, // pass Accept-Encoding and bodies through untouched
		}
	}
	g.proxy = &httputil.ReverseProxy{
		Rewrite:   g.rewrite,
		Transport: transport,
		// Zero: ReverseProxy already flushes every write of an event stream
		// or a response of unknown length (chunked), which is what MCP
		// streams are; -1 would run a flush timer for every response.
		FlushInterval:  0,
		BufferPool:     newBufferPool(),
		ModifyResponse: g.modifyResponse,
		ErrorHandler:   g.proxyError,
		ErrorLog:       g.log.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn}),
	}
}

// endInFlight ends the count of w's request in inFlight, if it was
// counted; once.
func (g *gate) endInFlight(w *recorder) {
	if w.counted {
		w.counted = false
		g.inFlight.Done(w.subject)
	}
}

func set(list []string, lower bool) map[string]struct{} {
	m := make(map[string]struct{}, len(list))
	for _, s := range list {
		if lower {
			s = lowerASCIIString(s)
		}
		if s != "" {
			m[s] = struct{}{}
		}
	}
	return m
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// ServeHTTP gives the request its ID, runs the decisions listed in the
// package comment, and reports the outcome to Metrics.
func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &recorder{ResponseWriter: w, id: requestID(r.Header), client: clientIP(r, g.trusted)}
	if g.metrics != nil {
		rec.start = time.Now()
	}
	ids := []string{rec.id}
	w.Header()["X-Request-Id"] = ids
	r.Header["X-Request-Id"] = ids // the proxy copies it to the upstream request
	closeIfAmbiguous(w, r)
	rec.bodyBound = g.boundBody(w, r)
	defer func() {
		if !rec.detached {
			g.endInFlight(rec) // a detached stream's goroutine does, at its end
		}
	}()
	g.serve(rec, r)
	if rec.detached {
		return // the stream's own goroutine reports it when it ends (detach.go)
	}
	g.answered(rec)
	if rec.aborted {
		// What ReverseProxy meant: the server drops the connection, so the
		// client never takes a cut answer for a whole one.
		panic(http.ErrAbortHandler)
	}
}

// boundBody gives the body of r, if it has one, BodyTimeout to arrive, and
// reports whether it did. pass lifts the bound when it admits the request;
// the server lifts it too once the body has been read to its end.
func (g *gate) boundBody(w http.ResponseWriter, r *http.Request) bool {
	if g.bodyTimeout <= 0 || r.ContentLength == 0 {
		return false // no body: nothing to wait for
	}
	err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(g.bodyTimeout)) // real time: a real connection
	return err == nil
}

// answered reports a request's outcome to Metrics, once it is answered.
func (g *gate) answered(rec *recorder) {
	if g.metrics == nil {
		return
	}
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	rule, decision := rec.decidedLabels()
	g.metrics.Request(Outcome{Class: rec.class, Reason: rec.reason, Status: status,
		Duration: time.Since(rec.start), Upstream: rec.upstream, Rule: rule, Decision: decision, Stream: rec.stream})
}

// serve runs the decisions of the package comment, in that order, so the
// order (the security argument) reads top to bottom here as it does there:
// what no token decides (unauthenticated), then the token and what it may
// do, then the body and the proxy (pass).
func (g *gate) serve(w *recorder, r *http.Request) {
	path, done := g.unauthenticated(w, r)
	if done {
		return
	}

	id, ok := g.authenticate(w, r)
	if !ok {
		return
	}
	if !g.allowList.Allows(id) {
		g.reject(w, r, http.StatusForbidden, RejectForbidden, "identity not on the allow-list", id.Subject, bodyForbidden)
		return
	}
	if !hasScopes(id.Scopes, g.requiredScopes) {
		// RFC 6750 §3.1: insufficient_scope, with the scopes needed.
		w.Header()["Www-Authenticate"] = g.chal.insufficientScope
		g.reject(w, r, http.StatusForbidden, RejectInsufficientScope, "missing required scopes", id.Subject, bodyInsufficientScope)
		return
	}
	if !g.admit(w, r, id) {
		return
	}
	if !g.inFlight.Start(id.Subject) {
		w.Header().Set("Retry-After", "1")
		g.reject(w, r, http.StatusTooManyRequests, RejectRateLimited, "subject concurrency limit", id.Subject, bodyRateLimited)
		return
	}
	w.counted, w.subject = true, id.Subject

	if r.ContentLength > g.maxBodyBytes {
		g.reject(w, r, http.StatusRequestEntityTooLarge, RejectTooLarge, "body too large", id.Subject, bodyTooLarge)
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		// The server's own writer: past the limit it closes the connection.
		r.Body = http.MaxBytesReader(w.ResponseWriter, r.Body, g.maxBodyBytes)
	}
	target, ready := g.upstream.Endpoint()
	if !ready {
		w.Header().Set("Retry-After", "1")
		g.reject(w, r, http.StatusServiceUnavailable, RejectUpstreamNotReady, "upstream not ready", id.Subject, bodyUpstreamNotReady)
		return
	}
	g.pass(w, r, id, target, path)
}

// unauthenticated runs the decisions no token takes part in: CORS, a
// refused upgrade, path hygiene, public routes and unknown well-known
// paths. done: it answered the request. path is the clean request path.
func (g *gate) unauthenticated(w *recorder, r *http.Request) (path string, done bool) {
	// CORS first: a preflight never needs a token (Fetch standard), and a
	// foreign Origin is refused before anything else (MCP transport spec,
	// DNS rebinding). A public route may have a policy of its own; the
	// lookup is by the exact raw path, so an unclean one gets g.cors.
	cp := &g.cors
	if pc, ok := g.publicCORS[r.URL.Path]; ok && r.URL.RawPath == "" {
		cp = pc
	}
	if done := cp.handle(w, r); done {
		if w.status == http.StatusForbidden {
			w.class, w.reason = ClassRejected, RejectOrigin
			g.audit.rejected(http.StatusForbidden, "origin not allowed", "", w, r)
		} else {
			w.class = ClassPublic
		}
		return "", true
	}

	// RFC 9110 §7.8: a server may ignore or refuse an upgrade; the gateway
	// refuses it on every route (framing.go). Closing the connection means
	// nothing the client sends after it is read as a request either.
	if wantsUpgrade(r.Header) {
		w.Header().Set("Connection", "close")
		g.reject(w, r, http.StatusBadRequest, RejectBadRequest, "protocol upgrade", "", bodyUpgrade)
		return "", true
	}

	// Path hygiene on the raw request target, before any routing or
	// authorization decision. Go's server does not clean paths for a plain
	// handler, so what is checked here is what the upstream would receive.
	if status, why := checkTarget(r); status != 0 {
		g.reject(w, r, status, RejectPath, why, "", errBadPath(status))
		return "", true
	}
	path = r.URL.Path

	if m, ok := g.public[path]; ok {
		w.class = ClassPublic
		h, ok := m[r.Method]
		if !ok {
			w.Header()["Allow"] = g.allow[path]
			respond.JSON(w, http.StatusMethodNotAllowed, bodyMethodNotAllowed)
			return "", true
		}
		h.ServeHTTP(w, r)
		return "", true
	}
	if path == "/.well-known" || strings.HasPrefix(path, "/.well-known/") {
		w.class = ClassPublic
		respond.JSON(w, http.StatusNotFound, bodyNotFound)
		return "", true
	}
	return path, false
}

// pass handles an admitted request: the JSON-RPC body (with a policy,
// decided; without, named for the audit line), then the proxy to target,
// then the audit line (for a detached stream, when it ends).
func (g *gate) pass(w *recorder, r *http.Request, id *provider.Identity, target *url.URL, path string) {
	if !g.openSession(w, r, id) {
		return
	}
	if w.bodyBound {
		// Admitted: the body may take as long as its client needs.
		_ = http.NewResponseController(w.ResponseWriter).SetReadDeadline(time.Time{})
	}
	if g.shutdown != nil && r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
		if g.shutdown.Err() != nil {
			// Shutdown would end the stream at once: the client should
			// open it again, at another replica or once this one is back.
			w.Header().Set("Retry-After", "1")
			w.Header().Set("Connection", "close")
			g.reject(w, r, http.StatusServiceUnavailable, RejectUpstreamNotReady, "shutting down", id.Subject, bodyShuttingDown)
			return
		}
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		defer context.AfterFunc(g.shutdown, cancel)()
		r = r.WithContext(ctx)
	}

	// What a JSON-RPC body asks for: with a policy, decided (calls.go);
	// without, named in the audit line. Either way the upstream gets the
	// same bytes, and headers that disagree with a body read whole never
	// reach it.
	audit := g.log.IsInfo()
	var c call
	switch {
	case g.policy != nil:
		if !g.decide(w, r, id, &c) {
			return
		}
	case audit && g.auditPool != nil && r.Method == http.MethodPost && r.Body != nil && r.Body != http.NoBody &&
		isJSON(r.Header.Get("Content-Type")):
		if !g.readMCP(w, r, id, &c) {
			return
		}
	}

	if g.policy != nil && r.Method == http.MethodGet && r.Header.Get("Last-Event-Id") != "" {
		// A resumed stream replays what the server sent on the stream it
		// resumes, the answer to a listing included, which no body here
		// asked for: every listing in it is filtered.
		c.lists = mcp.ListTools | mcp.ListResources | mcp.ListPrompts
	}

	w.class = ClassProxied
	w.metrics = g.metrics
	end := proxyEnd{sub: id.Subject, email: id.Email, method: r.Method, path: path, info: c.info, start: g.now(), audit: audit}
	if ab, ok := r.Body.(*auditBody); ok {
		end.body = ab
	}
	w.proxying()
	if g.directTarget(target) {
		w.aborted = g.relay(w, r, target, c.lists, c.subject, &end)
	} else {
		proxy := g.proxy
		if c.lists != 0 {
			proxy = g.listingProxy(w, r, c.lists, c.subject)
		}
		w.aborted = g.forward(proxy, w, r)
	}
	if w.detached {
		return // the stream ends later, on its own goroutine, which calls proxied
	}
	g.proxied(w, &end)
}

// openSession hands the MCP server the session ID it gave, when the
// request's is one the gate gave this subject (session.go), and has the
// answer's session IDs sealed for the subject. Otherwise it answers 404,
// as a server answers a session it does not know, or 400 for several IDs.
func (g *gate) openSession(w *recorder, r *http.Request, id *provider.Identity) bool {
	w.sessions, w.sessionSub = g.sessions, id.Subject
	v, ok := r.Header[sessionHeader]
	if !ok {
		return true
	}
	if len(v) != 1 {
		g.reject(w, r, http.StatusBadRequest, RejectSession, "several session IDs", id.Subject, bodySeveralSessions)
		return false
	}
	inner, ok := g.sessions.open(id.Subject, v[0])
	if !ok {
		g.reject(w, r, http.StatusNotFound, RejectSession, "session ID not given to this subject", id.Subject, bodySessionNotFound)
		return false
	}
	r.Header[sessionHeader] = []string{inner}
	return true
}

// proxyEnd is what the gate needs once a proxied answer ended (proxied):
// copied out of the request, so a detached stream holds no more of it.
type proxyEnd struct {
	sub, email, method, path string
	info                     mcpInfo
	start                    time.Time  // on the gate's clock, for the audit line
	audit                    bool       // the audit line is written
	body                     *auditBody // nil, or the body whose audit buffer goes back
}

// proxied finishes a proxied request once its answer ended: the audit
// buffer goes back, the stream gauge goes down, and the audit line says
// what was answered.
func (g *gate) proxied(w *recorder, e *proxyEnd) {
	if e.body != nil {
		e.body.done()
	}
	if w.stream {
		g.metrics.Stream(-1)
	}
	if !e.audit {
		return
	}
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	rule, _ := w.decidedLabels()
	line := proxiedLine{sub: e.sub, email: e.email, method: e.method, path: e.path, status: status,
		bytes: w.bytes, duration: g.now().Sub(e.start), requestID: w.id, client: w.client, rule: rule, info: &e.info}
	if g.auditOut == nil {
		g.log.Info("proxied", line.args()...)
		return
	}
	if g.log.IsInfo() { // Info's own check, as the level may have changed
		g.writeProxied(&line)
	}
}

// forward proxies r. When the copy of the answer fails (the client went
// away, a stream ended at shutdown) ReverseProxy aborts the handler with
// http.ErrAbortHandler; forward stops that panic so the request is still
// counted and logged (an open stream's gauge still goes down), and reports
// it, for ServeHTTP to raise again at its end. Any other panic goes on.
func (g *gate) forward(proxy *httputil.ReverseProxy, w *recorder, r *http.Request) (aborted bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			aborted = true
		}
	}()
	proxy.ServeHTTP(w, r)
	return false
}

// authenticate reads and verifies the bearer token. When it returns false
// it has written the response.
func (g *gate) authenticate(w *recorder, r *http.Request) (*provider.Identity, bool) {
	// RFC 6750 §2.1: the Authorization header is the only method accepted.
	// A token in the query (§2.3) or a form body (§2.2) is never read.
	values := r.Header["Authorization"]
	switch {
	case len(values) == 0:
		// RFC 6750 §3.1: no error code when the request lacks any
		// authentication information.
		w.Header()["Www-Authenticate"] = g.chal.missing
		g.reject(w, r, http.StatusUnauthorized, RejectNoToken, "no credentials", "", bodyUnauthorized)
		return nil, false
	case len(values) > 1:
		w.Header()["Www-Authenticate"] = g.chal.invalidRequest
		g.reject(w, r, http.StatusBadRequest, RejectBadRequest, "several authorization headers", "", bodyInvalidRequest)
		return nil, false
	}

	// Bound unauthenticated CPU (signature checks) and log volume per
	// client before anything that costs.
	var client string // the failure limit's key; "" without a limit
	if g.ipLimits != nil {
		client = ipKey(w.client).String()
		if ok, wait := g.ipLimits.Peek(r.Context(), client); !ok {
			w.Header().Set("Retry-After", respond.RetryAfter(wait))
			g.reject(w, r, http.StatusTooManyRequests, RejectIPLimited, "failed authentication limit", "", bodyRateLimited)
			return nil, false
		}
	}

	token, status := bearer(values[0], g.maxTokenBytes)
	switch status {
	case bearerOK:
	case bearerTooLarge:
		g.failed(r.Context(), client)
		g.invalidToken(w, r, RejectInvalid, "token too large")
		return nil, false
	default:
		g.failed(r.Context(), client)
		w.Header()["Www-Authenticate"] = g.chal.invalidRequest
		g.reject(w, r, http.StatusUnauthorized, RejectInvalid, "malformed authorization header", "", bodyInvalidRequest)
		return nil, false
	}
	if hasQueryToken(r.URL.RawQuery) {
		// RFC 6750 §2: a client MUST NOT use more than one method; a token
		// in the query would also reach the upstream.
		g.failed(r.Context(), client)
		w.Header()["Www-Authenticate"] = g.chal.invalidRequest
		g.reject(w, r, http.StatusBadRequest, RejectBadRequest, "access_token in query", "", bodyInvalidRequest)
		return nil, false
	}

	id, err := g.verifier.Verify(r.Context(), token)
	if err != nil {
		if errors.Is(err, provider.ErrNotReady) {
			w.Header().Set("Retry-After", "2")
			g.reject(w, r, http.StatusServiceUnavailable, RejectProviderNotReady, "provider keys not loaded", "", bodyProviderNotReady)
			return nil, false
		}
		g.failed(r.Context(), client)
		desc, reason := "invalid token", RejectInvalid
		var te *provider.TokenError
		if errors.As(err, &te) {
			if te.Description != "" {
				desc = te.Description
			}
			switch te.Reason {
			case provider.ReasonExpired:
				reason = RejectExpired
			case provider.ReasonAudience:
				reason = RejectAudience
			}
		}
		g.invalidToken(w, r, reason, desc)
		return nil, false
	}
	if id == nil || id.Subject == "" {
		g.failed(r.Context(), client)
		g.invalidToken(w, r, RejectInvalid, "token has no subject")
		return nil, false
	}
	return id, true
}

const bodyCannotCheckRevocation = `{"error":"unavailable","error_description":"token revocation cannot be checked"}` + "\n"

// admit asks the SubjectLimiter whether the token is revoked and its
// subject within the rate limit. When it returns false it has written the
// response.
func (g *gate) admit(w *recorder, r *http.Request, id *provider.Identity) bool {
	if g.subLimits == nil {
		if len(id.Revocation) > 0 {
			// A wiring error: the verifier left revocation to the gate,
			// which has nothing to check it with. Fail closed.
			w.Header().Set("Retry-After", "2")
			g.reject(w, r, http.StatusServiceUnavailable, RejectProviderNotReady, "token revocation cannot be checked (no subject limiter)", id.Subject, bodyCannotCheckRevocation)
			return false
		}
		return true
	}
	ok, wait, revoked := g.subLimits.Admit(r.Context(), id.Subject, id.Revocation)
	switch {
	case revoked:
		if g.ipLimits != nil {
			g.ipLimits.Spend(r.Context(), ipKey(w.client).String())
		}
		g.invalidToken(w, r, RejectInvalid, "token is revoked")
		return false
	case !ok:
		w.Header().Set("Retry-After", respond.RetryAfter(wait))
		g.reject(w, r, http.StatusTooManyRequests, RejectRateLimited, "subject rate limit", id.Subject, bodyRateLimited)
		return false
	}
	return true
}

// failed records a failed authentication from client (its limit key).
func (g *gate) failed(ctx context.Context, client string) {
	if g.ipLimits != nil {
		g.ipLimits.Spend(ctx, client)
	}
}

// invalidToken answers 401 invalid_token (RFC 6750 §3.1) with a short
// description.
func (g *gate) invalidToken(w *recorder, r *http.Request, reason, desc string) {
	desc = sanitize(desc)
	w.Header()["Www-Authenticate"] = []string{g.chal.invalidToken(desc)}
	g.reject(w, r, http.StatusUnauthorized, reason, "invalid token: "+desc, "", respond.ErrorBody("invalid_token", desc))
}

// AllowList is the allow-list (ALLOW_SUBS, ALLOW_EMAILS, ALLOW_GROUPS), the
// one rule of who may pass: the gate asks it on every request, and main
// hands its Allows to broker mode's login and refresh, so both decide
// alike. Create it with NewAllowList; it is read-only and safe for
// concurrent use.
type AllowList struct {
	subs, emails, groups map[string]struct{}
}

// NewAllowList builds the allow-list: an identity passes if its subject,
// its email (only when verified) or any of its groups is listed. Subjects
// and groups compare byte for byte; emails with ASCII letters folded to
// lower case and every other byte exact (no Unicode folding: U+212A KELVIN
// SIGN is not "k"). All empty: nobody passes.
func NewAllowList(subs, emails, groups []string) *AllowList {
	return &AllowList{subs: set(subs, false), emails: set(emails, true), groups: set(groups, false)}
}

// Allows reports whether id is on the allow-list.
func (a *AllowList) Allows(id *provider.Identity) bool {
	if id == nil {
		return false
	}
	if _, ok := a.subs[id.Subject]; ok {
		return true
	}
	if id.Email != "" && id.EmailVerified && len(a.emails) > 0 {
		if _, ok := a.emails[lowerASCIIString(id.Email)]; ok {
			return true
		}
	}
	for _, grp := range id.Groups {
		if _, ok := a.groups[grp]; ok {
			return true
		}
	}
	return false
}

// selfOrigin is the gateway's own origin as browsers send it in Origin
// (RFC 6454 §6.2: lower-case scheme and host, no default port), from the
// absolute resource metadata URL; "" if it has none.
func selfOrigin(resourceMetadataURL string) string {
	u, err := url.Parse(resourceMetadataURL)
	if err != nil || u.Host == "" {
		return ""
	}
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port == "" || scheme == "https" && port == "443" || scheme == "http" && port == "80" {
		return scheme + "://" + host
	}
	return scheme + "://" + host + ":" + port
}

// lowerASCIIString folds s's ASCII letters to lower case and leaves every
// other byte as it is. An identity comparison that ignores case may fold
// nothing else: strings.ToLower and strings.EqualFold map U+212A KELVIN SIGN
// to "k", so "\u212Aim@example.com" would pass for kim@example.com. It
// allocates only when s has an upper-case ASCII letter.
func lowerASCIIString(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				b[j] = lowerASCII(b[j])
			}
			return string(b)
		}
	}
	return s
}

func hasScopes(have, want []string) bool {
outer:
	for _, w := range want {
		for _, h := range have {
			if h == w {
				continue outer
			}
		}
		return false
	}
	return true
}

// reject writes a gateway error, logs it (sampled under flood) with why,
// and marks the outcome rejected for reason (one of RejectReasons).
func (g *gate) reject(w *recorder, r *http.Request, status int, reason, why, sub string, body string) {
	w.class, w.reason = ClassRejected, reason
	respond.JSON(w, status, body)
	g.audit.rejected(status, why, sub, w, r)
}

// equalFoldASCII reports whether a and b are equal when ASCII letters are
// compared without case. Any other byte must match exactly: unlike
// strings.EqualFold it never folds non-ASCII letters (U+212A KELVIN SIGN is
// not "k", U+017F LATIN SMALL LETTER LONG S is not "s").
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lowerASCII(a[i]) != lowerASCII(b[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
