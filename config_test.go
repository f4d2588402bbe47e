package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

func validEnv() map[string]string {
	return map[string]string{
		"OIDC_ISSUER_URL":  "https://auth.example.com/application/o/my-mcp/",
		"OIDC_AUDIENCE":    "my-mcp",
		"RESOURCE_URL":     "https://mcp.example.com",
		"ALLOW_EMAILS":     "Me@Example.com",
		"MCP_UPSTREAM_URL": "http://127.0.0.1:8765",
	}
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := parseConfig(nil, envOf(validEnv()), false)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"port", c.Listen.Port, 8080},
		{"rate limit", c.RateLimitRPM, 60},
		{"log level", c.Log.Level, hclog.Info},
		{"mode", c.WellKnown.Mode, "facade"},
		{"groups claim", c.Provider.GroupsClaim, "groups"},
		{"issuer for the provider", c.Provider.IssuerURL, "https://auth.example.com/application/o/my-mcp/"},
		{"issuer for the discovery documents", c.WellKnown.IssuerURL, c.Provider.IssuerURL},
		{"cors", strings.Join(c.Gate.CORSOrigins, ","), "https://claude.ai,https://claude.com"},
		{"scopes advertised", strings.Join(c.WellKnown.Scopes, ","), "openid,profile,email,offline_access"},
		{"scopes challenged", strings.Join(c.Gate.ChallengeScopes, ","), "openid,profile,email,offline_access"},
		{"emails lower-cased", c.Gate.AllowEmails[0], "me@example.com"},
		{"drain grace", c.Listen.ShutdownGrace, 10 * time.Second},
		{"child's stop grace", c.Supervisor.StopGrace, 10 * time.Second},
		{"skew", c.Provider.ClockSkew, 30 * time.Second},
		{"jwks cooldown", c.Provider.RefreshCooldown, 30 * time.Second},
		{"ready timeout", c.Supervisor.ReadyTimeout, 120 * time.Second},
		{"max token bytes", c.Gate.MaxTokenBytes, 16384},
		{"max body", c.Gate.MaxBodyBytes, int64(10 << 20)},
		{"audit reads the gate's default", c.Gate.MCPAuditBytes, 0},
		{"upstream", c.Upstream.String(), "http://127.0.0.1:8765"},
		{"not spawned", c.Spawned(), false},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestParseConfigFlagBeatsEnv(t *testing.T) {
	env := validEnv()
	env["PORT"] = "not a port" // never read: the flag wins
	c, err := parseConfig([]string{"--port", "9001", "--oidc-audience=a,b"}, envOf(env), false)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if c.Listen.Port != 9001 {
		t.Errorf("got port %d, want 9001 (the flag)", c.Listen.Port)
	}
	if got := strings.Join(c.Provider.Audiences, "|"); got != "a|b" {
		t.Errorf("got audiences %q, want a|b", got)
	}
}

