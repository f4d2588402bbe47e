package gate

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
)

// refuseAll is a Verifier that refuses every token, so nothing a fuzzer
// sends may reach the upstream.
type refuseAll struct{}

func (refuseAll) Verify(context.Context, string) (*provider.Identity, error) {
	return nil, &provider.TokenError{Reason: provider.ReasonSignature, Description: "token signature is not valid"}
}

// countingTransport counts the requests the gate forwards.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return nil, errors.New("the upstream must not be reached")
}

// pathSeeds are the known request-target attacks.
var pathSeeds = []string{
	"/", "/mcp", "/mcp/", "/healthz", "/healthz/", "/.well-known/oauth-protected-resource",
	"/.well-known/../mcp", "/%2e%2e/mcp", "/%2E%2E/mcp", "/.%2e/mcp", "/%2e./mcp", "/./mcp", "/mcp/.", "/mcp/..",
	"//mcp", "/mcp//x", "///", "/mcp;x", "/healthz;.css", "/%3b", "/a%2fb", "/a%2Fb", "/a%5cb", "/a%5Cb", `/a\b`,
	"/%00", "/%0d%0a", "/%7f", "/%252e%252e/mcp", "/%25", "/a%2", "/a%zz", "/%", "*", "mcp", "",
	"http://example.com/.well-known/../mcp", "http://example.com/healthz", "http://example.com", "https://x//y",
	"/healthz?x=/../", "/?access_token=x", "/a%20b", "/%C0%AE%C0%AE/mcp", "/\u00e9", "/%e2%80%ae",
	"/" + strings.Repeat("a", maxPathBytes), "/" + strings.Repeat("a/", 100),
}

// routeOf is the routing decision the gate must make for a clean path:
// the status of a request with no token.
func routeOf(method, p string) int {
	switch {
	case p == "/healthz" || p == "/.well-known/oauth-protected-resource":
		if method == http.MethodGet || method == http.MethodHead {
			return http.StatusOK
		}
		return http.StatusMethodNotAllowed
	case p == "/.well-known" || strings.HasPrefix(p, "/.well-known/"):
		return http.StatusNotFound
	}
	return http.StatusUnauthorized
}

// cleanOf is p with dot segments and empty segments removed (RFC 3986
// §5.2.4), keeping a trailing slash.
func cleanOf(p string) string {
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// FuzzCheckPath sends request targets, as Go's server parses them, through
// the gate with no token. Invariants: nothing reaches the upstream; a target
// that is not refused with 400 or 414 is clean — it starts with "/", is at
// most maxPathBytes long, has no "." or ".." segment and no empty segment
// (//), raw or once decoded, no "\" or ";", and no percent-encoded ".", "/",
// "\", ";", "%" or control byte — so its decoded path is its own cleaned
// form, and the routing decision (public, 405, 404 or 401) is the one for
// that cleaned path.
func FuzzCheckPath(f *testing.F) {
	var tr countingTransport
	g, err := New(Config{
		Verifier:            refuseAll{},
		Upstream:            Static(&url.URL{Scheme: "http", Host: "127.0.0.1:9"}),
		ResourceMetadataURL: testMetadataURL,
		AllowSubs:           []string{"alice"},
		Public: []Route{
			{Method: http.MethodGet, Path: "/healthz", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})},
			{Method: http.MethodGet, Path: "/.well-known/oauth-protected-resource", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})},
		},
		Transport: &tr, // no FailedAuthLimiter: every input reaches the verifier
	})
	if err != nil {
		f.Fatal(err)
	}
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodDelete, http.MethodOptions, http.MethodPut, "get"}
	for i, p := range pathSeeds {
		f.Add(uint8(i), p)
	}
	f.Fuzz(func(t *testing.T, m uint8, target string) {
		method := methods[int(m)%len(methods)]
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(method + " " + target + " HTTP/1.1\r\nHost: gateway.example.com\r\n\r\n")))
		if err != nil {
			return // Go's server answers 400 itself
		}
		req.RemoteAddr = "192.0.2.1:1234"
		rec := httptest.NewRecorder()
		g.ServeHTTP(rec, req)
		if n := tr.n.Load(); n != 0 {
			t.Fatalf("%s %q reached the upstream", method, target)
		}
		status := rec.Code
		if status == http.StatusBadRequest || status == http.StatusRequestURITooLong {
			return
		}
		raw := req.URL.EscapedPath()
		p := req.URL.Path
		switch {
		case !strings.HasPrefix(raw, "/") || !strings.HasPrefix(p, "/"):
			t.Fatalf("%q accepted (%d): path does not start with /", target, status)
		case len(raw) > maxPathBytes:
			t.Fatalf("%q accepted (%d): path longer than %d", target, status, maxPathBytes)
		case strings.ContainsAny(raw, `\;`) || strings.ContainsAny(p, "\\;\x00\r\n\t\x7f"):
			t.Fatalf("%q accepted (%d): backslash, semicolon or control byte", target, status)
		}
		lower := strings.ToLower(raw)
		for _, enc := range []string{"%2e", "%2f", "%5c", "%3b", "%25", "%00"} {
			if strings.Contains(lower, enc) {
				t.Fatalf("%q accepted (%d): encoded %s", target, status, enc)
			}
		}
		for _, q := range []string{raw, p} {
			segs := strings.Split(q, "/")
			for i, seg := range segs[1:] {
				if seg == "." || seg == ".." || seg == "" && i != len(segs)-2 {
					t.Fatalf("%q accepted (%d): segment %q in %q", target, status, seg, q)
				}
			}
		}
		if c := cleanOf(p); c != p {
			t.Fatalf("%q accepted (%d): decoded path %q is not clean (%q)", target, status, p, c)
		}
		if u, err := url.PathUnescape(raw); err != nil || u != p {
			t.Fatalf("%q accepted (%d): raw path %q decodes to %q, the gate routed %q", target, status, raw, u, p)
		}
		if want := routeOf(method, cleanOf(p)); status != want {
			t.Fatalf("%s %q: status %d, want %d, the decision for the cleaned path %q", method, target, status, want, cleanOf(p))
		}
	})
}

