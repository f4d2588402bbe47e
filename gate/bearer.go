package gate

import "strings"

type bearerStatus int

const (
	bearerOK bearerStatus = iota
	bearerMalformed
	bearerTooLarge
)

// bearer extracts the token from one Authorization header value (RFC 6750
// §2.1): the scheme "Bearer" in any letter case, one or more spaces or tabs,
// then a token68 (RFC 9110 §11.2). A token longer than max is refused
// before its syntax is read.
func bearer(v string, max int) (string, bearerStatus) {
	const scheme = "Bearer"
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", bearerMalformed
	}
	i := len(scheme)
	if v[i] != ' ' && v[i] != '\t' {
		return "", bearerMalformed
	}
	for i < len(v) && (v[i] == ' ' || v[i] == '\t') {
		i++
	}
	tok := v[i:]
	for len(tok) > 0 && (tok[len(tok)-1] == ' ' || tok[len(tok)-1] == '\t') {
		tok = tok[:len(tok)-1]
	}
	if len(tok) > max {
		return "", bearerTooLarge
	}
	if !isToken68(tok) {
		return "", bearerMalformed
	}
	return tok, bearerOK
}

// isToken68 reports whether s is 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" /
// "+" / "/" ) *"=".
func isToken68(s string) bool {
	n := 0
	for n < len(s) {
		c := s[n]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' {
			n++
			continue
		}
		break
	}
	if n == 0 {
		return false
	}
	for ; n < len(s); n++ {
		if s[n] != '=' {
			return false
		}
	}
	return true
}

// hasQueryToken reports whether the raw query carries an access_token
// parameter (RFC 6750 §2.3), which the gate never accepts.
func hasQueryToken(q string) bool {
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, _, _ := strings.Cut(kv, "=")
		if k == "access_token" || strings.EqualFold(k, "access%5Ftoken") {
			return true
		}
	}
	return false
}
