package doctor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// browser is a scripted browser: it follows the authorization URL's
// redirects, as a person logging in would, and so lands on doctor's
// loopback callback. It records what it was asked to open.
type browser struct {
	opened []string
	status int // of the last page
}

func (b *browser) open(ctx context.Context, u string) error {
	b.opened = append(b.opened, u)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	b.status = resp.StatusCode
	return nil
}

// login runs doctor --login against f with the scripted browser.
func login(t *testing.T, f *fake, l Login) (*Report, *browser, string) {
	t.Helper()
	b := &browser{}
	var prompt bytes.Buffer
	l.Prompt = &prompt
	if l.OpenBrowser == nil {
		l.OpenBrowser = b.open
	}
	r := run(t, f.Resource, Config{Login: &l})
	return r, b, prompt.String()
}

func TestLogin(t *testing.T) {
	f := newFake(t, nil)
	r, b, prompt := login(t, f, Login{})
	for _, id := range []string{"login.client", "login.state", "login.iss", "login.authorize", "login.token", "login.mcp",
		"token", "token.iss", "token.aud", "token.exp", "token.scope"} {
		expect(t, r, id, OK)
	}
	expect(t, r, "login.mcp", OK, "2 tools (echo, count)")
	expect(t, r, "login.client", OK, "dynamic registration")
	if len(b.opened) != 1 || !strings.Contains(prompt, b.opened[0]) {
		t.Errorf("the prompt %q does not show the URL the browser opened %v", prompt, b.opened)
	}
	for _, want := range []string{"code_challenge_method=S256", "resource=" + url.QueryEscape(f.Resource), "scope=mcp", "state="} {
		if !strings.Contains(b.opened[0], want) {
			t.Errorf("authorization URL %s lacks %s", b.opened[0], want)
		}
	}
	if b.status != http.StatusOK {
		t.Errorf("the callback page answered %d", b.status)
	}
	if r.Token != "" || strings.Contains(text(r), "eyJ") {
		t.Error("the token was printed without ShowToken")
	}
	if r.Failed {
		t.Errorf("failed:\n%s", text(r))
	}

	r, _, _ = login(t, f, Login{ShowToken: true})
	if !strings.HasPrefix(r.Token, "eyJ") || !strings.Contains(text(r), r.Token) {
		t.Errorf("ShowToken: token %q not in the output", r.Token)
	}
}

func TestLoginProblems(t *testing.T) {
	for _, tt := range []struct {
		name   string
		edit   func(f *fake)
		id     string
		status Status
		want   []string
	}{
		{"iss of another issuer", func(f *fake) { f.RespIss = "https://provider.example" }, "login.iss", Fail, []string{"https://provider.example", "AUTH_SERVER_MODE=broker"}},
		{"iss missing though advertised", func(f *fake) { f.RespIss = "" }, "login.iss", Fail, []string{"no iss"}},
		{"iss missing and not advertised", func(f *fake) {
			f.RespIss = ""
			f.AS["authorization_response_iss_parameter_supported"] = false
		}, "login.iss", OK, nil},
		{"state changed", func(f *fake) { f.StateSuffix = "x" }, "login.state", Fail, nil},
		{"access denied", func(f *fake) { f.AuthError = "access_denied" }, "login.authorize", Fail, []string{"access_denied"}},
		{"resource refuses the token", func(f *fake) { f.Reject = true }, "login.mcp", Fail, []string{"401", "invalid_token"}},
		{"aud of another service, refused", func(f *fake) {
			f.Aud = "https://other.example"
			f.Reject = true
		}, "token.aud", Fail, []string{"https://other.example"}},
		{"aud of another service, accepted", func(f *fake) { f.Aud = "https://other.example" }, "token.aud", Warn, []string{"does not check the audience"}},
		{"opaque token", func(f *fake) { f.Opaque = true }, "token", OK, []string{"opaque"}},
		{"opaque token refused", func(f *fake) {
			f.Opaque = true
			f.Reject = true
		}, "token", Warn, []string{"opaque"}},
		{"token lacks a challenged scope", func(f *fake) {
			f.Challenge = `Bearer resource_metadata="` + f.URL + `/.well-known/oauth-protected-resource/mcp", scope="openid mcp admin"`
		}, "token.scope", Warn, []string{"lacks admin"}},
		{"no registration", func(f *fake) { delete(f.AS, "registration_endpoint") }, "login.client", Fail, []string{"--client-id"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, tt.edit)
			r, _, _ := login(t, f, Login{})
			expect(t, r, tt.id, tt.status, tt.want...)
		})
	}
}

// A failed iss check does not stop doctor: it goes on as a 1.x client would.
func TestLoginGoesOnAfterIssMismatch(t *testing.T) {
	f := newFake(t, func(f *fake) { f.RespIss = "https://provider.example" })
	r, _, _ := login(t, f, Login{})
	expect(t, r, "login.iss", Fail)
	expect(t, r, "login.mcp", OK)
}

func TestLoginWaitsBoundedly(t *testing.T) {
	f := newFake(t, nil)
	var prompt bytes.Buffer
	start := time.Now()
	r := run(t, f.Resource, Config{Login: &Login{Prompt: &prompt, Wait: 300 * time.Millisecond}})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("waited %s", d)
	}
	expect(t, r, "login.authorize", Fail, "no redirect")
	if !strings.Contains(prompt.String(), f.URL+"/authorize?") {
		t.Errorf("the prompt does not show the authorization URL:\n%s", prompt.String())
	}
}

func TestLoginWithAGivenClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	f := newFake(t, func(f *fake) { f.clients["pre-registered"] = fmt.Sprintf("http://127.0.0.1:%d/callback", port) })
	r, b, _ := login(t, f, Login{ClientID: "pre-registered", RedirectPort: port})
	expect(t, r, "login.client", OK, "--client-id")
	expect(t, r, "login.mcp", OK)
	if f.clientCount() != 1 {
		t.Errorf("doctor registered a client though one was given")
	}
	if !strings.Contains(b.opened[0], fmt.Sprintf("redirect_uri=http%%3A%%2F%%2F127.0.0.1%%3A%d%%2Fcallback", port)) {
		t.Errorf("authorization URL %s does not use the given port", b.opened[0])
	}
}

func TestBrowserHookError(t *testing.T) {
	f := newFake(t, nil)
	var prompt bytes.Buffer
	r := run(t, f.Resource, Config{Login: &Login{Prompt: &prompt, Wait: 200 * time.Millisecond,
		OpenBrowser: func(context.Context, string) error { return fmt.Errorf("no display") }}})
	expect(t, r, "login.authorize", Fail)
	if !strings.Contains(prompt.String(), "could not open a browser: no display") {
		t.Errorf("prompt:\n%s", prompt.String())
	}
}