// FuzzBearer checks the Authorization header parser. Invariants: it never
// panics; an accepted token is a non-empty token68 (RFC 9110 §11.2) of at
// most max bytes, the header is "Bearer" in some letter case, whitespace,
// then exactly that token and optional whitespace; and the parser accepts
// "Bearer " + token again with the same result.
func FuzzBearer(f *testing.F) {
	for _, s := range []string{
		"Bearer abc", "bearer abc", "BEARER \t abc \t", "Bearer  a.b.c", "Bearer abc==", "Bearer a=b", "Bearer ==",
		"Bearer", "Bearer ", "Bearerabc", "Basic YWxpY2U6cHc=", "Bearer a b", "Bearer a, Bearer b", "Bearer a,b",
		"Bearer \"abc\"", "Bearer abc\r\nX: y", "Bearer abc\x00", "Bearer ab\u00e9", "Bearer " + strings.Repeat("a", 17<<10),
		"Digest username=x", "Bearer\tabc", " Bearer abc", "Bearer\vabc", "Bearer%20abc", "Bearer a\tb",
	} {
		f.Add(s, uint16(DefaultMaxTokenBytes))
		f.Add(s, uint16(4))
	}
	f.Fuzz(func(t *testing.T, v string, max uint16) {
		tok, st := bearer(v, int(max))
		if st != bearerOK {
			if tok != "" {
				t.Fatalf("bearer(%q) refused (%d) but returned %q", v, st, tok)
			}
			return
		}
		if tok == "" || len(tok) > int(max) || !isToken68(tok) {
			t.Fatalf("bearer(%q) accepted %q: not a token68 of at most %d bytes", v, tok, max)
		}
		for i := 0; i < len(tok); i++ {
			c := tok[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~+/=", c) >= 0) {
				t.Fatalf("bearer(%q) accepted %q with byte %q", v, tok, c)
			}
		}
		if strings.Contains(strings.TrimRight(tok, "="), "=") {
			t.Fatalf("bearer(%q) accepted %q: padding inside the token", v, tok)
		}
		if !strings.EqualFold(v[:6], "bearer") {
			t.Fatalf("bearer(%q) accepted a header without the Bearer scheme", v)
		}
		if rest := strings.Trim(v[6:], " \t"); rest != tok || len(v[6:]) == len(strings.TrimLeft(v[6:], " \t")) {
			t.Fatalf("bearer(%q) = %q: not the scheme, whitespace, the token and whitespace", v, tok)
		}
		if again, st := bearer("Bearer "+tok, int(max)); st != bearerOK || again != tok {
			t.Fatalf("bearer(%q) = %q, but bearer(%q) = %q, %d", v, tok, "Bearer "+tok, again, st)
		}
	})
}

