package broker

import (
	"encoding/json"
	"html"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// Registration metadata is validated (RFC 7591 §2, RFC 8252 §7).
func TestRegisterValidation(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		name      string
		md        map[string]any
		wantError string // "" accepts
		wantAuth  string
	}{
		{name: "public client, loopback", md: map[string]any{"redirect_uris": []string{"http://127.0.0.1:1/cb"}}, wantAuth: "none"},
		{name: "localhost", md: map[string]any{"redirect_uris": []string{"http://localhost:6274/oauth/callback"}}, wantAuth: "none"},
		{name: "ipv6 loopback", md: map[string]any{"redirect_uris": []string{"http://[::1]:1/cb"}}, wantAuth: "none"},
		{name: "https", md: map[string]any{"redirect_uris": []string{"https://claude.ai/api/mcp/auth_callback"}}, wantAuth: "none"},
		{name: "private-use scheme", md: map[string]any{"redirect_uris": []string{"com.example.app:/oauth2redirect"}}, wantAuth: "none"},
		{name: "confidential, basic", md: map[string]any{"redirect_uris": []string{"https://a.example/cb"}, "token_endpoint_auth_method": "client_secret_basic"}, wantAuth: "client_secret_basic"},
		{name: "confidential, post", md: map[string]any{"redirect_uris": []string{"https://a.example/cb"}, "token_endpoint_auth_method": "client_secret_post"}, wantAuth: "client_secret_post"},
		{name: "explicit grants and response types", md: map[string]any{"redirect_uris": []string{"https://a.example/cb"}, "grant_types": []string{"authorization_code", "refresh_token"}, "response_types": []string{"code"}}, wantAuth: "none"},
		{name: "unknown fields ignored", md: map[string]any{"redirect_uris": []string{"https://a.example/cb"}, "logo_uri": "https://a.example/l.png", "application_type": "web"}, wantAuth: "none"},

		{name: "no redirect uris", md: map[string]any{"client_name": "x"}, wantError: "invalid_redirect_uri"},
		{name: "empty redirect uris", md: map[string]any{"redirect_uris": []string{}}, wantError: "invalid_redirect_uri"},
		{name: "redirect uris not an array", md: map[string]any{"redirect_uris": "https://a.example/cb"}, wantError: "invalid_redirect_uri"},
		{name: "http, not loopback", md: map[string]any{"redirect_uris": []string{"http://app.example.com/cb"}}, wantError: "invalid_redirect_uri"},
		{name: "http, loopback look-alike", md: map[string]any{"redirect_uris": []string{"http://127.0.0.1.evil.example/cb"}}, wantError: "invalid_redirect_uri"},
		{name: "javascript", md: map[string]any{"redirect_uris": []string{"javascript:alert(1)"}}, wantError: "invalid_redirect_uri"},
		{name: "data", md: map[string]any{"redirect_uris": []string{"data:text/html,x"}}, wantError: "invalid_redirect_uri"},
		{name: "file", md: map[string]any{"redirect_uris": []string{"file:///etc/passwd"}}, wantError: "invalid_redirect_uri"},
		{name: "private-use scheme without a dot", md: map[string]any{"redirect_uris": []string{"myapp:/cb"}}, wantError: "invalid_redirect_uri"},
		{name: "fragment", md: map[string]any{"redirect_uris": []string{"https://a.example/cb#x"}}, wantError: "invalid_redirect_uri"},
		{name: "user info", md: map[string]any{"redirect_uris": []string{"https://user@a.example/cb"}}, wantError: "invalid_redirect_uri"},
		{name: "relative", md: map[string]any{"redirect_uris": []string{"/cb"}}, wantError: "invalid_redirect_uri"},
		{name: "space", md: map[string]any{"redirect_uris": []string{"https://a.example/c b"}}, wantError: "invalid_redirect_uri"},
		{name: "too many", md: map[string]any{"redirect_uris": strings.Split(strings.Repeat("https://a.example/cb,", 11), ",")[:11]}, wantError: "invalid_redirect_uri"},
		{name: "too long", md: map[string]any{"redirect_uris": []string{"https://a.example/" + strings.Repeat("a", 600)}}, wantError: "invalid_redirect_uri"},
		{name: "private_key_jwt", md: map[string]any{"redirect_uris": []string{"https://a.example/cb"}, "token_endpoint_auth_method": "private_key_jwt"}, wantError: "invalid_client_metadata"},
		{name: "client credentials grant", md: map[string]any{"redirect_uris": []string{"https://a.example/cb"}, "grant_types": []string{"client_credentials"}}, wantError: "invalid_client_metadata"},
		{name: "implicit", md: map[string]any{"redirect_uris": []string{"https://a.example/cb"}, "response_types": []string{"token"}}, wantError: "invalid_client_metadata"},
		{name: "name not a string", md: map[string]any{"redirect_uris": []string{"https://a.example/cb"}, "client_name": 7}, wantError: "invalid_client_metadata"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := e.registerRaw(tt.md)
			var reply struct {
				Error    string `json:"error"`
				ClientID string `json:"client_id"`
				Secret   string `json:"client_secret"`
				Expires  *int64 `json:"client_secret_expires_at"`
				Auth     string `json:"token_endpoint_auth_method"`
			}
			if err := json.Unmarshal([]byte(body), &reply); err != nil {
				t.Fatalf("not JSON: %s", body)
			}
			if tt.wantError != "" {
				if status != http.StatusBadRequest || reply.Error != tt.wantError {
					t.Fatalf("got %d %s, want 400 %s", status, body, tt.wantError)
				}
				return
			}
			if status != http.StatusCreated || reply.ClientID == "" || reply.Auth != tt.wantAuth {
				t.Fatalf("got %d %s", status, body)
			}
			if confidential := tt.wantAuth != "none"; confidential != (reply.Secret != "") || confidential != (reply.Expires != nil) {
				t.Fatalf("secret %q expires %v for %s", reply.Secret, reply.Expires, tt.wantAuth)
			}
		})
	}
}

