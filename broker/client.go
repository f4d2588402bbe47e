package broker

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/redirecturi"
)

// Token endpoint authentication methods (RFC 7591 §2).
const (
	authNone        = "none"
	authSecretBasic = "client_secret_basic"
	authSecretPost  = "client_secret_post"
)

// Grant types (RFC 7591 §2).
const (
	grantCode    = "authorization_code"
	grantRefresh = "refresh_token"
)

// clientRecord is a registration, sealed into the client_id itself: the
// client_id is the whole registration, so it survives restarts and every
// replica sharing BROKER_SECRET knows it, with no database.
type clientRecord struct {
	Version   int      `json:"v"`
	Name      string   `json:"n,omitempty"`
	Redirects []string `json:"r"`
	Auth      string   `json:"a,omitempty"` // "" means none
	Secret    []byte   `json:"s,omitempty"` // SHA-256 of the client secret
	NoRefresh bool     `json:"nr,omitempty"`
	IssuedAt  int64    `json:"i"`
}

// client is a known client: a registration, or a Client ID Metadata
// Document (doc is its URL; rec holds what the document says).
type client struct {
	id  string
	rec clientRecord
	doc *url.URL
}

func (c *client) authMethod() string {
	if c.rec.Auth == "" {
		return authNone
	}
	return c.rec.Auth
}

// key is a short, stable name for the client (cookies, rate limits, logs):
// the first 96 bits of the SHA-256 of its client_id.
func (c *client) key() string { return clientKey(c.id) }

// approvalKey names c in the consent cookie. A registration cannot change;
// a metadata document can (draft §8.4), so its approval covers the
// redirect URIs and name it had: a document that adds a redirect URI asks
// the user again.
func (c *client) approvalKey() string {
	if c.doc == nil {
		return c.key()
	}
	return clientKey(c.id + "\x00" + strings.Join(c.rec.Redirects, "\x00") + "\x00" + c.rec.Name)
}

