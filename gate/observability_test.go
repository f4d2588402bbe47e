package gate

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/mcp"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// logBuffer collects a JSON logger's lines.
type logBuffer struct{ testkit.LogBuffer }

// lines parses every line; each must be JSON.
func (l *logBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	return testkit.JSONLines(t, l.String())
}

// count returns how many lines have message msg.
func (l *logBuffer) count(t *testing.T, msg string) int {
	t.Helper()
	n := 0
	for _, m := range l.lines(t) {
		if m["@message"] == msg {
			n++
		}
	}
	return n
}

// next waits for the line with message msg after the first n such lines
// (the gate logs a request just after answering it) and returns it.
func (l *logBuffer) next(t *testing.T, msg string, n int) map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		k := 0
		for _, m := range l.lines(t) {
			if m["@message"] == msg {
				if k == n {
					return m
				}
				k++
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q log line after %d", msg, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func jsonLogger(l *logBuffer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "gate", Output: l, JSONFormat: true, Level: hclog.Info})
}

var hexID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestRequestIDs(t *testing.T) {
	env := newIssuer(t)
	var logs logBuffer
	s := newSetup(t, env, nil, func(c *Config) { c.Logger = jsonLogger(&logs) })
	tok := env.token(t, "alice", nil)

	for _, c := range []struct {
		name string
		ids  []string // X-Request-Id values sent
		keep bool
	}{
		{"none", nil, false},
		{"a uuid", []string{"0b7c4a1e-3c6f-4f4e-9a53-7c1d2e0f9a11"}, true},
		{"every allowed byte", []string{"AZaz09._:-"}, true},
		{"128 bytes", []string{strings.Repeat("a", 128)}, true},
		{"129 bytes", []string{strings.Repeat("a", 129)}, false},
		{"a space", []string{"a b"}, false},
		{"a slash", []string{"a/b"}, false},
		{"a tab", []string{"a\tb"}, false},
		{"non-ASCII", []string{"caf\u00e9"}, false},
		{"two values", []string{"one", "two"}, false},
		{"empty", []string{""}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			check := func(what, got string) {
				t.Helper()
				if c.keep && got != c.ids[0] || !c.keep && !hexID.MatchString(got) {
					t.Errorf("%s: got %q, want %s", what, got, map[bool]string{true: "the client's", false: "a generated one"}[c.keep])
				}
			}
			h := bearerHeader(tok)
			h["X-Request-Id"] = c.ids
			n := len(s.up.requests())
			nProxied, nRejected := logs.count(t, "proxied"), logs.count(t, "rejected")
			resp, _ := s.do(t, http.MethodGet, "/mcp", h, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got := resp.Header.Values("X-Request-Id"); len(got) != 1 {
				t.Fatalf("response X-Request-Id %q, want one value", got)
			}
			id := resp.Header.Get("X-Request-Id")
			check("response", id)
			reqs := s.up.requests()
			if len(reqs) != n+1 || reqs[n].Header.Get("X-Request-Id") != id || len(reqs[n].Header.Values("X-Request-Id")) != 1 {
				t.Errorf("upstream X-Request-Id %q, want %q", reqs[n].Header.Values("X-Request-Id"), id)
			}
			if got := logs.next(t, "proxied", nProxied)["request_id"]; got != id {
				t.Errorf("audit line request_id %v, want %q", got, id)
			}

			// A rejection names its request too.
			h = http.Header{"X-Request-Id": c.ids}
			resp, _ = s.do(t, http.MethodGet, "/mcp", h, nil)
			rid := resp.Header.Get("X-Request-Id")
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("without a token: %d", resp.StatusCode)
			}
			check("rejection", rid)
			if got := logs.next(t, "rejected", nRejected)["request_id"]; got != rid {
				t.Errorf("rejection line request_id %v, want %q", got, rid)
			}
			if !c.keep && rid == id {
				t.Error("two requests got the same generated id")
			}
		})
	}
}

