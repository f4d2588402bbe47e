package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// run runs doctor against url with cfg's other fields, within 30 s.
func run(t *testing.T, url string, cfg Config) *Report {
	t.Helper()
	cfg.URL = url
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return r
}

// find returns the check with id, failing the test if there is none.
func find(t *testing.T, r *Report, id string) Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.ID == id {
			return c
		}
	}
	t.Fatalf("no check %q in:\n%s", id, text(r))
	return Check{}
}

func has(r *Report, id string) bool {
	for _, c := range r.Checks {
		if c.ID == id {
			return true
		}
	}
	return false
}

func text(r *Report) string {
	var b bytes.Buffer
	_ = r.WriteText(&b)
	return b.String()
}

// expect checks the status of id, and that warnings and failures carry a fix
// and the message holds every want.
func expect(t *testing.T, r *Report, id string, st Status, want ...string) {
	t.Helper()
	c := find(t, r, id)
	if c.Status != st {
		t.Errorf("%s: got %s (%s), want %s\n%s", id, c.Status, c.Message, st, text(r))
		return
	}
	if st != OK && c.Fix == "" {
		t.Errorf("%s: %s without a fix", id, st)
	}
	for _, w := range want {
		if !strings.Contains(c.Message+" fix: "+c.Fix, w) {
			t.Errorf("%s: %q lacks %q", id, c.Message+" fix: "+c.Fix, w)
		}
	}
}

func TestCorrectServer(t *testing.T) {
	f := newFake(t, nil)
	r := run(t, f.Resource, Config{})
	for _, c := range r.Checks {
		want := OK
		if c.ID == "tls" {
			want = Warn // plain http on loopback
		}
		if c.Status != want {
			t.Errorf("%s: got %s (%s), want %s", c.ID, c.Status, c.Message, want)
		}
	}
	for _, id := range []string{"challenge", "challenge.metadata", "challenge.scope", "cors", "prm", "prm.resource",
		"prm.authorization_servers", "as.discovery", "as.issuer", "as.endpoints", "as.pkce", "as.registration", "as.iss"} {
		find(t, r, id)
	}
	if r.Failed {
		t.Error("report failed")
	}
}

