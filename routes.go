package main

import (
	"net/http"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/broker"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/gate"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/healthz"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/wellknown"
)

// publicRoutes lists every route of the public listener that needs no
// token, in one place: health, discovery, registration and, in broker
// mode (b not nil), the broker's authorization server. Each matches an
// exact method and path (the gate answers another method 405, and HEAD as
// GET); any other request needs a token and goes to the MCP server.
//
// CORS: the protected-resource metadata and the broker's endpoints that
// read no cookie are open to any origin without credentials, since
// browser-based clients (MCP Inspector) discover, register and redeem
// codes from their own origin; the broker's pages and forms (authorize,
// consent, callback) read its cookies and are reached by navigation, so
// only the gateway's own origin may send them an Origin. Everything else
// keeps CORS_ALLOW_ORIGINS.
func publicRoutes(wk *wellknown.Server, ready []healthz.Check, b *broker.Broker) []gate.Route {
	routes := []gate.Route{
		{Method: http.MethodGet, Path: "/healthz", Handler: healthz.Live()},
		{Method: http.MethodGet, Path: "/readyz", Handler: healthz.Ready(ready...)},
	}
	for _, p := range wk.ProtectedResourcePaths() {
		routes = append(routes, gate.Route{Method: http.MethodGet, Path: p, Handler: wk.ProtectedResource(), CORS: gate.CORSAnyOrigin})
	}
	if b != nil {
		// The broker's metadata and /oauth/register replace wellknown's,
		// which serves neither in broker mode.
		for _, r := range b.Routes() {
			routes = append(routes, gate.Route{Method: r.Method, Path: r.Path, Handler: r.Handler, CORS: brokerCORS(r.Path)})
		}
		return routes
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

// brokerCORS is the CORS policy of one of the broker's paths.
func brokerCORS(path string) string {
	switch path {
	case broker.AuthorizePath, broker.ConsentPath, broker.CallbackPath:
		return gate.CORSSameOrigin
	}
	return gate.CORSAnyOrigin
}