func TestParseConfigLauncherForm(t *testing.T) {
	env := validEnv()
	delete(env, "MCP_UPSTREAM_URL")
	c, err := parseConfig([]string{"--port", "0", "--", "npx", "-y", "some server", "--port", "{port}"}, envOf(env), false)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if got, want := strings.Join(c.Supervisor.Args, "|"), "npx|-y|some server|--port|{port}"; got != want {
		t.Errorf("got args %q, want %q", got, want)
	}
	if c.Supervisor.Port != 0 || !c.Spawned() {
		t.Errorf("got port %d spawned %v, want 0 true", c.Supervisor.Port, c.Spawned())
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(map[string]string)
		args []string
		want []string // each must appear in the error
	}{
		{"nothing set", func(m map[string]string) {
			for k := range m {
				delete(m, k)
			}
		}, nil, []string{"OIDC_ISSUER_URL is required", "OIDC_AUDIENCE is required", "RESOURCE_URL is required", "ALLOW_SUBS, ALLOW_EMAILS or ALLOW_GROUPS", "MCP_UPSTREAM_URL, MCP_SPAWN_CMD", "mcp-oauth-proxy dev", "see mcp-oauth-proxy --help"}},
		{"http issuer off loopback", func(m map[string]string) { m["OIDC_ISSUER_URL"] = "http://auth.example.com" }, nil, []string{"OIDC_ISSUER_URL", "https"}},
		{"issuer with user information", func(m map[string]string) { m["OIDC_ISSUER_URL"] = "http://admin:s3cret@127.0.0.1:18299" }, nil, []string{"OIDC_ISSUER_URL must not contain user information"}},
		{"issuer with an empty query", func(m map[string]string) { m["OIDC_ISSUER_URL"] = "https://auth.example.com/?" }, nil, []string{"OIDC_ISSUER_URL", "query or fragment"}},
		{"issuer with an empty fragment", func(m map[string]string) { m["OIDC_ISSUER_URL"] = "https://auth.example.com/#" }, nil, []string{"OIDC_ISSUER_URL", "query or fragment"}},
		{"resource with query", func(m map[string]string) { m["RESOURCE_URL"] = "https://mcp.example.com/?a=1" }, nil, []string{"RESOURCE_URL", "query or fragment"}},
		{"resource with fragment", func(m map[string]string) { m["RESOURCE_URL"] = "https://mcp.example.com/#x" }, nil, []string{"RESOURCE_URL", "query or fragment"}},
		{"resource relative", func(m map[string]string) { m["RESOURCE_URL"] = "/mcp" }, nil, []string{"RESOURCE_URL", "absolute"}},
		{"resource of another scheme", func(m map[string]string) { m["RESOURCE_URL"] = "ftp://mcp.example.com/mcp" }, nil, []string{"RESOURCE_URL", "absolute http(s)"}},
		{"resource with user information", func(m map[string]string) { m["RESOURCE_URL"] = "https://u:p@mcp.example.com/mcp" }, nil, []string{"RESOURCE_URL", "user information"}},
		{"resource with dot segments", func(m map[string]string) { m["RESOURCE_URL"] = "https://mcp.example.com/a/../mcp" }, nil, []string{"RESOURCE_URL", "clean path"}},
		{"resource with an encoded control byte", func(m map[string]string) { m["RESOURCE_URL"] = "https://mcp.example.com/%00" }, nil, []string{"RESOURCE_URL", "path of letters", "control byte"}},
		{"resource with an encoded space", func(m map[string]string) { m["RESOURCE_URL"] = "https://mcp.example.com/a%20b" }, nil, []string{"RESOURCE_URL", "path of letters", "not allowed"}},
		{"resource with encoded UTF-8", func(m map[string]string) { m["RESOURCE_URL"] = "https://mcp.example.com/a%C3%A9" }, nil, []string{"RESOURCE_URL", "path of letters"}},
		{"resource with an encoded percent", func(m map[string]string) { m["RESOURCE_URL"] = "https://mcp.example.com/a%2541" }, nil, []string{"RESOURCE_URL", "path of letters", "encoded ; or %"}},
		{"both upstreams", func(m map[string]string) { m["MCP_SPAWN_CMD"] = "x" }, nil, []string{"MCP_UPSTREAM_URL and MCP_SPAWN_CMD"}},
		{"launcher and spawn cmd", func(m map[string]string) { delete(m, "MCP_UPSTREAM_URL"); m["MCP_SPAWN_CMD"] = "x" }, []string{"--", "y"}, []string{"-- and MCP_SPAWN_CMD"}},
		{"launcher and upstream url", func(m map[string]string) {}, []string{"--", "y"}, []string{"-- and MCP_UPSTREAM_URL"}},
		{"spawn port without command", func(m map[string]string) { m["MCP_SPAWN_PORT"] = "3000" }, nil, []string{"MCP_SPAWN_PORT is set but nothing is spawned"}},
		{"bad spawn port", func(m map[string]string) {
			delete(m, "MCP_UPSTREAM_URL")
			m["MCP_SPAWN_CMD"] = "x"
			m["MCP_SPAWN_PORT"] = "70000"
		}, nil, []string{"MCP_SPAWN_PORT"}},
		{"spawn port is the gateway's port", func(m map[string]string) {
			delete(m, "MCP_UPSTREAM_URL")
			m["MCP_SPAWN_CMD"], m["MCP_SPAWN_PORT"], m["PORT"] = "x", "8080", "8080"
		}, nil, []string{"MCP_SPAWN_PORT (8080) is the gateway's own PORT"}},
		{"spawn port is the gateway's port on every address", func(m map[string]string) {
			delete(m, "MCP_UPSTREAM_URL")
			m["MCP_SPAWN_CMD"], m["MCP_SPAWN_PORT"], m["PORT"], m["LISTEN_HOST"] = "x", "9000", "9000", "::"
		}, nil, []string{"MCP_SPAWN_PORT (9000) is the gateway's own PORT"}},
		{"ready path with a bad escape", func(m map[string]string) {
			delete(m, "MCP_UPSTREAM_URL")
			m["MCP_SPAWN_CMD"], m["MCP_SPAWN_READY_PATH"] = "x", "/%zz"
		}, nil, []string{`MCP_SPAWN_READY_PATH "/%zz" is not a URL path such as /healthz: a % must start two hexadecimal digits`}},
		{"ready path with a space", func(m map[string]string) {
			delete(m, "MCP_UPSTREAM_URL")
			m["MCP_SPAWN_CMD"], m["MCP_SPAWN_READY_PATH"] = "x", "/health check"
		}, nil, []string{`MCP_SPAWN_READY_PATH "/health check" is not a URL path`, `" " must be percent-encoded`}},
		{"ready path with a fragment", func(m map[string]string) {
			delete(m, "MCP_UPSTREAM_URL")
			m["MCP_SPAWN_CMD"], m["MCP_SPAWN_READY_PATH"] = "x", "/health#x"
		}, nil, []string{"MCP_SPAWN_READY_PATH", `"#" must be percent-encoded`}},
		{"spawn port is the metrics port", func(m map[string]string) {
			delete(m, "MCP_UPSTREAM_URL")
			m["MCP_SPAWN_CMD"], m["MCP_SPAWN_PORT"], m["METRICS_ADDR"] = "x", "9090", "127.0.0.1:9090"
		}, nil, []string{"MCP_SPAWN_PORT (9090) is the port of METRICS_ADDR (127.0.0.1:9090)"}},
		{"spawn port is the metrics port on every address", func(m map[string]string) {
			delete(m, "MCP_UPSTREAM_URL")
			m["MCP_SPAWN_CMD"], m["MCP_SPAWN_PORT"], m["METRICS_ADDR"] = "x", "9090", ":9090"
		}, nil, []string{"MCP_SPAWN_PORT (9090) is the port of METRICS_ADDR"}},
		{"spawn port is the metrics port on 0.0.0.0", func(m map[string]string) {
			delete(m, "MCP_UPSTREAM_URL")
			m["MCP_SPAWN_CMD"], m["MCP_SPAWN_PORT"], m["METRICS_ADDR"] = "x", "9090", "0.0.0.0:9090"
		}, nil, []string{"MCP_SPAWN_PORT (9090) is the port of METRICS_ADDR"}},
		{"spawn port is the metrics port on localhost", func(m map[string]string) {
			delete(m, "MCP_UPSTREAM_URL")
			m["MCP_SPAWN_CMD"], m["MCP_SPAWN_PORT"], m["METRICS_ADDR"] = "x", "9090", "localhost:9090"
		}, nil, []string{"MCP_SPAWN_PORT (9090) is the port of METRICS_ADDR"}},
		{"half a static client", func(m map[string]string) { m["STATIC_CLIENT_ID"] = "id" }, nil, []string{"STATIC_CLIENT_ID and STATIC_CLIENT_SECRET"}},
		{"static client in direct mode", func(m map[string]string) {
			m["STATIC_CLIENT_ID"], m["STATIC_CLIENT_SECRET"], m["AUTH_SERVER_MODE"] = "id", "secret", "direct"
		}, nil, []string{"STATIC_CLIENT_ID needs AUTH_SERVER_MODE=facade"}},
		{"zero rate", func(m map[string]string) { m["RATE_LIMIT_RPM"] = "0" }, nil, []string{"RATE_LIMIT_RPM", "at least 1"}},
		{"word rate", func(m map[string]string) { m["RATE_LIMIT_RPM"] = "lots" }, nil, []string{"RATE_LIMIT_RPM", "whole number"}},
		{"bad log level", func(m map[string]string) { m["LOG_LEVEL"] = "loud" }, nil, []string{"LOG_LEVEL", "trace, debug"}},
		{"bad mode", func(m map[string]string) { m["AUTH_SERVER_MODE"] = "proxy" }, nil, []string{"AUTH_SERVER_MODE"}},
		{"bad duration", func(m map[string]string) { m["SHUTDOWN_GRACE"] = "soon" }, nil, []string{"SHUTDOWN_GRACE", "duration"}},
		{"seconds beyond a duration", func(m map[string]string) { m["SHUTDOWN_GRACE"] = "18446744074" }, nil, []string{`SHUTDOWN_GRACE "18446744074" is too large`}},
		{"seconds that would wrap negative", func(m map[string]string) { m["CLOCK_SKEW"] = "9999999999" }, nil, []string{`CLOCK_SKEW "9999999999" is too large`}},
		{"seconds beyond an int64", func(m map[string]string) { m["CLOCK_SKEW"] = "99999999999999999999" }, nil, []string{"CLOCK_SKEW", "is too large"}},
		{"negative seconds beyond an int64", func(m map[string]string) { m["CLOCK_SKEW"] = "-99999999999999999999" }, nil, []string{"CLOCK_SKEW", "must be zero or positive"}},
		{"zero jwks cooldown", func(m map[string]string) { m["JWKS_REFRESH_COOLDOWN"] = "0" }, nil, []string{"JWKS_REFRESH_COOLDOWN", "positive"}},
		{"initial restart delay over the max", func(m map[string]string) { m["MCP_SPAWN_RESTART_INITIAL"] = "1m" }, nil, []string{"MCP_SPAWN_RESTART_INITIAL (1m0s) must not exceed MCP_SPAWN_RESTART_MAX"}},
		{"bad cidr", func(m map[string]string) { m["TRUSTED_PROXIES"] = "10.0.0.0/99" }, nil, []string{"TRUSTED_PROXIES"}},
		{"bad origin", func(m map[string]string) { m["CORS_ALLOW_ORIGINS"] = "claude.ai" }, nil, []string{"CORS_ALLOW_ORIGINS"}},
		{"scope with a space", func(m map[string]string) { m["REQUIRED_SCOPES"] = "mcp read" }, nil, []string{"REQUIRED_SCOPES", "RFC 6749 §3.3"}},
		{"scope with a tab", func(m map[string]string) { m["SCOPES_SUPPORTED"] = "openid,mcp\tread" }, nil, []string{`SCOPES_SUPPORTED entry "mcp\tread" contains a control character`}},
		{"scope outside ASCII", func(m map[string]string) { m["REQUIRED_SCOPES"] = "fichiers:écrire" }, nil, []string{`REQUIRED_SCOPES entry "fichiers:écrire" is not a scope`, "RFC 6749 §3.3"}},
		{"scope with DEL", func(m map[string]string) { m["REQUIRED_SCOPES"] = "files\x7f" }, nil, []string{"REQUIRED_SCOPES", "control character"}},
		{"list entries split by a newline", func(m map[string]string) { m["REQUIRED_SCOPES"] = "files:read\nfiles:write" }, nil,
			[]string{`REQUIRED_SCOPES entry "files:read\nfiles:write" contains a control character (entries are separated by commas)`}},
		{"allowed subject with a newline", func(m map[string]string) { m["ALLOW_SUBS"] = "alice\nbob" }, nil, []string{"ALLOW_SUBS", "control character"}},
		{"redirect pattern off loopback", func(m map[string]string) { m["REGISTER_REDIRECT_URIS"] = "https://evil.example:*" }, nil, []string{"REGISTER_REDIRECT_URIS"}},
		{"query after a loopback pattern", func(m map[string]string) { m["REGISTER_REDIRECT_URIS"] = "http://127.0.0.1:*?x" }, nil, []string{"REGISTER_REDIRECT_URIS"}},
		{"a redirect scheme the browser runs", func(m map[string]string) { m["REGISTER_REDIRECT_SCHEMES"] = "cursor,JavaScript" }, nil,
			[]string{`REGISTER_REDIRECT_SCHEMES entry "JavaScript": the browser or the system handles this scheme itself`}},
		{"a redirect scheme a web page can claim", func(m map[string]string) { m["REGISTER_REDIRECT_SCHEMES"] = "web+mcp" }, nil,
			[]string{`REGISTER_REDIRECT_SCHEMES entry "web+mcp": a web page can claim this scheme`}},
		{"a redirect scheme with its colon", func(m map[string]string) { m["REGISTER_REDIRECT_SCHEMES"] = "cursor://" }, nil,
			[]string{`REGISTER_REDIRECT_SCHEMES entry "cursor://" is not a URI scheme`}},
		{"none beside a redirect scheme", func(m map[string]string) { m["REGISTER_REDIRECT_SCHEMES"] = "none,cursor" }, nil,
			[]string{`REGISTER_REDIRECT_SCHEMES "none,cursor": none stands alone`}},
		{"http as a redirect scheme", func(m map[string]string) { m["REGISTER_REDIRECT_SCHEMES"] = "http" }, nil,
			[]string{`REGISTER_REDIRECT_SCHEMES entry "http": https and http on loopback hosts are always accepted`}},
		{"unclean upstream path", func(m map[string]string) { m["MCP_UPSTREAM_PATH"] = "/a/../b" }, nil, []string{"MCP_UPSTREAM_PATH"}},
		{"upstream path that needs escaping", func(m map[string]string) { m["MCP_UPSTREAM_PATH"] = "/a b" }, nil, []string{"MCP_UPSTREAM_PATH"}},
		{"upstream path with a parameter", func(m map[string]string) { m["MCP_UPSTREAM_PATH"] = "/mcp;x" }, nil, []string{"MCP_UPSTREAM_PATH"}},
		{"a bad flag names the flag", func(m map[string]string) {}, []string{"--port", "x"}, []string{`--port "x" is not a port number`}},
		{"bad flags and variables together", func(m map[string]string) { m["LOG_LEVEL"] = "loud" }, []string{"--rate-limit-rpm=0"}, []string{"LOG_LEVEL", "--rate-limit-rpm"}},
		{"unknown flag", func(m map[string]string) {}, []string{"--nope"}, []string{"unknown flag --nope"}},
		{"a policy rule that cannot be read", func(m map[string]string) {
			m["MCP_POLICY"] = "tool:a=any; resource:file:///my%20file=deny"
		}, nil, []string{"MCP_POLICY rule 2, column 20: unknown escape", "\n    resource:file:///my%20file=deny\n                       ^"}},
		{"a policy scope that cannot be challenged", func(m map[string]string) { m["MCP_POLICY"] = `tool:a=scope:a"b` }, nil, []string{"MCP_POLICY rule 1, column 8", "RFC 6749"}},
		{"scope grants that cannot be read", func(m map[string]string) { m["BROKER_SCOPE_GRANTS"] = "files:write=scope:x" }, nil,
			[]string{"BROKER_SCOPE_GRANTS rule 1, column 13: a grant cannot require a scope", "\n    files:write=scope:x\n                ^"}},
		{"scope grants outside broker mode", func(m map[string]string) {
			m["MCP_POLICY"], m["BROKER_SCOPE_GRANTS"] = "tool:w=scope:files:write", "files:write=group:editors"
		}, nil, []string{"BROKER_SCOPE_GRANTS needs AUTH_SERVER_MODE=broker"}},
		{"stray argument", func(m map[string]string) {}, []string{"serve"}, []string{"unexpected argument"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := validEnv()
			tc.edit(env)
			_, err := parseConfig(tc.args, envOf(env), false)
			var ce *configError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a configError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// REGISTER_REDIRECT_SCHEMES: Cursor's and the editors' schemes by default
// (Cursor's callback is cursor://anysphere.cursor-mcp/oauth/callback; an
// extension such as Cline gets vscode://publisher.extension/...), entries
// lower-cased, "none" for no scheme without a dot.
func TestRedirectSchemes(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  []string
	}{
		{"", []string{"cursor", "vscode", "vscode-insiders", "windsurf"}},
		{"none", nil},
		{" None ", nil},
		{"Cursor, my-app ,", []string{"cursor", "my-app"}},
	} {
		env := validEnv()
		env["REGISTER_REDIRECT_SCHEMES"] = tc.value
		c, err := parseConfig(nil, envOf(env), false)
		if err != nil {
			t.Fatalf("%q: %v", tc.value, err)
		}
		if !slices.Equal(c.WellKnown.RedirectSchemes, tc.want) {
			t.Errorf("REGISTER_REDIRECT_SCHEMES=%q: got %q, want %q", tc.value, c.WellKnown.RedirectSchemes, tc.want)
		}
	}
	// Broker mode's REGISTER_REDIRECT_URIS may name Cursor's callback by default
	// (TestBrokerModeConfigErrors has it refused with "none").
	env := brokerEnv()
	env["REGISTER_REDIRECT_URIS"] = "cursor://anysphere.cursor-mcp/oauth/callback,http://127.0.0.1:*"
	if _, err := parseConfig(nil, envOf(env), false); err != nil {
		t.Errorf("broker mode, Cursor's callback in REGISTER_REDIRECT_URIS: %v", err)
	}
}

// TestIssuerPasswordNotRepeated: the refusal of an issuer with user
// information does not repeat its password.
func TestIssuerPasswordNotRepeated(t *testing.T) {
	env := validEnv()
	env["OIDC_ISSUER_URL"] = "http://admin:s3cret@auth.example.com"
	_, err := parseConfig(nil, envOf(env), false)
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("got %v, want a refusal without the password", err)
	}
}

// TestURLPasswordsNotRepeated: no refusal of a URL setting repeats the
// user information it holds, whatever else is wrong with the URL: the
// error goes to the terminal and the container's log.
func TestURLPasswordsNotRepeated(t *testing.T) {
	const pw = "hunter2-s3cret"
	for _, tc := range []struct{ env, value string }{
		{"OIDC_ISSUER_URL", "htps://admin:" + pw + "@auth.example.com"},
		{"OIDC_ISSUER_URL", "https://admin:" + pw + "@auth.example.com/%zz"},
		{"OIDC_ISSUER_URL", "https://" + pw + "@auth.example.com/%zz"},
		{"OIDC_ISSUER_URL", "admin:" + pw + "@auth.example.com/"},
		{"RESOURCE_URL", "https://u:" + pw + "@mcp.example.com/mcp"},
		{"RESOURCE_URL", "https://u:" + pw + "@mcp.example.com/mcp?x=1"},
		{"RESOURCE_URL", "https://u:" + pw + "@mcp.example.com/a/../mcp"},
		{"RESOURCE_URL", "https://u:p@ss:" + pw + "@mcp.example.com/mcp"},
		{"MCP_UPSTREAM_URL", "http://u:" + pw + "@127.0.0.1:8765"},
		{"MCP_UPSTREAM_URL", "http://u:" + pw + "@127.0.0.1:8765/%zz"},
		{"MCP_UPSTREAM_URL", "ftp://u:" + pw + "@127.0.0.1:8765"},
		{"CORS_ALLOW_ORIGINS", "https://u:" + pw + "@claude.ai"},
		{"CORS_ALLOW_ORIGINS", "https://u:" + pw + "@claude.ai:99999"},
		{"STORE_URL", "redis://:" + pw + "@127.0.0.1:6379/x"},
		{"STORE_URL", "redis://:" + pw + "@127.0.0.1:6379/%zz"},
	} {
		env := validEnv()
		env[tc.env] = tc.value
		_, err := parseConfig(nil, envOf(env), false)
		if err == nil || !strings.Contains(err.Error(), tc.env) || strings.Contains(err.Error(), pw) {
			t.Errorf("%s=%s: got %v, want a refusal naming %s without the password", tc.env, tc.value, err, tc.env)
		}
	}
}

// TestInvalidIsNotAlsoMissing: a value that is refused is reported as
// such, not also as missing.
func TestInvalidIsNotAlsoMissing(t *testing.T) {
	for _, tc := range []struct {
		env, value, notWant string
		args                []string
	}{
		{"OIDC_ISSUER_URL", "http://auth.example.com", "OIDC_ISSUER_URL is required", nil},
		{"RESOURCE_URL", "/mcp", "RESOURCE_URL is required", nil},
		{"MCP_UPSTREAM_URL", "ftp://x", "one of MCP_UPSTREAM_URL", nil},
		{"OIDC_ISSUER_URL", "", "OIDC_ISSUER_URL is required", []string{"--oidc-issuer-url", "ftp://x"}},
	} {
		env := validEnv()
		env[tc.env] = tc.value
		_, err := parseConfig(tc.args, envOf(env), false)
		if err == nil || strings.Contains(err.Error(), tc.notWant) {
			t.Errorf("%s=%q %q: got %v, want the refusal alone", tc.env, tc.value, tc.args, err)
		}
	}
}

// TestUsageErrorsHint: a command-line mistake says what is wrong first, then
// what was probably meant, then where to read more; never the whole usage.
func TestUsageErrorsHint(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // the whole message
	}{
		{"a flag cut short", []string{"--oidc-issuer", "x"}, "unknown flag --oidc-issuer\ndid you mean --oidc-issuer-url?\nsee mcp-oauth-proxy --help"},
		{"a flag misspelt", []string{"--alow-subs=x"}, "unknown flag --alow-subs\ndid you mean --allow-subs?\nsee mcp-oauth-proxy --help"},
		{"a variable's name as a flag", []string{"--ALLOW_EMAILS=x"}, "unknown flag --ALLOW_EMAILS\ndid you mean --allow-emails?\nsee mcp-oauth-proxy --help"},
		{"a flag like none", []string{"--frobnicate"}, "unknown flag --frobnicate\nsee mcp-oauth-proxy --help"},
		{"a flag without its value", []string{"--port"}, "flag needs an argument: --port\nsee mcp-oauth-proxy --help"},
		{"a subcommand misspelt", []string{"helthcheck"}, "unexpected argument \"helthcheck\"\ndid you mean `mcp-oauth-proxy healthcheck`? (a subcommand comes first)\n" +
			"the MCP server's own command goes after --: mcp-oauth-proxy [flags] -- COMMAND ARGS...\nsee mcp-oauth-proxy --help"},
		{"doctor misspelt", []string{"doctr", "https://mcp.example.com/mcp"}, "unexpected argument \"doctr\"\ndid you mean `mcp-oauth-proxy doctor`? (a subcommand comes first)\n" +
			"the MCP server's own command goes after --: mcp-oauth-proxy [flags] -- COMMAND ARGS...\nsee mcp-oauth-proxy --help"},
		{"doctor after a flag", []string{"--log-level=debug", "doctor", "https://mcp.example.com/mcp"}, "unexpected argument \"doctor\"\ndid you mean `mcp-oauth-proxy doctor`? (a subcommand comes first)\n" +
			"the MCP server's own command goes after --: mcp-oauth-proxy [flags] -- COMMAND ARGS...\nsee mcp-oauth-proxy --help"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(tc.args, envOf(validEnv()), false)
			if err == nil || err.Error() != tc.want {
				t.Errorf("got\n%v\nwant\n%s", err, tc.want)
			}
			if got := exitStatus(err); got != 2 {
				t.Errorf("exit status %d, want 2", got)
			}
		})
	}
}

