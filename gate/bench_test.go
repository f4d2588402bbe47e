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
