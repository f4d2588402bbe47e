package policy

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/mcp"
)

func mustParse(t testing.TB, s string) *Policy {
	t.Helper()
	p, err := Parse(s)
	if err != nil {
		t.Fatalf("Parse(%q): %v", s, err)
	}
	return p
}

func TestDecide(t *testing.T) {
	p := mustParse(t, strings.TrimSuffix(examplePolicy, "tool:*=any")+"tool:t=group:a,scope:s1,scope:s2|sub:u1,scope:s3|group:b; tool:mail=email:Alice@Example.org; tool:*=any")
	admin := &Subject{Sub: "a1", Groups: []string{"admins"}}
	writer := &Subject{Sub: "w1", Scopes: []string{"openid", "files:write"}}
	ops := &Subject{Sub: "o1", Groups: []string{"ops"}, Scopes: []string{"openid"}}
	opsDeploy := &Subject{Sub: "o2", Groups: []string{"ops"}, Scopes: []string{"deploy"}}
	nobody := &Subject{Sub: "n1", Groups: []string{"Admins", "ops "}}
	for _, c := range []struct {
		name string
		s    *Subject
		kind Kind
		call string
		want Decision
	}{
		{"group allows a glob", admin, Tool, "delete_all", Decision{Outcome: Allow, Rule: 1}},
		{"not in the group: denied, scopes would not help", nobody, Tool, "delete_all", Decision{Outcome: Deny, Rule: 1}},
		{"the scope held", writer, Tool, "write_file", Decision{Outcome: Allow, Rule: 2}},
		{"the scope missing: step-up", admin, Tool, "write_file", Decision{Outcome: StepUp, Rule: 2, Scopes: []string{"files:write"}}},
		{"group and scope", opsDeploy, Tool, "deploy", Decision{Outcome: Allow, Rule: 3}},
		{"the group, not the scope: step-up", ops, Tool, "deploy", Decision{Outcome: StepUp, Rule: 3, Scopes: []string{"deploy"}}},
		{"the scope, not the group: denied", &Subject{Scopes: []string{"deploy"}}, Tool, "deploy", Decision{Outcome: Deny, Rule: 3}},
		{"a denied resource", admin, Resource, "file:///secrets/a/b", Decision{Outcome: Deny, Rule: 4}},
		{"a resource no rule names", admin, Resource, "file:///public", Decision{}},
		{"a dot segment that leads to a denied resource", admin, Resource, "file:///public/../secrets/key", Decision{Outcome: Deny}},
		{"an encoded dot segment", admin, Resource, "file:///public/%2E%2e/secrets/key", Decision{Outcome: Deny}},
		{"a dot segment at the end", admin, Resource, "file:///secrets/a/..", Decision{Outcome: Deny}},
		{"an encoded slash", admin, Resource, "file:///public%2F..%2Fsecrets", Decision{Outcome: Deny}},
		{"a backslash", admin, Resource, `file:///public\..\secrets\key`, Decision{Outcome: Deny}},
		{"dots that are no segment", admin, Resource, "demo://a/..b/c.../.d?x=..", Decision{}},
		{"a query that names a URL", admin, Resource, "demo://h/search?q=https://x.example//a/./b", Decision{}},
		{"an escape that is no shorter spelling", admin, Resource, "file:///My%20Documents/r%C3%A9sum%C3%A9.pdf", Decision{}},
		{"an opaque URI", admin, Resource, "urn:isbn:0451450523", Decision{}},
		{"a special scheme's host and port as a browser writes them", admin, Resource, "https://docs.example:8443/a", Decision{}},

		// Spellings the TypeScript and Python SDKs (WHATWG URL, fileURLToPath)
		// take for file:///secrets/a/b, which rule 4 denies: without the
		// rule's match they were allowed.
		{"an upper-case scheme", admin, Resource, "FILE:///secrets/a/b", Decision{Outcome: Deny}},
		{"a mixed-case scheme", admin, Resource, "File:///secrets/a/b", Decision{Outcome: Deny}},
		{"a tab inside", admin, Resource, "file:///secrets/a\t/b", Decision{Outcome: Deny}},
		{"a leading space", admin, Resource, " file:///secrets/a/b", Decision{Outcome: Deny}},
		{"a trailing line break", admin, Resource, "file:///secrets/a/b\n", Decision{Outcome: Deny}},
		{"an escaped unreserved character", admin, Resource, "file:///%73ecrets/a/b", Decision{Outcome: Deny}},
		{"an escaped unreserved character, lower-case hex", admin, Resource, "file:///secrets/a/%62", Decision{Outcome: Deny}},
		{"file://localhost", admin, Resource, "file://localhost/secrets/a/b", Decision{Outcome: Deny}},
		{"an empty segment", admin, Resource, "file:////secrets/a/b", Decision{Outcome: Deny}},
		{"an empty segment inside", admin, Resource, "file:///secrets//a/b", Decision{Outcome: Deny}},
		{"a file query", admin, Resource, "file:///secrets/a/b?x", Decision{Outcome: Deny}},
		{"a fragment", admin, Resource, "file:///secrets/a/b#x", Decision{Outcome: Deny}},
		{"non-ASCII", admin, Resource, "file:///secrets/a/b\u00e9", Decision{Outcome: Deny}},
		{"an upper-case special host", admin, Resource, "https://Docs.example/a", Decision{Outcome: Deny}},
		{"a special scheme's default port", admin, Resource, "https://docs.example:443/a", Decision{Outcome: Deny}},
		{"a special scheme's empty port", admin, Resource, "http://docs.example:/a", Decision{Outcome: Deny}},
		{"a tool rule does not decide a resource", admin, Resource, "delete_all", Decision{}},
		{"the catch-all", nobody, Tool, "echo", Decision{Outcome: Allow, Rule: 7}},
		{"a prompt no rule names", nobody, Prompt, "delete_all", Decision{}},
		{"no identity", nil, Tool, "write_file", Decision{Outcome: StepUp, Rule: 2, Scopes: []string{"files:write"}}},
		{"no identity, an identity rule", nil, Tool, "delete_x", Decision{Outcome: Deny, Rule: 1}},
		{"not a call", admin, 0, "delete_all", Decision{}},

		{"alternatives: the set missing fewest scopes", &Subject{Sub: "u1", Groups: []string{"a"}}, Tool, "t",
			Decision{Outcome: StepUp, Rule: 5, Scopes: []string{"s3"}}},
		{"alternatives: a tie goes to the first set, with all its scopes", &Subject{Sub: "u1", Groups: []string{"a"}, Scopes: []string{"s1"}}, Tool, "t",
			Decision{Outcome: StepUp, Rule: 5, Scopes: []string{"s1", "s2"}}},
		{"alternatives: a set that holds allows", &Subject{Groups: []string{"b"}}, Tool, "t", Decision{Outcome: Allow, Rule: 5}},
		{"alternatives: no set's identity holds", &Subject{Sub: "u2", Scopes: []string{"s1", "s2", "s3"}}, Tool, "t", Decision{Outcome: Deny, Rule: 5}},

		{"email: ASCII case ignored", &Subject{Email: "alice@EXAMPLE.ORG", EmailVerified: true}, Tool, "mail", Decision{Outcome: Allow, Rule: 6}},
		{"email: not verified", &Subject{Email: "alice@example.org"}, Tool, "mail", Decision{Outcome: Deny, Rule: 6}},
		{"email: no Unicode folding", &Subject{Email: "alice@example.or\u212A", EmailVerified: true}, Tool, "mail", Decision{Outcome: Deny, Rule: 6}},
		{"sub is exact", &Subject{Sub: "U1"}, Tool, "t", Decision{Outcome: Deny, Rule: 5}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := p.Decide(c.s, c.kind, c.call)
			c.want.Kind, c.want.Name = c.kind, c.call
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestNoPolicyAllows(t *testing.T) {
	for _, p := range []*Policy{nil, {}, mustParse(t, "")} {
		if d := p.Decide(&Subject{}, Tool, "delete_all"); d.Outcome != Allow || d.Rule != 0 {
			t.Errorf("%v: got %+v, want allowed by no rule", p, d)
		}
	}
}

func TestDotSegmentsWithoutResourceRules(t *testing.T) {
	p := mustParse(t, "tool:*=deny")
	if d := p.Decide(nil, Resource, "file:///a/../b"); d.Outcome != Allow {
		t.Errorf("no resource rule, a dot segment: got %+v, want allowed", d)
	}
}

func TestCheck(t *testing.T) {
	p := mustParse(t, "tool:publish=scope:publish; "+examplePolicy+"; prompt:internal_*=group:admins")
	ops := &Subject{Sub: "o1", Groups: []string{"ops"}}
	body := func(s string) mcp.Body {
		b, err := mcp.Parse([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	call := func(id int, name string) string {
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q}}`, id, name)
	}
	for _, c := range []struct {
		name string
		body string
		want Decision
	}{
		{"a single call", call(1, "echo"), Decision{Outcome: Allow, Rule: 6, Kind: Tool, Name: "echo"}},
		{"no calls", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, Decision{}},
		{"a resource read", `{"method":"resources/read","params":{"uri":"file:///secrets/k"},"id":1}`,
			Decision{Outcome: Deny, Rule: 5, Kind: Resource, Name: "file:///secrets/k"}},
		{"a batch needing two scopes asks for both at once",
			"[" + call(1, "echo") + `,{"method":"ping","id":2},` + call(3, "publish") + "," + call(4, "deploy") + "," + call(5, "write_file") + "]",
			Decision{Outcome: StepUp, Rule: 1, Index: 2, Kind: Tool, Name: "publish", Scopes: []string{"deploy", "files:write", "publish"}}},
		{"a denied element refuses the batch, step-up or not",
			"[" + call(1, "publish") + "," + call(2, "delete_all") + "," + call(3, "echo") + "]",
			Decision{Outcome: Deny, Rule: 2, Index: 1, Kind: Tool, Name: "delete_all"}},
		{"an allowed batch", "[" + call(1, "echo") + "," + call(2, "other") + "]", Decision{Outcome: Allow, Rule: 6, Kind: Tool, Name: "echo"}},
		{"a subscription to a denied resource", `{"method":"resources/subscribe","params":{"uri":"file:///secrets/k"},"id":1}`,
			Decision{Outcome: Deny, Rule: 5, Kind: Resource, Name: "file:///secrets/k"}},
		{"an unsubscription from a denied resource", `{"method":"resources/unsubscribe","params":{"uri":"file:///secrets/k"},"id":1}`,
			Decision{Outcome: Deny, Rule: 5, Kind: Resource, Name: "file:///secrets/k"}},
		{"a subscription no rule names", `{"method":"resources/subscribe","params":{"uri":"file:///public/log"},"id":1}`,
			Decision{Kind: Resource, Name: "file:///public/log"}},
		{"completions of a denied prompt", `{"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"internal_plan"},"argument":{"name":"a","value":""}},"id":1}`,
			Decision{Outcome: Deny, Rule: 7, Kind: Prompt, Name: "internal_plan"}},
		{"completions of a prompt are not decided by its uri", `{"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"greet","uri":"file:///secrets/k"},"argument":{"name":"a","value":""}},"id":1}`,
			Decision{Kind: Prompt, Name: "greet"}},
		{"completions of a denied resource template", `{"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///secrets/{name}"},"argument":{"name":"name","value":""}},"id":1}`,
			Decision{Outcome: Deny, Rule: 5, Kind: Resource, Name: "file:///secrets/{name}"}},
		{"a resource template with a dot segment", `{"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///public/../secrets/{name}"},"argument":{"name":"name","value":""}},"id":1}`,
			Decision{Outcome: Deny, Kind: Resource, Name: "file:///public/../secrets/{name}"}},
		{"a denied completion refuses the batch",
			"[" + call(1, "echo") + `,{"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"internal_plan"},"argument":{"name":"a","value":""}},"id":2}]`,
			Decision{Outcome: Deny, Rule: 7, Index: 1, Kind: Prompt, Name: "internal_plan"}},
		{"a denied subscription refuses the batch",
			"[" + call(1, "echo") + `,{"method":"resources/subscribe","params":{"uri":"file:///secrets/k"},"id":2}]`,
			Decision{Outcome: Deny, Rule: 5, Index: 1, Kind: Resource, Name: "file:///secrets/k"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := p.Check(ops, body(c.body)); !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
	// The union is a copy: the policy's own scope lists stay as they were.
	p.Check(ops, body("["+call(1, "publish")+","+call(2, "deploy")+"]"))
	if d := p.Decide(ops, Tool, "publish"); !reflect.DeepEqual(d.Scopes, []string{"publish"}) {
		t.Errorf("a rule's scopes changed to %q", d.Scopes)
	}
}

func TestKindOf(t *testing.T) {
	for _, c := range []struct {
		m    mcp.Message
		want Kind
	}{
		{mcp.Message{Method: "tools/call"}, Tool},
		{mcp.Message{Method: "resources/read"}, Resource},
		{mcp.Message{Method: "resources/subscribe"}, Resource},
		{mcp.Message{Method: "resources/unsubscribe"}, Resource},
		{mcp.Message{Method: "prompts/get"}, Prompt},
		{mcp.Message{Method: "completion/complete", Ref: mcp.RefPrompt}, Prompt},
		{mcp.Message{Method: "completion/complete", Ref: mcp.RefResource}, Resource},
		{mcp.Message{Method: "completion/complete"}, 0}, // cut off before its ref: never decided on
		{mcp.Message{Method: "tools/list", Ref: mcp.RefPrompt}, 0},
		{mcp.Message{Method: "resources/templates/list"}, 0},
		{mcp.Message{Method: "Tools/call"}, 0},
	} {
		if got := KindOf(c.m); got != c.want {
			t.Errorf("KindOf(%+v) = %v, want %v", c.m, got, c.want)
		}
	}
}

func TestRuleLabel(t *testing.T) {
	if got := (Decision{}).RuleLabel(); got != "none" {
		t.Errorf("got %q", got)
	}
	if got := (Decision{Rule: 12}).RuleLabel(); got != "12" {
		t.Errorf("got %q", got)
	}
}

// benchPolicy is 20 rules; the call of the benchmark matches the last.
func benchPolicy(b *testing.B) *Policy {
	var rules []string
	for i := range 19 {
		rules = append(rules, fmt.Sprintf("tool:admin_%d_*=group:admins,scope:admin|sub:root", i))
	}
	rules = append(rules, "tool:*=group:staff,scope:mcp|email:ops@example.org")
	return mustParse(b, strings.Join(rules, "; "))
}

// BenchmarkDecideToolsCall: the policy's share of a tools/call admit path,
// 20 rules (the call matching the last, after 19 patterns that do not)
// against no policy, and the body check the gate runs after mcp.Parse.
func BenchmarkDecideToolsCall(b *testing.B) {
	s := &Subject{Sub: "u1", Email: "u1@example.org", EmailVerified: true, Groups: []string{"users", "staff"}, Scopes: []string{"openid", "email", "mcp"}}
	body, err := mcp.Parse([]byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"/tmp/x"}}}`))
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		p    *Policy
		rule int
	}{{"no-policy", nil, 0}, {"20-rules", benchPolicy(b), 20}} {
		b.Run("Decide/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if d := c.p.Decide(s, Tool, "write_file"); d.Outcome != Allow || d.Rule != c.rule {
					b.Fatal(d)
				}
			}
		})
		b.Run("Check/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if d := c.p.Check(s, body); d.Outcome != Allow || d.Rule != c.rule {
					b.Fatal(d)
				}
			}
		})
	}
}