func TestParseConfigUnknownVariablesIgnored(t *testing.T) {
	env := validEnv()
	env["SOMETHING_ELSE"] = "x"
	if _, err := parseConfig(nil, envOf(env), false); err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
}

// TestMisspelt: a variable that looks like a misspelt setting draws a
// warning naming the setting; the MCP server's own variables do not.
func TestMisspelt(t *testing.T) {
	for _, tc := range []struct {
		name string
		want string // "": no warning
	}{
		{"OIDC_ISSUER", "OIDC_ISSUER_URL"},
		{"ALLOW_EMAIL", "ALLOW_EMAILS"},
		{"ALLOW_SUB", "ALLOW_SUBS"},
		{"OIDC_AUDIENCES", "OIDC_AUDIENCE"},
		{"RESOURCE_URI", "RESOURCE_URL"},
		{"MCP_UPSTREAM", "MCP_UPSTREAM_URL"},
		{"MCP_SPAWN_CDM", "MCP_SPAWN_CMD"},
		{"oidc_issuer_url", "OIDC_ISSUER_URL"},
		{"LOG_LEVL", "LOG_LEVEL"},
		// Settings, and names that are not near one.
		{"OIDC_ISSUER_URL", ""},
		{"PORT", ""},
		{"PATH", ""},
		{"HOST", ""},
		{"SOMETHING_ELSE", ""},
		// The MCP server's own variables.
		{"MCP_API_KEY", ""},
		{"MCP_PORT", ""},
		{"MCP_HOST", ""},
		{"MCP_AUDIT_LOG", ""},
		{"MCP_SERVER_URL", ""},
		{"MCP_TRANSPORT", ""},
		{"LISTEN_PORT", ""},
		{"LOG_FILE", ""},
		{"OIDC_CLIENT_SECRET", ""},
		// Names other programs read.
		{"RATE_LIMIT", ""},
		{"CORS_ALLOW_ORIGIN", ""},
		{"AUTH_SERVER", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := misspelt([]string{tc.name + "=x"})
			switch {
			case tc.want == "" && len(got) > 0:
				t.Errorf("got %q, want no warning", got)
			case tc.want != "" && (len(got) != 1 || !strings.HasSuffix(got[0], "did you mean "+tc.want+"?") || !strings.HasPrefix(got[0], tc.name+" ")):
				t.Errorf("got %q, want one warning naming %s and suggesting %s", got, tc.name, tc.want)
			}
		})
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"-h"}, {"--port", "1", "--help"}, {"dev", "--help"}} {
		var stdout, stderr testkit.LogBuffer
		err := run(t.Context(), append([]string{"mcp-oauth-proxy"}, args...), envOf(nil), &stdout, &stderr)
		if err != nil || stderr.String() != "" {
			t.Errorf("%q: got %v and stderr %q, want nil and nothing (help goes to stdout)", args, err, stderr.String())
		}
		for _, s := range settings(new(Config)) {
			if !strings.Contains(stdout.String(), "--"+s.flag()) || !strings.Contains(stdout.String(), "["+s.env+"]") {
				t.Errorf("%q does not list --%s [%s]", args, s.flag(), s.env)
			}
		}
	}
}

