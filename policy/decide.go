package policy

import (
	"slices"
	"strconv"
	"strings"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/mcp"
)

// Subject is who makes a call, as the verified token says.
type Subject struct {
	Sub   string
	Email string
	// EmailVerified: an email: requirement holds only for a verified email.
	EmailVerified bool
	Groups        []string
	Scopes        []string
}

// Outcome is what a decision says.
type Outcome uint8

// The outcomes.
const (
	// Allow: the call goes on.
	Allow Outcome = iota
	// Deny: the call is refused, and more scopes would not help (a deny
	// rule, or no set of the rule whose sub, email and group requirements
	// hold).
	Deny
	// StepUp: the call is refused only for missing scopes; Decision.Scopes
	// are the scopes to ask for (RFC 6750 §3.1 insufficient_scope; MCP
	// step-up authorization).
	StepUp
)

func (o Outcome) String() string {
	switch o {
	case Deny:
		return "deny"
	case StepUp:
		return "step_up"
	}
	return "allow"
}

// Decision is what a policy says of a call, or of the calls of a body.
type Decision struct {
	Outcome Outcome
	// Rule is the rule that decided, counting from 1 as the error messages
	// of Parse do; 0 when no rule matched: the call is allowed, or (Deny)
	// it reads a resource URI that could name another resource than it
	// seems to (see Decide). A bounded label for metrics and the audit
	// line: see RuleLabel.
	Rule int
	// Index is the batch position (mcp.Message.Index) of the call that
	// decided, from Check; 0 otherwise.
	Index int
	// Kind and Name are the call that decided (Kind 0: a body without
	// calls), for the JSON-RPC error that names the tool.
	Kind Kind
	Name string
	// Scopes (StepUp only) is every scope the call needs, sorted: all the
	// scope requirements of the set that would allow it, those already
	// granted included, so a client that replaces its scopes rather than
	// adding to them still ends up with enough. Shared: do not modify.
	Scopes []string
}

// RuleLabel is Rule as a metrics label: "none" or the rule's number.
func (d Decision) RuleLabel() string {
	if d.Rule == 0 {
		return "none"
	}
	return strconv.Itoa(d.Rule)
}

// Decide decides one call of kind named name (a tool or prompt name, a
// resource URI) for s (nil: a caller with no identity and no scopes). The
// first rule of that kind whose pattern matches the whole name decides; a
// call no rule matches, or of kind 0, is allowed.
//
// A resource URI with a dot segment ("/../", also as %2E), an encoded slash
// or backslash (%2F, %5C), or a backslash is denied (Rule 0) whenever the
// policy has resource rules: a server that resolves it may read what a
// rule for the resolved URI denies ("file:///public/../secrets/key").
//
// A rule with sets allows the call when one set holds whole. Otherwise,
// among the sets whose sub, email and group requirements hold (those more
// scopes can satisfy), the one missing the fewest scopes (the first on a
// tie) makes the decision StepUp with that set's scopes; when there is
// none, Deny.
func (p *Policy) Decide(s *Subject, kind Kind, name string) Decision {
	if p == nil || kind == 0 {
		return Decision{Kind: kind, Name: name}
	}
	if s == nil {
		s = &Subject{}
	}
	if kind == Resource && p.resources && !plainURI(name) {
		return Decision{Outcome: Deny, Kind: kind, Name: name}
	}
	for i := range p.rules {
		r := &p.rules[i]
		if r.kind != kind || !match(r.pattern, name) {
			continue
		}
		d := Decision{Rule: i + 1, Kind: kind, Name: name}
		switch {
		case r.deny:
			d.Outcome = Deny
		case r.sets != nil:
			d.Outcome, d.Scopes = decideSets(r.sets, s)
		}
		return d
	}
	return Decision{Kind: kind, Name: name}
}

