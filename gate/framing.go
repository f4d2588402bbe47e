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
