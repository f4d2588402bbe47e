package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
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
	c, err := parseConfig(nil, envOf(validEnv()), &bytes.Buffer{})
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"port", c.Port, 8080},
		{"rate limit", c.RateLimitRPM, 60},
		{"log level", c.LogLevel, "info"},
		{"mode", c.AuthServerMode, "facade"},
		{"groups claim", c.GroupsClaim, "groups"},
		{"cors", strings.Join(c.CORSOrigins, ","), "https://claude.ai,https://claude.com"},
		{"scopes", strings.Join(c.ScopesSupported, ","), "openid,profile,email,offline_access"},
		{"emails lower-cased", c.AllowEmails[0], "me@example.com"},
		{"grace", c.ShutdownGrace, 10 * time.Second},
		{"skew", c.ClockSkew, 30 * time.Second},
		{"ready timeout", c.SpawnReadyTimeout, 120 * time.Second},
		{"max token bytes", c.MaxTokenBytes, 16384},
		{"max body", c.MaxBodyBytes, int64(10 << 20)},
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
	env["PORT"] = "9000"
	c, err := parseConfig([]string{"--port", "9001", "--oidc-audience=a,b"}, envOf(env), &bytes.Buffer{})
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if c.Port != 9001 {
		t.Errorf("got port %d, want 9001 (the flag)", c.Port)
	}
	if got := strings.Join(c.Audiences, "|"); got != "a|b" {
		t.Errorf("got audiences %q, want a|b", got)
	}
}

