// Package provider owns what the gateway knows of the operator's OpenID
// Connect provider: its discovery document (OpenID Connect Discovery 1.0 §4),
// its signing keys (the JWKS at jwks_uri, RFC 7517 §5), and the verification of
// bearer JWT access tokens (RFC 9068, RFC 7519 §7.2) against them, with a small
// cache of verified tokens.
//
// It does not decide who may pass (allow-lists and rate limits belong to the
// gate), route HTTP requests, or build discovery documents for clients
// (wellknown does, from Metadata).
//
// A Provider is an oklog/run actor: Run fetches the discovery document and the
// keys, retrying with backoff until both are loaded, then refreshes them in the
// background, keeping the last good copies through a provider outage.
package provider

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/tokencache"
)

// ErrNotReady is returned by Verify and Metadata until the provider's keys
// (or, for Metadata, its discovery document) have been loaded once. The gate
// answers 503 with Retry-After.
var ErrNotReady = errors.New("provider: signing keys not loaded yet")

// Defaults and bounds.
const (
	defaultRefreshCooldown = 30 * time.Second
	defaultGroupsClaim     = "groups"
	defaultHTTPTimeout     = 10 * time.Second

	// The discovery document is refreshed per its Cache-Control max-age,
	// clamped to [minDocMaxAge, maxDocMaxAge], defaultDocMaxAge without one.
	minDocMaxAge     = time.Minute
	maxDocMaxAge     = 24 * time.Hour
	defaultDocMaxAge = time.Hour

	// The JWKS is refreshed per its Cache-Control max-age clamped to
	// [minJWKSRefresh, maxJWKSRefresh], defaultJWKSRefresh without one. Keys
	// published between two refreshes are picked up by the unknown-kid path.
	minJWKSRefresh     = 5 * time.Minute
	maxJWKSRefresh     = 15 * time.Minute
	defaultJWKSRefresh = 10 * time.Minute

	// A failed background refresh is retried after this (or the normal
	// interval, when shorter); the last good copy stays in use meanwhile.
	refreshRetry = time.Minute

	maxBodySize = 1 << 20 // discovery document and JWKS
)

// Config configures a Provider. Only IssuerURL and Audiences are required.
type Config struct {
	// IssuerURL is the provider's issuer as configured. One trailing slash on
	// either side is tolerated when comparing it with the discovery
	// document's issuer and with a token's iss.
	IssuerURL string
	// Audiences: a token's aud (string or array) must contain at least one.
	Audiences []string
	// ClockSkew is the tolerance applied to exp, nbf and iat.
	ClockSkew time.Duration
	// RefreshCooldown is the least time between two JWKS fetches caused by
	// tokens with unknown key ids. Zero means 30 s.
	RefreshCooldown time.Duration
	// GroupsClaim names the claim holding the subject's groups (a string or
	// an array of strings). Empty means "groups".
	GroupsClaim string
	// MaxTokenLifetime, when positive, rejects a token whose exp is further
	// than this from now. Zero means no limit.
	MaxTokenLifetime time.Duration
	// CacheTTL is how long a verified token is remembered (never past its
	// exp). Zero means 60 s; negative disables the cache.
	CacheTTL time.Duration
	// CacheSize bounds the number of remembered tokens. Zero means 10000.
	CacheSize int
	// HTTPClient fetches the discovery document and the JWKS. Nil means a new
	// client with a 10 s timeout (never http.DefaultClient).
	HTTPClient *http.Client
	// Logger receives warnings about failed fetches; the caller names it.
	// Nil means hclog.NewNullLogger().
	Logger hclog.Logger
	// Now is the clock used for token times, the cache and the unknown-kid
	// cooldown. Nil means time.Now.
	Now func() time.Time
	// OnFetch, if set, is called after every fetch of the discovery document
	// (kind FetchMetadata) and of the JWKS (kind FetchJWKS, scheduled or for
	// an unknown key id), with result FetchOK or FetchError. A fetch cut
	// short by shutdown is not reported. It is called from the fetching
	// goroutine and must not block. Nil means no calls.
	OnFetch func(kind, result string)
}

// Kinds and results of fetches reported to Config.OnFetch.
const (
	FetchMetadata = "metadata"
	FetchJWKS     = "jwks"
	FetchOK       = "ok"
	FetchError    = "error"
)

