package gate

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// Tests of the gate's own upstream client (upstream*.go, relay.go,
// detach.go): what it owns beyond what the gate's other tests hold every
// proxy path to.

// scripted is an upstream on raw TCP whose every connection is served by
// serve (i: the connection's number from 0), for answers no HTTP server
// would write.
type scripted struct {
	ln    net.Listener
	conns atomic.Int64
}

func newScripted(t *testing.T, serve func(i int, c net.Conn, br *bufio.Reader)) *scripted {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scripted{ln: ln}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			i := int(s.conns.Add(1) - 1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(i, c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

func (s *scripted) url() *url.URL { return &url.URL{Scheme: "http", Host: s.ln.Addr().String()} }

// readRequest reads one request and its body; false when the connection
// ended.
func readRequest(br *bufio.Reader) (*http.Request, bool) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, false
	}
	_, _ = io.Copy(io.Discard, req.Body)
	return req, true
}

// countingUpstream is a real HTTP server that counts the connections it
// accepted.
func countingUpstream(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			n.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &n
}

func serverURL(t *testing.T, srv *httptest.Server) *url.URL {
	t.Helper()
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func gateOf(t *testing.T, s *setup) *gate {
	t.Helper()
	g, ok := s.front.Config.Handler.(*gate)
	if !ok || g.conns == nil {
		t.Fatal("the gate does not use its own client")
	}
	return g
}

// TestPoolBounded: at most MaxUpstreamConns connections reach the
// upstream; a request that finds them all busy waits for one (and gets
// it when one comes free), or gets 503 with Retry-After; the queue is
// bounded too.
func TestPoolBounded(t *testing.T) {
	env := newIssuer(t)
	release := make(chan struct{})
	var inFlight atomic.Int64
	up, conns := countingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			inFlight.Add(1)
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	})
	s := newSetup(t, env, nil, func(c *Config) { c.Upstream = Static(serverURL(t, up)); c.MaxUpstreamConns = 2 })
	g := gateOf(t, s)
	g.conns.wait = 300 * time.Millisecond
	tok := env.token(t, "alice", nil)

	slow := allBusy(t, s, tok, 2, &inFlight)

	// A waiter gets the connection a finished request gives back.
	g.conns.wait = time.Minute
	waited := make(chan int, 1)
	go func() {
		resp, _ := s.do(t, http.MethodPost, "/", bearerHeader(tok), strings.NewReader("{}"))
		waited <- resp.StatusCode
	}()
	for waiting(g) < 1 {
		time.Sleep(5 * time.Millisecond)
	}
	// The queue holds at most MaxUpstreamConns: a third waiter is refused
	// at once, while the first still waits.
	go func() {
		resp, _ := s.do(t, http.MethodPost, "/", bearerHeader(tok), strings.NewReader("{}"))
		waited <- resp.StatusCode
	}()
	for waiting(g) < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	resp, _ := s.do(t, http.MethodPost, "/", bearerHeader(tok), strings.NewReader("{}"))
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("with the queue full: got %d, want 503", resp.StatusCode)
	}
	select {
	case st := <-waited:
		t.Fatalf("a queued request was answered (%d) before any connection came free", st)
	default:
	}
	close(release)
	for range 2 {
		if st := <-slow; st != http.StatusOK {
			t.Errorf("slow request: got %d, want 200", st)
		}
		if st := <-waited; st != http.StatusOK {
			t.Errorf("queued request: got %d, want 200", st)
		}
	}
	if n := conns.Load(); n > 2 {
		t.Errorf("the upstream accepted %d connections, want at most 2", n)
	}
}

func waiting(g *gate) int {
	g.conns.mu.Lock()
	defer g.conns.mu.Unlock()
	return len(g.conns.waiters)
}