// clientBinding names a client_id in what the broker seals for a login in
// progress (flow cookies, codes): its SHA-256 in base64url, 43 characters
// whatever the size of the client_id. Binding a code to it binds it to the
// client_id: another client_id with the same SHA-256 would take a second
// preimage.
func clientBinding(id string) string {
	sum := sha256.Sum256([]byte(id))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// clientBindingLen is the length of every clientBinding.
const clientBindingLen = 43

func clientKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

// errUnknownClient: the client_id is not one the broker issued (or its key
// was rotated out).
var errUnknownClient = errors.New("unknown client")

// lookupClient returns the client a client_id names: a registration
// sealed into it, or the client whose metadata document is at that URL
// (an error of the document is a *cimdError). A sealed registration is
// base64url, which has no colon; a client_id with one is a URL. from is
// the client address of the request (Config.ClientIP), which a fetch of a
// metadata document is charged to.
func (b *Broker) lookupClient(ctx context.Context, id string, mode lookupMode, from string) (*client, error) {
	if strings.Contains(id, ":") {
		return b.documentClient(ctx, id, mode, from)
	}
	var rec clientRecord
	if err := b.seal.open(purposeClient, id, &rec); err != nil || rec.Version != 1 || len(rec.Redirects) == 0 {
		return nil, errUnknownClient
	}
	return &client{id: id, rec: rec}, nil
}

// redirectRegistered reports whether redirect is one of c's redirect URIs
// (redirecturi.Registered: exact, a loopback one on any port).
func (c *client) redirectRegistered(redirect string) bool {
	return redirecturi.Registered(c.rec.Redirects, redirect)
}

// CheckRedirectURI reports why one REGISTER_REDIRECT_URIS entry is neither
// a loopback pattern nor a redirect URI the broker would register, or nil:
// main validates the setting with it in broker mode, naming the variable.
// In broker mode the list only narrows redirecturi.Check, because the
// gateway itself sends the user's browser back with its code; so an exact
// entry Check refuses (a private-use scheme without a dot that schemes,
// REGISTER_REDIRECT_SCHEMES, does not list) could never be registered and
// is a mistake in the setting. Facade mode's list replaces Check instead
// (wellknown's checkRedirects says why).
func CheckRedirectURI(entry string, schemes []string) error {
	if err := redirecturi.CheckEntry(entry); err != nil || redirecturi.IsPattern(entry) {
		return err
	}
	return redirecturi.Check(strings.TrimSpace(entry), schemes)
}

// redirectAllowed reports whether REGISTER_REDIRECT_URIS allows raw (any
// URI when there is no list; registration checks redirecturi.Check
// first).
func (b *Broker) redirectAllowed(raw string) bool {
	return b.redirects.Empty() || b.redirects.Allows(raw)
}

// clientError is an OAuth error of client authentication.
type clientError struct {
	status      int
	code        string
	description string
	basic       bool // the client tried HTTP Basic: answer with a Basic challenge
}

// authenticateClient identifies the client of a token or revocation
// request (RFC 6749 §2.3.1, §3.2.1): HTTP Basic or client_secret in the
// form for confidential clients, client_id alone for public ones; exactly
// one method per request.
func (b *Broker) authenticateClient(ctx context.Context, r *http.Request, form url.Values) (*client, *clientError) {
	// Two Authorization headers are refused, as the gate refuses them on
	// the MCP path, rather than one read and the other ignored.
	auth := r.Header.Values("Authorization")
	if len(auth) > 1 {
		return nil, &clientError{http.StatusBadRequest, "invalid_request", "the request has more than one Authorization header", false}
	}
	id, secret, basic := r.BasicAuth()
	if !basic && len(auth) == 1 && isBasic(auth[0]) {
		// RFC 6749 §5.2: the client tried the Authorization header, so the
		// answer is 401 invalid_client with a challenge of its scheme.
		return nil, &clientError{http.StatusUnauthorized, "invalid_client", "the Authorization header is not HTTP Basic credentials: base64 of client_id:client_secret (RFC 6749 2.3.1)", true}
	}
	formID, formSecret := form.Get("client_id"), form.Get("client_secret")
	_, formHasSecret := form["client_secret"]
	if basic {
		// §2.3.1: the credentials are form-encoded before Basic encoding.
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		secret, err2 = url.QueryUnescape(secret)
		if err1 != nil || err2 != nil || id == "" {
			return nil, &clientError{http.StatusUnauthorized, "invalid_client", "the client credentials are malformed", true}
		}
		if formHasSecret {
			return nil, &clientError{http.StatusBadRequest, "invalid_request", "use one client authentication method, not two", true}
		}
		if formID != "" && formID != id {
			return nil, &clientError{http.StatusBadRequest, "invalid_request", "client_id differs from the authenticated client", true}
		}
	} else {
		id, secret = formID, formSecret
	}
	if id == "" {
		return nil, &clientError{http.StatusUnauthorized, "invalid_client", "client_id is required", false}
	}
	c, err := b.lookupClient(ctx, id, forToken, b.clientIP(r))
	var ce *cimdError
	switch {
	case errors.As(err, &ce) && ce.transient:
		return nil, &clientError{http.StatusServiceUnavailable, "temporarily_unavailable", "the client's metadata document cannot be fetched right now (" + ce.msg + "); try again", basic}
	case errors.As(err, &ce):
		return nil, &clientError{http.StatusUnauthorized, "invalid_client", "the client's metadata document cannot be used: " + ce.msg, basic}
	case err != nil:
		return nil, &clientError{http.StatusUnauthorized, "invalid_client", "the client is not registered here; register it again", basic}
	}
	if c.authMethod() == authNone {
		if basic || formHasSecret {
			return nil, &clientError{http.StatusUnauthorized, "invalid_client", "this public client has no secret", basic}
		}
		return c, nil
	}
	if !basic && !formHasSecret {
		return nil, &clientError{http.StatusUnauthorized, "invalid_client", "this confidential client must authenticate", false}
	}
	sum := sha256.Sum256([]byte(secret))
	if len(c.rec.Secret) != sha256.Size || subtle.ConstantTimeCompare(sum[:], c.rec.Secret) != 1 {
		return nil, &clientError{http.StatusUnauthorized, "invalid_client", "the client secret is wrong", basic}
	}
	return c, nil
}

// isBasic reports whether an Authorization header names the Basic scheme
// (case-insensitive, RFC 9110 §11.1), whatever follows.
func isBasic(h string) bool {
	scheme, _, _ := strings.Cut(h, " ")
	return strings.EqualFold(scheme, "Basic")
}
