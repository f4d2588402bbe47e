package gate

import (
	"bytes"
	"errors"
	"fmt"
	"net/textproto"
	"strings"
)

// Reading the upstream's answers (RFC 9112), strictly. The gateway re-frames
// every answer for its client through net/http's server, so what matters
// here is that the gateway never reads an answer's end anywhere else than
// where a careful HTTP/1.1 peer would: a compromised or buggy upstream must
// not be able to make bytes of one answer count as part of another
// (response splitting, desynchronised keep-alive). Anything ambiguous is an
// error, answered 502, never relayed as it came: obsolete line folding,
// bare CR or LF, whitespace before a colon, Transfer-Encoding other than a
// single "chunked", Transfer-Encoding with Content-Length, several or
// malformed Content-Length fields, malformed chunks. FuzzResponseHead holds
// the parser to net/http's http.ReadResponse: whatever it accepts, Go reads
// the same way.

// errMalformedResponse wraps every reason an upstream's answer is refused.
var errMalformedResponse = errors.New("read upstream answer: malformed")

// errIncomplete says the bytes so far hold only part of what is parsed.
var errIncomplete = errors.New("incomplete")

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errMalformedResponse}, a...)...)
}

// Bounds on what an upstream may send besides bodies.
const (
	// maxResponseHeadBytes bounds a response's status line and header
	// section (nginx's default is 4-8 KiB).
	maxResponseHeadBytes = 64 << 10
	// maxChunkLineBytes bounds a chunk-size line, extensions included (as
	// net/http does).
	maxChunkLineBytes = 4096
	// maxTrailerBytes bounds a chunked body's trailer section, which is read
	// and dropped.
	maxTrailerBytes = 64 << 10
	// max1xx bounds the informational answers before the final one.
	max1xx = 5
	// maxChunkOverhead bounds how far a chunked body's framing may run
	// ahead of its data (many tiny chunks with long extensions), as
	// net/http's chunked reader does.
	maxChunkOverhead = 16 << 10
)

// headerField is one header field of an upstream's answer: its name in
// canonical form (textproto.CanonicalMIMEHeaderKey) and its value, both
// pointing into the answer's head.
type headerField struct{ name, value string }

// Body framing of an answer (RFC 9112 §6.3).
const (
	framingNone    = iota // no body: HEAD, 1xx, 204, 304
	framingLength         // Content-Length
	framingChunked        // Transfer-Encoding: chunked
	framingClose          // read until the upstream closes
)

// responseHead is an upstream's answer up to its body.
type responseHead struct {
	status  int
	minor   int           // HTTP/1.minor
	fields  []headerField // every field, in order
	framing int
	length  int64 // with framingLength
	// close: the connection cannot carry another request after this
	// answer (Connection: close, HTTP/1.0, a close-delimited body, or a
	// 204/304 that announced a body it may send anyway).
	close bool
	// connNames are the other options of Connection: names of hop-by-hop
	// fields to drop (RFC 9110 §7.6.1), in canonical form.
	connNames []string
}

// headEnd returns the length of the response head at the start of b (the
// empty line included), or errIncomplete when b holds only part of it. Every
// line must end in CRLF: a bare LF is an error at once, not a wait for more.
// b[:from] is known to hold whole lines only, none of them the empty one (a
// previous call's scanned): they are not looked at again, so a head that
// arrives a few bytes at a time costs time linear in its size, not
// quadratic. scanned is where the incomplete line starts.
func headEnd(b []byte, from int) (n, scanned int, err error) {
	i := from
	for {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			if len(b) > maxResponseHeadBytes {
				return 0, 0, malformed("head larger than %d bytes", maxResponseHeadBytes)
			}
			return 0, i, errIncomplete
		}
		j += i
		if j == i || b[j-1] != '\r' {
			return 0, 0, malformed("line not ended by CRLF")
		}
		if j+1 > maxResponseHeadBytes {
			return 0, 0, malformed("head larger than %d bytes", maxResponseHeadBytes)
		}
		if j-1 == i { // "\r\n": the empty line
			if i == 0 {
				return 0, 0, malformed("empty status line")
			}
			return j + 1, 0, nil
		}
		i = j + 1
	}
}

