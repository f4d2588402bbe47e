package mcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		name string
		body string
		want Body
	}{
		{"tools/call", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"name":"not this"}}}`,
			Body{Messages: []Message{{Method: "tools/call", Name: "echo", ID: "1"}}}},
		{"params before method", `{"params":{"arguments":{"name":"x"},"name":"add"},"id":"a\"b","method":"tools/call"}`,
			Body{Messages: []Message{{Method: "tools/call", Name: "add", ID: `"a\"b"`}}}},
		{"resources/read names its uri", `{"id":-2.5e3,"method":"resources/read","params":{"uri":"file:///etc/motd","name":"ignored"}}`,
			Body{Messages: []Message{{Method: "resources/read", Name: "file:///etc/motd", ID: "-2.5e3"}}}},
		{"prompts/get", `{"method":"prompts/get","params":{"name":"greet"}}`,
			Body{Messages: []Message{{Method: "prompts/get", Name: "greet"}}}},
		{"other methods name nothing", `{"method":"tools/list","params":{"name":"x","Name":"y","name":"z","ref":{"type":"ref/prompt","name":"p"}}}`,
			Body{Messages: []Message{{Method: "tools/list"}}}},
		{"resources/subscribe names its uri", `{"id":3,"method":"resources/subscribe","params":{"uri":"file:///log","name":"ignored"}}`,
			Body{Messages: []Message{{Method: "resources/subscribe", Name: "file:///log", ID: "3"}}}},
		{"resources/unsubscribe names its uri", `{"method":"resources/unsubscribe","params":{"uri":"file:///log"}}`,
			Body{Messages: []Message{{Method: "resources/unsubscribe", Name: "file:///log"}}}},
		{"completion/complete of a prompt names it", `{"id":4,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"greet","uri":"ignored"},"argument":{"name":"not this","value":""}}}`,
			Body{Messages: []Message{{Method: "completion/complete", Ref: RefPrompt, Name: "greet", ID: "4"}}}},
		{"completion/complete of a resource names its template", `{"method":"completion/complete","params":{"argument":{"name":"path","value":"a"},"ref":{"uri":"file:///{path}","type":"ref\/resource","name":"ignored"},"name":"ignored"}}`,
			Body{Messages: []Message{{Method: "completion/complete", Ref: RefResource, Name: "file:///{path}"}}}},
		{"escapes decoded", `{"method":"tools\/call","params":{"n\u0061me":"ech\u006f \ud83d\ude00"}}`,
			Body{Messages: []Message{{Method: "tools/call", Name: "echo \U0001F600"}}}},
		{"a response is no message", `{"jsonrpc":"2.0","id":1,"result":{}}`, Body{}},
		{"an id that is not a string or number is not kept", `{"method":"ping","id":{"a":1}}`,
			Body{Messages: []Message{{Method: "ping"}}}},
		{"not an object", `"just a string"`, Body{}},
		{"batch", `[{"method":"tools/call","params":{"name":"a"},"id":1}, 5, {"result":1}, {"method":"notifications/initialized"}]`,
			Body{Batch: true, Len: 4, Messages: []Message{{Method: "tools/call", Name: "a", ID: "1"}, {Index: 3, Method: "notifications/initialized"}}}},
		{"empty batch", ` [ ] `, Body{Batch: true}},
		{"all of JSON", ` {"method" : "ping" , "id" : 0 , "x":[true,false,null,{},[],-0.0e-0,1E+2,"\b\f\n\r\t\/\\"]} `,
			Body{Messages: []Message{{Method: "ping", ID: "0"}}}},
		{"other keys may repeat", `{"method":"ping","x":1,"x":2,"jsonrpc":"2.0","jsonrpc":"2.0"}`,
			Body{Messages: []Message{{Method: "ping"}}}},
		{"deep nesting within the limit", `{"method":"ping","x":` + strings.Repeat("[", MaxDepth-1) + strings.Repeat("]", MaxDepth-1) + `}`,
			Body{Messages: []Message{{Method: "ping"}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Parse([]byte(c.body))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	for _, c := range []struct {
		name string
		body string
		want error
	}{
		{"duplicate name: the last would win elsewhere", `{"method":"tools/call","params":{"name":"a","name":"b"}}`, ErrAmbiguous},
		{"case variant of name: encoding/json would read b", `{"method":"tools/call","params":{"name":"a","Name":"b"}}`, ErrAmbiguous},
		{"case variant alone", `{"method":"tools/call","params":{"NAME":"b"}}`, ErrAmbiguous},
		{"long s folds to s", `{"method":"tools/call","params":{"name":"a"},"paramſ":{"name":"b"}}`, ErrAmbiguous},
		{"underscore variant (json/v2 nocase)", `{"method":"tools/call","params":{"na_me":"b","name":"a"}}`, ErrAmbiguous},
		{"escaped duplicate", `{"method":"tools/call","params":{"name":"a","n\u0061me":"b"}}`, ErrAmbiguous},
		{"duplicate uri", `{"method":"resources/read","params":{"uri":"a","uri":"b"}}`, ErrAmbiguous},
		{"variant uri", `{"method":"resources/read","params":{"uri":"a","URI":"b"}}`, ErrAmbiguous},
		{"duplicate method", `{"method":"ping","method":"tools/call","params":{"name":"a"}}`, ErrAmbiguous},
		{"variant method", `{"method":"ping","Method":"tools/call"}`, ErrAmbiguous},
		{"variant method alone", `{"METHOD":"tools/call","params":{"name":"a"}}`, ErrAmbiguous},
		{"duplicate params", `{"method":"tools/call","params":{"name":"a"},"params":{"name":"b"}}`, ErrAmbiguous},
		{"variant params", `{"method":"tools/call","params":{"name":"a"},"Params":{"name":"b"}}`, ErrAmbiguous},
		{"in a batch", `[{"method":"ping"},{"method":"tools/call","params":{"name":"a","Name":"b"}}]`, ErrAmbiguous},
		{"duplicate uri to subscribe", `{"method":"resources/subscribe","params":{"uri":"a","uri":"b"}}`, ErrAmbiguous},
		{"variant uri to unsubscribe", `{"method":"resources/unsubscribe","params":{"Uri":"b","uri":"a"}}`, ErrAmbiguous},
		{"duplicate ref", `{"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a"},"ref":{"type":"ref/prompt","name":"b"}}}`, ErrAmbiguous},
		{"variant ref", `{"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a"},"REF":{"type":"ref/prompt","name":"b"}}}`, ErrAmbiguous},
		{"duplicate ref type", `{"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a","type":"ref/resource","uri":"b"}}}`, ErrAmbiguous},
		{"variant ref type", `{"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a","Type":"ref/resource","uri":"b"}}}`, ErrAmbiguous},
		{"duplicate ref name", `{"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a","name":"b"}}}`, ErrAmbiguous},
		{"variant ref name", `{"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a","nAme":"b"}}}`, ErrAmbiguous},
		{"variant ref uri", `{"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"a","URI":"b"}}}`, ErrAmbiguous},
		{"ambiguous completion in a batch", `[{"method":"ping"},{"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a","Name":"b"}}}]`, ErrAmbiguous},
		{"method not a string", `{"method":5}`, ErrInvalid},
		{"method null", `{"method":null,"id":1}`, ErrInvalid},
		{"tools/call without params", `{"method":"tools/call"}`, ErrInvalid},
		{"tools/call with params not an object", `{"method":"tools/call","params":["a"]}`, ErrInvalid},
		{"tools/call without a name", `{"method":"tools/call","params":{}}`, ErrInvalid},
		{"name not a string", `{"method":"tools/call","params":{"name":5}}`, ErrInvalid},
		{"name with a lone surrogate", `{"method":"tools/call","params":{"name":"a\ud800"}}`, ErrInvalid},
		{"resources/subscribe without a uri", `{"method":"resources/subscribe","params":{"name":"a"}}`, ErrInvalid},
		{"resources/unsubscribe with a uri not a string", `{"method":"resources/unsubscribe","params":{"uri":["a"]}}`, ErrInvalid},
		{"completion/complete without params", `{"method":"completion/complete"}`, ErrInvalid},
		{"completion/complete without a ref", `{"method":"completion/complete","params":{"argument":{"name":"a","value":""}}}`, ErrInvalid},
		{"ref not an object", `{"method":"completion/complete","params":{"ref":"ref/prompt"}}`, ErrInvalid},
		{"ref null", `{"method":"completion/complete","params":{"ref":null}}`, ErrInvalid},
		{"ref without a type", `{"method":"completion/complete","params":{"ref":{"name":"a"}}}`, ErrInvalid},
		{"ref of another type", `{"method":"completion/complete","params":{"ref":{"type":"ref/tool","name":"a"}}}`, ErrInvalid},
		{"ref type in another case", `{"method":"completion/complete","params":{"ref":{"type":"ref/Prompt","name":"a"}}}`, ErrInvalid},
		{"ref type not a string", `{"method":"completion/complete","params":{"ref":{"type":1,"name":"a"}}}`, ErrInvalid},
		{"prompt ref without a name", `{"method":"completion/complete","params":{"ref":{"type":"ref/prompt","uri":"a"}}}`, ErrInvalid},
		{"prompt ref with a name not a string", `{"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":{"a":1}}}}`, ErrInvalid},
		{"resource ref without a uri", `{"method":"completion/complete","params":{"ref":{"type":"ref/resource","name":"a"}}}`, ErrInvalid},
		{"resource ref with a uri not a string", `{"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":null}}}`, ErrInvalid},
		{"ref name with a lone surrogate", `{"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"\udc00"}}}`, ErrInvalid},
		{"malformed ref in a batch", `[{"method":"ping"},{"method":"completion/complete","params":{"ref":{"type":"ref/prompt"}}}]`, ErrInvalid},
		{"empty", ``, ErrSyntax},
		{"white space only", " \n", ErrSyntax},
		{"cut off", `{"method":"ping"`, ErrSyntax},
		{"trailing bytes", `{"method":"ping"} x`, ErrSyntax},
		{"two values", `{"method":"ping"}{}`, ErrSyntax},
		{"BOM", "\xef\xbb\xbf{}", ErrSyntax},
		{"leading zero", `{"id":01}`, ErrSyntax},
		{"bare dot", `{"id":1.}`, ErrSyntax},
		{"bad exponent", `{"id":1e}`, ErrSyntax},
		{"minus alone", `[-]`, ErrSyntax},
		{"bad literal", `{"id":tru}`, ErrSyntax},
		{"bad escape", `{"a":"\x"}`, ErrSyntax},
		{"short unicode escape", `{"a":"\u12"}`, ErrSyntax},
		{"control byte", "{\"a\":\"\x01\"}", ErrSyntax},
		{"invalid UTF-8", "{\"a\":\"\xff\"}", ErrSyntax},
		{"UTF-8 surrogate", "{\"a\":\"\xed\xa0\x80\"}", ErrSyntax},
		{"trailing comma in object", `{"a":1,}`, ErrSyntax},
		{"trailing comma in array", `[1,]`, ErrSyntax},
		{"single quotes", `{'method':'ping'}`, ErrSyntax},
		{"too deep", strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), ErrSyntax},
		{"too deep in a message", `{"method":"ping","x":` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth) + `}`, ErrSyntax},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.body))
			if !errors.Is(err, c.want) {
				t.Errorf("Parse(%.60q): got %v, want %v", c.body, err, c.want)
			}
		})
	}
}

