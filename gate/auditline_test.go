package gate

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// hclogLine is the line the gateway's JSON logger (main's, named "gate")
// writes for l at t: what appendJSON must reproduce byte for byte.
func hclogLine(l *proxiedLine, t time.Time, name string) string {
	var out bytes.Buffer
	root := hclog.New(&hclog.LoggerOptions{Name: name, Output: &out, JSONFormat: true, Level: hclog.Info,
		TimeFn: func() time.Time { return t }})
	root.Named("gate").Info("proxied", l.args()...)
	return out.String()
}

func TestProxiedLineAsHclog(t *testing.T) {
	berlin := time.FixedZone("CET", 3600)
	at := time.Date(2026, 7, 28, 9, 5, 3, 123456789, time.UTC)
	plain := func() proxiedLine {
		return proxiedLine{sub: "alice", email: "alice@example.com", method: http.MethodPost, path: "/mcp",
			status: 200, bytes: 215, duration: 1423525 * time.Nanosecond, requestID: "0b7c4a1e3c6f4f4e9a537c1d2e0f9a11",
			client: netip.MustParseAddr("192.0.2.1"), info: &mcpInfo{}}
	}
	for _, c := range []struct {
		name   string
		mod    func(*proxiedLine)
		t      time.Time
		logger string // the root logger's name
	}{
		{"a GET", nil, at, "mcp-oauth-proxy"},
		{"a tools/call", func(l *proxiedLine) { l.info = &mcpInfo{method: "tools/call", tool: "search_documents"} }, at, "mcp-oauth-proxy"},
		{"a batch with every name and a rule", func(l *proxiedLine) {
			l.info = &mcpInfo{method: "tools/call,resources/read,...", tool: "a,b", uri: "file:///x?a=1&b=<2>", batch: 40}
			l.rule = "3"
		}, at, "mcp-oauth-proxy"},
		{"empty strings", func(l *proxiedLine) { l.sub, l.email, l.method, l.path, l.requestID = "", "", "", "", "" }, at, "mcp-oauth-proxy"},
		{"HTML characters", func(l *proxiedLine) { l.email = `<script>alert("x&y")</script>@example.com` }, at, "mcp-oauth-proxy"},
		{"control characters", func(l *proxiedLine) {
			l.sub = "a\x00b\x01\x07\b\f\n\r\t\x1b\x1f\x7f\"\\/"
		}, at, "mcp-oauth-proxy"},
		{"invalid UTF-8", func(l *proxiedLine) {
			l.sub, l.path = "\xff\xfe\xc0\xaf", "/caf\xc3"
			l.info = &mcpInfo{method: "\xed\xa0\x80", tool: "\xf4\x90\x80\x80"}
		}, at, "mcp-oauth-proxy"},
		{"line and paragraph separators", func(l *proxiedLine) { l.email = "a\u2028b\u2029c\u2027\u202a" }, at, "mcp-oauth-proxy"},
		{"non-ASCII", func(l *proxiedLine) { l.sub, l.path = "名前 😀 é", "/\u00e9\U0001F600" }, at, "mcp-oauth-proxy"},
		{"an IPv6 client", func(l *proxiedLine) { l.client = netip.MustParseAddr("2001:db8::1") }, at, "mcp-oauth-proxy"},
		{"an IPv4-mapped client", func(l *proxiedLine) { l.client = netip.MustParseAddr("::ffff:192.0.2.1") }, at, "mcp-oauth-proxy"},
		{"a client with a zone", func(l *proxiedLine) { l.client = netip.MustParseAddr("fe80::1%eth<0>") }, at, "mcp-oauth-proxy"},
		{"no client address", func(l *proxiedLine) { l.client = netip.Addr{} }, at, "mcp-oauth-proxy"},
		{"large and negative numbers", func(l *proxiedLine) {
			l.status, l.bytes, l.duration, l.info.batch = 599, 1<<62, -time.Second, 1<<30
		}, at, "mcp-oauth-proxy"},
		{"another time zone", nil, at.In(berlin), "mcp-oauth-proxy"},
		{"a whole second", nil, time.Date(2026, 1, 1, 0, 0, 0, 0, berlin), "mcp-oauth-proxy"},
		{"an unnamed root logger", nil, at, ""},
		{"a root logger name to escape", nil, at, "proxy<&>"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := plain()
			if c.mod != nil {
				c.mod(&l)
			}
			module := "gate"
			if c.logger != "" {
				module = c.logger + ".gate"
			}
			got, want := string(l.appendJSON(nil, c.t, module)), hclogLine(&l, c.t, c.logger)
			if got != want {
				t.Errorf("line:\ngot  %s\nwant %s", got, want)
			}
		})
	}
}

