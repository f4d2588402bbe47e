package gate

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"slices"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/mcp"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/policy"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/respond"
)

// call is what the gate read of a request's JSON-RPC body, for the answer
// and the audit line.
type call struct {
	info    mcpInfo         // for the audit line
	lists   mcp.List        // with a policy: the listings asked for, filtered on the way back
	subject *policy.Subject // with a policy: the caller, for that filter
}

// hasMCPHeaders reports whether a request carries either header of the
// 2026-07-28 transport that mirror the body.
func hasMCPHeaders(h http.Header) bool {
	return len(h[mcp.HeaderMethod]) > 0 || len(h[mcp.HeaderName]) > 0
}

// decide applies the policy to r: it reads the body whole (up to
// MaxBodyBytes) and strictly, checks Mcp-Method and Mcp-Name against it,
// decides its calls for the caller, and puts the same bytes back for the
// upstream. When it returns false it has answered, and nothing went
// upstream: 413 for a body over the bound, 400 for one that cannot be read
// strictly (a server in another language could read another call than the
// one decided), 400 with JSON-RPC -32020 for headers that disagree, 403
// for a refused call.
func (g *gate) decide(w *recorder, r *http.Request, id *provider.Identity, c *call) bool {
	var raw []byte
	if r.Body != nil && r.Body != http.NoBody {
		b, err := mcp.ReadBody(r.Body, g.maxBodyBytes)
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge) || errors.Is(err, mcp.ErrTooLarge):
			g.reject(w, r, http.StatusRequestEntityTooLarge, RejectTooLarge, "body too large", id.Subject, bodyTooLarge)
			return false
		case err != nil: // the client went away mid-body
			g.badBody(w, r, id, err)
			return false
		}
		raw = b
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	var body mcp.Body
	if len(raw) > 0 {
		var err error
		if body, err = mcp.Parse(raw); err != nil {
			g.badBody(w, r, id, err)
			return false
		}
	}
	if err := mcp.CheckHeaders(r.Header, body); err != nil {
		g.headerMismatch(w, r, id, body, err)
		return false
	}
	if g.auditPool != nil && g.log.IsInfo() {
		c.info = auditInfo(body, nil)
	}
	c.subject = policy.SubjectOf(id)
	for _, m := range body.Messages {
		c.lists |= mcp.ListOf(m.Method)
	}

	d := g.policy.Check(c.subject, body)
	if d.Kind == 0 {
		return true // no call to decide
	}
	w.decided, w.rule, w.decision = true, int32(d.Rule), d.Outcome
	switch d.Outcome {
	case policy.StepUp:
		// RFC 6750 §3.1 and MCP step-up authorization: one challenge
		// naming every scope the call (or the batch) needs.
		w.Header()["Www-Authenticate"] = []string{g.chal.stepUp(d.Scopes)}
		w.class, w.reason = ClassRejected, RejectInsufficientScope
		respond.JSON(w, http.StatusForbidden, bodyInsufficientScope)
		g.audit.rejected(http.StatusForbidden, "policy needs more scopes", id.Subject, w, r, decisionArgs(d, messageAt(body, d.Index).Method)...)
		return false
	case policy.Deny:
		w.class, w.reason = ClassRejected, RejectPolicyDenied
		m := messageAt(body, d.Index)
		mcp.WriteError(w, http.StatusForbidden, m.ID, mcp.CodeForbidden, denial(d, m.Method))
		g.audit.rejected(http.StatusForbidden, "policy denies the call", id.Subject, w, r, decisionArgs(d, m.Method)...)
		return false
	}
	return true
}

// badBody answers a body the policy cannot decide on: 400 with a JSON-RPC
// error (parse error for one that is not JSON, invalid request for the
// rest), naming what is wrong but no value from it.
func (g *gate) badBody(w *recorder, r *http.Request, id *provider.Identity, err error) {
	w.class, w.reason = ClassRejected, RejectBadBody
	code, msg := mcp.CodeInvalidRequest, "Invalid Request: the body could not be read"
	switch {
	case errors.Is(err, mcp.ErrSyntax):
		code, msg = mcp.CodeParseError, "Parse error: the body is not JSON (RFC 8259)"
	case errors.Is(err, mcp.ErrAmbiguous):
		msg = "Invalid Request: a key that decides the call appears twice or in another spelling"
	case errors.Is(err, mcp.ErrInvalid):
		msg = "Invalid Request: a method that is not a string, or a call without a string name or uri (or, for completion/complete, a ref of type ref/prompt or ref/resource)"
	}
	mcp.WriteError(w, http.StatusBadRequest, "", code, msg)
	g.audit.rejected(http.StatusBadRequest, "body not read strictly", id.Subject, w, r, "error", bounded(err.Error()))
}

