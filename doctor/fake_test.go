package doctor

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// fake is an MCP server on 127.0.0.1 that is also its own authorization
// server, right in every respect a test does not change. Tests change it
// through the fields before it starts (newFake's edit function).
type fake struct {
	URL      string // origin, http://127.0.0.1:port
	Resource string // URL + "/mcp"

	Status       int               // answer to an MCP POST without a valid token; 401
	Challenge    string            // WWW-Authenticate of that answer; "" sends none
	CORS         bool              // answer CORS for any origin
	Expose       bool              // expose WWW-Authenticate to CORS
	PRM          map[string]any    // protected-resource metadata; nil: 404
	PRMPaths     []string          // where PRM is served
	AS           map[string]any    // authorization-server metadata; nil: 404
	ASPaths      []string          // where AS is served
	Extra        map[string]string // path -> JSON body served with 200 (other metadata)
	Errors       map[string]int    // path -> error status, before anything else
	Slow         bool              // every answer waits until the client gives up
	RespIss      string            // iss of the authorization response; "" sends none
	StateSuffix  string            // appended to the state of the authorization response
	AuthError    string            // the authorization response is this error instead of a code
	Aud          string            // aud of issued tokens
	Opaque       bool              // issue opaque tokens
	Confidential bool              // registration answers a client with a secret (client_secret_basic)
	Reject       bool              // the MCP endpoint refuses every token (401 invalid_token)

	mu      sync.Mutex
	codes   map[string]codeGrant
	tokens  map[string]bool
	clients map[string]string // client_id -> redirect_uri
	srv     *httptest.Server
}

type codeGrant struct {
	clientID, redirectURI, challenge, resource string
}

// newFake starts a fake after edit (which may be nil) has changed it.
func newFake(t *testing.T, edit func(f *fake)) *fake {
	t.Helper()
	f := &fake{codes: map[string]codeGrant{}, tokens: map[string]bool{}, clients: map[string]string{}}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.URL = "http://" + f.srv.Listener.Addr().String()
	f.Resource = f.URL + "/mcp"
	f.Status = http.StatusUnauthorized
	f.Challenge = `Bearer resource_metadata="` + f.URL + `/.well-known/oauth-protected-resource/mcp", scope="mcp"`
	f.CORS, f.Expose = true, true
	f.PRM = map[string]any{
		"resource":                 f.Resource,
		"authorization_servers":    []any{f.URL},
		"scopes_supported":         []any{"mcp"},
		"bearer_methods_supported": []any{"header"},
	}
	f.PRMPaths = []string{"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"}
	f.AS = map[string]any{
		"issuer":                                         f.URL,
		"authorization_endpoint":                         f.URL + "/authorize",
		"token_endpoint":                                 f.URL + "/token",
		"registration_endpoint":                          f.URL + "/register",
		"response_types_supported":                       []any{"code"},
		"grant_types_supported":                          []any{"authorization_code", "refresh_token"},
		"code_challenge_methods_supported":               []any{"S256"},
		"token_endpoint_auth_methods_supported":          []any{"none"},
		"scopes_supported":                               []any{"mcp"},
		"authorization_response_iss_parameter_supported": true,
	}
	f.ASPaths = []string{"/.well-known/oauth-authorization-server"}
	f.RespIss = f.URL
	f.Aud = f.Resource
	if edit != nil {
		edit(f)
	}
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fake) serve(w http.ResponseWriter, r *http.Request) {
	if f.Slow {
		// Read the body, so that the server notices the client leaving.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		return
	}
	if f.CORS && r.Header.Get("Origin") != "" {
		w.Header().Set("Access-Control-Allow-Origin", r.Header.Get("Origin"))
		if f.Expose {
			w.Header().Set("Access-Control-Expose-Headers", "WWW-Authenticate, Mcp-Session-Id")
		}
		if r.Method == http.MethodOptions {
			w.Header().Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
			w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Mcp-Method, Mcp-Protocol-Version, Mcp-Session-Id")
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	p := r.URL.Path
	if st, ok := f.Errors[p]; ok {
		writeJSON(w, st, map[string]any{"error": "server_error"})
		return
	}
	for _, q := range f.PRMPaths {
		if p == q && f.PRM != nil {
			writeJSON(w, http.StatusOK, f.PRM)
			return
		}
	}
	for _, q := range f.ASPaths {
		if p == q && f.AS != nil {
			writeJSON(w, http.StatusOK, f.AS)
			return
		}
	}
	if body, ok := f.Extra[p]; ok {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
		return
	}
	switch p {
	case "/mcp":
		f.serveMCP(w, r)
	case "/authorize":
		f.serveAuthorize(w, r)
	case "/token":
		f.serveToken(w, r)
	case "/register":
		f.serveRegister(w, r)
	default:
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "not_found"})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fake) serveMCP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	valid := f.tokens[tok] && !f.Reject
	f.mu.Unlock()
	if !valid {
		ch := f.Challenge
		if tok != "" && ch != "" {
			ch = `Bearer error="invalid_token", error_description="audience mismatch", ` + strings.TrimPrefix(ch, "Bearer ")
		}
		if ch != "" {
			w.Header().Set("WWW-Authenticate", ch)
		}
		writeJSON(w, f.Status, map[string]any{"error": "unauthorized"})
		return
	}
	var msg struct {
		ID     any    `json:"id"`
		Method string `json:"method"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&msg); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "bad json"})
		return
	}
	switch msg.Method {
	case "initialize":
		w.Header().Set("Mcp-Session-Id", "s1")
		writeJSON(w, http.StatusOK, map[string]any{"jsonrpc": "2.0", "id": msg.ID, "result": map[string]any{
			"protocolVersion": protocolVersion, "capabilities": map[string]any{}, "serverInfo": map[string]any{"name": "fake", "version": "1"}}})
	case "notifications/initialized":
		w.WriteHeader(http.StatusAccepted)
	case "tools/list":
		if r.Header.Get("Mcp-Session-Id") != "s1" {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "no session"})
			return
		}
		// An event stream with a notification before the response.
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n")
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": msg.ID, "result": map[string]any{
			"tools": []any{map[string]any{"name": "echo"}, map[string]any{"name": "count"}}}})
		fmt.Fprintf(w, "event: message\ndata: %s\n\n", b)
	default:
		writeJSON(w, http.StatusOK, map[string]any{"jsonrpc": "2.0", "id": msg.ID, "error": map[string]any{"code": -32601, "message": "no such method"}})
	}
}

func (f *fake) serveRegister(w http.ResponseWriter, r *http.Request) {
	var meta struct {
		RedirectURIs []string `json:"redirect_uris"`
		AuthMethod   string   `json:"token_endpoint_auth_method"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&meta); err != nil || len(meta.RedirectURIs) != 1 {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_client_metadata"})
		return
	}
	f.mu.Lock()
	id := fmt.Sprintf("client-%d", len(f.clients)+1)
	f.clients[id] = meta.RedirectURIs[0]
	f.mu.Unlock()
	answer := map[string]any{"client_id": id, "redirect_uris": meta.RedirectURIs, "token_endpoint_auth_method": "none"}
	if f.Confidential {
		answer["token_endpoint_auth_method"], answer["client_secret"] = "client_secret_basic", "s3cret"
	}
	writeJSON(w, http.StatusCreated, answer)
}

