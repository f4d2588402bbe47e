// Package policy owns MCP_POLICY, the per-tool authorization rules: it
// parses and validates them once, decides for a caller whether a call may
// go on (or must first get more scopes: step-up authorization): a
// tools/call by the tool rules; a resources/read, resources/subscribe or
// resources/unsubscribe by the resource rules; a prompts/get by the prompt
// rules; a completion/complete by the prompt or resource rules, as its ref
// names a prompt or a resource. It names the scopes the rules ask for,
// and filters the tools/list, resources/list and prompts/list responses a
// caller sees. It also reads BROKER_SCOPE_GRANTS (Grants, ParseGrants): which
// users broker mode grants the scopes the rules ask for.
//
// A policy is a list of rules separated by ";", each KIND:PATTERN=REQUIREMENTS
// split at its last "=":
//
//	tool:delete_*=group:admins; tool:write_file=scope:files:write;
//	tool:deploy=group:ops,scope:deploy; resource:file:///secrets/*=deny; tool:*=any
//
// KIND is tool, resource or prompt. In PATTERN "*" matches any run of
// characters, "/" included, and %3B, %3D, %2A, %25 stand for a literal ";",
// "=", "*", "%" (no other escape exists). REQUIREMENTS is "any", "deny", or
// sets of sub:X, email:X, group:X, scope:X, where "," joins requirements
// that must all hold and "|" separates sets of which one must hold. The
// first rule whose kind and pattern match the call decides; a call no rule
// matches is allowed.
//
// It does not read bodies or headers (package mcp does), verify tokens, or
// write answers: the gate turns a Decision into a response.
package policy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/mcp"
)

// Kind is what a rule, and a call, acts on.
type Kind uint8

// The kinds of call a policy decides.
const (
	// Tool: tools/call, by params.name.
	Tool Kind = iota + 1
	// Resource: resources/read, resources/subscribe and
	// resources/unsubscribe, by params.uri; completion/complete of a
	// "ref/resource", by params.ref.uri (a URI template, decided as a URI).
	Resource
	// Prompt: prompts/get, by params.name; completion/complete of a
	// "ref/prompt", by params.ref.name.
	Prompt
)

func (k Kind) String() string {
	switch k {
	case Tool:
		return "tool"
	case Resource:
		return "resource"
	case Prompt:
		return "prompt"
	}
	return "none"
}

// KindOf returns the kind of call a JSON-RPC message makes; 0 for methods
// a policy does not decide. A completion/complete is of the kind its ref
// names: it runs that prompt's (that resource template's) completer, and
// its values are what a prompts/get (resources/read) could reveal.
func KindOf(m mcp.Message) Kind {
	switch m.Method {
	case mcp.MethodToolsCall:
		return Tool
	case mcp.MethodResourcesRead, mcp.MethodResourcesSubscribe, mcp.MethodResourcesUnsubscribe:
		return Resource
	case mcp.MethodPromptsGet:
		return Prompt
	case mcp.MethodCompletionComplete:
		switch m.Ref {
		case mcp.RefPrompt:
			return Prompt
		case mcp.RefResource:
			return Resource
		}
	}
	return 0
}

// Policy is a parsed MCP_POLICY. The zero value and nil have no rules and
// allow every call.
type Policy struct {
	rules     []rule
	scopes    []string // every scope the rules name, sorted, once each
	resources bool     // a rule is of kind Resource
}

type rule struct {
	kind    Kind
	pattern []string // the literal runs between the stars of the pattern
	deny    bool     // "deny"
	sets    []set    // nil with !deny: "any"
}

// set is requirements that must all hold.
type set struct {
	reqs   []req
	scopes []string // the scope requirements, sorted, once each: what step-up asks for
}

type reqType uint8

const (
	reqSub reqType = iota + 1
	reqEmail
	reqGroup
	reqScope
)

type req struct {
	typ   reqType
	value string
}

// ParseError is a rule that cannot be read: which rule (counting from 1),
// where in it (Column, counting bytes from 1 in Text), and why.
type ParseError struct {
	Rule   int
	Column int
	Text   string // the rule as written, without surrounding white space
	Reason string

	grants bool // a rule of ParseGrants
}

func (e *ParseError) Error() string {
	what := "policy"
	if e.grants {
		what = "scope grants"
	}
	return fmt.Sprintf("parse %s: rule %d, column %d: %s: %q", what, e.Rule, e.Column, e.Reason, e.Text)
}

// Caret renders the rule with a caret under the column, for a terminal.
func (e *ParseError) Caret() string {
	return e.Text + "\n" + strings.Repeat(" ", max(0, e.Column-1)) + "^"
}

const space = " \t\r\n"