func TestUpstreamRequestIDHidden(t *testing.T) {
	env := newIssuer(t)
	s := newSetup(t, env, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "the-upstream-s-own")
		_, _ = io.WriteString(w, "ok")
	}, nil)
	h := bearerHeader(env.token(t, "alice", nil))
	h.Set("X-Request-Id", "mine")
	resp, _ := s.do(t, http.MethodGet, "/mcp", h, nil)
	if got := resp.Header.Values("X-Request-Id"); len(got) != 1 || got[0] != "mine" {
		t.Errorf("X-Request-Id %q, want only the gate's %q", got, "mine")
	}
}

// unsized hides a body's length, so the request is sent chunked.
type unsized struct{ io.Reader }

func TestMCPAudit(t *testing.T) {
	env := newIssuer(t)
	tok := env.token(t, "alice", nil)
	big := strings.Repeat("x", 100<<10)
	batch17 := "[" + strings.TrimSuffix(strings.Repeat(`{"jsonrpc":"2.0","method":"ping","id":1},`, 17), ",") + "]"

	for _, c := range []struct {
		name        string
		auditBytes  int
		contentType string
		body        string
		chunked     bool
		want        map[string]any // mcp_* keys of the audit line; absent keys must be absent
	}{
		{name: "single tools/call", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}`,
			want: map[string]any{"mcp_method": "tools/call", "mcp_tool": "echo"}},
		{name: "params before method", body: `{"params":{"arguments":{"name":"not this"},"name":"add"},"id":"x","method":"tools/call","jsonrpc":"2.0"}`,
			want: map[string]any{"mcp_method": "tools/call", "mcp_tool": "add"}},
		{name: "resources/read", body: `{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///etc/motd"}}`,
			want: map[string]any{"mcp_method": "resources/read", "mcp_uri": "file:///etc/motd"}},
		{name: "resources/subscribe", body: `{"jsonrpc":"2.0","id":2,"method":"resources/subscribe","params":{"uri":"file:///var/log"}}`,
			want: map[string]any{"mcp_method": "resources/subscribe", "mcp_uri": "file:///var/log"}},
		{name: "completion/complete of a resource template", body: `{"jsonrpc":"2.0","id":2,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///{path}"},"argument":{"name":"path","value":"a"}}}`,
			want: map[string]any{"mcp_method": "completion/complete", "mcp_uri": "file:///{path}"}},
		{name: "completion/complete of a prompt names no tool or uri", body: `{"jsonrpc":"2.0","id":2,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"greet"},"argument":{"name":"a","value":"b"}}}`,
			want: map[string]any{"mcp_method": "completion/complete"}},
		{name: "a completion/complete without a ref", body: `{"jsonrpc":"2.0","id":2,"method":"completion/complete","params":{"argument":{"name":"a","value":"b"}}}`,
			want: map[string]any{"mcp_method": "(invalid)"}},
		{name: "tools/list names no tool", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"name":"x"}}`,
			want: map[string]any{"mcp_method": "tools/list"}},
		{name: "escaped name", body: `{"method":"tools\/call","params":{"name":"ech\u006f"}}`,
			want: map[string]any{"mcp_method": "tools/call", "mcp_tool": "echo"}},
		{name: "charset parameter", contentType: "application/json; charset=utf-8", body: `{"method":"ping"}`,
			want: map[string]any{"mcp_method": "ping"}},
		{name: "batch", body: `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}, {"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"mem://a"}},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add"}}]`,
			want: map[string]any{"mcp_method": "tools/call,resources/read,notifications/initialized,tools/call", "mcp_tool": "echo,add", "mcp_uri": "mem://a", "mcp_batch": 4.0}},
		{name: "a batch past the bound on names", body: batch17,
			want: map[string]any{"mcp_method": strings.Repeat("ping,", 16) + "...", "mcp_batch": 17.0}},
		{name: "a case-variant name is not read as either", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","Name":"b"}}`,
			want: map[string]any{"mcp_method": "(ambiguous)"}},
		{name: "a response has no method", body: `{"jsonrpc":"2.0","id":1,"result":{}}`, want: map[string]any{}},
		{name: "malformed", body: `{"jsonrpc":"2.0","method":"tools/call",`, want: map[string]any{"mcp_method": "(malformed)"}},
		{name: "malformed, trailing bytes", body: `{"method":"ping"} x`, want: map[string]any{"mcp_method": "(malformed)"}},
		{name: "not JSON at all", body: "\x00\xffbinary", want: map[string]any{"mcp_method": "(malformed)"}},
		{name: "malformed and chunked", body: `[{"method":"ping"}`, chunked: true, want: map[string]any{"mcp_method": "(malformed)"}},
		{name: "larger than the bound", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"upload","arguments":{"data":"` + big + `"}}}`,
			want: map[string]any{"mcp_method": "tools/call", "mcp_tool": "upload"}},
		{name: "larger than the bound, chunked", chunked: true, body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"upload","arguments":{"data":"` + big + `"}}}`,
			want: map[string]any{"mcp_method": "tools/call", "mcp_tool": "upload"}},
		{name: "larger than the bound, method after it", body: `{"params":{"data":"` + big + `"},"method":"tools/call"}`,
			want: map[string]any{"mcp_method": "(too large)"}},
		{name: "larger than the bound, not JSON", body: "<" + big, want: map[string]any{"mcp_method": "(malformed)"}},
		{name: "a small bound", auditBytes: 24, body: `{"method":"tools/call","params":{"name":"echo"}}`,
			want: map[string]any{"mcp_method": "tools/call"}},
		{name: "audit off", auditBytes: -1, body: `{"method":"tools/call","params":{"name":"echo"}}`, want: map[string]any{}},
		{name: "not JSON content", contentType: "text/plain", body: `{"method":"tools/call","params":{"name":"echo"}}`, want: map[string]any{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs logBuffer
			s := newSetup(t, env, nil, func(cfg *Config) {
				cfg.Logger = jsonLogger(&logs)
				cfg.MCPAuditBytes = c.auditBytes
			})
			h := bearerHeader(tok)
			h.Set("Content-Type", "application/json")
			if c.contentType != "" {
				h.Set("Content-Type", c.contentType)
			}
			var body io.Reader = strings.NewReader(c.body)
			if c.chunked {
				body = unsized{body}
			}
			resp, _ := s.do(t, http.MethodPost, "/mcp", h, body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			reqs := s.up.requests()
			if len(reqs) != 1 || reqs[0].Body != c.body {
				t.Fatalf("the upstream did not receive the body byte for byte (%d requests)", len(reqs))
			}
			if c.chunked && reqs[0].Header.Get("Content-Length") != "" {
				t.Error("a chunked body arrived with a Content-Length")
			}
			line := logs.next(t, "proxied", 0)
			for _, k := range []string{"mcp_method", "mcp_tool", "mcp_uri", "mcp_batch"} {
				if got, want := line[k], c.want[k]; got != want {
					t.Errorf("%s: got %v, want %v", k, got, want)
				}
			}
		})
	}
}

