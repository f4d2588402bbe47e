// Package testkit holds the helpers that the tests of several packages
// share: a log buffer safe for concurrent use, a clock that moves only when
// told, a reader of Prometheus text expositions, polling for a state, an
// in-process OIDC issuer (devissuer) served on 127.0.0.1 with its consumer
// run until the test ends, and a canned upstream with a serve loop for the
// benchmarks of the gate's admit path.
//
// It is imported only by _test.go files; no production code imports it. A
// helper used by one package's tests stays in that package. testkit imports
// nothing of the gateway but devissuer, so every package's tests can use it
// without an import cycle.
package testkit

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"
)

// LogBuffer is a bytes.Buffer safe for the concurrent writes of a logger (or
// a child's output) and the reads of a test. The zero value is ready to use.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// JSONLines parses every non-empty line of a JSON log (hclog's JSONFormat),
// failing the test on a line that is not JSON.
func JSONLines(t testing.TB, logs string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// WaitFor polls cond until it holds, failing the test when d passes first.
// It waits for a state; it does not time one.
func WaitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
