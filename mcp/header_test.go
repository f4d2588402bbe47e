package mcp

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDecodeHeader(t *testing.T) {
	for _, c := range []struct {
		name, value, want string
		ok                bool
	}{
		{"plain", "get_weather", "get_weather", true},
		{"plain URI", "file:///projects/myapp/config.json", "file:///projects/myapp/config.json", true},
		{"space and tab inside", "a b\tc", "a b\tc", true},
		{"the specification's non-ASCII example", "=?base64?SGVsbG8sIOS4lueVjA==?=", "Hello, 世界", true},
		{"padded", "=?base64?IHBhZGRlZCA=?=", " padded ", true},
		{"newline", "=?base64?bGluZTEKbGluZTI=?=", "line1\nline2", true},
		{"a value that looks encoded, encoded", "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=", "=?base64?literal?=", true},
		{"empty payload", "=?base64??=", "", true},
		{"markers are case-sensitive: plain", "=?BASE64?SGk=?=", "=?BASE64?SGk=?=", true},
		{"not Base64", "=?base64?not base64!?=", "", false},
		{"URL-safe alphabet", "=?base64?-_-_?=", "", false},
		{"unpadded", "=?base64?SGk?=", "", false},
		{"non-zero padding bits", "=?base64?SGl=?=", "", false},
		{"line break in the payload", "=?base64?SG\nk=?=", "", false},
		{"not UTF-8", "=?base64?/w==?=", "", false},
		{"markers overlap", "=?base64?=", "", false},
		{"non-ASCII plain", "caf\xc3\xa9", "", false},
		{"control byte plain", "a\x01b", "", false},
		{"DEL plain", "a\x7fb", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := DecodeHeader(c.value)
			if (err == nil) != c.ok {
				t.Fatalf("DecodeHeader(%q): error %v, want ok %v", c.value, err, c.ok)
			}
			if err != nil && !errors.Is(err, ErrHeaderMismatch) {
				t.Errorf("error %v does not wrap ErrHeaderMismatch", err)
			}
			if got != c.want {
				t.Errorf("DecodeHeader(%q) = %q, want %q", c.value, got, c.want)
			}
		})
	}
}

func TestCheckHeaders(t *testing.T) {
	enc := func(s string) string { return "=?base64?" + base64.StdEncoding.EncodeToString([]byte(s)) + "?=" }
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather"}}`
	unicodeCall := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"météo"}}`
	read := `{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///a b"}}`
	for _, c := range []struct {
		name   string
		body   string
		header http.Header
		ok     bool
	}{
		{"no headers: an earlier revision", call, http.Header{}, true},
		{"both agree", call, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"get_weather"}}, true},
		{"encoded name agrees", unicodeCall, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {enc("météo")}}, true},
		{"plain name encoded needlessly agrees", call, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {enc("get_weather")}}, true},
		{"uri agrees", read, http.Header{"Mcp-Method": {"resources/read"}, "Mcp-Name": {"file:///a b"}}, true},
		{"method only, for a method that names nothing", `{"method":"tools/list","id":1}`, http.Header{"Mcp-Method": {"tools/list"}}, true},
		{"a notification", `{"method":"notifications/initialized"}`, http.Header{"Mcp-Method": {"notifications/initialized"}}, true},
		{"name only", call, http.Header{"Mcp-Name": {"get_weather"}}, true},
		{"method only, for a completion: Mcp-Name mirrors nothing of it", `{"method":"completion/complete","id":1,"params":{"ref":{"type":"ref/prompt","name":"p"}}}`,
			http.Header{"Mcp-Method": {"completion/complete"}}, true},
		{"method only, for a subscription", `{"method":"resources/subscribe","id":1,"params":{"uri":"file:///a"}}`, http.Header{"Mcp-Method": {"resources/subscribe"}}, true},

		{"method differs", call, http.Header{"Mcp-Method": {"tools/list"}, "Mcp-Name": {"get_weather"}}, false},
		{"method differs in case", call, http.Header{"Mcp-Method": {"Tools/Call"}, "Mcp-Name": {"get_weather"}}, false},
		{"name differs: the header routes one tool, the body calls another", call, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"read_file"}}, false},
		{"body differs from the header the other way", `{"method":"tools/call","params":{"name":"delete_all"},"id":1}`, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"get_weather"}}, false},
		{"name differs in case", call, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"Get_Weather"}}, false},
		{"encoded name differs", unicodeCall, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {enc("meteo")}}, false},
		{"non-ASCII name sent plain", unicodeCall, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"météo"}}, false},
		{"name missing", call, http.Header{"Mcp-Method": {"tools/call"}}, false},
		{"name for a method that names nothing", `{"method":"tools/list","id":1}`, http.Header{"Mcp-Method": {"tools/list"}, "Mcp-Name": {"x"}}, false},
		{"name for a completion", `{"method":"completion/complete","id":1,"params":{"ref":{"type":"ref/prompt","name":"p"}}}`,
			http.Header{"Mcp-Method": {"completion/complete"}, "Mcp-Name": {"p"}}, false},
		{"method twice", call, http.Header{"Mcp-Method": {"tools/call", "tools/call"}, "Mcp-Name": {"get_weather"}}, false},
		{"name twice", call, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"get_weather", "get_weather"}}, false},
		{"a batch", "[" + call + "]", http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"get_weather"}}, false},
		{"a response", `{"jsonrpc":"2.0","id":1,"result":{}}`, http.Header{"Mcp-Method": {"tools/call"}}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			body, err := Parse([]byte(c.body))
			if err != nil {
				t.Fatal(err)
			}
			err = CheckHeaders(c.header, body)
			if (err == nil) != c.ok {
				t.Fatalf("CheckHeaders: %v, want ok %v", err, c.ok)
			}
			if err != nil && !errors.Is(err, ErrHeaderMismatch) {
				t.Errorf("error %v does not wrap ErrHeaderMismatch", err)
			}
		})
	}
}

