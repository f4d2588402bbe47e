package mcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// What reading a tools/call body costs, three ways, on the
// bodies a 2026-07-28 client sends (with _meta) at 1 KiB and 64 KiB. The
// gateway spends about 100 µs of CPU on a proxied request: encoding/json
// costs a tenth of that at 1 KiB (and can be made strict only with its
// token API), Parse about 1 µs. The old hand-written scanner of the audit
// measured like Parse and was replaced by it (see the commit that removed
// it for the numbers).

// benchBody returns a tools/call body of about size bytes: the arguments
// carry a text with the escapes and non-ASCII of real file contents.
func benchBody(size int) []byte {
	var text strings.Builder
	line := `func main() { fmt.Println("héllo, wörld\t") } // ünïcode`
	for text.Len() < size {
		text.WriteString(line)
		text.WriteString("\n")
	}
	build := func(n int) []byte {
		arg, _ := json.Marshal(strings.ToValidUTF8(text.String()[:n], ""))
		return []byte(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"/work/src/main.go","content":` +
			string(arg) + `,"mode":420,"create":true,"tags":["go","main",null]},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",` +
			`"io.modelcontextprotocol/clientInfo":{"name":"ExampleClient","version":"1.0.0"},"io.modelcontextprotocol/clientCapabilities":{},"progressToken":"p-42"}}}`)
	}
	n := size
	body := build(n)
	for len(body) > size { // escapes make the JSON longer than the text
		n -= len(body) - size
		body = build(n)
	}
	return body
}

// stdStruct is the small struct encoding/json decodes into.
type stdStruct struct {
	Method string `json:"method"`
	Params struct {
		Name string `json:"name"`
		URI  string `json:"uri"`
	} `json:"params"`
	ID json.RawMessage `json:"id"`
}

// decodeStd is encoding/json over a limited reader: lenient (keys folded,
// the last duplicate wins), so it does not meet the strictness rules.
func decodeStd(body []byte) (stdStruct, error) {
	var m stdStruct
	err := json.NewDecoder(io.LimitReader(bytes.NewReader(body), 64<<10+1)).Decode(&m)
	return m, err
}

// decodeTokens is encoding/json made strict with its token API: the keys of
// the message and of params are read one by one (duplicates and folded
// variants of method, params, name, uri refused), other values decoded into
// a json.RawMessage to skip them.
func decodeTokens(body []byte) (method, name string, err error) {
	dec := json.NewDecoder(io.LimitReader(bytes.NewReader(body), 64<<10+1))
	object := func(member func(key string) error) error {
		if t, err := dec.Token(); err != nil || t != json.Delim('{') {
			return fmt.Errorf("not an object: %v", err)
		}
		seen := map[string]bool{}
		for dec.More() {
			t, err := dec.Token()
			if err != nil {
				return err
			}
			key := t.(string)
			for _, k := range []string{"method", "params", "name", "uri"} {
				if strings.EqualFold(key, k) {
					if seen[k] {
						return errors.New("ambiguous")
					}
					seen[k] = true
				}
			}
			if err := member(key); err != nil {
				return err
			}
		}
		_, err := dec.Token()
		return err
	}
	var skip json.RawMessage
	err = object(func(key string) error {
		switch key {
		case "method":
			return dec.Decode(&method)
		case "params":
			return object(func(key string) error {
				if key == "name" {
					return dec.Decode(&name)
				}
				return dec.Decode(&skip)
			})
		}
		return dec.Decode(&skip)
	})
	return method, name, err
}

func BenchmarkParseToolsCall(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10} {
		body := benchBody(size)
		name := fmt.Sprintf("%dKiB", size>>10)
		b.Run("encoding-json-struct/"+name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if m, err := decodeStd(body); err != nil || m.Params.Name != "write_file" {
					b.Fatal(err)
				}
			}
		})
		b.Run("encoding-json-tokens-strict/"+name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, n, err := decodeTokens(body); err != nil || n != "write_file" {
					b.Fatal(err)
				}
			}
		})
		b.Run("mcp-parse-strict/"+name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if m, err := Parse(body); err != nil || m.Messages[0].Name != "write_file" {
					b.Fatal(err)
				}
			}
		})
		b.Run("json-valid/"+name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if !json.Valid(body) {
					b.Fatal("invalid")
				}
			}
		})
	}
}
