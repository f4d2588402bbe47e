package gate

import (
	"net/http"
	"strings"
)

// checkTarget checks the raw request target of r (RFC 9112 §3.2) and
// returns 0 when its path is clean, else the status to answer (400 or 414)
// and why. It looks at the target as the client sent it, not at the decoded
// r.URL.Path, so encoded dots and slashes cannot hide.
func checkTarget(r *http.Request) (status int, reason string) {
	raw := r.RequestURI
	switch {
	case raw == "":
		// A request built in-process (tests, HTTP/2 without :path); use the
		// URL's escaped form.
		raw = r.URL.EscapedPath()
	case raw[0] == '/':
		// origin-form
	case raw == "*":
		return http.StatusBadRequest, "asterisk-form target"
	default:
		// absolute-form (RFC 9112 §3.2.2): keep the path after the authority.
		i := strings.Index(raw, "://")
		if i < 0 {
			return http.StatusBadRequest, "target is neither origin-form nor absolute-form"
		}
		rest := raw[i+3:]
		j := strings.IndexByte(rest, '/')
		if j < 0 {
			return http.StatusBadRequest, "absolute-form target without a path"
		}
		raw = rest[j:]
	}
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw = raw[:i]
	}
	if status, reason := checkPath(raw); status != 0 {
		return status, reason
	}
	// The server parsed the same target into r.URL; make sure the raw form
	// the upstream will be sent is the one just checked.
	if r.URL.EscapedPath() != raw {
		return http.StatusBadRequest, "path does not round-trip"
	}
	return 0, ""
}

// PathProblem is what the gate refuses in the path p (checkPath), or ""
// when it serves it: for configuration, which must not name a route no
// request can reach.
func PathProblem(p string) string {
	_, reason := checkPath(p)
	return reason
}

// checkPath returns 0 when the escaped path p is clean: it starts with "/",
// has no empty, "." or ".." segment, no ";" path parameters, no backslash,
// no control byte, no percent-encoded ".", "/", "\", ";", "%" or control
// byte, only characters RFC 3986 §3.3 allows in a path, and is at most
// maxPathBytes long.
func checkPath(p string) (status int, reason string) {
	if len(p) > maxPathBytes {
		return http.StatusRequestURITooLong, "path too long"
	}
	if p == "" || p[0] != '/' {
		return http.StatusBadRequest, "path does not start with /"
	}
	segStart := 1
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '/':
			if i > 0 {
				if r := checkSegment(p[segStart:i]); r != "" {
					return http.StatusBadRequest, r
				}
				segStart = i + 1
			}
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return http.StatusBadRequest, "bad percent-encoding"
			}
			d := unhex(p[i+1])<<4 | unhex(p[i+2])
			switch {
			case d == '.':
				return http.StatusBadRequest, "encoded dot"
			case d == '/' || d == '\\':
				return http.StatusBadRequest, "encoded slash or backslash"
			case d == ';' || d == '%':
				return http.StatusBadRequest, "encoded ; or %"
			case d < 0x20 || d == 0x7f:
				return http.StatusBadRequest, "encoded control byte"
			}
			i += 2
		case c < 0x20 || c == 0x7f:
			return http.StatusBadRequest, "control byte"
		case c == '\\':
			return http.StatusBadRequest, "backslash"
		case c == ';':
			return http.StatusBadRequest, "path parameter"
		case !isPchar(c):
			return http.StatusBadRequest, "character not allowed in a path"
		}
	}
	if r := checkSegment(p[segStart:]); r != "" && segStart < len(p) {
		return http.StatusBadRequest, r
	}
	return 0, ""
}

// checkSegment checks one segment between slashes; the last segment may be
// empty (a trailing slash), which the caller allows.
func checkSegment(s string) string {
	switch s {
	case "":
		return "empty path segment (//)"
	case ".", "..":
		return "dot segment"
	}
	return ""
}

// isPchar reports whether c may appear unencoded in a path segment (RFC 3986
// §3.3 pchar minus ";", which is refused separately).
func isPchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '_', '~', '!', '$', '&', '\'', '(', ')', '*', '+', ',', '=', ':', '@':
		return true
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
