// Package wellknown owns the discovery documents an MCP client reads before
// it can log in, and the static-client registration endpoint:
//
//   - RFC 9728 protected-resource metadata, at the root well-known path and at
//     the path-suffixed form for a RESOURCE_URL with a path;
//   - in facade mode, RFC 8414 authorization-server metadata (also served as
//     an OpenID configuration), built from the provider's discovery document
//     with the issuer rewritten to the gateway's origin;
//   - in facade mode with a static client, RFC 7591 registration answered
//     with the pre-created client.
//
// In broker mode it serves the protected-resource metadata alone: package
// broker serves the authorization-server metadata and registration.
//
// It does not fetch the provider's discovery document (package provider does,
// with caching, background refresh and stale serving), route requests or
// answer unknown paths (package gate does, and answers a wrong method before
// these handlers see it), build challenges (the gate does, from
// ResourceMetadataURL), or keep the registration limit's budgets
// (RegisterLimiter does). Every URL it publishes comes from configuration,
// never from the request's Host or X-Forwarded-* headers.
package wellknown

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/redirecturi"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/respond"
)

// Modes of Config.Mode.
const (
	ModeFacade = "facade"
	ModeDirect = "direct"
	// ModeBroker: the gateway is itself the authorization server (package
	// broker serves its metadata and registration); the protected-resource
	// metadata names the gateway's origin, as in facade mode.
	ModeBroker = "broker"
)

// Paths served by this package.
const (
	ProtectedResourcePath   = "/.well-known/oauth-protected-resource"
	AuthorizationServerPath = "/.well-known/oauth-authorization-server"
	OpenIDConfigurationPath = "/.well-known/openid-configuration"
	RegisterPath            = "/oauth/register"
)

// Metadata models *provider.Provider.
type Metadata interface {
	// Metadata returns the provider's last good discovery document, which
	// the caller must not mutate, or an error if it was never fetched.
	Metadata() (map[string]json.RawMessage, error)
	// MetadataMaxAge is how long clients may cache documents built from it.
	MetadataMaxAge() time.Duration
}

// DefaultRegisterPerIPPerMinute is the rate (and burst) of the
// RegisterLimiter the gateway is wired with.
const DefaultRegisterPerIPPerMinute = 20

// Limiter models *store.Limiter: Allow takes a token from key's budget, or
// says how long until one is left.
type Limiter interface {
	Allow(ctx context.Context, key string) (ok bool, wait time.Duration)
}

