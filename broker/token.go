package broker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/respond"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/store"
)

// maxTokenBody bounds a token or revocation request.
const maxTokenBody = 64 << 10

// codeRecord is an authorization code: a sealed record valid 60 s, bound
// to the client, redirect URI, PKCE challenge, resource and granted scope
// (OAuth 2.1 §4.1.2). Its single use is claimed in the store ("code:"+ID)
// at redemption, so any replica sharing BROKER_SECRET and the store can
// redeem it once.
type codeRecord struct {
	ID       string   `json:"id"` // random; also the family id of what it issues
	Req      pending  `json:"p"`  // Req.Scopes: requested and consented, the ceiling of refreshes
	Granted  []string `json:"g,omitempty"`
	User     identity `json:"u"`
	AuthTime int64    `json:"at"`
	Upstream string   `json:"ur,omitempty"` // the provider's refresh token
}

// refreshRecord is a refresh token: a sealed record, rotated at every use
// (OAuth 2.1 §4.3.1). Every refresh token of one login shares Family and
// carries its generation: the code's is 1, each refresh's one more. The
// store keeps one key per family ("gen:"+Family) that each generation moves
// on once (store.Move), so a second use is detected and revokes the
// family ("fam:"+Family), and a session costs the store one key however
// often it refreshes. A token without a generation (sealed by a gateway
// before generations, or by one sharing the store) is claimed by its ID
// instead ("rt:"+ID), as it was then, and its successors are a line of
// their own (Line: "gen:"+Family+"/"+ID). Every token still has its own
// ID: a gateway from before generations sharing the store (a replica not
// yet upgraded, or a rollback) claims tokens by it alone.
type refreshRecord struct {
	Family   string   `json:"f"`
	Gen      int64    `json:"g,omitempty"`
	Line     string   `json:"l,omitempty"` // the ID of the token without Gen whose successors these are (spend)
	ID       string   `json:"id"`
	ClientID string   `json:"c"`
	Scopes   []string `json:"sc,omitempty"` // requested at login: the ceiling of every refresh
	Resource string   `json:"rs"`
	User     identity `json:"u"`
	AuthTime int64    `json:"at"`
	End      int64    `json:"end"` // the session's absolute end
	Upstream string   `json:"ur,omitempty"`
}

// tokenResponse is RFC 6749 §5.1.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

// serveToken is the token endpoint (OAuth 2.1 §3.2): authorization_code and
// refresh_token, public and confidential clients, errors in the RFC 6749
// §5.2 form, never cached.
func (b *Broker) serveToken(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	c, form, ok := b.admitClient(w, r, "token requests")
	if !ok {
		return
	}
	switch form.Get("grant_type") {
	case grantCode:
		b.redeemCode(ctx, w, c, form)
	case grantRefresh:
		b.refreshGrant(ctx, w, c, form)
	case "":
		oauthError(w, http.StatusBadRequest, "invalid_request", "grant_type is required")
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "grant_type must be authorization_code or refresh_token")
	}
}

// admitClient opens the token and revocation endpoints: the per-address
// limit, the form, client authentication (RFC 6749 §2.3) and, for a
// confidential client, the per-client limit, in that order, so a flood
// from one address costs no client lookup. what names the requests in a
// 429's description. When it returns false it has answered the request.
func (b *Broker) admitClient(w http.ResponseWriter, r *http.Request, what string) (*client, url.Values, bool) {
	ctx := r.Context()
	if wait, over := limited(ctx, b.ipLimit, b.ipKey(r)); over {
		tooMany(w, wait, "too many "+what+" from this address; retry later")
		return nil, nil, false
	}
	form, ok := readForm(w, r)
	if !ok {
		return nil, nil, false
	}
	c, cerr := b.authenticateClient(ctx, r, form)
	if cerr != nil {
		clientErrorResponse(w, cerr)
		return nil, nil, false
	}
	// A public client "authenticates" with its client_id alone, which is
	// no secret: a hosted client's (claude.ai's metadata URL) is the same
	// for all its users. A budget keyed by it would be one that anyone
	// could spend, one junk request a second keeping every user of that
	// client at 429. So public clients have only the per-address budget;
	// a confidential client proved its secret, and its budget is its own.
	if c.authMethod() == authNone {
		return c, form, true
	}
	if wait, over := limited(ctx, b.clientLimit, "broker-client:"+c.key()); over {
		tooMany(w, wait, "too many "+what+" for this client; retry later")
		return nil, nil, false
	}
	return c, form, true
}