func (f *fake) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f.mu.Lock()
	registered, ok := f.clients[q.Get("client_id")]
	f.mu.Unlock()
	if !ok || registered != q.Get("redirect_uri") || q.Get("code_challenge_method") != "S256" || q.Get("response_type") != "code" {
		http.Error(w, "bad authorization request", http.StatusBadRequest)
		return
	}
	back := url.Values{"state": {q.Get("state") + f.StateSuffix}}
	if f.RespIss != "" {
		back.Set("iss", f.RespIss)
	}
	if f.AuthError != "" {
		back.Set("error", f.AuthError)
	} else {
		code := fmt.Sprintf("code-%d", time.Now().UnixNano())
		f.mu.Lock()
		f.codes[code] = codeGrant{clientID: q.Get("client_id"), redirectURI: q.Get("redirect_uri"), challenge: q.Get("code_challenge"), resource: q.Get("resource")}
		f.mu.Unlock()
		back.Set("code", code)
	}
	http.Redirect(w, r, q.Get("redirect_uri")+"?"+back.Encode(), http.StatusFound)
}

func (f *fake) serveToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_request"})
		return
	}
	f.mu.Lock()
	g, ok := f.codes[r.PostForm.Get("code")]
	delete(f.codes, r.PostForm.Get("code"))
	f.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	switch {
	case !ok, g.clientID != r.PostForm.Get("client_id"), g.redirectURI != r.PostForm.Get("redirect_uri"),
		base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge:
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_grant"})
		return
	case g.resource != f.Resource || r.PostForm.Get("resource") != f.Resource:
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_target"})
		return
	}
	tok := fmt.Sprintf("opaque-%d", time.Now().UnixNano())
	if !f.Opaque {
		tok = fakeJWT(map[string]any{"iss": f.URL, "aud": f.Aud, "sub": "alice", "scope": "mcp", "exp": time.Now().Add(5 * time.Minute).Unix()})
	}
	f.mu.Lock()
	f.tokens[tok] = true
	f.mu.Unlock()
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 300})
}

// fakeJWT is a JWS-shaped token whose signature is not one: doctor never
// verifies signatures.
func fakeJWT(claims map[string]any) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(map[string]any{"alg": "RS256", "typ": "at+jwt"}) + "." + enc(claims) + "." + base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprint(time.Now().UnixNano())))
}

// clientCount is how many clients are registered.
func (f *fake) clientCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.clients)
}