// FuzzParseConfig: no input makes the parser panic, and a config it accepts
// names an upstream and an allow-list, and builds: the components, which
// trust it, find no fault in it.
func FuzzParseConfig(f *testing.F) {
	f.Add("https://a.example/", "aud", "https://mcp.example.com/mcp", "x", "http://127.0.0.1:1", "60", "30s", "/mcp", "http://127.0.0.1:*/cb")
	f.Add("http://127.0.0.1:9/", "a,b", "https://mcp.example.com?x", "", "", "-1", "-5s", "/a/../b", "https://x.example:*")
	f.Add("", "", "%zz", ",,,", "ftp://x", "1e9", "9999999999h", "//", "/cb")
	f.Add("https://a.example/", "aud", "https://mcp.example.com/a%2Fb", "x", "http://[::1]:1/base", "1", "0", "/a:b@c/", "http://[::1]:*")
	f.Fuzz(func(t *testing.T, issuer, aud, resource, subs, upstream, rpm, grace, path, redirects string) {
		env := map[string]string{"OIDC_ISSUER_URL": issuer, "OIDC_AUDIENCE": aud, "RESOURCE_URL": resource,
			"ALLOW_SUBS": subs, "MCP_UPSTREAM_URL": upstream, "RATE_LIMIT_RPM": rpm, "SHUTDOWN_GRACE": grace,
			"MCP_UPSTREAM_PATH": path, "REGISTER_REDIRECT_URIS": redirects, "STATIC_CLIENT_ID": "id", "STATIC_CLIENT_SECRET": "secret"}
		// The same values in facade mode and in broker mode, where the static
		// client is the gateway's own and OIDC_AUDIENCE is optional.
		for _, mode := range []string{"facade", "broker"} {
			env["AUTH_SERVER_MODE"] = mode
			c, err := parseConfig(nil, envOf(env), false)
			if err != nil {
				continue
			}
			if c.Upstream == nil || len(c.Gate.AllowSubs) == 0 || c.WellKnown.ResourceURL == "" || c.RateLimitRPM < 1 {
				t.Fatalf("accepted an incomplete config: %+v", c)
			}
			if mode == "broker" && (c.Broker.ClientID != "id" || c.WellKnown.StaticClientID != "") {
				t.Fatalf("broker mode: client %q at the provider, %q handed out", c.Broker.ClientID, c.WellKnown.StaticClientID)
			}
			p, err := build(c, logs{root: hclog.NewNullLogger()}, false)
			if err != nil {
				t.Fatalf("%s mode: accepted a config the components refuse: %v", mode, err)
			}
			p.endStreams()
		}
	})
}