// TestBrokenServers breaks one thing per case and checks the one check that
// must notice it.
func TestBrokenServers(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(f *fake)
		id     string
		status Status
		want   []string
	}{
		{"wrong resource", func(f *fake) { f.PRM["resource"] = f.URL + "/other" }, "prm.resource", Fail, []string{"does not match", "RFC 9728 §3.3"}},
		{"resource with a trailing slash", func(f *fake) { f.PRM["resource"] = f.Resource + "/" }, "prm.resource", Fail, []string{"trailing slash"}},
		{"resource is the origin", func(f *fake) { f.PRM["resource"] = f.URL }, "prm.resource", Warn, []string{"parent"}},
		{"resource on another origin", func(f *fake) { f.PRM["resource"] = "https://elsewhere.example/mcp" }, "prm.resource", Fail, nil},
		{"no resource", func(f *fake) { delete(f.PRM, "resource") }, "prm.resource", Fail, nil},
		{"no authorization servers", func(f *fake) { f.PRM["authorization_servers"] = []any{} }, "prm.authorization_servers", Fail, nil},
		{"authorization server over http", func(f *fake) { f.PRM["authorization_servers"] = []any{"http://as.example.com"} }, "prm.authorization_servers", Fail, []string{"not https"}},
		{"offline_access advertised", func(f *fake) { f.PRM["scopes_supported"] = []any{"mcp", "offline_access"} }, "prm.scopes", Warn, nil},
		{"issuer mismatch", func(f *fake) { f.AS["issuer"] = f.URL + "/tenant" }, "as.issuer", Fail, []string{"RFC 8414 §3.3"}},
		{"issuer with a trailing slash", func(f *fake) { f.AS["issuer"] = f.URL + "/" }, "as.issuer", Fail, []string{"trailing slash"}},
		{"no S256", func(f *fake) { f.AS["code_challenge_methods_supported"] = []any{"plain"} }, "as.pkce", Fail, []string{"S256"}},
		{"PKCE not advertised", func(f *fake) { delete(f.AS, "code_challenge_methods_supported") }, "as.pkce", Fail, nil},
		{"PKCE methods a string", func(f *fake) { f.AS["code_challenge_methods_supported"] = "S256" }, "as.pkce", Fail, []string{"not an array of strings", "whole document"}},
		{"PKCE methods not all strings", func(f *fake) { f.AS["code_challenge_methods_supported"] = []any{1, "S256"} }, "as.pkce", Fail, []string{"not an array of strings"}},
		{"authorization servers not strings", func(f *fake) { f.PRM["authorization_servers"] = []any{nil, 5} }, "prm.authorization_servers", Fail, []string{"not an array of strings"}},
		{"no token endpoint", func(f *fake) { delete(f.AS, "token_endpoint") }, "as.endpoints", Fail, []string{"token_endpoint"}},
		{"no code response type", func(f *fake) { f.AS["response_types_supported"] = []any{"token"} }, "as.endpoints", Fail, nil},
		{"no WWW-Authenticate", func(f *fake) { f.Challenge = "" }, "challenge", Fail, []string{"without a WWW-Authenticate"}},
		{"unparseable challenge", func(f *fake) { f.Challenge = `Bearer resource_metadata="https://x` }, "challenge", Fail, []string{"unparseable"}},
		{"no Bearer challenge", func(f *fake) { f.Challenge = `Basic realm="x"` }, "challenge", Fail, []string{"no Bearer"}},
		{"no resource_metadata", func(f *fake) { f.Challenge = `Bearer scope="mcp"` }, "challenge.metadata", Warn, nil},
		{"relative resource_metadata", func(f *fake) { f.Challenge = `Bearer resource_metadata="/.well-known/oauth-protected-resource"` }, "challenge.metadata", Fail, nil},
		{"no scope", func(f *fake) {
			f.Challenge = `Bearer resource_metadata="` + f.URL + `/.well-known/oauth-protected-resource/mcp"`
		}, "challenge.scope", Warn, nil},
		{"offline_access challenged", func(f *fake) {
			f.Challenge = `Bearer resource_metadata="` + f.URL + `/.well-known/oauth-protected-resource/mcp", scope="mcp offline_access"`
		}, "challenge.scope", Warn, []string{"offline_access"}},
		{"403 without a token", func(f *fake) { f.Status = http.StatusForbidden }, "challenge", Fail, []string{"403"}},
		{"open endpoint", func(f *fake) { f.Status = http.StatusOK }, "challenge", Fail, []string{"no authorization"}},
		{"no CORS exposure", func(f *fake) { f.Expose = false }, "cors", Warn, []string{"WWW-Authenticate"}},
		{"no CORS", func(f *fake) { f.CORS = false }, "cors", Warn, []string{"Access-Control-Allow-Origin"}},
		{"challenge URL answers 404", func(f *fake) { f.PRMPaths = []string{"/.well-known/oauth-protected-resource"} }, "prm", Fail, []string{"look only at the challenge's URL"}},
		{"metadata only at the root", func(f *fake) {
			f.Challenge = `Bearer scope="mcp"`
			f.PRMPaths = []string{"/.well-known/oauth-protected-resource"}
		}, "prm", OK, []string{"/.well-known/oauth-protected-resource"}},
		{"metadata only as OpenID discovery", func(f *fake) {
			f.ASPaths = []string{"/.well-known/openid-configuration"}
			f.AS["jwks_uri"] = f.URL + "/jwks"
			f.AS["subject_types_supported"] = []any{"public"}
			f.AS["id_token_signing_alg_values_supported"] = []any{"RS256"}
		}, "as.discovery", OK, []string{"OpenID"}},
		{"OpenID discovery without its required fields", func(f *fake) { f.ASPaths = []string{"/.well-known/openid-configuration"} }, "as.endpoints", Fail, []string{"jwks_uri"}},
		{"neither DCR nor CIMD", func(f *fake) { delete(f.AS, "registration_endpoint") }, "as.registration", Warn, []string{"entered by hand"}},
		{"CIMD only without none", func(f *fake) {
			delete(f.AS, "registration_endpoint")
			f.AS["client_id_metadata_document_supported"] = true
			f.AS["token_endpoint_auth_methods_supported"] = []any{"client_secret_basic"}
		}, "as.registration", Fail, []string{"claude.ai"}},
		{"CIMD only", func(f *fake) {
			delete(f.AS, "registration_endpoint")
			f.AS["client_id_metadata_document_supported"] = true
		}, "as.registration", Warn, []string{"Inspector"}},
		{"CIMD and DCR", func(f *fake) { f.AS["client_id_metadata_document_supported"] = true }, "as.registration", OK, []string{"CIMD"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, tt.edit)
			r := run(t, f.Resource, Config{})
			expect(t, r, tt.id, tt.status, tt.want...)
			if got := r.Failed; got != (tt.status == Fail) && tt.id != "challenge" {
				// Other checks may fail as a consequence only when this one fails.
				t.Errorf("report failed = %v, want %v\n%s", got, tt.status == Fail, text(r))
			}
		})
	}
}

