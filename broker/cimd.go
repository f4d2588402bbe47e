package broker

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/respond"
)

// Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document,
// "CIMD"; the MCP 2026-07-28 authorization specification prefers them to
// dynamic registration): a client_id that is an https URL names a JSON
// document of the client's metadata, which the broker fetches
// (cimdfetch.go), checks by the rules of registrations, and caches. Such
// clients are public clients here (token_endpoint_auth_method "none").
const (
	maxClientIDURL = 512              // it travels in flow cookies, codes and tokens
	cimdMinTTL     = time.Minute      // a document is used at least this long without fetching it again...
	cimdDefaultTTL = 10 * time.Minute // ...this long when its response says nothing...
	cimdMaxTTL     = time.Hour        // ...and at most this long, so a changed document counts soon
	cimdFailureTTL = 10 * time.Second // a failed fetch is not retried sooner (no amplification)
	cimdStaleGrace = 24 * time.Hour   // a valid copy stands in at the token endpoint while the client's host is down
	cimdCacheSize  = 1000             // documents (at most 5 KiB each) and failures remembered
)

// lookupMode says what a client is looked up for.
type lookupMode int

const (
	// forAuthorization: the user is about to be asked, or was just asked,
	// about the client; its document must be current.
	forAuthorization lookupMode = iota
	// forToken: the token and revocation endpoints, where the client has
	// no credential to check. A copy of its document validated within the
	// last 24 h stands in when fetching fails for a reason that may pass
	// (a timeout, an unreachable host, a 5xx), so an outage at the client's
	// host does not end its users' sessions.
	forToken
)

// documentClient returns the client whose Client ID Metadata Document is
// at id, a fetch of it charged to the client address from. With
// Config.DisableCIMD every such client_id is refused, before
// anything is fetched.
func (b *Broker) documentClient(ctx context.Context, id string, mode lookupMode, from string) (*client, error) {
	if b.cimdOff {
		return nil, refused("this gateway does not accept client metadata documents; the application must register with it instead")
	}
	u, cerr := checkClientIDURL(id)
	if cerr != nil {
		return nil, cerr
	}
	rec, cerr := b.docs.get(ctx, id, mode == forToken, func(ctx context.Context) docResult {
		return b.loadDocument(ctx, id, u, from)
	})
	if cerr != nil {
		return nil, cerr
	}
	return &client{id: id, rec: *rec, doc: u}, nil
}

// checkClientIDURL checks a Client Identifier URL (draft §3): https (http
// only for CIMD_ALLOW_HOSTS, which the fetcher checks), no user info, no
// fragment, a host that is a DNS name or an IP address, a port from 1 to
// 65535 if any, a path other than "/" (as MCP clients require), no "." or
// ".." segment (percent-encoded ones too), nothing but printable ASCII, at
// most 512 bytes. The URL is not normalised: the document's client_id must
// equal it byte for byte. What fails here is the URL's fault and stays so
// (invalid_client); it must not reach the fetcher, whose connection errors
// count as an outage of the client's host (503, try again).
func checkClientIDURL(id string) (*url.URL, *cimdError) {
	if len(id) > maxClientIDURL {
		return nil, refused("the client_id URL is longer than %d bytes", maxClientIDURL)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c >= 0x7f || c == '\\' {
			return nil, refused("the client_id URL has a space, a control or non-ASCII character, or a backslash")
		}
	}
	if !strings.HasPrefix(id, "https://") && !strings.HasPrefix(id, "http://") {
		return nil, refused("the client_id is neither a client registered here nor an https URL")
	}
	u, err := url.Parse(id)
	switch {
	case err != nil:
		return nil, refused("the client_id is not a valid URL")
	case u.User != nil:
		return nil, refused("the client_id URL must not contain user info")
	case strings.Contains(id, "#"):
		return nil, refused("the client_id URL must not contain a fragment")
	case u.Hostname() == "":
		return nil, refused("the client_id URL has no host")
	case !hostName(u.Hostname()):
		return nil, refused("the client_id URL's host is neither a DNS name nor an IP address")
	case u.Port() != "" && !validPort(u.Port()):
		return nil, refused("the client_id URL's port is not a number from 1 to 65535")
	}
	path := u.EscapedPath()
	if path == "" || path == "/" {
		return nil, refused("the client_id URL must have a path, such as /client-metadata.json")
	}
	for seg := range strings.SplitSeq(path, "/") {
		if d, err := url.PathUnescape(seg); err != nil || d == "." || d == ".." {
			return nil, refused("the client_id URL must not contain . or .. path segments")
		}
	}
	return u, nil
}

