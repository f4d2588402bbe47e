package broker

import "github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"

// cacheEntry is what Verify remembers of a verified access token (in a
// tokencache.Cache, until its exp at the latest). The broker's keys never
// change while it runs, so nothing invalidates it but time (generation 0
// always); revocation is checked on every use, not cached: the entry keeps
// the store keys to ask.
type cacheEntry struct {
	id         *provider.Identity
	revocation [2]string // store keys: "jti:..." and "fam:..."
}