func TestNoMetadataAnywhere(t *testing.T) {
	f := newFake(t, func(f *fake) { f.PRM, f.AS = nil, nil })
	r := run(t, f.Resource, Config{})
	expect(t, r, "prm", Fail, "/.well-known/oauth-protected-resource/mcp (404)", "/.well-known/oauth-protected-resource (404)")
	expect(t, r, "as.discovery", Fail, "/.well-known/oauth-authorization-server (404)", "/.well-known/openid-configuration (404)")
	if !r.Failed {
		t.Error("report did not fail")
	}
	if has(r, "as.issuer") {
		t.Error("issuer checked without metadata")
	}
}

func TestLegacyFallbackToTheOrigin(t *testing.T) {
	f := newFake(t, func(f *fake) {
		f.PRM = nil
		f.Challenge = `Bearer realm="mcp"`
	})
	r := run(t, f.Resource, Config{})
	expect(t, r, "prm", Fail)
	expect(t, r, "as.discovery", OK, "legacy fallback")
	expect(t, r, "as.issuer", OK)
}

func TestIssuerWithAPath(t *testing.T) {
	f := newFake(t, func(f *fake) {
		f.PRM["authorization_servers"] = []any{f.URL + "/tenant"}
		f.AS["issuer"] = f.URL + "/tenant"
		f.ASPaths = []string{"/tenant/.well-known/openid-configuration"}
		f.AS["jwks_uri"] = f.URL + "/jwks"
		f.AS["subject_types_supported"] = []any{"public"}
		f.AS["id_token_signing_alg_values_supported"] = []any{"RS256"}
	})
	r := run(t, f.Resource, Config{})
	// RFC 8414 path insertion, then OpenID with insertion, then OpenID
	// appended: found at the third.
	expect(t, r, "as.discovery", OK, "/tenant/.well-known/openid-configuration")
	expect(t, r, "as.issuer", OK)
}

func TestServerErrorStopsDiscovery(t *testing.T) {
	f := newFake(t, func(f *fake) {
		f.Errors = map[string]int{"/.well-known/oauth-authorization-server": http.StatusInternalServerError}
		f.ASPaths = []string{"/.well-known/openid-configuration"}
	})
	r := run(t, f.Resource, Config{})
	expect(t, r, "as.discovery", Fail, "/.well-known/oauth-authorization-server (500)")

	f = newFake(t, func(f *fake) {
		f.Errors = map[string]int{"/.well-known/oauth-protected-resource/mcp": http.StatusInternalServerError}
		f.Challenge = `Bearer scope="mcp"`
	})
	r = run(t, f.Resource, Config{})
	expect(t, r, "prm", Fail, "/.well-known/oauth-protected-resource/mcp (500)")
}