// TestUpstreamBreaksOff: an answer the upstream cuts short (its connection
// closed before the declared length, or before the last chunk) reaches the
// client cut too, never as a whole answer; the gate says so in its log.
func TestUpstreamBreaksOff(t *testing.T) {
	env := newIssuer(t)
	tok := env.token(t, "alice", nil)
	for _, c := range []struct{ name, answer, sent string }{
		{"before its length", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", "partial"},
		{"before the last chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\npartial\r\n", "partial"},
		{"inside a chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\npartial", "partial"},
		{"an event stream", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n", "data: 1\n\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := newScripted(t, func(_ int, conn net.Conn, br *bufio.Reader) {
				if _, ok := readRequest(br); ok {
					_, _ = io.WriteString(conn, c.answer)
				}
			})
			var logs logBuffer
			s := newSetup(t, env, nil, func(cfg *Config) { cfg.Upstream = Static(up.url()); cfg.Logger = jsonLogger(&logs) })
			req, _ := http.NewRequest(http.MethodPost, s.front.URL+"/mcp", strings.NewReader("{}"))
			req.Header = bearerHeader(tok)
			// A length-framed answer is buffered until its end: the client
			// may see nothing of it; a chunked one reaches it up to the cut.
			resp, err := s.front.Client().Do(req)
			if err == nil {
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err == nil {
					t.Fatalf("the client read a whole answer: %q", b)
				}
				if string(b) != c.sent && len(b) != 0 {
					t.Errorf("before the cut: got %q, want %q", b, c.sent)
				}
			}
			if line := logs.next(t, "proxy: upstream answer broken off", 0); !strings.Contains(fmt.Sprint(line["error"]), "mid-answer") {
				t.Errorf("log line: %v", line)
			}
		})
	}
}

// TestSlowUpstream: no timeout on an answer's head or between its parts;
// each part reaches the client as it is sent.
func TestSlowUpstream(t *testing.T) {
	env := newIssuer(t)
	next := make(chan struct{})
	s := newSetup(t, env, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(1500 * time.Millisecond)
		for i := range 3 {
			fmt.Fprintf(w, "part %d\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-time.After(10 * time.Second):
				return
			}
		}
	}, nil)
	req, _ := http.NewRequest(http.MethodPost, s.front.URL+"/mcp", strings.NewReader("{}"))
	req.Header = bearerHeader(env.token(t, "alice", nil))
	resp, err := s.front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("part %d\n", i) {
			t.Fatalf("part %d: got %q, %v", i, line, err)
		}
		next <- struct{}{} // the next part is sent only now
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("end: got %q, %v", rest, err)
	}
}

// TestClientGoneConnectionNotReused: a client that leaves mid-answer ends
// the upstream's request too (its connection is closed), and that
// connection is never used again.
func TestClientGoneConnectionNotReused(t *testing.T) {
	env := newIssuer(t)
	ended := make(chan struct{})
	up, conns := countingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow" {
			_, _ = io.WriteString(w, "ok")
			return
		}
		_, _ = io.WriteString(w, "first part\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(ended)
	})
	s := newSetup(t, env, nil, func(c *Config) { c.Upstream = Static(serverURL(t, up)) })
	tok := env.token(t, "alice", nil)
	if resp, _ := s.do(t, http.MethodPost, "/", bearerHeader(tok), strings.NewReader("{}")); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.front.URL+"/slow", strings.NewReader("{}"))
	req.Header = bearerHeader(tok)
	resp, err := s.front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || line != "first part\n" {
		t.Fatalf("first part: %q, %v", line, err)
	}
	cancel()
	resp.Body.Close()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream's request did not end when the client left")
	}
	// The aborted connection (the first request's, reused) is closed and
	// out of the pool, not back in it.
	g := gateOf(t, s)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		g.conns.mu.Lock()
		open, idle := g.conns.open, len(g.conns.idle)
		g.conns.mu.Unlock()
		if open == 0 && idle == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the abort the pool holds %d connections (%d idle), want none", open, idle)
		}
	}
	before := conns.Load()
	for range 3 {
		if resp, _ := s.do(t, http.MethodPost, "/", bearerHeader(tok), strings.NewReader("{}")); resp.StatusCode != 200 {
			t.Fatalf("after: status %d", resp.StatusCode)
		}
	}
	if got := conns.Load() - before; got != 1 {
		t.Errorf("the upstream accepted %d more connections, want 1 (then reused)", got)
	}
}