// redeemCode is the authorization_code grant (OAuth 2.1 §4.1.3).
func (b *Broker) redeemCode(ctx context.Context, w http.ResponseWriter, c *client, form url.Values) {
	// RFC 6749 §5.2: a missing parameter is invalid_request, not a code
	// that is wrong (invalid_grant). redirect_uri is required because the
	// authorization request always has one here (§4.1.3).
	for _, k := range []string{"code", "redirect_uri", "code_verifier"} {
		if !form.Has(k) {
			oauthError(w, http.StatusBadRequest, "invalid_request", k+" is required")
			return
		}
	}
	var rec codeRecord
	if err := b.seal.open(purposeCode, form.Get("code"), &rec); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_grant", "the code is "+err.Error())
		return
	}
	switch {
	case rec.Req.Client != clientBinding(c.id):
		oauthError(w, http.StatusBadRequest, "invalid_grant", "the code was issued to another client")
		return
	case form.Get("redirect_uri") != rec.Req.Redirect: // RFC 6749 §4.1.3
		oauthError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri does not match the authorization request")
		return
	case !pkceMatches(form.Get("code_verifier"), rec.Req.Challenge): // RFC 7636 §4.6
		oauthError(w, http.StatusBadRequest, "invalid_grant", "code_verifier does not match the code_challenge")
		return
	case rec.Req.Resource != b.resource:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "the code was issued for another resource")
		return
	}
	if !b.resourceOK(w, form, rec.Req.Resource) {
		return
	}
	end := b.sessionEnd(rec.AuthTime, rec.Upstream != "")
	first, err := b.store.Claim(ctx, "code:"+rec.ID, codeTTL+b.skew+time.Second)
	if err != nil {
		b.log.Error("claim code", "error", err)
		unavailable(w, "the authorization server cannot redeem codes right now")
		return
	}
	if !first {
		// OAuth 2.1 §4.1.3: deny, and revoke what the first use issued
		// (its family is named after the code).
		if err := b.store.Revoke(ctx, "fam:"+rec.ID, b.until(end)); err != nil {
			b.log.Error("revoke the family of a reused code", "error", err)
		}
		b.log.Warn("authorization code used twice; what it issued is revoked", "client", c.key(), "sub", rec.User.Sub)
		oauthError(w, http.StatusBadRequest, "invalid_grant", "the code was already used")
		return
	}
	b.issue(w, c, &refreshRecord{
		Family: rec.ID, Gen: 1, ClientID: c.id, Scopes: rec.Req.Scopes, Resource: rec.Req.Resource,
		User: rec.User, AuthTime: rec.AuthTime, End: end.Unix(), Upstream: rec.Upstream,
	}, rec.Granted)
}

