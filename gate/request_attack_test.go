package gate

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRequestPathAttacks adds to TestRawBypassAttempts the request targets
// Go's own server refuses before the gate sees them (raw NUL and control
// bytes), more spellings of the same tricks, the path length boundary, and
// the exact-method rule of public routes. No row may reach the upstream,
// with or without a valid token.
func TestRequestPathAttacks(t *testing.T) {
	env := newIssuer(t)
	tok := env.token(t, "alice", nil)
	tests := []rawAttack{
		{name: "raw nul", line: "GET /mcp\x00/x HTTP/1.1", auth: true, wantStatus: 400},
		{name: "raw tab", line: "GET /mcp\t/x HTTP/1.1", auth: true, wantStatus: 400},
		{name: "raw escape byte", line: "GET /mcp\x1b HTTP/1.1", auth: true, wantStatus: 400},
		{name: "raw del", line: "GET /mcp\x7f HTTP/1.1", auth: true, wantStatus: 400},
		{name: "raw bytes above ascii", line: "GET /mcp\xc0\xae\xc0\xae/x HTTP/1.1", auth: true, wantStatus: 400},
		{name: "encoded nul with a token", line: "GET /mcp%00 HTTP/1.1", auth: true, wantStatus: 400},
		{name: "encoded tab", line: "GET /mcp%09 HTTP/1.1", auth: true, wantStatus: 400},
		{name: "encoded dot segment, single", line: "GET /%2e/mcp HTTP/1.1", auth: true, wantStatus: 400},
		{name: "encoded dot segment, upper and lower", line: "GET /mcp/%2E%2e/admin HTTP/1.1", auth: true, wantStatus: 400},
		{name: "half-encoded dot segment", line: "GET /mcp/%2e./admin HTTP/1.1", auth: true, wantStatus: 400},
		{name: "trailing dot segment", line: "GET /mcp/.. HTTP/1.1", auth: true, wantStatus: 400},
		{name: "trailing single dot", line: "GET /healthz/. HTTP/1.1", wantStatus: 400},
		{name: "dot segment before a public path", line: "GET /./healthz HTTP/1.1", wantStatus: 400},
		{name: "overlong utf-8 dots are not dots", line: "GET /%c0%ae%c0%ae/mcp HTTP/1.1", wantStatus: 401},
		{name: "encoded slash lower", line: "GET /mcp%2fadmin HTTP/1.1", auth: true, wantStatus: 400},
		{name: "encoded backslash lower", line: "GET /mcp%5c..%5cadmin HTTP/1.1", auth: true, wantStatus: 400},
		{name: "encoded slash after a public path", line: "GET /healthz%2F HTTP/1.1", wantStatus: 400},
		{name: "encoded slash into well-known", line: "GET /.well-known/oauth-protected-resource%2f..%2f..%2fmcp HTTP/1.1", wantStatus: 400},
		{name: "backslash", line: `GET /mcp\admin HTTP/1.1`, auth: true, wantStatus: 400},
		{name: "trailing double slash", line: "GET /mcp// HTTP/1.1", auth: true, wantStatus: 400},
		{name: "triple slash", line: "GET /// HTTP/1.1", wantStatus: 400},
		{name: "double slash in absolute-form", line: "GET http://gateway.example.com//healthz HTTP/1.1", wantStatus: 400},
		{name: "encoded semicolon", line: "GET /mcp%3bx HTTP/1.1", auth: true, wantStatus: 400},
		{name: "semicolon after a public path", line: "GET /healthz;x=../mcp HTTP/1.1", wantStatus: 400},
		{name: "encoded percent", line: "GET /mcp%25 HTTP/1.1", auth: true, wantStatus: 400},
		{name: "path at the limit needs a token", line: "GET /" + strings.Repeat("a", maxPathBytes-1) + " HTTP/1.1", wantStatus: 401},
		{name: "path one byte over the limit", line: "GET /" + strings.Repeat("a", maxPathBytes) + " HTTP/1.1", auth: true, wantStatus: 414},
		{name: "overlong path of dot segments", line: "GET /" + strings.Repeat("../", 2000) + "mcp HTTP/1.1", auth: true, wantStatus: 414},
		{name: "query does not count as path", line: "GET /healthz?" + strings.Repeat("a", maxPathBytes) + " HTTP/1.1", wantStatus: 200},
		{name: "public route with its method", line: "GET /healthz HTTP/1.1", wantStatus: 200},
		{name: "public route with head", line: "HEAD /healthz HTTP/1.1", wantStatus: 200},
		{name: "public route with options and no origin", line: "OPTIONS /healthz HTTP/1.1", wantStatus: 405},
		{name: "public route with put", line: "PUT /healthz HTTP/1.1", wantStatus: 405},
		{name: "public route with a lower-case method", line: "get /healthz HTTP/1.1", wantStatus: 405},
		{name: "public route with an unknown method", line: "PROPFIND /.well-known/oauth-protected-resource HTTP/1.1", wantStatus: 405},
		{name: "public route in another case needs a token", line: "GET /HEALTHZ HTTP/1.1", wantStatus: 401},
		{name: "public route with an encoded letter is routed decoded", line: "GET /%68ealthz HTTP/1.1", wantStatus: 200},
		{name: "public route in absolute-form of another host", line: "GET http://evil.example/healthz HTTP/1.1", wantStatus: 200},
		{name: "connect", line: "CONNECT 127.0.0.1:22 HTTP/1.1", auth: true, wantStatus: 400},
		{name: "trace", line: "TRACE / HTTP/1.1", wantStatus: 401},
	}
	s := newSetup(t, env, nil, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { s.tryRaw(t, tok, tt) })
	}
}

