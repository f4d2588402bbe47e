package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/inflight"
)

// Fetching a Client ID Metadata Document means connecting wherever a
// client_id points, on behalf of anyone who can reach the authorization
// endpoint: a server-side request forgery waiting to happen
// (draft-ietf-oauth-client-id-metadata-document §8.6). The fetcher below
// connects only to public addresses, checked on the address actually
// dialled (so DNS cannot answer one address to a check and another to the
// connection), follows no redirect, uses no proxy, reads at most 5 KiB
// within 5 s, and runs at most a few fetches at once.
const (
	cimdFetchTimeout = 5 * time.Second // the whole fetch: DNS, connect, TLS, headers, body
	cimdMaxDocument  = 5 << 10         // §8.7: "the recommended maximum size to read is 5 kilobytes"
	cimdMaxFetches   = 16              // distinct documents fetched at once; more are refused, not queued
	// Fetches at once charged to one client address: the slots are shared by
	// everyone, and the URL is the requester's to choose, so without this one
	// address naming documents that never arrive holds all of them, 5 s at a
	// time, for 3 requests a second, and every other client whose document is
	// not cached gets 503.
	cimdMaxFetchesPerClient = 2
)

// errNotPublic: the dialer refused an address that is not public.
var errNotPublic = errors.New("address is not public")

// cimdError is why a client_id URL or its document cannot be used. Its
// message is fit for the user and the client (no internal address); the
// log gets detail. transient marks failures that may pass by themselves
// (timeouts, unreachable hosts, 5xx): the token endpoint answers those
// with 503, and a recent copy of the document may stand in for them.
type cimdError struct {
	msg       string
	detail    error // for the log; nil when msg says it all
	transient bool
}

func (e *cimdError) Error() string { return e.msg }

func refused(format string, args ...any) *cimdError {
	return &cimdError{msg: fmt.Sprintf(format, args...)}
}

// publicAddr reports whether a is an address the gateway may fetch a
// client's metadata from: a global unicast address outside every range of
// the IANA special-purpose address registries (RFC 6890) that is not
// globally reachable, and outside the ranges that embed or translate to
// other addresses unless what they embed is public.
func publicAddr(a netip.Addr) bool {
	if !a.IsValid() || a.Zone() != "" {
		return false
	}
	// ::ffff:0:0/96, IPv4-mapped (RFC 4291 §2.5.5.2): a socket connects to
	// the IPv4 address it maps, so that address decides.
	a = a.Unmap()
	if a.Is4() {
		return public4(a.As4())
	}
	b := a.As16()
	// 64:ff9b::/96, the NAT64 well-known prefix (RFC 6052 §2.1): behind a
	// NAT64 gateway it reaches the IPv4 address in its last 32 bits, so
	// that address decides (IPv6-only hosts reach every public IPv4 host
	// this way). The local-use prefix 64:ff9b:1::/48 (RFC 8215) is outside
	// 2000::/3 and refused below.
	if b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && [8]byte(b[4:12]) == [8]byte{} {
		return public4([4]byte(b[12:16]))
	}
	switch {
	// Only 2000::/3 is global unicast (RFC 4291 §2.4, IANA IPv6 address
	// space). Outside it: ::/128 unspecified, ::1 loopback, ::/96
	// IPv4-compatible (deprecated, RFC 4291 §2.5.5.1), 100::/64 discard-only
	// (RFC 6666), 5f00::/16 SRv6 (RFC 9602), fc00::/7 unique local (RFC
	// 4193), fe80::/10 link-local, fec0::/10 site-local (deprecated),
	// ff00::/8 multicast, and the unallocated rest.
	case b[0]&0xe0 != 0x20:
		return false
	// 2001::/23 IETF protocol assignments (RFC 2928): Teredo 2001::/32
	// (RFC 4380, embeds an obfuscated IPv4 address), benchmarking
	// 2001:2::/48 (RFC 5180), ORCHIDv2 2001:20::/28 (RFC 7343), ...
	case b[0] == 0x20 && b[1] == 0x01 && b[2] < 0x02:
		return false
	// 2001:db8::/32 documentation (RFC 3849).
	case b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8:
		return false
	// 2002::/16 6to4 (RFC 3056, deprecated by RFC 7526): embeds any IPv4
	// address, private ones included.
	case b[0] == 0x20 && b[1] == 0x02:
		return false
	// 3fff::/20 documentation (RFC 9637).
	case b[0] == 0x3f && b[1] == 0xff && b[2] < 0x10:
		return false
	}
	return true
}