// TestREADMEListsEverySetting keeps the README's settings table complete
// and its defaults true.
func TestREADMEListsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings(new(Config)) {
		def := "—"
		if s.def != "" {
			def = "`" + s.def + "`"
		}
		row := fmt.Sprintf("| `%s` | `--%s` | %s |", s.env, s.flag(), def)
		if !strings.Contains(string(readme), row) {
			t.Errorf("README lacks the row starting %q", row)
		}
	}
}

// TestChildEnvironment: the child sees no setting of the gateway's (every
// row of the table, present and future) and no variable named like a
// credential, set or not; everything else passes.
func TestChildEnvironment(t *testing.T) {
	var environ []string
	for _, s := range settings(new(Config)) {
		environ = append(environ, s.env+"=gateway's")
	}
	secrets := []string{"OIDC_CLIENT_SECRET=x", "OIDC_CLIENT_ID=x", "STATIC_CLIENT_OTHER=x", "BROKER_SECRET=x", "BROKER_SECRET_PREVIOUS=x"}
	environ = append(environ, secrets...)
	environ = append(environ, "PATH=/bin", "MCP_API_KEY=child's", "HOME=/root")
	got := childEnvironment(environ)
	if want := []string{"PATH=/bin", "MCP_API_KEY=child's", "HOME=/root"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("got %q, want %q", got, want)
	}
	// A setting that holds a credential is named as one, so that it stays
	// out of the child's environment even when it is unset in the table's
	// sense (empty) or read another way.
	for _, s := range settings(new(Config)) {
		if strings.Contains(s.env, "SECRET") && !isSecretName(s.env) {
			t.Errorf("%s holds a secret but is not under a credential prefix", s.env)
		}
	}
}

