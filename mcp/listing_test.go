package mcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// keepNoSecret keeps every entry whose name does not hold "secret".
func keepNoSecret(_ List, name string) bool { return !strings.Contains(name, "secret") }

func TestFilterList(t *testing.T) {
	pretty := `{
  "jsonrpc": "2.0",
  "id": 7,
  "result": {
    "tools": [
      {"name": "secret_a", "inputSchema": {"type": "object"}},
      {"name": "echo", "description": "say \"it\" back", "inputSchema": {"type": "object", "properties": {"name": {"type": "string"}}}},
      {"name": "secret_b"},
      {"name": "add"},
      {"name": "secret_c"}
    ],
    "nextCursor": "c2"
  }
}`
	prettyWant := `{
  "jsonrpc": "2.0",
  "id": 7,
  "result": {
    "tools": [
      {"name": "echo", "description": "say \"it\" back", "inputSchema": {"type": "object", "properties": {"name": {"type": "string"}}}},
      {"name": "add"}
    ],
    "nextCursor": "c2"
  }
}`
	for _, c := range []struct {
		name  string
		lists List
		body  string
		want  string
	}{
		{"pretty JSON keeps its layout", ListTools, pretty, prettyWant},
		{"compact", ListTools, `{"result":{"tools":[{"name":"a"},{"name":"secret"},{"name":"b"}]},"jsonrpc":"2.0","id":1}`,
			`{"result":{"tools":[{"name":"a"},{"name":"b"}]},"jsonrpc":"2.0","id":1}`},
		{"the first entries dropped", ListTools, `{"result":{"tools":[ {"name":"secret1"} , {"name":"secret2"},{"name":"b"} ]}}`,
			`{"result":{"tools":[ {"name":"b"} ]}}`},
		{"every entry dropped", ListTools, `{"result":{"tools":[ {"name":"secret1"}, {"name":"secret2"} ]}}`,
			`{"result":{"tools":[  ]}}`},
		{"entries that cannot be named are dropped", ListTools,
			`{"result":{"tools":[{"name":"a"},{"title":"no name"},{"name":5},"x",{"name":"b","Name":"secret"},{"name":"c","name":"d"},{"name":"e"}]}}`,
			`{"result":{"tools":[{"name":"a"},{"name":"e"}]}}`},
		{"resources by uri", ListResources, `{"result":{"resources":[{"uri":"file:///secret","name":"a"},{"uri":"file:///ok","name":"secret"}]}}`,
			`{"result":{"resources":[{"uri":"file:///ok","name":"secret"}]}}`},
		{"prompts", ListPrompts, `{"result":{"prompts":[{"name":"p"},{"name":"secret"}]}}`, `{"result":{"prompts":[{"name":"p"}]}}`},
		{"only the lists asked for", ListTools, `{"result":{"prompts":[{"name":"secret"}],"tools":[{"name":"secret"}]}}`,
			`{"result":{"prompts":[{"name":"secret"}],"tools":[]}}`},
		{"a batch of responses", ListTools | ListPrompts,
			`[{"id":1,"result":{"tools":[{"name":"secret"},{"name":"t"}]}}, {"id":2,"result":{"prompts":[{"name":"p"},{"name":"secret"}]}}, {"id":3,"error":{"code":1,"message":"m"}}]`,
			`[{"id":1,"result":{"tools":[{"name":"t"}]}}, {"id":2,"result":{"prompts":[{"name":"p"}]}}, {"id":3,"error":{"code":1,"message":"m"}}]`},
		{"a deeper tools key is not a listing", ListTools, `{"result":{"x":{"tools":[{"name":"secret"}]}}}`, `{"result":{"x":{"tools":[{"name":"secret"}]}}}`},
		{"an error response", ListTools, `{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}`, `{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}`},
		{"escaped names are decoded", ListTools, `{"result":{"tools":[{"name":"\u0073ecret"},{"name":"ok"}]}}`, `{"result":{"tools":[{"name":"ok"}]}}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := FilterList([]byte(c.body), c.lists, keepNoSecret)
			if err != nil {
				t.Fatalf("FilterList: %v", err)
			}
			if string(got) != c.want {
				t.Errorf("got\n%s\nwant\n%s", got, c.want)
			}
		})
	}
}

func TestFilterListUnchangedIsTheSameBytes(t *testing.T) {
	body := []byte(`{"result":{"tools":[{"name":"a"},{"name":"b"}]}}`)
	got, err := FilterList(body, ListTools, keepNoSecret)
	if err != nil || &got[0] != &body[0] || len(got) != len(body) {
		t.Errorf("nothing dropped: got a copy or an error (%v)", err)
	}
}

func TestFilterListRefuses(t *testing.T) {
	for _, c := range []struct {
		name, body string
		want       error
	}{
		{"tools twice: a client reads the last", `{"result":{"tools":[{"name":"a"}],"tools":[{"name":"secret"}]}}`, ErrAmbiguous},
		{"a case variant of tools", `{"result":{"tools":[],"Tools":[{"name":"secret"}]}}`, ErrAmbiguous},
		{"result twice", `{"result":{"tools":[]},"result":{"tools":[{"name":"secret"}]}}`, ErrAmbiguous},
		{"a variant of result", `{"result":{"tools":[]},"RESULT":{"tools":[{"name":"secret"}]}}`, ErrAmbiguous},
		{"not JSON", `{"result":{"tools":[{"name":"a"},]}}`, ErrSyntax},
		{"invalid UTF-8", "{\"result\":{\"tools\":[{\"name\":\"\xff\"}]}}", ErrSyntax},
		{"cut off", `{"result":{"tools":[{"name":"a"}`, ErrSyntax},
		{"empty", ``, ErrSyntax},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := FilterList([]byte(c.body), ListTools, keepNoSecret); !errors.Is(err, c.want) {
				t.Errorf("got %v, want %v", err, c.want)
			}
		})
	}
}

// FuzzFilterList: on any input FilterList does not panic; what it returns
// is JSON that decodes to the input without the entries keep refuses.
func FuzzFilterList(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"secret"},{"name":"b"}],"nextCursor":"x"}}`,
		`[{"result":{"resources":[{"uri":"secret"},{"uri":"u"}]}},{"result":{"prompts":[ {"name":"secret"} , 3 ]}}]`,
		`{"result":{"tools":[ ]}}`, `{"result":5}`, `[]`, `{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		lists := ListTools | ListResources | ListPrompts
		got, err := FilterList(b, lists, keepNoSecret)
		if err != nil {
			return
		}
		var in, out any
		decode := func(b []byte, v *any) error {
			d := json.NewDecoder(bytes.NewReader(b))
			d.UseNumber() // 1e700 is JSON
			return d.Decode(v)
		}
		if decode(b, &in) != nil {
			t.Fatalf("FilterList accepted %q, which encoding/json refuses", b)
		}
		if err := decode(got, &out); err != nil {
			t.Fatalf("FilterList(%q) = %q, not JSON: %v", b, got, err)
		}
		if want := filterValue(in); !reflect.DeepEqual(out, want) {
			t.Fatalf("FilterList(%q) = %q, want the value %v", b, got, want)
		}
	})
}

// filterValue is FilterList on a decoded value.
func filterValue(v any) any {
	response := func(v any) any {
		o, ok := v.(map[string]any)
		if !ok {
			return v
		}
		r, ok := o["result"].(map[string]any)
		if !ok {
			return v
		}
		for _, k := range [][2]string{{"tools", "name"}, {"resources", "uri"}, {"prompts", "name"}} {
			arr, ok := r[k[0]].([]any)
			if !ok {
				continue
			}
			kept := []any{}
			for _, e := range arr {
				if eo, ok := e.(map[string]any); ok {
					if name, ok := eo[k[1]].(string); ok && keepNoSecret(0, name) {
						kept = append(kept, e)
					}
				}
			}
			r[k[0]] = kept
		}
		return v
	}
	if a, ok := v.([]any); ok {
		for i := range a {
			a[i] = response(a[i])
		}
		return a
	}
	return response(v)
}

func TestFilterEvents(t *testing.T) {
	listing := `{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"echo"},{"name":"secret"}]}}`
	filtered := `{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"echo"}]}}`
	progress := `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p","progress":1}}`
	for _, c := range []struct {
		name, in, want string
	}{
		{"LF, other events untouched",
			": keep-alive\n\nevent: message\nid: 1\ndata: " + progress + "\n\nid: 2\ndata: " + listing + "\nretry: 10\n\n",
			": keep-alive\n\nevent: message\nid: 1\ndata: " + progress + "\n\nid: 2\ndata: " + filtered + "\nretry: 10\n\n"},
		{"CRLF", "event: message\r\ndata:" + listing + "\r\n\r\n", "event: message\r\ndata: " + filtered + "\r\n\r\n"},
		{"CR alone", "data: " + listing + "\r\r", "data: " + filtered + "\r\r"},
		{"data over several lines", "data: {\"jsonrpc\":\"2.0\",\"id\":2,\ndata: \"result\":{\"tools\":[{\"name\":\"echo\"},\ndata: {\"name\":\"secret\"}]}}\n\n",
			"data: {\"jsonrpc\":\"2.0\",\"id\":2,\ndata: \"result\":{\"tools\":[{\"name\":\"echo\"}]}}\n\n"},
		{"another event type is not a message", "event: other\ndata: " + listing + "\n\n", "event: other\ndata: " + listing + "\n\n"},
		{"the last event without its blank line", "data: " + listing, "data: " + filtered},
		{"a BOM first", "\xef\xbb\xbfdata: " + listing + "\n\n", "\xef\xbb\xbfdata: " + filtered + "\n\n"},
		{"empty data", "data:\n\n", "data:\n\n"},
		{"no events", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, oneByte := range []bool{false, true} {
				var src = strings.NewReader(c.in)
				var out bytes.Buffer
				var err error
				if oneByte {
					err = FilterEvents(&out, iotest.OneByteReader(src), 1<<20, ListTools, keepNoSecret)
				} else {
					err = FilterEvents(&out, src, 1<<20, ListTools, keepNoSecret)
				}
				if err != nil {
					t.Fatalf("FilterEvents (one byte at a time: %v): %v", oneByte, err)
				}
				if out.String() != c.want {
					t.Errorf("one byte at a time: %v\ngot  %q\nwant %q", oneByte, out.String(), c.want)
				}
			}
		})
	}
}

