package gate

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/mcp"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/policy"
)

// testPolicy has a rule of every kind, globs, alternatives, and a catch-all.
const testPolicy = `tool:delete_*=group:admins; tool:write_file=scope:files:write; ` +
	`tool:deploy=group:ops,scope:deploy|sub:root,scope:deploy,scope:root; tool:météo=group:weather; ` +
	`resource:file:///secrets/*=deny; prompt:internal_*=email:lead@example.com; tool:*=any`

// mcpServer is a real MCP server (the Go SDK's, stateless) with several
// tools, resources and prompts, completions of prompt arguments and of
// resource template variables (the values name what they complete), and
// resource subscriptions, answering as JSON or as event streams.
func mcpServer(jsonResponse bool) http.Handler {
	server := sdk.NewServer(&sdk.Implementation{Name: "policy-gate-test", Version: "1.0.0"}, &sdk.ServerOptions{
		CompletionHandler: func(_ context.Context, req *sdk.CompleteRequest) (*sdk.CompleteResult, error) {
			ref := req.Params.Ref
			return &sdk.CompleteResult{Completion: sdk.CompletionResultDetails{Values: []string{"completed " + ref.Name + ref.URI}}}, nil
		},
		SubscribeHandler:   func(context.Context, *sdk.SubscribeRequest) error { return nil },
		UnsubscribeHandler: func(context.Context, *sdk.UnsubscribeRequest) error { return nil },
	})
	type in struct {
		X string `json:"x,omitempty"`
	}
	for _, name := range []string{"echo", "delete_all", "delete_one", "undelete", "write_file", "deploy", "météo"} {
		sdk.AddTool(server, &sdk.Tool{Name: name, Description: "the " + name + " tool"},
			func(context.Context, *sdk.CallToolRequest, in) (*sdk.CallToolResult, any, error) {
				return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "ran " + name}}}, nil, nil
			})
	}
	for _, uri := range []string{"file:///readme", "file:///secrets/key"} {
		server.AddResource(&sdk.Resource{URI: uri, Name: uri}, func(context.Context, *sdk.ReadResourceRequest) (*sdk.ReadResourceResult, error) {
			return &sdk.ReadResourceResult{Contents: []*sdk.ResourceContents{{URI: uri, Text: "contents of " + uri}}}, nil
		})
	}
	for _, name := range []string{"greet", "internal_plan"} {
		server.AddPrompt(&sdk.Prompt{Name: name}, func(context.Context, *sdk.GetPromptRequest) (*sdk.GetPromptResult, error) {
			return &sdk.GetPromptResult{Messages: []*sdk.PromptMessage{{Role: "user", Content: &sdk.TextContent{Text: name}}}}, nil
		})
	}
	return sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return server },
		&sdk.StreamableHTTPOptions{Stateless: true, JSONResponse: jsonResponse})
}

// policySetup is a gate with testPolicy in front of mcpServer.
func policySetup(t *testing.T, env *issuerEnv, jsonResponse bool, logs *logBuffer, mod func(*Config)) *setup {
	t.Helper()
	p, err := policy.Parse(testPolicy)
	if err != nil {
		t.Fatal(err)
	}
	h := mcpServer(jsonResponse)
	return newSetup(t, env, h.ServeHTTP, func(c *Config) {
		c.Policy = p
		c.UpstreamPath = "/mcp"
		c.AllowSubs = []string{"alice", "admin", "ops", "root", "lead", "wx"}
		if logs != nil {
			c.Logger = jsonLogger(logs)
		}
		if mod != nil {
			mod(c)
		}
	})
}

// mcpPost sends a JSON-RPC body as an MCP client does.
func mcpPost(t *testing.T, s *setup, tok, body string, extra http.Header) (*http.Response, string) {
	t.Helper()
	h := bearerHeader(tok)
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json, text/event-stream")
	for k, v := range extra {
		h[k] = v
	}
	return s.do(t, http.MethodPost, "/", h, strings.NewReader(body))
}

func toolsCall(id int, name string) string {
	n, _ := json.Marshal(name)
	return `{"jsonrpc":"2.0","id":` + itoa(id) + `,"method":"tools/call","params":{"name":` + string(n) + `,"arguments":{}}}`
}

