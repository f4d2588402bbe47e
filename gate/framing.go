package gate

import (
	"errors"
	"net/http"
	"strings"
)

// Protocol upgrades (RFC 9110 §7.8). A switched connection is a raw tunnel
// to the MCP server: everything sent on it afterwards would reach the
// server with no token check, allow-list, rate limit or header scrubbing.
// The gateway never switches: a request asking to is refused on every
// route, and an upstream that switches anyway gets 502.

// errSeveralContentTypes is ModifyResponse's answer to an upstream
// answer with more than one Content-Type field (502).
var errSeveralContentTypes = errors.New("upstream answer: several Content-Type fields")

// errUpstreamSwitched is ModifyResponse's answer to an upstream's 101
// Switching Protocols: the gateway never asked for one.
var errUpstreamSwitched = errors.New("proxy: upstream switched protocols unasked")

// wantsUpgrade reports whether h asks to switch protocols: an Upgrade
// header, or "upgrade" among the Connection options (RFC 9110 §7.6.1,
// option names are case-insensitive).
func wantsUpgrade(h http.Header) bool {
	if len(h["Upgrade"]) > 0 {
		return true
	}
	for _, v := range h["Connection"] {
		for opt := range strings.SplitSeq(v, ",") {
			if equalFoldASCII(strings.TrimSpace(opt), "upgrade") {
				return true
			}
		}
	}
	return false
}

// Ambiguous framing (RFC 9112 §6.1). A request with both Content-Length and
// Transfer-Encoding is framed by the chunked encoding alone, and the server
// MUST close the connection after answering it: a front proxy that framed
// it by Content-Length would otherwise have the bytes after the chunked
// body read here as a request of their own (request smuggling). Go's server
// drops Content-Length before a handler sees the request, and unfolds a
// Transfer-Encoding folded onto a continuation line, so no handler can tell
// which chunked requests were ambiguous: the gate closes the connection
// after every request with a chunked body. Clients that send one (rare:
// MCP clients send JSON with a length) open a new connection for their next
// request. An HTTP/1.0 request's Transfer-Encoding is ignored by Go's server
// (it frames by Content-Length), so an HTTP/1.0 connection kept alive is
// closed too.

// closeIfAmbiguous marks the response to r Connection: close when r's
// framing could have been read otherwise by a proxy in front.
func closeIfAmbiguous(w http.ResponseWriter, r *http.Request) {
	if len(r.TransferEncoding) > 0 || !r.ProtoAtLeast(1, 1) {
		w.Header().Set("Connection", "close")
	}
}
