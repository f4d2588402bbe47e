package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// doctorReport is what `doctor --json` prints.
type doctorReport struct {
	Failed      bool   `json:"failed"`
	AccessToken string `json:"access_token"`
	Checks      []struct {
		ID, Status, Message, Fix string
	} `json:"checks"`
}

func (r doctorReport) check(id string) (status, message string) {
	for _, c := range r.Checks {
		if c.ID == id {
			return c.Status, c.Message
		}
	}
	return "", ""
}

// TestDoctorLogin runs `mcp-oauth-proxy doctor --login` against the gateway
// in front of oidc-provider: doctor gets a client (the provider's dynamic
// registration in direct mode, the gateway's static client in facade
// mode, the gateway's own registration in broker mode), prints the
// authorization URL and waits on its loopback listener; the test plays the
// browser (the gateway's consent page in broker mode, the provider's
// scripted login, cookies kept, redirects followed) until the redirect to
// that listener; doctor then checks iss, redeems the code and lists the
// tools with the token.
func TestDoctorLogin(t *testing.T) {
	t.Parallel()
	needSuite(t)
	timed(t, "doctor-login-direct", func(t *testing.T) {
		g := startGateway(t, map[string]string{"AUTH_SERVER_MODE": "direct"})
		r, exit := runDoctorLogin(t, g)
		for _, id := range []string{"challenge", "prm", "prm.resource", "as.discovery", "as.issuer", "as.pkce", "as.registration", "as.iss",
			"login.client", "login.state", "login.iss", "login.authorize", "login.token", "login.mcp",
			"token", "token.iss", "token.aud", "token.exp", "token.scope"} {
			if st, msg := r.check(id); st != "ok" {
				t.Errorf("%s: %q (%s), want ok", id, st, msg)
			}
		}
		if r.Failed || exit != 0 {
			t.Errorf("doctor failed (exit %d) against a working direct-mode gateway", exit)
		}
		if _, msg := r.check("login.mcp"); !strings.Contains(msg, "echo") {
			t.Errorf("login.mcp: %q does not list server-everything's echo tool", msg)
		}
	})
	// Broker mode: the gateway is the authorization server; its consent
	// page comes before the provider's login.
	timed(t, "doctor-login-broker", func(t *testing.T) {
		g := startGateway(t, brokerSettings(nil))
		r, exit := runDoctorLogin(t, g)
		for _, id := range []string{"challenge", "prm", "prm.resource", "prm.authorization_servers", "as.discovery", "as.issuer", "as.pkce",
			"as.registration", "as.iss", "login.client", "login.state", "login.iss", "login.authorize", "login.token", "login.mcp",
			"token", "token.iss", "token.aud", "token.exp", "token.scope"} {
			if st, msg := r.check(id); st != "ok" {
				t.Errorf("%s: %q (%s), want ok", id, st, msg)
			}
		}
		if _, msg := r.check("login.iss"); !strings.Contains(msg, g.url) {
			t.Errorf("login.iss: %q does not name the gateway %s", msg, g.url)
		}
		if r.Failed || exit != 0 {
			t.Errorf("doctor failed (exit %d) against a working broker-mode gateway", exit)
		}
	})
	// Facade mode with a provider that sends iss: doctor predicts the
	// failure from the metadata, then sees it in the real redirect.
	timed(t, "doctor-login-facade", func(t *testing.T) {
		g := startGateway(t, map[string]string{
			"AUTH_SERVER_MODE":     "facade",
			"STATIC_CLIENT_ID":     staticClientID,
			"STATIC_CLIENT_SECRET": staticClientSecret,
		})
		r, exit := runDoctorLogin(t, g)
		want := map[string]string{"as.issuer": "ok", "as.iss": "fail", "login.client": "ok", "login.iss": "fail", "login.token": "ok", "login.mcp": "ok", "token.aud": "ok"}
		for id, st := range want {
			if got, msg := r.check(id); got != st {
				t.Errorf("%s: %q (%s), want %s", id, got, msg, st)
			}
		}
		if _, msg := r.check("login.iss"); !strings.Contains(msg, harness.issuer) {
			t.Errorf("login.iss: %q does not name the provider's iss %s", msg, harness.issuer)
		}
		if exit != 1 {
			t.Errorf("exit status %d, want 1", exit)
		}
	})
}

