package redirecturi

import (
	"strings"
	"testing"
)

// The rows where facade mode's and broker mode's copies of these rules
// used to disagree; wellknown's and broker's attack tables have the rest.
func TestCheckWhereTheCopiesDiffered(t *testing.T) {
	for _, tc := range []struct {
		name, uri string
		ok        bool
	}{
		{"another loopback address", "http://127.0.0.2:8080/cb", false},
		{"ipv6 loopback spelled long", "http://[0:0:0:0:0:0:0:1]:8080/cb", false},
		{"localhost spelled with a long s", "http://localho\u017Ft:8080/cb", false},
		{"a space in the path", "https://a.example/c b", false},
		{"localhost in capitals", "http://LocalHost:8080/cb", true},
		{"ipv6 loopback", "http://[::1]:8080/cb", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := Check(tc.uri, nil); (err == nil) != tc.ok {
				t.Errorf("Check(%q) = %v, want accepted %v", tc.uri, err, tc.ok)
			}
		})
	}
}

// A redirect URI is ASCII (RFC 3986 §2), and its host is ASCII after Go's
// decoding, so the consent page never shows a host that only looks like a
// trusted one. Internationalized hosts are registered in punycode.
func TestCheckASCII(t *testing.T) {
	const punycode = "internationalized host names must be given in punycode"
	for _, tc := range []struct {
		name, uri string
		want      string // a part of the refusal; "" accepts
	}{
		{"cyrillic a in the host", "https://cl\u0430ude.ai/api/mcp/auth_callback", punycode},
		{"cyrillic a percent-encoded in the host", "https://cl%D0%B0ude.ai/api/mcp/auth_callback", punycode},
		{"right-to-left override in the host", "https://evil\u202eia.edualc/cb", punycode},
		{"right-to-left override percent-encoded in the host", "https://evil%E2%80%AEia.edualc/cb", punycode},
		{"non-ascii host of a private-use scheme", "com.example.app://cl\u0430ude/cb", punycode},
		{"non-ascii loopback look-alike", "http://l\u043ecalhost:8080/cb", punycode},
		{"non-ascii path", "https://claude.ai/c\u0430llback", "must be ASCII"},
		{"non-ascii query", "https://claude.ai/cb?x=\u00e9", "must be ASCII"},
		{"invalid utf-8", "https://claude.ai/cb\xff", "must be ASCII"},
		{"punycode host", "https://xn--claude-0ib.ai/cb", ""},
		{"percent-encoded path", "https://claude.ai/c%D0%B0llback", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.uri, nil)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Check(%q) = %v, want accepted", tc.uri, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Check(%q) = %v, want an error saying %q", tc.uri, err, tc.want)
			}
		})
	}
	if _, err := ParseList([]string{"https://cl\u0430ude.ai/cb"}); err == nil {
		t.Error("REGISTER_REDIRECT_URIS accepted a non-ascii host")
	}
}

// REGISTER_REDIRECT_SCHEMES: a listed private-use scheme without a dot is
// accepted when its URI names a host or a path; an unlisted one, and the
// same URI without the list, are not. Cursor registers the first three
// URIs in one request, so refusing its cursor:// one refused Cursor.
func TestCheckWithSchemes(t *testing.T) {
	schemes := []string{"cursor"}
	for _, tc := range []struct {
		name, uri string
		ok        bool
	}{
		{"cursor's callback", "cursor://anysphere.cursor-mcp/oauth/callback", true},
		{"cursor's web callback", "https://www.cursor.com/agents/mcp/oauth/callback", true},
		{"cursor's loopback callback", "http://localhost:8787/callback", true},
		{"the scheme in capitals", "CURSOR://anysphere.cursor-mcp/oauth/callback", true},
		{"a path only", "cursor:/oauth/callback", true},
		{"opaque", "cursor:callback", true},
		{"nothing after the scheme", "cursor:", false},
		{"nothing after the slashes", "cursor://", false},
		{"user information", "cursor://user@anysphere.cursor-mcp/cb", false},
		{"a fragment", "cursor://anysphere.cursor-mcp/cb#x", false},
		{"a space", "cursor://anysphere.cursor-mcp/c b", false},
		{"a scheme not listed", "windsurf://codeium.windsurf/cb", false},
		{"a scheme that begins with a listed one", "cursorx://a/cb", false},
		{"javascript stays refused", "javascript://%0aalert(1)", false},
		{"http elsewhere stays refused", "http://evil.example/cb", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := Check(tc.uri, schemes); (err == nil) != tc.ok {
				t.Errorf("Check(%q, %q) = %v, want accepted %v", tc.uri, schemes, err, tc.ok)
			}
		})
	}
	if err := Check("cursor://anysphere.cursor-mcp/oauth/callback", nil); err == nil {
		t.Error("a private-use scheme without a dot was accepted without REGISTER_REDIRECT_SCHEMES")
	} else if !strings.Contains(err.Error(), "REGISTER_REDIRECT_SCHEMES") {
		t.Errorf("the refusal does not name REGISTER_REDIRECT_SCHEMES: %v", err)
	}
}

