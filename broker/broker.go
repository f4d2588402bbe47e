// Package broker is broker mode's OAuth 2.1 authorization server: the
// gateway itself is the authorization server MCP clients see. It registers
// clients (RFC 7591) and accepts clients identified by a Client ID Metadata
// Document (fetched SSRF-safely, cached), shows its own consent page, logs the user in at the
// operator's OpenID Connect provider as an ordinary client of it
// (authorization code, PKCE, nonce), checks the allow-list, and issues its
// own short-lived access tokens (RFC 9068 JWTs for RESOURCE_URL) and
// rotating refresh tokens. Its issuer, the iss of its authorization
// responses (RFC 9207) and the aud of its tokens are the gateway's own, so
// they are right by construction whatever the provider does.
//
// It owns the endpoints under /oauth/ and the authorization-server metadata
// (RFC 8414), the keys derived from BROKER_SECRET, and Verify for its own
// access tokens. It does not serve the protected-resource metadata
// (wellknown does), route requests or check bearer tokens on the MCP path
// (the gate does, through a verifier main builds from Verify), fetch the
// provider's discovery document or keys (package provider does), or decide
// the allow-list (main passes the gate's as Config.Allow).
//
// Nothing is kept in this process that another replica would need: client
// registrations, codes and refresh tokens are sealed records (AES-256-GCM
// under a key derived from BROKER_SECRET); what must be remembered (used
// codes, rotated refresh tokens, revoked families and token ids) goes
// through Store; consent and the login in progress live in the browser's
// cookies, sealed too.
package broker

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/redirecturi"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/store"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/tokencache"
)

// Paths of the broker's routes.
const (
	MetadataPath  = "/.well-known/oauth-authorization-server"
	AuthorizePath = "/oauth/authorize"
	ConsentPath   = "/oauth/consent"
	CallbackPath  = "/oauth/callback"
	TokenPath     = "/oauth/token"
	RegisterPath  = "/oauth/register"
	RevokePath    = "/oauth/revoke"
	JWKSPath      = "/oauth/jwks"
)

// Defaults and fixed lifetimes.
const (
	defaultAccessTokenTTL = time.Hour
	defaultSessionTTL     = 30 * 24 * time.Hour
	// A session whose provider gave no refresh token cannot be re-checked
	// at the provider, so it ends after this whatever SessionTTL says.
	maxSessionWithoutUpstreamRefresh = 24 * time.Hour
	codeTTL                          = 60 * time.Second // RFC 6749 §4.1.2: short-lived, used once
	flowTTL                          = 10 * time.Minute // consent page and provider login
	consentTTL                       = 30 * 24 * time.Hour
	defaultHTTPTimeout               = 10 * time.Second
	minSecretLen                     = 32
)

// Upstream models *provider.Provider: the operator's OIDC provider, whose
// discovery document names the endpoints of the upstream login and whose
// keys check its ID tokens.
type Upstream interface {
	// Metadata returns the provider's last good discovery document (which
	// the caller must not modify) or an error if it was never fetched.
	Metadata() (map[string]json.RawMessage, error)
	// KeySet returns the provider's signing keys.
	KeySet() oidc.KeySet
}

// Store models *store.Memory and *store.Redis: what must be
// remembered across requests and replicas. Keys are namespaced by the
// broker ("code:", "gen:", "rt:", "fam:", "jti:", "flow:").
type Store interface {
	// Claim reports whether this is the first claim of key within ttl.
	Claim(ctx context.Context, key string, ttl time.Duration) (first bool, err error)
	// ClaimSince is Claim that also reports, when this is not the first
	// claim, how long ago the first one was.
	ClaimSince(ctx context.Context, key string, ttl time.Duration) (first bool, since time.Duration, err error)
	// Advance moves key on from generation gen to gen+1 for ttl, or
	// reports how long ago gen was superseded and which generation is
	// current (store.Move).
	Advance(ctx context.Context, key string, gen int64, ttl time.Duration) (store.Move, error)
	// Generation is the generation key is at (1 when never advanced),
	// without moving it.
	Generation(ctx context.Context, key string) (int64, error)
	// Revoke remembers key as revoked for at least ttl.
	Revoke(ctx context.Context, key string, ttl time.Duration) error
	// Revoked reports whether any of keys is revoked (or claimed).
	Revoked(ctx context.Context, keys ...string) (bool, error)
}