// TestFacade is the facade problem without the gateway: metadata with the
// server's own issuer, the login at a provider that sends its own iss.
func TestFacade(t *testing.T) {
	for _, tt := range []struct {
		name       string
		path       string // the provider's issuer path
		advertises bool
		status     Status
		want       string
	}{
		{"provider at the root sends iss", "", true, Fail, "is a rewrite of"},
		{"provider under a path sends iss", "/realms/mcp", true, Fail, "is a rewrite of"},
		{"provider does not advertise iss", "", false, Warn, "--login"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			prov := newFake(t, func(p *fake) {
				iss := p.URL + tt.path
				p.AS["issuer"] = iss
				p.AS["authorization_endpoint"] = iss + "/protocol/openid-connect/auth"
				p.AS["authorization_response_iss_parameter_supported"] = tt.advertises
				if tt.path == "" {
					p.ASPaths = []string{"/.well-known/openid-configuration"}
				} else {
					p.ASPaths = []string{tt.path + "/.well-known/openid-configuration"}
				}
			})
			f := newFake(t, func(f *fake) {
				f.AS["authorization_endpoint"] = prov.URL + tt.path + "/protocol/openid-connect/auth"
				f.AS["token_endpoint"] = prov.URL + tt.path + "/protocol/openid-connect/token"
				delete(f.AS, "authorization_response_iss_parameter_supported") // as a facade hides it
			})
			r := run(t, f.Resource, Config{})
			expect(t, r, "as.iss", tt.status, tt.want)
			if tt.status == Fail {
				expect(t, r, "as.iss", Fail, prov.URL+tt.path, "AUTH_SERVER_MODE=broker", "RFC 9207")
			}
		})
	}
	t.Run("provider metadata not found", func(t *testing.T) {
		prov := newFake(t, func(p *fake) { p.AS = nil })
		f := newFake(t, func(f *fake) { f.AS["authorization_endpoint"] = prov.URL + "/authorize" })
		r := run(t, f.Resource, Config{})
		expect(t, r, "as.iss", Warn, "not found")
	})
	t.Run("advertised but the login is elsewhere", func(t *testing.T) {
		prov := newFake(t, func(p *fake) {
			p.AS["authorization_response_iss_parameter_supported"] = false
			p.ASPaths = []string{"/.well-known/oauth-authorization-server"}
		})
		f := newFake(t, func(f *fake) { f.AS["authorization_endpoint"] = prov.URL + "/authorize" })
		r := run(t, f.Resource, Config{})
		expect(t, r, "as.iss", Fail, "advertises iss")
	})
}

func TestSlowServerTimesOut(t *testing.T) {
	f := newFake(t, func(f *fake) { f.Slow = true })
	start := time.Now()
	r := run(t, f.Resource, Config{RequestTimeout: 200 * time.Millisecond})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s against a server that never answers", d)
	}
	expect(t, r, "challenge", Fail, "no answer within 200ms")
	expect(t, r, "prm", Fail, "no answer within 200ms")
}

