package policy

import (
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// examplePolicy is the example of docs/policy.md.
const examplePolicy = `tool:delete_*=group:admins; tool:write_file=scope:files:write; tool:deploy=group:ops,scope:deploy; resource:file:///secrets/*=deny; tool:*=any`

func TestParse(t *testing.T) {
	for _, c := range []struct {
		name, in, canonical string
		scopes              []string
	}{
		{"the issue's example", examplePolicy, examplePolicy, []string{"deploy", "files:write"}},
		{"empty", "", "", nil},
		{"white space only", " \n\t", "", nil},
		{"a trailing semicolon and white space", " tool:a = any ;\n prompt:p=deny; ", "tool:a=any; prompt:p=deny", nil},
		{"split at the last =", "tool:a=b=any", "tool:a%3Db=any", nil},
		{"escapes", "resource:x%3By%3dz%2Aw%25v*=any", "resource:x%3By%3Dz%2Aw%25v*=any", nil},
		{"colons in patterns and scopes", "resource:file:///a/*=scope:files:read|group:x", "resource:file:///a/*=scope:files:read|group:x", []string{"files:read"}},
		{"alternatives and white space", "tool:t = group:a , scope:s1 | sub:u1 | email:E@x.org,scope:s2 ,scope:s1",
			"tool:t=group:a,scope:s1|sub:u1|email:E@x.org,scope:s2,scope:s1", []string{"s1", "s2"}},
		{"a group with a space", "tool:t=group:Domain Admins", "tool:t=group:Domain Admins", nil},
		{"stars only", "tool:**=any", "tool:**=any", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := Parse(c.in)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := p.String(); got != c.canonical {
				t.Errorf("String: got %q, want %q", got, c.canonical)
			}
			if got := p.Scopes(); !reflect.DeepEqual(got, c.scopes) {
				t.Errorf("Scopes: got %q, want %q", got, c.scopes)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct {
		in     string
		rule   int
		column int
		reason string
	}{
		{"tool:a", 1, 7, `no "="`},
		{"tool:a=any; tol:b=any", 2, 1, "unknown kind"},
		{"Tool:a=any", 1, 1, "unknown kind"},
		{"tool=any", 1, 1, `no ":"`},
		{"tool:=any", 1, 6, "empty pattern"},
		{"tool:  =any", 1, 6, "empty pattern"},
		{"tool:a=", 1, 8, "empty requirements"},
		{"tool:a=any;;tool:b=any", 2, 1, "empty rule"},
		{";", 1, 1, "empty rule"},
		{"tool:a%=any", 1, 7, `"%" starts no escape`},
		{"tool:a%4=any", 1, 7, `"%" starts no escape`},
		{"resource:file:///my%20file=deny", 1, 20, "unknown escape"},
		{"tool:a=group:x,", 1, 16, "empty requirement"},
		{"tool:a=group:x||group:y", 1, 16, "empty requirement"},
		{"tool:a=  group:x, role:y", 1, 19, "unknown requirement"},
		{"tool:a=group:", 1, 8, "without a value"},
		{"tool:a=group", 1, 8, "without a value"},
		{"tool:a=group: x", 1, 14, "white space after"},
		{"tool:a=scope:a b", 1, 8, "without white space"},
		{`tool:a=scope:a"b`, 1, 8, "without white space"},
		{"tool:a=scope:caf\u00e9", 1, 8, "printable ASCII"},
		{"tool:a=any|group:x", 1, 8, "must stand alone"},
		{"tool:a=group:x,deny", 1, 16, "must stand alone"},
		{"tool:a=ANY", 1, 8, "unknown requirement"},
	} {
		t.Run(c.in, func(t *testing.T) {
			_, err := Parse(c.in)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q): got %v, want a *ParseError", c.in, err)
			}
			if pe.Rule != c.rule || pe.Column != c.column || !strings.Contains(pe.Reason, c.reason) {
				t.Errorf("Parse(%q): got rule %d column %d %q, want rule %d column %d %q\n%s",
					c.in, pe.Rule, pe.Column, pe.Reason, c.rule, c.column, c.reason, pe.Caret())
			}
			if !strings.Contains(err.Error(), "rule ") || !strings.HasPrefix(err.Error(), "parse policy: ") {
				t.Errorf("Error() = %q", err)
			}
		})
	}
}

func TestCaret(t *testing.T) {
	_, err := Parse("tool:a=any; resource:file:///my%20file=deny")
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Fatal(err)
	}
	want := "resource:file:///my%20file=deny\n                   ^"
	if got := pe.Caret(); got != want {
		t.Errorf("Caret:\n%s\nwant\n%s", got, want)
	}
}

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		{"echo", "echo", true}, {"echo", "echo2", false}, {"echo", "Echo", false}, {"echo", "", false},
		{"delete_*", "delete_", true}, {"delete_*", "delete_all", true}, {"delete_*", "undelete_all", false},
		{"*_admin", "x_admin", true}, {"*_admin", "x_admin_y", false},
		{"file:///secrets/*", "file:///secrets/a/b/c", true}, {"file:///secrets/*", "file:///secrets", false},
		{"a*b*c", "abc", true}, {"a*b*c", "aXbYc", true}, {"a*b*c", "acb", false}, {"a*b*c", "abcbc", true},
		{"a*bc*bc", "abcbc", true}, {"a*bc*bc", "abc", false},
		{"*", "", true}, {"*", "anything/at/all", true}, {"**", "x", true},
		{"a%2Ab", "a*b", true}, {"a%2Ab", "axb", false},
	} {
		p, err := Parse("tool:" + c.pattern + "=deny")
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Decide(nil, Tool, c.name).Outcome == Deny; got != c.want {
			t.Errorf("%q matches %q: got %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

// FuzzMatch: a pattern matches a name exactly when the regular expression
// that spells the same glob does.
func FuzzMatch(f *testing.F) {
	f.Add("a*b*c", "aXbYc")
	f.Add("file:///s/*", "file:///s/x/y")
	f.Add("*x*", "xx")
	f.Fuzz(func(t *testing.T, pattern, name string) {
		if strings.ContainsAny(pattern, "%;= \t\r\n") || pattern == "" || !utf8.ValidString(pattern) {
			return // not a literal glob once written in a rule
		}
		p, err := Parse("tool:" + pattern + "=deny")
		if err != nil {
			return
		}
		parts := strings.Split(pattern, "*")
		for i := range parts {
			parts[i] = regexp.QuoteMeta(parts[i])
		}
		re := regexp.MustCompile(`(?s)\A` + strings.Join(parts, ".*") + `\z`)
		got := p.Decide(nil, Tool, name).Outcome == Deny
		if want := re.MatchString(name); got != want {
			t.Fatalf("%q matches %q: got %v, regexp says %v", pattern, name, got, want)
		}
	})
}

// FuzzParse: Parse never panics; an error points into the rule that failed;
// a policy it accepts reads back from its String unchanged.
func FuzzParse(f *testing.F) {
	for _, s := range []string{examplePolicy, "tool:a%3B*=sub:x|email:y,scope:z;", "prompt:p=deny", "tool:a=b=any", "resource:*%25=group:g h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q): %v is not a *ParseError", s, err)
			}
			rules := strings.Split(s, ";")
			if pe.Rule < 1 || pe.Rule > len(rules) || pe.Text != strings.Trim(rules[pe.Rule-1], space) ||
				pe.Column < 1 || pe.Column > len(pe.Text)+1 {
				t.Fatalf("Parse(%q): error %+v does not point into a rule", s, pe)
			}
			return
		}
		again, err := Parse(p.String())
		if err != nil {
			t.Fatalf("Parse(%q).String() = %q, which does not parse: %v", s, p.String(), err)
		}
		if !reflect.DeepEqual(p, again) {
			t.Fatalf("Parse(%q) = %+v; from its String %q: %+v", s, p, p.String(), again)
		}
	})
}
