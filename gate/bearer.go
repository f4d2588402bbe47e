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

// token68Bytes has "1" at each byte of a token68 (RFC 9110 §11.2) other
// than "=": ALPHA, DIGIT, "-", ".", "_", "~", "+", "/".
const token68Bytes = "" +
	"0000000000000000" + // 0x00
	"0000000000000000" + // 0x10
	"0000000000010111" + // 0x20
	"1111111111000000" + // 0x30
	"0111111111111111" + // 0x40
	"1111111111100001" + // 0x50
	"0111111111111111" + // 0x60
	"1111111111100010" + // 0x70
	"0000000000000000" + // 0x80
	"0000000000000000" + // 0x90
	"0000000000000000" + // 0xA0
	"0000000000000000" + // 0xB0
	"0000000000000000" + // 0xC0
	"0000000000000000" + // 0xD0
	"0000000000000000" + // 0xE0
	"0000000000000000" // 0xF0

// isToken68 reports whether s is 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" /
// "+" / "/" ) *"=".
func isToken68(s string) bool {
	n := 0
	for n < len(s) && token68Bytes[s[n]] == '1' {
		n++
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