// rpcError is a JSON-RPC error response.
type rpcError struct {
	ID    json.RawMessage `json:"id"`
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func parseRPCError(t *testing.T, body string) rpcError {
	t.Helper()
	var e rpcError
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code == 0 {
		t.Fatalf("body %q is not a JSON-RPC error (%v)", body, err)
	}
	return e
}

// decisionCase is a call through the gate to a real MCP server, and what
// the policy must make of it.
type decisionCase struct {
	name, tok, body string
	status          int
	challenge       string            // the step-up scope; "" none
	denied          string            // in the JSON-RPC error message; "" none
	id              string            // of the JSON-RPC error
	rule            string            // in the rejection line
	line            map[string]string // other keys of the rejection line
	want            string            // in a 200 answer
}

// checkDecisions runs cases against s, whose logs are logs: allowed calls
// reach the server byte for byte, refused ones do not, and get the answer,
// challenge and rejection line their case says.
func checkDecisions(t *testing.T, s *setup, logs *logBuffer, cases []decisionCase) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(s.up.requests())
			nRejected := logs.count(t, "rejected")
			resp, body := mcpPost(t, s, c.tok, c.body, nil)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, c.status, body)
			}
			reqs := s.up.requests()
			if c.status != 200 {
				if len(reqs) != before {
					t.Fatalf("a refused call reached the server")
				}
				line := logs.next(t, "rejected", nRejected)
				if got := line["rule"]; got != c.rule {
					t.Errorf("rejection line rule %v, want %q (%v)", got, c.rule, line)
				}
				for k, v := range c.line {
					if line[k] != v {
						t.Errorf("rejection line %s %v, want %q (%v)", k, line[k], v, line)
					}
				}
			} else if len(reqs) != before+1 || reqs[before].Body != c.body {
				t.Fatalf("the server did not get the body byte for byte")
			}
			chal := resp.Header.Get("Www-Authenticate")
			switch {
			case c.challenge != "":
				if want := stepUpChallenge(c.challenge); chal != want {
					t.Errorf("WWW-Authenticate %q, want %q", chal, want)
				}
			case chal != "":
				t.Errorf("WWW-Authenticate %q, want none", chal)
			}
			if c.denied != "" {
				e := parseRPCError(t, body)
				if e.Error.Code != mcp.CodeForbidden || !strings.Contains(e.Error.Message, c.denied) || string(e.ID) != c.id {
					t.Errorf("error %+v (id %s), want code %d naming %q, id %s", e.Error, e.ID, mcp.CodeForbidden, c.denied, c.id)
				}
			}
			if c.want != "" && !strings.Contains(body, c.want) {
				t.Errorf("answer %q lacks %q", body, c.want)
			}
		})
	}
}

// TestPolicyDecisions: each rule kind, globs and alternatives, through the
// gate to a real MCP server: allowed calls run, step-up gets one challenge
// naming every scope the call needs, denied calls get a JSON-RPC error
// naming the target and the request's id; nothing refused reaches the
// server.
func TestPolicyDecisions(t *testing.T) {
	env := newIssuer(t)
	var logs logBuffer
	s := policySetup(t, env, true, &logs, nil)
	tok := func(sub string, claims map[string]any) string { return env.token(t, sub, claims) }
	alice := tok("alice", nil)
	read := func(uri string) string {
		return `{"jsonrpc":"2.0","id":"r1","method":"resources/read","params":{"uri":"` + uri + `"}}`
	}
	get := func(name string) string {
		return `{"jsonrpc":"2.0","id":5,"method":"prompts/get","params":{"name":"` + name + `"}}`
	}
	checkDecisions(t, s, &logs, []decisionCase{
		{name: "catch-all allows", tok: alice, body: toolsCall(1, "echo"), status: 200, want: "ran echo"},
		{name: "a glob denies", tok: alice, body: toolsCall(7, "delete_all"), status: 403, denied: `call the tool "delete_all"`, id: "7", rule: "1",
			line: map[string]string{"decision": "deny", "mcp_method": "tools/call", "mcp_tool": "delete_all"}},
		{name: "the glob's other name", tok: alice, body: toolsCall(8, "delete_one"), status: 403, denied: `"delete_one"`, id: "8", rule: "1"},
		{name: "a glob matches the whole name", tok: alice, body: toolsCall(1, "undelete"), status: 200, want: "ran undelete"},
		{name: "the group allows", tok: tok("admin", map[string]any{"groups": []string{"admins"}}), body: toolsCall(1, "delete_all"), status: 200, want: "ran delete_all"},
		{name: "a scope missing: step-up", tok: alice, body: toolsCall(2, "write_file"), status: 403, challenge: "files:write", rule: "2"},
		{name: "the scope held", tok: tok("alice", map[string]any{"scope": "openid files:write"}), body: toolsCall(2, "write_file"), status: 200, want: "ran write_file"},
		{name: "group and scope: the scope missing", tok: tok("ops", map[string]any{"groups": []string{"ops"}}), body: toolsCall(3, "deploy"), status: 403, challenge: "deploy", rule: "3"},
		{name: "the other set: every scope it needs", tok: tok("root", map[string]any{"scope": "root"}), body: toolsCall(3, "deploy"), status: 403, challenge: "deploy root", rule: "3"},
		{name: "no set can hold: denied", tok: alice, body: toolsCall(4, "deploy"), status: 403, denied: `"deploy"`, id: "4", rule: "3"},
		{name: "both held", tok: tok("ops", map[string]any{"groups": []string{"ops"}, "scope": "deploy"}), body: toolsCall(3, "deploy"), status: 200, want: "ran deploy"},
		{name: "a non-ASCII name", tok: tok("wx", map[string]any{"groups": []string{"weather"}}), body: toolsCall(1, "météo"), status: 200, want: "ran météo"},
		{name: "a non-ASCII name denied", tok: alice, body: toolsCall(1, "météo"), status: 403, denied: `"météo"`, id: "1", rule: "4"},
		{name: "a resource denied", tok: alice, body: read("file:///secrets/key"), status: 403, denied: `read the resource "file:///secrets/key"`, id: `"r1"`, rule: "5"},
		{name: "a resource allowed", tok: alice, body: read("file:///readme"), status: 200, want: "contents of file:///readme"},
		{name: "a dot segment toward a denied resource", tok: alice, body: read("file:///public/../secrets/key"), status: 403, denied: "could name another resource", id: `"r1"`, rule: "none"},
		{name: "a prompt denied", tok: alice, body: get("internal_plan"), status: 403, denied: `get the prompt "internal_plan"`, id: "5", rule: "6"},
		{name: "a prompt for a verified email", tok: tok("lead", map[string]any{"email": "Lead@Example.com"}), body: get("internal_plan"), status: 200, want: "internal_plan"},
		{name: "a prompt no rule names", tok: alice, body: get("greet"), status: 200, want: "greet"},
		{name: "not a call: not decided", tok: alice, body: `{"jsonrpc":"2.0","id":1,"method":"ping"}`, status: 200},
		{name: "a batch with a denied call", tok: alice, body: "[" + toolsCall(1, "echo") + "," + toolsCall(2, "delete_all") + "]", status: 403, denied: `"delete_all"`, id: "2", rule: "1"},
		{name: "a batch needing scopes: their union", tok: tok("ops", map[string]any{"groups": []string{"ops"}}),
			body: "[" + toolsCall(1, "write_file") + "," + toolsCall(2, "deploy") + "," + toolsCall(3, "echo") + "]", status: 403, challenge: "deploy files:write", rule: "2"},
	})
}