// Parse reads a policy. Empty (or only white space) is a policy with no
// rules. A ";" after the last rule is allowed; an empty rule elsewhere is an
// error, as is anything outside the grammar of the package comment.
func Parse(s string) (*Policy, error) {
	p := &Policy{}
	if err := eachRule(s, false, func(text string) *ParseError {
		r, err := parseRule(text)
		if err == nil {
			p.rules = append(p.rules, r)
		}
		return err
	}); err != nil {
		return nil, err
	}
	for _, r := range p.rules {
		p.resources = p.resources || r.kind == Resource
		for _, st := range r.sets {
			p.scopes = append(p.scopes, st.scopes...)
		}
	}
	slices.Sort(p.scopes)
	p.scopes = slices.Compact(p.scopes)
	return p, nil
}

// eachRule calls parse with each rule of s, trimmed: rules are separated
// by ";", a ";" after the last one is allowed, an empty rule elsewhere is
// an error. parse's error gets the rule's number and text; grants says
// whose rules they are (ParseGrants').
func eachRule(s string, grants bool, parse func(text string) *ParseError) *ParseError {
	parts := strings.Split(s, ";")
	for i, part := range parts {
		text := strings.Trim(part, space)
		if text == "" {
			if i == len(parts)-1 {
				continue
			}
			return &ParseError{Rule: i + 1, Column: 1, Reason: "empty rule", grants: grants}
		}
		if err := parse(text); err != nil {
			err.Rule, err.Text, err.grants = i+1, text, grants
			return err
		}
	}
	return nil
}

// parseRule reads one rule, KIND:PATTERN=REQUIREMENTS. The error has its
// Column and Reason.
func parseRule(text string) (rule, *ParseError) {
	eq := strings.LastIndexByte(text, '=')
	if eq < 0 {
		return rule{}, &ParseError{Column: len(text) + 1, Reason: `no "=" (want KIND:PATTERN=REQUIREMENTS)`}
	}
	colon := strings.IndexByte(text[:eq], ':')
	if colon < 0 {
		return rule{}, &ParseError{Column: 1, Reason: `no ":" after the kind (want KIND:PATTERN=REQUIREMENTS)`}
	}
	var r rule
	switch strings.Trim(text[:colon], space) {
	case "tool":
		r.kind = Tool
	case "resource":
		r.kind = Resource
	case "prompt":
		r.kind = Prompt
	default:
		return rule{}, &ParseError{Column: 1, Reason: "unknown kind (want tool, resource or prompt)"}
	}
	pattern, off := trimmed(text, colon+1, eq)
	if pattern == "" {
		return rule{}, &ParseError{Column: colon + 2, Reason: "empty pattern"}
	}
	var err *ParseError
	if r.pattern, err = parsePattern(pattern, off); err != nil {
		return rule{}, err
	}
	reqs, off := trimmed(text, eq+1, len(text))
	switch reqs {
	case "":
		return rule{}, &ParseError{Column: eq + 2, Reason: `empty requirements (want any, deny, or sub:, email:, group:, scope: joined by "," and "|")`}
	case "any":
		return r, nil
	case "deny":
		r.deny = true
		return r, nil
	}
	r.sets, err = parseSets(reqs, off, true)
	return r, err
}

// trimmed returns text[from:to] without surrounding white space, and the
// offset in text where what it returns starts.
func trimmed(text string, from, to int) (string, int) {
	s := text[from:to]
	lead := len(s) - len(strings.TrimLeft(s, space))
	return strings.Trim(s, space), from + lead
}