// Limiter models store.Limiter: a token bucket per key. Allow takes a token
// for key, or says how long until one is free.
type Limiter interface {
	Allow(ctx context.Context, key string) (ok bool, wait time.Duration)
}

// Config configures New. ResourceURL, Upstream and ClientID are required;
// every other field has a documented zero value. The environment variable
// each field comes from is named in its comment; main validates those, New
// only refuses what would be a programming error.
type Config struct {
	// Issuer is the gateway's origin exactly as the protected-resource
	// metadata lists it in authorization_servers: the issuer of the
	// metadata (RFC 8414 §2), the iss of access tokens (RFC 9068 §2.2) and
	// of every authorization response (RFC 9207 §2). Empty means
	// ResourceURL's scheme://host[:port]. An https issuer makes the
	// broker's cookies Secure with the __Host- prefix.
	Issuer string

	// ResourceURL is RESOURCE_URL: the aud of every access token and the
	// only resource a client may name (RFC 8707 §2; anything else is
	// invalid_target).
	ResourceURL string

	// Scopes is SCOPES_SUPPORTED: scopes_supported of the metadata and the
	// scopes a client can be granted. Requested scopes outside it are
	// dropped (RFC 6749 §3.3: the granted scope is returned); a request
	// naming no scope asks for all of them. Empty means none.
	Scopes []string

	// Secret is BROKER_SECRET, at least 32 bytes: the input keying material
	// of HKDF (RFC 5869) for the signing key and the sealing key, so that
	// restarts and replicas agree. Nil means random keys: registrations,
	// codes and tokens do not survive a restart (the caller warns).
	Secret []byte

	// PreviousSecret is BROKER_SECRET_PREVIOUS during a rotation: what was
	// sealed or signed with it is still accepted, and its public key stays
	// in the JWKS; nothing new is made with it. Nil means none.
	PreviousSecret []byte

	// AccessTokenTTL is BROKER_ACCESS_TOKEN_TTL. Zero means 1 h.
	AccessTokenTTL time.Duration

	// SessionTTL is BROKER_SESSION_TTL: the absolute lifetime of a login's
	// refresh tokens, however often they rotate. Zero means 30 days. When
	// the provider gave no refresh token at login, a session lasts at most
	// 24 h.
	SessionTTL time.Duration

	// RefreshReuseGrace is BROKER_REFRESH_REUSE_GRACE: how long after a
	// refresh token's first use it is accepted again, rotating to another
	// refresh token of the same family, rather than taken as leaked (which
	// ends the session). Clients refresh concurrently, or lose an answer
	// and retry. Zero means never: strict one-time use.
	RefreshReuseGrace time.Duration

	// ClockSkew is CLOCK_SKEW: the tolerance for iat and exp of the
	// broker's own tokens (replicas' clocks differ). Zero means none.
	ClockSkew time.Duration

	// Upstream is the operator's provider (a *provider.Provider), run by
	// main. Required.
	Upstream Upstream

	// ClientID and ClientSecret are the gateway's own client at the
	// provider: OIDC_CLIENT_ID / OIDC_CLIENT_SECRET (main falls back to
	// STATIC_CLIENT_ID / STATIC_CLIENT_SECRET). ClientID is required and is
	// the audience ID tokens must carry. An empty ClientSecret makes the
	// gateway a public client at the provider (PKCE only).
	ClientID     string
	ClientSecret string

	// UpstreamScopes is OIDC_SCOPES: the scopes of the upstream login.
	// Nil means openid, email and profile. offline_access is added when the
	// provider's discovery document lists it, so the provider gives a
	// refresh token the broker can re-check the user with.
	UpstreamScopes []string

	// UpstreamParams are extra parameters of the upstream authorization
	// request. Nil means access_type=offline for Google
	// (https://accounts.google.com, which gives refresh tokens only so)
	// and nothing for any other provider.
	UpstreamParams map[string]string

	// GroupsClaim is GROUPS_CLAIM: the claim of the ID token (or userinfo)
	// holding the user's groups. Empty means "groups".
	GroupsClaim string

	// RedirectURIs is REGISTER_REDIRECT_URIS: exact redirect URIs, or the
	// loopback patterns "http://127.0.0.1:*", "http://localhost:*" and
	// "http://[::1]:*" (any port, then optionally an exact path).
	// Registration accepts only redirect URIs they allow; of a Client ID
	// Metadata Document's redirect URIs, the others are ignored. Empty
	// leaves only the built-in rules (https, http loopback, private-use
	// schemes).
	RedirectURIs []string

	// RedirectSchemes is REGISTER_REDIRECT_SCHEMES: private-use URI schemes
	// without a dot (lower case, each passed redirecturi.CheckScheme) whose
	// redirect URIs registrations and metadata documents may use, beside
	// what redirecturi.Check always allows. Empty: none.
	RedirectSchemes []string

	// Allow decides whether a user the provider logged in may use the
	// gateway; it is asked at login and at every refresh. Main passes the
	// gate's allow-list. Nil allows everyone the provider vouches for.
	Allow func(*provider.Identity) bool

	// GrantScopes decides which of the requested scopes (already limited
	// to Scopes, and shown on the consent page) a user is granted, at login
	// and again at every refresh, so a user who lost a group loses its
	// scopes within one access-token lifetime and one who gained one gets
	// it at the next refresh. The scopes requested at login stay the
	// ceiling (RFC 6749 §6). Anything it returns outside requested is
	// ignored. Nil grants everything requested. (main sets it from
	// BROKER_SCOPE_GRANTS when MCP_POLICY names scopes.)
	GrantScopes func(id *provider.Identity, requested []string) []string

	// Store remembers used codes, rotated refresh tokens and revocations.
	// Nil means a new store.Memory with default bounds (not shared between
	// replicas, lost on restart: see store.Memory).
	Store Store

	// CallerChecksRevocation leaves the revocation check of Verify's tokens
	// to its caller: Verify does not ask Store, and the identity it returns
	// names the token's revocation keys ("jti:<jti>", "fam:<family>") in
	// provider.Identity.Revocation, which the caller MUST check against
	// Store before admitting a request. Main sets it because the gate's
	// admission checks them in the same round trip as the subject's rate
	// limit (and, when Redis is down, from the replica's own state, so that
	// verifying an access token never needs Redis). False means Verify asks
	// Store on every call and answers provider.ErrNotReady when it cannot.
	CallerChecksRevocation bool

	// IPLimiter limits requests to the authorization, consent, token and
	// revocation endpoints per client IP (keys "broker-ip:<ip>"). Nil means
	// no limit.
	IPLimiter Limiter

	// ClientLimiter limits token and revocation requests per confidential
	// client, once it has proved its secret (keys "broker-client:<hash of
	// the client_id>"). Public clients are not charged: their client_id
	// is no secret, so anyone could spend a budget keyed by it for every
	// user of that client; IPLimiter bounds them. Nil means no limit.
	ClientLimiter Limiter

	// CIMDAllowHosts is CIMD_ALLOW_HOSTS: hosts ("host" or "host:port"; an
	// IPv6 address in brackets when a port follows) whose Client ID
	// Metadata Documents are fetched whatever address they resolve to,
	// loopback and private ones included, and over http as well as https:
	// for tests and clients inside the operator's network. An entry
	// without a port allows every port. Every other document is fetched
	// over https from public addresses only; nothing else loosens that.
	// Nil means none.
	CIMDAllowHosts []string

	// CIMDRootCAs are the certificate authorities trusted when fetching
	// Client ID Metadata Documents over https. Nil means the system roots
	// (on Linux, SSL_CERT_FILE and SSL_CERT_DIR choose them). Main leaves
	// it nil; tests set it to trust their own server.
	CIMDRootCAs *x509.CertPool

	// DisableCIMD is CIMD_ENABLED=false, for gateways that cannot fetch
	// from the internet: the metadata does not advertise
	// client_id_metadata_document_supported, so clients register instead
	// (hosted clients such as claude.ai use a metadata document whenever it
	// is advertised, and its fetch would fail there), and a client_id that
	// is a URL is refused as invalid_client without fetching anything.
	// False, the zero value, accepts Client ID Metadata Documents.
	DisableCIMD bool

	// RegisterLimiter limits registrations per client IP (keys
	// "broker-register:<ip>"). Nil means no limit.
	RegisterLimiter Limiter

	// ClientIP returns the IP a request is rate limited by. Nil means the
	// host of r.RemoteAddr; main passes the gate's, which knows the trusted
	// proxies. It MUST NOT trust client-sent headers.
	ClientIP func(*http.Request) string

	// HTTPClient makes the requests to the provider's token and userinfo
	// endpoints. Nil means a client with a 10 s timeout (never
	// http.DefaultClient).
	HTTPClient *http.Client

	// VerifyCacheTTL is how long Verify remembers a verified access token
	// (never past its exp; revocation is checked on every call). Zero
	// means 60 s; negative disables the cache.
	VerifyCacheTTL time.Duration

	// VerifyCacheSize bounds the remembered tokens. Zero means 10000.
	VerifyCacheSize int

	// Logger is the broker logger. Nil means hclog.NewNullLogger().
	Logger hclog.Logger

	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

// Route is one public route of the broker: main turns each into a gate
// route (exact method and path, never proxied).
type Route struct {
	Method  string
	Path    string
	Handler http.Handler
}

// Broker is broker mode's authorization server. Create it with New; its
// handlers and Verify are safe for concurrent use. It starts nothing.
type Broker struct {
	issuer      string
	origin      string // the issuer's origin as browsers send it (RFC 6454 §6.2)
	resource    string
	scopes      []string
	accessTTL   time.Duration
	sessionTTL  time.Duration
	reuseGrace  time.Duration
	skew        time.Duration
	upstream    Upstream
	clientID    string
	secret      string
	upScopes    []string
	upParams    map[string]string
	groupsClaim string
	redirects   redirecturi.List
	schemes     []string // Config.RedirectSchemes
	allow       func(*provider.Identity) bool
	grant       func(*provider.Identity, []string) []string
	store       Store
	callerRevs  bool // Config.CallerChecksRevocation
	ipLimit     Limiter
	clientLimit Limiter
	regLimit    Limiter
	clientIP    func(*http.Request) string
	httpClient  *http.Client
	log         hclog.Logger
	now         func() time.Time

	keys    *keyring
	seal    *sealer
	cookies cookieNames
	pages   *template.Template
	csp     string
	cache   *tokencache.Cache[*cacheEntry] // nil when disabled
	fetcher *cimdFetcher
	docs    *docCache
	cimdOff bool // Config.DisableCIMD

	metadata []byte
	jwks     []byte
}

// New checks cfg and derives the keys. It fails only on what would be a
// programming error (a missing required field, a secret shorter than 32
// bytes, a malformed URL); main validates the settings first.
func New(cfg Config) (*Broker, error) {
	issuer, iu, err := checkConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("new broker: %w", err)
	}
	redirects, err := redirecturi.ParseList(cfg.RedirectURIs)
	if err != nil {
		return nil, fmt.Errorf("new broker: %w", err)
	}
	allowHosts, err := parseAllowHosts(cfg.CIMDAllowHosts)
	if err != nil {
		return nil, fmt.Errorf("new broker: %w", err)
	}
	keys, err := newKeyring(cfg.Secret, cfg.PreviousSecret)
	if err != nil {
		return nil, fmt.Errorf("new broker: %w", err)
	}

	b := &Broker{
		issuer:      strings.TrimSuffix(issuer, "/"),
		origin:      webOrigin(iu),
		resource:    cfg.ResourceURL,
		scopes:      slices.Clone(cfg.Scopes),
		accessTTL:   cmp.Or(cfg.AccessTokenTTL, defaultAccessTokenTTL),
		sessionTTL:  cmp.Or(cfg.SessionTTL, defaultSessionTTL),
		reuseGrace:  max(cfg.RefreshReuseGrace, 0),
		skew:        cfg.ClockSkew,
		upstream:    cfg.Upstream,
		clientID:    cfg.ClientID,
		secret:      cfg.ClientSecret,
		upScopes:    slices.Clone(cfg.UpstreamScopes),
		upParams:    cfg.UpstreamParams,
		groupsClaim: cmp.Or(cfg.GroupsClaim, "groups"),
		redirects:   redirects,
		schemes:     slices.Clone(cfg.RedirectSchemes),
		allow:       cfg.Allow,
		grant:       cfg.GrantScopes,
		store:       cfg.Store,
		callerRevs:  cfg.CallerChecksRevocation,
		ipLimit:     cfg.IPLimiter,
		clientLimit: cfg.ClientLimiter,
		regLimit:    cfg.RegisterLimiter,
		clientIP:    cfg.ClientIP,
		httpClient:  cfg.HTTPClient,
		log:         cfg.Logger,
		now:         cfg.Now,
		keys:        keys,
	}
	b.fillDefaults()
	b.seal = &sealer{keys: keys.seal, now: b.now}
	b.cimdOff = cfg.DisableCIMD
	b.fetcher = newCIMDFetcher(allowHosts, cfg.CIMDRootCAs)
	b.docs = newDocCache(b.now, cimdCacheSize)
	b.cookies = newCookieNames(iu.Scheme == "https")
	if b.pages, b.csp, err = parsePages(); err != nil {
		return nil, fmt.Errorf("new broker: %w", err)
	}
	b.cache = tokencache.New[*cacheEntry](cfg.VerifyCacheTTL, cfg.VerifyCacheSize)
	if b.metadata, err = b.metadataDoc(); err != nil {
		return nil, fmt.Errorf("new broker: %w", err)
	}
	if b.jwks, err = keys.jwksDoc(); err != nil {
		return nil, fmt.Errorf("new broker: %w", err)
	}
	return b, nil
}