// Registration needs a JSON body.
func TestRegisterRequest(t *testing.T) {
	e := newEnv(t, nil)
	resp, err := (&http.Client{}).Post(e.origin+RegisterPath, "application/x-www-form-urlencoded", strings.NewReader("redirect_uris=x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("form body: %d", resp.StatusCode)
	}
	resp, err = (&http.Client{}).Post(e.origin+RegisterPath, "application/json", strings.NewReader(`{"redirect_uris":["https://a.example/`+strings.Repeat("a", 20<<10)+`"]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("oversized body: %d", resp.StatusCode)
	}
}

// REGISTER_REDIRECT_URIS narrows what may be registered.
func TestRegisterRedirectRules(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.RedirectURIs = []string{"https://claude.ai/api/mcp/auth_callback", "http://localhost:*/oauth/callback", "http://127.0.0.1:*"}
	})
	for _, tt := range []struct {
		uri  string
		want bool
	}{
		{"https://claude.ai/api/mcp/auth_callback", true},
		{"https://claude.ai/api/mcp/auth_callback/x", false},
		{"http://localhost:6274/oauth/callback", true},
		{"http://localhost:6274/other", false},
		{"http://127.0.0.1:9999/anything", true},
		{"http://[::1]:9999/anything", false},
		{"https://a.example/cb", false},
	} {
		status, body := e.registerRaw(map[string]any{"redirect_uris": []string{tt.uri}})
		if got := status == http.StatusCreated; got != tt.want {
			t.Errorf("%s: got %d %s, want accepted %v", tt.uri, status, body, tt.want)
		}
	}
	if _, err := New(Config{ResourceURL: "https://x.example/mcp", Upstream: e.prov, ClientID: "c", RedirectURIs: []string{"https://*.example/cb"}}); err == nil {
		t.Error("a wildcard host in REGISTER_REDIRECT_URIS: got nil error")
	}
}

// A redirect URI whose host only looks like a trusted one is refused at
// registration, whether its look-alike characters come raw or
// percent-encoded (which Go decodes into the host). An internationalized
// host is registered in punycode and shown so on the consent page; a
// registration sealed before the rule never reaches the consent page.
func TestRegisterLookAlikeHosts(t *testing.T) {
	e := newEnv(t, nil)
	for _, uri := range []string{
		"https://cl\u0430ude.ai/api/mcp/auth_callback",
		"https://cl%D0%B0ude.ai/api/mcp/auth_callback",
		"https://evil\u202eia.edualc/api/mcp/auth_callback",
		"https://evil%E2%80%AEia.edualc/api/mcp/auth_callback",
	} {
		status, body := e.registerRaw(map[string]any{"redirect_uris": []string{uri}, "client_name": "Claude"})
		var reply struct {
			Error string `json:"error"`
			Desc  string `json:"error_description"`
		}
		_ = json.Unmarshal([]byte(body), &reply)
		if status != http.StatusBadRequest || reply.Error != "invalid_redirect_uri" || !strings.Contains(reply.Desc, "punycode, xn--") {
			t.Errorf("%q: got %d %s, want 400 invalid_redirect_uri naming punycode", uri, status, body)
		}
	}

	c := e.register(map[string]any{"redirect_uris": []string{"https://xn--80ak6aa92e.com/cb"}, "client_name": "Claude"})
	page := newBrowser(t).get(newAuthRequest(c).url(e.origin))
	if page.status != http.StatusOK || !strings.Contains(page.body, "<code>xn--80ak6aa92e.com</code>") {
		t.Errorf("consent page of a punycode host: %d\n%s", page.status, page.body)
	}

	legacy, err := e.b.seal.seal(purposeClient, time.Time{}, clientRecord{Version: 1, Name: "Claude", Redirects: []string{"https://cl\u0430ude.ai/cb"}})
	if err != nil {
		t.Fatal(err)
	}
	resp := newBrowser(t).get(newAuthRequest(registered{ID: legacy, Redirects: []string{"https://cl\u0430ude.ai/cb"}}).url(e.origin))
	if resp.status != http.StatusBadRequest || resp.header.Get("Location") != "" || strings.Contains(resp.body, "ude.ai") || flowField.MatchString(resp.body) {
		t.Errorf("a registration with a look-alike host: %d Location %q\n%s", resp.status, resp.header.Get("Location"), resp.body)
	}
}

// The client's name is cleaned of control characters and cut.
func TestRegisterClientName(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"  MCP Inspector ", "MCP Inspector"},
		{"a\nb\tc", "a b c"},
		{"safe\u202egnp.exe", "safe gnp.exe"},
		{strings.Repeat("x", 300), strings.Repeat("x", 100)},
	} {
		if got := cleanName(tt.in); got != tt.want {
			t.Errorf("cleanName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// Registrations are sealed with BROKER_SECRET: they survive a restart and
// are known to every replica with the same secret (and, during a rotation,
// the previous one), and to no other.
func TestRegistrationSurvivesRestart(t *testing.T) {
	e := newEnv(t, nil)
	c := e.publicClient()
	other := []byte("a-different-secret-a-different-secret!!")
	for _, tt := range []struct {
		name     string
		secret   []byte
		previous []byte
		want     bool
	}{
		{name: "same secret (restart, replica)", secret: []byte(testSecret), want: true},
		{name: "rotated, old secret as previous", secret: other, previous: []byte(testSecret), want: true},
		{name: "rotated, previous dropped", secret: other, want: false},
		{name: "no secret (random keys)", secret: nil, want: false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(Config{ResourceURL: e.origin + "/mcp", Upstream: e.prov, ClientID: gatewayClientID, Secret: tt.secret, PreviousSecret: tt.previous})
			if err != nil {
				t.Fatal(err)
			}
			_, err = b.lookupClient(t.Context(), c.ID, forAuthorization, "192.0.2.1")
			if got := err == nil; got != tt.want {
				t.Fatalf("client known: got %v, want %v", got, tt.want)
			}
		})
	}
}

// Registration is rate limited per IP.
func TestRegisterRateLimited(t *testing.T) {
	lim := &denyLimiter{budget: 1}
	e := newEnv(t, func(c *Config) { c.RegisterLimiter = lim })
	e.publicClient()
	status, _ := e.registerRaw(map[string]any{"redirect_uris": []string{clientRedirect}})
	if status != http.StatusTooManyRequests {
		t.Fatalf("second registration: %d", status)
	}
	if lim.keys[0] != "broker-register:127.0.0.1" {
		t.Fatalf("key %q", lim.keys[0])
	}
}

// cursorRedirects are the redirect URIs Cursor registers, all in one
// request: its app's private-use scheme (which has no dot), its web
// callback and a loopback one.
var cursorRedirects = []string{
	"cursor://anysphere.cursor-mcp/oauth/callback",
	"https://www.cursor.com/agents/mcp/oauth/callback",
	"http://localhost:8787/callback",
}

// With REGISTER_REDIRECT_SCHEMES listing cursor (the gateway's default),
// Cursor registers, logs in through its cursor:// callback, and gets
// tokens; the consent page names the scheme as where the access goes.
// Without the scheme listed, its registration is refused whole, naming the
// setting, and so is a metadata document's redirect URI of that scheme.
func TestCursorRegistration(t *testing.T) {
	body := map[string]any{
		"client_name":                "Cursor",
		"redirect_uris":              cursorRedirects,
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"token_endpoint_auth_method": "none",
	}
	e := newEnv(t, func(c *Config) { c.RedirectSchemes = []string{"cursor"} })
	c := e.register(body)
	if !slices.Equal(c.Redirects, cursorRedirects) {
		t.Fatalf("registered redirect_uris %q, want %q", c.Redirects, cursorRedirects)
	}
	a := newAuthRequest(c)
	br := newBrowser(t)
	page := br.get(a.url(e.origin))
	consentFlow(t, page)
	for _, want := range []string{"cursor:", "the app on this device that claims this scheme"} {
		if !strings.Contains(html.UnescapeString(page.body), want) {
			t.Errorf("consent page lacks %q\n%s", want, page.body)
		}
	}
	back := e.login(br, a, alice)
	if back.status != http.StatusSeeOther {
		t.Fatalf("callback: status %d\n%s", back.status, back.body)
	}
	to := back.location(t)
	if to.Scheme != "cursor" || to.Host != "anysphere.cursor-mcp" || to.Path != "/oauth/callback" {
		t.Fatalf("sent the browser to %s, want Cursor's callback", to)
	}
	q := to.Query()
	if q.Get("state") != a.state || q.Get("iss") != e.origin || q.Get("code") == "" {
		t.Fatalf("authorization response: %v", q)
	}
	if tr := e.redeem(a, q.Get("code")); tr.status != http.StatusOK || tr.AccessToken == "" {
		t.Fatalf("redeem: %d %s %s", tr.status, tr.Error, tr.Desc)
	}

	var logs testkit.LogBuffer
	strict := newEnv(t, func(c *Config) { c.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, JSONFormat: true}) })
	status, reply := strict.registerRaw(body)
	if status != http.StatusBadRequest || !strings.Contains(reply, "invalid_redirect_uri") || !strings.Contains(reply, "REGISTER_REDIRECT_SCHEMES") {
		t.Errorf("without the scheme listed: %d %s, want 400 invalid_redirect_uri naming REGISTER_REDIRECT_SCHEMES", status, reply)
	}
	// The operator's log says which URI, and why: the client will not.
	logged := false
	for _, l := range testkit.JSONLines(t, logs.String()) {
		if l["@message"] == "registration refused" && l["error"] == "invalid_redirect_uri" &&
			strings.Contains(l["reason"].(string), cursorRedirects[0]) && strings.Contains(l["reason"].(string), "REGISTER_REDIRECT_SCHEMES") {
			logged = true
		}
	}
	if !logged {
		t.Errorf("no registration refused line naming the URI and the setting:\n%s", logs.String())
	}

	ds := newDocServer(t, false)
	id := ds.url("/cursor.json")
	ds.serve("/cursor.json", clientDoc(id, cursorRedirects[0]), "")
	if err := newCIMDEnv(t, ds, true, func(c *Config) { c.RedirectSchemes = []string{"cursor"} }).lookupDoc(id); err != nil {
		t.Errorf("a metadata document with Cursor's callback, the scheme listed: %v", err)
	}
	if err := newCIMDEnv(t, ds, true, nil).lookupDoc(id); err == nil || !strings.Contains(err.Error(), "REGISTER_REDIRECT_SCHEMES") {
		t.Errorf("a metadata document with Cursor's callback, the scheme not listed: %v, want refused naming the setting", err)
	}
}

// TestRefusedRegistrationReasonCutWhole: the logged reason of a refused
// registration is cut at 600 bytes, never inside a character (a log reader
// would see U+FFFD, or JSON a broken string).
func TestRefusedRegistrationReasonCutWhole(t *testing.T) {
	var logs testkit.LogBuffer
	e := newEnv(t, func(c *Config) { c.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, JSONFormat: true}) })
	for _, prefix := range []string{"", "a"} {
		method := prefix + strings.Repeat("\u00e9", 400)
		md := map[string]any{"redirect_uris": []string{"https://x.example/cb"}, "token_endpoint_auth_method": method}
		if status, _ := e.registerRaw(md); status != http.StatusBadRequest {
			t.Fatalf("%q...: status %d, want 400", prefix, status)
		}
	}
	n := 0
	for _, l := range testkit.JSONLines(t, logs.String()) {
		if l["@message"] != "registration refused" {
			continue
		}
		n++
		reason := l["reason"].(string)
		if strings.ContainsRune(reason, utf8.RuneError) || !strings.HasSuffix(reason, "...") || len(reason) > 603 {
			t.Errorf("reason %q: want at most 600 bytes of whole characters, then ...", reason)
		}
	}
	if n != 2 {
		t.Errorf("%d registration refused lines, want 2:\n%s", n, logs.String())
	}
}