// TestKeepAliveNoMixing: many clients at once over kept-alive upstream
// connections: every answer is the one to its own request, no request is
// written on a connection before the answer to the previous one was read
// (no pipelining), and connections are reused.
func TestKeepAliveNoMixing(t *testing.T) {
	env := newIssuer(t)
	var pipelined, requests atomic.Int64
	up := newScripted(t, func(_ int, conn net.Conn, br *bufio.Reader) {
		for {
			req, ok := readRequest(br)
			if !ok {
				return
			}
			requests.Add(1)
			id := req.Header.Get("X-Test-Id")
			n, _ := strconv.Atoi(id)
			time.Sleep(time.Duration(n%3) * time.Millisecond)
			// Anything already sent on this connection would be a
			// pipelined request.
			_ = conn.SetReadDeadline(time.Now().Add(time.Millisecond))
			if _, err := br.Peek(1); err == nil {
				pipelined.Add(1)
			}
			_ = conn.SetReadDeadline(time.Time{})
			body := "answer to " + id
			fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	s := newSetup(t, env, nil, func(c *Config) {
		c.Upstream = Static(up.url())
		c.SubjectLimiter = testAdmission(t, 1_000_000, testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)).Now)
	})
	tok := env.token(t, "alice", nil)
	const clients, each = 16, 25
	var wg sync.WaitGroup
	errs := make(chan string, clients*each)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := strconv.Itoa(c*each + i)
				h := bearerHeader(tok)
				h.Set("X-Test-Id", id)
				resp, body := s.do(t, http.MethodPost, "/mcp", h, strings.NewReader(`{"id":`+id+`}`))
				if resp.StatusCode != 200 || body != "answer to "+id {
					errs <- fmt.Sprintf("request %s: %d %q", id, resp.StatusCode, body)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := pipelined.Load(); n > 0 {
		t.Errorf("%d requests were pipelined behind another", n)
	}
	if got, want := requests.Load(), int64(clients*each); got != want {
		t.Errorf("upstream requests: got %d, want %d", got, want)
	}
	if n := up.conns.Load(); n > clients {
		t.Errorf("the upstream accepted %d connections for %d clients: keep-alive not reused", n, clients)
	}
}

// TestMoreThanContentLength: bytes after the declared length (an answer
// smuggled behind another) are never read as the next answer: the
// connection is dropped, whether they came with the answer (one write) or
// later while it was idle.
//
// Bytes that arrive only after the next request was written cannot be told
// from its answer by any HTTP/1.1 client (net/http's neither), so the test
// makes sure the late ones are sent before the next request: the upstream
// says when it wrote them.
func TestMoreThanContentLength(t *testing.T) {
	env := newIssuer(t)
	tok := env.token(t, "alice", nil)
	const (
		first    = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"
	)
	for _, later := range []bool{false, true} {
		t.Run(fmt.Sprintf("later=%v", later), func(t *testing.T) {
			answered, sent := make(chan struct{}), make(chan struct{})
			up := newScripted(t, func(i int, conn net.Conn, br *bufio.Reader) {
				for n := 0; ; n++ {
					if _, ok := readRequest(br); !ok {
						return
					}
					if i == 0 && n == 0 {
						if !later {
							_, _ = io.WriteString(conn, first+smuggled)
							continue
						}
						_, _ = io.WriteString(conn, first)
						<-answered // the gateway has relayed the answer: its connection is idle
						_, _ = io.WriteString(conn, smuggled)
						close(sent)
						continue
					}
					_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine")
				}
			})
			s := newSetup(t, env, nil, func(c *Config) { c.Upstream = Static(up.url()) })
			if _, body := s.do(t, http.MethodPost, "/", bearerHeader(tok), strings.NewReader("{}")); body != "ok" {
				t.Fatalf("first: got %q, want ok", body)
			}
			if later {
				close(answered)
				<-sent
				// Written on loopback: in the gateway's socket at once; a
				// moment more for a machine under load.
				time.Sleep(50 * time.Millisecond)
			}
			for range 2 {
				if _, body := s.do(t, http.MethodPost, "/", bearerHeader(tok), strings.NewReader("{}")); body != "fine" {
					t.Fatalf("next: got %q, want fine", body)
				}
			}
			if n := up.conns.Load(); n != 2 {
				t.Errorf("the upstream accepted %d connections, want 2 (the first dropped)", n)
			}
		})
	}
}

// TestMalformedAnswer: an answer the gate cannot read unambiguously is
// 502 with a body that names nothing internal, also when the upstream is
// the gate's own child (no 503: it is not restarting).
func TestMalformedAnswer(t *testing.T) {
	env := newIssuer(t)
	tok := env.token(t, "alice", nil)
	for _, c := range []struct{ name, answer string }{
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok"},
		{"obsolete folding", "HTTP/1.1 200 OK\r\nX-A: 1\r\n X-Injected: 1\r\nContent-Length: 2\r\n\r\nok"},
		{"both framings", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n0\r\n\r\n"},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"},
		{"an unknown coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok"},
		{"a response splitting header", "HTTP/1.1 200 OK\r\nX-A: 1\rContent-Length: 0\r\nContent-Length: 2\r\n\r\nok"},
		{"not HTTP", "SSH-2.0-OpenSSH_9.0\r\n\r\n"},
		{"too many 1xx", strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", max1xx+1) + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := newScripted(t, func(_ int, conn net.Conn, br *bufio.Reader) {
				if _, ok := readRequest(br); ok {
					_, _ = io.WriteString(conn, c.answer)
				}
			})
			s := newSetup(t, env, nil, func(cfg *Config) { cfg.Upstream = Static(up.url()); cfg.UpstreamRestarts = true })
			resp, body := s.do(t, http.MethodPost, "/", bearerHeader(tok), strings.NewReader("{}"))
			if resp.StatusCode != http.StatusBadGateway || jsonError(t, body) != "bad_gateway" {
				t.Fatalf("got %d %q, want 502 bad_gateway", resp.StatusCode, body)
			}
			if strings.Contains(body, "127.0.0.1") || resp.Header.Get("X-Injected") != "" {
				t.Errorf("the answer leaks: %q %v", body, resp.Header)
			}
		})
	}
}