// TestPolicyDecidesCompletionsAndSubscriptions: completion/complete is
// decided by the prompt or resource rules, as its ref names a prompt or a
// resource template, and resources/subscribe and resources/unsubscribe by
// the resource rules, single or in a batch: a denied prompt's completer
// never runs, a denied resource is never watched.
func TestPolicyDecidesCompletionsAndSubscriptions(t *testing.T) {
	env := newIssuer(t)
	var logs logBuffer
	s := policySetup(t, env, true, &logs, nil)
	tok := func(sub string, claims map[string]any) string { return env.token(t, sub, claims) }
	alice := tok("alice", nil)
	complete := func(id int, ref string) string {
		return `{"jsonrpc":"2.0","id":` + itoa(id) + `,"method":"completion/complete","params":{"ref":` + ref + `,"argument":{"name":"a","value":""}}}`
	}
	subscribe := func(method, uri string) string {
		return `{"jsonrpc":"2.0","id":"s1","method":"resources/` + method + `","params":{"uri":"` + uri + `"}}`
	}
	checkDecisions(t, s, &logs, []decisionCase{
		{name: "completions of a denied prompt", tok: alice, body: complete(6, `{"type":"ref/prompt","name":"internal_plan"}`), status: 403,
			denied: `complete the arguments of the prompt "internal_plan"`, id: "6", rule: "6",
			line: map[string]string{"decision": "deny", "mcp_method": "completion/complete", "mcp_prompt": "internal_plan"}},
		{name: "completions of a prompt for a verified email", tok: tok("lead", map[string]any{"email": "Lead@Example.com"}),
			body: complete(6, `{"type":"ref/prompt","name":"internal_plan"}`), status: 200, want: "completed internal_plan"},
		{name: "completions of a prompt no rule names", tok: alice, body: complete(6, `{"type":"ref/prompt","name":"greet"}`), status: 200, want: "completed greet"},
		{name: "completions of a denied resource template", tok: alice, body: complete(6, `{"type":"ref/resource","uri":"file:///secrets/{name}"}`), status: 403,
			denied: `complete the arguments of the resource template "file:///secrets/{name}"`, id: "6", rule: "5",
			line: map[string]string{"mcp_method": "completion/complete", "mcp_uri": "file:///secrets/{name}"}},
		{name: "completions of a resource template no rule names", tok: alice, body: complete(6, `{"type":"ref/resource","uri":"file:///docs/{name}"}`), status: 200,
			want: "completed file:///docs/{name}"},
		{name: "a resource template with a dot segment", tok: alice, body: complete(6, `{"type":"ref/resource","uri":"file:///docs/../secrets/{name}"}`), status: 403,
			denied: "could name another resource", id: "6", rule: "none"},
		{name: "a prompt's completions are not decided by a uri beside its name", tok: alice,
			body: complete(6, `{"type":"ref/prompt","name":"internal_plan","uri":"file:///readme"}`), status: 403, denied: `"internal_plan"`, id: "6", rule: "6"},
		{name: "a subscription to a denied resource", tok: alice, body: subscribe("subscribe", "file:///secrets/key"), status: 403,
			denied: `subscribe to the resource "file:///secrets/key"`, id: `"s1"`, rule: "5",
			line: map[string]string{"mcp_method": "resources/subscribe", "mcp_uri": "file:///secrets/key"}},
		{name: "a subscription allowed", tok: alice, body: subscribe("subscribe", "file:///readme"), status: 200, want: `"result"`},
		{name: "a subscription with a dot segment", tok: alice, body: subscribe("subscribe", "file:///public/../secrets/key"), status: 403,
			denied: "could name another resource", id: `"s1"`, rule: "none"},
		{name: "an unsubscription from a denied resource", tok: alice, body: subscribe("unsubscribe", "file:///secrets/key"), status: 403,
			denied: `unsubscribe from the resource "file:///secrets/key"`, id: `"s1"`, rule: "5"},
		{name: "an unsubscription allowed", tok: alice, body: subscribe("unsubscribe", "file:///readme"), status: 200, want: `"result"`},
		{name: "a batch with a denied completion", tok: alice,
			body: "[" + toolsCall(1, "echo") + "," + complete(2, `{"type":"ref/prompt","name":"internal_plan"}`) + "]", status: 403, denied: `"internal_plan"`, id: "2", rule: "6"},
		{name: "a batch with a denied subscription", tok: alice,
			body: "[" + complete(1, `{"type":"ref/prompt","name":"greet"}`) + "," + subscribe("subscribe", "file:///secrets/key") + "]", status: 403,
			denied: `subscribe to the resource "file:///secrets/key"`, id: `"s1"`, rule: "5"},
	})
}

