package gate

import (
	"fmt"
	"net/http"
	"net/netip"
	"testing"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/devissuer"
)

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

func TestClientIP(t *testing.T) {
	proxies := prefixes("10.0.0.0/8", "fd00::/8")
	tests := []struct {
		name    string
		peer    string
		trusted []netip.Prefix
		xff     []string // X-Forwarded-For header lines
		want    string
	}{
		{name: "no proxies trusted: xff ignored", peer: "203.0.113.9:5555", xff: []string{"1.2.3.4"}, want: "203.0.113.9"},
		{name: "ipv6 peer, no proxies trusted", peer: "[2001:db8::1]:443", xff: []string{"1.2.3.4"}, want: "2001:db8::1"},
		{name: "untrusted peer spoofing a client", peer: "203.0.113.9:1", trusted: proxies, xff: []string{"1.2.3.4"}, want: "203.0.113.9"},
		{name: "untrusted peer spoofing a trusted proxy", peer: "203.0.113.9:1", trusted: proxies, xff: []string{"10.0.0.1"}, want: "203.0.113.9"},
		{name: "untrusted ipv6 peer spoofing", peer: "[2001:db8::7]:1", trusted: proxies, xff: []string{"fd00::1, 1.2.3.4"}, want: "2001:db8::7"},
		{name: "trusted peer, one client", peer: "10.0.0.2:1", trusted: proxies, xff: []string{"198.51.100.7"}, want: "198.51.100.7"},
		{name: "trusted peer without xff", peer: "10.0.0.2:1", trusted: proxies, want: "10.0.0.2"},
		{name: "chain: client-sent entries left of the real client are ignored", peer: "10.0.0.2:1", trusted: proxies, xff: []string{"6.6.6.6, 198.51.100.7"}, want: "198.51.100.7"},
		{name: "chain of trusted proxies", peer: "10.0.0.2:1", trusted: proxies, xff: []string{"6.6.6.6, 198.51.100.7, 10.1.1.1, 10.2.2.2"}, want: "198.51.100.7"},
		{name: "chain over several header lines", peer: "10.0.0.2:1", trusted: proxies, xff: []string{"6.6.6.6", "198.51.100.7, 10.1.1.1", "10.2.2.2"}, want: "198.51.100.7"},
		{name: "ipv6 proxy and ipv6 client", peer: "[fd00::2]:1", trusted: proxies, xff: []string{"2001:db8::5"}, want: "2001:db8::5"},
		{name: "ipv4 client through an ipv6 proxy", peer: "[fd00::2]:1", trusted: proxies, xff: []string{"198.51.100.7, fd00::3"}, want: "198.51.100.7"},
		{name: "v4-mapped peer is a trusted ipv4 proxy", peer: "[::ffff:10.0.0.2]:1", trusted: proxies, xff: []string{"198.51.100.7"}, want: "198.51.100.7"},
		{name: "v4-mapped client entry", peer: "10.0.0.2:1", trusted: proxies, xff: []string{"::ffff:198.51.100.7"}, want: "198.51.100.7"},
		{name: "every entry trusted: the leftmost", peer: "10.0.0.2:1", trusted: proxies, xff: []string{"10.9.9.9, 10.8.8.8"}, want: "10.9.9.9"},
		{name: "garbage stops at the last trusted hop", peer: "10.0.0.2:1", trusted: proxies, xff: []string{"198.51.100.7, unknown, 10.3.3.3"}, want: "10.3.3.3"},
		{name: "garbage right of the client", peer: "10.0.0.2:1", trusted: proxies, xff: []string{"198.51.100.7, <script>"}, want: "10.0.0.2"},
		{name: "entry with a port is not an address", peer: "10.0.0.2:1", trusted: proxies, xff: []string{"198.51.100.7:4444"}, want: "10.0.0.2"},
		{name: "empty entries", peer: "10.0.0.2:1", trusted: proxies, xff: []string{", ,"}, want: "10.0.0.2"},
		{name: "spaces around entries", peer: "10.0.0.2:1", trusted: proxies, xff: []string{"  198.51.100.7 ,  10.1.1.1  "}, want: "198.51.100.7"},
		{name: "loopback trusted", peer: "127.0.0.1:1", trusted: prefixes("127.0.0.1/32"), xff: []string{"198.51.100.7"}, want: "198.51.100.7"},
		{name: "a bare address as RemoteAddr", peer: "10.0.0.2", trusted: proxies, xff: []string{"198.51.100.7"}, want: "198.51.100.7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tt.peer, Header: http.Header{}}
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := clientIP(r, tt.trusted).String(); got != tt.want {
				t.Errorf("clientIP: got %s, want %s", got, tt.want)
			}
			if got, want := ClientKey(tt.trusted)(r), ipKey(netip.MustParseAddr(tt.want)).String(); got != want {
				t.Errorf("ClientKey: got %s, want %s", got, want)
			}
		})
	}
}

