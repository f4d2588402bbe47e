package testkit

import (
	"encoding/json"
	"net/http"
	"testing"
)

// ReadyCheck is one check of a gateway's /readyz answer.
type ReadyCheck struct {
	Ready  bool   `json:"ready"`
	Detail string `json:"detail"`
}

// Readyz gets base+"/readyz" and returns its status and checks by name.
func Readyz(t testing.TB, base string) (int, map[string]ReadyCheck) {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Checks map[string]ReadyCheck `json:"checks"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("/readyz at %s: %v", base, err)
	}
	return resp.StatusCode, body.Checks
}

// StoreCheck returns /readyz's status and the detail of its "store" check
// at base. The check must be there and ready: the store's state (Redis
// down) is named, never a reason to leave the load balancer.
func StoreCheck(t testing.TB, base string) (int, string) {
	t.Helper()
	status, checks := Readyz(t, base)
	st, ok := checks["store"]
	if !ok {
		t.Fatalf("/readyz names no store check: %+v", checks)
	}
	if !st.Ready {
		t.Errorf("/readyz: the store check is not ready (it never should be): %q", st.Detail)
	}
	return status, st.Detail
}