// stepUpChallenge is the challenge of a call that needs scopes.
func stepUpChallenge(scopes string) string {
	return `Bearer error="insufficient_scope", scope="` + scopes + `", resource_metadata="` + testMetadataURL + `"`
}

// TestHeaderBodyAgreement: Mcp-Method and Mcp-Name (decoded) must agree
// with the body wherever the gate reads it: with a policy, and on the audit
// path for a body read whole. A mismatch is 400 with -32020 and the
// request's id, in both directions (a header naming an allowed tool over a
// body calling a denied one, and the reverse), and nothing goes upstream.
func TestHeaderBodyAgreement(t *testing.T) {
	env := newIssuer(t)
	alice := env.token(t, "alice", nil)
	wx := env.token(t, "wx", map[string]any{"groups": []string{"weather"}})
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	const meteoB64 = "=?base64?bcOpdMOpbw==?=" // météo
	for _, c := range []struct {
		name   string
		tok    string
		body   string
		h      http.Header
		status int // with the policy
	}{
		{"no headers: an earlier revision", alice, toolsCall(1, "echo"), nil, 200},
		{"both agree", alice, toolsCall(1, "echo"), hdr("Mcp-Method", "tools/call", "Mcp-Name", "echo"), 200},
		{"the header names an allowed tool, the body a denied one", alice, toolsCall(9, "delete_all"), hdr("Mcp-Method", "tools/call", "Mcp-Name", "echo"), 400},
		{"the header names a denied tool, the body an allowed one", alice, toolsCall(9, "echo"), hdr("Mcp-Method", "tools/call", "Mcp-Name", "delete_all"), 400},
		{"another method", alice, toolsCall(9, "echo"), hdr("Mcp-Method", "tools/list", "Mcp-Name", "echo"), 400},
		{"the method in another case", alice, toolsCall(9, "echo"), hdr("Mcp-Method", "Tools/Call", "Mcp-Name", "echo"), 400},
		{"Mcp-Name missing", alice, toolsCall(9, "echo"), hdr("Mcp-Method", "tools/call"), 400},
		{"Mcp-Name twice", alice, toolsCall(9, "echo"), hdr("Mcp-Method", "tools/call", "Mcp-Name", "echo", "Mcp-Name", "echo"), 400},
		{"Base64 that agrees", wx, toolsCall(9, "météo"), hdr("Mcp-Method", "tools/call", "Mcp-Name", meteoB64), 200},
		{"Base64 of another name", wx, toolsCall(9, "météo"), hdr("Mcp-Method", "tools/call", "Mcp-Name", "=?base64?ZWNobw==?="), 400},
		{"Base64 of a denied name over an allowed body", alice, toolsCall(9, "echo"), hdr("Mcp-Method", "tools/call", "Mcp-Name", meteoB64), 400},
		{"Base64 that is not Base64", wx, toolsCall(9, "météo"), hdr("Mcp-Method", "tools/call", "Mcp-Name", "=?base64?bcOpdMOpbw?="), 400},
		{"the markers in another case", wx, toolsCall(9, "météo"), hdr("Mcp-Method", "tools/call", "Mcp-Name", "=?BASE64?bcOpdMOpbw==?="), 400},
		{"a batch under the headers", alice, "[" + toolsCall(9, "echo") + "]", hdr("Mcp-Method", "tools/call", "Mcp-Name", "echo"), 400},
		{"Mcp-Name for a method naming nothing", alice, `{"jsonrpc":"2.0","id":9,"method":"tools/list"}`, hdr("Mcp-Method", "tools/list", "Mcp-Name", "x"), 400},
		{"a completion needs no Mcp-Name", alice, `{"jsonrpc":"2.0","id":9,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"greet"},"argument":{"name":"a","value":""}}}`,
			hdr("Mcp-Method", "completion/complete"), 200},
		{"a subscription needs no Mcp-Name", alice, `{"jsonrpc":"2.0","id":9,"method":"resources/subscribe","params":{"uri":"file:///readme"}}`,
			hdr("Mcp-Method", "resources/subscribe"), 200},
		{"the header names a prompt, the body completes another", alice, `{"jsonrpc":"2.0","id":9,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"internal_plan"},"argument":{"name":"a","value":""}}}`,
			hdr("Mcp-Method", "completion/complete", "Mcp-Name", "greet"), 400},
	} {
		for _, withPolicy := range []bool{true, false} {
			name := c.name + map[bool]string{true: " (policy)", false: " (audit)"}[withPolicy]
			t.Run(name, func(t *testing.T) {
				var s *setup
				if withPolicy {
					s = policySetup(t, env, true, nil, nil)
				} else {
					var logs logBuffer
					h := mcpServer(true)
					s = newSetup(t, env, h.ServeHTTP, func(cfg *Config) { cfg.Logger = jsonLogger(&logs); cfg.UpstreamPath = "/mcp" })
					c.tok = env.token(t, "alice", nil) // no policy: the allow-list only
				}
				resp, body := mcpPost(t, s, c.tok, c.body, c.h)
				want := c.status
				if !withPolicy && want != 400 {
					want = 200
				}
				if resp.StatusCode != want {
					t.Fatalf("status %d, want %d (%s)", resp.StatusCode, want, body)
				}
				if want != 400 {
					return
				}
				if n := len(s.up.requests()); n != 0 {
					t.Fatalf("%d requests reached the server", n)
				}
				e := parseRPCError(t, body)
				if e.Error.Code != mcp.CodeHeaderMismatch {
					t.Errorf("code %d, want %d", e.Error.Code, mcp.CodeHeaderMismatch)
				}
				if !strings.HasPrefix(c.body, "[") && string(e.ID) != "9" {
					t.Errorf("id %s, want 9", e.ID)
				}
				if strings.Contains(e.Error.Message, "delete_all") || strings.Contains(e.Error.Message, "echo") {
					t.Errorf("message %q repeats a value", e.Error.Message)
				}
			})
		}
	}

	// The audit reads only its bound: a longer body is not checked there
	// (the server reads it whole and checks it), and is forwarded whole.
	t.Run("a body past the audit bound", func(t *testing.T) {
		var logs logBuffer
		s := newSetup(t, env, nil, func(cfg *Config) { cfg.Logger = jsonLogger(&logs); cfg.MCPAuditBytes = 32 })
		body := toolsCall(9, "delete_all")
		resp, _ := mcpPost(t, s, alice, body, hdr("Mcp-Method", "tools/call", "Mcp-Name", "echo"))
		if resp.StatusCode != 200 || len(s.up.requests()) != 1 || s.up.requests()[0].Body != body {
			t.Fatalf("status %d: want the body forwarded whole", resp.StatusCode)
		}
	})
}