// TestFailedAuthLimitBeforeVerification: under a flood of bad tokens from
// one client, only the first DefaultFailedAuthPerIPPerMinute reach signature
// checks; the rest, a valid token included, are 429 without any. Varying
// X-Forwarded-For does not escape the limit unless the peer is a trusted
// proxy, and then each real client has its own budget.
func TestFailedAuthLimitBeforeVerification(t *testing.T) {
	env := newIssuer(t)
	if err := env.is.AddKey("unpublished", false); err != nil {
		t.Fatal(err)
	}
	// Signed by a key that is not published, under the published kid: each
	// one costs a signature check.
	bad, err := env.is.Mint(devissuer.Token{KeyID: "unpublished", Header: map[string]any{"kid": devissuer.KeyRS256},
		Claims: map[string]any{"iss": env.is.URL, "sub": "alice", "aud": testAudience, "exp": 4102444800}})
	if err != nil {
		t.Fatal(err)
	}
	const limit = 60 // the default

	t.Run("one client", func(t *testing.T) {
		v := &countingVerifier{v: env.p}
		s := newSetup(t, env, nil, func(c *Config) { c.Verifier = v })
		counts := map[int]int{}
		for i := range 200 {
			h := bearerHeader(bad)
			h.Set("X-Forwarded-For", netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}).String()) // spoofed: the peer is not trusted
			resp, _ := s.do(t, "GET", "/", h, nil)
			counts[resp.StatusCode]++
		}
		if counts[401] != limit || counts[429] != 200-limit {
			t.Errorf("statuses: got %v, want %d×401 then 429", counts, limit)
		}
		if got := v.n.Load(); got != limit {
			t.Errorf("verifications: got %d, want %d", got, limit)
		}
		if resp, _ := s.do(t, "GET", "/", bearerHeader(env.token(t, "alice", nil)), nil); resp.StatusCode != 429 {
			t.Errorf("valid token after the flood: got %d, want 429", resp.StatusCode)
		}
		if got := v.n.Load(); got != limit {
			t.Errorf("verifications after a valid token: got %d, want %d", got, limit)
		}
		if n := len(s.up.requests()); n != 0 {
			t.Errorf("upstream received %d requests", n)
		}
	})

	t.Run("clients behind a trusted proxy", func(t *testing.T) {
		v := &countingVerifier{v: env.p}
		s := newSetup(t, env, nil, func(c *Config) { c.Verifier = v; c.TrustedProxies = prefixes("127.0.0.0/8", "::1/128") })
		for client := range 3 {
			for i := range limit {
				h := bearerHeader(bad)
				h.Set("X-Forwarded-For", fmt.Sprintf("6.6.6.6, 198.51.100.%d", client+1))
				if resp, _ := s.do(t, "GET", "/", h, nil); resp.StatusCode != 401 {
					t.Fatalf("client %d, failure %d: got %d, want 401", client, i, resp.StatusCode)
				}
			}
			h := bearerHeader(bad)
			h.Set("X-Forwarded-For", fmt.Sprintf("198.51.100.%d", client+1))
			if resp, _ := s.do(t, "GET", "/", h, nil); resp.StatusCode != 429 {
				t.Fatalf("client %d past its limit: got %d, want 429", client, resp.StatusCode)
			}
		}
		// An IPv6 client's budget is its /64.
		for i := range limit {
			h := bearerHeader(bad)
			h.Set("X-Forwarded-For", fmt.Sprintf("2001:db8:1:2::%x", i+1))
			if resp, _ := s.do(t, "GET", "/", h, nil); resp.StatusCode != 401 {
				t.Fatalf("ipv6 failure %d: got %d, want 401", i, resp.StatusCode)
			}
		}
		h := bearerHeader(bad)
		h.Set("X-Forwarded-For", "2001:db8:1:2:ffff::1")
		if resp, _ := s.do(t, "GET", "/", h, nil); resp.StatusCode != 429 {
			t.Fatalf("another address of the same /64: got %d, want 429", resp.StatusCode)
		}
	})
}