// Config configures a Server. See New for what is required.
type Config struct {
	// ResourceURL is RESOURCE_URL exactly as configured: an absolute http or
	// https URL without query, fragment or user information, possibly with
	// a path; the caller validates it. It is the "resource" of the
	// protected-resource metadata, verbatim (RFC 9728 §3.3).
	ResourceURL string

	// Mode is ModeFacade (the gateway advertises itself as the authorization
	// server), ModeDirect (it advertises the provider's issuer) or
	// ModeBroker (it advertises itself, and serves nothing else here).
	// Empty means ModeFacade.
	Mode string

	// IssuerURL is the provider's issuer as configured. In direct mode it is
	// the authorization_servers entry unless the provider's discovery
	// document, once fetched, names its issuer.
	IssuerURL string

	// Scopes is SCOPES_SUPPORTED and the scopes MCP_POLICY names:
	// scopes_supported of every document and the scope of registration
	// answers. offline_access is never listed in the protected-resource
	// metadata (MCP 2026-07-28 authorization: whether a client gets
	// refresh tokens is the authorization server's business), and in the
	// facade's authorization-server metadata only when the provider's own
	// document lists it. Empty omits them (the authorization server
	// metadata then keeps the provider's own).
	Scopes []string

	// StaticClientID and StaticClientSecret, both set, enable registration
	// (facade mode only): every registration is answered with this client.
	StaticClientID     string
	StaticClientSecret string

	// RedirectURIs is REGISTER_REDIRECT_URIS (redirecturi.List): exact
	// URIs, or the loopback patterns "http://127.0.0.1:*",
	// "http://localhost:*" and "http://[::1]:*" (any port; a path after the
	// port must match exactly when given, any path otherwise). Registration
	// accepts the redirect URIs it lists, and only those. Empty accepts those
	// redirecturi.Check allows (https, http on loopback, private-use schemes
	// with a dot).
	RedirectURIs []string

	// RedirectSchemes is REGISTER_REDIRECT_SCHEMES: private-use URI schemes
	// without a dot (lower case, each passed redirecturi.CheckScheme) whose
	// redirect URIs registration accepts when RedirectURIs is empty, beside
	// what redirecturi.Check always allows. Empty: none.
	RedirectSchemes []string

	// RegisterLimiter limits registrations per client, keyed by ClientKey;
	// past it the answer is 429 with Retry-After. Nil: no limit.
	RegisterLimiter Limiter

	// ClientKey returns the key a registration is limited by: the client's
	// address, an IPv6 client's /64 (gate.ClientKey, which knows the trusted
	// proxies). It MUST NOT trust client-sent headers. Required with
	// RegisterLimiter.
	ClientKey func(*http.Request) string

	// Metadata is the provider's discovery document. Required in facade
	// mode; optional in direct mode (used only for the issuer).
	Metadata Metadata

	// Logger is the wellknown logger. Nil means hclog.NewNullLogger().
	Logger hclog.Logger

	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

// Server serves the discovery documents and registration. Create it with New;
// its handlers are safe for concurrent use.
type Server struct {
	cfg         Config
	origin      string // scheme://host[:port] of ResourceURL
	resourceMD  string // absolute URL of the protected-resource metadata
	prmPaths    []string
	prm         []byte   // protected-resource metadata for cfg.IssuerURL (direct) or the origin (facade)
	prmIssuer   docCache // direct mode: the same, for the issuer named by the provider's document
	asDoc       docCache // facade mode: authorization-server metadata
	redirects   redirecturi.List
	limiter     Limiter // nil: no registration limit
	logger      hclog.Logger
	now         func() time.Time
	prmHandler  http.Handler
	asHandler   http.Handler
	regHandler  http.Handler
	registering bool
}

// New validates cfg and precomputes the protected-resource metadata. It
// needs ResourceURL; Metadata in facade mode; IssuerURL in direct mode; both
// or neither of the static client's id and secret, and a static client only
// in facade mode. It starts nothing.
func New(cfg Config) (*Server, error) {
	if cfg.Mode == "" {
		cfg.Mode = ModeFacade
	}
	if cfg.Mode != ModeFacade && cfg.Mode != ModeDirect && cfg.Mode != ModeBroker {
		return nil, fmt.Errorf("new wellknown: mode %q is not %q, %q or %q", cfg.Mode, ModeFacade, ModeDirect, ModeBroker)
	}
	u, err := parseResourceURL(cfg.ResourceURL)
	if err != nil {
		return nil, fmt.Errorf("new wellknown: %w", err)
	}
	if cfg.Mode == ModeFacade && cfg.Metadata == nil {
		return nil, errors.New("new wellknown: facade mode needs the provider's metadata")
	}
	if cfg.Mode == ModeDirect && cfg.IssuerURL == "" {
		return nil, errors.New("new wellknown: direct mode needs the issuer url")
	}
	if (cfg.StaticClientID == "") != (cfg.StaticClientSecret == "") {
		return nil, errors.New("new wellknown: static client id and secret must be set together")
	}
	registering := cfg.StaticClientID != ""
	if registering && cfg.Mode != ModeFacade {
		return nil, errors.New("new wellknown: a static client needs facade mode")
	}
	if cfg.RegisterLimiter != nil && cfg.ClientKey == nil {
		return nil, errors.New("new wellknown: a register limiter needs a client key")
	}
	redirects, err := redirecturi.ParseList(cfg.RedirectURIs)
	if err != nil {
		return nil, fmt.Errorf("new wellknown: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Scopes = append([]string(nil), cfg.Scopes...)

	s := &Server{
		cfg:         cfg,
		origin:      u.Scheme + "://" + u.Host,
		redirects:   redirects,
		logger:      cfg.Logger,
		now:         cfg.Now,
		registering: registering,
	}
	// RFC 9728 §3.1: the well-known path goes between the host and the
	// resource's path; a path of "/" alone adds nothing.
	s.prmPaths = []string{ProtectedResourcePath}
	s.resourceMD = s.origin + ProtectedResourcePath
	if p := u.Path; p != "" && p != "/" {
		s.prmPaths = append(s.prmPaths, ProtectedResourcePath+p)
		s.resourceMD += u.EscapedPath()
		// Clients (the MCP TypeScript SDK) strip a trailing slash before
		// building the path-suffixed form: serve that one too.
		if trimmed := strings.TrimRight(p, "/"); trimmed != p && trimmed != "" {
			s.prmPaths = append(s.prmPaths, ProtectedResourcePath+trimmed)
		}
	}
	as := s.origin
	if cfg.Mode == ModeDirect {
		as = cfg.IssuerURL
	}
	if s.prm, err = s.protectedResourceDoc(as); err != nil {
		return nil, fmt.Errorf("new wellknown: %w", err)
	}
	if registering {
		s.limiter = cfg.RegisterLimiter
	}
	s.prmHandler = http.HandlerFunc(s.serveProtectedResource)
	s.asHandler = http.HandlerFunc(s.serveAuthorizationServer)
	s.regHandler = http.HandlerFunc(s.serveRegister)
	return s, nil
}

// parseResourceURL parses RESOURCE_URL, which the caller validated (an
// absolute http(s) URL without query, fragment or user information, RFC
// 9728 §1.2): only a URL without a scheme or host is refused here, as a
// programmer error.
func parseResourceURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("resource url %q is not an absolute URL", raw)
	}
	return u, nil
}

// ProtectedResourcePaths returns the paths the protected-resource metadata is
// served at: the root form and, when RESOURCE_URL has a path P other than
// "/", the path-suffixed form ProtectedResourcePath+P (and, when P ends in a
// slash, the same without it, as clients build it). Any other suffix is not
// ours: the gate answers 404.
func (s *Server) ProtectedResourcePaths() []string {
	return append([]string(nil), s.prmPaths...)
}

// Origin is the gateway's origin as RESOURCE_URL gives it
// (scheme://host[:port]): the authorization_servers entry of the
// protected-resource metadata in facade and broker mode, which broker mode's
// issuer must equal exactly (RFC 8414 §3.3).
func (s *Server) Origin() string { return s.origin }

// ResourceMetadataURL is the absolute URL of the protected-resource metadata
// for RESOURCE_URL, for the resource_metadata parameter of every challenge
// (RFC 9728 §5.1): origin + ProtectedResourcePath + the resource's path.
func (s *Server) ResourceMetadataURL() string { return s.resourceMD }

// ProtectedResource serves the RFC 9728 protected-resource metadata at any of
// ProtectedResourcePaths (the gate routes exact paths to it).
func (s *Server) ProtectedResource() http.Handler { return s.prmHandler }

// AuthorizationServerPaths returns, in facade mode, the RFC 8414 and OpenID
// discovery paths, both served by AuthorizationServer; in direct mode none.
func (s *Server) AuthorizationServerPaths() []string {
	if s.cfg.Mode != ModeFacade {
		return nil
	}
	return []string{AuthorizationServerPath, OpenIDConfigurationPath}
}

// AuthorizationServer serves the facade's authorization-server metadata.
func (s *Server) AuthorizationServer() http.Handler { return s.asHandler }

// RegisterPath returns "/oauth/register" when a static client is configured,
// else "" (the gate then answers 404 and never proxies the path).
func (s *Server) RegisterPath() string {
	if !s.registering {
		return ""
	}
	return RegisterPath
}

// Register serves RFC 7591 registration with the static client. It answers
// POST only; the gate answers other methods 405.
func (s *Server) Register() http.Handler { return s.regHandler }

// protectedResourceDoc builds the RFC 9728 §2 document naming as as the
// authorization server.
func (s *Server) protectedResourceDoc(as string) ([]byte, error) {
	doc := struct {
		Resource               string   `json:"resource"`
		AuthorizationServers   []string `json:"authorization_servers"`
		ScopesSupported        []string `json:"scopes_supported,omitempty"`
		BearerMethodsSupported []string `json:"bearer_methods_supported"`
	}{
		Resource:               s.cfg.ResourceURL,
		AuthorizationServers:   []string{as},
		ScopesSupported:        withoutOfflineAccess(s.cfg.Scopes),
		BearerMethodsSupported: []string{"header"}, // RFC 6750 §2.1 only; never the query
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode protected resource metadata: %w", err)
	}
	return b, nil
}

func (s *Server) serveProtectedResource(w http.ResponseWriter, r *http.Request) {
	if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	body := s.prm
	if s.cfg.Mode == ModeDirect && s.cfg.Metadata != nil {
		// The provider's document names its issuer exactly (a configured
		// issuer may differ by a trailing slash); clients compare it.
		if m, err := s.cfg.Metadata.Metadata(); err == nil {
			if b, err := s.prmIssuer.get(m, s.directProtectedResourceDoc); err == nil {
				body = b
			}
		}
	}
	respond.Document(w, body, time.Hour)
}

// directProtectedResourceDoc builds the direct-mode document for the issuer
// named by the provider's discovery document, falling back to the configured
// one.
func (s *Server) directProtectedResourceDoc(m map[string]json.RawMessage) ([]byte, error) {
	var iss string
	if err := json.Unmarshal(m["issuer"], &iss); err != nil || iss == "" {
		return s.prm, nil
	}
	return s.protectedResourceDoc(iss)
}

// allowMethods answers 405 with Allow unless r's method is one of methods.
func allowMethods(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	respond.Error(w, http.StatusMethodNotAllowed, "invalid_request", "method not allowed")
	return false
}

// offlineAccess is the scope that asks for refresh tokens (OpenID Connect
// Core §11).
const offlineAccess = "offline_access"

// withoutOfflineAccess returns scopes without offline_access; nil when
// nothing is left.
// grantable is SCOPES_SUPPORTED as the facade's metadata and registration
// answer give it: offline_access only when the provider's metadata pm
// lists it (a client that asks for what the provider does not know fails
// its login).
func grantable(scopes []string, pm map[string]json.RawMessage) []string {
	var theirs []any
	if err := json.Unmarshal(pm["scopes_supported"], &theirs); err != nil || !containsString(theirs, offlineAccess) {
		return withoutOfflineAccess(scopes)
	}
	return scopes
}

func withoutOfflineAccess(scopes []string) []string {
	var out []string
	for _, sc := range scopes {
		if sc != offlineAccess {
			out = append(out, sc)
		}
	}
	return out
}
