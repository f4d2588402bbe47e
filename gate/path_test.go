package gate

import (
	"net/netip"
	"strings"
	"testing"
)

func TestCheckPath(t *testing.T) {
	tests := []struct {
		name, path string
		want       int
	}{
		{"root", "/", 0},
		{"plain", "/mcp", 0},
		{"trailing slash", "/mcp/", 0},
		{"encoded space", "/a%20b", 0},
		{"dot inside a name", "/a.b/c..d", 0},
		{"dot dot", "/a/../b", 400},
		{"trailing dot dot", "/a/..", 400},
		{"encoded dot lower", "/%2e%2e/b", 400},
		{"encoded dot upper", "/%2E./b", 400},
		{"encoded slash", "/a%2Fb", 400},
		{"encoded backslash", "/a%5cb", 400},
		{"double encoded", "/a%252fb", 400},
		{"double slash", "/a//b", 400},
		{"semicolon", "/a;b", 400},
		{"backslash", `/a\b`, 400},
		{"nul", "/a\x00", 400},
		{"encoded del", "/a%7f", 400},
		{"bad escape", "/a%zz", 400},
		{"truncated escape", "/a%2", 400},
		{"relative", "mcp", 400},
		{"empty", "", 400},
		{"overlong", "/" + strings.Repeat("a", maxPathBytes), 414},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _ := checkPath(tt.path); got != tt.want {
				t.Errorf("checkPath(%q): got %d, want %d", tt.path, got, tt.want)
			}
		})
	}
}

func TestBearer(t *testing.T) {
	tests := []struct {
		name, header string
		wantToken    string
		wantStatus   bearerStatus
	}{
		{"canonical", "Bearer abc.def-_~+/==", "abc.def-_~+/==", bearerOK},
		{"lower case and tabs", "bearer \t abc", "abc", bearerOK},
		{"no space", "Bearerabc", "", bearerMalformed},
		{"basic", "Basic abc", "", bearerMalformed},
		{"two tokens", "Bearer a b", "", bearerMalformed},
		{"padding in the middle", "Bearer a=b", "", bearerMalformed},
		{"only padding", "Bearer ==", "", bearerMalformed},
		{"comma list", "Bearer a, b", "", bearerMalformed},
		{"too large", "Bearer " + strings.Repeat("a", 11), "", bearerTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, st := bearer(tt.header, 10)
			if tt.name == "canonical" {
				tok, st = bearer(tt.header, 100)
			}
			if tok != tt.wantToken || st != tt.wantStatus {
				t.Errorf("bearer(%q): got %q, %d; want %q, %d", tt.header, tok, st, tt.wantToken, tt.wantStatus)
			}
		})
	}
}

func TestIPKeyGroupsIPv6By64(t *testing.T) {
	a, b := netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2:ffff::9")
	if ipKey(a) != ipKey(b) {
		t.Errorf("ipKey: %v and %v differ, want one /64 key", ipKey(a), ipKey(b))
	}
	if got, want := ipKey(netip.MustParseAddr("::ffff:192.0.2.1")), netip.MustParseAddr("192.0.2.1"); got != want {
		t.Errorf("ipKey of a 4in6 address: got %v, want %v", got, want)
	}
}