// refreshGrant is the refresh_token grant (OAuth 2.1 §4.3): checked against
// the family's revocation, refreshed at the provider when it gave a
// refresh token, the allow-list asked again, then rotated.
func (b *Broker) refreshGrant(ctx context.Context, w http.ResponseWriter, c *client, form url.Values) {
	rec, scopes, ok := b.openRefresh(w, c, form)
	if !ok {
		return
	}
	family := "fam:" + rec.Family
	end := time.Unix(rec.End, 0)
	revoked, err := b.store.Revoked(ctx, family)
	if err != nil {
		b.log.Error("check family revocation", "error", err)
		unavailable(w, "the authorization server cannot refresh right now")
		return
	}
	if revoked {
		oauthError(w, http.StatusBadRequest, "invalid_grant", "the session was revoked; sign in again")
		return
	}
	endFamily := func(why, desc string) {
		if err := b.store.Revoke(ctx, family, b.until(end)); err != nil {
			b.log.Error("revoke family", "error", err)
		}
		b.log.Info("session ended at refresh", "reason", why, "sub", rec.User.Sub, "client", c.key())
		oauthError(w, http.StatusBadRequest, "invalid_grant", desc)
	}
	if rec.Upstream != "" {
		e, err := b.endpoints()
		if err != nil {
			b.log.Warn("provider not ready for a refresh", "error", err)
			unavailable(w, "the identity provider is not reachable; try again")
			return
		}
		login, err := b.refresh(ctx, e, rec.Upstream, rec.User)
		if errors.Is(err, errRefused) {
			// Decided the same whether or not the client still waits for
			// the answer: deciding when it hangs up, before a concurrent
			// refresh moved the family on, would end the session that
			// refresh keeps (justUsed).
			ctx = context.WithoutCancel(ctx)
		}
		switch {
		case errors.Is(err, errRefused) && b.justUsed(ctx, rec, end):
			// A concurrent refresh with this token rotated the provider's
			// token first: the provider's refusal says nothing of a leak.
			oauthError(w, http.StatusBadRequest, "invalid_grant", "the refresh token was just used; use the one that refresh returned")
			return
		case errors.Is(err, errRefused):
			endFamily("provider refused", "the identity provider no longer accepts this session; sign in again")
			return
		case err != nil:
			// Transient: the refresh token was not claimed, so the client
			// may retry it.
			b.log.Warn("refresh at the provider failed", "error", err)
			unavailable(w, "the identity provider is not reachable; try again")
			return
		}
		rec.User, rec.Upstream = login.id, login.refresh
	}
	user := rec.User.forProvider()
	if b.allow != nil && !b.allow(user) {
		endFamily("not allowed", "this account is no longer allowed here")
		return
	}
	granted := b.grantScopes(user, scopes)
	mv, err := b.spend(ctx, rec, end)
	if err != nil {
		b.log.Error("claim refresh token", "error", err)
		unavailable(w, "the authorization server cannot refresh right now")
		return
	}
	if !mv.Advanced {
		if !b.withinGrace(mv.Since) {
			// OAuth 2.1 §4.3.1, RFC 9700 §4.14.2: a rotated refresh token
			// used again means it leaked, or the client lost an answer;
			// either way the family ends.
			endFamily("refresh token reused", "the refresh token was already used; sign in again")
			return
		}
		// A concurrent refresh or a retry after a lost answer: it rotates to
		// a sibling of the generation still in line (mv.Current), however
		// far the session has rotated since. The family stays one line:
		// whichever sibling is used first moves it on, the others are
		// superseded then, and any reuse after the window ends the session.
		b.log.Info("refresh token used again within the grace window", "sub", rec.User.Sub, "client", c.key(),
			"since_first_use", mv.Since.Round(time.Millisecond))
	}
	if rec.Gen == 0 {
		// A token without a generation, sealed before generations or by
		// an older gateway sharing the store. The family's key may be
		// further on (that gateway rotated a token of it without moving
		// the key), so its generations are a line of their own, keyed by
		// its ID: starting at 1 on the family's key, they would read as
		// generations the family left, and the next refresh as a reuse.
		rec.Line, mv.Current = rec.ID, 1
	}
	rec.Gen = mv.Current
	b.issue(w, c, rec, granted)
}

