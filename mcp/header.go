package mcp

import (
	"encoding/base64"
	"errors"
	"strings"
	"unicode/utf8"
)

// The request headers of the 2026-07-28 Streamable HTTP transport that
// mirror the body ("Standard Request Headers"), in canonical form.
const (
	HeaderMethod = "Mcp-Method" // the JSON-RPC method
	HeaderName   = "Mcp-Name"   // params.name or params.uri, possibly Base64-encoded
)

// The markers of an encoded header value ("Value Encoding"): exact, lower
// case.
const (
	encodedPrefix = "=?base64?"
	encodedSuffix = "?="
)

// mismatchError is a header that disagrees with the body, or is malformed;
// detail names the header, never its value.
type mismatchError struct{ detail string }

func (e *mismatchError) Error() string { return "check mcp headers: " + e.detail }
func (e *mismatchError) Unwrap() error { return ErrHeaderMismatch }

func mismatch(detail string) error { return &mismatchError{detail} }

// DecodeHeader decodes a value of Mcp-Name or Mcp-Param-{Name} (2026-07-28
// transport, "Value Encoding"). A value that starts with "=?base64?" and
// ends with "?=" is the standard, padded Base64 (RFC 4648 §4) of a UTF-8
// string; any other value is itself, and must then hold only visible ASCII,
// space and tab (RFC 9110 §5.5). Errors wrap ErrHeaderMismatch.
func DecodeHeader(v string) (string, error) {
	if strings.HasPrefix(v, encodedPrefix) && strings.HasSuffix(v, encodedSuffix) {
		// A plain value of this shape must have been encoded: the markers
		// may not overlap.
		if len(v) < len(encodedPrefix)+len(encodedSuffix) {
			return "", mismatch("encoded value is not Base64")
		}
		payload := v[len(encodedPrefix) : len(v)-len(encodedSuffix)]
		// Strict: no line breaks (which Go's decoder would skip), no
		// non-zero padding bits.
		if strings.ContainsAny(payload, "\r\n") {
			return "", mismatch("encoded value is not Base64")
		}
		b, err := base64.StdEncoding.Strict().DecodeString(payload)
		if err != nil {
			return "", mismatch("encoded value is not Base64")
		}
		if !utf8.Valid(b) {
			return "", mismatch("encoded value is not UTF-8")
		}
		return string(b), nil
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 || c > 0x7e) && c != '\t' {
			return "", mismatch("value holds a character outside visible ASCII")
		}
	}
	return v, nil
}

// CheckHeaders reports whether the Mcp-Method and Mcp-Name headers of a
// request agree with its body, as every component that reads the body must
// check (2026-07-28 transport, "Server Validation"). Header values are
// case-sensitive and Mcp-Name is decoded first. Clients of earlier
// revisions send neither header, so a request without both is not checked;
// once one is present:
//   - the body must be a single request or notification (the headers
//     describe one message);
//   - each header may appear once;
//   - Mcp-Method must equal the method;
//   - Mcp-Name must equal params.name (tools/call, prompts/get) or
//     params.uri (resources/read), must be absent for other methods
//     (resources/subscribe and completion/complete included: the
//     specification has it mirror nothing of theirs), and must be present
//     for those three when Mcp-Method is.
//
// Mcp-Param-{Name} headers are forwarded unchecked: which tool parameters
// they mirror is in the tool's inputSchema, which the gateway does not read
// ("Server Behavior for Custom Headers": intermediaries that do not
// recognize one forward it). The error wraps ErrHeaderMismatch; answer it
// with WriteHeaderMismatch.
func CheckHeaders(h map[string][]string, body Body) error {
	methods, names := h[HeaderMethod], h[HeaderName]
	if len(methods) == 0 && len(names) == 0 {
		return nil
	}
	if len(methods) > 1 {
		return mismatch(HeaderMethod + " sent more than once")
	}
	if len(names) > 1 {
		return mismatch(HeaderName + " sent more than once")
	}
	if body.Batch || len(body.Messages) != 1 {
		return mismatch("the headers describe one message; the body is not one request")
	}
	m := body.Messages[0]
	if len(methods) == 1 && methods[0] != m.Method {
		return mismatch(HeaderMethod + " does not match the body's method")
	}
	key := headerKey(m.Method)
	switch {
	case len(names) == 1 && key == "":
		return mismatch(HeaderName + " sent for a method whose name it does not mirror")
	case len(names) == 1:
		v, err := DecodeHeader(names[0])
		if err != nil {
			var me *mismatchError
			if errors.As(err, &me) {
				return mismatch(HeaderName + ": " + me.detail)
			}
			return err
		}
		if v != m.Name {
			return mismatch(HeaderName + " does not match the body's params." + key)
		}
	case key != "":
		return mismatch(HeaderName + " missing for " + m.Method)
	}
	return nil
}