// Provider is the operator's OIDC provider as the gateway sees it. Create it
// with New and run it with Run; all methods are safe for concurrent use.
type Provider struct {
	issuer      string // configured issuer, one trailing slash removed
	audiences   []string
	skew        time.Duration
	cooldown    time.Duration
	groupsClaim string
	maxLifetime time.Duration
	client      *http.Client
	log         hclog.Logger
	now         func() time.Time
	onFetch     func(kind, result string) // nil: none

	doc  atomic.Pointer[discovery] // last good discovery document
	keys atomic.Pointer[keySet]    // last good JWKS

	statusMu sync.Mutex
	reason   string // why keys are not loaded yet

	keysMu  sync.Mutex // serialises key set replacement
	keysGen uint64     // guarded by keysMu

	kidMu        sync.Mutex
	kidFlight    chan struct{} // closed when the in-flight unknown-kid fetch ends
	lastKidFetch time.Time

	cache *tokencache.Cache[*Identity] // nil when disabled
}

// discovery is a fetched discovery document.
type discovery struct {
	raw     map[string]json.RawMessage
	issuer  string
	jwksURI string
	maxAge  time.Duration
}

// keySet is a fetched JWKS, reduced to public signing keys.
type keySet struct {
	keys        []jose.JSONWebKey
	fingerprint [sha256.Size]byte
	gen         uint64
	refresh     time.Duration
}

// New returns a Provider for cfg. It starts nothing; call Run.
func New(cfg Config) *Provider {
	p := &Provider{
		issuer:      trimSlash(cfg.IssuerURL),
		audiences:   slices.Clone(cfg.Audiences),
		skew:        cfg.ClockSkew,
		cooldown:    cfg.RefreshCooldown,
		groupsClaim: cfg.GroupsClaim,
		maxLifetime: cfg.MaxTokenLifetime,
		client:      cfg.HTTPClient,
		log:         cfg.Logger,
		now:         cfg.Now,
		onFetch:     cfg.OnFetch,
		reason:      "provider discovery pending",
	}
	if p.cooldown <= 0 {
		p.cooldown = defaultRefreshCooldown
	}
	if p.groupsClaim == "" {
		p.groupsClaim = defaultGroupsClaim
	}
	if p.client == nil {
		p.client = &http.Client{Timeout: defaultHTTPTimeout}
	}
	if p.client.CheckRedirect == nil {
		// Redirects follow the issuer's rule too: never from https to
		// plain http off loopback.
		c := *p.client
		c.CheckRedirect = secureRedirect
		p.client = &c
	}
	if p.log == nil {
		p.log = hclog.NewNullLogger()
	}
	if p.now == nil {
		p.now = time.Now
	}
	p.cache = tokencache.New[*Identity](cfg.CacheTTL, cfg.CacheSize)
	return p
}

// Run fetches the discovery document and then the JWKS, retrying with
// exponential backoff (200 ms up to 3 s, forever) until both are loaded, then
// refreshes them in the background until ctx is done. A failed refresh keeps
// the last good copy and is logged as a warning. Run returns nil when ctx is
// done and leaves no goroutine behind.
func (p *Provider) Run(ctx context.Context) error {
	start := time.Now()
	if !p.initialLoad(ctx) {
		return nil
	}
	p.log.Info("provider keys loaded", "duration", time.Since(start))

	docTimer := time.NewTimer(p.doc.Load().maxAge)
	defer docTimer.Stop()
	jwksTimer := time.NewTimer(p.keys.Load().refresh)
	defer jwksTimer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-docTimer.C:
			old := p.doc.Load()
			d, err := p.fetchDiscovery(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				p.log.Warn("provider discovery refresh failed; keeping the last good document", "error", err)
				docTimer.Reset(min(refreshRetry, old.maxAge))
				continue
			}
			p.doc.Store(d)
			docTimer.Reset(d.maxAge)
			if d.jwksURI != old.jwksURI { // refetch the keys from their new home now
				jwksTimer.Reset(0)
			}
		case <-jwksTimer.C:
			old := p.keys.Load()
			if err := p.loadKeys(ctx, p.doc.Load().jwksURI); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				p.log.Warn("provider key refresh failed; keeping the last good keys", "error", err)
				jwksTimer.Reset(min(refreshRetry, old.refresh))
				continue
			}
			jwksTimer.Reset(p.keys.Load().refresh)
		}
	}
}

