package gate

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// canned is a RoundTripper that answers without a network, so the benchmark
// measures the gate itself.
type canned struct{}

func (canned) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode:    200,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(strings.NewReader(`{}`)),
		ContentLength: 2,
		Request:       r,
	}, nil
}

// BenchmarkAdmit is the hot path: a valid token (verification cache hit),
// failed-authentication limit's check, allow-list, rate limiter and the proxy with a canned upstream response.
func BenchmarkAdmit(b *testing.B) {
	env := newIssuer(b)
	up := newUpstream(b, nil)
	g, err := New(Config{
		Verifier:            env.p,
		Upstream:            Static(up.url(b)),
		UpstreamPath:        "/mcp",
		ResourceMetadataURL: testMetadataURL,
		AllowEmails:         []string{"alice@example.com"},
		SubjectLimiter:      testLimiter(b, 1<<30, nil),
		FailedAuthLimiter:   testLimiter(b, DefaultFailedAuthPerIPPerMinute, nil),
		Transport:           canned{},
	})
	if err != nil {
		b.Fatal(err)
	}
	tok := env.token(b, "alice", map[string]any{"email": "alice@example.com"})
	req := httptest.NewRequest(http.MethodPost, "/", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	req.RemoteAddr = "192.0.2.1:1234"
	w := httptest.NewRecorder()
	g.ServeHTTP(w, req)
	if w.Code != 200 {
		b.Fatalf("status: got %d, want 200 (%s)", w.Code, w.Body)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w := httptest.NewRecorder()
		g.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatalf("status: got %d", w.Code)
		}
	}
}

// BenchmarkFraming is the admit path for a body framed by Content-Length
// and for a chunked one, which the gate answers with Connection: close
// (RFC 9112 §6.1: it cannot tell whether a Content-Length came too). It
// measures what the framing check costs each.
func BenchmarkFraming(b *testing.B) {
	env := newIssuer(b)
	up := newUpstream(b, nil)
	g, err := New(Config{
		Verifier:            env.p,
		Upstream:            Static(up.url(b)),
		ResourceMetadataURL: testMetadataURL,
		AllowSubs:           []string{"alice"},
		MCPAuditBytes:       -1,
		Transport:           canned{},
	})
	if err != nil {
		b.Fatal(err)
	}
	tok := env.token(b, "alice", nil)
	const body = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	for _, chunked := range []bool{false, true} {
		name := "content-length"
		if chunked {
			name = "chunked"
		}
		b.Run(name, func(b *testing.B) {
			rd := strings.NewReader(body)
			req := httptest.NewRequest(http.MethodPost, "/mcp", rd)
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			req.RemoteAddr = "192.0.2.1:1234"
			if chunked {
				req.ContentLength, req.TransferEncoding = -1, []string{"chunked"}
			}
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(body)
				w := httptest.NewRecorder()
				g.ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatalf("status: got %d", w.Code)
				}
			}
		})
	}
}

// BenchmarkFramingCheck is the framing check alone, per request: the admit
// path's own noise (tens of microseconds on a shared machine) hides it.
func BenchmarkFramingCheck(b *testing.B) {
	for _, chunked := range []bool{false, true} {
		name := "content-length"
		if chunked {
			name = "chunked"
		}
		b.Run(name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader("{}"))
			if chunked {
				req.ContentLength, req.TransferEncoding = -1, []string{"chunked"}
			}
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				delete(w.Header(), "Connection")
				closeIfAmbiguous(w, req)
			}
			if got, want := w.Header().Get("Connection") == "close", chunked; got != want {
				b.Fatalf("Connection: close set: got %v, want %v", got, want)
			}
		})
	}
}