// checkConfig refuses what New cannot work with and returns the issuer,
// as given and parsed: Config.Issuer, or ResourceURL's origin.
func checkConfig(cfg Config) (string, *url.URL, error) {
	res, err := url.Parse(cfg.ResourceURL)
	if err != nil || (res.Scheme != "https" && res.Scheme != "http") || res.Host == "" || res.Fragment != "" {
		return "", nil, fmt.Errorf("resource url %q is not an absolute http(s) URL", cfg.ResourceURL)
	}
	issuer := cfg.Issuer
	if issuer == "" {
		issuer = res.Scheme + "://" + res.Host
	}
	iu, err := url.Parse(issuer)
	if err != nil || (iu.Scheme != "https" && iu.Scheme != "http") || iu.Host == "" || iu.RawQuery != "" || iu.Fragment != "" {
		return "", nil, fmt.Errorf("issuer %q is not an absolute http(s) URL without query or fragment", issuer)
	}
	switch {
	case cfg.Upstream == nil:
		return "", nil, errors.New("no upstream provider")
	case cfg.ClientID == "":
		return "", nil, errors.New("no client id at the provider")
	case cfg.Secret != nil && len(cfg.Secret) < minSecretLen:
		return "", nil, fmt.Errorf("secret is %d bytes, want at least %d", len(cfg.Secret), minSecretLen)
	case cfg.PreviousSecret != nil && len(cfg.PreviousSecret) < minSecretLen:
		return "", nil, fmt.Errorf("previous secret is %d bytes, want at least %d", len(cfg.PreviousSecret), minSecretLen)
	case cfg.AccessTokenTTL < 0, cfg.SessionTTL < 0, cfg.ClockSkew < 0:
		return "", nil, errors.New("negative lifetime or skew")
	}
	for _, e := range cfg.RedirectURIs {
		if strings.TrimSpace(e) == "" {
			continue
		}
		if err := CheckRedirectURI(e, cfg.RedirectSchemes); err != nil {
			return "", nil, err
		}
	}
	return issuer, iu, nil
}

