package main

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// logfmtPairs reads the key=value pairs after "msg:" in a line of hclog's
// text format as a logfmt reader does: a value is either bare, up to the
// next space, or a double-quoted string in which a backslash escapes the
// next character.
func logfmtPairs(t *testing.T, line, msg string) [][2]string {
	t.Helper()
	_, rest, ok := strings.Cut(line, " "+msg+":")
	if !ok {
		t.Fatalf("no %q in %q", msg, line)
	}
	var pairs [][2]string
	for rest = strings.TrimLeft(rest, " "); rest != ""; rest = strings.TrimLeft(rest, " ") {
		key, after, ok := strings.Cut(rest, "=")
		if !ok {
			t.Fatalf("no = after %q in %q", rest, line)
		}
		var val string
		if strings.HasPrefix(after, `"`) {
			i := 1
			for i < len(after) && after[i] != '"' {
				if after[i] == '\\' {
					i++
				}
				i++
			}
			if i >= len(after) {
				t.Fatalf("unterminated value %q in %q", after, line)
			}
			quoted := after[:i+1]
			u, err := strconv.Unquote(quoted)
			if err != nil {
				u = quoted // what a reader makes of it
			}
			val, rest = u, after[i+1:]
		} else {
			val, rest, _ = strings.Cut(after, " ")
		}
		pairs = append(pairs, [2]string{key, val})
	}
	return pairs
}

// TestTextLogValuesStayValues: in the text format, a value a client
// chooses (a request path, a tool name, an error quoting it) is one value
// on its record's line to a logfmt reader, whatever backslashes, quotes and
// newlines it holds: it adds no key and no line. Other values are written
// as hclog writes them.
func TestTextLogValuesStayValues(t *testing.T) {
	for _, c := range []struct {
		name, value string
		bare        bool // written without quotes
	}{
		{"a path forging keys", `/a\" sub=root status=200 x=\"`, false},
		{"a trailing backslash", `/a\`, true},
		{"a backslash and a space", `x\ y`, false},
		{"escaped quotes only", `say "hi" sub=root`, false},
		{"a plain value", `/mcp`, true},
		{"control characters", "a\x1b[31m\\\r", false},
		{"a newline starting a record", "/m\n  | sub=root status=200", false},
		{"a newline alone", "two\nlines", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf testkit.LogBuffer
			lg := newLogger(LogConfig{Format: "text", Level: hclog.Info}, &buf)
			log := lg.root.Named("gate").With("request_id", `id\"x=1`)
			log.Info("rejected", "status", 400, "path", c.value, "error", errors.New("bad "+c.value), "sub", "alice")
			log.Log(hclog.Warn, "again", "path", c.value)
			lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
			if len(lines) != 2 {
				t.Fatalf("got %d lines, want 2: %q", len(lines), buf.String())
			}
			got := logfmtPairs(t, lines[0], "rejected")
			want := [][2]string{{"request_id", `id\"x=1`}, {"status", "400"}, {"path", c.value}, {"error", "bad " + c.value}, {"sub", "alice"}}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("pairs read from %q:\ngot  %q\nwant %q", lines[0], got, want)
			}
			if got, want := logfmtPairs(t, lines[1], "again"), [][2]string{{"request_id", `id\"x=1`}, {"path", c.value}}; !reflect.DeepEqual(got, want) {
				t.Errorf("pairs read from %q:\ngot  %q\nwant %q", lines[1], got, want)
			}
			if c.bare && !strings.Contains(lines[0], " path="+c.value+" ") {
				t.Errorf("line %q: want path=%s bare, as hclog writes it", lines[0], c.value)
			}
		})
	}
}
