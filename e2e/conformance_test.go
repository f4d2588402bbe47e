package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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
		port := freePort(t)
		callback := fmt.Sprintf("http://127.0.0.1:%d/callback", port)
		clientID := registerPublicClient(t, g, callback)

		out := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, filepath.Join("node_modules", "@modelcontextprotocol", "conformance", "dist", "index.js"),
			"authorization", "--url", g.url, "--client-id", clientID, "--resource", g.resource, "--port", fmt.Sprint(port), "--output-dir", out)
		cmd.Dir = harness.dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var report strings.Builder
		lines := bufio.NewScanner(stdout)
		authURL := ""
		for authURL == "" && lines.Scan() {
			line := lines.Text()
			report.WriteString(line + "\n")
			if strings.HasPrefix(line, g.url+"/oauth/authorize?") {
				authURL = line
			}
		}
		if authURL == "" {
			_ = cmd.Wait()
			t.Fatalf("the suite printed no authorization URL of the gateway's:\n%s\nstderr:\n%s", report.String(), stderr.String())
		}
		walkCtx, walkCancel := context.WithTimeout(ctx, 30*time.Second)
		q, hops, err := userAgent(walkCtx, authURL, callback)
		walkCancel()
		if err != nil {
			t.Fatalf("login: %v (hops %q)", err, hops)
		}
		// Deliver the gateway's answer to the suite's callback server, as the browser would.
		resp, err := http.Get(callback + "?" + q.Encode())
		if err != nil {
			t.Fatalf("the suite's callback server: %v", err)
		}
		resp.Body.Close()
		rest, _ := io.ReadAll(stdout)
		report.Write(rest)
		waitErr := cmd.Wait()

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

// registerPublicClient registers a public client with one redirect URI at the gateway.
func registerPublicClient(t *testing.T, g *gateway, redirect string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{
		"client_name": "MCP conformance suite", "redirect_uris": []string{redirect},
		"token_endpoint_auth_method": "none", "grant_types": []string{"authorization_code", "refresh_token"},
	})
	resp, err := http.Post(g.url+"/oauth/register", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var reg struct {
		ClientID string `json:"client_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&reg); err != nil || resp.StatusCode != http.StatusCreated || reg.ClientID == "" {
		t.Fatalf("registration: %d %v", resp.StatusCode, err)
	}
	return reg.ClientID
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