// TestAnswersWithoutBody: HEAD, 204 and 304 answers carry no body whatever
// they announce; a HEAD answer's Content-Length is passed on and its
// connection reused, a 204 that announces a body costs its connection.
func TestAnswersWithoutBody(t *testing.T) {
	env := newIssuer(t)
	tok := env.token(t, "alice", nil)
	up := newScripted(t, func(_ int, conn net.Conn, br *bufio.Reader) {
		for {
			req, ok := readRequest(br)
			if !ok {
				return
			}
			switch {
			case req.Method == http.MethodHead:
				_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n")
			case req.URL.Path == "/204":
				_, _ = io.WriteString(conn, "HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\nsmuggled!")
			case req.URL.Path == "/304":
				_, _ = io.WriteString(conn, "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n")
			default:
				_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	})
	s := newSetup(t, env, nil, func(c *Config) { c.Upstream = Static(up.url()) })
	for range 2 {
		resp, body := s.do(t, http.MethodHead, "/mcp", bearerHeader(tok), nil)
		if resp.StatusCode != 200 || body != "" || resp.ContentLength != 10 {
			t.Fatalf("HEAD: got %d %q length %d, want 200, no body, length 10", resp.StatusCode, body, resp.ContentLength)
		}
	}
	if n := up.conns.Load(); n != 1 {
		t.Errorf("after two HEADs the upstream accepted %d connections, want 1", n)
	}
	resp, body := s.do(t, http.MethodGet, "/304", bearerHeader(tok), nil)
	if resp.StatusCode != 304 || body != "" || resp.Header.Get("ETag") != `"x"` {
		t.Fatalf("304: got %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = s.do(t, http.MethodGet, "/204", bearerHeader(tok), nil)
	if resp.StatusCode != 204 || body != "" {
		t.Fatalf("204: got %d %q", resp.StatusCode, body)
	}
	if _, body := s.do(t, http.MethodGet, "/", bearerHeader(tok), nil); body != "ok" {
		t.Fatalf("after the 204: got %q, want ok", body)
	}
	if n := up.conns.Load(); n != 2 {
		t.Errorf("the upstream accepted %d connections, want 2 (the 204's dropped)", n)
	}
}

// TestIdleConnectionClosedByUpstream: an upstream that closes idle
// keep-alive connections (Node's default is 5 s) costs nothing: the next
// request, a POST the gate could not send again, goes on a new one.
func TestIdleConnectionClosedByUpstream(t *testing.T) {
	env := newIssuer(t)
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	up.Config.IdleTimeout = 50 * time.Millisecond
	up.Start()
	t.Cleanup(up.Close)
	s := newSetup(t, env, nil, func(c *Config) { c.Upstream = Static(serverURL(t, up)) })
	tok := env.token(t, "alice", nil)
	for i := range 3 {
		if resp, body := s.do(t, http.MethodPost, "/", bearerHeader(tok), strings.NewReader("{}")); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: got %d %q", i, resp.StatusCode, body)
		}
		time.Sleep(200 * time.Millisecond) // past the upstream's idle timeout
	}
}

// TestRequestBodies: bodies larger than one write arrive whole, framed as
// the client framed them; one cut at MaxBodyBytes after part of it went
// upstream is 413 and the upstream never takes it for whole. The upstream
// here is a server of the test's own: newUpstream's recorder reads bodies
// itself and would hide a read error from the handler.
func TestRequestBodies(t *testing.T) {
	env := newIssuer(t)
	tok := env.token(t, "alice", nil)
	var mu sync.Mutex
	got := map[string]string{}
	read := make(chan string, 8) // the X-Test of each request the upstream has read
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		key := r.Header.Get("X-Test")
		mu.Lock()
		if err != nil {
			got[key] = "error: " + err.Error()
		} else {
			got[key] = fmt.Sprintf("%d %v %d", r.ContentLength, r.TransferEncoding, len(b))
		}
		mu.Unlock()
		read <- key
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, strconv.Itoa(len(b)))
	}))
	t.Cleanup(up.Close)
	upURL, _ := url.Parse(up.URL)
	s := newSetup(t, env, nil, func(c *Config) {
		c.MaxBodyBytes = 256 << 10
		c.Upstream = Static(upURL)
	})
	big := strings.Repeat("x", 100<<10)
	for _, c := range []struct {
		name    string
		body    io.Reader
		want    string
		status  int
		upsteam string
	}{
		{"declared length", strings.NewReader(big), "102400", 200, "102400 [] 102400"},
		{"chunked", unsized{strings.NewReader(big)}, "102400", 200, "-1 [chunked] 102400"},
		{"chunked, small", unsized{strings.NewReader("{}")}, "2", 200, "-1 [chunked] 2"},
		{"chunked, over the limit", unsized{strings.NewReader(strings.Repeat("y", 300<<10))}, "", 413, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := bearerHeader(tok)
			h.Set("X-Test", c.name)
			resp, body := s.do(t, http.MethodPost, "/", h, c.body)
			if resp.StatusCode != c.status || c.want != "" && body != c.want {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, body, c.status, c.want)
			}
			// The upstream's handler ends after the client has its answer
			// when the gate cut the body: wait for it to say what it read.
			select {
			case k := <-read:
				if k != c.name {
					t.Fatalf("the upstream read %q, want %q", k, c.name)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("the upstream never finished reading %q", c.name)
			}
			mu.Lock()
			v := got[c.name]
			mu.Unlock()
			if c.upsteam != "" && v != c.upsteam {
				t.Errorf("upstream read %v, want %q", v, c.upsteam)
			}
			if c.status == 413 && !strings.HasPrefix(v, "error") {
				t.Errorf("the upstream took a cut body for whole: %v", v)
			}
		})
	}
}

