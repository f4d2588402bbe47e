package broker

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// docServer serves Client ID Metadata Documents on 127.0.0.1 (over TLS
// unless plain) and counts the requests of each path.
type docServer struct {
	t   testing.TB
	srv *httptest.Server

	mu       sync.Mutex
	handlers map[string]http.HandlerFunc
	hits     map[string]int
}

func newDocServer(t testing.TB, plain bool) *docServer {
	t.Helper()
	d := &docServer{t: t, handlers: map[string]http.HandlerFunc{}, hits: map[string]int{}}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		d.hits[r.URL.Path]++
		hf := d.handlers[r.URL.Path]
		d.mu.Unlock()
		if hf == nil {
			http.NotFound(w, r)
			return
		}
		hf(w, r)
	})
	if plain {
		d.srv = httptest.NewServer(h)
	} else {
		d.srv = httptest.NewTLSServer(h)
	}
	t.Cleanup(d.srv.Close)
	return d
}

// url is the URL of path on the server (https://127.0.0.1:port/path).
func (d *docServer) url(path string) string { return d.srv.URL + path }

// hostPort is the server's 127.0.0.1:port, as CIMD_ALLOW_HOSTS names it.
func (d *docServer) hostPort() string {
	return strings.TrimPrefix(strings.TrimPrefix(d.srv.URL, "https://"), "http://")
}

func (d *docServer) port() string {
	_, p, _ := net.SplitHostPort(d.hostPort())
	return p
}

// roots trusts the server's certificate (none for a plain server).
func (d *docServer) roots() *x509.CertPool {
	p := x509.NewCertPool()
	if c := d.srv.Certificate(); c != nil {
		p.AddCert(c)
	}
	return p
}

func (d *docServer) handle(path string, h http.HandlerFunc) {
	d.mu.Lock()
	d.handlers[path] = h
	d.mu.Unlock()
}

// serve answers path with doc as JSON, with Cache-Control cc if not "".
func (d *docServer) serve(path string, doc any, cc string) {
	body, err := json.Marshal(doc)
	if err != nil {
		d.t.Fatal(err)
	}
	d.handle(path, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if cc != "" {
			w.Header().Set("Cache-Control", cc)
		}
		_, _ = w.Write(body)
	})
}

func (d *docServer) count(path string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.hits[path]
}

// clientDoc is a valid metadata document for the URL id.
func clientDoc(id string, redirects ...string) map[string]any {
	if len(redirects) == 0 {
		redirects = []string{clientRedirect}
	}
	return map[string]any{
		"client_id":                  id,
		"client_name":                "Doc Client",
		"redirect_uris":              redirects,
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"token_endpoint_auth_method": "none",
	}
}

// newCIMDEnv is newEnv whose broker trusts ds's certificate and lets ds's
// host through (CIMD_ALLOW_HOSTS) when allow is set.
func newCIMDEnv(t testing.TB, ds *docServer, allow bool, mod func(*Config)) *env {
	t.Helper()
	return newEnv(t, func(c *Config) {
		c.CIMDRootCAs = ds.roots()
		if allow {
			c.CIMDAllowHosts = []string{ds.hostPort()}
		}
		if mod != nil {
			mod(c)
		}
	})
}

// docClient is a test client whose client_id is a metadata URL.
func docClient(id string, redirects ...string) registered {
	if len(redirects) == 0 {
		redirects = []string{clientRedirect}
	}
	return registered{ID: id, Redirects: redirects}
}

