package gate

import (
	"net/url"
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

// FuzzIdentityCompare checks the allow-list's comparisons through a real
// gate: a listed email matches a token's verified email if and only if
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
	u, _ := url.Parse("http://127.0.0.1:1")
	f.Fuzz(func(t *testing.T, listed, presented string) {
		// One gate per list, so a match can only come from the list tested.
		only := func(mod func(*Config)) *gate {
			cfg := Config{Verifier: refuseAll{}, Upstream: Static(u), ResourceMetadataURL: testMetadataURL}
			mod(&cfg)
			h, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			return h.(*gate)
		}
		emails := only(func(c *Config) { c.AllowEmails = []string{listed} })
		subs := only(func(c *Config) { c.AllowSubs = []string{listed} })
		groups := only(func(c *Config) { c.AllowGroups = []string{listed} })

		verified := &provider.Identity{Subject: presented, Email: presented, EmailVerified: true, Groups: []string{presented}}
		if got, want := emails.allowed(verified), listed != "" && presented != "" && asciiLowered(listed) == asciiLowered(presented); got != want {
			t.Errorf("email %q against ALLOW_EMAILS %q: allowed %v, want %v", presented, listed, got, want)
		}
		if emails.allowed(&provider.Identity{Subject: presented, Email: presented}) {
			t.Errorf("unverified email %q against ALLOW_EMAILS %q: allowed", presented, listed)
		}
		if got, want := subs.allowed(verified), listed != "" && presented == listed; got != want {
			t.Errorf("sub %q against ALLOW_SUBS %q: allowed %v, want %v", presented, listed, got, want)
		}
		if got, want := groups.allowed(verified), listed != "" && presented == listed; got != want {
			t.Errorf("group %q against ALLOW_GROUPS %q: allowed %v, want %v", presented, listed, got, want)
		}
	})
}
