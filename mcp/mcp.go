// Package mcp reads what an MCP message says, as the strictest server would
// read it: the JSON-RPC method(s) of a POST body, the tool, prompt or
// resource a call names, and whether the 2026-07-28 request headers
// (Mcp-Method, Mcp-Name) agree with the body. It also filters the entries of
// tools/list, resources/list and prompts/list responses, leaving every other
// byte as it was.
//
// Strict means: JSON per RFC 8259 (UTF-8 only, §8.1), object keys matched
// exactly, and a key that decides what a call does (method, params, and
// params.name, params.uri, or params.ref with its type, name and uri) that
// appears twice, or in a variant another decoder would take for it
// (another case, as Go's encoding/json matches keys; with dashes or
// underscores, as encoding/json/v2's case-insensitive option does), is an
// error rather than a guess. A body cut off by a size limit is never read
// as complete.
//
// It does not decide anything (package policy does), read tokens, or write
// anything but the JSON-RPC error bodies of WriteError.
package mcp

import "errors"

// Why a body or a header was refused. Errors returned by this package wrap
// one of these, with the byte offset or the header that failed.
var (
	// ErrSyntax: not JSON (RFC 8259), not UTF-8, or nested deeper than
	// MaxDepth.
	ErrSyntax = errors.New("not valid JSON")
	// ErrTruncated: the bytes end before the JSON value does, or they are
	// only the first part of a longer body (ParsePrefix).
	ErrTruncated = errors.New("cut off before its end")
	// ErrAmbiguous: a key that decides the call (method, params, name, uri;
	// ref and its type, name, uri) appears twice or also in a variant
	// spelling.
	ErrAmbiguous = errors.New("ambiguous key")
	// ErrInvalid: JSON, but not a call that can be named: a method that is
	// not a string, a tools/call, prompts/get, resources/read,
	// resources/subscribe or resources/unsubscribe without a string
	// params.name (params.uri), or a completion/complete without a
	// params.ref object of type "ref/prompt" with a string name or
	// "ref/resource" with a string uri.
	ErrInvalid = errors.New("invalid JSON-RPC message")
	// ErrTooLarge: more bytes than the limit given to ReadBody or to a
	// listing filter.
	ErrTooLarge = errors.New("larger than the limit")
	// ErrHeaderMismatch: Mcp-Method or Mcp-Name disagrees with the body, or
	// is malformed (2026-07-28 transport, "Server Validation"). Answer it
	// with WriteHeaderMismatch.
	ErrHeaderMismatch = errors.New("header mismatch")
)

// The methods whose params name what they act on. Mcp-Name mirrors the
// name of the first three (MCP 2026-07-28, "Standard Request Headers");
// the others name a resource or prompt too, which only the body says.
const (
	MethodToolsCall            = "tools/call"            // params.name
	MethodPromptsGet           = "prompts/get"           // params.name
	MethodResourcesRead        = "resources/read"        // params.uri
	MethodResourcesSubscribe   = "resources/subscribe"   // params.uri
	MethodResourcesUnsubscribe = "resources/unsubscribe" // params.uri
	MethodCompletionComplete   = "completion/complete"   // params.ref: see Ref
)

// Ref is what the params.ref of a completion/complete asks completions
// for, by its type (MCP "Completion": PromptReference,
// ResourceTemplateReference).
type Ref uint8

// The types of params.ref.
const (
	RefPrompt   Ref = iota + 1 // "ref/prompt": the prompt ref.name
	RefResource                // "ref/resource": the resource (URI template) ref.uri
)

func (r Ref) String() string {
	switch r {
	case RefPrompt:
		return "ref/prompt"
	case RefResource:
		return "ref/resource"
	}
	return ""
}

// nameKey returns the params key that names the target of method ("name",
// "uri", or "ref" for completion/complete, whose ref names it), or "" when
// method names none.
func nameKey(method string) string {
	switch method {
	case MethodToolsCall, MethodPromptsGet:
		return "name"
	case MethodResourcesRead, MethodResourcesSubscribe, MethodResourcesUnsubscribe:
		return "uri"
	case MethodCompletionComplete:
		return "ref"
	}
	return ""
}

// headerKey returns the params key whose value Mcp-Name mirrors for method
// ("name" or "uri"), or "" for the methods whose requests carry no Mcp-Name
// (MCP 2026-07-28, "Standard Request Headers").
func headerKey(method string) string {
	switch method {
	case MethodToolsCall, MethodPromptsGet:
		return "name"
	case MethodResourcesRead:
		return "uri"
	}
	return ""
}

// Message is one JSON-RPC request or notification of a body (JSON-RPC 2.0
// §4).
type Message struct {
	// Index is the message's position in a batch (counting every element,
	// responses included); 0 for a single message.
	Index int
	// Method is the JSON-RPC method.
	Method string
	// Name is what the call names: params.name of tools/call and
	// prompts/get, params.uri of resources/read, resources/subscribe and
	// resources/unsubscribe, params.ref.name or params.ref.uri of
	// completion/complete (see Ref); "" for other methods. Mcp-Name mirrors
	// it for tools/call, prompts/get and resources/read.
	Name string
	// Ref is the type of params.ref of a completion/complete, which says
	// what Name is; 0 for other methods.
	Ref Ref
	// ID is the id as written in the body when it is a JSON string or
	// number (so it can be echoed in a response); "" for a notification.
	ID string
}

// Body is what a POST body says.
type Body struct {
	// Messages are the requests and notifications, in order. Responses
	// (objects without a method) and batch elements that are not objects are
	// not listed, but they count in Len and Index.
	Messages []Message
	// Batch tells whether the body is a JSON array (a JSON-RPC batch, §6).
	Batch bool
	// Len is the number of elements of a batch (those begun, for a body
	// read by ParsePrefix); 0 for a single message.
	Len int
}