// FuzzCORS checks origin handling against an allow-list read as
// CORS_ALLOW_ORIGINS is (comma-separated). Invariants: it never panics;
// Access-Control-Allow-Origin is absent, or "*" when the list holds "*", or
// the request's single Origin when that is, byte for byte, an entry of the
// list (trimmed of spaces and a trailing slash); a request whose Origin is
// not allowed (or that has several) is answered 403 by the gate itself;
// credentials are never allowed; Vary: Origin is always set.
func FuzzCORS(f *testing.F) {
	for _, s := range [][3]string{
		{"https://claude.ai", "https://claude.ai", "POST"},
		{"https://claude.ai", "https://claude.ai.evil.com", "POST"},
		{"https://claude.ai", "https://evil.com/https://claude.ai", "POST"},
		{"https://claude.ai", "https://CLAUDE.AI", "POST"},
		{"https://claude.ai", "https://claude.ai/", "OPTIONS"},
		{"https://claude.ai/", "https://claude.ai", "OPTIONS"},
		{"https://claude.ai", "null", "POST"},
		{"null", "null", "POST"},
		{"https://claude.ai", "", "POST"},
		{"https://claude.ai", "https://claude.ai\x00", "POST"},
		{"https://claude.ai", "https://claude.ai, https://evil.com", "POST"},
		{"*", "https://evil.com", "OPTIONS"},
		{"*", "", "GET"},
		{"", "https://claude.ai", "GET"},
		{" https://a.example , https://b.example/ ", "https://b.example", "OPTIONS"},
	} {
		f.Add(s[0], s[1], s[2], true, false)
		f.Add(s[0], s[1], s[2], false, true)
	}
	f.Fuzz(func(t *testing.T, list, origin, method string, preflight, twoOrigins bool) {
		entries := strings.Split(list, ",")
		c := newCORS(entries)
		star := false
		allowed := map[string]bool{}
		for _, e := range entries {
			e = strings.TrimRight(strings.TrimSpace(e), "/")
			if e == "*" {
				star = true
			}
			allowed[e] = true
		}
		h := http.Header{"Origin": {origin}}
		if twoOrigins {
			h["Origin"] = append(h["Origin"], "https://claude.ai")
		}
		if preflight {
			h.Set("Access-Control-Request-Method", "POST")
		}
		r := &http.Request{Method: method, Header: h, URL: &url.URL{Path: "/"}}
		rec := httptest.NewRecorder()
		done := c.handle(rec, r)
		resp := rec.Result()
		_, _ = io.Copy(io.Discard, resp.Body)
		acao := resp.Header.Values("Access-Control-Allow-Origin")
		ok := !twoOrigins && origin != "" && (star || allowed[origin])
		switch {
		case len(acao) > 1:
			t.Fatalf("several Access-Control-Allow-Origin: %q", acao)
		case len(acao) == 1 && acao[0] == "*":
			if !star {
				t.Fatalf("list %q: got Access-Control-Allow-Origin *", list)
			}
		case len(acao) == 1:
			if acao[0] != origin || twoOrigins || !allowed[origin] {
				t.Fatalf("list %q, Origin %q: reflected %q", list, h["Origin"], acao[0])
			}
		}
		if !ok {
			if len(acao) != 0 || !done || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("list %q, Origin %q: not allowed, but done=%v status %d ACAO %q", list, h["Origin"], done, resp.StatusCode, acao)
			}
		} else if len(acao) != 1 {
			t.Fatalf("list %q, Origin %q: allowed, but no Access-Control-Allow-Origin", list, origin)
		}
		if v := resp.Header.Get("Access-Control-Allow-Credentials"); v != "" {
			t.Fatalf("Access-Control-Allow-Credentials: %q", v)
		}
		if v := resp.Header.Get("Vary"); v != "Origin" {
			t.Fatalf("Vary: %q, want Origin", v)
		}
	})
}

// TestToken68Bytes checks isToken68's table byte by byte against RFC 9110
// §11.2's token68 characters.
func TestToken68Bytes(t *testing.T) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		want := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || strings.IndexByte("-._~+/", b) >= 0
		if got := isToken68("a" + string(b) + "b"); got != want {
			t.Errorf("byte %#x in a token: got %v, want %v", b, got, want)
		}
	}
}