func TestOverallDeadline(t *testing.T) {
	f := newFake(t, func(f *fake) { f.Slow = true })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	r, err := Run(ctx, Config{URL: f.Resource, RequestTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	expect(t, r, "challenge", Fail, "overall deadline")
}

func TestBodyIsBounded(t *testing.T) {
	f := newFake(t, func(f *fake) {
		f.Challenge = `Bearer scope="mcp"`
		f.PRMPaths = nil
		f.Extra = map[string]string{"/.well-known/oauth-protected-resource/mcp": `{"resource":"` + strings.Repeat("x", 2<<20) + `"}`}
	})
	r := run(t, f.Resource, Config{})
	expect(t, r, "prm", Fail, "over 1048576 bytes")
}

func TestTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Bearer scope="mcp"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()

	r := run(t, srv.URL+"/mcp", Config{})
	expect(t, r, "tls", Fail, "unknown authority")
	if has(r, "challenge") {
		t.Error("went on after the certificate was refused")
	}

	r = run(t, srv.URL+"/mcp", Config{Transport: srv.Client().Transport})
	expect(t, r, "tls", OK, "valid certificate")
	expect(t, r, "port", Warn, "443")
	expect(t, r, "challenge", OK)

	// The test certificate names example.com and loopback addresses, not localhost.
	r = run(t, strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)+"/mcp", Config{Transport: srv.Client().Transport})
	expect(t, r, "tls", Fail, "not localhost")

	soon := srv.Certificate().NotAfter.Add(-24 * time.Hour)
	r = run(t, srv.URL+"/mcp", Config{Transport: srv.Client().Transport, Now: func() time.Time { return soon }})
	expect(t, r, "tls", Warn, "expires in")
}

func TestPlainHTTPOffLoopback(t *testing.T) {
	// A name that resolves nowhere: the tls check needs no connection.
	r := run(t, "http://mcp.invalid/mcp", Config{RequestTimeout: time.Second})
	expect(t, r, "tls", Fail, "plain http")
	expect(t, r, "challenge", Fail)
}

func TestUsage(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{"no url", Config{}},
		{"relative url", Config{URL: "/mcp"}},
		{"ftp", Config{URL: "ftp://x/mcp"}},
		{"fragment", Config{URL: "https://x/mcp#a"}},
		{"user info", Config{URL: "https://u:p@x/mcp"}},
		{"secret without id", Config{URL: "https://x/mcp", Login: &Login{ClientSecret: "s"}}},
		{"bad port", Config{URL: "https://x/mcp", Login: &Login{RedirectPort: 70000}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Run(context.Background(), tt.cfg); !errors.Is(err, ErrUsage) {
				t.Errorf("got %v, want a usage error", err)
			}
		})
	}
}

func TestOutput(t *testing.T) {
	f := newFake(t, func(f *fake) { f.AS["issuer"] = "https://other.example" })
	var seen []string
	r := run(t, f.Resource, Config{OnCheck: func(c Check) { seen = append(seen, c.ID) }})
	if len(seen) != len(r.Checks) {
		t.Errorf("OnCheck saw %d checks, the report has %d", len(seen), len(r.Checks))
	}
	out := text(r)
	if !strings.Contains(out, "FAIL  as.issuer") || !strings.Contains(out, "fix: make the metadata's issuer") {
		t.Errorf("text output:\n%s", out)
	}
	if !strings.HasSuffix(out, "1 FAIL\n") {
		t.Errorf("text output does not end with the counts:\n%s", out)
	}
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Failed bool `json:"failed"`
		Checks []struct {
			ID, Status, Message, Fix string
		} `json:"checks"`
	}
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if !doc.Failed || len(doc.Checks) != len(r.Checks) {
		t.Errorf("JSON: failed %v, %d checks", doc.Failed, len(doc.Checks))
	}
	for _, c := range doc.Checks {
		if c.ID == "as.issuer" && (c.Status != "fail" || c.Fix == "") {
			t.Errorf("JSON as.issuer: %+v", c)
		}
	}
}