// TestDetachedStream: with Config.Shutdown set, an event stream is relayed
// after its handler returned (detach.go): the client sees the head net/http
// would have written, every event as it comes, and a clean end when the
// upstream ends the stream; a client that leaves ends the upstream's
// request; both are counted and logged once ended.
func TestDetachedStream(t *testing.T) {
	env := newIssuer(t)
	tok := env.token(t, "alice", nil)
	next := make(chan string)
	ended := make(chan struct{}, 1)
	handler := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Mcp-Session-Id", "s1")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case ev, ok := <-next:
				if !ok {
					return // the upstream ends the stream
				}
				_, _ = io.WriteString(w, ev)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				ended <- struct{}{}
				return
			}
		}
	}
	shutdown, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := &streamMetrics{}
	var logs logBuffer
	detached := newSetup(t, env, handler, func(c *Config) { c.Shutdown = shutdown; c.Metrics = m; c.Logger = jsonLogger(&logs) })
	inHandler := newSetup(t, env, handler, nil)

	open := func(s *setup) (*http.Response, *bufio.Reader) {
		req, _ := http.NewRequest(http.MethodPost, s.front.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen"}`))
		req.Header = bearerHeader(tok)
		req.Header.Set("Origin", "https://claude.ai")
		req.Header.Set("Content-Type", "application/json")
		resp, err := s.front.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp, bufio.NewReader(resp.Body)
	}

	// The same head either way, but for Date and the connection's end.
	want, _ := open(inHandler)
	want.Body.Close()
	<-ended
	resp, br := open(detached)
	if resp.StatusCode != 200 || resp.ProtoMajor != 1 || resp.ProtoMinor != 1 || !resp.Close || len(resp.TransferEncoding) != 1 {
		t.Fatalf("head: %d %s close=%v %v", resp.StatusCode, resp.Proto, resp.Close, resp.TransferEncoding)
	}
	for k := range want.Header {
		// Each gate seals session IDs with a key of its own (session.go).
		if k != "Date" && k != "X-Request-Id" && k != "Mcp-Session-Id" && strings.Join(resp.Header[k], ",") != strings.Join(want.Header[k], ",") {
			t.Errorf("%s: got %q, want %q", k, resp.Header[k], want.Header[k])
		}
	}
	if got, want := resp.Header.Get("Mcp-Session-Id"), want.Header.Get("Mcp-Session-Id"); !strings.HasPrefix(got, "s1.") || len(got) != len(want) {
		t.Errorf("Mcp-Session-Id: got %q, want the server's s1 sealed, as %q", got, want)
	}
	for k := range resp.Header {
		if _, ok := want.Header[k]; !ok {
			t.Errorf("%s: %q only in the detached head", k, resp.Header[k])
		}
	}
	if open, _ := m.state(); open != 1 {
		t.Errorf("open streams: got %d, want 1", open)
	}
	for i := range 3 {
		ev := fmt.Sprintf("id: %d\ndata: {}\n\n", i)
		next <- ev
		for _, line := range []string{fmt.Sprintf("id: %d\n", i), "data: {}\n", "\n"} {
			if got, err := br.ReadString('\n'); err != nil || got != line {
				t.Fatalf("event %d: got %q, %v; want %q", i, got, err, line)
			}
		}
	}
	close(next) // the upstream ends the stream: a clean end
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("end of the stream: %q, %v", rest, err)
	}
	resp.Body.Close()
	line := logs.next(t, "proxied", 0)
	if line["status"] != 200.0 || line["bytes"] != float64(3*len("id: 0\ndata: {}\n\n")) {
		t.Errorf("audit line: %v", line)
	}

	// A client that leaves: the upstream's request ends.
	next = make(chan string)
	resp, _ = open(detached)
	resp.Body.Close()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream's request did not end when the client left")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		open, outcomes := m.state()
		if open == 0 && len(outcomes) == 2 {
			for _, o := range outcomes {
				if !o.Stream || o.Class != ClassProxied || o.Status != 200 {
					t.Errorf("outcome %+v", o)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("open streams %d, outcomes %d; want 0 and 2", open, len(outcomes))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUpstreamBusyBody: the gate's constant body for a busy upstream is
// what respond.ErrorBody writes.
func TestUpstreamBusyBody(t *testing.T) {
	if got := jsonError(t, bodyUpstreamBusy); got != "unavailable" {
		t.Errorf("error: got %q", got)
	}
	if !errors.Is(fmt.Errorf("x: %w", errUpstreamBusy), errUpstreamBusy) {
		t.Error("errUpstreamBusy does not wrap")
	}
}

// TestDetachedStreamShutdownStuckClient: a detached stream whose client
// stopped reading (its relay blocked in a write) still ends when shutdown
// begins: both connections are closed, and the stream is counted.
func TestDetachedStreamShutdownStuckClient(t *testing.T) {
	env := newIssuer(t)
	var written atomic.Int64
	event := "data: " + strings.Repeat("x", 64<<10) + "\n\n"
	shutdown, beginShutdown := context.WithCancel(context.Background())
	defer beginShutdown()
	m := &streamMetrics{}
	s := newSetup(t, env, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for r.Context().Err() == nil {
			n, err := io.WriteString(w, event)
			written.Add(int64(n))
			if err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	}, func(c *Config) { c.Shutdown = shutdown; c.Metrics = m })
	s.openStream(t, "/mcp", bearerHeader(env.token(t, "alice", nil)))
	// The client reads nothing: wait until the upstream cannot write more.
	for last, still := int64(-1), 0; still < 3; time.Sleep(100 * time.Millisecond) {
		if n := written.Load(); n == last {
			still++
		} else {
			last, still = n, 0
		}
	}
	beginShutdown()
	deadline := time.Now().Add(10 * time.Second)
	for {
		open, outcomes := m.state()
		if open == 0 && len(outcomes) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after shutdown: open streams %d, outcomes %d; want 0 and 1", open, len(outcomes))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDetachedStreamPipelined: a client that pipelines requests behind one
// answered with an event stream (RFC 9112 §9.3.2) gets that stream whole,
// every event and its last chunk, whether the next request came with the
// first or while the stream was open; the head says Connection: close, so
// the client sends again what was not answered.
func TestDetachedStreamPipelined(t *testing.T) {
	env := newIssuer(t)
	tok := env.token(t, "alice", nil)
	next := make(chan struct{})
	s := newSetup(t, env, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "data: 2\n\n")
	}, func(c *Config) { c.Shutdown = context.Background() })
	post := "POST /mcp HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
	for _, c := range []struct {
		name          string
		first, second string
	}{
		{"sent together", post + post, ""},
		{"sent while the stream is open", post, post},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", s.front.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.WriteString(conn, c.first)
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !resp.Close {
				t.Error("the head does not say Connection: close")
			}
			body := bufio.NewReader(resp.Body)
			for _, want := range []string{"data: 1\n", "\n"} {
				if line, err := body.ReadString('\n'); err != nil || line != want {
					t.Fatalf("first event: got %q, %v", line, err)
				}
			}
			if c.second != "" {
				_, _ = io.WriteString(conn, c.second)
				time.Sleep(50 * time.Millisecond) // for the gate to see it before the next event
			}
			select {
			case next <- struct{}{}:
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream's request ended before its second event")
			}
			if rest, err := io.ReadAll(body); err != nil || string(rest) != "data: 2\n\n" {
				t.Fatalf("rest of the stream: got %q, %v; want the second event and a clean end", rest, err)
			}
		})
	}
}

// heldMetrics is Metrics whose Request, for a stream, says it was called
// and returns only once released.
type heldMetrics struct {
	entered, release chan struct{}
}

func (m *heldMetrics) Request(o Outcome) {
	if o.Stream {
		close(m.entered)
		<-m.release
	}
}

func (m *heldMetrics) Stream(int) {}

// TestDetachedStreamsWaited: Config.Detached counts a detached stream
// until it is wholly accounted for (audit line and Metrics), so a caller
// that waits on it after shutdown loses none of them at exit: net/http's
// Shutdown does not see hijacked connections.
func TestDetachedStreamsWaited(t *testing.T) {
	env := newIssuer(t)
	shutdown, beginShutdown := context.WithCancel(context.Background())
	defer beginShutdown()
	m := &heldMetrics{entered: make(chan struct{}), release: make(chan struct{})}
	var detached sync.WaitGroup
	var logs logBuffer
	s := newSetup(t, env, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}, func(c *Config) {
		c.Shutdown, c.Detached, c.Metrics, c.Logger = shutdown, &detached, m, jsonLogger(&logs)
	})
	resp := s.openStream(t, "/mcp", bearerHeader(env.token(t, "alice", nil)))
	if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || line != "data: 1\n" {
		t.Fatalf("first event: got %q, %v", line, err)
	}
	beginShutdown()
	waited := make(chan struct{})
	go func() { detached.Wait(); close(waited) }()
	select {
	case <-m.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream was not accounted for after shutdown began")
	}
	select {
	case <-waited:
		t.Fatal("Detached was done before the stream was accounted for")
	case <-time.After(100 * time.Millisecond):
	}
	close(m.release)
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("Detached never done")
	}
	if n := logs.count(t, "proxied"); n != 1 {
		t.Errorf("proxied lines once Detached was done: got %d, want 1", n)
	}
}