func TestWriteHeaderMismatch(t *testing.T) {
	body, err := Parse([]byte(`{"jsonrpc":"2.0","id":"req-7","method":"tools/call","params":{"name":"b"}}`))
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"secret<script>"}}
	cerr := CheckHeaders(h, body)
	if cerr == nil {
		t.Fatal("CheckHeaders accepted a mismatch")
	}
	rec := httptest.NewRecorder()
	WriteHeaderMismatch(rec, body, cerr)
	if rec.Code != http.StatusBadRequest {
		t.Errorf("status %d, want 400", rec.Code)
	}
	for k, want := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
		if got := rec.Header().Get(k); got != want {
			t.Errorf("%s: got %q, want %q", k, got, want)
		}
	}
	var resp struct {
		JSONRPC string `json:"jsonrpc"`
		ID      any    `json:"id"`
		Error   struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	if resp.JSONRPC != "2.0" || resp.ID != "req-7" || resp.Error.Code != -32020 {
		t.Errorf("got %+v, want jsonrpc 2.0, id req-7, code -32020", resp)
	}
	if !strings.Contains(resp.Error.Message, "Mcp-Name") || strings.Contains(rec.Body.String(), "secret") {
		t.Errorf("message %q: want it to name Mcp-Name and not echo the value", resp.Error.Message)
	}

	rec = httptest.NewRecorder()
	batch, _ := Parse([]byte(`[{"method":"ping","id":1}]`))
	WriteHeaderMismatch(rec, batch, CheckHeaders(http.Header{"Mcp-Method": {"ping"}}, batch))
	if !strings.Contains(rec.Body.String(), `"id":null`) {
		t.Errorf("a batch's mismatch: got %s, want id null", rec.Body)
	}
}

func TestReadBody(t *testing.T) {
	for _, c := range []struct {
		body  string
		limit int64
		ok    bool
	}{
		{"", 10, true}, {"0123456789", 10, true}, {"0123456789x", 10, false}, {strings.Repeat("x", 1<<20), 1 << 20, true},
	} {
		got, err := ReadBody(strings.NewReader(c.body), c.limit)
		switch {
		case c.ok && (err != nil || string(got) != c.body):
			t.Errorf("ReadBody(%d bytes, %d): %v, %d bytes", len(c.body), c.limit, err, len(got))
		case !c.ok && !errors.Is(err, ErrTooLarge):
			t.Errorf("ReadBody(%d bytes, %d): %v, want ErrTooLarge", len(c.body), c.limit, err)
		}
	}
}
