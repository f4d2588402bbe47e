package policy

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
)

// exampleGrants grants the scopes of examplePolicy.
const exampleGrants = `files:write=group:editors; deploy=group:ops|sub:alice`

func TestParseGrants(t *testing.T) {
	for _, c := range []struct {
		name, in, canonical string
		scopes              []string
	}{
		{"an example", exampleGrants, exampleGrants, []string{"files:write", "deploy"}},
		{"empty", " ", "", nil},
		{"any, white space and a trailing semicolon", " audit:read = any ;\n x=email:A@x.org , group:g h ;", "audit:read=any; x=email:A@x.org,group:g h", []string{"audit:read", "x"}},
		{"split at the last =", "a=b=any", "a=b=any", []string{"a=b"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, err := ParseGrants(c.in)
			if err != nil {
				t.Fatalf("ParseGrants: %v", err)
			}
			if got := g.String(); got != c.canonical {
				t.Errorf("String: got %q, want %q", got, c.canonical)
			}
			if got := g.Scopes(); !slices.Equal(got, c.scopes) {
				t.Errorf("Scopes: got %q, want %q", got, c.scopes)
			}
		})
	}
}

func TestParseGrantsErrors(t *testing.T) {
	for _, c := range []struct {
		in     string
		rule   int
		column int
		reason string
	}{
		{"files:write", 1, 12, `no "="`},
		{"=group:a", 1, 1, "printable ASCII"},
		{`a"b=group:a`, 1, 1, "printable ASCII"},
		{"a=", 1, 3, "empty requirements"},
		{"a=deny", 1, 3, "deny grants nothing"},
		{"a=any; b=scope:a", 2, 3, "cannot require a scope"},
		{"a=group:x,scope:y", 1, 11, "cannot require a scope"},
		{"a=role:x", 1, 3, "unknown requirement"},
		{"a=group:x; a=any", 2, 1, "a second rule for this scope"},
		{"a=any;;b=any", 2, 1, "empty rule"},
		{"a=group:x|", 1, 11, "empty requirement"},
	} {
		t.Run(c.in, func(t *testing.T) {
			_, err := ParseGrants(c.in)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a *ParseError", err)
			}
			if pe.Rule != c.rule || pe.Column != c.column || !strings.Contains(pe.Reason, c.reason) {
				t.Errorf("got rule %d, column %d, %q; want rule %d, column %d, %q", pe.Rule, pe.Column, pe.Reason, c.rule, c.column, c.reason)
			}
			if !strings.HasPrefix(err.Error(), "parse scope grants: ") {
				t.Errorf("error %q does not say what it parsed", err)
			}
		})
	}
}

func TestGrant(t *testing.T) {
	g, err := ParseGrants(exampleGrants + "; audit:read=any; mail=email:Lead@Example.com")
	if err != nil {
		t.Fatal(err)
	}
	guarded := []string{"deploy", "files:write", "secret:read"} // what MCP_POLICY names
	requested := []string{"openid", "files:write", "deploy", "secret:read", "audit:read", "mail"}
	for _, c := range []struct {
		name string
		s    *Subject
		want []string
	}{
		{"an editor", &Subject{Sub: "e1", Groups: []string{"editors"}}, []string{"openid", "files:write", "audit:read"}},
		{"ops", &Subject{Sub: "o1", Groups: []string{"ops"}}, []string{"openid", "deploy", "audit:read"}},
		{"alice by sub", &Subject{Sub: "alice"}, []string{"openid", "deploy", "audit:read"}},
		{"a verified email, another case", &Subject{Sub: "l", Email: "lead@example.COM", EmailVerified: true}, []string{"openid", "audit:read", "mail"}},
		{"an unverified email", &Subject{Sub: "l", Email: "lead@example.com"}, []string{"openid", "audit:read"}},
		{"nobody", nil, []string{"openid", "audit:read"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := g.Grant(c.s, requested, guarded); !slices.Equal(got, c.want) {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
	var none *Grants
	if got, want := none.Grant(nil, requested, guarded), []string{"openid", "audit:read", "mail"}; !slices.Equal(got, want) {
		t.Errorf("no grants: got %q, want %q (a guarded scope is never granted without a rule)", got, want)
	}
}

// TestGrantsHook: the hook the broker takes decides for the identity the
// provider logged in, and does not change the caller's slices.
func TestGrantsHook(t *testing.T) {
	g, err := ParseGrants(exampleGrants)
	if err != nil {
		t.Fatal(err)
	}
	guarded := []string{"deploy", "files:write"}
	hook := g.Hook(guarded)
	guarded[0] = "changed"
	requested := []string{"files:write", "deploy", "profile"}
	got := hook(&provider.Identity{Subject: "alice", Groups: []string{"editors"}}, requested)
	if want := []string{"files:write", "deploy", "profile"}; !slices.Equal(got, want) {
		t.Errorf("alice, an editor: got %q, want %q", got, want)
	}
	if got, want := hook(&provider.Identity{Subject: "bob"}, requested), []string{"profile"}; !slices.Equal(got, want) {
		t.Errorf("bob: got %q, want %q", got, want)
	}
	if !slices.Equal(requested, []string{"files:write", "deploy", "profile"}) {
		t.Errorf("the hook changed the requested scopes: %q", requested)
	}
	// No BROKER_SCOPE_GRANTS: the scopes the policy names go to no one.
	var none *Grants
	if got, want := none.Hook([]string{"deploy", "files:write"})(&provider.Identity{Subject: "alice"}, requested), []string{"profile"}; !slices.Equal(got, want) {
		t.Errorf("no grants: got %q, want %q", got, want)
	}
}

// FuzzParseGrants: ParseGrants never panics; an error points into the rule
// that failed; grants it accepts read back from their String unchanged.
func FuzzParseGrants(f *testing.F) {
	for _, s := range []string{exampleGrants, "a=any;", "a=b=email:x,group:y z|sub:q", "x=deny", "a=scope:b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		g, err := ParseGrants(s)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("ParseGrants(%q): %v is not a *ParseError", s, err)
			}
			rules := strings.Split(s, ";")
			if pe.Rule < 1 || pe.Rule > len(rules) || pe.Text != strings.Trim(rules[pe.Rule-1], space) ||
				pe.Column < 1 || pe.Column > len(pe.Text)+1 {
				t.Fatalf("ParseGrants(%q): error %+v does not point into a rule", s, pe)
			}
			return
		}
		again, err := ParseGrants(g.String())
		if err != nil {
			t.Fatalf("ParseGrants(%q).String() = %q, which does not parse: %v", s, g.String(), err)
		}
		if !reflect.DeepEqual(g, again) {
			t.Fatalf("ParseGrants(%q) = %+v; from its String %q: %+v", s, g, g.String(), again)
		}
	})
}
