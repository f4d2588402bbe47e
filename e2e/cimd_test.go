package e2e

import (
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// cimdServer serves Client ID Metadata Documents over https on 127.0.0.1 with httptest's
// certificate, which the gateway trusts through SSL_CERT_FILE (certFile), as an operator's
// gateway trusts its system roots. It counts the fetches of each path.
type cimdServer struct {
	srv      *httptest.Server
	certFile string

	mu   sync.Mutex
	docs map[string]map[string]any
	hits map[string]int
}

func startCIMDServer(t *testing.T) *cimdServer {
	t.Helper()
	s := &cimdServer{docs: map[string]map[string]any{}, hits: map[string]int{}}
	s.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits[r.URL.Path]++
		doc, ok := s.docs[r.URL.Path]
		s.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(s.srv.Close)
	s.certFile = filepath.Join(t.TempDir(), "cimd-server.pem")
	block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
	if err := os.WriteFile(s.certFile, block, 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// host is 127.0.0.1:port, as CIMD_ALLOW_HOSTS names it.
func (s *cimdServer) host() string { return strings.TrimPrefix(s.srv.URL, "https://") }

func (s *cimdServer) url(path string) string { return s.srv.URL + path }

// serve publishes a client's document at path, whose client_id is clientID (the path's own URL
// for a valid document).
func (s *cimdServer) serve(path, clientID, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.docs[path] = map[string]any{
		"client_id":   clientID,
		"client_name": name,
		// A loopback redirect URI matches on any port (RFC 8252 §7.3): the driver's is free.
		"redirect_uris":              []string{"http://127.0.0.1/callback"},
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"token_endpoint_auth_method": "none",
	}
}

func (s *cimdServer) fetches(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[path]
}

// cimdSettings are broker mode's settings that trust the document server: its certificate
// (SSL_CERT_FILE, read once by Go's crypto/x509 in the gateway) and its loopback host
// (CIMD_ALLOW_HOSTS; without it the SSRF rules refuse 127.0.0.1).
func cimdSettings(s *cimdServer, extra map[string]string) map[string]string {
	set := map[string]string{"SSL_CERT_FILE": s.certFile, "CIMD_ALLOW_HOSTS": s.host()}
	for k, v := range extra {
		set[k] = v
	}
	return brokerSettings(set)
}

// loggedMessages counts the gateway's log lines with message msg.
func (g *gateway) loggedMessages(msg string) int {
	n := 0
	for _, l := range g.logLines() {
		if l["@message"] == msg {
			n++
		}
	}
	return n
}

// TestCIMD: the 2026-07-28 TypeScript client identifies itself by a Client ID Metadata
// Document (its clientMetadataUrl) to the gateway in broker mode, in front of oidc-provider:
// it never registers, the consent page names the client and the document's host, and the
// login, token, tools/call and refresh go through with the URL as client_id. A document whose
// client_id is another URL stops the login at the gateway with invalid_client. With
// CIMD_ENABLED=false the same client registers instead.
func TestCIMD(t *testing.T) {
	needSuite(t)
	docs := startCIMDServer(t)
	const name = "mcp-oauth-proxy e2e CIMD client"

	timed(t, "cimd-ts-client-2x", func(t *testing.T) {
		id := docs.url("/clients/e2e.json")
		docs.serve("/clients/e2e.json", id, name)
		g := startGateway(t, cimdSettings(docs, nil))
		r := runTS2Client(t, g, "--client-metadata-url", id, "--refresh")

		checkBrokerLogin(t, g, r.Flow.AuthorizationResponse.Iss, r.Flow.Authorization.Endpoint, r.Flow.Authorization.Hops, r.Flow.Tokens.Claims)
		if n := r.count("POST", g.url+"/oauth/register", "", 0); n != 0 {
			t.Errorf("the client registered %d times; with a metadata document it must not", n)
		}
		if n := g.loggedMessages("client registered"); n != 0 {
			t.Errorf("the gateway logged %d registrations", n)
		}
		if r.Flow.Registration.ClientID != id || r.Flow.Authorization.Params["client_id"] != id {
			t.Errorf("client_id: kept %q, sent %q, want the document's URL %q", r.Flow.Registration.ClientID, r.Flow.Authorization.Params["client_id"], id)
		}
		// The consent page leads with the host that serves the document, then the name the
		// client gives itself.
		consent := r.Flow.Authorization.Consent
		for _, want := range []string{"Allow an application from " + docs.host(), "Verified:", id, "It calls itself “" + name + "”",
			"the verified host does not vouch for where the access goes"} { // its redirect is loopback
			if !strings.Contains(consent, want) {
				t.Errorf("the consent page lacks %q:\n%s", want, consent)
			}
		}
		if r.Flow.Tokens.Claims["client_id"] != id {
			t.Errorf("access token client_id %v, want %q", r.Flow.Tokens.Claims["client_id"], id)
		}
		if n := r.count("POST", g.url+"/oauth/token", "refresh_token", http.StatusOK); n != 1 || r.EchoAfterRefresh != "Echo: after the refresh" {
			t.Errorf("refresh as the document's client: %d refreshes, then %q", n, r.EchoAfterRefresh)
		}
		if r.Echo != "Echo: hello through the gateway" {
			t.Errorf("tools/call: %q", r.Echo)
		}
		if n := docs.fetches("/clients/e2e.json"); n < 1 {
			t.Errorf("the gateway never fetched the document")
		}
	})

	timed(t, "cimd-client-id-mismatch", func(t *testing.T) {
		id := docs.url("/clients/mismatch.json")
		docs.serve("/clients/mismatch.json", docs.url("/clients/someone-else.json"), name)
		g := startGateway(t, cimdSettings(docs, nil))
		r := runTS2Client(t, g, "--client-metadata-url", id, "--expect-error", "AuthorizationPageError")
		for _, want := range []string{"HTTP 400", "invalid_client", "its client_id is not the URL it was fetched from"} {
			if !strings.Contains(r.Error, want) {
				t.Errorf("the client's error lacks %q: %s", want, r.Error)
			}
		}
		if r.Flow.AuthorizationResponse.Code || r.count("POST", g.url+"/oauth/token", "", 0) != 0 {
			t.Errorf("a code came back or was redeemed: %+v", r.Flow.AuthorizationResponse)
		}
		if n := g.loggedMessages("client metadata document refused"); n != 1 || docs.fetches("/clients/mismatch.json") != 1 {
			t.Errorf("want one fetch and one log line of the refusal, got %d fetches, %d lines", docs.fetches("/clients/mismatch.json"), n)
		}
	})

	timed(t, "cimd-disabled-registers", func(t *testing.T) {
		id := docs.url("/clients/unused.json")
		docs.serve("/clients/unused.json", id, name)
		g := startGateway(t, cimdSettings(docs, map[string]string{"CIMD_ENABLED": "false"}))
		var md map[string]any
		getJSON(t, g.url+"/.well-known/oauth-authorization-server", http.StatusOK, &md)
		if v, ok := md["client_id_metadata_document_supported"]; ok {
			t.Errorf("CIMD_ENABLED=false, yet the metadata says client_id_metadata_document_supported: %v", v)
		}
		r := runTS2Client(t, g, "--client-metadata-url", id)
		if n := r.count("POST", g.url+"/oauth/register", "", http.StatusCreated); n != 1 || r.Flow.Registration.ClientID == id {
			t.Errorf("want the client to register (once) instead: %d registrations, client_id %q", n, r.Flow.Registration.ClientID)
		}
		if r.Echo != "Echo: hello through the gateway" || docs.fetches("/clients/unused.json") != 0 {
			t.Errorf("tools/call %q; document fetched %d times", r.Echo, docs.fetches("/clients/unused.json"))
		}
	})
}
