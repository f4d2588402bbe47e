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
		expose:  []string{"WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version, X-Request-Id"},
		methods: []string{"GET, POST, DELETE, OPTIONS"},
		headers: []string{"Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID, X-Request-Id"},
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
		h["Access-Control-Allow-Headers"] = c.headers
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