// fillDefaults gives the optional fields left zero their documented
// defaults.
func (b *Broker) fillDefaults() {
	if b.upScopes == nil {
		b.upScopes = []string{"openid", "email", "profile"}
	}
	if !slices.Contains(b.upScopes, "openid") {
		b.upScopes = append([]string{"openid"}, b.upScopes...)
	}
	if b.log == nil {
		b.log = hclog.NewNullLogger()
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.store == nil {
		b.store = store.NewMemory(store.MemoryConfig{Now: b.now})
	}
	if b.clientIP == nil {
		b.clientIP = remoteHost
	}
	if b.httpClient == nil {
		b.httpClient = &http.Client{Timeout: defaultHTTPTimeout}
	}
}

// Issuer is the broker's issuer identifier (RFC 8414 §2): the gateway's
// origin.
func (b *Broker) Issuer() string { return b.issuer }

// Routes returns the broker's public routes: the authorization-server
// metadata and its endpoints under /oauth/. /.well-known/openid-configuration
// is not among them on purpose: the broker is an OAuth authorization server,
// not an OpenID provider (it issues no ID tokens), and MCP clients try the
// RFC 8414 path first.
func (b *Broker) Routes() []Route {
	return []Route{
		{http.MethodGet, MetadataPath, http.HandlerFunc(b.serveMetadata)},
		{http.MethodGet, JWKSPath, http.HandlerFunc(b.serveJWKS)},
		{http.MethodGet, AuthorizePath, http.HandlerFunc(b.serveAuthorize)},
		{http.MethodPost, ConsentPath, http.HandlerFunc(b.serveConsent)},
		{http.MethodGet, CallbackPath, http.HandlerFunc(b.serveCallback)},
		{http.MethodPost, TokenPath, http.HandlerFunc(b.serveToken)},
		{http.MethodPost, RegisterPath, http.HandlerFunc(b.serveRegister)},
		{http.MethodPost, RevokePath, http.HandlerFunc(b.serveRevoke)},
	}
}

// Handler serves Routes on one mux (exact method and path), for tests and
// for anyone mounting the broker outside the gate.
func (b *Broker) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, r := range b.Routes() {
		mux.Handle(r.Method+" "+r.Path, r.Handler)
	}
	return mux
}

// webOrigin serializes u's origin as browsers do in Origin: lower-case
// scheme and host, no default port.
func webOrigin(u *url.URL) string {
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port == "" || (u.Scheme == "https" && port == "443") || (u.Scheme == "http" && port == "80") {
		return u.Scheme + "://" + host
	}
	return u.Scheme + "://" + host + ":" + port
}

// remoteHost is the host of r.RemoteAddr.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// limited asks l for key and reports whether the request may go on; when
// it may not, wait says for how long.
func limited(ctx context.Context, l Limiter, key string) (wait time.Duration, over bool) {
	if l == nil {
		return 0, false
	}
	ok, wait := l.Allow(ctx, key)
	return wait, !ok
}