// hostName reports whether h (a URL's host without brackets or port) can
// be connected to: an IP address, or a DNS name of letters, digits, '-'
// and '_' in non-empty labels of at most 63 bytes (RFC 1123 §2.1; '_' is
// found in real names), at most 253 bytes, with an optional final dot.
// url.Parse leaves much else in a host, percent-decoded bytes included.
func hostName(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// validPort reports whether p is a port number from 1 to 65535 (url.Parse
// takes any digits).
func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// loadDocument fetches and validates the document at u.
func (b *Broker) loadDocument(ctx context.Context, id string, u *url.URL, from string) docResult {
	body, cc, cerr := b.fetcher.fetch(ctx, u, from)
	if cerr == nil {
		var rec *clientRecord
		if rec, cerr = b.parseClientDocument(id, body); cerr == nil {
			ttl := cacheLifetime(cc)
			b.log.Debug("client metadata document fetched", "metadata_url", id, "client_name", rec.Name, "ttl", ttl)
			return docResult{rec: rec, ttl: ttl}
		}
	}
	args := []any{"metadata_url", id, "reason", cerr.msg}
	if cerr.detail != nil {
		args = append(args, "error", cerr.detail)
	}
	b.log.Info("client metadata document refused", args...)
	return docResult{err: cerr}
}

// parseClientDocument validates a Client ID Metadata Document fetched from
// id: a JSON object whose client_id is id exactly (draft §4, simple string
// comparison), with no client secret (§4.1), token_endpoint_auth_method
// "none" or absent (this gateway takes such clients as public clients
// only), and redirect_uris, grant_types, response_types and client_name by
// the rules of registrations. Redirect URIs that REGISTER_REDIRECT_URIS
// does not allow are dropped (a document serves many authorization
// servers); none left is an error.
func (b *Broker) parseClientDocument(id string, body []byte) (*clientRecord, *cimdError) {
	var md map[string]json.RawMessage
	if err := json.Unmarshal(body, &md); err != nil || md == nil {
		return nil, refused("it is not a JSON object")
	}
	var docID string
	if raw, ok := md["client_id"]; !ok || json.Unmarshal(raw, &docID) != nil {
		return nil, refused("it has no client_id")
	}
	if docID != id {
		return nil, refused("its client_id is not the URL it was fetched from")
	}
	for _, k := range []string{"client_secret", "client_secret_expires_at"} {
		if _, ok := md[k]; ok {
			return nil, refused("it contains %s, which a metadata document must not", k)
		}
	}
	method, err := authMethodOf(md)
	if err != nil {
		return nil, refused("its %v", err)
	}
	if method != "" && method != authNone {
		return nil, refused("its token_endpoint_auth_method is %q, but this gateway accepts clients identified by a metadata document only as public clients (\"none\")", method)
	}
	redirects, err := b.redirectList(md["redirect_uris"])
	if err != nil {
		return nil, refused("its %v", err)
	}
	rec := &clientRecord{Version: 1}
	for _, r := range redirects {
		if b.redirectAllowed(r) {
			rec.Redirects = append(rec.Redirects, r)
		}
	}
	if len(rec.Redirects) == 0 {
		return nil, refused("none of its redirect_uris is allowed by this gateway")
	}
	if err := parseClientFields(md, rec); err != nil {
		return nil, refused("its %v", err)
	}
	return rec, nil
}

// cacheLifetime is how long a document is used without fetching it again,
// from its response's Cache-Control (RFC 9111 §5.2.2, draft §5.2): not at
// all for no-store; max-age within [1 min, 1 h]; no-cache as max-age=0,
// so 1 min; 10 min when it says neither.
func cacheLifetime(cc string) time.Duration {
	ttl := cimdDefaultTTL
	noCache := false
	for d := range strings.SplitSeq(cc, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "no-store":
			return 0
		case "no-cache":
			noCache = true
		case "max-age":
			if n, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(val), `"`), 10, 64); err == nil && n >= 0 {
				ttl = time.Duration(min(n, int64(cimdMaxTTL/time.Second))) * time.Second
			}
		}
	}
	if noCache {
		ttl = 0
	}
	return min(max(ttl, cimdMinTTL), cimdMaxTTL)
}