// plainURI reports whether uri has one spelling: what a server does to a
// URI on its way to a resource leaves it as it is, so a rule written for
// the resource is the rule that matches it. Servers resolve and normalise:
// dot segments (RFC 3986 §5.2.4); the WHATWG URL parser, by which the
// TypeScript SDK looks resources up, strips tabs and line breaks anywhere
// and white space at the ends, lower-cases the scheme (and a special
// scheme's host), drops a default port, percent-encodes other bytes, and
// empties file's "localhost"; Python's SDK does the same; Node's
// fileURLToPath decodes every escape and ignores a query. So a URI is
// plain when it has none of: white space, control or non-ASCII bytes; a
// backslash; a fragment; an upper-case scheme; an escape of an unreserved
// character, a slash or a backslash; a dot segment or an empty segment in
// its path; for http(s), ws(s) and ftp, an upper-case host or an empty or
// default port; for file, an authority or a query.
func plainURI(uri string) bool {
	for i := 0; i < len(uri); i++ {
		switch c := uri[i]; {
		case c <= ' ' || c >= 0x7f || c == '\\' || c == '#':
			return false
		case c == '%' && i+2 < len(uri) && isHex(uri[i+1]) && isHex(uri[i+2]):
			if d := unhex(uri[i+1])<<4 | unhex(uri[i+2]); unreserved(d) || d == '/' || d == '\\' {
				return false
			}
		}
	}
	scheme, rest, ok := strings.Cut(uri, ":")
	if !ok {
		return true // no scheme: not a URI any parser resolves
	}
	for i := 0; i < len(scheme); i++ {
		if 'A' <= scheme[i] && scheme[i] <= 'Z' {
			return false
		}
	}
	path, query, _ := strings.Cut(rest, "?")
	if scheme == "file" && query != "" {
		return false
	}
	if authority, ok := strings.CutPrefix(path, "//"); ok {
		authority, path, _ = strings.Cut(authority, "/")
		path = "/" + path
		if !plainAuthority(scheme, authority) {
			return false
		}
	}
	if strings.Contains(path, "//") {
		return false
	}
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// plainAuthority applies plainURI's rules to the authority of a URI of
// scheme: file has none; a special scheme's host is lower-case, its port
// given and not the default.
func plainAuthority(scheme, authority string) bool {
	defaultPort := map[string]string{"http": "80", "https": "443", "ws": "80", "wss": "443", "ftp": "21"}
	switch port, special := defaultPort[scheme]; {
	case scheme == "file":
		return authority == ""
	case special:
		if strings.ToLower(authority) != authority {
			return false
		}
		if i := strings.LastIndexByte(authority, ':'); i >= 0 && !strings.HasSuffix(authority, "]") {
			if p := authority[i+1:]; p == "" || p == port {
				return false
			}
		}
	}
	return true
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// unreserved is RFC 3986 §2.3's set, whose escapes mean the character.
func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

func decideSets(sets []set, s *Subject) (Outcome, []string) {
	best, fewest := -1, 0
	for i := range sets {
		missing, identity := 0, true
		for _, q := range sets[i].reqs {
			if q.typ == reqScope {
				if !slices.Contains(s.Scopes, q.value) {
					missing++
				}
				continue
			}
			if !holds(q, s) {
				identity = false
				break
			}
		}
		switch {
		case !identity:
		case missing == 0:
			return Allow, nil
		case best < 0 || missing < fewest:
			best, fewest = i, missing
		}
	}
	if best < 0 {
		return Deny, nil
	}
	return StepUp, sets[best].scopes
}

// holds reports whether a sub, email or group requirement holds for s.
func holds(q req, s *Subject) bool {
	switch q.typ {
	case reqSub:
		return s.Sub == q.value
	case reqEmail:
		return s.EmailVerified && asciiEqualFold(s.Email, q.value)
	case reqGroup:
		return slices.Contains(s.Groups, q.value)
	}
	return false
}

// asciiEqualFold compares emails ignoring the case of ASCII letters only:
// Unicode folding would let U+212A KELVIN SIGN stand for "k".
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// match reports whether name matches a pattern split at its stars into
// literal runs: the first run is a prefix, the last a suffix, and the runs
// between appear in order, each star matching any run of bytes ("/"
// included). The leftmost place for each middle run is as good as any, so
// there is no backtracking.
func match(runs []string, name string) bool {
	if len(runs) == 1 {
		return name == runs[0]
	}
	first, last := runs[0], runs[len(runs)-1]
	if len(name) < len(first)+len(last) || name[:len(first)] != first || name[len(name)-len(last):] != last {
		return false
	}
	rest := name[len(first) : len(name)-len(last)]
	for _, run := range runs[1 : len(runs)-1] {
		i := strings.Index(rest, run)
		if i < 0 {
			return false
		}
		rest = rest[i+len(run):]
	}
	return true
}

// Check decides the calls of a body (each message KindOf gives a kind,
// single or batched): the first Deny if any call is denied; else StepUp
// if any call needs more scopes, naming the first such call
// and the union of the scopes of all of them (one challenge for the whole
// body); else the decision of the first call (Rule 0 and Kind 0 for a body
// without calls). Decisions come from the body only: check the headers
// against it first (mcp.CheckHeaders).
func (p *Policy) Check(s *Subject, body mcp.Body) Decision {
	var first, stepUp Decision
	found, many := false, false
	for _, m := range body.Messages {
		kind := KindOf(m)
		if kind == 0 {
			continue
		}
		d := p.Decide(s, kind, m.Name)
		d.Index = m.Index
		switch d.Outcome {
		case Deny:
			return d
		case StepUp:
			if stepUp.Outcome != StepUp {
				stepUp = d
				continue
			}
			if !many {
				stepUp.Scopes = slices.Clone(stepUp.Scopes)
				many = true
			}
			stepUp.Scopes = append(stepUp.Scopes, d.Scopes...)
		default:
			if !found {
				first, found = d, true
			}
		}
	}
	if stepUp.Outcome == StepUp {
		if many {
			slices.Sort(stepUp.Scopes)
			stepUp.Scopes = slices.Compact(stepUp.Scopes)
		}
		return stepUp
	}
	return first
}