func TestFilterEventsErrors(t *testing.T) {
	first := "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n"
	big := "data: {\"result\":{\"tools\":[" + strings.Repeat(`{"name":"x"},`, 200) + `{"name":"y"}]}}` + "\n\n"
	for _, c := range []struct {
		name, in string
		want     error
	}{
		{"an event over the cap", first + big, ErrTooLarge},
		{"data that is not JSON", first + "data: {oops\n\n", ErrSyntax},
		{"an ambiguous listing", first + `data: {"result":{"tools":[],"tools":[{"name":"secret"}]}}` + "\n\n", ErrAmbiguous},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			err := FilterEvents(rec, strings.NewReader(c.in), 1000, ListTools, keepNoSecret)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if got := rec.Body.String(); got != first {
				t.Errorf("written before the error: got %q, want the first event", got)
			}
			if !rec.Flushed {
				t.Error("the first event was not flushed")
			}
		})
	}
}

// FuzzFilterEvents: on any stream FilterEvents does not panic, reads the
// same whether the bytes come at once or one at a time, and when no
// listing is filtered it changes no byte.
func FuzzFilterEvents(f *testing.F) {
	for _, s := range []string{
		"event: message\nid: 1\ndata: {\"result\":{\"tools\":[{\"name\":\"secret\"},{\"name\":\"a\"}]}}\n\n: c\n\n",
		"data: {\"result\":\r\ndata: {\"tools\":[{\"name\":\"secret\"}]}}\r\r\n\r\n", "\xef\xbb\xbfdata: 1\r", "data\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var all, one, kept bytes.Buffer
		err := FilterEvents(&all, bytes.NewReader(b), 1<<16, ListTools, keepNoSecret)
		err1 := FilterEvents(&one, iotest.OneByteReader(bytes.NewReader(b)), 1<<16, ListTools, keepNoSecret)
		if (err == nil) != (err1 == nil) || all.String() != one.String() {
			t.Fatalf("%q: at once %q (%v), one byte at a time %q (%v)", b, all.String(), err, one.String(), err1)
		}
		if err := FilterEvents(&kept, bytes.NewReader(b), 1<<16, 0, keepNoSecret); err == nil && kept.String() != string(b) {
			t.Fatalf("%q: filtering no listing gave %q", b, kept.String())
		}
		read, errRead := io.ReadAll(NewEventFilter(iotest.OneByteReader(bytes.NewReader(b)), 1<<16, ListTools, keepNoSecret))
		if (err == nil) != (errRead == nil) || string(read) != all.String() {
			t.Fatalf("%q: FilterEvents %q (%v), EventFilter %q (%v)", b, all.String(), err, read, errRead)
		}
	})
}

// TestEventFilterStreams: Read returns an event as soon as it is whole,
// without waiting for the next one, so a stream stays a stream.
func TestEventFilterStreams(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	f := NewEventFilter(pr, 1<<20, ListTools, keepNoSecret)
	got := make(chan string)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			if n > 0 {
				got <- string(buf[:n])
			}
			if err != nil {
				close(got)
				return
			}
		}
	}()
	for _, c := range []struct{ in, want string }{
		{"data: {\"result\":{\"tools\":[{\"name\":\"secret\"},{\"name\":\"a\"}]}}\n\n", "data: {\"result\":{\"tools\":[{\"name\":\"a\"}]}}\n\n"},
		{": keep-alive\n\n", ": keep-alive\n\n"},
	} {
		if _, err := io.WriteString(pw, c.in); err != nil {
			t.Fatal(err)
		}
		select {
		case out := <-got:
			if out != c.want {
				t.Errorf("got %q, want %q", out, c.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the event %q was not returned before the next one was sent", c.in)
		}
	}
	pw.Close()
	if out, ok := <-got; ok {
		t.Errorf("after the end: got %q", out)
	}
}