// openRefresh opens the refresh token of a refresh_token request and
// checks it against the client, the resource and the scope asked for. It
// answers the error itself when it returns false.
func (b *Broker) openRefresh(w http.ResponseWriter, c *client, form url.Values) (*refreshRecord, []string, bool) {
	if c.rec.NoRefresh {
		oauthError(w, http.StatusBadRequest, "unauthorized_client", "this client did not register the refresh_token grant")
		return nil, nil, false
	}
	if !form.Has("refresh_token") { // RFC 6749 §5.2: missing, not invalid
		oauthError(w, http.StatusBadRequest, "invalid_request", "refresh_token is required")
		return nil, nil, false
	}
	rec := new(refreshRecord)
	if err := b.seal.open(purposeRefresh, form.Get("refresh_token"), rec); err != nil {
		desc := "the refresh token is not valid"
		if errors.Is(err, errSealedExpired) {
			desc = "the session has ended; sign in again"
		}
		oauthError(w, http.StatusBadRequest, "invalid_grant", desc)
		return nil, nil, false
	}
	switch {
	case rec.ClientID != c.id:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "the refresh token was issued to another client")
		return nil, nil, false
	case rec.Resource != b.resource:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "the refresh token was issued for another resource")
		return nil, nil, false
	}
	if !b.resourceOK(w, form, rec.Resource) {
		return nil, nil, false
	}
	scopes := rec.Scopes
	// RFC 6749 §6: narrower, never wider; none asked for (the parameter
	// omitted, empty or only spaces) is what was requested at login.
	if asked := strings.Fields(form.Get("scope")); len(asked) > 0 {
		scopes = asked
		for _, s := range scopes {
			if !slices.Contains(rec.Scopes, s) {
				oauthError(w, http.StatusBadRequest, "invalid_scope", "scope "+s+" was not requested at login")
				return nil, nil, false
			}
		}
	}
	return rec, scopes, true
}

// spend records the use of refresh token rec: it moves its family's line
// on from rec's generation (genKey), or claims a token without one by its
// ID (mv.Current is then meaningless).
func (b *Broker) spend(ctx context.Context, rec *refreshRecord, end time.Time) (store.Move, error) {
	if rec.Gen == 0 {
		first, since, err := b.store.ClaimSince(ctx, "rt:"+rec.ID, b.until(end))
		return store.Move{Advanced: first, Since: since}, err
	}
	return b.store.Advance(ctx, genKey(rec), rec.Gen, b.until(end))
}

// spent reports whether refresh token rec was used already, without
// using it.
func (b *Broker) spent(ctx context.Context, rec *refreshRecord) (bool, error) {
	if rec.Gen == 0 {
		return b.store.Revoked(ctx, "rt:"+rec.ID) // a claim counts
	}
	cur, err := b.store.Generation(ctx, genKey(rec))
	return cur > rec.Gen, err
}

// genKey is the store's key of rec's line: "gen:"+Family, or
// "gen:"+Family+"/"+Line for the successors of a token without a
// generation.
func genKey(rec *refreshRecord) string {
	if rec.Line != "" {
		return "gen:" + rec.Family + "/" + rec.Line
	}
	return "gen:" + rec.Family
}

// withinGrace reports whether a refresh token first used since ago may be
// used again (RefreshReuseGrace; none when it is zero).
func (b *Broker) withinGrace(since time.Duration) bool {
	return b.reuseGrace > 0 && since <= b.reuseGrace
}

// justUsed reports whether refresh token rec, which the provider has just
// refused, was superseded within the reuse grace. A concurrent refresh
// with the same token may have won at the provider (which rotates its own
// tokens) and not yet moved the family on: it waits for that, at most
// refusalWait, before it spends the token itself. A token no one else
// spends is spent anyway (the provider refused it), and the caller ends
// the family. ctx must not end with the request (refreshGrant).
func (b *Broker) justUsed(ctx context.Context, rec *refreshRecord, end time.Time) bool {
	if b.reuseGrace == 0 {
		return false // strict: no need to ask the store
	}
	deadline := time.Now().Add(refusalWait)
	for delay := 5 * time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		if done, err := b.spent(ctx, rec); done || err != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(delay)
	}
	mv, err := b.spend(ctx, rec, end)
	return err == nil && !mv.Advanced && b.withinGrace(mv.Since)
}

// refusalWait bounds how long a refresh the provider refused waits for a
// concurrent one with the same token to move the family on (justUsed):
// that one has only the allow-list and one store round trip left to do.
const refusalWait = 2 * time.Second

