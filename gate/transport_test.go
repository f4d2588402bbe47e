package gate

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCORSMcpHeaders: a browser client of the 2026-07-28 revision may send
// Mcp-Method, Mcp-Name and the Mcp-Param-* headers its tools mirror; the
// preflight allows them (token names only, a bounded number), the
// response exposes what the client reads, and the headers reach the
// upstream untouched.
func TestCORSMcpHeaders(t *testing.T) {
	env := newIssuer(t)
	s := newSetup(t, env, nil, nil)
	many := make([]string, 40)
	for i := range many {
		many[i] = fmt.Sprintf("mcp-param-p%02d", i)
	}
	for _, c := range []struct {
		name      string
		requested []string // Access-Control-Request-Headers values
		want      []string // in Access-Control-Allow-Headers
		wantNot   []string
	}{
		{"today's headers and the standard ones", []string{"authorization,content-type,mcp-method,mcp-name,mcp-protocol-version"},
			[]string{"Authorization", "Content-Type", "Mcp-Method", "Mcp-Name", "MCP-Protocol-Version", "Mcp-Session-Id", "Last-Event-ID"}, nil},
		{"the Mcp-Param-* headers asked for", []string{"mcp-method, mcp-param-region", "Mcp-Param-Tenant_ID"},
			[]string{"mcp-param-region", "Mcp-Param-Tenant_ID"}, nil},
		{"only Mcp-Param-* names are echoed", []string{"x-secret, mcp-paramx, mcp-param-"},
			nil, []string{"x-secret", "mcp-paramx", "mcp-param-,"}},
		{"a name that is not a token", []string{"mcp-param-a b, mcp-param-ok, mcp-param-c\"d"},
			[]string{"mcp-param-ok"}, []string{"mcp-param-a", "mcp-param-c"}},
		{"twice is once", []string{"mcp-param-x, MCP-PARAM-X"}, []string{"mcp-param-x"}, []string{"MCP-PARAM-X"}},
		{"bounded", []string{strings.Join(many, ",")}, many[:maxParamHeaders], many[maxParamHeaders:]},
		{"a long name", []string{"mcp-param-" + strings.Repeat("a", maxParamHeaderBytes)}, nil, []string{"mcp-param-aaa"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{"Origin": {"https://claude.ai"}, "Access-Control-Request-Method": {"POST"}, "Access-Control-Request-Headers": c.requested}
			resp, _ := s.do(t, http.MethodOptions, "/mcp", h, nil)
			if resp.StatusCode != http.StatusNoContent {
				t.Fatalf("preflight status %d", resp.StatusCode)
			}
			got := strings.Split(resp.Header.Get("Access-Control-Allow-Headers"), ", ")
			for _, w := range c.want {
				if !slices.Contains(got, w) {
					t.Errorf("Access-Control-Allow-Headers %q lacks %q", got, w)
				}
			}
			for _, w := range c.wantNot {
				for _, g := range got {
					if strings.HasPrefix(g, w) {
						t.Errorf("Access-Control-Allow-Headers %q has %q", got, g)
					}
				}
			}
		})
	}

	h := bearerHeader(env.token(t, "alice", nil))
	h.Set("Origin", "https://claude.ai")
	h.Set("Mcp-Method", "tools/call")
	h.Set("Mcp-Name", "=?base64?bcOpdMOpbw==?=")
	h.Set("Mcp-Param-Region", "us-west1")
	h.Set("MCP-Protocol-Version", "2026-07-28")
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"m\u00e9t\u00e9o","arguments":{"region":"us-west1"}}}`
	resp, _ := s.do(t, http.MethodPost, "/mcp", h, strings.NewReader(body))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	exposed := resp.Header.Get("Access-Control-Expose-Headers")
	for _, want := range []string{"WWW-Authenticate", "MCP-Protocol-Version", "X-Request-Id", "Retry-After"} {
		if !strings.Contains(exposed, want) {
			t.Errorf("Access-Control-Expose-Headers %q lacks %s", exposed, want)
		}
	}
	up := s.up.requests()[0]
	for k, want := range map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "=?base64?bcOpdMOpbw==?=", "Mcp-Param-Region": "us-west1", "Mcp-Protocol-Version": "2026-07-28"} {
		if got := up.Header.Values(k); len(got) != 1 || got[0] != want {
			t.Errorf("upstream %s: got %q, want %q", k, got, want)
		}
	}
	if up.Body != body {
		t.Errorf("upstream body %q, want %q", up.Body, body)
	}
}

// streamMetrics counts what the gate reports of streams and requests.
type streamMetrics struct {
	mu       sync.Mutex
	open     int
	outcomes []Outcome
}

func (m *streamMetrics) Request(o Outcome) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.outcomes = append(m.outcomes, o)
}

func (m *streamMetrics) Stream(delta int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.open += delta
}

func (m *streamMetrics) state() (int, []Outcome) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.open, slices.Clone(m.outcomes)
}

// TestPOSTStreamEndsOnShutdown: the event stream answering a POST (a
// 2026-07-28 subscriptions/listen) is counted as a stream and ended when
// shutdown begins, as a GET stream is, so it does not hold the drain; the
// upstream sees it end and the open-streams count goes back to zero.
func TestPOSTStreamEndsOnShutdown(t *testing.T) {
	env := newIssuer(t)
	shutdown, beginShutdown := context.WithCancel(context.Background())
	defer beginShutdown()
	upstreamEnded := make(chan struct{})
	m := &streamMetrics{}
	s := newSetup(t, env, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/subscriptions/acknowledged\"}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			close(upstreamEnded)
		case <-time.After(30 * time.Second):
		}
	}, func(c *Config) { c.Shutdown = shutdown; c.Metrics = m })

	req, _ := http.NewRequest(http.MethodPost, s.front.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{}}`))
	req.Header = bearerHeader(env.token(t, "alice", nil))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Method", "subscriptions/listen")
	resp, err := s.front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "event: message\n" {
		t.Fatalf("first event: got %q, %v", line, err)
	}
	if open, _ := m.state(); open != 1 {
		t.Errorf("open streams: got %d, want 1", open)
	}
	beginShutdown()
	select {
	case <-upstreamEnded:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream's stream was not ended when shutdown began")
	}
	_, _ = io.Copy(io.Discard, br)
	deadline := time.Now().Add(10 * time.Second)
	for {
		open, outcomes := m.state()
		if len(outcomes) == 1 {
			if open != 0 {
				t.Errorf("open streams after the end: got %d, want 0", open)
			}
			if o := outcomes[0]; !o.Stream || o.Class != ClassProxied {
				t.Errorf("outcome %+v, want a proxied stream", o)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the ended stream was never counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStreamGaugeWhenTheClientLeaves: a client that leaves an open stream
// takes it off the open-streams count (the proxy aborts the handler; the
// gate still counts the request).
func TestStreamGaugeWhenTheClientLeaves(t *testing.T) {
	env := newIssuer(t)
	m := &streamMetrics{}
	s := newSetup(t, env, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for {
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}, func(c *Config) { c.Metrics = m })
	req, _ := http.NewRequest(http.MethodPost, s.front.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen"}`))
	req.Header = bearerHeader(env.token(t, "alice", nil))
	resp, err := s.front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s.front.CloseClientConnections()
	deadline := time.Now().Add(10 * time.Second)
	for {
		open, outcomes := m.state()
		if len(outcomes) == 1 && open == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the client left: open streams %d, outcomes %d; want 0 and 1", open, len(outcomes))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
