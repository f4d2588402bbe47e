package gate

import (
	"net/http"
	"net/netip"
	"strings"
)

// ClientKey returns a function that tells the key a per-client limit uses
// for a request, as the gate's own failed-authentication limit does: the
// client's address (the socket peer, or what trusted proxies say), an IPv6
// client's by its /64. Other per-client limits, such as registration's,
// use it to agree with the gate.
func ClientKey(trusted []netip.Prefix) func(*http.Request) string {
	return func(r *http.Request) string { return ipKey(clientIP(r, trusted)).String() }
}

// ipKey is the limit key of a client address: an IPv4 address, or the /64
// of an IPv6 address, since one host usually holds a whole /64 (RFC 4291
// §2.5.1 interface identifiers are 64 bits).
func ipKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}

// clientIP returns the address of the client (TRUSTED_PROXIES): the socket
// peer, unless the peer is a trusted proxy, in which case the rightmost
// X-Forwarded-For entry that is not a trusted proxy.
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