// TestMCPAuditKeepsBodyLimit: a chunked body over MaxBodyBytes is still 413
// when the audit read met the limit first.
func TestMCPAuditKeepsBodyLimit(t *testing.T) {
	env := newIssuer(t)
	s := newSetup(t, env, nil, func(c *Config) { c.MaxBodyBytes = 1000 })
	h := bearerHeader(env.token(t, "alice", nil))
	h.Set("Content-Type", "application/json")
	resp, _ := s.do(t, http.MethodPost, "/mcp", h, unsized{strings.NewReader(`{"method":"` + strings.Repeat("a", 5000) + `"}`)})
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("got %d, want 413", resp.StatusCode)
	}
}

// TestAuditInfo: what the audit line says of a body read whole (complete)
// or only as far as the audit bound.
func TestAuditInfo(t *testing.T) {
	for _, c := range []struct {
		body     string
		complete bool
		want     mcpInfo
	}{
		{`{"method":"ping"}`, true, mcpInfo{method: "ping"}},
		{` {"method" : "ping" , "id" : -1.5e+3 , "x":[true,false,null,{},[]]} `, true, mcpInfo{method: "ping"}},
		{`{"method":"ping","method":"tools/list"}`, true, mcpInfo{method: mcpAmbiguous}},
		{`{"method":"ping","method":5}`, true, mcpInfo{method: mcpAmbiguous}},
		{`{"method":"tools/call","params":{"name":"a"},"params":{}}`, true, mcpInfo{method: mcpAmbiguous}},
		{`{"method":"tools/call","params":{"name":"a","Name":"b"}}`, true, mcpInfo{method: mcpAmbiguous}},
		{`{"Method":"ping"}`, true, mcpInfo{method: mcpAmbiguous}},
		{`{"method":"tools/call","params":"x"}`, true, mcpInfo{method: mcpInvalid}},
		{`{"method":5}`, true, mcpInfo{method: mcpInvalid}},
		{`[]`, true, mcpInfo{}},
		{`[1,"a",{"method":"ping"}]`, true, mcpInfo{method: "ping", batch: 3}},
		{`[{"method":""},{"result":1},{"method":""}]`, true, mcpInfo{method: ",", batch: 3}},
		{`"just a string"`, true, mcpInfo{}},
		{``, true, mcpInfo{method: mcpMalformed}},
		{`{"id":01}`, true, mcpInfo{method: mcpMalformed}},
		{`{"id":1.}`, true, mcpInfo{method: mcpMalformed}},
		{`{"id":tru}`, true, mcpInfo{method: mcpMalformed}},
		{`{"a":"\x"}`, true, mcpInfo{method: mcpMalformed}},
		{"{\"a\":\"\x01\"}", true, mcpInfo{method: mcpMalformed}},
		{"{\"a\":\"\xff\"}", true, mcpInfo{method: mcpMalformed}},
		{`{"a":1,}`, true, mcpInfo{method: mcpMalformed}},
		{`[1,]`, true, mcpInfo{method: mcpMalformed}},
		{`{"method":"ping"`, true, mcpInfo{method: mcpMalformed}},
		{`{"method":"ping"`, false, mcpInfo{method: "ping"}},
		{`{"method":"tools/call","params":{"name":"echo","arguments":{"s":"abc`, false, mcpInfo{method: "tools/call", tool: "echo"}},
		{`{"params":{"name":"echo"},"x":tr`, false, mcpInfo{method: mcpTooLarge}},
		{`{"method":"ping"}}`, false, mcpInfo{method: mcpMalformed}},
		{`[{"method":"ping"},{"method":"tools/call","params":{"name":"a`, false, mcpInfo{method: "ping,tools/call", batch: 2}},
		{`{"method":"` + strings.Repeat("m", 300) + `"}`, true, mcpInfo{method: strings.Repeat("m", maxAuditValue)}},
		{`{"method":"` + strings.Repeat("m", maxAuditValue-1) + `é"}`, true, mcpInfo{method: strings.Repeat("m", maxAuditValue-1)}},
		{strings.Repeat("[", 100000) + strings.Repeat("]", 100000), true, mcpInfo{method: mcpMalformed}},
	} {
		var body mcp.Body
		var err error
		if c.complete {
			body, err = mcp.Parse([]byte(c.body))
		} else {
			body, err = mcp.ParsePrefix([]byte(c.body))
		}
		if got := auditInfo(body, err); got != c.want {
			name := c.body
			if len(name) > 60 {
				name = name[:60] + "..."
			}
			t.Errorf("auditInfo(%q, complete %v) = %+v, want %+v", name, c.complete, got, c.want)
		}
	}
}