// docCache remembers validated documents and failed fetches, bounded, and
// makes concurrent lookups of one URL share one fetch.
type docCache struct {
	now  func() time.Time
	size int

	mu      sync.Mutex
	entries map[string]*docEntry
	calls   map[string]*docCall // fetches in progress
}

type docEntry struct {
	rec      *clientRecord // the last valid document, or nil
	fresh    time.Time     // rec is used without fetching until then
	keep     time.Time     // rec may stand in for a transient failure (forToken) until then
	err      *cimdError    // the last failure, or nil
	errUntil time.Time     // err is the answer, without fetching, until then
}

// docResult is the outcome of one fetch.
type docResult struct {
	rec *clientRecord
	ttl time.Duration // 0: not to be stored (no-store)
	err *cimdError
}

type docCall struct {
	done    chan struct{} // closed when res is set
	res     docResult
	waiters int // lookups sharing this fetch besides the one making it
}

func newDocCache(now func() time.Time, size int) *docCache {
	return &docCache{now: now, size: size, entries: map[string]*docEntry{}, calls: map[string]*docCall{}}
}

// get returns the validated document at id: the cached one while fresh;
// else the outcome of load, which runs once for every concurrent lookup of
// id. A failure is remembered 10 s. With stale (forToken), a valid copy
// within its grace answers for a transient failure.
func (c *docCache) get(ctx context.Context, id string, stale bool, load func(context.Context) docResult) (*clientRecord, *cimdError) {
	c.mu.Lock()
	now := c.now()
	if e := c.entries[id]; e != nil {
		switch {
		case e.rec != nil && now.Before(e.fresh):
			c.mu.Unlock()
			return e.rec, nil
		case e.err != nil && now.Before(e.errUntil):
			defer c.mu.Unlock()
			return fallback(e, e.err, stale, now)
		}
	}
	call, leader := c.calls[id], false
	if call == nil {
		call, leader = &docCall{done: make(chan struct{})}, true
		c.calls[id] = call
	} else {
		call.waiters++
	}
	c.mu.Unlock()

	if leader {
		c.run(ctx, id, call, load)
	} else {
		select {
		case <-call.done:
		case <-ctx.Done():
			return nil, &cimdError{msg: "the request ended while the document was being fetched", transient: true}
		}
	}
	if call.res.err == nil {
		return call.res.rec, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return fallback(c.entries[id], call.res.err, stale, c.now())
}

// run makes the fetch of call and remembers its outcome. The fetch is
// shared, so the caller leaving must not cancel it for the others; the
// fetcher's timeout bounds it.
func (c *docCache) run(ctx context.Context, id string, call *docCall, load func(context.Context) docResult) {
	defer func() {
		if call.res.rec == nil && call.res.err == nil { // load did not return
			call.res.err = &cimdError{msg: "it could not be fetched", transient: true}
		}
		c.mu.Lock()
		delete(c.calls, id)
		c.remember(id, call.res, c.now())
		c.mu.Unlock()
		close(call.done)
	}()
	call.res = load(context.WithoutCancel(ctx))
}

// fallback answers a failed fetch: err, unless stale allows e's copy.
func fallback(e *docEntry, err *cimdError, stale bool, now time.Time) (*clientRecord, *cimdError) {
	if stale && err.transient && e != nil && e.rec != nil && now.Before(e.keep) {
		return e.rec, nil
	}
	return nil, err
}

// remember records the outcome of a fetch. A definitive failure (the
// document is gone or no longer valid) also drops the last valid copy; a
// transient one keeps it for forToken.
func (c *docCache) remember(id string, res docResult, now time.Time) {
	e := c.entries[id]
	switch {
	case res.err == nil && res.ttl <= 0: // no-store: keep nothing, not even an older copy
		delete(c.entries, id)
		return
	case e == nil:
		c.makeRoom(now)
		e = &docEntry{}
		c.entries[id] = e
	}
	if res.err != nil {
		e.err, e.errUntil = res.err, now.Add(cimdFailureTTL)
		if !res.err.transient {
			e.rec = nil
		}
		return
	}
	*e = docEntry{rec: res.rec, fresh: now.Add(res.ttl), keep: now.Add(cimdStaleGrace)}
}

// makeRoom keeps the cache under its size: entries with nothing left to
// say go first, then about an eighth of the rest (in map order, which is
// random).
func (c *docCache) makeRoom(now time.Time) {
	if len(c.entries) < c.size {
		return
	}
	for k, e := range c.entries {
		if (e.rec == nil || !now.Before(e.keep)) && (e.err == nil || !now.Before(e.errUntil)) {
			delete(c.entries, k)
		}
	}
	target := c.size - max(c.size/8, 1)
	for k := range c.entries {
		if len(c.entries) <= target {
			break
		}
		delete(c.entries, k)
	}
}

// clientErrorPage answers an authorization or consent request whose client
// cannot be used. It is a page at the gateway, never a redirect: the
// redirect URI is not trusted yet (RFC 6749 §4.1.2.1). For a metadata
// document it says what is wrong with it (invalid_client).
func (b *Broker) clientErrorPage(w http.ResponseWriter, id string, err error) {
	var ce *cimdError
	if !errors.As(err, &ce) {
		b.errorPage(w, http.StatusBadRequest, "Unknown application",
			"This application is not registered with this gateway, or its registration is no longer valid. Remove the server from the application and add it again.")
		return
	}
	status, msg := http.StatusBadRequest, "This application names itself by the client_id "+shownClientID(id)+", which cannot be used (invalid_client): "+ce.msg+"."
	if _, uerr := checkClientIDURL(id); uerr == nil {
		msg = "This application identifies itself by the metadata document at " + id + ", which cannot be used (invalid_client): " + ce.msg + "."
	}
	if ce.transient {
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", respond.RetryAfter(cimdFailureTTL))
		msg += " Try again in a minute."
	}
	b.errorPage(w, status, "Application not recognized", msg)
}

// shownClientID is a client_id that is not a usable URL, for an error
// page: its first maxClientIDURL bytes, each one that is not printable
// ASCII percent-encoded (spaces too), so that whoever wrote the link
// cannot put words of their own on the gateway's page, nor a
// bidirectional override (U+202E) that reverses the page's own text.
func shownClientID(id string) string {
	const hex = "0123456789ABCDEF"
	var sb strings.Builder
	for i := 0; i < len(id) && i < maxClientIDURL; i++ {
		if c := id[i]; c > ' ' && c < 0x7f {
			sb.WriteByte(c)
		} else {
			sb.WriteByte('%')
			sb.WriteByte(hex[c>>4])
			sb.WriteByte(hex[c&15])
		}
	}
	if len(id) > maxClientIDURL {
		sb.WriteString("…")
	}
	return sb.String()
}
