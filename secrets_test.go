package main

import (
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestNoSecretsInLogs runs the gateway at LOG_LEVEL=trace with a static
// client, registers, sends valid and invalid tokens every way a client
// might (header, query, cookie, Basic), then looks for every token, every
// token's signature, and the client secret in every log line.
func TestNoSecretsInLogs(t *testing.T) {
	const secret = "s3cr3t-static-client-secret-0123456789"
	g := startGateway(t, map[string]string{
		"LOG_LEVEL":            "trace",
		"STATIC_CLIENT_ID":     "static-client",
		"STATIC_CLIENT_SECRET": secret,
	}, nil)

	resp, err := http.Post(g.base+"/oauth/register", "application/json",
		strings.NewReader(`{"redirect_uris":["http://127.0.0.1:33418/callback"],"token_endpoint_auth_method":"client_secret_post","client_name":"test"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || !strings.Contains(string(b), secret) {
		t.Fatalf("registration: got %d %s, want 201 with the static client's secret", resp.StatusCode, b)
	}

	valid := g.token(t, "alice", map[string]any{"email": "alice@example.com"})
	tokens := map[string]string{
		"valid":          valid,
		"other subject":  g.token(t, "mallory", nil),
		"wrong audience": mustToken(t, g, "alice", "https://other.example.com", time.Hour),
		"expired":        mustToken(t, g, "alice", gwAudience, -time.Hour),
		"tampered":       tamper(valid),
	}
	send := func(method, path string, h http.Header) int {
		req, _ := http.NewRequest(method, g.base+path, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for name, tok := range tokens {
		statuses := []int{
			send("POST", "/mcp", http.Header{"Authorization": {"Bearer " + tok}}),
			send("POST", "/mcp?access_token="+tok, http.Header{"Authorization": {"Bearer " + tok}}),
			send("GET", "/mcp?access_token="+tok, nil),
			send("GET", "/mcp", http.Header{"Cookie": {"access_token=" + tok}}),
			send("POST", "/mcp", http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("static-client:"+tok))}}),
			send("POST", "/mcp", http.Header{"Authorization": {"Bearer " + tok, "Bearer " + tok}}),
			send("POST", "/mcp/"+tok[:40]+"%2f..", http.Header{"Authorization": {"Bearer " + tok}}),
		}
		t.Logf("%s: %v", name, statuses)
		if name == "valid" && statuses[0] != 200 {
			t.Errorf("valid token: got %d, want 200", statuses[0])
		}
	}
	send("POST", "/mcp", http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("static-client:"+secret))}})
	send("POST", "/oauth/token?client_secret="+secret, nil)
	send("GET", "/mcp?client_secret="+secret, nil)

	logs := g.logs.String()
	if !strings.Contains(logs, `"@level":"trace"`) && !strings.Contains(logs, `"@level":"debug"`) {
		t.Logf("no trace or debug lines were written")
	}
	needles := map[string]string{"static client secret": secret}
	for name, tok := range tokens {
		parts := strings.Split(tok, ".")
		needles[name+" token"] = tok
		needles[name+" token signature"] = parts[2]
		needles[name+" token payload"] = parts[1]
	}
	lines := strings.Split(logs, "\n")
	for _, line := range lines {
		for what, s := range needles {
			if strings.Contains(line, s) {
				t.Errorf("the %s appears in the log line %.300s", what, line)
			}
		}
	}
	t.Logf("%d log lines checked", len(lines))
}

// tamper changes the token's payload without re-signing it.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	p, _ := base64.RawURLEncoding.DecodeString(parts[1])
	p = []byte(strings.Replace(string(p), `"alice"`, `"admin"`, 1))
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(p) + "." + parts[2]
}