// runDoctorLogin runs doctor --login --json against g, plays the browser,
// and returns the report and doctor's exit status.
func runDoctorLogin(t *testing.T, g *gateway) (doctorReport, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := groupCommand(ctx, harness.bin, "doctor", "--login", "--no-browser", "--json",
		"--login-wait", "60s", "--timeout", "80s", g.resource)
	var stdout strings.Builder
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	// The authorization URL is the indented line after "Open this URL".
	prompt := watchLines(stderr, func(line string) (string, bool) {
		u, ok := strings.CutPrefix(line, "  ")
		return u, ok && strings.HasPrefix(u, "http")
	})
	var hops []string
	select {
	case u := <-prompt.found:
		hops = browse(t, ctx, u, "alice@example.com")
	case <-time.After(30 * time.Second):
		cancel()
	}
	<-prompt.done // stderr closed: doctor is exiting
	waitErr := cmd.Wait()
	exit := 0
	if ee, ok := waitErr.(*exec.ExitError); ok {
		exit = ee.ExitCode()
	} else if waitErr != nil {
		t.Fatalf("doctor: %v", waitErr)
	}
	var r doctorReport
	if err := json.Unmarshal([]byte(stdout.String()), &r); err != nil {
		t.Fatalf("doctor's JSON: %v (exit %d)\nstdout:\n%s\nstderr:\n%s\nbrowser hops: %v", err, exit, stdout.String(), prompt.String(), hops)
	}
	for _, c := range r.Checks {
		t.Logf("%-5s %-26s %s", c.Status, c.ID, c.Message)
	}
	if r.AccessToken != "" || strings.Contains(stdout.String()+prompt.String(), "eyJ") {
		t.Error("doctor printed the token without --show-token")
	}
	return r, exit
}

// browse is the browser: it opens u with login_hint (provider.mjs logs that
// account in), keeps cookies and follows every redirect, which ends at
// doctor's loopback callback. It returns the hops for a failure message.
func browse(t *testing.T, ctx context.Context, u, loginHint string) []string {
	t.Helper()
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatalf("authorization URL %q: %v", u, err)
	}
	q := parsed.Query()
	q.Set("login_hint", loginHint)
	parsed.RawQuery = q.Encode()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	var hops []string
	client := &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		hops = append(hops, req.URL.Host+req.URL.Path)
		if len(via) > 20 {
			return http.ErrUseLastResponse
		}
		req.Header.Del("Origin") // a browser's GET after a 303 carries none
		return nil
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, parsed.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("browsing the login: %v (hops %v)", err, hops)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	// Broker mode: the gateway's consent page first; the user allows.
	if action, fields, ok := consentForm(string(body), resp.Request.URL); ok && resp.StatusCode == http.StatusOK {
		hops = append(hops, "consent: allow")
		fields.Set("decision", "approve")
		post, err := http.NewRequestWithContext(ctx, http.MethodPost, action, strings.NewReader(fields.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		post.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		post.Header.Set("Origin", resp.Request.URL.Scheme+"://"+resp.Request.URL.Host)
		if resp, err = client.Do(post); err != nil {
			t.Fatalf("submitting the consent: %v (hops %v)", err, hops)
		}
		body, _ = io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
	}
	if resp.StatusCode != http.StatusOK || !strings.HasSuffix(resp.Request.URL.Path, "/callback") {
		t.Errorf("the login ended at %s with %d: %s (hops %v)", resp.Request.URL, resp.StatusCode, body, hops)
	}
	return hops
}