func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"clean stop", nil, 0},
		{"configuration error", &configError{problems: []string{"x"}}, 2},
		{"usage error", usageError("unknown flag --x"), 2},
		{"failure before serving", errors.New("listen: address in use"), 1},
		{"a part failed, no child", &stopped{failed: true}, 1},
		{"signal, child killed by SIGTERM", &stopped{spawned: true, child: 143}, 143},
		{"signal, child trapped TERM and exited 5", &stopped{spawned: true, child: 5}, 5},
		{"a part failed, child exited 0", &stopped{failed: true, spawned: true}, 1},
		{"a part failed, child exited 3", &stopped{failed: true, spawned: true, child: 3}, 3},
		{"dev mode, Ctrl-C with a child", &stopped{dev: true, spawned: true, child: 130}, 0},
		{"dev mode, a part failed", &stopped{dev: true, failed: true, spawned: true, child: 3}, 3},
		{"dev mode, a part failed, no child", &stopped{dev: true, failed: true}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := exitStatus(tc.err); got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
}

// TestPolicySettings: MCP_POLICY reaches the gate, its scopes the
// discovery documents, and the components build with it.
func TestPolicySettings(t *testing.T) {
	env := validEnv()
	env["MCP_POLICY"] = "tool:delete_*=group:admins; tool:write_file=scope:files:write; tool:*=any"
	c, err := parseConfig(nil, envOf(env), false)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if c.Gate.Policy == nil || c.Gate.Policy.Len() != 3 {
		t.Fatalf("policy: got %v, want 3 rules", c.Gate.Policy)
	}
	if got, want := appendMissing(c.WellKnown.Scopes, c.Gate.Policy.Scopes()), []string{"openid", "profile", "email", "offline_access", "files:write"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("scopes advertised: got %q, want %q", got, want)
	}
	p, err := build(c, logs{root: hclog.NewNullLogger()}, false)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	p.endStreams()
	if pol, err := mcpPolicy("tool:a=any;"); err != nil || pol == nil {
		t.Errorf("one rule and a semicolon: got %v, %v", pol, err)
	}
	if g, err := scopeGrants("files:write=group:editors; deploy=group:ops|sub:alice"); err != nil || len(g.Scopes()) != 2 {
		t.Errorf("scope grants: got %v, %v", g, err)
	}
}