// initialLoad retries discovery and JWKS until both are loaded (true) or ctx
// is done (false).
func (p *Provider) initialLoad(ctx context.Context) bool {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(200*time.Millisecond),
		backoff.WithMaxInterval(3*time.Second),
		backoff.WithMaxElapsedTime(0),
	)
	var lastErr string
	for {
		err := p.loadOnce(ctx)
		if err == nil {
			p.setReason("")
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		// Warn when the failure changes, so an outage does not flood the log.
		if msg := err.Error(); msg != lastErr {
			p.log.Warn("provider not ready; retrying", "error", err)
			lastErr = msg
		} else {
			p.log.Debug("provider not ready; retrying", "error", err)
		}
		t := time.NewTimer(b.NextBackOff())
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// loadOnce fetches the discovery document, then the JWKS it names. Both are
// fetched on every attempt, so a jwks_uri fixed at the provider is followed.
func (p *Provider) loadOnce(ctx context.Context) error {
	d, err := p.fetchDiscovery(ctx)
	if err != nil {
		p.setReason("provider discovery failed: " + publicReason(err))
		return err
	}
	p.doc.Store(d)
	if err := p.loadKeys(ctx, d.jwksURI); err != nil {
		p.setReason("provider keys not loaded: " + publicReason(err))
		return err
	}
	return nil
}

// namedError is an error of this package whose message names URLs: the
// issuers, a jwks_uri, a redirect's target. They may be internal names (a
// provider that advertises the host it is reached by inside the network),
// so /readyz shows public, and the log the full message.
type namedError struct{ public, full string }

func (e *namedError) Error() string { return e.full }

// publicReason is err as /readyz may show it on the public port: a failed
// request becomes what went wrong, without the URL, addresses or resolver
// its error names (the log has the whole error); the package's own errors
// stay, in their public words when they name a URL (namedError).
func publicReason(err error) string {
	var ne *namedError
	if errors.As(err, &ne) {
		return ne.public + " (the gateway's log has the error)"
	}
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err.Error()
	}
	var dns *net.DNSError
	var cert *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	why := "the request failed"
	switch {
	case errors.As(err, &dns):
		why = "the host name did not resolve"
	case ue.Timeout():
		why = "no answer in time"
	case errors.Is(err, syscall.ECONNREFUSED):
		why = "the connection was refused"
	case errors.As(err, &cert), errors.As(err, &rh):
		why = "TLS failed"
	}
	return why + " (the gateway's log has the error)"
}

func (p *Provider) setReason(r string) {
	p.statusMu.Lock()
	p.reason = r
	p.statusMu.Unlock()
}

// Ready reports whether the provider's keys are loaded, so tokens can be
// verified; if not, reason says what is missing (e.g. "provider discovery
// failed: ...").
func (p *Provider) Ready() (ok bool, reason string) {
	if p.keys.Load() != nil {
		return true, ""
	}
	p.statusMu.Lock()
	defer p.statusMu.Unlock()
	return false, p.reason
}

// Metadata returns the raw fields of the last good discovery document, or
// ErrNotReady if none was ever fetched. It does no I/O. The same map is
// returned to every caller until the next refresh: callers MUST NOT modify it.
func (p *Provider) Metadata() (map[string]json.RawMessage, error) {
	d := p.doc.Load()
	if d == nil {
		return nil, ErrNotReady
	}
	return d.raw, nil
}

// MetadataMaxAge is the max-age the provider gave its discovery document
// (Cache-Control, clamped to [1m, 24h]; 1h when it gave none), so documents
// derived from it can be cached as long. Zero when never fetched.
func (p *Provider) MetadataMaxAge() time.Duration {
	if d := p.doc.Load(); d != nil {
		return d.maxAge
	}
	return 0
}

// secureURL reports whether u may carry the provider's documents: https,
// or http to a loopback host (a provider on the same machine).
func secureURL(u *url.URL) bool {
	if u.Scheme == "https" {
		return true
	}
	h := u.Hostname()
	ip := net.ParseIP(h)
	return u.Scheme == "http" && (h == "localhost" || ip != nil && ip.IsLoopback())
}

// secureRedirect is the provider client's redirect policy: net/http's
// limit of 10, and only to a secureURL.
func secureRedirect(req *http.Request, via []*http.Request) error {
	switch {
	case len(via) >= 10:
		return errors.New("stopped after 10 redirects")
	case !secureURL(req.URL):
		return &namedError{public: "a redirect was refused: it must use https (http only on loopback)",
			full: fmt.Sprintf("redirect to %q refused: it must use https (http only on loopback)", req.URL.Redacted())}
	}
	return nil
}

// fetchDiscovery GETs <issuer>/.well-known/openid-configuration (OpenID
// Connect Discovery 1.0 §4) and checks its issuer (§4.3) and jwks_uri.
func (p *Provider) fetchDiscovery(ctx context.Context) (d *discovery, err error) {
	defer func() { p.fetched(ctx, FetchMetadata, err) }()
	body, h, err := p.get(ctx, p.issuer+"/.well-known/openid-configuration")
	if err != nil {
		return nil, fmt.Errorf("fetch discovery document: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil || raw == nil {
		return nil, errors.New("fetch discovery document: not a JSON object")
	}
	d = &discovery{raw: raw, maxAge: defaultDocMaxAge}
	if err := json.Unmarshal(raw["issuer"], &d.issuer); err != nil || d.issuer == "" {
		return nil, errors.New("fetch discovery document: no issuer")
	}
	if trimSlash(d.issuer) != p.issuer {
		return nil, &namedError{public: "fetch discovery document: its issuer does not match the configured issuer (OIDC_ISSUER_URL)",
			full: fmt.Sprintf("fetch discovery document: issuer %q does not match the configured issuer %q", d.issuer, p.issuer)}
	}
	if err := json.Unmarshal(raw["jwks_uri"], &d.jwksURI); err != nil || d.jwksURI == "" {
		return nil, errors.New("fetch discovery document: no jwks_uri")
	}
	if u, err := url.Parse(d.jwksURI); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, errors.New("fetch discovery document: jwks_uri is not an absolute http(s) URL")
	} else if !secureURL(u) {
		// Every token's trust rests on these keys: whoever is on the path
		// to a plain-http JWKS could add one.
		return nil, &namedError{public: "fetch discovery document: its jwks_uri must use https (http is allowed only on loopback, as for the issuer)",
			full: fmt.Sprintf("fetch discovery document: jwks_uri %q must use https (http is allowed only on loopback, as for the issuer)", d.jwksURI)}
	}
	if age, ok := cacheMaxAge(h); ok {
		d.maxAge = min(max(age, minDocMaxAge), maxDocMaxAge)
	}
	return d, nil
}

// loadKeys fetches the JWKS and installs it. The verified-token cache is
// dropped when the set of keys changed.
func (p *Provider) loadKeys(ctx context.Context, jwksURI string) (err error) {
	defer func() { p.fetched(ctx, FetchJWKS, err) }()
	body, h, err := p.get(ctx, jwksURI)
	if err != nil {
		return fmt.Errorf("fetch jwks: %w", err)
	}
	ks, err := parseKeySet(body)
	if err != nil {
		return fmt.Errorf("fetch jwks: %w", err)
	}
	ks.refresh = defaultJWKSRefresh
	if age, ok := cacheMaxAge(h); ok {
		ks.refresh = min(max(age, minJWKSRefresh), maxJWKSRefresh)
	}

	p.keysMu.Lock()
	defer p.keysMu.Unlock()
	old := p.keys.Load()
	if old != nil && old.fingerprint == ks.fingerprint {
		ks.gen = old.gen
	} else {
		p.keysGen++
		ks.gen = p.keysGen
		if p.cache != nil {
			p.cache.Reset(ks.gen)
		}
	}
	p.keys.Store(ks)
	return nil
}

// fetched reports a fetch to OnFetch, unless shutdown cut it short.
func (p *Provider) fetched(ctx context.Context, kind string, err error) {
	switch {
	case p.onFetch == nil:
	case err == nil:
		p.onFetch(kind, FetchOK)
	case !errors.Is(ctx.Err(), context.Canceled): // a timeout is a failure; a cancel is shutdown
		p.onFetch(kind, FetchError)
	}
}

// parseKeySet keeps the public signature keys of a JWKS (RFC 7517 §5),
// skipping keys it cannot use (encryption keys, symmetric keys, unknown key
// types) rather than failing the whole set.
func parseKeySet(body []byte) (*keySet, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, errors.New("not a JSON Web Key Set")
	}
	ks := &keySet{}
	var ids []string
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			continue
		}
		if k.Use != "" && k.Use != "sig" || !k.IsPublic() || !k.Valid() {
			continue
		}
		if _, sym := k.Key.([]byte); sym {
			continue
		}
		tp, err := k.Thumbprint(crypto.SHA256)
		if err != nil {
			continue
		}
		ks.keys = append(ks.keys, k)
		ids = append(ids, k.KeyID+"\x00"+k.Algorithm+"\x00"+string(tp))
	}
	if len(ks.keys) == 0 {
		return nil, errors.New("no usable signing keys")
	}
	// The fingerprint ignores the order of the keys, so a provider that
	// shuffles them does not look like a rotation.
	slices.Sort(ids)
	ks.fingerprint = sha256.Sum256([]byte(strings.Join(ids, "\x01")))
	return ks, nil
}

// get fetches url and returns its body (at most 1 MiB) and headers.
func (p *Provider) get(ctx context.Context, url string) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodySize+1))
	if err != nil {
		return nil, nil, err
	}
	if len(body) > maxBodySize {
		return nil, nil, errors.New("body larger than 1 MiB")
	}
	return body, resp.Header, nil
}

// cacheMaxAge reads the max-age directive of Cache-Control (RFC 9111
// §5.2.2.1); no-store and no-cache count as zero.
func cacheMaxAge(h http.Header) (time.Duration, bool) {
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(name) {
			case "no-store", "no-cache":
				return 0, true
			case "max-age":
				n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64)
				if err != nil || n < 0 {
					continue
				}
				return time.Duration(min(n, int64(maxDocMaxAge/time.Second))) * time.Second, true
			}
		}
	}
	return 0, false
}

func trimSlash(s string) string { return strings.TrimSuffix(s, "/") }