func TestParseConfigLauncherForm(t *testing.T) {
	env := validEnv()
	delete(env, "MCP_UPSTREAM_URL")
	c, err := parseConfig([]string{"--port", "0", "--", "npx", "-y", "some server", "--port", "{port}"}, envOf(env), &bytes.Buffer{})
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if got, want := strings.Join(c.SpawnArgs, "|"), "npx|-y|some server|--port|{port}"; got != want {
		t.Errorf("got args %q, want %q", got, want)
	}
	if c.SpawnPort != 0 || !c.Spawned() {
		t.Errorf("got port %d spawned %v, want 0 true", c.SpawnPort, c.Spawned())
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
		}, nil, []string{"OIDC_ISSUER_URL is required", "OIDC_AUDIENCE is required", "RESOURCE_URL is required", "ALLOW_SUBS, ALLOW_EMAILS or ALLOW_GROUPS", "MCP_UPSTREAM_URL, MCP_SPAWN_CMD", "mcp-oauth-proxy dev"}},
		{"http issuer off loopback", func(m map[string]string) { m["OIDC_ISSUER_URL"] = "http://auth.example.com" }, nil, []string{"OIDC_ISSUER_URL", "https"}},
		{"resource with query", func(m map[string]string) { m["RESOURCE_URL"] = "https://mcp.example.com/?a=1" }, nil, []string{"RESOURCE_URL", "query or fragment"}},
		{"resource with fragment", func(m map[string]string) { m["RESOURCE_URL"] = "https://mcp.example.com/#x" }, nil, []string{"RESOURCE_URL", "query or fragment"}},
		{"resource relative", func(m map[string]string) { m["RESOURCE_URL"] = "/mcp" }, nil, []string{"RESOURCE_URL", "absolute"}},
		{"both upstreams", func(m map[string]string) { m["MCP_SPAWN_CMD"] = "x" }, nil, []string{"MCP_UPSTREAM_URL and MCP_SPAWN_CMD"}},
		{"launcher and spawn cmd", func(m map[string]string) { delete(m, "MCP_UPSTREAM_URL"); m["MCP_SPAWN_CMD"] = "x" }, []string{"--", "y"}, []string{"-- and MCP_SPAWN_CMD"}},
		{"launcher and upstream url", func(m map[string]string) {}, []string{"--", "y"}, []string{"-- and MCP_UPSTREAM_URL"}},
		{"spawn port without command", func(m map[string]string) { m["MCP_SPAWN_PORT"] = "3000" }, nil, []string{"MCP_SPAWN_PORT is set but nothing is spawned"}},
		{"bad spawn port", func(m map[string]string) {
			delete(m, "MCP_UPSTREAM_URL")
			m["MCP_SPAWN_CMD"] = "x"
			m["MCP_SPAWN_PORT"] = "70000"
		}, nil, []string{"MCP_SPAWN_PORT"}},
		{"half a static client", func(m map[string]string) { m["STATIC_CLIENT_ID"] = "id" }, nil, []string{"STATIC_CLIENT_ID and STATIC_CLIENT_SECRET"}},
		{"zero rate", func(m map[string]string) { m["RATE_LIMIT_RPM"] = "0" }, nil, []string{"RATE_LIMIT_RPM", "at least 1"}},
		{"word rate", func(m map[string]string) { m["RATE_LIMIT_RPM"] = "lots" }, nil, []string{"RATE_LIMIT_RPM", "whole number"}},
		{"bad log level", func(m map[string]string) { m["LOG_LEVEL"] = "loud" }, nil, []string{"LOG_LEVEL", "trace, debug"}},
		{"bad mode", func(m map[string]string) { m["AUTH_SERVER_MODE"] = "proxy" }, nil, []string{"AUTH_SERVER_MODE"}},
		{"bad duration", func(m map[string]string) { m["SHUTDOWN_GRACE"] = "soon" }, nil, []string{"SHUTDOWN_GRACE", "duration"}},
		{"bad cidr", func(m map[string]string) { m["TRUSTED_PROXIES"] = "10.0.0.0/99" }, nil, []string{"TRUSTED_PROXIES"}},
		{"bad origin", func(m map[string]string) { m["CORS_ALLOW_ORIGINS"] = "claude.ai" }, nil, []string{"CORS_ALLOW_ORIGINS"}},
		{"redirect pattern off loopback", func(m map[string]string) { m["REGISTER_REDIRECT_URIS"] = "https://evil.example:*" }, nil, []string{"REGISTER_REDIRECT_URIS"}},
		{"unclean upstream path", func(m map[string]string) { m["MCP_UPSTREAM_PATH"] = "/a/../b" }, nil, []string{"MCP_UPSTREAM_PATH"}},
		{"unknown flag", func(m map[string]string) {}, []string{"--nope"}, []string{"nope"}},
		{"stray argument", func(m map[string]string) {}, []string{"serve"}, []string{"unexpected argument"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := validEnv()
			tc.edit(env)
			_, err := parseConfig(tc.args, envOf(env), &bytes.Buffer{})
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

func TestParseConfigUnknownVariablesIgnored(t *testing.T) {
	env := validEnv()
	env["SOMETHING_ELSE"] = "x"
	if _, err := parseConfig(nil, envOf(env), &bytes.Buffer{}); err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	_, err := parseConfig([]string{"--help"}, envOf(nil), &out)
	if !errors.Is(err, errHelp) {
		t.Fatalf("got %v, want errHelp", err)
	}
	for _, s := range settings() {
		if !strings.Contains(out.String(), "--"+s.flag) || !strings.Contains(out.String(), "["+s.env+"]") {
			t.Errorf("--help does not list --%s [%s]", s.flag, s.env)
		}
	}
}

// FuzzParseConfig: no input makes the parser panic, and a config it accepts
// always names an upstream and an allow-list.
func FuzzParseConfig(f *testing.F) {
	f.Add("https://a.example/", "aud", "https://mcp.example.com/mcp", "x", "http://127.0.0.1:1", "60", "30s")
	f.Add("http://127.0.0.1:9/", "a,b", "https://mcp.example.com?x", "", "", "-1", "-5s")
	f.Add("", "", "%zz", ",,,", "ftp://x", "1e9", "9999999999h")
	f.Fuzz(func(t *testing.T, issuer, aud, resource, subs, upstream, rpm, grace string) {
		env := map[string]string{"OIDC_ISSUER_URL": issuer, "OIDC_AUDIENCE": aud, "RESOURCE_URL": resource,
			"ALLOW_SUBS": subs, "MCP_UPSTREAM_URL": upstream, "RATE_LIMIT_RPM": rpm, "SHUTDOWN_GRACE": grace}
		c, err := parseConfig(nil, envOf(env), &bytes.Buffer{})
		if err != nil {
			return
		}
		if c.UpstreamURL == nil || len(c.AllowSubs) == 0 || c.ResourceURL == nil || c.RateLimitRPM < 1 {
			t.Fatalf("accepted an incomplete config: %+v", c)
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
	for _, s := range settings() {
		def := "—"
		if s.def != "" {
			def = "`" + s.def + "`"
		}
		row := fmt.Sprintf("| `%s` | `--%s` | %s |", s.env, s.flag, def)
		if !strings.Contains(string(readme), row) {
			t.Errorf("README lacks the row starting %q", row)
		}
	}
}

func TestChildEnvironment(t *testing.T) {
	var environ []string
	for _, s := range settings() {
		environ = append(environ, s.env+"=gateway's")
	}
	environ = append(environ, "OIDC_CLIENT_SECRET=x", "STATIC_CLIENT_OTHER=x", "PATH=/bin", "MCP_API_KEY=child's", "HOME=/root")
	got := childEnvironment(environ)
	if want := []string{"PATH=/bin", "MCP_API_KEY=child's", "HOME=/root"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("got %q, want %q", got, want)
	}
}
