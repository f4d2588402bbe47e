// Package healthz serves the gateway's own health endpoints: /healthz says
// the process is alive and serving, /readyz says whether it can admit traffic
// and why not: each Part the caller names (main: the provider's keys, the
// shared store, facade mode's issuer warning, in spawn mode the child).
//
// It owns no state: each check asks a part the caller passes in, so the
// answer is always current. It does not route: the gate maps the exact
// paths to these handlers.
package healthz

import (
	"encoding/json"
	"net/http"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/respond"
)

// Part is one part of the gateway whose readiness /readyz reports (a
// *provider.Provider, a *supervisor.Supervisor). Ready reports whether it
// can serve now and, when it cannot (or for information), a short
// human-readable detail.
type Part interface {
	Ready() (ok bool, detail string)
}

// Check names a Part in /readyz's answer.
type Check struct {
	Name string
	Part Part
}

// Live answers 200 {"status":"ok"} while the process serves.
func Live() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		respond.JSON(w, http.StatusOK, `{"status":"ok"}`+"\n")
	})
}

type checkResult struct {
	Ready  bool   `json:"ready"`
	Detail string `json:"detail,omitempty"`
}

// Ready answers 200 when every check holds and 503 otherwise, with a JSON
// body naming each check's state, e.g.
//
//	{"status":"not ready","checks":{"provider":{"ready":false,"detail":"..."},"child":{"ready":true}}}
func Ready(checks ...Check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		results := make(map[string]checkResult, len(checks))
		all := true
		for _, c := range checks {
			ok, detail := c.Part.Ready()
			results[c.Name] = checkResult{Ready: ok, Detail: detail}
			all = all && ok
		}
		status, code := "ready", http.StatusOK
		if !all {
			status, code = "not ready", http.StatusServiceUnavailable
			w.Header().Set("Retry-After", "1")
		}
		b, _ := json.Marshal(struct { // strings and bools: Marshal cannot fail
			Status string                 `json:"status"`
			Checks map[string]checkResult `json:"checks"`
		}{status, results})
		respond.JSON(w, code, string(b)+"\n")
	})
}
