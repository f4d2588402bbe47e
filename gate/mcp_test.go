package gate

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// bearerTransport adds the bearer token to every request, as an MCP client
// does after its OAuth flow.
type bearerTransport struct {
	token string
	next  http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

type greetIn struct {
	Name string `json:"name"`
}

type greetOut struct {
	Greeting string `json:"greeting"`
}

// TestMCPServer runs a real MCP server from the Go SDK behind the gate and a
// real SDK client in front of it.
func TestMCPServer(t *testing.T) {
	env := newIssuer(t)
	server := mcp.NewServer(&mcp.Implementation{Name: "test-server", Version: "1.0.0"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "greet", Description: "say hello"},
		func(ctx context.Context, req *mcp.CallToolRequest, in greetIn) (*mcp.CallToolResult, greetOut, error) {
			// Progress notifications make the server answer this POST with an
			// SSE stream.
			if tok := req.Params.GetProgressToken(); tok != nil {
				for i := range 3 {
					_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i + 1), Total: 3, Message: "working"})
				}
			}
			return nil, greetOut{Greeting: "hello " + in.Name}, nil
		})
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	s := newSetup(t, env, handler.ServeHTTP, func(c *Config) { c.UpstreamPath = "/mcp" })

	var mu sync.Mutex
	var progress []float64
	client := mcp.NewClient(&mcp.Implementation{Name: "test-client", Version: "1.0.0"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			mu.Lock()
			progress = append(progress, req.Params.Progress)
			mu.Unlock()
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	transport := &mcp.StreamableClientTransport{
		Endpoint:   s.front.URL + "/",
		HTTPClient: &http.Client{Transport: bearerTransport{token: env.token(t, "alice", nil), next: s.front.Client().Transport}},
	}
	session, err := client.Connect(ctx, transport, nil)
	if err != nil {
		t.Fatalf("initialize through the gate: %v", err)
	}
	defer session.Close()

	tools, err := session.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	if got, want := len(tools.Tools), 1; got != want || tools.Tools[0].Name != "greet" {
		t.Fatalf("tools: got %+v, want one named greet", tools.Tools)
	}

	params := &mcp.CallToolParams{Name: "greet", Arguments: map[string]any{"name": "gate"}}
	params.SetProgressToken("p1")
	res, err := session.CallTool(ctx, params)
	if err != nil {
		t.Fatalf("tools/call: %v", err)
	}
	if res.IsError || len(res.Content) == 0 {
		t.Fatalf("tools/call result: %+v", res)
	}
	if got, ok := res.Content[0].(*mcp.TextContent); !ok || !strings.Contains(got.Text, "hello gate") {
		t.Errorf("tools/call content: got %+v, want hello gate", res.Content[0])
	}
	// Notification handlers run asynchronously in the client; give them a
	// moment to catch up with the result.
	var gotProgress int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		gotProgress = len(progress)
		mu.Unlock()
		if gotProgress >= 3 {
			break
		}
	}
	if gotProgress != 3 {
		t.Errorf("progress notifications streamed through the gate: got %d, want 3", gotProgress)
	}

	var sawSession bool
	for _, r := range s.up.requests() {
		if r.Path != "/mcp" {
			t.Errorf("upstream path: got %q, want /mcp", r.Path)
		}
		if r.Header.Get("Authorization") != "" {
			t.Errorf("upstream got the client's token")
		}
		if r.Header.Get("Mcp-Session-Id") != "" {
			sawSession = true
		}
	}
	if !sawSession {
		t.Errorf("Mcp-Session-Id never reached the upstream")
	}
}
