package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// registration is what an RFC 7591 registration answered.
type registration struct {
	clientID     string
	clientSecret string
	authMethod   string
}

// register registers a public native client for redirectURI (RFC 7591 §3.1,
// RFC 8252), as MCP clients do. It returns a message for the check instead
// of an error when the server refused.
func (c *checker) register(ctx context.Context, name, redirectURI string) (*registration, string) {
	endpoint := str(c.as.doc, "registration_endpoint")
	meta := map[string]any{
		"client_name":                name,
		"redirect_uris":              []string{redirectURI},
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"token_endpoint_auth_method": "none",
		"application_type":           "native",
	}
	if scope := c.scope(); scope != "" {
		meta["scope"] = scope
	}
	body, err := json.Marshal(meta)
	if err != nil {
		return nil, "encode the registration: " + err.Error()
	}
	res, err := c.send(ctx, http.MethodPost, endpoint, http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json"}}, body)
	if err != nil {
		return nil, "POST " + endpoint + ": " + err.Error()
	}
	doc, derr := decodeObject(res.body)
	if res.status != http.StatusCreated && res.status != http.StatusOK {
		msg := fmt.Sprintf("POST %s answered %d", endpoint, res.status)
		if derr == nil && str(doc, "error") != "" {
			msg += ": " + str(doc, "error")
			if d := str(doc, "error_description"); d != "" {
				msg += " (" + shorten(d, 160) + ")"
			}
		}
		return nil, msg
	}
	if derr != nil || str(doc, "client_id") == "" {
		return nil, fmt.Sprintf("POST %s answered %d without a client_id", endpoint, res.status)
	}
	return &registration{
		clientID:     str(doc, "client_id"),
		clientSecret: str(doc, "client_secret"),
		authMethod:   str(doc, "token_endpoint_auth_method"),
	}, ""
}

// checkRegister is the --register dry run: it registers a client the way
// MCP clients do, which CREATES that client at the authorization server.
func (c *checker) checkRegister(ctx context.Context) {
	const id = "register"
	if str(c.as.doc, "registration_endpoint") == "" {
		c.warn(id, "no registration_endpoint: there is nothing to register with",
			"offer dynamic registration (RFC 7591) if clients are to register themselves")
		return
	}
	const redirectURI = "http://127.0.0.1:33418/callback"
	reg, problem := c.register(ctx, "mcp-oauth-proxy doctor (registration dry run)", redirectURI)
	if reg == nil {
		c.fail(id, "[created nothing] registration refused: "+problem,
			"allow open registration of public clients with loopback redirect URIs (RFC 8252 §7.3), or pre-register clients and hand out their ids")
		return
	}
	created := "[CREATED client " + reg.clientID + " at " + str(c.as.doc, "registration_endpoint") + "; delete it there if unwanted] "
	if msg := c.authMethodProblem(reg); msg != "" {
		c.warn(id, created+msg, "answer a public client's registration with token_endpoint_auth_method none and no secret, or with a method listed in token_endpoint_auth_methods_supported")
		return
	}
	kind := "a public client"
	if m := orDefault(reg.authMethod, "none"); m != "none" {
		kind = "a confidential client, with a secret" // a facade's static client, say
	}
	c.ok(id, created+kind+" (token_endpoint_auth_method "+orDefault(reg.authMethod, "none")+") for redirect URI "+redirectURI)
}

// authMethodProblem says what a client will trip over in a registration
// answer, or "".
func (c *checker) authMethodProblem(reg *registration) string {
	methods, listed := strs(c.as.doc, "token_endpoint_auth_methods_supported")
	switch {
	case reg.clientSecret != "" && (reg.authMethod == "none" || reg.authMethod == ""):
		return "the answer pairs a client_secret with token_endpoint_auth_method " + orDefault(reg.authMethod, "(absent)") + ": SDK clients then send no secret and the token request fails"
	case reg.authMethod != "" && reg.authMethod != "none" && reg.clientSecret == "":
		return "the answer says token_endpoint_auth_method " + reg.authMethod + " but carries no client_secret"
	case reg.authMethod != "" && listed && !contains(methods, reg.authMethod):
		return "the answer's token_endpoint_auth_method " + reg.authMethod + " is not in token_endpoint_auth_methods_supported " + strings.Join(methods, ", ")
	}
	return ""
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// scope is what a client asks for: the challenge's scope, else the
// protected-resource metadata's scopes_supported (MCP authorization, scope
// selection).
func (c *checker) scope() string {
	if l := c.cfg.Login; l != nil && l.Scope != "" {
		return l.Scope
	}
	if c.challenge != nil && c.challenge.scope != "" {
		return c.challenge.scope
	}
	if c.prm != nil && len(c.prm.scopes) > 0 {
		return strings.Join(c.prm.scopes, " ")
	}
	return ""
}
