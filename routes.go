package main

import (
	"net/http"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/gate"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/healthz"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/wellknown"
)

// publicRoutes lists every route of the public listener that needs no
// token, in one place: health, discovery and registration. Each matches an
// exact method and path (the gate answers another method 405, and HEAD as
// GET); any other request needs a token and goes to the MCP server.
func publicRoutes(wk *wellknown.Server, ready []healthz.Check) []gate.Route {
	routes := []gate.Route{
		{Method: http.MethodGet, Path: "/healthz", Handler: healthz.Live()},
		{Method: http.MethodGet, Path: "/readyz", Handler: healthz.Ready(ready...)},
	}
	for _, p := range wk.ProtectedResourcePaths() {
		routes = append(routes, gate.Route{Method: http.MethodGet, Path: p, Handler: wk.ProtectedResource()})
	}
	for _, p := range wk.AuthorizationServerPaths() {
		routes = append(routes, gate.Route{Method: http.MethodGet, Path: p, Handler: wk.AuthorizationServer()})
	}
	// /oauth/register is the gateway's own path, never proxied: with a
	// static client POST registers; without one wellknown answers 404 to
	// every method.
	methods := []string{http.MethodPost}
	if wk.RegisterPath() == "" {
		methods = append(methods, http.MethodGet, http.MethodPut, http.MethodPatch, http.MethodDelete)
	}
	for _, m := range methods {
		routes = append(routes, gate.Route{Method: m, Path: wellknown.RegisterPath, Handler: wk.Register()})
	}
	return routes
}
