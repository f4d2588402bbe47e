package policy

import (
	"slices"
	"strings"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
)

// Grants is BROKER_SCOPE_GRANTS: which users broker mode's authorization
// server grants which scopes when they log in (and again at every refresh),
// so that the scopes MCP_POLICY asks for go only to the users who qualify:
//
//	files:write=group:editors; deploy=group:ops|sub:2f1c0a; audit:read=any
//
// Rules are separated by ";", each SCOPE=REQUIREMENTS split at its last
// "=". SCOPE is a scope-token (RFC 6749 §3.3) and has one rule at most.
// REQUIREMENTS is "any" (everyone the allow-list admits), or sets of sub:X,
// email:X and group:X, read and decided as in MCP_POLICY: "," joins
// requirements that must all hold, "|" separates sets of which one must
// hold; email: holds only for a verified email. A grant cannot require a
// scope: it decides what the scopes are.
//
// The zero value and nil have no rules.
type Grants struct {
	rules []grantRule
}

type grantRule struct {
	scope string
	sets  []set // nil: any
}

// ParseGrants reads BROKER_SCOPE_GRANTS. Empty (or only white space) has no
// rules. Errors are *ParseError, with the same caret rendering as Parse's.
func ParseGrants(s string) (*Grants, error) {
	g := &Grants{}
	if err := eachRule(s, true, func(text string) *ParseError {
		r, err := parseGrant(text)
		if err != nil {
			return err
		}
		if g.rule(r.scope) != nil {
			return &ParseError{Column: 1, Reason: "a second rule for this scope (give each scope one rule; use | for alternatives)"}
		}
		g.rules = append(g.rules, r)
		return nil
	}); err != nil {
		return nil, err
	}
	return g, nil
}

// parseGrant reads one rule, SCOPE=REQUIREMENTS. The error has its Column
// and Reason.
func parseGrant(text string) (grantRule, *ParseError) {
	eq := strings.LastIndexByte(text, '=')
	if eq < 0 {
		return grantRule{}, &ParseError{Column: len(text) + 1, Reason: `no "=" (want SCOPE=REQUIREMENTS)`}
	}
	scope, off := trimmed(text, 0, eq)
	if !validScope(scope) {
		return grantRule{}, &ParseError{Column: off + 1, Reason: scopeReason}
	}
	reqs, off := trimmed(text, eq+1, len(text))
	switch reqs {
	case "":
		return grantRule{}, &ParseError{Column: eq + 2, Reason: `empty requirements (want any, or sub:, email:, group: joined by "," and "|")`}
	case "any":
		return grantRule{scope: scope}, nil
	case "deny":
		return grantRule{}, &ParseError{Column: off + 1, Reason: "deny grants nothing: leave the rule out (a scope MCP_POLICY names is granted only by a rule)"}
	}
	sets, err := parseSets(reqs, off, false)
	return grantRule{scope: scope, sets: sets}, err
}

func (g *Grants) rule(scope string) *grantRule {
	if g == nil {
		return nil
	}
	for i := range g.rules {
		if g.rules[i].scope == scope {
			return &g.rules[i]
		}
	}
	return nil
}

// NamesGroups reports whether a grant requires a group.
func (g *Grants) NamesGroups() bool {
	if g == nil {
		return false
	}
	for _, r := range g.rules {
		if setsNameGroups(r.sets) {
			return true
		}
	}
	return false
}

// Scopes returns the scopes that have a rule, in the order written.
func (g *Grants) Scopes() []string {
	if g == nil {
		return nil
	}
	out := make([]string, len(g.rules))
	for i, r := range g.rules {
		out[i] = r.scope
	}
	return out
}

// String returns the grants in a canonical form that ParseGrants reads back
// to the same rules: "; " between rules.
func (g *Grants) String() string {
	if g == nil {
		return ""
	}
	var b strings.Builder
	for i, r := range g.rules {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(r.scope)
		b.WriteByte('=')
		if r.sets == nil {
			b.WriteString("any")
		}
		writeSets(&b, r.sets)
	}
	return b.String()
}

// Grant returns which of the requested scopes s is granted, in the order
// requested: a scope with a rule when one of its sets holds for s (or the
// rule is any); a scope listed in guarded (the scopes MCP_POLICY names:
// Policy.Scopes) without a rule, never, so that forgetting a grant keeps a
// scope from everyone rather than giving it to all; any other scope
// (openid, profile, ...), as requested.
func (g *Grants) Grant(s *Subject, requested, guarded []string) []string {
	if s == nil {
		s = &Subject{}
	}
	var out []string
	for _, scope := range requested {
		r := g.rule(scope)
		switch {
		case r == nil && slices.Contains(guarded, scope):
		case r == nil || r.sets == nil || grantHolds(r.sets, s):
			out = append(out, scope)
		}
	}
	return out
}

// grantHolds reports whether one of sets holds whole for s (sets of a
// grant hold no scope requirement).
func grantHolds(sets []set, s *Subject) bool {
	for _, st := range sets {
		all := true
		for _, q := range st.reqs {
			if !holds(q, s) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// Hook returns the broker's GrantScopes hook (broker.Config.GrantScopes):
// Grant for the user the provider logged in, with guarded the scopes
// MCP_POLICY names (Policy.Scopes). It keeps its own copy of guarded.
func (g *Grants) Hook(guarded []string) func(id *provider.Identity, requested []string) []string {
	guarded = slices.Clone(guarded)
	return func(id *provider.Identity, requested []string) []string {
		return g.Grant(SubjectOf(id), requested, guarded)
	}
}

// SubjectOf is the Subject a verified identity makes: its sub, email (and
// whether it is verified), groups and scopes. Nil makes a Subject with
// nothing.
func SubjectOf(id *provider.Identity) *Subject {
	if id == nil {
		return &Subject{}
	}
	return &Subject{Sub: id.Subject, Email: id.Email, EmailVerified: id.EmailVerified, Groups: id.Groups, Scopes: id.Scopes}
}
