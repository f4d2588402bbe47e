package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
)

// maxIdentityBytes bounds an identity as codes and refresh tokens carry it
// (a code travels in a URL): about a hundred groups of ordinary length.
// A larger one is refused at login rather than cut, since cutting groups
// could drop one a policy denies.
const maxIdentityBytes = 4 << 10

// identity is the user as the provider described them at the last login or
// refresh.
type identity struct {
	Sub        string   `json:"s"`
	Email      string   `json:"e,omitempty"`
	Unverified bool     `json:"eu,omitempty"` // email_verified was false
	Groups     []string `json:"g,omitempty"`
}

// who names the user on a page.
func (id *identity) who() string {
	if id.Email != "" {
		return id.Email
	}
	return id.Sub
}

// forProvider is the identity as the allow-list and the scope hook see it.
func (id *identity) forProvider() *provider.Identity {
	return &provider.Identity{
		Subject:       id.Sub,
		Email:         id.Email,
		EmailVerified: !id.Unverified,
		Groups:        slices.Clone(id.Groups),
	}
}

// checkSize refuses an identity too large to carry.
func (id *identity) checkSize() error {
	b, err := json.Marshal(id)
	if err != nil {
		return err
	}
	if len(b) > maxIdentityBytes {
		return fmt.Errorf("the account's identity is %d bytes (%d groups), more than the %d the gateway carries", len(b), len(id.Groups), maxIdentityBytes)
	}
	return nil
}

// readClaims fills id from an ID token's or userinfo's claims (OpenID
// Connect Core 1.0 §5.1): sub, email, email_verified (a boolean, or the
// strings "true"/"false" some providers send) and the groups claim (a
// string or an array of strings). Claims absent from c leave id's alone;
// a present claim of the wrong type is an error.
func readClaims(c map[string]json.RawMessage, groupsClaim string, id *identity) (groupsSeen bool, err error) {
	if r, ok := c["sub"]; ok {
		if json.Unmarshal(r, &id.Sub) != nil || id.Sub == "" {
			return false, errors.New("sub is not a non-empty string")
		}
	}
	if r, ok := c["email"]; ok && !isNull(r) {
		if json.Unmarshal(r, &id.Email) != nil {
			return false, errors.New("email is not a string")
		}
		id.Unverified = false
	}
	if r, ok := c["email_verified"]; ok && !isNull(r) {
		var v bool
		var s string
		switch {
		case json.Unmarshal(r, &v) == nil:
			id.Unverified = !v
		case json.Unmarshal(r, &s) == nil:
			id.Unverified = strings.EqualFold(s, "false")
		default:
			return false, errors.New("email_verified is not a boolean")
		}
	}
	if r, ok := c[groupsClaim]; ok && !isNull(r) {
		var one string
		var many []string
		switch {
		case json.Unmarshal(r, &one) == nil:
			id.Groups = []string{one}
		case json.Unmarshal(r, &many) == nil:
			id.Groups = many
		default:
			return false, fmt.Errorf("the %s claim is not a string or an array of strings", groupsClaim)
		}
		groupsSeen = true
	}
	return groupsSeen, nil
}

func isNull(r json.RawMessage) bool { return len(r) == 0 || string(r) == "null" }

// tokenIdentity is what Verify returns for one of the broker's access
// tokens.
func tokenIdentity(c *atClaims) *provider.Identity {
	return &provider.Identity{
		Subject:       c.Sub,
		Email:         c.Email,
		EmailVerified: c.EmailVerified == nil || *c.EmailVerified,
		Groups:        c.Groups,
		Scopes:        strings.Fields(c.Scope),
		Audience:      []string{c.Aud},
		ClientID:      c.ClientID,
		Expiry:        time.Unix(c.Exp, 0),
	}
}
