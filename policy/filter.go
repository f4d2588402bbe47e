package policy

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/mcp"
)

// DefaultListingCap bounds a listing response the gateway filters (a JSON
// body, or one event of an event stream) when no other cap is set: a
// larger one is refused (the gate answers 502), never passed unfiltered.
const DefaultListingCap = 1 << 20

// kindOfList is the kind of call the entries of a listing name.
func kindOfList(l mcp.List) Kind {
	switch l {
	case mcp.ListTools:
		return Tool
	case mcp.ListResources:
		return Resource
	case mcp.ListPrompts:
		return Prompt
	}
	return 0
}

// Keep returns what a listing keeps for s: every entry but those whose call
// the policy denies s. An entry refused only for missing scopes stays
// listed: calling it brings the step-up challenge that lets the user grant
// them, which a hidden tool never would.
func (p *Policy) Keep(s *Subject) mcp.Keep {
	return func(l mcp.List, name string) bool {
		return p.Decide(s, kindOfList(l), name).Outcome != Deny
	}
}

// Filter returns the response to a listing request (tools/list,
// resources/list, prompts/list: lists is what the request asked for, see
// mcp.ListOf), read from src, without the entries s may not use (Keep),
// every other byte as it came:
//   - application/json: the body is read whole, up to max bytes, and
//     filtered (mcp.FilterList) before Filter returns, so an error comes
//     before anything is passed on and the gate can still answer 502; the
//     reader returned is a *bytes.Reader;
//   - text/event-stream: the reader filters event by event as the events
//     arrive (mcp.NewEventFilter), each event up to max bytes; its errors
//     come from Read, after the events before the one that failed, and can
//     only end the stream;
//   - anything else is not a listing a client reads: src itself.
//
// The type is told as the MCP SDKs tell it (the header contains one of the
// two, in any case), not by a stricter parse a client would not share; a
// header naming both is refused.
//
// Errors wrap mcp.ErrTooLarge (over max), mcp.ErrSyntax or
// mcp.ErrAmbiguous (a listing that cannot be filtered), or are src's.
func (p *Policy) Filter(src io.Reader, contentType string, lists mcp.List, s *Subject, max int) (io.Reader, error) {
	ct := strings.ToLower(contentType)
	json, events := strings.Contains(ct, "application/json"), strings.Contains(ct, "text/event-stream")
	switch {
	case json && events:
		return nil, fmt.Errorf("filter listing: Content-Type names both JSON and an event stream: %w", mcp.ErrAmbiguous)
	case json:
		body, err := mcp.ReadBody(src, int64(max))
		if err != nil {
			return nil, err
		}
		out, err := mcp.FilterList(body, lists, p.Keep(s))
		if err != nil {
			return nil, err
		}
		return bytes.NewReader(out), nil
	case events:
		return mcp.NewEventFilter(src, max, lists, p.Keep(s)), nil
	}
	return src, nil
}