// issue answers a new access token and, unless the client registered
// without the refresh_token grant, the next refresh token of rt's family.
func (b *Broker) issue(w http.ResponseWriter, c *client, rt *refreshRecord, scopes []string) {
	now := b.now()
	end := time.Unix(rt.End, 0)
	at, exp, err := b.mintAccess(c.id, &rt.User, scopes, rt.Family, rt.AuthTime, now, end)
	if err != nil {
		b.log.Error("mint access token", "error", err)
		oauthError(w, http.StatusInternalServerError, "server_error", "")
		return
	}
	resp := tokenResponse{
		AccessToken: at,
		TokenType:   "Bearer",
		ExpiresIn:   max(exp.Unix()-now.Unix(), 0),
		Scope:       strings.Join(scopes, " "),
	}
	if !c.rec.NoRefresh {
		// Not needed here (the generation names the token), but an older
		// gateway claims "rt:"+ID: without one every session's token
		// would be the same key there, and all but the first a reuse.
		rt.ID = rand.Text()
		if resp.RefreshToken, err = b.seal.seal(purposeRefresh, end, rt); err != nil {
			b.log.Error("seal refresh token", "error", err)
			oauthError(w, http.StatusInternalServerError, "server_error", "")
			return
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// sessionEnd is the absolute end of a session that began at authTime:
// SessionTTL later, or at most 24 h when the provider gave no refresh
// token to re-check the user with.
func (b *Broker) sessionEnd(authTime int64, upstreamRefresh bool) time.Time {
	ttl := b.sessionTTL
	if !upstreamRefresh {
		ttl = min(ttl, maxSessionWithoutUpstreamRefresh)
	}
	return time.Unix(authTime, 0).Add(ttl)
}

// until is a store TTL reaching end (plus the clock skew between replicas).
func (b *Broker) until(end time.Time) time.Duration {
	return max(end.Sub(b.now())+b.skew, time.Second)
}

// resourceOK checks an optional resource parameter (RFC 8707 §2.2) and
// answers invalid_target when it names another resource.
func (b *Broker) resourceOK(w http.ResponseWriter, form url.Values, want string) bool {
	if rs, ok := form["resource"]; ok && rs[0] != want {
		oauthError(w, http.StatusBadRequest, "invalid_target", "this authorization server issues tokens only for "+want)
		return false
	}
	return true
}

// pkceMatches checks a code_verifier (43 to 128 unreserved characters,
// RFC 7636 §4.1) against an S256 challenge (§4.6).
func pkceMatches(verifier, challenge string) bool {
	if len(verifier) < 43 || len(verifier) > 128 {
		return false
	}
	for i := 0; i < len(verifier); i++ {
		if c := verifier[i]; !isBase64URL(c) && c != '.' && c != '~' {
			return false
		}
	}
	sum := sha256.Sum256([]byte(verifier))
	return subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(challenge)) == 1
}

// readForm reads a token or revocation request's form: POST body only
// (credentials never in a URL), application/x-www-form-urlencoded, each
// parameter at most once, and one sent without a value as omitted (RFC
// 6749 §3.2).
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, bool) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the request body must be application/x-www-form-urlencoded")
		return nil, false
	}
	if r.URL.RawQuery != "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "parameters belong in the request body, not the URL")
		return nil, false
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenBody)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the request body could not be read")
		return nil, false
	}
	for k, v := range withoutEmpty(r.PostForm) {
		if len(v) > 1 {
			oauthError(w, http.StatusBadRequest, "invalid_request", "parameter "+k+" is given more than once")
			return nil, false
		}
	}
	return r.PostForm, true
}

// clientErrorResponse answers a failed client authentication (RFC 6749
// §5.2): 401 with a Basic challenge when the client tried HTTP Basic.
func clientErrorResponse(w http.ResponseWriter, e *clientError) {
	if e.basic && e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="oauth", charset="UTF-8"`)
	}
	if e.status == http.StatusServiceUnavailable { // a metadata document could not be fetched
		w.Header().Set("Retry-After", respond.RetryAfter(cimdFailureTTL))
	}
	oauthError(w, e.status, e.code, e.description)
}
