// Package respond writes the gateway's own answers, as opposed to what it
// proxies: JSON with the headers such answers carry (Content-Type:
// application/json, Cache-Control: no-store, X-Content-Type-Options:
// nosniff), errors in the OAuth form of RFC 6749 §5.2, public documents
// meant to be cached (discovery metadata, keys: Document), and the
// rendering of Retry-After. Every JSON answer the gateway writes itself
// (gate, wellknown, broker, healthz, main) goes through it, so the headers
// and the error shape cannot drift apart.
//
// It does not decide status codes, error codes or how long a document may
// be cached (the callers do). It writes no HTML: the broker's consent and
// error pages, with their Content-Security-Policy, are the broker's own.
package respond

import (
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// JSON writes body, a complete JSON document, with status and the gateway's
// headers: Content-Type application/json; Cache-Control no-store (RFC 9111
// §5.2.2.5), since these answers depend on the request and may carry
// secrets; and X-Content-Type-Options nosniff, so no browser reads them as
// anything but JSON. A Content-Length set earlier is dropped. Constant
// bodies are built once (ErrorBody) and written here with no encoding.
func JSON(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// Document writes body, a complete JSON document that anyone may read and
// cache (discovery metadata, a JWKS), with status 200: Content-Type
// application/json, Cache-Control public with max-age (RFC 9111 §5.2.2.1,
// whole seconds, 0 for a negative maxAge), and X-Content-Type-Options
// nosniff.
func Document(w http.ResponseWriter, body []byte, maxAge time.Duration) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "public, max-age="+strconv.FormatInt(int64(max(maxAge, 0)/time.Second), 10))
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(body)
}

// Error writes an error in the form of RFC 6749 §5.2 (also that of RFC 7591
// §3.2.2 and RFC 6750 §3): ErrorBody(code, description), through JSON.
func Error(w http.ResponseWriter, status int, code, description string) {
	JSON(w, status, ErrorBody(code, description))
}

// ErrorBody is the body of an error: a JSON object with "error" and, when
// description is not empty, "error_description" (passed through
// Description), and a final newline.
func ErrorBody(code, description string) string {
	b, _ := json.Marshal(struct { // strings only: Marshal cannot fail
		Error       string `json:"error"`
		Description string `json:"error_description,omitempty"`
	}{code, Description(description)})
	return string(b) + "\n"
}

// Description makes s a valid error_description: RFC 6749 §4.1.2.1 and
// §5.2 allow only %x20-21 / %x23-5B / %x5D-7E, printable ASCII without
// '"' and '\'. Descriptions often quote what a client sent (a redirect
// URI, a scope, a URL), so rather than trust every caller to comply, this
// replaces '"' with an apostrophe, '\' with '/', and every other
// character outside that set (a control character, a non-ASCII character,
// an invalid byte) with '?'. Clean text is returned as it is, without
// allocating.
func Description(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, c := range s { // an invalid byte comes as one utf8.RuneError
		switch {
		case c == '"':
			b.WriteByte('\'')
		case c == '\\':
			b.WriteByte('/')
		case c < 0x20 || c > 0x7e:
			b.WriteByte('?')
		default:
			b.WriteByte(byte(c))
		}
	}
	return b.String()
}

// RetryAfter renders d as the delay-seconds of a Retry-After header (RFC
// 9110 §10.2.3): whole seconds, rounded up so a client that waits that long
// is not turned away again, and at least 1.
func RetryAfter(d time.Duration) string {
	s := int64(math.Ceil(d.Seconds()))
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(s, 10)
}
