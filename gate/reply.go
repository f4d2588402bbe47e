package gate

import (
	"net/http"
	"strings"
)

// Bodies of the gate's own answers, written with respond.JSON: each is
// respond.ErrorBody of its code and description (RFC 6749 §5.2 shape),
// spelled out as a constant so no answer is encoded per request.
const (
	bodyBadRequest        = `{"error":"invalid_request","error_description":"malformed request path"}` + "\n"
	bodyURITooLong        = `{"error":"invalid_request","error_description":"request path too long"}` + "\n"
	bodyNotFound          = `{"error":"not_found"}` + "\n"
	bodyMethodNotAllowed  = `{"error":"method_not_allowed"}` + "\n"
	bodyUnauthorized      = `{"error":"unauthorized","error_description":"authorization required"}` + "\n"
	bodyInvalidRequest    = `{"error":"invalid_request","error_description":"malformed authorization"}` + "\n"
	bodyForbidden         = `{"error":"forbidden"}` + "\n"
	bodyInsufficientScope = `{"error":"insufficient_scope"}` + "\n"
	bodyRateLimited       = `{"error":"rate_limited","error_description":"too many requests"}` + "\n"
	bodyTooLarge          = `{"error":"request_too_large"}` + "\n"
	bodyUpstreamNotReady  = `{"error":"unavailable","error_description":"upstream not ready"}` + "\n"
	bodyShuttingDown      = `{"error":"unavailable","error_description":"shutting down"}` + "\n"
	bodyProviderNotReady  = `{"error":"unavailable","error_description":"identity provider keys not loaded"}` + "\n"
	bodyBadGateway        = `{"error":"bad_gateway"}` + "\n"
	bodySessionNotFound   = `{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"Session not found"}}` + "\n"
	bodySeveralSessions   = `{"error":"invalid_request","error_description":"several Mcp-Session-Id headers"}` + "\n"
	bodyUpstreamBusy      = `{"error":"unavailable","error_description":"upstream busy"}` + "\n"
	bodyOriginForbidden   = `{"error":"forbidden","error_description":"origin not allowed"}` + "\n"
	bodyUpgrade           = `{"error":"invalid_request","error_description":"protocol upgrades (WebSocket, h2c) are not supported"}` + "\n"
)

func errBadPath(status int) string {
	if status == http.StatusRequestURITooLong {
		return bodyURITooLong
	}
	return bodyBadRequest
}

// challenges holds the WWW-Authenticate values (RFC 6750 §3, RFC 9728 §5.1)
// built once from configuration.
type challenges struct {
	metadata          string // the resource metadata URL, sanitized
	tail              string // `resource_metadata="...", scope="..."`
	missing           []string
	invalidRequest    []string
	insufficientScope []string
}

func newChallenges(metadataURL string, scopes, required []string) challenges {
	tail := `resource_metadata="` + sanitize(metadataURL) + `"`
	if len(scopes) > 0 {
		tail += `, scope="` + sanitize(strings.Join(scopes, " ")) + `"`
	}
	return challenges{
		metadata:       sanitize(metadataURL),
		tail:           tail,
		missing:        []string{"Bearer " + tail},
		invalidRequest: []string{`Bearer error="invalid_request", ` + tail},
		insufficientScope: []string{`Bearer error="insufficient_scope", scope="` +
			sanitize(strings.Join(required, " ")) + `", resource_metadata="` + sanitize(metadataURL) + `"`},
	}
}

// stepUp is the challenge of a call the policy refuses only for missing
// scopes (RFC 6750 §3.1 insufficient_scope; MCP authorization, step-up):
// scope names every scope the call needs. Policy scopes are scope-tokens
// (policy.Parse checks), so they go in as they are, however many.
func (c challenges) stepUp(scopes []string) string {
	return `Bearer error="insufficient_scope", scope="` + strings.Join(scopes, " ") + `", resource_metadata="` + c.metadata + `"`
}

func (c challenges) invalidToken(desc string) string {
	return `Bearer error="invalid_token", error_description="` + desc + `", ` + c.tail
}

// sanitize keeps s safe inside a quoted-string (RFC 9110 §5.6.4) and short:
// printable ASCII without quotes or backslashes, at most 200 bytes.
func sanitize(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			clean = false
			break
		}
	}
	if clean && len(s) <= 200 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s) && len(b) < 200; i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			b = append(b, c)
		}
	}
	return string(b)
}
