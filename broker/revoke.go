package broker

import (
	"net/http"
	"strings"
	"time"
)

// serveRevoke is token revocation (RFC 7009 §2). A refresh token revokes
// its whole family, so every refresh and access token of that login stops
// working; an access token is refused (by its jti) until it expires. A
// token the broker does not recognise is answered 200 like a revoked one
// (§2.2); one issued to another client is refused (§2.1).
func (b *Broker) serveRevoke(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	c, form, ok := b.admitClient(w, r, "revocation requests")
	if !ok {
		return
	}
	tok := form.Get("token")
	if tok == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "token is required")
		return
	}
	// The hint (§2.1) is not needed: a JWT has two dots, a sealed refresh
	// token none.
	var key, owner string
	var ttl time.Duration
	if strings.Count(tok, ".") == 2 {
		at, err := b.parseAccess(tok)
		if err != nil {
			writeRevoked(w)
			return
		}
		if time.Unix(at.Exp, 0).Add(b.skew).Before(b.now()) {
			writeRevoked(w) // expired: nothing left to revoke
			return
		}
		key, owner, ttl = "jti:"+at.Jti, at.ClientID, b.until(time.Unix(at.Exp, 0))
	} else {
		var rec refreshRecord
		if err := b.seal.open(purposeRefresh, tok, &rec); err != nil {
			writeRevoked(w)
			return
		}
		key, owner, ttl = "fam:"+rec.Family, rec.ClientID, b.until(time.Unix(rec.End, 0))
	}
	if owner != c.id {
		oauthError(w, http.StatusBadRequest, "unauthorized_client", "the token was issued to another client")
		return
	}
	if err := b.store.Revoke(ctx, key, ttl); err != nil {
		b.log.Error("revoke token", "error", err)
		unavailable(w, "the token could not be revoked right now; retry")
		return
	}
	b.log.Info("token revoked", "kind", strings.SplitN(key, ":", 2)[0], "client", c.key())
	writeRevoked(w)
}

// writeRevoked is the answer to a revocation (RFC 7009 §2.2): 200, no body
// needed.
func writeRevoked(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
}