// TestCheckScheme: an operator's REGISTER_REDIRECT_SCHEMES entry must be a
// scheme that only an app on the user's device can claim.
func TestCheckScheme(t *testing.T) {
	for _, tc := range []struct {
		entry, want string // want "": refused
	}{
		{"cursor", "cursor"},
		{" Cursor ", "cursor"},
		{"vscode-insiders", "vscode-insiders"},
		{"x-my+app.v2", "x-my+app.v2"},
		{"com.example.app", "com.example.app"},

		{"", ""},
		{"cursor:", ""},
		{"cursor://", ""},
		{"1app", ""},
		{"my app", ""},
		{"my_app", ""},
		{"curſor", ""},
		{"http", ""},
		{"HTTPS", ""},
		{"javascript", ""},
		{"JavaScript", ""},
		{"data", ""},
		{"file", ""},
		{"blob", ""},
		{"about", ""},
		{"vbscript", ""},
		{"intent", ""},
		{"chrome-extension", ""},
		{"ws", ""},
		{"mailto", ""},
		{"tel", ""},
		{"web+evil", ""},
		{"Web+Evil", ""},
	} {
		got, err := CheckScheme(tc.entry)
		if tc.want == "" {
			if err == nil {
				t.Errorf("CheckScheme(%q) = %q, want refused", tc.entry, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("CheckScheme(%q) = %q, %v; want %q", tc.entry, got, err, tc.want)
		}
	}
}

func TestRegistered(t *testing.T) {
	registered := []string{"https://app.example.com/cb", "http://127.0.0.1:1234/cb", "http://localhost/cb"}
	for _, tc := range []struct {
		presented string
		want      bool
	}{
		{"https://app.example.com/cb", true},
		{"https://app.example.com:443/cb", false},
		{"https://APP.example.com/cb", false},
		{"http://127.0.0.1:55555/cb", true},
		{"http://127.0.0.1/cb", true},
		{"http://LOCALHOST:8080/cb", true},
		{"http://localho\u017Ft:8080/cb", false},
		{"http://127.0.0.1:55555/cb?x=1", false},
		{"http://127.0.0.1:55555/cb#x", false},
		{"http://127.0.0.1:99999/cb", false},
		{"http://[::1]:1234/cb", false},
		{"https://127.0.0.1:1234/cb", false},
	} {
		if got := Registered(registered, tc.presented); got != tc.want {
			t.Errorf("Registered(%q) = %v, want %v", tc.presented, got, tc.want)
		}
	}
}

func TestList(t *testing.T) {
	l, err := ParseList([]string{" https://claude.ai/cb ", "", "HTTP://LOCALHOST:*/oauth/callback", "http://[::1]:*"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		uri  string
		want bool
	}{
		{"https://claude.ai/cb", true},
		{"https://claude.ai/cb/x", false},
		{"http://localhost:6274/oauth/callback", true},
		{"http://localhost:6274/oauth/callback?x=1", false},
		{"http://localhost:6274/other", false},
		{"http://[::1]:9/anything", true},
		{"http://127.0.0.1:9/anything", false},
	} {
		if got := l.Allows(tc.uri); got != tc.want {
			t.Errorf("Allows(%q) = %v, want %v", tc.uri, got, tc.want)
		}
	}
	if (List{}).Allows("https://claude.ai/cb") {
		t.Error("an empty list allowed a URI")
	}
	for _, bad := range []string{"https://*.example/cb", "http://127.0.0.1:*?x", "http://127.0.0.1:*x", "/cb", "https://a.example/cb#x"} {
		if _, err := ParseList([]string{bad}); err == nil {
			t.Errorf("ParseList(%q): got nil error", bad)
		}
	}
	if !IsPattern("http://127.0.0.1:*/cb") || IsPattern("https://claude.ai/cb") {
		t.Error("IsPattern does not tell patterns from exact URIs")
	}
}
