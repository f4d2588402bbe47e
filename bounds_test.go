package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/devissuer"
)

// TestBounds checks the request bounds (header size, MAX_TOKEN_BYTES,
// MAX_BODY_BYTES) through the real server configuration of run().
func TestBounds(t *testing.T) {
	g := startGateway(t, map[string]string{"MAX_BODY_BYTES": "1024"}, nil)
	tok := g.token(t, "alice", nil)

	t.Run("header larger than the limit is 431", func(t *testing.T) {
		for name, h := range map[string]string{
			"a large header":       "X-Big: " + strings.Repeat("a", 40<<10),
			"a large token":        "Authorization: Bearer " + strings.Repeat("a", 40<<10),
			"many small headers":   strings.Repeat("X-A: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n", 1000) + "X-End: 1",
			"a very long path too": "X-Pad: " + strings.Repeat("a", 10),
		} {
			path := "/mcp"
			if name == "a very long path too" {
				path = "/" + strings.Repeat("a", 40<<10)
			}
			resp := g.rawRequest(t, "POST "+path+" HTTP/1.1\r\nHost: x\r\n"+h+"\r\n\r\n")
			if got, want := resp.StatusCode, http.StatusRequestHeaderFieldsTooLarge; got != want {
				t.Errorf("%s: got %d, want %d", name, got, want)
			}
		}
	})

	t.Run("token over MAX_TOKEN_BYTES but under the header limit is 401", func(t *testing.T) {
		if got := do(t, http.DefaultClient, "POST", g.base+"/mcp", strings.Repeat("a", 20<<10), nil); got != 401 {
			t.Errorf("got %d, want 401", got)
		}
	})

	t.Run("body over MAX_BODY_BYTES is 413", func(t *testing.T) {
		if got := do(t, http.DefaultClient, "POST", g.base+"/mcp", tok, strings.NewReader(strings.Repeat("x", 2048))); got != 413 {
			t.Errorf("declared length: got %d, want 413", got)
		}
		if got := do(t, http.DefaultClient, "POST", g.base+"/mcp", tok, io.MultiReader(strings.NewReader(strings.Repeat("x", 4096)))); got != 413 {
			t.Errorf("chunked: got %d, want 413", got)
		}
		if got := do(t, http.DefaultClient, "POST", g.base+"/mcp", tok, strings.NewReader(strings.Repeat("x", 1000))); got != 200 {
			t.Errorf("under the limit: got %d, want 200", got)
		}
	})

	if n := g.upHits.Load(); n > 2 {
		t.Errorf("upstream received %d requests, want at most the small one (and a cut chunked one)", n)
	}
}