// TestIdleUpstreamConnsClosedWhenTrafficStops: idle connections to the
// upstream are closed once they outlive the idle timeout, also when no
// request comes after them (before, only a connection given back to the
// pool closed the expired ones, so up to 256 stayed open while traffic
// was stopped).
func TestIdleUpstreamConnsClosedWhenTrafficStops(t *testing.T) {
	env := newIssuer(t)
	var closed atomic.Int64
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed.Add(1)
		}
	}
	up.Start()
	t.Cleanup(up.Close)
	s := newSetup(t, env, nil, func(c *Config) { c.Upstream = Static(serverURL(t, up)) })
	g := gateOf(t, s)
	g.conns.mu.Lock()
	g.conns.idleFor = 200 * time.Millisecond
	g.conns.mu.Unlock()
	tok := env.token(t, "alice", nil)

	// Three connections at once, all given back idle.
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-release
			resp, _ := s.do(t, http.MethodPost, "/", bearerHeader(tok), strings.NewReader("{}"))
			if resp.StatusCode != http.StatusOK {
				t.Errorf("got %d, want 200", resp.StatusCode)
			}
		}()
	}
	close(release)
	wg.Wait()
	g.conns.mu.Lock()
	idle := len(g.conns.idle)
	g.conns.mu.Unlock()
	if idle == 0 {
		t.Fatal("no idle connection after the requests")
	}
	testkit.WaitFor(t, "the idle connections to be closed", 5*time.Second, func() bool {
		g.conns.mu.Lock()
		defer g.conns.mu.Unlock()
		return len(g.conns.idle) == 0 && g.conns.open == 0 && !g.conns.sweeping
	})
	testkit.WaitFor(t, "the upstream to see them closed", 5*time.Second, func() bool { return closed.Load() >= int64(idle) })

	// The pool works after the sweep, and sweeps again.
	if resp, _ := s.do(t, http.MethodPost, "/", bearerHeader(tok), strings.NewReader("{}")); resp.StatusCode != http.StatusOK {
		t.Fatalf("after the sweep: got %d, want 200", resp.StatusCode)
	}
	testkit.WaitFor(t, "the next idle connection to be closed", 5*time.Second, func() bool {
		g.conns.mu.Lock()
		defer g.conns.mu.Unlock()
		return len(g.conns.idle) == 0 && g.conns.open == 0
	})
}