// A client identified by its metadata document goes through the whole
// flow: the consent page names its host as verified and its name as not,
// the token endpoint takes the URL as a public client, refresh works, and
// an approval is remembered.
func TestCIMDFullFlow(t *testing.T) {
	ds := newDocServer(t, false)
	e := newCIMDEnv(t, ds, true, nil)
	id := ds.url("/oauth/client.json")
	ds.serve("/oauth/client.json", clientDoc(id), "max-age=300")
	c := docClient(id)
	a := newAuthRequest(c)
	br := newBrowser(t)

	page := br.get(a.url(e.origin))
	consentFlow(t, page)
	body := html.UnescapeString(page.body)
	for _, want := range []string{
		"Allow an application from <strong>" + ds.hostPort() + "</strong>",
		"<strong>Verified:</strong> this application is identified by <code>" + id + "</code>",
		"It calls itself “Doc Client”: <strong>not verified</strong>",
		"Only the host that publishes its metadata is verified, not the name.",
		"127.0.0.1:7777", // where it receives its access
		// MCP 2026-07-28 security considerations: localhost impersonation.
		"<strong>Check:</strong> the verified host does not vouch for where the access goes. Any program on this device could be the one waiting at <code>127.0.0.1:7777</code>.",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("consent page lacks %q\n%s", want, body)
		}
	}

	tr := e.redeem(a, e.code(br, a, alice))
	if tr.status != http.StatusOK || tr.RefreshToken == "" {
		t.Fatalf("redeem: %d %s %s", tr.status, tr.Error, tr.Desc)
	}
	if got := e.mustVerify(tr.AccessToken); got.ClientID != id || got.Subject != aliceSub {
		t.Fatalf("identity: %+v", got)
	}
	rr := e.refresh(c, tr.RefreshToken)
	if rr.status != http.StatusOK || rr.RefreshToken == "" {
		t.Fatalf("refresh: %d %s %s", rr.status, rr.Error, rr.Desc)
	}
	if got := e.mustVerify(rr.AccessToken); got.ClientID != id {
		t.Fatalf("refreshed identity: %+v", got)
	}
	// A secret is refused: such a client is public.
	if r := e.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rr.RefreshToken}, "client_id": {id}, "client_secret": {"x"}}); r.status != http.StatusUnauthorized || r.Error != "invalid_client" {
		t.Errorf("with a secret: %d %s", r.status, r.Error)
	}

	// Approved in this browser: the next login skips the consent page.
	if resp := br.get(newAuthRequest(c).url(e.origin)); resp.status != http.StatusSeeOther {
		t.Errorf("second login: status %d, want a redirect to the provider", resp.status)
	}
	// The document was fetched once: every later use came from the cache.
	if n := ds.count("/oauth/client.json"); n != 1 {
		t.Errorf("document fetched %d times, want 1", n)
	}
}

// An approval covers the document as the user saw it: a document that
// adds a redirect URI asks again.
func TestCIMDApprovalFollowsTheDocument(t *testing.T) {
	ds := newDocServer(t, false)
	e := newCIMDEnv(t, ds, true, nil)
	id := ds.url("/client.json")
	ds.serve("/client.json", clientDoc(id), "max-age=60")
	c := docClient(id)
	br := newBrowser(t)
	e.code(br, newAuthRequest(c), alice)
	if resp := br.get(newAuthRequest(c).url(e.origin)); resp.status != http.StatusSeeOther {
		t.Fatalf("approved client: status %d, want a redirect to the provider", resp.status)
	}
	ds.serve("/client.json", clientDoc(id, clientRedirect, "https://other.example/cb"), "max-age=60")
	e.clock.Advance(61 * time.Second)
	consentFlow(t, br.get(newAuthRequest(c).url(e.origin)))
}

// A host of CIMD_ALLOW_HOSTS may serve its document over http; the
// consent page then does not call the host verified.
func TestCIMDAllowHostsHTTP(t *testing.T) {
	plain := newDocServer(t, true)
	e := newCIMDEnv(t, plain, true, nil)
	id := plain.url("/client.json")
	plain.serve("/client.json", clientDoc(id), "")
	page := newBrowser(t).get(newAuthRequest(docClient(id)).url(e.origin))
	consentFlow(t, page)
	body := html.UnescapeString(page.body)
	if !strings.Contains(body, "<strong>Not verified:</strong>") || strings.Contains(body, "<strong>Verified:</strong>") {
		t.Errorf("an http document's host shown as verified:\n%s", body)
	}
	// Nor do the warning of a loopback redirect URI and the closing line.
	for _, says := range []string{"the verified host", "Only the host that publishes its metadata is verified"} {
		if strings.Contains(body, says) {
			t.Errorf("an http document's page says %q:\n%s", says, body)
		}
	}
	if !strings.Contains(body, "the host does not vouch for where the access goes") ||
		!strings.Contains(body, "Neither the host that publishes its metadata nor the name is verified.") {
		t.Errorf("an http document's page lacks its warnings:\n%s", body)
	}
}