// TestFailedAuthFlood: a flood of bad tokens from one client is answered
// 429 once the per-IP limit (60 a minute) is spent, a valid token too, and
// the rejection logs stay sampled.
func TestFailedAuthFlood(t *testing.T) {
	g := startGateway(t, nil, nil)
	if err := g.is.AddKey("unpublished", false); err != nil {
		t.Fatal(err)
	}
	bad, err := g.is.Mint(devissuer.Token{KeyID: "unpublished", Header: map[string]any{"kid": devissuer.KeyRS256},
		Claims: map[string]any{"iss": g.is.URL, "sub": "alice", "aud": gwAudience, "exp": time.Now().Add(time.Hour).Unix()}})
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer c.CloseIdleConnections()

	counts := map[int]int{}
	for range 150 {
		counts[do(t, c, "POST", g.base+"/mcp", bad, nil)]++
	}
	if counts[401] != 60 || counts[429] != 90 {
		t.Errorf("statuses: got %v, want 60×401 then 429", counts)
	}
	if got := do(t, c, "POST", g.base+"/mcp", g.token(t, "alice", nil), nil); got != 429 {
		t.Errorf("valid token after the flood: got %d, want 429", got)
	}

	// 1000 more rejections from 8 connections: the log grows by the
	// sampler's burst and rate (20, 20 a second), not by 1000 lines.
	before := strings.Count(g.logs.String(), "\n")
	start := time.Now()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 125 {
				tok := bad
				if (w+i)%2 == 0 {
					tok = ""
				}
				do(t, c, "POST", g.base+"/mcp", tok, nil)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	lines := strings.Count(g.logs.String(), "\n") - before
	bound := 20 + int(20*elapsed.Seconds()) + 2
	t.Logf("1000 rejections in %v: %d log lines (bound %d)", elapsed.Round(time.Millisecond), lines, bound)
	if lines > bound {
		t.Errorf("1000 rejections wrote %d log lines, want at most %d", lines, bound)
	}
	if n := g.upHits.Load(); n != 0 {
		t.Errorf("upstream received %d requests", n)
	}
}

// TestSlowHeaders: a client that sends its headers a line every 500 ms,
// never finishing, is cut by the read-header timeout (10 s). It waits for
// that timeout, so it runs in parallel with the other tests.
func TestSlowHeaders(t *testing.T) {
	t.Parallel()
	g := startGateway(t, map[string]string{"READ_HEADER_TIMEOUT": "1s"}, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(g.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	closed := make(chan string, 1)
	go func() {
		b, err := io.ReadAll(conn)
		closed <- fmt.Sprintf("%q, %v", b, err)
	}()
	if _, err := io.WriteString(conn, "POST /mcp HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	start := time.Now()
	for i := 0; ; i++ {
		select {
		case how := <-closed:
			t.Logf("connection ended by the gateway after %v: %s", time.Since(start).Round(100*time.Millisecond), how)
			if g.upHits.Load() != 0 {
				t.Error("the slow request reached the upstream")
			}
			return
		case <-tick.C:
			_, _ = fmt.Fprintf(conn, "X-Slow-%d: a\r\n", i) // may fail once the gateway has closed
		case <-deadline:
			t.Fatal("a client sending headers slowly was still connected 10 s after a 1 s READ_HEADER_TIMEOUT")
		}
	}
}

// TestSlowBodies: a request that declares a body and sends it a byte every
// 200 ms is cut once READ_HEADER_TIMEOUT (1 s here) has passed, on a
// public route that reads its body (registration, the broker's token
// endpoint), on one that does not (the server discards the body before it
// answers), and when refused without or with a bad token; nothing reaches
// the upstream. A request admitted by its token may take longer: its body
// is bounded by MAX_BODY_BYTES only. Without the bound every one of the
// refused requests held its connection for as long as the client liked.
func TestSlowBodies(t *testing.T) {
	t.Parallel()
	g := startGateway(t, map[string]string{"READ_HEADER_TIMEOUT": "1s", "STATIC_CLIENT_ID": "static", "STATIC_CLIENT_SECRET": "static-secret"}, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"got":%d}`, len(b))
	})
	b := startBroker(t, map[string]string{"READ_HEADER_TIMEOUT": "1s"})
	host := func(base string) string { return strings.TrimPrefix(base, "http://") }
	form := "Content-Type: application/x-www-form-urlencoded\r\n"
	json := "Content-Type: application/json\r\n"

	refused := []struct{ name, addr, head string }{
		{"POST /mcp without a token", host(g.base), "POST /mcp HTTP/1.1\r\nHost: x\r\n" + json},
		{"POST /mcp with a bad token", host(g.base), "POST /mcp HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer not.a.token\r\n" + json},
		{"GET /readyz with a body", host(g.base), "GET /readyz HTTP/1.1\r\nHost: x\r\n"},
		{"POST /oauth/register (facade)", host(g.base), "POST /oauth/register HTTP/1.1\r\nHost: x\r\n" + json},
		{"POST /oauth/token (broker)", host(b.base), "POST /oauth/token HTTP/1.1\r\nHost: x\r\n" + form},
		{"POST /oauth/register (broker)", host(b.base), "POST /oauth/register HTTP/1.1\r\nHost: x\r\n" + json},
	}
	var wg sync.WaitGroup
	for _, c := range refused {
		wg.Go(func() {
			ended, after := trickleBody(t, c.addr, c.head, 1000, 10*time.Second)
			t.Logf("%s: the gateway ended it after %v: %s", c.name, after.Round(100*time.Millisecond), ended)
			if after > 4*time.Second {
				t.Errorf("%s: a body sent a byte every 200 ms held the connection %v past a 1 s READ_HEADER_TIMEOUT", c.name, after)
			}
			if strings.Contains(ended, "at most") {
				t.Errorf("%s: a 1000-byte body that came too slowly was answered as too large: %s", c.name, ended)
			}
		})
	}
	wg.Go(func() {
		tok := g.token(t, "alice", nil)
		head := "POST /mcp HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\n" + json
		ended, after := trickleBody(t, host(g.base), head, 12, 10*time.Second)
		if !strings.Contains(ended, `{"got":12}`) {
			t.Errorf("an admitted request whose body took %v (past the 1 s bound of refused ones) was not proxied whole: %s", after, ended)
		}
	})
	wg.Wait()
	if n := g.upHits.Load(); n != 1 {
		t.Errorf("the upstream received %d requests, want 1 (the admitted one)", n)
	}
}

// trickleBody sends head with Content-Length n, then the body a byte every
// 200 ms, until the gateway answers or closes the connection (or limit
// passes); it returns the answer (or why there is none) and when it came.
func trickleBody(t *testing.T, addr, head string, n int, limit time.Duration) (ended string, after time.Duration) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Error(err)
		return "", 0
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(limit))
	got := make(chan string, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			got <- err.Error() // closed without an answer
			return
		}
		b, _ := io.ReadAll(resp.Body)
		got <- fmt.Sprintf("%s %s (closing: %v)", resp.Status, bytes.TrimSpace(b), resp.Close)
	}()
	start := time.Now()
	if _, err := fmt.Fprintf(conn, "%sContent-Length: %d\r\n\r\n", head, n); err != nil {
		t.Error(err)
		return "", 0
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for sent := 0; ; {
		select {
		case s := <-got:
			return s, time.Since(start)
		case <-tick.C:
			if sent < n {
				if _, err := conn.Write([]byte{'x'}); err == nil {
					sent++
				}
			}
		}
	}
}
