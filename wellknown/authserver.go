package wellknown

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"sync/atomic"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/respond"
)

// retryAfterSeconds is the Retry-After of a 502 while the provider's document
// was never fetched: the provider keeps retrying in the background.
const retryAfterSeconds = "10"

// docCache holds the bytes built from one provider document, so a document is
// built once, not per request. The provider replaces its map when it fetches
// a new document and never mutates one it handed out, so the map's identity
// is the cache key. Safe for concurrent use; two requests racing on a new
// document may both build it, with the same result.
type docCache struct {
	last atomic.Pointer[builtDoc]
}

type builtDoc struct {
	src  map[string]json.RawMessage // kept so its address cannot be reused
	len  int
	body []byte
}

func (c *docCache) get(m map[string]json.RawMessage, build func(map[string]json.RawMessage) ([]byte, error)) ([]byte, error) {
	if d := c.last.Load(); d != nil && sameMap(d.src, m) && d.len == len(m) {
		return d.body, nil
	}
	body, err := build(m)
	if err != nil {
		return nil, err
	}
	c.last.Store(&builtDoc{src: m, len: len(m), body: body})
	return body, nil
}

func sameMap(a, b map[string]json.RawMessage) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

func (s *Server) serveAuthorizationServer(w http.ResponseWriter, r *http.Request) {
	if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	if s.cfg.Mode != ModeFacade {
		// Direct mode serves no authorization-server metadata; the gate
		// does not route here then, but never answer for the provider.
		respond.Error(w, http.StatusNotFound, "not_found", "this gateway is not an authorization server")
		return
	}
	m, err := s.cfg.Metadata.Metadata()
	if err != nil {
		s.logger.Debug("authorization server metadata unavailable", "error", err)
		unavailable(w)
		return
	}
	body, err := s.asDoc.get(m, s.authorizationServerDoc)
	if err != nil {
		s.logger.Error("build authorization server metadata", "error", err)
		respond.Error(w, http.StatusInternalServerError, "server_error", "the authorization server's metadata could not be built")
		return
	}
	respond.Document(w, body, s.cfg.Metadata.MetadataMaxAge())
}

// unavailable answers a request that needs a provider document never fetched.
func unavailable(w http.ResponseWriter) {
	w.Header().Set("Retry-After", retryAfterSeconds)
	respond.Error(w, http.StatusBadGateway, "temporarily_unavailable", "the authorization server's metadata could not be fetched")
}

// authorizationServerDoc builds the facade's RFC 8414 document from the
// provider's: every field copied, endpoints left pointing at the provider.
func (s *Server) authorizationServerDoc(src map[string]json.RawMessage) ([]byte, error) {
	doc := make(map[string]json.RawMessage, len(src)+2)
	for k, v := range src {
		doc[k] = v
	}
	set := func(k string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode %s: %w", k, err)
		}
		doc[k] = b
		return nil
	}
	// RFC 8414 §3.3: the issuer must equal the URL the document was fetched
	// from, which is the gateway's origin (the authorization_servers entry
	// of the protected-resource metadata).
	if err := set("issuer", s.origin); err != nil {
		return nil, err
	}
	// MCP clients refuse to proceed without S256 (RFC 7636 §4.2; MCP
	// authorization, PKCE); the provider may merely not advertise it.
	var methods []any
	if err := json.Unmarshal(src["code_challenge_methods_supported"], &methods); err != nil {
		methods = nil
	}
	if !containsString(methods, "S256") {
		methods = append(methods, "S256")
	}
	if err := set("code_challenge_methods_supported", methods); err != nil {
		return nil, err
	}
	if len(s.cfg.Scopes) > 0 {
		// offline_access only when the provider grants it: a client
		// that asks for what the provider does not know fails its login.
		if err := set("scopes_supported", grantable(s.cfg.Scopes, src)); err != nil {
			return nil, err
		}
	}
	if s.registering {
		if err := set("registration_endpoint", s.origin+RegisterPath); err != nil {
			return nil, err
		}
	}
	// RFC 9207: the provider's iss in the authorization response would not
	// match the rewritten issuer, so do not promise clients it does.
	delete(doc, "authorization_response_iss_parameter_supported")
	// RFC 8414 §2.1: signed values take precedence over the plain ones, and
	// the provider's signed issuer is not the rewritten one; the gateway
	// cannot sign for the provider, so the signed copy goes.
	delete(doc, "signed_metadata")
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode authorization server metadata: %w", err)
	}
	return b, nil
}

func containsString(list []any, want string) bool {
	for _, v := range list {
		if s, ok := v.(string); ok && s == want {
			return true
		}
	}
	return false
}
