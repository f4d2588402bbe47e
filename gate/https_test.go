package gate

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Tests of the https:// upstream path (httputil.ReverseProxy and its
// http.Transport, proxy.go) held to what the gate's own client guarantees
// for an http:// one: the same scenario run over both, each against an
// upstream on 127.0.0.1; and the upstream's certificate verified.

// upstreamTLS returns a server configuration with httptest's certificate
// (for 127.0.0.1, ::1, example.com and *.example.com) and a pool that
// trusts it.
func upstreamTLS(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS()
	cfg := srv.TLS.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	srv.Close()
	return cfg, pool
}

// TestHTTPSUpstreamVerified: an https:// upstream's certificate is
// verified, against UpstreamRootCAs when set: a certificate no trusted
// authority signed (self-signed), or one for another name than the URL's
// host (which the gate sends as SNI), is 502 with a body that names
// nothing internal and no TLS detail, and the upstream is never asked. A
// trusted one is spoken to over HTTP/1.1, even when it offers HTTP/2.
func TestHTTPSUpstreamVerified(t *testing.T) {
	env := newIssuer(t)
	tok := env.token(t, "alice", nil)
	var mu sync.Mutex
	var names []string // SNI of each handshake
	var protos []string
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		protos = append(protos, r.Proto)
		mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	up.EnableHTTP2 = true
	up.TLS = &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		mu.Lock()
		names = append(names, hello.ServerName)
		mu.Unlock()
		return nil, nil
	}}
	up.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	up.StartTLS()
	t.Cleanup(up.Close)
	trusted := x509.NewCertPool()
	trusted.AddCert(up.Certificate())
	ip := serverURL(t, up)
	byName := &url.URL{Scheme: "https", Host: "localhost:" + ip.Port()} // not a name of the certificate
	// An upstream that speaks only TLS 1.0 and 1.1, with a trusted
	// certificate.
	old := httptest.NewUnstartedServer(up.Config.Handler)
	old.TLS = &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11, GetConfigForClient: up.TLS.GetConfigForClient}
	old.Config.ErrorLog = up.Config.ErrorLog
	old.StartTLS()
	t.Cleanup(old.Close)

	for _, c := range []struct {
		name   string
		target *url.URL
		roots  *x509.CertPool
		status int
		sni    string
	}{
		{"trusted", ip, trusted, http.StatusOK, ""},
		{"self-signed, system roots", ip, nil, http.StatusBadGateway, ""},
		{"signed by another authority", ip, x509.NewCertPool(), http.StatusBadGateway, ""},
		{"another name than the certificate's", byName, trusted, http.StatusBadGateway, "localhost"},
		{"TLS 1.1", serverURL(t, old), trusted, http.StatusBadGateway, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			mu.Lock()
			names, protos = nil, nil
			mu.Unlock()
			var logs logBuffer
			s := newSetup(t, env, nil, func(cfg *Config) {
				cfg.Upstream, cfg.UpstreamRootCAs, cfg.Logger = Static(c.target), c.roots, jsonLogger(&logs)
			})
			resp, body := s.do(t, http.MethodPost, "/mcp", bearerHeader(tok), strings.NewReader("{}"))
			if resp.StatusCode != c.status {
				t.Fatalf("got %d %q, want %d", resp.StatusCode, body, c.status)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(names) == 0 || names[0] != c.sni {
				t.Errorf("SNI: got %q, want %q first", names, c.sni)
			}
			if c.status == http.StatusOK {
				if body != "ok" || len(protos) != 1 || protos[0] != "HTTP/1.1" {
					t.Errorf("got %q over %q, want ok over HTTP/1.1", body, protos)
				}
				return
			}
			if len(protos) != 0 {
				t.Errorf("the upstream was asked %d times", len(protos))
			}
			if jsonError(t, body) != "bad_gateway" {
				t.Errorf("body %q, want bad_gateway", body)
			}
			for _, leak := range []string{"127.0.0.1", "localhost", "x509", "tls", "certificate", "version", c.target.Port()} {
				if strings.Contains(strings.ToLower(body), leak) {
					t.Errorf("the answer names %q: %s", leak, body)
				}
			}
			if line := logs.next(t, "proxy: upstream failed", 0); !strings.Contains(line["error"].(string), "tls: ") {
				t.Errorf("the log does not say why: %v", line)
			}
		})
	}
}