// Every rule of fetching and validating a document, as the authorization
// endpoint answers it: a page at the gateway naming invalid_client and the
// reason, never a redirect, never a hang; and no request reaches a server
// the rules refuse. (Long: one table of every rule reads better than a
// dozen tests each building the same two brokers and document server.)
func TestCIMDRefused(t *testing.T) {
	ds := newDocServer(t, false)
	strict := newCIMDEnv(t, ds, false, nil)
	allowed := newCIMDEnv(t, ds, true, nil)
	allowed.b.fetcher.timeout = 300 * time.Millisecond
	plain := newDocServer(t, true)

	good := ds.url("/client.json")
	ds.serve("/client.json", clientDoc(good), "")
	doc := func(path string, mod func(map[string]any)) string {
		id := ds.url(path)
		d := clientDoc(id)
		mod(d)
		ds.serve(path, d, "")
		return id
	}
	ds.handle("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, good, http.StatusFound)
	})
	big := clientDoc(ds.url("/big"))
	big["client_uri"] = strings.Repeat("x", cimdMaxDocument)
	ds.serve("/big", big, "")
	bigBody, _ := json.Marshal(clientDoc(ds.url("/big-chunked")))
	ds.handle("/big-chunked", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(bigBody[:len(bigBody)-1])
		w.(http.Flusher).Flush() // no Content-Length: the size shows only while reading
		_, _ = w.Write([]byte(strings.Repeat(" ", cimdMaxDocument)))
		_, _ = w.Write([]byte("}"))
	})
	// The slow handlers hold on until the test ends (cleanups run last
	// first, so before the server's Close waits for them): the server's
	// own request context may end early, as the client sends Connection:
	// close.
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	ds.handle("/slow", func(http.ResponseWriter, *http.Request) { <-hold })
	ds.handle("/slow-body", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"client_id":`))
		w.(http.Flusher).Flush()
		<-hold
	})
	ds.handle("/html", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<html>hello</html>"))
	})
	ds.handle("/array", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`[1,2]`))
	})
	ds.handle("/down", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusInternalServerError) })
	plain.serve("/client.json", clientDoc(plain.url("/client.json")), "")

	tests := []struct {
		name       string
		e          *env
		id         string
		redirect   string // default clientRedirect
		wantStatus int    // default 400
		want       string // in the page
		noRequest  *docServer
		path       string // of noRequest that must not be asked
	}{
		{name: "http URL", e: strict, id: "http://example.com/client.json", want: "only https URLs are fetched"},
		{name: "http URL of a server on loopback", e: strict, id: plain.url("/client.json"), want: "only https URLs are fetched", noRequest: plain, path: "/client.json"},
		{name: "loopback address", e: strict, id: good, want: "resolves to an address that is not public", noRequest: ds, path: "/client.json"},
		{name: "IPv6 loopback", e: strict, id: "https://[::1]:" + ds.port() + "/client.json", want: "not public"},
		{name: "IPv4-mapped loopback", e: strict, id: "https://[::ffff:127.0.0.1]:" + ds.port() + "/client.json", want: "not public", noRequest: ds, path: "/client.json"},
		{name: "private address", e: strict, id: "https://10.0.0.1/client.json", want: "not public"},
		{name: "cloud metadata address", e: strict, id: "https://169.254.169.254/latest/meta-data", want: "not public"},
		{name: "carrier-grade NAT address", e: strict, id: "https://100.64.0.1/client.json", want: "not public"},
		{name: "name resolving to loopback", e: strict, id: "https://localhost:" + ds.port() + "/client.json", want: "not public", noRequest: ds, path: "/client.json"},
		{name: "allowed address under another name", e: allowed, id: "https://localhost:" + ds.port() + "/client.json", want: "not public"},
		{name: "redirect", e: allowed, id: ds.url("/redirect"), want: "redirect (302), which is not followed", noRequest: ds, path: "/client.json"},
		{name: "oversized document", e: allowed, id: ds.url("/big"), want: "larger than 5120 bytes"},
		{name: "oversized document without a length", e: allowed, id: ds.url("/big-chunked"), want: "larger than 5120 bytes"},
		{name: "slow server", e: allowed, id: ds.url("/slow"), wantStatus: 503, want: "did not answer within 300ms"},
		{name: "slow body", e: allowed, id: ds.url("/slow-body"), wantStatus: 503, want: "did not send it within 300ms"},
		{name: "server error", e: allowed, id: ds.url("/down"), wantStatus: 503, want: "answered 500"},
		{name: "not found", e: allowed, id: ds.url("/missing"), want: "answered 404"},
		{name: "not JSON", e: allowed, id: ds.url("/html"), want: `it is not JSON (Content-Type "text/html")`},
		{name: "JSON but not an object", e: allowed, id: ds.url("/array"), want: "it is not a JSON object"},
		{name: "mismatched client_id", e: allowed, id: doc("/mismatch", func(d map[string]any) { d["client_id"] = good }), want: "its client_id is not the URL it was fetched from"},
		{name: "client_id differing in a trailing slash", e: allowed, id: doc("/slash", func(d map[string]any) { d["client_id"] = ds.url("/slash/") }), want: "its client_id is not the URL"},
		{name: "no client_id", e: allowed, id: doc("/noid", func(d map[string]any) { delete(d, "client_id") }), want: "it has no client_id"},
		{name: "client_secret_basic", e: allowed, id: doc("/basic", func(d map[string]any) { d["token_endpoint_auth_method"] = "client_secret_basic" }), want: `token_endpoint_auth_method is "client_secret_basic", but this gateway accepts clients identified by a metadata document only as public clients ("none")`},
		{name: "private_key_jwt", e: allowed, id: doc("/pkjwt", func(d map[string]any) { d["token_endpoint_auth_method"] = "private_key_jwt" }), want: `token_endpoint_auth_method is "private_key_jwt"`},
		{name: "client secret in the document", e: allowed, id: doc("/secret", func(d map[string]any) { d["client_secret"] = "s" }), want: "it contains client_secret"},
		{name: "redirect_uri not in the document", e: allowed, id: good, redirect: "http://127.0.0.1:7777/other", want: "Unregistered redirect URI"},
		{name: "unsafe redirect uri in the document", e: allowed, id: doc("/js", func(d map[string]any) { d["redirect_uris"] = []string{"javascript:alert(1)"} }), want: "its redirect uri"},
		{name: "look-alike host in the redirect uris", e: allowed, id: doc("/lookalike", func(d map[string]any) { d["redirect_uris"] = []string{"https://cl%D0%B0ude.ai/cb"} }), want: "internationalized host names must be given in punycode"},
		{name: "no redirect uris", e: allowed, id: doc("/noredirect", func(d map[string]any) { delete(d, "redirect_uris") }), want: "its redirect_uris must be a non-empty array"},
		{name: "implicit grant", e: allowed, id: doc("/implicit", func(d map[string]any) { d["grant_types"] = []string{"implicit"} }), want: `its grant type "implicit" is not supported`},
		{name: "no path", e: allowed, id: "https://" + ds.hostPort(), want: "must have a path"},
		{name: "root path", e: allowed, id: ds.url("/"), want: "must have a path"},
		{name: "dot segment", e: allowed, id: ds.url("/a/../client.json"), want: "must not contain . or .. path segments", noRequest: ds, path: "/client.json"},
		{name: "encoded dot segment", e: allowed, id: ds.url("/a/%2E%2e/client.json"), want: "must not contain . or .."},
		{name: "user info", e: allowed, id: "https://u@" + ds.hostPort() + "/client.json", want: "must not contain user info"},
		{name: "fragment", e: allowed, id: good + "#x", want: "must not contain a fragment"},
		{name: "too long", e: allowed, id: ds.url("/" + strings.Repeat("a", maxClientIDURL)), want: "longer than 512 bytes"},
		{name: "not a URL", e: allowed, id: "urn:example:client", want: "neither a client registered here nor an https URL"},
		{name: "port out of range", e: strict, id: "https://client.example:99999/client.json", want: "port is not a number from 1 to 65535"},
		{name: "port zero", e: strict, id: "https://client.example:0/client.json", want: "port is not a number from 1 to 65535"},
		{name: "host no name can have", e: strict, id: "https://client!.example/client.json", want: "host is neither a DNS name nor an IP address"},
		{name: "host percent-encoded non-ascii", e: strict, id: "https://cl%D0%B0ude.ai/client.json", want: "host is neither a DNS name nor an IP address"},
		{name: "host with an empty label", e: strict, id: "https://client..example/client.json", want: "host is neither a DNS name nor an IP address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := 0
			if tt.noRequest != nil {
				before = tt.noRequest.count(tt.path)
			}
			c := docClient(tt.id)
			if tt.redirect != "" {
				c.Redirects = []string{tt.redirect}
			}
			start := time.Now()
			resp := newBrowser(t).get(newAuthRequest(c).url(tt.e.origin))
			if d := time.Since(start); d > 4*time.Second {
				t.Errorf("answered after %s", d)
			}
			want := tt.wantStatus
			if want == 0 {
				want = http.StatusBadRequest
			}
			body := html.UnescapeString(resp.body)
			if resp.status != want || resp.header.Get("Location") != "" {
				t.Fatalf("status %d (Location %q), want %d\n%s", resp.status, resp.header.Get("Location"), want, body)
			}
			if !strings.Contains(body, tt.want) {
				t.Errorf("page lacks %q:\n%s", tt.want, body)
			}
			if tt.redirect == "" && !strings.Contains(body, "(invalid_client)") {
				t.Errorf("page does not say invalid_client:\n%s", body)
			}
			if want == http.StatusServiceUnavailable && resp.header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			if tt.noRequest != nil {
				if got := tt.noRequest.count(tt.path); got != before {
					t.Errorf("%s was requested %d times", tt.path, got-before)
				}
			}
		})
	}
	// At the token endpoint a URL that can never be fetched is
	// invalid_client, not an outage to retry.
	r := strict.refresh(docClient("https://client.example:99999/client.json"), "x")
	if r.status != http.StatusUnauthorized || r.Error != "invalid_client" || r.header.Get("Retry-After") != "" {
		t.Errorf("token endpoint, port 99999: %d %s (%s) Retry-After %q, want 401 invalid_client", r.status, r.Error, r.Desc, r.header.Get("Retry-After"))
	}
}

// lookupDoc looks a metadata-document client up for the authorization
// endpoint.
func (e *env) lookupDoc(id string) error {
	_, err := e.b.lookupClient(context.Background(), id, forAuthorization, "192.0.2.1")
	return err
}

// Documents are used as long as their Cache-Control says, within
// [1 min, 1 h]; a no-store document is fetched at every use.
func TestCIMDCache(t *testing.T) {
	ds := newDocServer(t, false)
	e := newCIMDEnv(t, ds, true, nil)
	type step struct {
		after time.Duration // the clock moves on, then a lookup
		hits  int           // fetches so far
	}
	tests := []struct {
		name  string
		cc    string
		steps []step
	}{
		{name: "max-age honoured", cc: "max-age=120", steps: []step{{0, 1}, {119 * time.Second, 1}, {2 * time.Second, 2}}},
		{name: "max-age below the minimum", cc: "max-age=5", steps: []step{{0, 1}, {30 * time.Second, 1}, {31 * time.Second, 2}}},
		{name: "max-age above the maximum", cc: "max-age=86400", steps: []step{{0, 1}, {59 * time.Minute, 1}, {2 * time.Minute, 2}}},
		{name: "no Cache-Control", cc: "", steps: []step{{0, 1}, {9 * time.Minute, 1}, {2 * time.Minute, 2}}},
		{name: "no-store", cc: "no-store", steps: []step{{0, 1}, {0, 2}, {time.Second, 3}}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := fmt.Sprintf("/c%d.json", i)
			id := ds.url(path)
			ds.serve(path, clientDoc(id), tt.cc)
			for n, s := range tt.steps {
				e.clock.Advance(s.after)
				if err := e.lookupDoc(id); err != nil {
					t.Fatalf("step %d: %v", n, err)
				}
				if got := ds.count(path); got != s.hits {
					t.Fatalf("step %d: fetched %d times, want %d", n, got, s.hits)
				}
			}
		})
	}
}

// A failed fetch is the answer for 10 s, without fetching again: a URL
// that fails cannot make the gateway hammer its host.
func TestCIMDFailureRemembered(t *testing.T) {
	ds := newDocServer(t, false)
	e := newCIMDEnv(t, ds, true, nil)
	id := ds.url("/flaky.json")
	ds.handle("/flaky.json", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusBadGateway) })
	for n, after := range []time.Duration{0, 5 * time.Second, 4 * time.Second} {
		e.clock.Advance(after)
		if err := e.lookupDoc(id); err == nil || !strings.Contains(err.Error(), "answered 502") {
			t.Fatalf("lookup %d: got %v, want the 502", n, err)
		}
		if got := ds.count("/flaky.json"); got != 1 {
			t.Fatalf("lookup %d: fetched %d times, want 1", n, got)
		}
	}
	ds.serve("/flaky.json", clientDoc(id), "")
	e.clock.Advance(time.Second)
	if err := e.lookupDoc(id); err != nil || ds.count("/flaky.json") != 2 {
		t.Fatalf("after 10 s: %v, %d fetches", err, ds.count("/flaky.json"))
	}
}

// waiting is how many lookups wait for the fetch of id in progress.
func (c *docCache) waiting(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if call := c.calls[id]; call != nil {
		return call.waiters
	}
	return -1
}

// Concurrent lookups of one URL share one fetch; the lookup that started
// it leaving does not cancel it for the others, and a waiting lookup whose
// request ends leaves at once.
func TestCIMDCoalesced(t *testing.T) {
	ds := newDocServer(t, false)
	e := newCIMDEnv(t, ds, true, nil)
	id := ds.url("/c.json")
	body, _ := json.Marshal(clientDoc(id))
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	t.Cleanup(open)
	ds.handle("/c.json", func(w http.ResponseWriter, _ *http.Request) {
		<-release
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})

	const n = 8
	errs := make(chan error, n+1)
	leaderCtx, leave := context.WithCancel(context.Background())
	go func() {
		_, err := e.b.lookupClient(leaderCtx, id, forAuthorization, "192.0.2.1")
		errs <- err
	}()
	testkit.WaitFor(t, "the fetch", 10*time.Second, func() bool { return ds.count("/c.json") == 1 })
	leave()
	for range n - 1 {
		go func() { errs <- e.lookupDoc(id) }()
	}
	quitterCtx, quit := context.WithCancel(context.Background())
	quitter := make(chan error, 1)
	go func() {
		_, err := e.b.lookupClient(quitterCtx, id, forAuthorization, "192.0.2.2")
		quitter <- err
	}()
	testkit.WaitFor(t, "the waiting lookups", 10*time.Second, func() bool { return e.b.docs.waiting(id) == n })
	quit()
	if err := <-quitter; err == nil || !strings.Contains(err.Error(), "request ended") {
		t.Errorf("the lookup that left: got %v", err)
	}
	open()
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("lookup: %v", err)
		}
	}
	if got := ds.count("/c.json"); got != 1 {
		t.Errorf("fetched %d times, want 1", got)
	}
}

// Past its fetch slots the fetcher refuses at once rather than queueing.
func TestCIMDFetchSlots(t *testing.T) {
	ds := newDocServer(t, false)
	e := newCIMDEnv(t, ds, true, nil)
	e.b.fetcher.slots = make(chan struct{}, 1)
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	ds.handle("/held.json", func(http.ResponseWriter, *http.Request) { <-hold })
	ds.serve("/other.json", clientDoc(ds.url("/other.json")), "")
	go func() { _ = e.lookupDoc(ds.url("/held.json")) }()
	testkit.WaitFor(t, "the first fetch to start", 10*time.Second, func() bool { return ds.count("/held.json") > 0 })
	err := e.lookupDoc(ds.url("/other.json"))
	var ce *cimdError
	if !errors.As(err, &ce) || !ce.transient || !strings.Contains(ce.msg, "too many") {
		t.Fatalf("second fetch: got %v", err)
	}
	if ds.count("/other.json") != 0 {
		t.Error("the second document was fetched")
	}
}

// One client address cannot hold the fetch slots everyone shares: naming
// as many documents that never arrive as there are slots, it gets
// cimdMaxFetchesPerClient fetches and a 503 for the rest, and a client at
// another address still has its document fetched.
func TestCIMDFetchSlotsPerClient(t *testing.T) {
	ds := newDocServer(t, false)
	e := newCIMDEnv(t, ds, true, nil)
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	held := func(i int) string { return fmt.Sprintf("/held%d.json", i) }
	for i := range cimdMaxFetches {
		ds.handle(held(i), func(http.ResponseWriter, *http.Request) { <-hold })
	}
	ds.serve("/other.json", clientDoc(ds.url("/other.json")), "")

	const attacker = "192.0.2.66"
	refusals := make(chan error, cimdMaxFetches)
	for i := range cimdMaxFetches {
		go func() {
			_, err := e.b.lookupClient(context.Background(), ds.url(held(i)), forAuthorization, attacker)
			refusals <- err
		}()
	}
	var refused []error
	started := func() int {
		n := 0
		for i := range cimdMaxFetches {
			n += min(ds.count(held(i)), 1)
		}
		return n
	}
	testkit.WaitFor(t, "each of the attacker's lookups to be fetching or refused", 10*time.Second, func() bool {
		for len(refusals) > 0 {
			refused = append(refused, <-refusals)
		}
		return started()+len(refused) == cimdMaxFetches
	})
	if got := started(); got != cimdMaxFetchesPerClient {
		t.Errorf("fetches started for one address: got %d, want %d", got, cimdMaxFetchesPerClient)
	}
	for _, err := range refused {
		var ce *cimdError
		if !errors.As(err, &ce) || !ce.transient || !strings.Contains(ce.msg, "for your address") {
			t.Errorf("a refused lookup: got %v", err)
		}
	}
	if _, err := e.b.lookupClient(context.Background(), ds.url("/other.json"), forAuthorization, "192.0.2.7"); err != nil {
		t.Fatalf("another address's document: %v", err)
	}
}

// At the token endpoint, a copy of the document validated within 24 h
// stands in while the client's host is down (the authorization endpoint
// still refuses); without a copy the answer is 503 with Retry-After and
// the refresh token is not used up; a document that is gone is
// invalid_client, whatever copy there was.
func TestCIMDTokenEndpointOutage(t *testing.T) {
	ds := newDocServer(t, false)
	e := newCIMDEnv(t, ds, true, nil)
	id := ds.url("/client.json")
	body, _ := json.Marshal(clientDoc(id))
	var mu sync.Mutex
	status := http.StatusOK
	set := func(s int) { mu.Lock(); status = s; mu.Unlock() }
	ds.handle("/client.json", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		s := status
		mu.Unlock()
		if s != http.StatusOK {
			http.Error(w, "no", s)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = w.Write(body)
	})
	c := docClient(id)
	a := newAuthRequest(c)
	tr := e.redeem(a, e.code(newBrowser(t), a, alice))
	if tr.status != http.StatusOK {
		t.Fatalf("redeem: %d %s %s", tr.status, tr.Error, tr.Desc)
	}

	set(http.StatusServiceUnavailable)
	e.clock.Advance(2 * time.Minute)
	rr := e.refresh(c, tr.RefreshToken)
	if rr.status != http.StatusOK {
		t.Fatalf("refresh with the host down and a copy: %d %s %s", rr.status, rr.Error, rr.Desc)
	}
	if page := newBrowser(t).get(newAuthRequest(c).url(e.origin)); page.status != http.StatusServiceUnavailable {
		t.Errorf("authorization with the host down: status %d, want 503", page.status)
	}

	// No copy here (a restart, or another replica).
	e.b.docs.mu.Lock()
	clear(e.b.docs.entries)
	e.b.docs.mu.Unlock()
	r := e.refresh(c, rr.RefreshToken)
	if r.status != http.StatusServiceUnavailable || r.Error != "temporarily_unavailable" || r.header.Get("Retry-After") == "" {
		t.Fatalf("refresh with the host down and no copy: %d %s (Retry-After %q)", r.status, r.Error, r.header.Get("Retry-After"))
	}
	set(http.StatusOK)
	e.clock.Advance(cimdFailureTTL)
	if r := e.refresh(c, rr.RefreshToken); r.status != http.StatusOK {
		t.Fatalf("the same refresh token once the host is back: %d %s %s", r.status, r.Error, r.Desc)
	} else {
		rr = r
	}

	set(http.StatusNotFound)
	e.clock.Advance(2 * time.Minute)
	if r := e.refresh(c, rr.RefreshToken); r.status != http.StatusUnauthorized || r.Error != "invalid_client" || !strings.Contains(r.Desc, "answered 404") {
		t.Fatalf("refresh with the document gone: %d %s %s", r.status, r.Error, r.Desc)
	}
}

// The cache's bounds: a copy stands in for transient failures (forToken
// only) for 24 h after it was last validated, never for a definitive
// failure; and the cache holds at most its size.
func TestDocCacheBounds(t *testing.T) {
	clk := testkit.NewClock(time.Unix(1_800_000_000, 0))
	rec := &clientRecord{Version: 1, Name: "copy"}
	ok := func(context.Context) docResult { return docResult{rec: rec, ttl: time.Minute} }
	down := func(context.Context) docResult { return docResult{err: &cimdError{msg: "down", transient: true}} }
	gone := func(context.Context) docResult { return docResult{err: refused("gone")} }
	get := func(c *docCache, stale bool, load func(context.Context) docResult) string {
		got, err := c.get(context.Background(), "https://c.example/c.json", stale, load)
		if err != nil {
			return err.msg
		}
		return got.Name
	}

	c := newDocCache(clk.Now, 10)
	get(c, false, ok)
	clk.Advance(2 * time.Minute)
	for _, tt := range []struct {
		name  string
		after time.Duration
		stale bool
		load  func(context.Context) docResult
		want  string
	}{
		{name: "authorization, host down", stale: false, load: down, want: "down"},
		{name: "token, host down", stale: true, load: down, want: "copy"},
		{name: "token, host down, near the end of the grace", after: cimdStaleGrace - 3*time.Minute, stale: true, load: down, want: "copy"},
		{name: "token, host down, after the grace", after: 2 * time.Minute, stale: true, load: down, want: "down"},
	} {
		clk.Advance(tt.after)
		if got := get(c, tt.stale, tt.load); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}

	c = newDocCache(clk.Now, 10)
	get(c, false, ok)
	clk.Advance(2 * time.Minute)
	if got := get(c, true, gone); got != "gone" {
		t.Errorf("token, document gone: got %q", got)
	}
	clk.Advance(cimdFailureTTL)
	if got := get(c, true, down); got != "down" {
		t.Errorf("token, host down after the document was gone: got %q, want no copy", got)
	}

	c = newDocCache(clk.Now, 10)
	for i := range 50 {
		if _, err := c.get(context.Background(), fmt.Sprintf("https://c.example/%d", i), false, ok); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.entries); n > 10 {
		t.Errorf("cache holds %d entries, want at most 10", n)
	}
}

// CIMD_ENABLED=false (Config.DisableCIMD): the metadata does not advertise
// metadata documents, so clients register; a client_id that is a URL gets
// a page naming invalid_client at the authorization endpoint and
// invalid_client at the token endpoint, and nothing is fetched; registered
// clients work as before.
func TestCIMDDisabled(t *testing.T) {
	ds := newDocServer(t, false)
	e := newCIMDEnv(t, ds, true, func(c *Config) { c.DisableCIMD = true })
	id := ds.url("/client.json")
	ds.serve("/client.json", clientDoc(id), "")

	var md map[string]any
	if err := json.Unmarshal([]byte(newBrowser(t).get(e.origin+MetadataPath).body), &md); err != nil {
		t.Fatal(err)
	}
	if v, ok := md["client_id_metadata_document_supported"]; ok {
		t.Errorf("metadata advertises client_id_metadata_document_supported: %v", v)
	}
	if md["registration_endpoint"] != e.origin+RegisterPath {
		t.Errorf("registration_endpoint %v: clients must be able to register instead", md["registration_endpoint"])
	}

	page := newBrowser(t).get(newAuthRequest(docClient(id)).url(e.origin))
	body := html.UnescapeString(page.body)
	if page.status != http.StatusBadRequest || page.header.Get("Location") != "" ||
		!strings.Contains(body, "(invalid_client): this gateway does not accept client metadata documents") || !strings.Contains(body, id) {
		t.Errorf("authorization with a metadata URL: status %d, Location %q\n%s", page.status, page.header.Get("Location"), body)
	}
	r := e.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}, "client_id": {id}})
	if r.status != http.StatusUnauthorized || r.Error != "invalid_client" || !strings.Contains(r.Desc, "does not accept client metadata documents") {
		t.Errorf("token endpoint with a metadata URL: %d %s %s", r.status, r.Error, r.Desc)
	}
	if n := ds.count("/client.json"); n != 0 {
		t.Errorf("the document was fetched %d times", n)
	}

	c := e.publicClient()
	a := newAuthRequest(c)
	if tr := e.redeem(a, e.code(newBrowser(t), a, alice)); tr.status != http.StatusOK {
		t.Errorf("a registered client: %d %s %s", tr.status, tr.Error, tr.Desc)
	}
}

// The consent page warns that a verified host cannot vouch for a redirect
// on the user's device (loopback, a private-use scheme), and only then: not
// for an https redirect, and not for a registered client, whose page says
// its name is unverified anyway.
func TestCIMDConsentWarnsOfOnDeviceRedirects(t *testing.T) {
	ds := newDocServer(t, false)
	e := newCIMDEnv(t, ds, true, func(c *Config) { c.RedirectSchemes = []string{"cursor"} })
	const warning = "the verified host does not vouch for where the access goes"
	for i, tc := range []struct {
		redirect string
		warned   bool
	}{
		{"https://app.example.com/cb", false},
		{clientRedirect, true},
		{"cursor://anysphere.cursor-mcp/oauth/callback", true},
	} {
		path := "/doc" + strconv.Itoa(i) + ".json"
		id := ds.url(path)
		ds.serve(path, clientDoc(id, tc.redirect), "")
		page := newBrowser(t).get(newAuthRequest(docClient(id, tc.redirect)).url(e.origin))
		consentFlow(t, page)
		if got := strings.Contains(page.body, warning); got != tc.warned {
			t.Errorf("%s: warned %v, want %v\n%s", tc.redirect, got, tc.warned, page.body)
		}
	}
	page := newBrowser(t).get(newAuthRequest(e.publicClient()).url(e.origin))
	consentFlow(t, page)
	if strings.Contains(page.body, warning) {
		t.Errorf("a registered client's page carries the metadata document's warning:\n%s", page.body)
	}
}

// A client_id that is not a usable URL is named on the error page with
// every byte that is not printable ASCII percent-encoded: whoever wrote
// the link can neither reverse the page's own text with a bidirectional
// override nor write sentences of their own on it.
func TestCIMDErrorPageShowsClientIDEncoded(t *testing.T) {
	e := newEnv(t, nil)
	a := newAuthRequest(registered{ID: "x:\u202e Your account is locked. Call +1 555 0100", Redirects: []string{"https://app.example.com/cb"}})
	resp := newBrowser(t).get(a.url(e.origin))
	if resp.status != http.StatusBadRequest || !strings.Contains(resp.body, "Application not recognized") {
		t.Fatalf("status %d, want the error page:\n%s", resp.status, resp.body)
	}
	if strings.Contains(resp.body, "\u202e") || strings.Contains(resp.body, "Your account is locked. Call") {
		t.Errorf("the page shows the client_id as sent:\n%s", resp.body)
	}
	if want := "x:%E2%80%AE%20Your%20account%20is%20locked.%20Call%20"; !strings.Contains(resp.body, want) {
		t.Errorf("the page lacks %q:\n%s", want, resp.body)
	}
}
