package main

import (
	"strings"

	"github.com/hashicorp/go-hclog"
)

// textLogger is the root logger in the text format (LOG_FORMAT=text, or
// stderr a terminal). hclog's text format puts a value that needs quoting
// between double quotes and escapes the quotes in it, but not its
// backslashes: a request path /a%5C%22%20sub=root (decoded /a\" sub=root)
// was written path="/a\\" sub=root", which a logfmt reader reads as
// path="/a\" and a key sub=root of the client's making. Any value a client
// chooses (a path, a tool name, a client_name, an email) could add keys to
// the line that way. And a value with a newline hclog writes over several
// lines, each after "  | ": a path /%0Asub=root%20status=200 made a line
// "  | sub=root status=200" of its own, which a collector that takes each
// line as a record (a container's log) reads as one with sub=root.
// textLogger hands hclog such values as hclog.Quote, which it writes with
// strconv.Quote: backslashes and newlines escaped, one quoted string on the
// line. Other values are written as hclog writes them, and the JSON format,
// where encoding/json escapes everything, is not wrapped.
type textLogger struct{ hclog.Logger }

func (l textLogger) Log(level hclog.Level, msg string, args ...any) {
	l.Logger.Log(level, msg, quoteBackslashes(args)...)
}
func (l textLogger) Trace(msg string, args ...any) { l.Logger.Trace(msg, quoteBackslashes(args)...) }
func (l textLogger) Debug(msg string, args ...any) { l.Logger.Debug(msg, quoteBackslashes(args)...) }
func (l textLogger) Info(msg string, args ...any)  { l.Logger.Info(msg, quoteBackslashes(args)...) }
func (l textLogger) Warn(msg string, args ...any)  { l.Logger.Warn(msg, quoteBackslashes(args)...) }
func (l textLogger) Error(msg string, args ...any) { l.Logger.Error(msg, quoteBackslashes(args)...) }

func (l textLogger) With(args ...any) hclog.Logger {
	return textLogger{l.Logger.With(quoteBackslashes(args)...)}
}
func (l textLogger) Named(name string) hclog.Logger { return textLogger{l.Logger.Named(name)} }
func (l textLogger) ResetNamed(name string) hclog.Logger {
	return textLogger{l.Logger.ResetNamed(name)}
}

// quoteBackslashes returns args with each value (every second element)
// that is a string or an error whose text holds a newline, or a backslash
// in a value hclog would quote, replaced by hclog.Quote of that text; args
// itself when there is none.
func quoteBackslashes(args []any) []any {
	var out []any
	for i := 1; i < len(args); i += 2 {
		var s string
		switch v := args[i].(type) {
		case string:
			s = v
		case error:
			s = v.Error()
		default:
			continue
		}
		if !strings.Contains(s, "\n") && !(strings.Contains(s, `\`) && quoted(s)) {
			continue
		}
		if out == nil {
			out = append([]any(nil), args...)
		}
		out[i] = hclog.Quote(s)
	}
	if out == nil {
		return args
	}
	return out
}

// quoted reports whether hclog's text format writes s between quotes: when
// a character of s is not one of '-' to '~' (its needsQuoting). A bare
// value ends at a space, and a reader takes its backslashes as they are.
func quoted(s string) bool {
	for _, r := range s {
		if r < '-' || r > '~' {
			return true
		}
	}
	return false
}