// TestHTTPSHandshakeBounded: an https upstream that accepts the connection
// but never completes the TLS handshake is 502 once the handshake's time
// is up, as a connection that cannot be made is on the http path (dial
// timeout): the request does not hang for as long as its client waits.
// The bound is shortened here (the gate's is dialTimeout); one that is
// not there stays unbounded, and the client's own timeout fails the test.
func TestHTTPSHandshakeBounded(t *testing.T) {
	env := newIssuer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept() // and never a byte back
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	target := &url.URL{Scheme: "https", Host: ln.Addr().String()}
	s := newSetup(t, env, nil, func(c *Config) { c.Upstream = Static(target) })
	t.Cleanup(func() {
		// Before the gate's server closes, which waits for a request
		// still in its handshake.
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	tr, ok := s.gate.proxy.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("the https transport is a %T", s.gate.proxy.Transport)
	}
	tr.TLSHandshakeTimeout = min(tr.TLSHandshakeTimeout, 200*time.Millisecond)

	req, _ := http.NewRequest(http.MethodPost, s.front.URL+"/mcp", strings.NewReader("{}"))
	req.Header = bearerHeader(env.token(t, "alice", nil))
	client := s.front.Client()
	client.Timeout = 5 * time.Second
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("no answer while the handshake hangs: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || jsonError(t, string(body)) != "bad_gateway" {
		t.Errorf("got %d %q, want 502 bad_gateway", resp.StatusCode, body)
	}
}

// TestUpstreamConnsBounded: over both paths, at most MaxUpstreamConns
// connections reach the upstream; a request that finds them all busy waits
// for one (the gate's wait), then gets 503 with Retry-After, and one that
// waits while a connection comes free gets it.
func TestUpstreamConnsBounded(t *testing.T) {
	env := newIssuer(t)
	tok := env.token(t, "alice", nil)
	for _, scheme := range []string{"http", "https"} {
		t.Run(scheme, func(t *testing.T) {
			release := make(chan struct{})
			var inFlight, conns atomic.Int64
			up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					inFlight.Add(1)
					<-release
				}
				_, _ = io.WriteString(w, "ok")
			}))
			up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			var roots *x509.CertPool
			if scheme == "https" {
				up.StartTLS()
				roots = x509.NewCertPool()
				roots.AddCert(up.Certificate())
			} else {
				up.Start()
			}
			t.Cleanup(up.Close)
			s := newSetup(t, env, nil, func(c *Config) {
				c.Upstream, c.UpstreamRootCAs, c.MaxUpstreamConns = Static(serverURL(t, up)), roots, 2
			})
			s.gate.conns.wait = 300 * time.Millisecond

			slow := allBusy(t, s, tok, 2, &inFlight)

			s.gate.conns.wait = time.Minute
			waited := make(chan int, 1)
			go func() {
				resp, _ := s.do(t, http.MethodPost, "/", bearerHeader(tok), strings.NewReader("{}"))
				waited <- resp.StatusCode
			}()
			time.Sleep(50 * time.Millisecond) // waiting, most likely; if not, it finds one free
			close(release)
			for range 2 {
				if st := <-slow; st != http.StatusOK {
					t.Errorf("slow request: got %d, want 200", st)
				}
			}
			if st := <-waited; st != http.StatusOK {
				t.Errorf("waiting request: got %d, want 200", st)
			}
			if n := conns.Load(); n > 2 {
				t.Errorf("the upstream accepted %d connections, want at most 2", n)
			}
		})
	}
}

