package policy

import (
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

// Filter copies a response to a listing request (tools/list,
// resources/list, prompts/list: lists is what the request asked for, see
// mcp.ListOf) from src to dst, without the entries s may not use (Keep),
// every other byte as it came:
//   - application/json: the body is read whole, up to max bytes, then
//     filtered (mcp.FilterList) and written at once, so on an error nothing
//     has been written and the gate can still answer 502;
//   - text/event-stream: event by event (mcp.FilterEvents), each event up
//     to max bytes and written once filtered; an error after the first
//     event can only end the stream;
//   - anything else is not a listing a client reads, and is copied.
//
// The type is told as the MCP SDKs tell it (the header contains one of the
// two, in any case), not by a stricter parse a client would not share; a
// header naming both is refused.
//
// Errors wrap mcp.ErrTooLarge (over max), mcp.ErrSyntax or
// mcp.ErrAmbiguous (a listing that cannot be filtered), or are src's or
// dst's.
func (p *Policy) Filter(dst io.Writer, src io.Reader, contentType string, lists mcp.List, s *Subject, max int) error {
	ct := strings.ToLower(contentType)
	json, events := strings.Contains(ct, "application/json"), strings.Contains(ct, "text/event-stream")
	switch {
	case json && events:
		return fmt.Errorf("filter listing: Content-Type names both JSON and an event stream: %w", mcp.ErrAmbiguous)
	case json:
		body, err := mcp.ReadBody(src, int64(max))
		if err != nil {
			return err
		}
		out, err := mcp.FilterList(body, lists, p.Keep(s))
		if err != nil {
			return err
		}
		_, err = dst.Write(out)
		return err
	case events:
		return mcp.FilterEvents(dst, src, max, lists, p.Keep(s))
	}
	_, err := io.Copy(dst, src)
	return err
}