// parseHead parses head, a complete response head (headEnd's length), into
// h, reusing h.fields. isHead says the request was HEAD: the answer has no
// body whatever it announces.
func parseHead(head string, isHead bool, h *responseHead) error {
	fields := h.fields[:0]
	*h = responseHead{length: -1, fields: fields}
	line, rest, _ := strings.Cut(head, "\r\n")
	if err := parseStatusLine(line, h); err != nil {
		return err
	}
	var te, cl, ct int // fields seen
	for {
		line, rest, _ = strings.Cut(rest, "\r\n")
		if line == "" {
			break
		}
		name, value, err := parseFieldLine(line)
		if err != nil {
			return err
		}
		name = textproto.CanonicalMIMEHeaderKey(name)
		switch name {
		case "Content-Type":
			// Two types are two readings: the gate filters a listing by
			// the first, a client may take the last.
			if ct++; ct > 1 {
				return malformed("several Content-Type fields")
			}
		case "Content-Length":
			cl++
			if cl > 1 {
				return malformed("several Content-Length fields")
			}
			n, ok := parseLength(value)
			if !ok {
				return malformed("Content-Length %q", bounded(value))
			}
			h.length = n
		case "Transfer-Encoding":
			te++
			// Only "chunked", alone: a coding the gateway would pass on
			// undecoded, or a list it could read otherwise than the
			// upstream meant, is refused.
			if te > 1 || !equalFoldASCII(value, "chunked") {
				return malformed("Transfer-Encoding %q", bounded(value))
			}
		case "Connection":
			for opt := range strings.SplitSeq(value, ",") {
				opt = strings.Trim(opt, " \t")
				switch {
				case opt == "":
				case equalFoldASCII(opt, "close"):
					h.close = true
				case equalFoldASCII(opt, "keep-alive"):
				default:
					if !isToken(opt) {
						return malformed("Connection option %q", bounded(opt))
					}
					h.connNames = append(h.connNames, textproto.CanonicalMIMEHeaderKey(opt))
				}
			}
		}
		h.fields = append(h.fields, headerField{name, value})
	}
	if h.minor == 0 {
		h.close = true // no keep-alive with HTTP/1.0 upstreams
		if te > 0 {
			return malformed("Transfer-Encoding in an HTTP/1.0 answer")
		}
	}
	if te > 0 && cl > 0 {
		// RFC 9112 §6.3 (3): Transfer-Encoding overrides Content-Length,
		// and the pair "ought to be handled as an error".
		return malformed("both Transfer-Encoding and Content-Length")
	}
	switch {
	case h.status < 200 || h.status == 204 || h.status == 304 || isHead:
		h.framing = framingNone
		if (h.status == 204 || h.status == 304) && (te > 0 || h.length > 0) {
			// A body announced where none may be (RFC 9110 §15.3.5,
			// §15.4.5): relayed without one, and the connection is not
			// trusted with another request, so whatever comes after
			// cannot be read as the next answer.
			h.close = true
		}
	case te > 0:
		h.framing = framingChunked
	case cl > 0:
		h.framing = framingLength
	default:
		h.framing = framingClose
		h.close = true
	}
	return nil
}

// parseStatusLine parses "HTTP/1.x NNN reason" (RFC 9112 §4).
func parseStatusLine(line string, h *responseHead) error {
	switch {
	case strings.HasPrefix(line, "HTTP/1.1 "):
		h.minor = 1
	case strings.HasPrefix(line, "HTTP/1.0 "):
		h.minor = 0
	default:
		return malformed("status line %q", bounded(line))
	}
	code := line[len("HTTP/1.x "):]
	if len(code) < 3 || len(code) > 3 && code[3] != ' ' {
		return malformed("status line %q", bounded(line))
	}
	n := 0
	for i := range 3 {
		c := code[i]
		if c < '0' || c > '9' {
			return malformed("status line %q", bounded(line))
		}
		n = n*10 + int(c-'0')
	}
	if n < 100 {
		return malformed("status %d", n)
	}
	if len(code) > 3 && !isFieldValue(code[4:]) {
		return malformed("reason phrase")
	}
	h.status = n
	return nil
}

// parseFieldLine splits "name: value" (RFC 9112 §5): a token, a colon
// right after it, the value without its surrounding whitespace.
func parseFieldLine(line string) (name, value string, err error) {
	if line[0] == ' ' || line[0] == '\t' {
		return "", "", malformed("obsolete line folding") // RFC 9112 §5.2
	}
	name, value, ok := strings.Cut(line, ":")
	if !ok || !isToken(name) {
		return "", "", malformed("field line %q", bounded(line))
	}
	value = strings.Trim(value, " \t")
	if !isFieldValue(value) {
		return "", "", malformed("value of %q", bounded(name))
	}
	return name, value, nil
}

// isFieldValue reports whether s is made of field-vchar, SP and HTAB (RFC
// 9110 §5.5): no control byte, so nothing an HTTP/1.1 peer could read as a
// line break.
func isFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// parseLength parses a Content-Length value: 1 to 18 digits, nothing else.
func parseLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseChunkSize parses a chunk-size line without its CRLF (RFC 9112
// §7.1): hex digits, then nothing or chunk extensions (ignored; they must
// hold no control byte).
func parseChunkSize(line []byte) (int64, error) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			goto ext
		}
		if i >= 15 {
			return 0, malformed("chunk size too large")
		}
		n = n<<4 | int64(d)
	}
ext:
	if i == 0 {
		return 0, malformed("chunk size %q", bounded(string(line)))
	}
	// Extensions right after the size, as net/http reads them (RFC 9112
	// §7.1.1 allows whitespace before the ";", which Go refuses).
	if rest := line[i:]; len(rest) > 0 && (rest[0] != ';' || !isFieldValue(string(rest))) {
		return 0, malformed("chunk size %q", bounded(string(line)))
	}
	return n, nil
}
