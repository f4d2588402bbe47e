package testkit

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/devissuer"
)

// StartIssuer serves a new devissuer (real keys) on 127.0.0.1 until the
// test ends, with URL set to where it listens. setup, if not nil, is called
// before it serves (to set Now, SetDown, hooks, clients).
func StartIssuer(t testing.TB, setup func(*devissuer.Issuer)) *devissuer.Issuer {
	t.Helper()
	is, err := devissuer.New()
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(is)
	}
	srv := httptest.NewUnstartedServer(is)
	is.URL = "http://" + srv.Listener.Addr().String()
	srv.Start()
	t.Cleanup(srv.Close)
	return is
}

// Runner is a long-lived part that runs until its context ends, as
// provider.Provider does.
type Runner interface {
	Run(ctx context.Context) error
}

// Run runs r until the test ends, then waits for it to return; an error
// from Run fails the test.
func Run(t testing.TB, r Runner) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
}

// Readier says whether a part is ready, and if not, why (provider.Provider's
// Ready).
type Readier interface {
	Ready() (bool, string)
}

// WaitReady polls r until it is ready, failing the test after 10 s with
// the reason it last gave.
func WaitReady(t testing.TB, r Readier) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, reason := r.Ready()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %s", reason)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
