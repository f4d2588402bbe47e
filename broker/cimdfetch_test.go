package broker

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
)

// publicAddr refuses every special-purpose range, in every spelling that
// reaches it, and allows ordinary public addresses.
func TestPublicAddr(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"8.8.8.8", true},
		{"1.1.1.1", true},
		{"93.184.216.34", true},
		{"2606:4700:4700::1111", true},
		{"2a00:1450:4001::200e", true},
		{"64:ff9b::808:808", true},           // NAT64 of 8.8.8.8
		{"::ffff:8.8.8.8", true},             // IPv4-mapped public
		{"100.63.255.255", true},             // just below CGNAT
		{"100.128.0.0", true},                // just above CGNAT
		{"172.15.255.255", true},             // just below 172.16/12
		{"172.32.0.0", true},                 // just above
		{"198.17.255.255", true},             // below benchmarking
		{"198.20.0.0", true},                 // above benchmarking
		{"223.255.255.255", true},            // below multicast
		{"2001:200::1", true},                // just above 2001::/23
		{"3fff:1000::1", true},               // just above 3fff::/20
		{"0.0.0.0", false},                   // unspecified
		{"0.1.2.3", false},                   // "this network"
		{"10.0.0.1", false},                  // private
		{"100.64.0.1", false},                // CGNAT
		{"100.127.255.255", false},           // CGNAT, top
		{"127.0.0.1", false},                 // loopback
		{"127.255.255.254", false},           // loopback, top
		{"169.254.169.254", false},           // link-local: cloud metadata
		{"172.16.0.1", false},                // private
		{"172.31.255.255", false},            // private, top
		{"192.0.0.9", false},                 // IETF protocol assignments
		{"192.0.2.1", false},                 // TEST-NET-1
		{"192.88.99.1", false},               // 6to4 relay anycast
		{"192.168.1.1", false},               // private
		{"198.18.0.1", false},                // benchmarking
		{"198.19.255.255", false},            // benchmarking, top
		{"198.51.100.1", false},              // TEST-NET-2
		{"203.0.113.1", false},               // TEST-NET-3
		{"224.0.0.1", false},                 // multicast
		{"239.255.255.250", false},           // multicast (SSDP)
		{"240.0.0.1", false},                 // reserved
		{"255.255.255.255", false},           // broadcast
		{"::", false},                        // unspecified
		{"::1", false},                       // loopback
		{"::ffff:127.0.0.1", false},          // IPv4-mapped loopback
		{"::ffff:10.1.2.3", false},           // IPv4-mapped private
		{"::ffff:169.254.169.254", false},    // IPv4-mapped link-local
		{"::127.0.0.1", false},               // IPv4-compatible (deprecated)
		{"::8.8.8.8", false},                 // IPv4-compatible, even of a public address
		{"64:ff9b::7f00:1", false},           // NAT64 of 127.0.0.1
		{"64:ff9b::a9fe:a9fe", false},        // NAT64 of 169.254.169.254
		{"64:ff9b::a00:1", false},            // NAT64 of 10.0.0.1
		{"64:ff9b:1::808:808", false},        // local-use NAT64 (RFC 8215)
		{"64:ff9b::1:808:808", false},        // not the /96: outside 2000::/3
		{"100::1", false},                    // discard-only
		{"2001::1", false},                   // Teredo
		{"2001:2::1", false},                 // benchmarking
		{"2001:20::1", false},                // ORCHIDv2
		{"2001:1ff:ffff::1", false},          // 2001::/23, top
		{"2001:db8::1", false},               // documentation
		{"2002:7f00:1::1", false},            // 6to4 of 127.0.0.1
		{"2002:808:808::1", false},           // 6to4, even of a public address
		{"3fff::1", false},                   // documentation (RFC 9637)
		{"5f00::1", false},                   // SRv6
		{"fc00::1", false},                   // unique local
		{"fd12:3456::1", false},              // unique local
		{"fe80::1", false},                   // link-local
		{"fe80::1%eth0", false},              // link-local with a zone
		{"2606:4700:4700::1111%eth0", false}, // any zone
		{"fec0::1", false},                   // site-local
		{"ff02::1", false},                   // multicast
		{"ff0e::1", false},                   // global multicast
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			a := netip.MustParseAddr(tt.addr)
			if got := publicAddr(a); got != tt.want {
				t.Errorf("publicAddr(%s): got %v, want %v", tt.addr, got, tt.want)
			}
		})
	}
	if publicAddr(netip.Addr{}) {
		t.Error("the zero Addr is public")
	}
}

