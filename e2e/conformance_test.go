package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConformanceAuthorizationServer runs the authorization-server scenarios of the MCP
// conformance suite (@modelcontextprotocol/conformance) against the gateway in broker mode:
// its metadata endpoint (RFC 8414, with Client ID Metadata Document support), and the
// authorization code grant for a client registered at the gateway. The suite prints the
// authorization URL and waits on its own callback server; the user's part (the gateway's
// consent page, the provider's login) is userAgent's, which delivers the gateway's redirect
// to that callback server as a browser would. The suite then redeems the code and checks
// the authorization response (redirect URI, one code, state, iss) and the token response.
func TestConformanceAuthorizationServer(t *testing.T) {
	t.Parallel()
	needSuite(t)
	node := node22(t) // the suite requires Node 22
	needNodeModule(t, "@modelcontextprotocol/conformance")
	timed(t, "conformance-authorization-server", func(t *testing.T) {
		g := startGateway(t, brokerSettings(nil))
		client := registerAt(t, g.url, false) // public, a loopback redirect URI of its own port
		callback, err := url.Parse(client.redirect)
		if err != nil {
			t.Fatal(err)
		}

		out := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := groupCommand(ctx, node, filepath.Join("node_modules", "@modelcontextprotocol", "conformance", "dist", "index.js"),
			"authorization", "--url", g.url, "--client-id", client.id, "--resource", g.resource, "--port", callback.Port(), "--output-dir", out)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		report := watchLines(stdout, func(line string) (string, bool) {
			return line, strings.HasPrefix(line, g.url+"/oauth/authorize?")
		})
		var hops []string
		select {
		case authURL := <-report.found:
			walkCtx, walkCancel := context.WithTimeout(ctx, 30*time.Second)
			q, h, err := userAgent(walkCtx, authURL, client.redirect)
			walkCancel()
			if hops = h; err != nil {
				t.Errorf("login: %v (hops %q)", err, hops)
				break
			}
			// Deliver the gateway's answer to the suite's callback server, as the browser would.
			resp, err := http.Get(client.redirect + "?" + q.Encode())
			if err != nil {
				t.Errorf("the suite's callback server: %v", err)
				break
			}
			resp.Body.Close()
		case <-report.done:
			t.Errorf("the suite printed no authorization URL of the gateway's")
		}
		if t.Failed() {
			cancel()
		}
		<-report.done // stdout closed: the suite is exiting
		waitErr := cmd.Wait()
		if t.Failed() {
			t.Fatalf("the suite: %v\n%s\nstderr:\n%s", waitErr, report.String(), stderr.String())
		}

		checks := conformanceChecks(t, out)
		for _, want := range []string{"authorization-server-metadata", "authorization-server-metadata-cimd", "authorization-code-grant"} {
			if _, ok := checks[want]; !ok {
				t.Errorf("check %s did not run", want)
			}
		}
		for id, c := range checks { // a WARNING (a SHOULD missed) fails too
			if c.Status != "SUCCESS" && c.Status != "INFO" {
				t.Errorf("check %s: %s %s", id, c.Status, c.ErrorMessage)
			}
		}
		if waitErr != nil || t.Failed() {
			t.Fatalf("the suite: %v\n%s\nstderr:\n%s", waitErr, report.String(), stderr.String())
		}
		t.Logf("%d checks passed (hops %q)", len(checks), hops)
	})
}

// conformanceCheck is one check of the suite's checks.json.
type conformanceCheck struct {
	ID           string `json:"id"`
	Status       string `json:"status"`
	ErrorMessage string `json:"errorMessage"`
}

// conformanceChecks reads every checks.json the suite wrote under dir, by check id.
func conformanceChecks(t *testing.T, dir string) map[string]conformanceCheck {
	t.Helper()
	found := map[string]conformanceCheck{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "checks.json" {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var checks []conformanceCheck
		if err := json.Unmarshal(raw, &checks); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		for _, c := range checks {
			found[c.ID] = c
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the suite's results: %v", err)
	}
	return found
}
