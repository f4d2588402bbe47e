package broker

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/respond"
)

// metadata is the authorization-server metadata (RFC 8414 §2).
type metadata struct {
	Issuer                            string   `json:"issuer"`
	AuthorizationEndpoint             string   `json:"authorization_endpoint"`
	TokenEndpoint                     string   `json:"token_endpoint"`
	RegistrationEndpoint              string   `json:"registration_endpoint"`
	RevocationEndpoint                string   `json:"revocation_endpoint"`
	JWKSURI                           string   `json:"jwks_uri"`
	ScopesSupported                   []string `json:"scopes_supported,omitempty"`
	ResponseTypesSupported            []string `json:"response_types_supported"`
	ResponseModesSupported            []string `json:"response_modes_supported"`
	GrantTypesSupported               []string `json:"grant_types_supported"`
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethods     []string `json:"revocation_endpoint_auth_methods_supported"`
	CodeChallengeMethodsSupported     []string `json:"code_challenge_methods_supported"`
	// RFC 9207 §3: every authorization response carries iss; MCP clients
	// of the 2026-07-28 revision then require it.
	AuthorizationResponseISSParameterSupported bool `json:"authorization_response_iss_parameter_supported"`
	// draft-ietf-oauth-client-id-metadata-document §6: a client_id may be
	// the https URL of the client's metadata. MCP clients (and claude.ai,
	// when "none" is among the token endpoint auth methods) then use it
	// instead of registering. Left out when they are not accepted
	// (Config.DisableCIMD): absent means false (§6).
	ClientIDMetadataDocumentSupported bool `json:"client_id_metadata_document_supported,omitempty"`
}

// metadataDoc builds the metadata once: it depends on configuration only.
func (b *Broker) metadataDoc() ([]byte, error) {
	methods := []string{authNone, authSecretBasic, authSecretPost}
	doc, err := json.Marshal(metadata{
		Issuer:                                     b.issuer,
		AuthorizationEndpoint:                      b.issuer + AuthorizePath,
		TokenEndpoint:                              b.issuer + TokenPath,
		RegistrationEndpoint:                       b.issuer + RegisterPath,
		RevocationEndpoint:                         b.issuer + RevokePath,
		JWKSURI:                                    b.issuer + JWKSPath,
		ScopesSupported:                            b.scopes,
		ResponseTypesSupported:                     []string{"code"},
		ResponseModesSupported:                     []string{"query"},
		GrantTypesSupported:                        []string{grantCode, grantRefresh},
		TokenEndpointAuthMethodsSupported:          methods,
		RevocationEndpointAuthMethods:              methods,
		CodeChallengeMethodsSupported:              []string{"S256"},
		AuthorizationResponseISSParameterSupported: true,
		ClientIDMetadataDocumentSupported:          !b.cimdOff,
	})
	if err != nil {
		return nil, fmt.Errorf("encode metadata: %w", err)
	}
	return doc, nil
}

// serveMetadata serves the RFC 8414 §3 document.
func (b *Broker) serveMetadata(w http.ResponseWriter, r *http.Request) {
	respond.Document(w, b.metadata, time.Hour)
}