func TestParsePrefix(t *testing.T) {
	for _, c := range []struct {
		name   string
		prefix string
		want   Body
		err    error
	}{
		{"a whole body is still only a prefix", `{"method":"ping"}`, Body{Messages: []Message{{Method: "ping"}}}, ErrTruncated},
		{"cut in the arguments", `{"method":"tools/call","id":3,"params":{"name":"echo","arguments":{"s":"abc`,
			Body{Messages: []Message{{Method: "tools/call", Name: "echo", ID: "3"}}}, ErrTruncated},
		{"cut in the name", `{"method":"tools/call","params":{"name":"ech`, Body{Messages: []Message{{Method: "tools/call"}}}, ErrTruncated},
		{"cut before the method", `{"params":{"name":"echo"},"x":tr`, Body{}, ErrTruncated},
		{"cut in a number", `{"method":"ping","id":12`, Body{Messages: []Message{{Method: "ping"}}}, ErrTruncated},
		{"cut in a UTF-8 sequence", "{\"method\":\"ping\",\"x\":\"\xe2\x82", Body{Messages: []Message{{Method: "ping"}}}, ErrTruncated},
		{"cut in an escape", `{"method":"ping","x":"\u00`, Body{Messages: []Message{{Method: "ping"}}}, ErrTruncated},
		{"cut after a ref", `{"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"},"argument":{"value":"ab`,
			Body{Messages: []Message{{Method: "completion/complete", Ref: RefPrompt, Name: "p"}}}, ErrTruncated},
		{"cut in a ref, before its type", `{"method":"completion/complete","params":{"ref":{"uri":"file:///a","ty`,
			Body{Messages: []Message{{Method: "completion/complete"}}}, ErrTruncated},
		{"cut in a ref name", `{"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"gre`,
			Body{Messages: []Message{{Method: "completion/complete", Ref: RefPrompt}}}, ErrTruncated},
		{"cut in a batch", `[{"method":"ping"},{"method":"tools/call","params":{"name":"a`,
			Body{Batch: true, Len: 2, Messages: []Message{{Method: "ping"}, {Index: 1, Method: "tools/call"}}}, ErrTruncated},
		{"a wrong byte before the cut", `{"method":"ping"}}`, Body{Messages: []Message{{Method: "ping"}}}, ErrSyntax},
		{"a duplicate before the cut names nothing", `{"method":"tools/call","params":{"name":"a","name":"b"},"x":"`, Body{Messages: []Message{{Method: "tools/call"}}}, ErrTruncated},
		{"a duplicate method before the cut", `{"method":"tools/call","method":"ping","x":"`, Body{Messages: []Message{{Method: "ping"}}}, ErrAmbiguous},
		{"empty", ``, Body{}, ErrTruncated},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParsePrefix([]byte(c.prefix))
			if !errors.Is(err, c.err) {
				t.Fatalf("error: got %v, want %v", err, c.err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestLooseEqual(t *testing.T) {
	for _, c := range []struct {
		key, want string
		eq        bool
	}{
		{"name", "name", true}, {"Name", "name", true}, {"NAME", "name", true}, {"na_me", "name", true},
		{"-name-", "name", true}, {"paramſ", "params", true}, {"\u212Aey", "key", true}, {"nam", "name", false},
		{"names", "name", false}, {"", "name", false}, {"näme", "name", false}, {"arguments", "name", false},
		{"_meta", "method", false}, {"uri", "uri", true}, {"URİ", "uri", false}, // U+0130 does not simple-fold to i
	} {
		if got := looseEqual([]byte(c.key), c.want); got != c.eq {
			t.Errorf("looseEqual(%q, %q) = %v, want %v", c.key, c.want, got, c.eq)
		}
	}
}

// strictSeeds are bodies for the fuzz targets.
var strictSeeds = []string{
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"a":[1,2.5e3,true,null]}}}`,
	`[{"method":"resources/read","params":{"uri":"file:///x"}},{"method":"ping"},3]`,
	`{"method":"tools\/call","params":{"name":"\u00e9"}}`,
	`{"method":"tools/call","params":{"name":"a","Name":"b"}}`,
	`{"method":"prompts/get","params":{"name":"p"},"id":"x"}`,
	`{"method":"resources/subscribe","params":{"uri":"file:///log"},"id":2}`,
	`[{"method":"resources/unsubscribe","params":{"uri":"file:///log"}},{"method":"resources/subscribe","params":{"URI":"x"}}]`,
	`{"id":4,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"greet"},"argument":{"name":"a","value":"b"}}}`,
	`{"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///{path}","name":"x"},"argument":{"name":"path","value":""}}}`,
	`{"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a","Name":"b"}}}`,
	`{"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a","Type":"ref/resource","uri":"b"}}}`,
	`{"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a"},"Ref":{"type":"ref/prompt","name":"b"}}}`,
	`{"method":"resources/subscribe","params":{"uri":"a","Uri":"b"}}`,
	`{"method":"completion/complete","params":{"ref":{"type":"ref/tool","name":"a"}}}`,
	`{"a":-0.0e-0}`, `[]`, `{}`, `"x"`, `{"method":5}`, `{"id":1,"result":{"tools":[]}}`,
}

// FuzzParse: Parse never panics; on UTF-8 input it calls ErrSyntax exactly
// what encoding/json calls invalid; when it accepts a body, encoding/json
// reads the same messages, both into maps (exact keys) and into structs
// (case-insensitive keys), so no decoder reads another call; and no prefix
// of a body is ever read as complete, nor says other than the whole body.
func FuzzParse(f *testing.F) {
	for _, s := range strictSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Parse(b)
		if utf8.Valid(b) {
			if valid := json.Valid(b); errors.Is(err, ErrSyntax) == valid {
				t.Fatalf("Parse(%q): %v, json.Valid = %v", b, err, valid)
			}
		}
		if err != nil {
			for i := 0; i <= len(b); i += max(1, len(b)/64) {
				_, _ = ParsePrefix(b[:i]) // no panic
			}
			return
		}
		canon := got
		canon.Messages = append([]Message(nil), got.Messages...)
		for i := range canon.Messages {
			if canon.Messages[i].ID != "" {
				canon.Messages[i].ID = canonicalID(t, canon.Messages[i].ID)
			}
		}
		if want := decodeMaps(t, b); !reflect.DeepEqual(canon, want) {
			t.Fatalf("Parse(%q) = %+v, encoding/json reads %+v", b, got, want)
		}
		checkStructs(t, b, got)
		step := max(1, len(b)/64) // every cut of a small body, 64 of a large one
		for i := 0; i <= len(b); i += step {
			part, err := ParsePrefix(b[:i])
			if err == nil {
				t.Fatalf("ParsePrefix(%q) read a cut-off body as whole", b[:i])
			}
			if !errors.Is(err, ErrTruncated) {
				t.Fatalf("ParsePrefix(%q): %v, want ErrTruncated", b[:i], err)
			}
			if len(part.Messages) > len(got.Messages) {
				t.Fatalf("ParsePrefix(%q) found more messages than Parse", b[:i])
			}
			for k, m := range part.Messages {
				w := got.Messages[k]
				if m.Index != w.Index || m.Method != w.Method || m.Name != "" && m.Name != w.Name || m.Ref != 0 && m.Ref != w.Ref {
					t.Fatalf("ParsePrefix(%q) = %+v, but the whole body says %+v", b[:i], m, w)
				}
			}
		}
	})
}

// decodeMaps reads b with encoding/json into maps, as Parse should.
func decodeMaps(t *testing.T, b []byte) Body {
	var v any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // 1e700 is valid JSON
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("encoding/json refused what Parse accepted: %q: %v", b, err)
	}
	msg := func(i int, v any) (Message, bool) {
		o, ok := v.(map[string]any)
		if !ok {
			return Message{}, false
		}
		m := Message{Index: i}
		if m.Method, ok = o["method"].(string); !ok {
			return Message{}, false
		}
		if p, ok := o["params"].(map[string]any); ok {
			switch key := nameKey(m.Method); key {
			case "name", "uri":
				m.Name, _ = p[key].(string)
			case "ref":
				ref, _ := p["ref"].(map[string]any)
				switch typ, _ := ref["type"].(string); typ {
				case "ref/prompt":
					m.Ref = RefPrompt
					m.Name, _ = ref["name"].(string)
				case "ref/resource":
					m.Ref = RefResource
					m.Name, _ = ref["uri"].(string)
				}
			}
		}
		switch id := o["id"].(type) {
		case string, json.Number:
			raw, _ := json.Marshal(id)
			m.ID = string(raw)
		}
		return m, true
	}
	var want Body
	switch v := v.(type) {
	case map[string]any:
		if m, ok := msg(0, v); ok {
			want.Messages = append(want.Messages, m)
		}
	case []any:
		want.Batch, want.Len = true, len(v)
		for i, e := range v {
			if m, ok := msg(i, e); ok {
				want.Messages = append(want.Messages, m)
			}
		}
	}
	// IDs: compare decoded values, as the raw text may escape differently.
	for i := range want.Messages {
		if want.Messages[i].ID != "" {
			want.Messages[i].ID = canonicalID(t, want.Messages[i].ID)
		}
	}
	return want
}

func canonicalID(t *testing.T, raw string) string {
	var v any
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("id %q: %v", raw, err)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

// checkStructs decodes b into structs, whose keys encoding/json matches
// case-insensitively (last one wins), and checks that it reads got's calls.
// Each level is decoded on its own (into json.RawMessage fields), so a key
// of the wrong type that names nothing for the method does not stop the
// check.
func checkStructs(t *testing.T, b []byte, got Body) {
	type msg struct {
		Method string          `json:"method"`
		Params json.RawMessage `json:"params"`
	}
	type keys struct { // of params, and of params.ref
		Type json.RawMessage `json:"type"`
		Name json.RawMessage `json:"name"`
		URI  json.RawMessage `json:"uri"`
		Ref  json.RawMessage `json:"ref"`
	}
	str := func(raw json.RawMessage) string {
		var s string
		_ = json.Unmarshal(raw, &s)
		return s
	}
	named := func(m msg) (Ref, string) {
		var p, ref keys
		_ = json.Unmarshal(m.Params, &p)
		switch nameKey(m.Method) {
		case "name":
			return 0, str(p.Name)
		case "uri":
			return 0, str(p.URI)
		case "ref":
			_ = json.Unmarshal(p.Ref, &ref)
			r := refOf(str(ref.Type))
			if r == RefResource {
				return r, str(ref.URI)
			}
			return r, str(ref.Name)
		}
		return 0, ""
	}
	check := func(raw []byte, w Message) {
		var m msg
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("encoding/json cannot read %q into a struct: %v; Parse reads %+v", raw, err, w)
		}
		ref, name := named(m)
		if m.Method != w.Method || ref != w.Ref || name != w.Name {
			t.Fatalf("encoding/json into a struct reads %q as %s %v %q, Parse as %+v", raw, m.Method, ref, name, w)
		}
	}
	if got.Batch {
		var ms []json.RawMessage
		if err := json.Unmarshal(b, &ms); err != nil {
			t.Fatalf("encoding/json cannot read the batch %q: %v", b, err)
		}
		for _, w := range got.Messages {
			check(ms[w.Index], w)
		}
		return
	}
	if len(got.Messages) == 1 {
		check(b, got.Messages[0])
	}
}