// TestStrictBody: with a policy, a body the gate cannot read as the
// strictest server would is refused before anything goes upstream.
func TestStrictBody(t *testing.T) {
	env := newIssuer(t)
	s := policySetup(t, env, true, nil, func(c *Config) { c.MaxBodyBytes = 4096 })
	alice := env.token(t, "alice", nil)
	for _, c := range []struct {
		name, body string
		status     int
		code       int
	}{
		{"not JSON", `{"jsonrpc":"2.0","method":"tools/call"`, 400, mcp.CodeParseError},
		{"not UTF-8", "{\"method\":\"tools/call\",\"params\":{\"name\":\"echo\xff\"}}", 400, mcp.CodeParseError},
		{"name twice", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"delete_all"}}`, 400, mcp.CodeInvalidRequest},
		{"name in another case", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","Name":"delete_all"}}`, 400, mcp.CodeInvalidRequest},
		{"method in another case", `{"jsonrpc":"2.0","id":1,"Method":"tools/call","method":"ping"}`, 400, mcp.CodeInvalidRequest},
		{"params twice", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"params":{"name":"delete_all"}}`, 400, mcp.CodeInvalidRequest},
		{"a name that is not a string", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["delete_all"]}}`, 400, mcp.CodeInvalidRequest},
		{"a call in a batch, ambiguous", `[{"method":"ping"},{"method":"tools/call","params":{"name":"echo","nAme":"x"}}]`, 400, mcp.CodeInvalidRequest},
		{"a subscription without a uri", `{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"name":"file:///readme"}}`, 400, mcp.CodeInvalidRequest},
		{"an unsubscription with a uri not a string", `{"jsonrpc":"2.0","id":1,"method":"resources/unsubscribe","params":{"uri":["file:///secrets/key"]}}`, 400, mcp.CodeInvalidRequest},
		{"a completion without a ref", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"argument":{"name":"a","value":""}}}`, 400, mcp.CodeInvalidRequest},
		{"a ref not an object", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":"internal_plan","argument":{"name":"a","value":""}}}`, 400, mcp.CodeInvalidRequest},
		{"a ref of another type", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/tool","name":"internal_plan"},"argument":{"name":"a","value":""}}}`, 400, mcp.CodeInvalidRequest},
		{"a ref name not a string", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":["internal_plan"]},"argument":{"name":"a","value":""}}}`, 400, mcp.CodeInvalidRequest},
		{"a ref uri not a string", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":null},"argument":{"name":"a","value":""}}}`, 400, mcp.CodeInvalidRequest},
		{"a ref type in another case beside it", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///docs/{x}","Type":"ref/prompt","name":"internal_plan"},"argument":{"name":"a","value":""}}}`, 400, mcp.CodeInvalidRequest},
		{"a ref name twice", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"greet","name":"internal_plan"},"argument":{"name":"a","value":""}}}`, 400, mcp.CodeInvalidRequest},
		{"a malformed ref in a batch", `[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"completion/complete","params":{"ref":{"type":"ref/prompt"},"argument":{"name":"a","value":""}}}]`, 400, mcp.CodeInvalidRequest},
		{"over MAX_BODY_BYTES", toolsCall(1, strings.Repeat("x", 5000)), 413, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(s.up.requests())
			resp, body := mcpPost(t, s, alice, c.body, nil)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, c.status, body)
			}
			if len(s.up.requests()) != before {
				t.Fatal("the body reached the server")
			}
			if c.code != 0 {
				if e := parseRPCError(t, body); e.Error.Code != c.code {
					t.Errorf("code %d, want %d", e.Error.Code, c.code)
				}
			}
		})
	}
	// The same body chunked: the length is not known up front.
	resp, _ := s.do(t, http.MethodPost, "/", http.Header{"Authorization": {"Bearer " + alice}, "Content-Type": {"application/json"}},
		unsized{strings.NewReader(toolsCall(1, strings.Repeat("x", 5000)))})
	if resp.StatusCode != 413 {
		t.Errorf("chunked over MAX_BODY_BYTES: status %d, want 413", resp.StatusCode)
	}
}

// listed returns the names of a listing answer (JSON, or the data of the
// last event of an event stream).
func listed(t *testing.T, contentType, body string) []string {
	t.Helper()
	msg := body
	if strings.HasPrefix(contentType, "text/event-stream") {
		msg = ""
		for line := range strings.SplitSeq(body, "\n") {
			if d, ok := strings.CutPrefix(line, "data: "); ok {
				msg = d
			}
		}
	}
	var res struct {
		Result struct {
			Tools     []struct{ Name string } `json:"tools"`
			Prompts   []struct{ Name string } `json:"prompts"`
			Resources []struct{ URI string }  `json:"resources"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(msg), &res); err != nil {
		t.Fatalf("listing %q: %v", msg, err)
	}
	var names []string
	for _, e := range res.Result.Tools {
		names = append(names, e.Name)
	}
	for _, e := range res.Result.Prompts {
		names = append(names, e.Name)
	}
	for _, e := range res.Result.Resources {
		names = append(names, e.URI)
	}
	slices.Sort(names)
	return names
}