// TestNoContentTypeGuessed: an answer without Content-Type reaches the
// client without one, as nginx passes it, instead of with a type net/http
// guesses from the body (text/html for markup), over both paths, with a
// length or chunked.
func TestNoContentTypeGuessed(t *testing.T) {
	env := newIssuer(t)
	tok := env.token(t, "alice", nil)
	const body = "<html><script>alert(1)</script></html>"
	for _, scheme := range []string{"http", "https"} {
		for framing, answer := range map[string]string{
			"length":  "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body,
			"chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(body) + "0\r\n\r\n",
		} {
			t.Run(scheme+"/"+framing, func(t *testing.T) {
				up := newRawUpstreamOver(t, scheme, answer)
				s := newSetup(t, env, nil, func(cfg *Config) { cfg.Upstream, cfg.UpstreamRootCAs = Static(up.url(t)), up.roots })
				resp, got := s.do(t, http.MethodPost, "/", bearerHeader(tok), strings.NewReader("{}"))
				if resp.StatusCode != http.StatusOK || got != body {
					t.Fatalf("got %d %q, want 200 and the body", resp.StatusCode, got)
				}
				if ct, ok := resp.Header["Content-Type"]; ok {
					t.Errorf("Content-Type %q added to an answer that had none", ct)
				}
			})
		}
	}
}

