package gate

import (
	"encoding/json"
	"testing"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/respond"
)

// TestBodiesAreErrorBodies: the gate's constant bodies are spelled out so
// none is encoded per request; each must be exactly what respond.ErrorBody
// writes for its code and description.
func TestBodiesAreErrorBodies(t *testing.T) {
	for _, body := range []string{
		bodyBadRequest, bodyURITooLong, bodyNotFound, bodyMethodNotAllowed, bodyUnauthorized,
		bodyInvalidRequest, bodyForbidden, bodyInsufficientScope, bodyRateLimited, bodyTooLarge,
		bodyUpstreamNotReady, bodyProviderNotReady, bodyBadGateway, bodyOriginForbidden,
	} {
		var e struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
			t.Errorf("%q: not an error object (%v)", body, err)
			continue
		}
		if want := respond.ErrorBody(e.Error, e.Description); body != want {
			t.Errorf("body: got %q, want %q", body, want)
		}
	}
}