// TestDurationSeconds: a bare number is seconds, up to the largest a
// duration holds.
func TestDurationSeconds(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  time.Duration
	}{
		{"0", 0},
		{"90", 90 * time.Second},
		{"9223372036", 9223372036 * time.Second},
		{"1m30s", 90 * time.Second},
	} {
		if got, err := duration(false)(tc.value); err != nil || got != tc.want {
			t.Errorf("%q: got %v, %v; want %v", tc.value, got, err, tc.want)
		}
	}
	// Refusals say why: a duration too large to hold is not "not a
	// duration", in either spelling.
	for _, tc := range []struct{ value, why string }{
		{"9999999999h", "too large"},
		{"2562048h", "too large"},
		{"9223372037s", "too large"},
		{"99999999999999999999ms", "too large"},
		{"1.5h9999999999h", "too large"},
		{"-9999999999h", "zero or positive"},
		{"99999999999999999999µs", "too large"},
		{"9999999999999999999999x", "not a duration"},
		{"10x", "not a duration"},
		{"h", "not a duration"},
		{"1..5s", "not a duration"},
		{".s", "not a duration"},
		{"", "not a duration"},
	} {
		_, err := duration(false)(tc.value)
		if err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("%q: got %v, want an error saying %q", tc.value, err, tc.why)
		}
	}
}