// TestFilteredListings: what a real MCP server lists, as JSON and as an
// event stream, loses for each caller the entries the policy denies them;
// a tool that needs a scope they lack stays listed (calling it brings the
// step-up).
func TestFilteredListings(t *testing.T) {
	env := newIssuer(t)
	alice := env.token(t, "alice", nil)
	admin := env.token(t, "admin", map[string]any{"groups": []string{"admins", "ops"}})
	for _, jsonResponse := range []bool{true, false} {
		s := policySetup(t, env, jsonResponse, nil, nil)
		for _, c := range []struct {
			method, tok string
			want        []string
		}{
			{"tools/list", alice, []string{"echo", "undelete", "write_file"}},
			{"tools/list", admin, []string{"delete_all", "delete_one", "deploy", "echo", "undelete", "write_file"}},
			{"resources/list", alice, []string{"file:///readme"}},
			{"prompts/list", alice, []string{"greet"}},
		} {
			resp, body := mcpPost(t, s, c.tok, `{"jsonrpc":"2.0","id":1,"method":"`+c.method+`","params":{}}`,
				http.Header{"Accept-Encoding": {"gzip"}})
			ct := resp.Header.Get("Content-Type")
			if resp.StatusCode != 200 || strings.HasPrefix(ct, "text/event-stream") == jsonResponse {
				t.Fatalf("%s (JSON answers: %v): status %d, Content-Type %q", c.method, jsonResponse, resp.StatusCode, ct)
			}
			if got := listed(t, ct, body); !slices.Equal(got, c.want) {
				t.Errorf("%s (%s): got %q, want %q", c.method, ct, got, c.want)
			}
			if jsonResponse && resp.ContentLength != int64(len(body)) {
				t.Errorf("Content-Length %d for %d bytes", resp.ContentLength, len(body))
			}
		}
		for _, r := range s.up.requests() {
			if r.Header.Get("Accept-Encoding") != "" {
				t.Errorf("a listing request asked the server for an encoded answer: %q", r.Header.Get("Accept-Encoding"))
			}
		}
	}
}

// TestListingBytes: a listing loses its denied entries and nothing else:
// every other byte, other members and answers other than listings pass as
// they came.
func TestListingBytes(t *testing.T) {
	env := newIssuer(t)
	const in = `{"jsonrpc":"2.0","id":1,"result":{"tools":[ {"name":"delete_all","x":1} ,` + "\n" +
		`  {"name":"echo", "description":"say \"it\" back"},{"name":"deploy"}],"nextCursor":"c2","_meta":{"tools":["delete_all"]}}}`
	const want = `{"jsonrpc":"2.0","id":1,"result":{"tools":[ ` +
		`{"name":"echo", "description":"say \"it\" back"}],"nextCursor":"c2","_meta":{"tools":["delete_all"]}}}`
	const other = `{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"delete_all"}]}}`
	p, err := policy.Parse(testPolicy)
	if err != nil {
		t.Fatal(err)
	}
	s := newSetup(t, env, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(r.Header.Get("X-Test"), "other") {
			_, _ = io.WriteString(w, other)
			return
		}
		_, _ = io.WriteString(w, in)
	}, func(c *Config) { c.Policy = p })
	alice := env.token(t, "alice", nil)
	if _, body := mcpPost(t, s, alice, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, nil); body != want {
		t.Errorf("tools/list:\ngot  %s\nwant %s", body, want)
	}
	// Only an answer to a listing request is filtered.
	if _, body := mcpPost(t, s, alice, `{"jsonrpc":"2.0","id":2,"method":"ping"}`, http.Header{"X-Test": {"other"}}); body != other {
		t.Errorf("ping: got %s, want %s", body, other)
	}
}