func TestRegisterDryRun(t *testing.T) {
	f := newFake(t, nil)
	r := run(t, f.Resource, Config{Register: true})
	expect(t, r, "register", OK, "[CREATED client client-1")
	if f.clientCount() != 1 {
		t.Errorf("the dry run registered %d clients, want 1", f.clientCount())
	}
	if r := run(t, f.Resource, Config{}); has(r, "register") {
		t.Error("registered without --register")
	}

	// A facade's static client comes with a secret: not a public client.
	static := newFake(t, func(f *fake) {
		f.Confidential = true
		f.AS["token_endpoint_auth_methods_supported"] = []any{"client_secret_basic"}
	})
	expect(t, run(t, static.Resource, Config{Register: true}), "register", OK, "a confidential client, with a secret")

	refused := newFake(t, func(f *fake) { f.AS["registration_endpoint"] = f.URL + "/nowhere" })
	expect(t, run(t, refused.Resource, Config{Register: true}), "register", Fail, "[created nothing]", "404")
}

func TestParseChallenges(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		want     []authChallenge
		bad      bool
	}{
		{"bearer with params", `Bearer resource_metadata="https://x/.well-known/oauth-protected-resource", scope="a b"`,
			[]authChallenge{{scheme: "Bearer", params: map[string]string{"resource_metadata": "https://x/.well-known/oauth-protected-resource", "scope": "a b"}}}, false},
		{"unquoted and escaped", `Bearer realm=mcp, error_description="say \"no\""`,
			[]authChallenge{{scheme: "Bearer", params: map[string]string{"realm": "mcp", "error_description": `say "no"`}}}, false},
		{"two challenges", `Basic realm="a", Bearer scope="mcp"`,
			[]authChallenge{{scheme: "Basic", params: map[string]string{"realm": "a"}}, {scheme: "Bearer", params: map[string]string{"scope": "mcp"}}}, false},
		{"token68", `Negotiate abc123==, Bearer`,
			[]authChallenge{{scheme: "Negotiate", params: map[string]string{}, token: "abc123=="}, {scheme: "Bearer", params: map[string]string{}}}, false},
		{"case-insensitive names", `bearer Scope="x"`, []authChallenge{{scheme: "bearer", params: map[string]string{"scope": "x"}}}, false},
		{"unterminated quote", `Bearer scope="x`, nil, true},
		{"no value", `Bearer realm="x", scope=`, nil, true},
		{"token68 is not a parameter", `Bearer scope=`, []authChallenge{{scheme: "Bearer", params: map[string]string{}, token: "scope="}}, false},
		{"duplicate parameter", `Bearer scope="a", scope="b"`, nil, true},
		{"garbage", `="x"`, nil, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseChallenges(tt.in)
			if tt.bad {
				if err == nil {
					t.Errorf("got %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for i := range got {
				g, w := got[i], tt.want[i]
				if g.scheme != w.scheme || g.token != w.token || len(g.params) != len(w.params) {
					t.Errorf("challenge %d: got %+v, want %+v", i, g, w)
				}
				for k, v := range w.params {
					if g.params[k] != v {
						t.Errorf("challenge %d %s: got %q, want %q", i, k, g.params[k], v)
					}
				}
			}
		})
	}
}

func FuzzParseChallenges(f *testing.F) {
	f.Add(`Bearer resource_metadata="https://x", scope="a"`)
	f.Add(`Basic realm="a", Bearer error="invalid_token"`)
	f.Add(`Negotiate abc==`)
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = parseChallenges(s) // must not panic or loop
	})
}

// TestDecodeObjectRefusesTrailingData: a metadata document with more after
// its object ({...}xx, or a second value) is refused by JSON.parse,
// json.loads and json.Unmarshal, so by every client: doctor says so
// instead of passing it, as it did when it read only the first value.
func TestDecodeObjectRefusesTrailingData(t *testing.T) {
	for _, c := range []struct {
		body string
		ok   bool
	}{
		{`{"a":1}`, true},
		{"{\"a\":1}\n  \t", true},
		{`{"a":1}xx`, false},
		{`{"a":1} {"garbage": `, false},
		{`{"a":1}{}`, false},
		{`null`, false},
	} {
		_, err := decodeObject([]byte(c.body))
		if (err == nil) != c.ok {
			t.Errorf("%q: error %v, want ok %v", c.body, err, c.ok)
		}
	}
}