// headerMismatch answers headers that disagree with the body, or a body
// that could not be read strictly enough to tell (2026-07-28 transport,
// "Server Validation"): 400 with the JSON-RPC error -32020.
func (g *gate) headerMismatch(w *recorder, r *http.Request, id *provider.Identity, body mcp.Body, err error) {
	w.class, w.reason = ClassRejected, RejectHeaderMismatch
	if errors.Is(err, mcp.ErrHeaderMismatch) {
		mcp.WriteHeaderMismatch(w, body, err)
	} else {
		mcp.WriteError(w, http.StatusBadRequest, idOf(body, 0), mcp.CodeHeaderMismatch,
			"Header mismatch: the body cannot be read strictly, so the headers cannot be checked against it")
	}
	g.audit.rejected(http.StatusBadRequest, "mcp headers disagree with the body", id.Subject, w, r, "error", bounded(err.Error()))
}

// idOf returns the JSON-RPC id of the message at index of body (as written,
// to be echoed), or "" (null).
func idOf(body mcp.Body, index int) string { return messageAt(body, index).ID }

// messageAt returns the message at index of body; the zero Message when
// there is none.
func messageAt(body mcp.Body, index int) mcp.Message {
	for _, m := range body.Messages {
		if m.Index == index {
			return m
		}
	}
	return mcp.Message{}
}

// denial is the JSON-RPC error message of a denied call of method: what was
// refused, named as the request named it.
func denial(d policy.Decision, method string) string {
	var what string
	switch {
	case d.Kind == policy.Tool:
		what = "call the tool"
	case method == mcp.MethodCompletionComplete && d.Kind == policy.Resource:
		what = "complete the arguments of the resource template"
	case method == mcp.MethodCompletionComplete:
		what = "complete the arguments of the prompt"
	case method == mcp.MethodResourcesSubscribe:
		what = "subscribe to the resource"
	case method == mcp.MethodResourcesUnsubscribe:
		what = "unsubscribe from the resource"
	case d.Kind == policy.Resource:
		what = "read the resource"
	default:
		what = "get the prompt"
	}
	msg := "Forbidden: the gateway's policy does not let you " + what + ` "` + bounded(d.Name) + `"`
	if d.Rule == 0 {
		msg += " (a URI with dot segments or encoded slashes could name another resource)"
	}
	return msg
}

// decisionArgs are the audit keys of a refused call of method: the rule
// (its number, a bounded label), the method, and what the call named.
func decisionArgs(d policy.Decision, method string) []any {
	key := "mcp_tool"
	switch d.Kind {
	case policy.Resource:
		key = "mcp_uri"
	case policy.Prompt:
		key = "mcp_prompt"
	}
	return []any{"rule", d.RuleLabel(), "decision", d.Outcome.String(), "mcp_method", bounded(method), key, bounded(d.Name)}
}

// withoutOfflineAccess returns scopes without offline_access, which a
// resource server's challenges and metadata do not name (MCP 2026-07-28
// authorization, "Scope Selection"): whether a client may refresh is the
// authorization server's business.
func withoutOfflineAccess(scopes []string) []string {
	return slices.DeleteFunc(slices.Clone(scopes), func(s string) bool { return s == "offline_access" })
}

// listingProxy is the proxy for a request that asks for listings (lists)
// under a policy: its answer loses the entries s may not use
// (listing.go). It is g.proxy with its own ModifyResponse, so what the
// request asked for travels with it rather than in its context. The
// request asks for an unencoded answer, which is all the filter reads.
func (g *gate) listingProxy(w *recorder, r *http.Request, lists mcp.List, s *policy.Subject) *httputil.ReverseProxy {
	delete(r.Header, "Accept-Encoding")
	p := *g.proxy
	p.ModifyResponse = func(resp *http.Response) error {
		if err := g.modifyResponse(resp); err != nil {
			return err
		}
		return g.filterListing(resp, lists, s, w.id)
	}
	return &p
}