// TestSmugglingShapes adds to TestSmuggling: more framing ambiguities, all
// refused by Go's server, and a request hidden behind a chunked body whose
// outer request carries a valid token: the outer request is proxied with an
// empty body, and the connection is closed after it, so the hidden one is
// never read (RFC 9112 §6.1).
func TestSmugglingShapes(t *testing.T) {
	env := newIssuer(t)
	tok := env.token(t, "alice", nil)
	s := newSetup(t, env, nil, nil)
	auth := "Authorization: Bearer " + tok + "\r\n"
	tests := []struct {
		name       string
		req        string
		wantStatus int
	}{
		{name: "content-length list of different values", req: "POST / HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 4, 40\r\n\r\nabcd", wantStatus: 400},
		{name: "content-length with a sign", req: "POST / HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: +4\r\n\r\nabcd", wantStatus: 400},
		{name: "negative content-length", req: "POST / HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: -1\r\n\r\n", wantStatus: 400},
		{name: "content-length in hex", req: "POST / HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 0x4\r\n\r\nabcd", wantStatus: 400},
		{name: "space before the colon", req: "POST / HTTP/1.1\r\nHost: x\r\n" + auth + "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", wantStatus: 400},
		{name: "folded header line", req: "POST / HTTP/1.1\r\nHost: x\r\n" + auth + "Transfer-Encoding: identity\r\n chunked\r\n\r\n0\r\n\r\n", wantStatus: 501},
		{name: "chunked listed twice", req: "POST / HTTP/1.1\r\nHost: x\r\n" + auth + "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", wantStatus: 501},
		{name: "gzip then chunked", req: "POST / HTTP/1.1\r\nHost: x\r\n" + auth + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", wantStatus: 501},
		{name: "two hosts", req: "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n" + auth + "\r\n", wantStatus: 400},
		{name: "no host in HTTP/1.1", req: "GET / HTTP/1.1\r\n" + auth + "\r\n", wantStatus: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, _ := s.raw(t, tt.req)
			if got, want := resp.StatusCode, tt.wantStatus; got != want {
				t.Errorf("status: got %d, want %d", got, want)
			}
			if got := s.up.requests(); len(got) != 0 {
				t.Fatalf("upstream received %d requests, want none: %+v", len(got), got[0])
			}
		})
	}

	t.Run("request hidden behind a chunked body with a valid token", func(t *testing.T) {
		conn, err := net.Dial("tcp", s.front.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		hidden := "GET /admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
		_, err = io.WriteString(conn, "POST /mcp HTTP/1.1\r\nHost: x\r\n"+auth+
			"Content-Length: "+itoa(5+len(hidden))+"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+hidden)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		var statuses []int
		for {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				break
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses = append(statuses, resp.StatusCode)
		}
		// Go's server may also refuse the ambiguous request outright; what
		// matters is that the hidden request is never proxied, nor read.
		got := s.up.requests()
		for _, r := range got {
			if r.Path != "/mcp" || r.Body != "" {
				t.Errorf("upstream received %s %s with body %q", r.Method, r.Path, r.Body)
			}
		}
		if len(got) > 1 {
			t.Errorf("upstream received %d requests, want at most the outer one", len(got))
		}
		if len(statuses) != 1 {
			t.Errorf("answers on the connection: got %v, want one (the hidden request is never read)", statuses)
		}
		t.Logf("statuses %v, upstream requests %d", statuses, len(got))
	})
}

func itoa(n int) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
		if n == 0 {
			return string(b)
		}
	}
}
