package gate

import (
	"testing"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
)

// asciiLowered is the property's own statement of case-insensitive
// equality: ASCII letters lowered byte by byte, every other byte kept.
func asciiLowered(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 32
		}
	}
	return string(b)
}

// FuzzIdentityCompare checks the allow-list's comparisons (AllowList, which
// the gate and broker mode's login both use): a listed email matches a token's verified email if and only if
// their ASCII-lowercased forms are byte-equal (so no Unicode folding: U+212A
// KELVIN SIGN is not "k", U+017F LONG S is not "s", "İ" is not "i"); a
// listed sub or group matches only itself, byte for byte.
func FuzzIdentityCompare(f *testing.F) {
	for _, seed := range [][2]string{
		{"kim@example.com", "\u212Aim@example.com"},
		{"\u212Aim@example.com", "kim@example.com"},
		{"sam@example.com", "\u017Fam@example.com"},
		{"Kim@Example.COM", "kIM@example.com"},
		{"i@example.com", "\u0130@example.com"},
		{"\u00e5@example.com", "\u212B@example.com"},
		{"a@example.com", "a@example.com "},
		{"a\xffb", "A\xffB"},
		{"", ""},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, listed, presented string) {
		// One list each, so a match can only come from the list tested.
		emails := NewAllowList(nil, []string{listed}, nil)
		subs := NewAllowList([]string{listed}, nil, nil)
		groups := NewAllowList(nil, nil, []string{listed})

		verified := &provider.Identity{Subject: presented, Email: presented, EmailVerified: true, Groups: []string{presented}}
		if got, want := emails.Allows(verified), listed != "" && presented != "" && asciiLowered(listed) == asciiLowered(presented); got != want {
			t.Errorf("email %q against ALLOW_EMAILS %q: allowed %v, want %v", presented, listed, got, want)
		}
		if emails.Allows(&provider.Identity{Subject: presented, Email: presented}) {
			t.Errorf("unverified email %q against ALLOW_EMAILS %q: allowed", presented, listed)
		}
		if got, want := subs.Allows(verified), listed != "" && presented == listed; got != want {
			t.Errorf("sub %q against ALLOW_SUBS %q: allowed %v, want %v", presented, listed, got, want)
		}
		if got, want := groups.Allows(verified), listed != "" && presented == listed; got != want {
			t.Errorf("group %q against ALLOW_GROUPS %q: allowed %v, want %v", presented, listed, got, want)
		}
	})
}
