package doctor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// rpcAnswer is the HTTP answer to one JSON-RPC message.
type rpcAnswer struct {
	status int
	header http.Header
	msg    map[string]any // the JSON-RPC response carrying the request's id; nil if none came
	body   []byte         // the body of a non-200 answer
}

// mcpSession is what initialize negotiated (Streamable HTTP transport).
type mcpSession struct {
	token   string
	id      string // Mcp-Session-Id, if the server gave one
	version string // the negotiated protocol version
}

// rpc POSTs one JSON-RPC request (id > 0) or notification (id 0) to the MCP
// endpoint and returns the response with that id, read from a JSON body or
// from the event stream (Streamable HTTP transport), at most maxBody bytes,
// within the request timeout.
func (c *checker) rpc(ctx context.Context, s *mcpSession, id int, method string, params any) (*rpcAnswer, error) {
	msg := map[string]any{"jsonrpc": "2.0", "method": method}
	if params != nil {
		msg["params"] = params
	}
	if id > 0 {
		msg["id"] = id
	}
	body, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", method, err)
	}
	rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, c.target.String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build %s request: %w", method, err)
	}
	req.Header = mcpHeaders(method)
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("Authorization", "Bearer "+s.token)
	if s.id != "" {
		req.Header.Set("Mcp-Session-Id", s.id)
	}
	if s.version != "" {
		req.Header.Set("Mcp-Protocol-Version", s.version)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, c.describe(ctx, err)
	}
	defer resp.Body.Close()
	ans := &rpcAnswer{status: resp.StatusCode, header: resp.Header}
	lr := io.LimitReader(resp.Body, maxBody)
	if resp.StatusCode != http.StatusOK || id == 0 {
		ans.body, _ = io.ReadAll(lr)
		return ans, nil
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	want := strconv.Itoa(id)
	switch mt {
	case "text/event-stream":
		ans.msg, err = readEvents(lr, want)
	case "application/json":
		var b []byte
		if b, err = io.ReadAll(lr); err == nil {
			ans.msg, err = decodeObject(b)
		}
	default:
		err = fmt.Errorf("the answer's Content-Type is %q, neither application/json nor text/event-stream", mt)
	}
	if err != nil {
		return nil, fmt.Errorf("read the %s answer: %w", method, c.describe(ctx, err))
	}
	if ans.msg == nil || fmt.Sprint(ans.msg["id"]) != want {
		return nil, fmt.Errorf("the %s answer carries no JSON-RPC response with id %s", method, want)
	}
	return ans, nil
}

// readEvents reads a text/event-stream until an event's data is the
// JSON-RPC response with id want (HTML Living Standard, server-sent events:
// data lines joined by newlines, dispatched at a blank line).
func readEvents(r io.Reader, want string) (map[string]any, error) {
	br := bufio.NewReader(r)
	var data strings.Builder
	for {
		line, err := br.ReadString('\n')
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if data.Len() > 0 {
				if m, derr := decodeObject([]byte(data.String())); derr == nil && fmt.Sprint(m["id"]) == want {
					return m, nil
				}
				data.Reset()
			}
		case strings.HasPrefix(line, "data:"):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, errors.New("the event stream ended without the response")
			}
			return nil, err
		}
	}
}

// rpcError returns a JSON-RPC error's message, or "".
func rpcError(msg map[string]any) string {
	e, ok := msg["error"].(map[string]any)
	if !ok {
		return ""
	}
	return fmt.Sprintf("JSON-RPC error %v: %v", e["code"], e["message"])
}

// listTools runs initialize, notifications/initialized and tools/list with
// token, and returns the tools' names. A refusal comes back as the answer.
func (c *checker) listTools(ctx context.Context, token string) ([]string, *rpcAnswer, error) {
	s := &mcpSession{token: token}
	ans, err := c.rpc(ctx, s, 1, "initialize", map[string]any{
		"protocolVersion": protocolVersion,
		"capabilities":    map[string]any{},
		"clientInfo":      map[string]any{"name": userAgent, "version": "1"},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("initialize: %w", err)
	}
	if ans.status != http.StatusOK {
		return nil, ans, nil
	}
	if e := rpcError(ans.msg); e != "" {
		return nil, nil, fmt.Errorf("initialize: %s", e)
	}
	s.id = ans.header.Get("Mcp-Session-Id")
	if res, ok := ans.msg["result"].(map[string]any); ok {
		s.version, _ = res["protocolVersion"].(string)
	}
	if n, err := c.rpc(ctx, s, 0, "notifications/initialized", nil); err == nil && n.status >= 400 {
		return nil, n, nil
	}
	ans, err = c.rpc(ctx, s, 2, "tools/list", map[string]any{})
	if err != nil {
		return nil, nil, fmt.Errorf("tools/list: %w", err)
	}
	if ans.status != http.StatusOK {
		return nil, ans, nil
	}
	if e := rpcError(ans.msg); e != "" {
		return nil, nil, fmt.Errorf("tools/list: %s", e)
	}
	res, _ := ans.msg["result"].(map[string]any)
	tools, ok := res["tools"].([]any)
	if !ok {
		return nil, nil, errors.New("tools/list: the result has no tools list")
	}
	names := make([]string, 0, len(tools))
	for _, t := range tools {
		if m, ok := t.(map[string]any); ok {
			if n, ok := m["name"].(string); ok {
				names = append(names, n)
			}
		}
	}
	return names, nil, nil
}