// public4 reports whether an IPv4 address is public (RFC 6890 and the IANA
// IPv4 special-purpose address registry).
func public4(b [4]byte) bool {
	switch {
	case b[0] == 0, // 0.0.0.0/8 "this network" (RFC 791), the unspecified address
		b[0] == 10,                               // 10.0.0.0/8 private (RFC 1918)
		b[0] == 100 && b[1]&0xc0 == 64,           // 100.64.0.0/10 shared address space, carrier-grade NAT (RFC 6598)
		b[0] == 127,                              // 127.0.0.0/8 loopback (RFC 1122)
		b[0] == 169 && b[1] == 254,               // 169.254.0.0/16 link-local (RFC 3927): cloud metadata endpoints
		b[0] == 172 && b[1]&0xf0 == 16,           // 172.16.0.0/12 private
		b[0] == 192 && b[1] == 0 && b[2] == 0,    // 192.0.0.0/24 IETF protocol assignments (RFC 6890)
		b[0] == 192 && b[1] == 0 && b[2] == 2,    // 192.0.2.0/24 TEST-NET-1 (RFC 5737)
		b[0] == 192 && b[1] == 88 && b[2] == 99,  // 192.88.99.0/24 6to4 relay anycast (RFC 7526)
		b[0] == 192 && b[1] == 168,               // 192.168.0.0/16 private
		b[0] == 198 && b[1]&0xfe == 18,           // 198.18.0.0/15 benchmarking (RFC 2544)
		b[0] == 198 && b[1] == 51 && b[2] == 100, // 198.51.100.0/24 TEST-NET-2
		b[0] == 203 && b[1] == 0 && b[2] == 113,  // 203.0.113.0/24 TEST-NET-3
		b[0] >= 224:                              // 224.0.0.0/4 multicast (RFC 5771), 240.0.0.0/4 reserved, 255.255.255.255 broadcast
		return false
	}
	return true
}

// hostRule is one CIMD_ALLOW_HOSTS entry: a host name or IP address, and a
// port ("" for any).
type hostRule struct{ host, port string }

