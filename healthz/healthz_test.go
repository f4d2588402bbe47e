package healthz

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestLive(t *testing.T) {
	rec := httptest.NewRecorder()
	Live().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("got status %d, want 200", rec.Code)
	}
	for name, want := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
		if got := rec.Header().Get(name); got != want {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
}

// readyFunc is a Part that asks a function.
type readyFunc func() (bool, string)

func (f readyFunc) Ready() (bool, string) { return f() }

func TestReady(t *testing.T) {
	childReady := false
	h := Ready(
		Check{Name: "provider", Part: readyFunc(func() (bool, string) { return true, "" })},
		Check{Name: "child", Part: readyFunc(func() (bool, string) {
			if childReady {
				return true, ""
			}
			return false, "starting, 2 restarts, last exit status 3"
		})},
	)
	for _, tc := range []struct {
		name       string
		childReady bool
		wantCode   int
		wantStatus string
	}{
		{"child starting", false, http.StatusServiceUnavailable, "not ready"},
		{"all ready", true, http.StatusOK, "ready"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			childReady = tc.childReady
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
			if rec.Code != tc.wantCode {
				t.Fatalf("got status %d, want %d", rec.Code, tc.wantCode)
			}
			var body struct {
				Status string `json:"status"`
				Checks map[string]struct {
					Ready  bool   `json:"ready"`
					Detail string `json:"detail"`
				} `json:"checks"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if body.Status != tc.wantStatus {
				t.Errorf("got status %q, want %q", body.Status, tc.wantStatus)
			}
			if got := body.Checks["child"].Ready; got != tc.childReady {
				t.Errorf("got child ready %v, want %v", got, tc.childReady)
			}
			if !tc.childReady && body.Checks["child"].Detail == "" {
				t.Error("a check that is not ready must say why")
			}
		})
	}
}