// FuzzProxiedLine holds appendJSON to the line hclog writes with
// encoding/json, and appendJSONString to encoding/json itself, for any
// strings and numbers.
func FuzzProxiedLine(f *testing.F) {
	f.Add("alice", "alice@example.com", "/mcp", "tools/call", "search", "file:///a", "3", 200, int64(215), int64(1423525), 0)
	f.Add("<a&b>", "\u2028\u2029", "/\xff\xfe", "\x00\x1f\x7f", `"\`, "\xed\xa0\x80", "", 0, int64(-1), int64(-5), 17)
	f.Add("名前", "😀", "/caf\xc3", "\xc3", "\t\n\r\b\f", "\xf4\x90\x80\x80", "none", 599, int64(1<<62), int64(1<<62), 1<<30)
	at := time.Date(2026, 7, 28, 9, 5, 3, 123456789, time.FixedZone("X", -7*3600-1800))
	f.Fuzz(func(t *testing.T, sub, email, path, method, tool, uri, rule string, status int, n, dur int64, batch int) {
		l := proxiedLine{sub: sub, email: email, method: method, path: path, status: status, bytes: n,
			duration: time.Duration(dur), requestID: tool + uri, client: netip.MustParseAddr("2001:db8::1"), rule: rule,
			info: &mcpInfo{method: method, tool: tool, uri: uri, batch: batch}}
		if got, want := string(l.appendJSON(nil, at, "mcp-oauth-proxy.gate")), hclogLine(&l, at, "mcp-oauth-proxy"); got != want {
			t.Fatalf("line:\ngot  %s\nwant %s", got, want)
		}
		for _, s := range []string{sub, email, path, method, tool, uri, rule} {
			want, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
				t.Fatalf("appendJSONString(%q): got %s, want %s", s, got, want)
			}
		}
	})
}

// lineWriter collects what AuditOutput receives, one Write per element.
type lineWriter struct {
	mu     sync.Mutex
	writes []string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func (w *lineWriter) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.writes...)
}

// TestAuditOutput checks that with AuditOutput the "proxied" line goes
// there, one whole line per Write, saying what Logger would have said,
// while every other line still goes through Logger; and that nothing is
// written when Logger does not log at info.
func TestAuditOutput(t *testing.T) {
	env := newIssuer(t)
	tok := env.token(t, "alice", nil)
	for _, c := range []struct {
		name  string
		level hclog.Level
		lines int // proxied lines written to AuditOutput
	}{
		{"at info", hclog.Info, 1},
		{"at trace", hclog.Trace, 1},
		{"at warn", hclog.Warn, 0},
		{"at error", hclog.Error, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs logBuffer
			var out lineWriter
			logger := hclog.New(&hclog.LoggerOptions{Name: "mcp-oauth-proxy", Output: &logs, JSONFormat: true, Level: c.level}).Named("gate")
			s := newSetup(t, env, nil, func(cfg *Config) { cfg.Logger, cfg.AuditOutput = logger, &out })
			h := bearerHeader(tok)
			h.Set("Content-Type", "application/json")
			resp, _ := s.do(t, http.MethodPost, "/mcp?x=1", h, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}`))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			resp, _ = s.do(t, http.MethodGet, "/mcp", nil, nil) // rejected: no token
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d", resp.StatusCode)
			}
			// The proxied line comes just after the answer.
			deadline := time.Now().Add(5 * time.Second)
			for len(out.all()) < c.lines && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			writes := out.all()
			if len(writes) != c.lines {
				t.Fatalf("writes to AuditOutput: got %d %q, want %d", len(writes), writes, c.lines)
			}
			if got := logs.count(t, "proxied"); got != 0 {
				t.Errorf("proxied lines through Logger: got %d, want 0", got)
			}
			wantRejected := 1
			if c.lines == 0 {
				wantRejected = 0
			}
			if got := logs.count(t, "rejected"); got != wantRejected {
				t.Errorf("rejected lines through Logger: got %d, want %d", got, wantRejected)
			}
			if c.lines == 0 {
				return
			}
			line := writes[0]
			if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
				t.Fatalf("write is not one line: %q", line)
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("line is not JSON: %v: %s", err, line)
			}
			for k, want := range map[string]any{
				"@level": "info", "@message": "proxied", "@module": "mcp-oauth-proxy.gate", "sub": "alice", "email": "",
				"method": "POST", "path": "/mcp", "status": 200.0, "client_ip": "127.0.0.1",
				"mcp_method": "tools/call", "mcp_tool": "echo",
			} {
				if m[k] != want {
					t.Errorf("%s: got %v, want %v", k, m[k], want)
				}
			}
			if id, _ := m["request_id"].(string); !hexID.MatchString(id) {
				t.Errorf("request_id: got %v, want a generated ID", m["request_id"])
			}
			if d, ok := m["duration"].(float64); !ok || d != 0 { // the setup's clock stands still
				t.Errorf("duration: got %v, want 0 (nanoseconds, on Config.Now)", m["duration"])
			}
			ts, err := time.Parse(hclog.TimeFormatJSON, m["@timestamp"].(string))
			if err != nil || time.Since(ts) > time.Minute || time.Since(ts) < 0 {
				t.Errorf("@timestamp: got %v (%v), want about now in %s", m["@timestamp"], err, hclog.TimeFormatJSON)
			}
		})
	}
}
