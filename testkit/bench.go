package testkit

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// CannedUpstream is an http.RoundTripper that answers every request 200
// with the JSON body `{}` and no network, so a benchmark measures the gate
// in front of it.
type CannedUpstream struct{}

func (CannedUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode:    http.StatusOK,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(strings.NewReader(`{}`)),
		ContentLength: 2,
		Request:       r,
	}, nil
}

// ServeLoop serves req through h until the benchmark ends, failing on any
// answer but 200, or on another body than reply when reply is set. A
// non-empty body is given to each request afresh: a handler may replace
// req.Body (the gate wraps it in a size limit and an audit reader), and
// serving the same request again would otherwise stack those wrappers
// around a body already read.
func ServeLoop(b *testing.B, h http.Handler, req *http.Request, body, reply string) {
	b.Helper()
	rd := strings.NewReader(body)
	b.ReportAllocs()
	for b.Loop() {
		if body != "" {
			rd.Reset(body)
			req.Body = io.NopCloser(rd)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK || reply != "" && w.Body.String() != reply {
			b.Fatalf("got %d %q", w.Code, w.Body)
		}
	}
}
