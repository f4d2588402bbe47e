// Package demo is the small MCP server that `mcp-oauth-proxy dev` puts
// behind the gateway when the developer brings none: an "echo" tool and a
// "count" tool that streams progress notifications. It is built on the MCP
// Go SDK and speaks Streamable HTTP. It knows nothing of OAuth: it trusts
// whoever reaches its socket, which is exactly the kind of server the
// gateway exists to protect.
package demo

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// EchoArgs are the echo tool's arguments.
type EchoArgs struct {
	Message string `json:"message" jsonschema:"the text to send back"`
}

// CountArgs are the count tool's arguments.
type CountArgs struct {
	To      int `json:"to" jsonschema:"count from 1 to this number (at most 100)"`
	DelayMS int `json:"delay_ms,omitempty" jsonschema:"pause between steps in milliseconds (at most 1000)"`
}

// NewServer returns the demo MCP server.
func NewServer() *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "mcp-oauth-proxy-demo", Version: "1.0.0"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "Send back the message it is given."},
		func(ctx context.Context, req *mcp.CallToolRequest, in EchoArgs) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Message}}}, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "count", Description: "Count up, sending a progress notification at each step."},
		func(ctx context.Context, req *mcp.CallToolRequest, in CountArgs) (*mcp.CallToolResult, any, error) {
			to := min(max(in.To, 1), 100)
			delay := time.Duration(min(max(in.DelayMS, 0), 1000)) * time.Millisecond
			token := req.Params.GetProgressToken()
			for i := 1; i <= to; i++ {
				if token != nil {
					_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
						ProgressToken: token, Progress: float64(i), Total: float64(to), Message: fmt.Sprintf("step %d of %d", i, to),
					})
				}
				select {
				case <-ctx.Done():
					return nil, nil, ctx.Err()
				case <-time.After(delay):
				}
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("counted to %d", to)}}}, nil, nil
		})
	return s
}

// Handler serves the demo server over Streamable HTTP. Stateless, so a
// plain curl can call tools/list without an initialize round trip.
func Handler() http.Handler {
	s := NewServer()
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{Stateless: true})
}