// TestListingEventStreamStreams: an event-stream listing is filtered event
// by event as the events come: the first reaches the client, filtered,
// while the server still holds the stream open.
func TestListingEventStreamStreams(t *testing.T) {
	env := newIssuer(t)
	p, err := policy.Parse(testPolicy)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	s := newSetup(t, env, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"delete_all\"},{\"name\":\"echo\"}]}}\n\n")
		w.(http.Flusher).Flush()
		<-release
		_, _ = io.WriteString(w, ": done\n\n")
	}, func(c *Config) { c.Policy = p })
	defer close(release)
	req, _ := http.NewRequest(http.MethodPost, s.front.URL+"/", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	req.Header = bearerHeader(env.token(t, "alice", nil))
	resp, err := s.front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		var got string
		for !strings.HasSuffix(got, "\n\n") {
			n, err := resp.Body.Read(buf)
			got += string(buf[:n])
			if err != nil {
				break
			}
		}
		first <- got
	}()
	var got string
	select {
	case got = <-first:
	case <-time.After(10 * time.Second):
		t.Fatal("the first event did not reach the client while the stream was open: the listing was buffered")
	}
	if want := "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"echo\"}]}}\n\n"; got != want {
		t.Errorf("first event:\ngot  %q\nwant %q", got, want)
	}
}

// TestResumedStreamListings: a GET that resumes a stream (Last-Event-ID)
// gets back what the server sent on it, the answers to listings included,
// and no request body says so: with a policy every listing in it is
// filtered, as in the answer to the listing itself; other events pass as
// they came. Without the filter a client read a denied tool back this way.
func TestResumedStreamListings(t *testing.T) {
	env := newIssuer(t)
	p, err := policy.Parse(testPolicy)
	if err != nil {
		t.Fatal(err)
	}
	const replay = "id: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"delete_all\"},{\"name\":\"echo\"}]}}\n\n" +
		"id: 2\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"resources\":[{\"uri\":\"file:///secrets/key\"},{\"uri\":\"file:///readme\"}]}}\n\n" +
		"id: 3\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"prompts\":[{\"name\":\"internal_x\"},{\"name\":\"greet\"}]}}\n\n" +
		"id: 4\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n\n"
	const want = "id: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"echo\"}]}}\n\n" +
		"id: 2\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"resources\":[{\"uri\":\"file:///readme\"}]}}\n\n" +
		"id: 3\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"prompts\":[{\"name\":\"greet\"}]}}\n\n" +
		"id: 4\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n\n"
	s := newSetup(t, env, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, replay)
	}, func(c *Config) { c.Policy = p })
	h := bearerHeader(env.token(t, "alice", nil))
	h.Set("Accept", "text/event-stream")
	h.Set("Last-Event-ID", "0")
	resp, body := s.do(t, http.MethodGet, "/", h, nil)
	if resp.StatusCode != 200 || body != want {
		t.Errorf("resumed stream: status %d\ngot  %q\nwant %q", resp.StatusCode, body, want)
	}
}