// parsePattern splits a pattern at its stars into literal runs, decoding
// the escapes. off is where the pattern starts in the rule.
func parsePattern(pattern string, off int) ([]string, *ParseError) {
	var runs []string
	var run strings.Builder
	for i := 0; i < len(pattern); i++ {
		switch c := pattern[i]; c {
		case '*':
			runs = append(runs, run.String())
			run.Reset()
		case '%':
			if i+2 >= len(pattern) || !isHex(pattern[i+1]) || !isHex(pattern[i+2]) {
				return nil, &ParseError{Column: off + i + 1, Reason: `"%" starts no escape (write %25 for a literal "%")`}
			}
			switch strings.ToUpper(pattern[i+1 : i+3]) {
			case "3B":
				run.WriteByte(';')
			case "3D":
				run.WriteByte('=')
			case "2A":
				run.WriteByte('*')
			case "25":
				run.WriteByte('%')
			default:
				return nil, &ParseError{Column: off + i + 1, Reason: `unknown escape (only %3B ";", %3D "=", %2A "*" and %25 "%" exist)`}
			}
			i += 2
		default:
			run.WriteByte(c)
		}
	}
	return append(runs, run.String()), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// parseSets reads REQUIREMENTS other than any and deny: sets separated by
// "|", each requirements separated by ",". off is where reqs starts in the
// rule. Without scopes, a scope: requirement is an error.
func parseSets(reqs string, off int, scopes bool) ([]set, *ParseError) {
	var sets []set
	at := off
	for alt := range strings.SplitSeq(reqs, "|") {
		var st set
		pos := at
		for item := range strings.SplitSeq(alt, ",") {
			text, start := trimmed(item, 0, len(item))
			col := pos + start + 1
			pos += len(item) + 1
			if text == "" {
				return nil, &ParseError{Column: col, Reason: `empty requirement (between "," or "|")`}
			}
			if text == "any" || text == "deny" {
				return nil, &ParseError{Column: col, Reason: text + ` must stand alone`}
			}
			typ, value, ok := strings.Cut(text, ":")
			r := req{value: value}
			switch typ {
			case "sub":
				r.typ = reqSub
			case "email":
				r.typ = reqEmail
			case "group":
				r.typ = reqGroup
			case "scope":
				r.typ = reqScope
			default:
				return nil, &ParseError{Column: col, Reason: "unknown requirement (want sub:, email:, group: or scope:, or any or deny alone)"}
			}
			switch {
			case !ok || strings.Trim(value, space) == "":
				return nil, &ParseError{Column: col, Reason: "requirement without a value"}
			case value != strings.Trim(value, space):
				return nil, &ParseError{Column: col + len(typ) + 1, Reason: `white space after ":"`}
			case r.typ == reqScope && !scopes:
				return nil, &ParseError{Column: col, Reason: "a grant cannot require a scope (want sub:, email: or group:)"}
			case r.typ == reqScope && !validScope(value):
				return nil, &ParseError{Column: col, Reason: scopeReason}
			}
			st.reqs = append(st.reqs, r)
			if r.typ == reqScope {
				st.scopes = append(st.scopes, value)
			}
		}
		slices.Sort(st.scopes)
		st.scopes = slices.Compact(st.scopes)
		sets = append(sets, st)
		at += len(alt) + 1
	}
	return sets, nil
}

// scopeReason is why a scope is refused.
const scopeReason = `a scope is printable ASCII without white space, '"' or '\' (RFC 6749 §3.3)`

// validScope reports whether s is a scope-token: 1*NQCHAR (RFC 6749 §3.3),
// so it can stand in a challenge's quoted scope (RFC 6750 §3) as it is.
func validScope(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// Scopes returns every scope the policy names, sorted, once each: what the
// protected-resource metadata's scopes_supported must include (RFC 9728
// §2) so that a client can ask for them.
func (p *Policy) Scopes() []string {
	if p == nil {
		return nil
	}
	return slices.Clone(p.scopes)
}

// NamesGroups reports whether a rule requires a group: the provider must
// then put the groups claim in what the gateway sees.
func (p *Policy) NamesGroups() bool {
	if p == nil {
		return false
	}
	for _, r := range p.rules {
		if setsNameGroups(r.sets) {
			return true
		}
	}
	return false
}

func setsNameGroups(sets []set) bool {
	for _, s := range sets {
		for _, q := range s.reqs {
			if q.typ == reqGroup {
				return true
			}
		}
	}
	return false
}

// Len returns the number of rules.
func (p *Policy) Len() int {
	if p == nil {
		return 0
	}
	return len(p.rules)
}

// String returns the policy in a canonical form that Parse reads back to
// the same rules: "; " between rules, escapes only where needed.
func (p *Policy) String() string {
	if p == nil {
		return ""
	}
	var b strings.Builder
	for i, r := range p.rules {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(r.kind.String())
		b.WriteByte(':')
		for j, run := range r.pattern {
			if j > 0 {
				b.WriteByte('*')
			}
			for k := 0; k < len(run); k++ {
				switch c := run[k]; c {
				case ';':
					b.WriteString("%3B")
				case '=':
					b.WriteString("%3D")
				case '*':
					b.WriteString("%2A")
				case '%':
					b.WriteString("%25")
				default:
					b.WriteByte(c)
				}
			}
		}
		b.WriteByte('=')
		switch {
		case r.deny:
			b.WriteString("deny")
		case r.sets == nil:
			b.WriteString("any")
		}
		writeSets(&b, r.sets)
	}
	return b.String()
}

// writeSets writes sets as REQUIREMENTS other than any and deny.
func writeSets(b *strings.Builder, sets []set) {
	for j, st := range sets {
		if j > 0 {
			b.WriteByte('|')
		}
		for k, q := range st.reqs {
			if k > 0 {
				b.WriteByte(',')
			}
			b.WriteString([...]string{reqSub: "sub:", reqEmail: "email:", reqGroup: "group:", reqScope: "scope:"}[q.typ])
			b.WriteString(q.value)
		}
	}
}