// TestOrigins: a CORS_ALLOW_ORIGINS entry is kept in the form a browser's
// Origin header has, which the gate compares exactly; what no Origin
// header can be is refused, saying why.
func TestOrigins(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  string // the entry kept; "" when refused
		why   string // in the refusal
	}{
		{"https://claude.ai", "https://claude.ai", ""},
		{"*", "*", ""},
		{"HTTPS://CLAUDE.AI", "https://claude.ai", ""},
		{"https://claude.ai:443", "https://claude.ai", ""},
		{"http://localhost:80", "http://localhost", ""},
		{"https://claude.ai/", "https://claude.ai", ""},
		{"http://127.0.0.1:6274", "http://127.0.0.1:6274", ""},
		{"http://LOCALHOST:06274", "http://localhost:6274", ""},
		{"https://[0:0::1]:8443", "https://[::1]:8443", ""},
		{"https://xn--bcher-kva.example", "https://xn--bcher-kva.example", ""},
		{"https://*.claude.ai", "", "wildcards"},
		{"https://u:p@claude.ai", "", "user information"},
		{"https://claude.ai#x", "", "query or fragment"},
		{"https://claude.ai#", "", "query or fragment"},
		{"https://claude.ai?x=1", "", "query or fragment"},
		{"https://claude.ai?", "", "query or fragment"},
		{"https://claude.ai/app", "", "path"},
		{"https://bücher.example", "", "xn--"},
		{"https://claude.ai:99999", "", "port"},
		{"https://claude.ai:0", "", "port"},
		{"claude.ai", "", "not an origin"},
		{"ftp://claude.ai", "", "not an origin"},
	} {
		got, err := origin(tc.value)
		switch {
		case tc.want != "" && (err != nil || got != tc.want):
			t.Errorf("%q: got %q, %v; want %q", tc.value, got, err, tc.want)
		case tc.want == "" && (err == nil || !strings.Contains(err.Error(), tc.why)):
			t.Errorf("%q: got %q, %v; want a refusal that says %q", tc.value, got, err, tc.why)
		}
	}
}

// TestReadyPath: a readiness path is accepted as the probe requests it.
func TestReadyPath(t *testing.T) {
	for _, p := range []string{"", "/", "/healthz", "/health%20check", "/ready?full=1&x=a:b@c", "/~user/(x)"} {
		if got, err := readyPath(p); err != nil || got != p {
			t.Errorf("%q: got %q, %v; want it as it is", p, got, err)
		}
	}
}

// TestSpawnPortBesideMetrics: a metrics listener on an address that does
// not take 127.0.0.1's port leaves that port to the child.
func TestSpawnPortBesideMetrics(t *testing.T) {
	env := validEnv()
	delete(env, "MCP_UPSTREAM_URL")
	env["MCP_SPAWN_CMD"], env["MCP_SPAWN_PORT"], env["METRICS_ADDR"] = "x", "9090", "10.1.2.3:9090"
	if _, err := parseConfig(nil, envOf(env), false); err != nil {
		t.Errorf("parseConfig: %v", err)
	}
}

// TestDevModeRefusesBrokerSecret: dev mode's issuer logs anyone in as
// anyone, so its broker must never sign or seal with a real gateway's
// keys. Started in that gateway's environment (BROKER_SECRET and
// RESOURCE_URL set), it would hand out that gateway's own tokens.
func TestDevModeRefusesBrokerSecret(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef-production"
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"secret in the environment", map[string]string{"BROKER_SECRET": secret, "RESOURCE_URL": "https://mcp.example.com/mcp"}, nil, "BROKER_SECRET must not be set in dev mode"},
		{"secret as a flag", nil, []string{"--broker-secret", secret}, "BROKER_SECRET must not be set in dev mode"},
		{"previous secret", map[string]string{"BROKER_SECRET_PREVIOUS": secret}, nil, "BROKER_SECRET_PREVIOUS must not be set in dev mode"},
	} {
		_, err := parseConfig(tc.args, devEnv(envOf(tc.env)), true)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want a refusal saying %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the refusal repeats the secret: %v", tc.name, err)
		}
	}
	if _, err := parseConfig(nil, devEnv(envOf(map[string]string{"STORE_URL": "redis://127.0.0.1:6379/0"})), true); err != nil {
		t.Errorf("dev mode with STORE_URL and no BROKER_SECRET: %v, want it accepted (one process, random keys)", err)
	}
}
