package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/mcp"
)

func TestFilter(t *testing.T) {
	p := mustParse(t, examplePolicy)
	ops := &Subject{Sub: "o1", Groups: []string{"ops"}}
	// delete_all: denied to ops; deploy: ops lacks the scope, so step-up:
	// listed; write_file: step-up, listed; echo: allowed.
	tools := `{"jsonrpc":"2.0","id":3,"result":{"tools":[` +
		`{"name":"echo","description":"say it back","inputSchema":{"type":"object"}},` +
		`{"name":"delete_all","description":"no way back","inputSchema":{"type":"object"}},` +
		`{"name":"deploy","inputSchema":{"type":"object"}},` +
		`{"name":"write_file","inputSchema":{"type":"object"}}],"nextCursor":"n1"}}`
	toolsWant := `{"jsonrpc":"2.0","id":3,"result":{"tools":[` +
		`{"name":"echo","description":"say it back","inputSchema":{"type":"object"}},` +
		`{"name":"deploy","inputSchema":{"type":"object"}},` +
		`{"name":"write_file","inputSchema":{"type":"object"}}],"nextCursor":"n1"}}`
	resources := `{"jsonrpc":"2.0","id":4,"result":{"resources":[{"uri":"file:///secrets/key","name":"key"},{"uri":"file:///readme","name":"readme"}]}}`
	resourcesWant := `{"jsonrpc":"2.0","id":4,"result":{"resources":[{"uri":"file:///readme","name":"readme"}]}}`
	for _, c := range []struct {
		name, contentType, body, want string
		lists                         mcp.List
	}{
		{"JSON tools/list", "application/json", tools, toolsWant, mcp.ListTools},
		{"JSON with a charset", "Application/JSON; charset=utf-8", resources, resourcesWant, mcp.ListResources},
		{"an event stream", "text/event-stream",
			"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\nevent: message\nid: 9\ndata: " + tools + "\n\n",
			"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\nevent: message\nid: 9\ndata: " + toolsWant + "\n\n",
			mcp.ListTools},
		{"not a listing type: copied", "text/plain", tools, tools, mcp.ListTools},
		{"a listing not asked for is left alone", "application/json", tools, tools, mcp.ListPrompts},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := p.Filter(strings.NewReader(c.body), c.contentType, c.lists, ops, DefaultListingCap)
			if err != nil {
				t.Fatalf("Filter: %v", err)
			}
			out, err := io.ReadAll(r)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if string(out) != c.want {
				t.Errorf("got\n%s\nwant\n%s", out, c.want)
			}
		})
	}
}

func TestFilterRefuses(t *testing.T) {
	p := mustParse(t, examplePolicy)
	big := `{"result":{"tools":[` + strings.Repeat(`{"name":"echo"},`, 100) + `{"name":"delete_all"}]}}`
	first := "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n"
	for _, c := range []struct {
		name, contentType, body string
		want                    error
		before                  string // read before the error; "": Filter itself refuses
	}{
		{"a JSON listing over the cap", "application/json", big, mcp.ErrTooLarge, ""},
		{"an event over the cap", "text/event-stream", first + "data: " + big + "\n\n", mcp.ErrTooLarge, first},
		{"both types named", "application/json, text/event-stream", `{"result":{"tools":[]}}`, mcp.ErrAmbiguous, ""},
		{"an ambiguous listing", "application/json", `{"result":{"tools":[],"tools":[{"name":"delete_all"}]}}`, mcp.ErrAmbiguous, ""},
		{"not JSON", "application/json", `{"result":`, mcp.ErrSyntax, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := p.Filter(strings.NewReader(c.body), c.contentType, mcp.ListTools, &Subject{}, 1000)
			var out []byte
			if c.before != "" {
				if err != nil {
					t.Fatalf("Filter refused an event stream before reading it: %v", err)
				}
				out, err = io.ReadAll(r)
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if string(out) != c.before {
				t.Errorf("read before the error: got %q, want %q", out, c.before)
			}
		})
	}
}

// TestFilterGoSDKListings filters what a real MCP server (the Go SDK's)
// answers to tools/list and prompts/list, as JSON and as an event stream.
func TestFilterGoSDKListings(t *testing.T) {
	server := sdk.NewServer(&sdk.Implementation{Name: "policy-test", Version: "1.0.0"}, nil)
	type in struct {
		X string `json:"x"`
	}
	for _, name := range []string{"echo", "delete_all", "deploy", "write_file"} {
		sdk.AddTool(server, &sdk.Tool{Name: name, Description: "the " + name + " tool"},
			func(context.Context, *sdk.CallToolRequest, in) (*sdk.CallToolResult, any, error) {
				return nil, nil, nil
			})
	}
	for _, name := range []string{"greet", "secret_prompt"} {
		server.AddPrompt(&sdk.Prompt{Name: name}, func(context.Context, *sdk.GetPromptRequest) (*sdk.GetPromptResult, error) {
			return &sdk.GetPromptResult{}, nil
		})
	}
	p := mustParse(t, "prompt:secret_*=group:admins; "+examplePolicy)
	ops := &Subject{Sub: "o1", Groups: []string{"ops"}}

	seen := map[bool]bool{} // event stream: seen
	for _, jsonResponse := range []bool{true, false} {
		handler := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return server },
			&sdk.StreamableHTTPOptions{Stateless: true, JSONResponse: jsonResponse})
		up := httptest.NewServer(handler)
		for _, c := range []struct {
			method string
			want   []string
		}{
			{"tools/list", []string{"deploy", "echo", "write_file"}},
			{"prompts/list", []string{"greet"}},
		} {
			req, _ := http.NewRequest(http.MethodPost, up.URL, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"`+c.method+`","params":{}}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			resp, err := up.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			ct := resp.Header.Get("Content-Type")
			seen[strings.Contains(ct, "text/event-stream")] = true
			r, err := p.Filter(resp.Body, ct, mcp.ListOf(c.method), ops, DefaultListingCap)
			var msg []byte
			if err == nil {
				msg, err = io.ReadAll(r)
			}
			resp.Body.Close()
			if err != nil {
				t.Fatalf("%s (%s): %v", c.method, ct, err)
			}
			if strings.Contains(ct, "event-stream") {
				_, data, ok := bytes.Cut(msg, []byte("data: "))
				if !ok {
					t.Fatalf("%s: no data in %q", c.method, msg)
				}
				msg, _, _ = bytes.Cut(data, []byte("\n"))
			}
			var res struct {
				Result struct {
					Tools   []struct{ Name string } `json:"tools"`
					Prompts []struct{ Name string } `json:"prompts"`
				} `json:"result"`
			}
			if err := json.Unmarshal(msg, &res); err != nil {
				t.Fatalf("%s (%s): %q: %v", c.method, ct, msg, err)
			}
			var got []string
			for _, e := range append(res.Result.Tools, res.Result.Prompts...) {
				got = append(got, e.Name)
			}
			slices.Sort(got)
			if !slices.Equal(got, c.want) {
				t.Errorf("%s (%s): got %q, want %q", c.method, ct, got, c.want)
			}
		}
		up.Close()
	}
	if !seen[true] || !seen[false] {
		t.Errorf("the server answered as JSON: %v, as an event stream: %v; want both", seen[false], seen[true])
	}
}
