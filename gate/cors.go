package gate

import (
	"net/http"
	"strings"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/respond"
)

// cors implements the Fetch standard's CORS protocol for the gateway's
// allowed origins (CORS_ALLOW_ORIGINS). All header values are built once.
type cors struct {
	any     bool
	origins map[string]struct{}

	star, vary, expose, methods, headers, maxAge []string
}

func newCORS(origins []string) cors {
	c := cors{
		origins: map[string]struct{}{},
		star:    []string{"*"},
		vary:    []string{"Origin"},
		// What clients read of a response besides the CORS-safelisted
		// headers: the challenge (RFC 6750 §3, step-up included), the
		// session of earlier revisions, the version, the request ID, and
		// when to retry a 429 or 503 (RFC 9110 §10.2.3).
		expose:  []string{"WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version, X-Request-Id, Retry-After"},
		methods: []string{"GET, POST, DELETE, OPTIONS"},
		// Mcp-Method and Mcp-Name: the 2026-07-28 transport's standard
		// request headers. Mcp-Param-* names are added per preflight
		// (allowHeaders).
		headers: []string{"Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID, X-Request-Id, Mcp-Method, Mcp-Name"},
		maxAge:  []string{"600"},
	}
	for _, o := range origins {
		o = strings.TrimRight(strings.TrimSpace(o), "/")
		if o == "*" {
			c.any = true
		} else if o != "" {
			c.origins[o] = struct{}{}
		}
	}
	return c
}

// handle sets the CORS response headers for r and reports whether it has
// answered the request itself: a preflight from an allowed origin (204), or
// any request from an origin that is not allowed (403, MCP transport spec:
// servers MUST validate Origin). Requests without Origin proceed untouched.
func (c *cors) handle(w http.ResponseWriter, r *http.Request) (done bool) {
	h := w.Header()
	h["Vary"] = c.vary
	origins := r.Header["Origin"]
	if len(origins) == 0 {
		return false
	}
	if len(origins) > 1 || !c.allowed(origins[0]) {
		respond.JSON(w, http.StatusForbidden, bodyOriginForbidden)
		return true
	}
	if c.any {
		h["Access-Control-Allow-Origin"] = c.star
	} else {
		h["Access-Control-Allow-Origin"] = origins[:1:1]
	}
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h["Access-Control-Allow-Methods"] = c.methods
		h["Access-Control-Allow-Headers"] = c.allowHeaders(r.Header["Access-Control-Request-Headers"])
		h["Access-Control-Max-Age"] = c.maxAge
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	h["Access-Control-Expose-Headers"] = c.expose
	return false
}

func (c *cors) allowed(origin string) bool {
	if c.any {
		return origin != ""
	}
	_, ok := c.origins[origin]
	return ok
}

// Bounds on the Mcp-Param-{Name} headers a preflight may have allowed: a
// tool rarely mirrors more than a few parameters (2026-07-28 transport,
// "Custom Headers from Tool Parameters").
const (
	maxParamHeaders     = 32
	maxParamHeaderBytes = 128
)

// allowHeaders is Access-Control-Allow-Headers for a preflight that asks
// for requested (Access-Control-Request-Headers, Fetch standard §3.2.5): the
// fixed list, and each Mcp-Param-{Name} asked for whose name is a token
// (RFC 9110 §5.1), up to maxParamHeaders of them. A header left out makes
// the browser refuse the request, which is what the bound is for.
func (c *cors) allowHeaders(requested []string) []string {
	var params []string
	for _, v := range requested {
		for name := range strings.SplitSeq(v, ",") {
			name = strings.TrimSpace(name)
			if len(name) <= len(paramPrefix) || len(name) > maxParamHeaderBytes ||
				!equalFoldASCII(name[:len(paramPrefix)], paramPrefix) || !isToken(name) {
				continue
			}
			if len(params) == maxParamHeaders {
				break
			}
			if !containsFold(params, name) {
				params = append(params, name)
			}
		}
	}
	if len(params) == 0 {
		return c.headers
	}
	return []string{c.headers[0] + ", " + strings.Join(params, ", ")}
}

// paramPrefix starts the name of every Mcp-Param-{Name} header.
const paramPrefix = "mcp-param-"

// isToken reports whether s is a token (RFC 9110 §5.6.2): one or more
// tchar.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if equalFoldASCII(x, s) {
			return true
		}
	}
	return false
}