// TestUpstreamHeadsBounded: over both paths, an upstream's answer head is
// at most maxResponseHeadBytes, after at most max1xx informational
// answers; past either it is 502, and nothing of it reaches the client.
func TestUpstreamHeadsBounded(t *testing.T) {
	env := newIssuer(t)
	tok := env.token(t, "alice", nil)
	const final = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\nok"
	early := "HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n"
	head := func(size int) string { // a final answer's head of about size bytes
		return "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", size-100) + "\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\nok"
	}
	for _, c := range []struct {
		name, answer string
		status       int
	}{
		{"as many 1xx as allowed", strings.Repeat(early, max1xx) + final, http.StatusOK},
		{"one 1xx too many", strings.Repeat(early, max1xx+1) + final, http.StatusBadGateway},
		{"a great many 1xx", strings.Repeat(early, 1000) + final, http.StatusBadGateway},
		{"a head just under the bound", head(maxResponseHeadBytes - 1024), http.StatusOK},
		{"a head over the bound", head(maxResponseHeadBytes + 1024), http.StatusBadGateway},
		{"a 1xx head over the bound", "HTTP/1.1 103 Early Hints\r\nLink: " + strings.Repeat("a", maxResponseHeadBytes) + "\r\n\r\n" + final, http.StatusBadGateway},
	} {
		for _, scheme := range []string{"http", "https"} {
			t.Run(scheme+"/"+c.name, func(t *testing.T) {
				up := newRawUpstreamOver(t, scheme, c.answer)
				s := newSetup(t, env, nil, func(cfg *Config) { cfg.Upstream, cfg.UpstreamRootCAs = Static(up.url(t)), up.roots })
				resp, body := s.do(t, http.MethodPost, "/mcp", bearerHeader(tok), strings.NewReader("{}"))
				if resp.StatusCode != c.status {
					t.Fatalf("got %d %q, want %d", resp.StatusCode, body, c.status)
				}
				if c.status != http.StatusOK && (jsonError(t, body) != "bad_gateway" || resp.Header.Get("X-Big") != "" || resp.Header.Get("Link") != "") {
					t.Errorf("the answer passed: %q %v", body, resp.Header)
				}
			})
		}
	}
}

// TestHTTPSMalformedAnswer: what TestMalformedAnswer holds the gate's own
// client to, over the https path, which reads answers as net/http does
// (docs/security.md): ambiguous framing net/http refuses is 502 with
// nothing internal in the body; what it accepts (bare LF, obsolete
// folding, chunked with Content-Length) is relayed as it reads it, a
// folded line never a field of its own. The day the https path reads as
// strictly as the own client, the 200 rows become 502.
func TestHTTPSMalformedAnswer(t *testing.T) {
	env := newIssuer(t)
	tok := env.token(t, "alice", nil)
	for _, c := range []struct {
		name, answer string
		status       int
		body         string
	}{
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", http.StatusOK, "ok"},
		{"obsolete folding", "HTTP/1.1 200 OK\r\nX-A: 1\r\n X-Injected: 1\r\nContent-Length: 2\r\n\r\nok", http.StatusOK, "ok"},
		{"both framings", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n0\r\n\r\n", http.StatusOK, ""},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", http.StatusBadGateway, ""},
		{"an unknown coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok", http.StatusBadGateway, ""},
		{"a response splitting header", "HTTP/1.1 200 OK\r\nX-A: 1\rContent-Length: 0\r\nContent-Length: 2\r\n\r\nok", http.StatusBadGateway, ""},
		{"not HTTP", "SSH-2.0-OpenSSH_9.0\r\n\r\n", http.StatusBadGateway, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := newRawUpstreamOver(t, "https", c.answer)
			s := newSetup(t, env, nil, func(cfg *Config) { cfg.Upstream, cfg.UpstreamRootCAs = Static(up.url(t)), up.roots })
			resp, body := s.do(t, http.MethodPost, "/", bearerHeader(tok), strings.NewReader("{}"))
			if resp.StatusCode != c.status {
				t.Fatalf("got %d %q, want %d", resp.StatusCode, body, c.status)
			}
			if c.status == http.StatusOK && body != c.body {
				t.Errorf("body: got %q, want %q", body, c.body)
			}
			if c.status != http.StatusOK && (jsonError(t, body) != "bad_gateway" || strings.Contains(body, "127.0.0.1")) {
				t.Errorf("body %q, want bad_gateway naming nothing", body)
			}
			if resp.Header.Get("X-Injected") != "" {
				t.Errorf("a folded line became a field: %v", resp.Header)
			}
		})
	}
}