// TestSeveralContentTypes: an answer with two Content-Type fields is read
// one way by the listing filter (the first) and may be read the other way
// by a client (the last): it is refused with 502 over both clients, the
// gate's own and httputil.ReverseProxy's, never passed on unfiltered.
func TestSeveralContentTypes(t *testing.T) {
	env := newIssuer(t)
	p, err := policy.Parse(testPolicy)
	if err != nil {
		t.Fatal(err)
	}
	for _, own := range []bool{true, false} {
		s := newSetup(t, env, func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = []string{"text/plain", "text/event-stream"}
			_, _ = io.WriteString(w, "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"delete_all\"}]}}\n\n")
		}, func(c *Config) {
			c.Policy = p
			if !own {
				c.Transport = &http.Transport{}
			}
		})
		resp, body := mcpPost(t, s, env.token(t, "alice", nil), `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, nil)
		if resp.StatusCode != http.StatusBadGateway || strings.Contains(body, "delete_all") {
			t.Errorf("the gate's own client: %v: status %d, body %q; want 502 without the listing", own, resp.StatusCode, body)
		}
	}
}

// TestListingOverTheCap: a listing larger than the cap is refused, never
// passed unfiltered: a JSON answer with 502, an event stream cut at the
// event; both logged naming the cap.
func TestListingOverTheCap(t *testing.T) {
	env := newIssuer(t)
	p, err := policy.Parse(testPolicy)
	if err != nil {
		t.Fatal(err)
	}
	big := `{"jsonrpc":"2.0","id":1,"result":{"tools":[` + strings.Repeat(`{"name":"echo"},`, 100) + `{"name":"delete_all"}]}}`
	for _, c := range []struct {
		name, contentType, body string
		status                  int
		log                     string
	}{
		{"JSON", "application/json", big, 502, "listing refused"},
		{"event stream", "text/event-stream", "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\ndata: " + big + "\n\n", 200, "listing event stream cut"},
		{"an encoded answer", "application/json", big[:100], 502, "listing refused"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs logBuffer
			s := newSetup(t, env, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", c.contentType)
				if c.name == "an encoded answer" {
					w.Header().Set("Content-Encoding", "gzip")
				}
				_, _ = io.WriteString(w, c.body)
			}, func(cfg *Config) { cfg.Policy = p; cfg.MaxListingBytes = 1000; cfg.Logger = jsonLogger(&logs) })
			req, _ := http.NewRequest(http.MethodPost, s.front.URL+"/", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
			req.Header = bearerHeader(env.token(t, "alice", nil))
			resp, err := s.front.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body) // a cut stream may end with an error
			resp.Body.Close()
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.status)
			}
			if strings.Contains(string(body), "delete_all") {
				t.Errorf("the hidden tool reached the client: %q", body)
			}
			line := logs.next(t, "proxy: "+c.log, 0)
			if c.name != "an encoded answer" {
				msg, _ := line["@message"].(string)
				errText, _ := line["error"].(string)
				if !strings.Contains(msg+errText, "1000 bytes") {
					t.Errorf("log line %v does not name the cap", line)
				}
			}
		})
	}
}

// TestPolicyWithSDKClient: a real MCP client sees only the tools it may
// use, calls them, and gets an error for one it may not.
func TestPolicyWithSDKClient(t *testing.T) {
	env := newIssuer(t)
	s := policySetup(t, env, false, nil, nil)
	client := sdk.NewClient(&sdk.Implementation{Name: "policy-client", Version: "1.0.0"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	session, err := client.Connect(ctx, &sdk.StreamableClientTransport{
		Endpoint:   s.front.URL + "/",
		HTTPClient: &http.Client{Transport: bearerTransport{token: env.token(t, "alice", nil), next: s.front.Client().Transport}},
	}, nil)
	if err != nil {
		t.Fatalf("connect through the gate: %v", err)
	}
	defer session.Close()
	tools, err := session.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	if want := []string{"echo", "undelete", "write_file"}; !slices.Equal(names, want) {
		t.Errorf("tools: got %q, want %q", names, want)
	}
	res, err := session.CallTool(ctx, &sdk.CallToolParams{Name: "echo", Arguments: map[string]any{}})
	if err != nil || res.IsError {
		t.Fatalf("echo: %v %+v", err, res)
	}
	if _, err := session.CallTool(ctx, &sdk.CallToolParams{Name: "delete_all", Arguments: map[string]any{}}); err == nil {
		t.Error("delete_all: no error")
	}
}

// TestAuditNamesTheRule: the audit line of an allowed call names the rule
// that allowed it ("none" when none matched), and the call.
func TestAuditNamesTheRule(t *testing.T) {
	env := newIssuer(t)
	var logs logBuffer
	s := policySetup(t, env, true, &logs, nil)
	alice := env.token(t, "alice", nil)
	for i, c := range []struct{ body, rule, key, name string }{
		{toolsCall(1, "echo"), "7", "mcp_tool", "echo"},
		{`{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"greet"}}`, "none", "mcp_method", "prompts/get"},
		{`{"jsonrpc":"2.0","id":3,"method":"resources/subscribe","params":{"uri":"file:///readme"}}`, "none", "mcp_uri", "file:///readme"},
		{`{"jsonrpc":"2.0","id":4,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///docs/{x}"},"argument":{"name":"x","value":""}}}`, "none", "mcp_uri", "file:///docs/{x}"},
		{`{"jsonrpc":"2.0","id":5,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"greet"},"argument":{"name":"x","value":""}}}`, "none", "mcp_method", "completion/complete"},
	} {
		if resp, body := mcpPost(t, s, alice, c.body, nil); resp.StatusCode != 200 {
			t.Fatalf("status %d (%s)", resp.StatusCode, body)
		}
		line := logs.next(t, "proxied", i)
		if line["rule"] != c.rule || line[c.key] != c.name {
			t.Errorf("audit line %v: want rule %q and %s %q", line, c.rule, c.key, c.name)
		}
	}
}

// TestNoOfflineAccessInChallenges: a resource server's challenge does not
// ask for offline_access (MCP 2026-07-28 authorization), whatever
// SCOPES_SUPPORTED lists.
func TestNoOfflineAccessInChallenges(t *testing.T) {
	env := newIssuer(t)
	s := newSetup(t, env, nil, func(c *Config) { c.ChallengeScopes = []string{"openid", "offline_access", "mcp"} })
	resp, _ := s.do(t, http.MethodPost, "/mcp", nil, strings.NewReader(`{}`))
	if got, want := resp.Header.Get("Www-Authenticate"), `Bearer resource_metadata="`+testMetadataURL+`", scope="openid mcp"`; got != want {
		t.Errorf("WWW-Authenticate %q, want %q", got, want)
	}
}
