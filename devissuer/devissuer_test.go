package devissuer

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

const testRedirect = "http://127.0.0.1:9/callback"

func startIssuer(t *testing.T) *Issuer {
	t.Helper()
	is, err := New()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(is)
	t.Cleanup(srv.Close)
	is.URL = srv.URL
	return is
}

// noRedirects is a client that stops at the first redirect.
func noRedirects() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// login drives the login page as a browser would: GET the page, then POST
// its form with the given identity. It returns the redirect's query.
func login(t *testing.T, authURL string, form url.Values) url.Values {
	t.Helper()
	c := noRedirects()
	resp, err := c.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), `<form method="post" action="/authorize">`) {
		t.Fatalf("login page: status %d\n%s", resp.StatusCode, page)
	}
	u, _ := url.Parse(authURL)
	post := u.Query()
	for k, v := range form {
		post[k] = v
	}
	resp, err = c.PostForm(u.Scheme+"://"+u.Host+"/authorize", post)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: status %d, want 303", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(loc.String(), testRedirect) {
		t.Fatalf("login redirect: %q", resp.Header.Get("Location"))
	}
	return loc.Query()
}

func TestLoginFlow(t *testing.T) {
	is := startIssuer(t)
	is.AddClient("gw", "gw-secret", testRedirect)
	ctx := context.Background()
	conf := oauth2.Config{
		ClientID: "gw", ClientSecret: "gw-secret", RedirectURL: testRedirect,
		Endpoint: oauth2.Endpoint{AuthURL: is.URL + "/authorize", TokenURL: is.URL + "/token"},
		Scopes:   []string{"openid", "email", "offline_access"},
	}
	verifier := oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL("st-1", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", "n-1"))

	q := login(t, authURL, url.Values{"action": {"login"}, "sub": {"alice"}, "email": {"alice@example.com"}, "groups": {"admins, mcp-users"}})
	if q.Get("state") != "st-1" || q.Get("iss") != is.URL || q.Get("code") == "" {
		t.Fatalf("authorization response: %v", q)
	}
	tok, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	v := oidc.NewVerifier(is.URL, oidc.NewRemoteKeySet(ctx, is.URL+"/jwks"), &oidc.Config{ClientID: "gw"})
	idt, err := v.Verify(ctx, tok.Extra("id_token").(string))
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Email  string   `json:"email"`
		Groups []string `json:"groups"`
	}
	if err := idt.Claims(&claims); err != nil {
		t.Fatal(err)
	}
	if idt.Subject != "alice" || idt.Nonce != "n-1" || claims.Email != "alice@example.com" || strings.Join(claims.Groups, ",") != "admins,mcp-users" {
		t.Fatalf("id token: sub %q nonce %q claims %+v", idt.Subject, idt.Nonce, claims)
	}
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token for offline_access")
	}

	// The code is single use.
	if _, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier)); err == nil {
		t.Fatal("second exchange of a code: got nil error")
	}

	// Userinfo answers for the access token.
	req, _ := http.NewRequest(http.MethodGet, is.URL+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err := noRedirects().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var ui map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&ui)
	resp.Body.Close()
	if resp.StatusCode != 200 || ui["sub"] != "alice" || ui["email"] != "alice@example.com" {
		t.Fatalf("userinfo: %d %v", resp.StatusCode, ui)
	}

	// Refresh rotates; the old refresh token is refused.
	refreshed, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if err != nil {
		t.Fatal(err)
	}
	if refreshed.RefreshToken == "" || refreshed.RefreshToken == tok.RefreshToken {
		t.Fatal("refresh did not rotate the refresh token")
	}
	if _, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err == nil {
		t.Fatal("refresh with a rotated refresh token: got nil error")
	}

	// A disabled subject can no longer refresh.
	is.SetDisabled("alice", true)
	if _, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshed.RefreshToken}).Token(); err == nil {
		t.Fatal("refresh of a disabled subject: got nil error")
	}
	if got := is.RefreshHits(); got != 3 {
		t.Fatalf("refresh hits: got %d, want 3", got)
	}
}

func TestLoginRefusals(t *testing.T) {
	is := startIssuer(t)
	is.AddClient("gw", "gw-secret", testRedirect)
	is.AddClient("public", "", testRedirect)
	good := url.Values{
		"client_id": {"gw"}, "redirect_uri": {testRedirect}, "response_type": {"code"},
		"scope": {"openid"}, "state": {"s"},
	}
	with := func(k, v string) string {
		q := url.Values{}
		for kk, vv := range good {
			q[kk] = vv
		}
		q.Set(k, v)
		return is.URL + "/authorize?" + q.Encode()
	}
	tests := []struct {
		name      string
		url       string
		wantCode  int
		wantError string // in the redirect
	}{
		{name: "unknown client", url: with("client_id", "nobody"), wantCode: 400},
		{name: "unregistered redirect uri", url: with("redirect_uri", "http://127.0.0.1:9/other"), wantCode: 400},
		{name: "token response type", url: with("response_type", "token"), wantCode: 303, wantError: "unsupported_response_type"},
		{name: "no openid scope", url: with("scope", "email"), wantCode: 303, wantError: "invalid_scope"},
		{name: "public client without pkce", url: with("client_id", "public"), wantCode: 303, wantError: "invalid_request"},
		{name: "plain pkce", url: with("code_challenge_method", "plain") + "&code_challenge=abc", wantCode: 303, wantError: "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := noRedirects().Get(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status: got %d, want %d", resp.StatusCode, tt.wantCode)
			}
			if tt.wantError != "" {
				loc, _ := url.Parse(resp.Header.Get("Location"))
				if got := loc.Query().Get("error"); got != tt.wantError {
					t.Fatalf("error: got %q, want %q", got, tt.wantError)
				}
			}
		})
	}

	// Cancel on the login page is access_denied.
	q := login(t, with("state", "s2"), url.Values{"action": {"deny"}})
	if q.Get("error") != "access_denied" || q.Get("state") != "s2" || q.Get("iss") != is.URL {
		t.Fatalf("cancel: %v", q)
	}
}

// The login page: Cancel submits whatever the fields hold (the subject is
// required, and a browser would otherwise refuse to cancel until one is
// typed), and the page is neither framed nor sniffed.
func TestLoginPage(t *testing.T) {
	is := startIssuer(t)
	is.AddClient("gw", "gw-secret", testRedirect)
	resp, err := noRedirects().Get(is.URL + "/authorize?" + url.Values{
		"client_id": {"gw"}, "redirect_uri": {testRedirect}, "response_type": {"code"}, "scope": {"openid"},
	}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for k, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s: got %q, want %q", k, got, want)
		}
	}
	if !strings.Contains(string(page), `<input type="text" id="sub" name="sub" value="demo-user" required>`) {
		t.Errorf("the subject is not a required field:\n%s", page)
	}
	if !strings.Contains(string(page), `value="deny" formnovalidate>Cancel</button>`) {
		t.Errorf("Cancel is held back by the required subject:\n%s", page)
	}
}