// openStream GETs path through the gate as an event-stream client with h
// (a bearer header, say); the body is closed when the test ends.
func (s *setup) openStream(t *testing.T, path string, h http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.front.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	req.Header.Set("Accept", "text/event-stream")
	resp, err := s.front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// allBusy sends n requests to /slow, which the upstream holds (counting
// them in inFlight) until the test lets them go, and checks that once all
// n are in flight, with MaxUpstreamConns n, one more gets 503 unavailable
// with Retry-After after the gate's wait. The held requests' statuses come
// on the channel.
func allBusy(t *testing.T, s *setup, tok string, n int64, inFlight *atomic.Int64) <-chan int {
	t.Helper()
	slow := make(chan int, n)
	for range n {
		go func() {
			resp, _ := s.do(t, http.MethodPost, "/slow", bearerHeader(tok), strings.NewReader("{}"))
			slow <- resp.StatusCode
		}()
	}
	for inFlight.Load() < n {
		time.Sleep(5 * time.Millisecond)
	}
	resp, body := s.do(t, http.MethodPost, "/", bearerHeader(tok), strings.NewReader("{}"))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || jsonError(t, body) != "unavailable" {
		t.Errorf("all busy: got %d %q (Retry-After %q), want 503 unavailable with Retry-After", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	return slow
}