// FuzzPublicAddr: publicAddr never calls an address public that the
// standard library knows to be loopback, private, link-local, multicast or
// unspecified; an IPv4 address gets the same answer in its IPv4-mapped and
// NAT64 spellings; and the answer survives printing and parsing.
func FuzzPublicAddr(f *testing.F) {
	for _, s := range []string{"8.8.8.8", "127.0.0.1", "10.0.0.1", "100.64.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1",
		"64:ff9b::7f00:1", "fe80::1", "fc00::1", "2606:4700::1", "2002:7f00:1::1", "2001:db8::1", "ff02::1"} {
		b, _ := netip.MustParseAddr(s).MarshalBinary()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var a netip.Addr
		switch len(b) {
		case 4:
			a = netip.AddrFrom4([4]byte(b))
		case 16:
			a = netip.AddrFrom16([16]byte(b))
		default:
			return
		}
		got := publicAddr(a)
		u := a.Unmap()
		if got && (u.IsLoopback() || u.IsPrivate() || u.IsLinkLocalUnicast() || u.IsLinkLocalMulticast() ||
			u.IsInterfaceLocalMulticast() || u.IsMulticast() || u.IsUnspecified() || !u.IsGlobalUnicast()) {
			t.Fatalf("publicAddr(%s) = true for a special address", a)
		}
		if back := netip.MustParseAddr(a.String()); publicAddr(back) != got {
			t.Fatalf("publicAddr(%s) changes when printed and parsed", a)
		}
		if u.Is4() {
			v4 := u.As4()
			mapped := netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: v4[0], 13: v4[1], 14: v4[2], 15: v4[3]})
			nat64 := netip.AddrFrom16([16]byte{1: 0x64, 2: 0xff, 3: 0x9b, 12: v4[0], 13: v4[1], 14: v4[2], 15: v4[3]})
			if publicAddr(u) != got || publicAddr(mapped) != got || publicAddr(nat64) != got {
				t.Fatalf("%s: IPv4 %v, mapped %v, NAT64 %v", u, publicAddr(u), publicAddr(mapped), publicAddr(nat64))
			}
		}
	})
}

// CIMD_ALLOW_HOSTS entries, and which URLs they let through.
func TestAllowHosts(t *testing.T) {
	rules, err := parseAllowHosts([]string{" Client.Example ", "127.0.0.1:8443", "[::1]:9000", "[fd00::1]", "fd00::2", ""})
	if err != nil {
		t.Fatal(err)
	}
	f := &cimdFetcher{allow: rules}
	for _, tt := range []struct {
		url  string
		want bool
	}{
		{"https://client.example/c.json", true},
		{"https://CLIENT.example:1234/c.json", true}, // no port in the entry: any port
		{"http://client.example/c.json", true},
		{"https://other.example/c.json", false},
		{"https://client.example.evil.example/c.json", false},
		{"https://127.0.0.1:8443/c.json", true},
		{"https://127.0.0.1/c.json", false}, // 443, not 8443
		{"https://127.0.0.1:8444/c.json", false},
		{"https://localhost:8443/c.json", false}, // a name, not the address
		{"https://[::1]:9000/c.json", true},
		{"https://[::1]:9001/c.json", false},
		{"https://[fd00::1]:5/c.json", true},
		{"https://[fd00::2]/c.json", true},
	} {
		u, _ := url.Parse(tt.url)
		if got := f.allowedHost(u); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.url, got, tt.want)
		}
	}
	for _, bad := range []string{"https://client.example", "client.example/path", "user@client.example", "client.example:0",
		"client.example:99999", "client.example:x", "[::1", "[nothost]:1", ":443", "fd00::zz"} {
		if _, err := parseAllowHosts([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
		// Main validates CIMD_ALLOW_HOSTS with CheckAllowHost: the same rules.
		if err := CheckAllowHost(bad); err == nil || !strings.HasPrefix(err.Error(), fmt.Sprintf("%q: ", bad)) {
			t.Errorf("CheckAllowHost(%q): %v, want an error naming the entry first", bad, err)
		}
	}
	for _, good := range []string{" Client.Example ", "127.0.0.1:8443", "[::1]:9000", "[fd00::1]", "fd00::2"} {
		if err := CheckAllowHost(good); err != nil {
			t.Errorf("CheckAllowHost(%q): %v", good, err)
		}
	}
	up := provider.New(provider.Config{IssuerURL: "http://127.0.0.1:1", Audiences: []string{"x"}})
	if _, err := New(Config{ResourceURL: "https://mcp.example.com/mcp", Upstream: up, ClientID: "gw",
		CIMDAllowHosts: []string{"https://client.example"}}); err == nil {
		t.Error("New accepted a CIMD allow host with a scheme")
	}
}

// cacheLifetime honours Cache-Control within [1 min, 1 h].
func TestCacheLifetime(t *testing.T) {
	for _, tt := range []struct {
		cc   string
		want string
	}{
		{"", "10m0s"},
		{"max-age=300", "5m0s"},
		{"public, max-age=120", "2m0s"},
		{"MAX-AGE=300", "5m0s"},
		{`max-age="300"`, "5m0s"},
		{"max-age=5", "1m0s"},
		{"max-age=0", "1m0s"},
		{"max-age=999999999999999999", "1h0m0s"},
		{"max-age=86400", "1h0m0s"},
		{"max-age=-5", "10m0s"},
		{"max-age=soon", "10m0s"},
		{"no-cache", "1m0s"},
		{"max-age=600, no-cache", "1m0s"},
		{"no-store", "0s"},
		{"max-age=600, no-store", "0s"},
		{"private, max-age=600", "10m0s"},
	} {
		if got := cacheLifetime(tt.cc).String(); got != tt.want {
			t.Errorf("%q: got %s, want %s", tt.cc, got, tt.want)
		}
	}
}
