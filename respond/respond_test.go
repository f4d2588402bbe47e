package respond

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestJSONHeaders(t *testing.T) {
	w := httptest.NewRecorder()
	w.Header().Set("Content-Length", "999") // e.g. left by a handler that gave up
	w.Header().Set("Content-Type", "text/html")
	JSON(w, http.StatusTeapot, `{"a":1}`+"\n")
	if got, want := w.Code, http.StatusTeapot; got != want {
		t.Errorf("status: got %d, want %d", got, want)
	}
	for name, want := range map[string]string{
		"Content-Type":           "application/json",
		"Cache-Control":          "no-store",
		"X-Content-Type-Options": "nosniff",
		"Content-Length":         "",
	} {
		if got := w.Header().Get(name); got != want {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
	if got, want := w.Body.String(), `{"a":1}`+"\n"; got != want {
		t.Errorf("body: got %q, want %q", got, want)
	}
}

func TestErrorBody(t *testing.T) {
	for _, tc := range []struct {
		name, code, desc, want string
	}{
		{"code only", "not_found", "", `{"error":"not_found"}` + "\n"},
		{"code and description", "invalid_token", "token is expired", `{"error":"invalid_token","error_description":"token is expired"}` + "\n"},
		{"quotes and backslashes replaced", "invalid_request", `a "b" \ c`, `{"error":"invalid_request","error_description":"a 'b' / c"}` + "\n"},
		{"non-ascii replaced", "invalid_request", "RFC 8252 §7.3: cl\u0430ude.ai", `{"error":"invalid_request","error_description":"RFC 8252 ?7.3: cl?ude.ai"}` + "\n"},
		{"markup escaped", "invalid_request", "<script>", `{"error":"invalid_request","error_description":"\u003cscript\u003e"}` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ErrorBody(tc.code, tc.desc); got != tc.want {
				t.Errorf("ErrorBody: got %q, want %q", got, tc.want)
			}
		})
	}
}

// An error_description holds only what RFC 6749 §5.2 allows, %x20-21 /
// %x23-5B / %x5D-7E, whatever a caller passes.
func TestDescription(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"clean text unchanged", "redirect_uri does not match (RFC 6749 4.1.3) ~!", "redirect_uri does not match (RFC 6749 4.1.3) ~!"},
		{"double quote", `scope "admin"`, "scope 'admin'"},
		{"backslash", `a\b`, "a/b"},
		{"section sign", "RFC 8252 §7.3", "RFC 8252 ?7.3"},
		{"look-alike letter", "cl\u0430ude.ai", "cl?ude.ai"},
		{"bidirectional override", "a\u202eb", "a?b"},
		{"control characters", "a\tb\nc\x7f", "a?b?c?"},
		{"invalid utf-8", "a\xff\xfeb", "a??b"},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Description(tc.in)
			if got != tc.want {
				t.Errorf("Description(%q): got %q, want %q", tc.in, got, tc.want)
			}
			for i := 0; i < len(got); i++ {
				if c := got[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
					t.Errorf("Description(%q) = %q: byte %#x is not allowed", tc.in, got, c)
				}
			}
		})
	}
}

func TestError(t *testing.T) {
	w := httptest.NewRecorder()
	Error(w, http.StatusBadRequest, "invalid_client_metadata", "redirect_uris must be an array")
	var got map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatalf("body %q: %v", w.Body, err)
	}
	if got["error"] != "invalid_client_metadata" || got["error_description"] != "redirect_uris must be an array" || len(got) != 2 {
		t.Errorf("body: got %v", got)
	}
	if w.Code != http.StatusBadRequest || w.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("status %d, headers %v", w.Code, w.Header())
	}
}

func TestRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    time.Duration
		want string
	}{
		{"negative", -time.Second, "1"},
		{"zero", 0, "1"},
		{"a nanosecond", time.Nanosecond, "1"},
		{"one second", time.Second, "1"},
		{"just over a second", time.Second + time.Millisecond, "2"},
		{"twenty seconds", 20 * time.Second, "20"},
		{"an hour", time.Hour, "3600"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RetryAfter(tc.d); got != tc.want {
				t.Errorf("RetryAfter(%v): got %q, want %q", tc.d, got, tc.want)
			}
		})
	}
}

func TestDocument(t *testing.T) {
	for _, tc := range []struct {
		name   string
		maxAge time.Duration
		want   string
	}{
		{"an hour", time.Hour, "public, max-age=3600"},
		{"part of a second is cut", 1500 * time.Millisecond, "public, max-age=1"},
		{"negative is zero", -time.Second, "public, max-age=0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			Document(w, []byte(`{"issuer":"x"}`), tc.maxAge)
			for name, want := range map[string]string{
				"Content-Type":           "application/json",
				"Cache-Control":          tc.want,
				"X-Content-Type-Options": "nosniff",
			} {
				if got := w.Header().Get(name); got != want {
					t.Errorf("%s: got %q, want %q", name, got, want)
				}
			}
			if w.Code != http.StatusOK || w.Body.String() != `{"issuer":"x"}` {
				t.Errorf("got %d %q", w.Code, w.Body)
			}
		})
	}
}
