package gate

import (
	"net/http"
	"net/netip"
	"strings"
)

// ClientIP returns a function that tells a request's client address the
// way the gate does (the socket peer, or what trusted proxies say), for
// other per-IP limits such as registration's.
func ClientIP(trusted []netip.Prefix) func(*http.Request) string {
	return func(r *http.Request) string { return clientIP(r, trusted).String() }
}

// clientIP returns the address of the client (TRUSTED_PROXIES, issue 6
// item 4): the socket peer, unless the peer is a trusted proxy, in which
// case the rightmost X-Forwarded-For entry that is not a trusted proxy.
func clientIP(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer := peerAddr(r)
	if !isTrusted(peer, trusted) {
		return peer
	}
	addr := peer
	xff := r.Header["X-Forwarded-For"]
	for i := len(xff) - 1; i >= 0; i-- {
		v := xff[i]
		for v != "" {
			var entry string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				entry, v = v[j+1:], v[:j]
			} else {
				entry, v = v, ""
			}
			a, err := netip.ParseAddr(strings.TrimSpace(entry))
			if err != nil {
				// Garbage a trusted proxy would not write: stop at the last
				// address a trusted hop vouched for.
				return addr
			}
			addr = a.Unmap()
			if !isTrusted(addr, trusted) {
				return addr
			}
		}
	}
	return addr
}

// forwardedProto is "https" when the client reached us over TLS, directly or
// (as a trusted proxy says in X-Forwarded-Proto) through a trusted proxy.
func forwardedProto(r *http.Request, trusted []netip.Prefix) string {
	if r.TLS != nil {
		return "https"
	}
	if len(trusted) > 0 && isTrusted(peerAddr(r), trusted) {
		if v := r.Header.Get("X-Forwarded-Proto"); strings.EqualFold(strings.TrimSpace(v), "https") {
			return "https"
		}
	}
	return "http"
}

func peerAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		a, _ := netip.ParseAddr(r.RemoteAddr)
		return a.Unmap()
	}
	return ap.Addr().Unmap()
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