// parseAllowHosts parses CIMD_ALLOW_HOSTS entries, skipping blank ones.
func parseAllowHosts(entries []string) ([]hostRule, error) {
	var rules []hostRule
	for _, e := range entries {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		r, err := parseAllowHost(e)
		if err != nil {
			return nil, fmt.Errorf("cimd allow host %w", err)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// CheckAllowHost reports why one CIMD_ALLOW_HOSTS entry is not a host or
// host:port the broker understands, or nil: main validates the setting
// with it, naming the variable. The error reads after the word "entry".
func CheckAllowHost(entry string) error {
	_, err := parseAllowHost(strings.TrimSpace(entry))
	return err
}

// parseAllowHost parses one CIMD_ALLOW_HOSTS entry: host, host:port, an
// IPv6 address with or without brackets, or [v6]:port.
func parseAllowHost(e string) (hostRule, error) {
	if strings.ContainsAny(e, "/@?# ") {
		return hostRule{}, fmt.Errorf("%q: give host or host:port, without a scheme or path", e)
	}
	host, port := e, ""
	switch {
	case strings.HasPrefix(e, "["):
		if h, p, err := net.SplitHostPort(e); err == nil {
			host, port = h, p
		} else if strings.HasSuffix(e, "]") {
			host = e[1 : len(e)-1]
		} else {
			return hostRule{}, fmt.Errorf("%q: %w", e, err)
		}
	case strings.Count(e, ":") == 1:
		h, p, err := net.SplitHostPort(e)
		if err != nil {
			return hostRule{}, fmt.Errorf("%q: %w", e, err)
		}
		host, port = h, p
	}
	if host == "" {
		return hostRule{}, fmt.Errorf("%q: no host", e)
	}
	if strings.Contains(host, ":") || strings.HasPrefix(e, "[") {
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return hostRule{}, fmt.Errorf("%q: not an IPv6 address (write one in brackets when a port follows: [2001:db8::1]:8443)", e)
		}
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return hostRule{}, fmt.Errorf("%q: the port is not a number from 1 to 65535", e)
		}
	}
	return hostRule{host: strings.ToLower(host), port: port}, nil
}

// cimdFetcher fetches Client ID Metadata Documents.
type cimdFetcher struct {
	public  *http.Client // public addresses only
	allowed *http.Client // hosts of CIMD_ALLOW_HOSTS: any address
	allow   []hostRule
	timeout time.Duration
	slots   chan struct{}     // a slot per fetch in progress
	running *inflight.Counter // fetches in progress per client address
}

func newCIMDFetcher(allow []hostRule, roots *x509.CertPool) *cimdFetcher {
	return &cimdFetcher{
		public:  cimdClient(roots, true),
		allowed: cimdClient(roots, false),
		allow:   allow,
		timeout: cimdFetchTimeout,
		slots:   make(chan struct{}, cimdMaxFetches),
		running: inflight.New(cimdMaxFetchesPerClient),
	}
}

// cimdClient is an HTTP client for metadata documents: no proxy from the
// environment (it would connect in our place, to addresses we never
// checked), no redirects (§5: MUST NOT follow them), no connection reuse
// (documents are cached; nothing lingers), the system roots unless roots
// is set. With checkAddr, every address the dialer connects to must be
// public: the check runs on the socket's own address, after DNS, so
// there is no window for DNS rebinding between check and connect.
func cimdClient(roots *x509.CertPool, checkAddr bool) *http.Client {
	d := &net.Dialer{Timeout: cimdFetchTimeout}
	if checkAddr {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil || !publicAddr(ap.Addr()) {
				return fmt.Errorf("connect to %s: %w", address, errNotPublic)
			}
			return nil
		}
	}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil,
			DialContext:            d.DialContext,
			TLSClientConfig:        &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:    cimdFetchTimeout,
			ResponseHeaderTimeout:  cimdFetchTimeout,
			MaxResponseHeaderBytes: 16 << 10,
			DisableKeepAlives:      true,
			DisableCompression:     true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// allowedHost reports whether CIMD_ALLOW_HOSTS names u's host (and port, when
// the entry has one; a URL without a port has its scheme's).
func (f *cimdFetcher) allowedHost(u *url.URL) bool {
	port := u.Port()
	switch {
	case port != "":
	case u.Scheme == "https":
		port = "443"
	default:
		port = "80"
	}
	for _, r := range f.allow {
		if strings.EqualFold(u.Hostname(), r.host) && (r.port == "" || r.port == port) {
			return true
		}
	}
	return false
}

// fetch GETs the document at u for a request from the client address
// from: 200, JSON, at most 5 KiB, within the timeout. It returns the body
// and the response's Cache-Control.
func (f *cimdFetcher) fetch(ctx context.Context, u *url.URL, from string) ([]byte, string, *cimdError) {
	allowed := f.allowedHost(u)
	if u.Scheme != "https" && !allowed {
		return nil, "", refused("only https URLs are fetched")
	}
	if !f.running.Start(from) {
		return nil, "", &cimdError{msg: "too many client metadata documents are being fetched for your address; try again", transient: true}
	}
	defer f.running.Done(from)
	select {
	case f.slots <- struct{}{}:
		defer func() { <-f.slots }()
	default:
		return nil, "", &cimdError{msg: "too many client metadata documents are being fetched; try again", transient: true}
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, "", &cimdError{msg: "it is not a URL that can be fetched", detail: err}
	}
	req.Header.Set("Accept", "application/json")
	client := f.public
	if allowed {
		client = f.allowed
	}
	resp, err := client.Do(req)
	if err != nil {
		var ne net.Error
		switch {
		case errors.Is(err, errNotPublic):
			return nil, "", &cimdError{msg: "its host resolves to an address that is not public", detail: err}
		case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
			return nil, "", &cimdError{msg: fmt.Sprintf("its host did not answer within %s", f.timeout), detail: err, transient: true}
		}
		return nil, "", &cimdError{msg: "its host could not be reached", detail: err, transient: true}
	}
	defer resp.Body.Close()
	switch s := resp.StatusCode; {
	case s >= 300 && s < 400:
		return nil, "", refused("its server answered with a redirect (%d), which is not followed", s)
	case s >= 500 || s == http.StatusTooManyRequests:
		return nil, "", &cimdError{msg: fmt.Sprintf("its server answered %d", s), transient: true}
	case s != http.StatusOK:
		return nil, "", refused("its server answered %d", s)
	}
	// §4: application/json, or a more specific application/...+json.
	ct := resp.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil ||
		(mt != "application/json" && !(strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))) {
		return nil, "", refused("it is not JSON (Content-Type %q)", ct)
	}
	// §8.7: a larger document is an error, never cut and used.
	if resp.ContentLength > cimdMaxDocument {
		return nil, "", refused("it is larger than %d bytes", cimdMaxDocument)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, cimdMaxDocument+1))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, "", &cimdError{msg: fmt.Sprintf("its host did not send it within %s", f.timeout), detail: err, transient: true}
		}
		return nil, "", &cimdError{msg: "its host broke off while sending it", detail: err, transient: true}
	}
	if len(body) > cimdMaxDocument {
		return nil, "", refused("it is larger than %d bytes", cimdMaxDocument)
	}
	return body, strings.Join(resp.Header.Values("Cache-Control"), ","), nil
}
