package gate

import (
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
)

// The "proxied" audit line: one per proxied request, a third of the
// gateway's CPU per request when hclog builds it (a map per line, encoded
// by encoding/json through reflection). With Config.AuditOutput the gate
// writes the same JSON line itself, appended into a pooled buffer; without
// it the line goes through Logger as before (text format, tests).

// proxiedLine is what the "proxied" line says.
type proxiedLine struct {
	sub, email, method, path string
	status                   int
	bytes                    int64
	duration                 time.Duration
	requestID                string
	client                   netip.Addr
	rule                     string // the deciding MCP_POLICY rule; "" when none decided
	info                     *mcpInfo
}

// args are the line's keys and values for Logger, in the order the text
// format shows them.
func (l *proxiedLine) args() []any {
	a := make([]any, 0, 28)
	a = append(a, "sub", l.sub, "email", l.email, "method", l.method, "path", l.path,
		"status", l.status, "bytes", l.bytes, "duration", l.duration, "request_id", l.requestID,
		"client_ip", l.client.String())
	if l.rule != "" {
		a = append(a, "rule", l.rule)
	}
	return l.info.args(a)
}

// appendJSON appends the line exactly as hclog's JSON format writes
// Logger.Info("proxied", l.args()...) at time t for a logger named module
// (no implied arguments, no caller, hclog.TimeFormatJSON): one JSON object
// whose keys are sorted, since hclog encodes a map, strings escaped as
// encoding/json escapes them (HTML characters included, hclog's default),
// numbers as integers (a duration in nanoseconds), then a newline.
// TestProxiedLineAsHclog and FuzzProxiedLine hold it to hclog's output.
func (l *proxiedLine) appendJSON(b []byte, t time.Time, module string) []byte {
	b = append(b, `{"@level":"info","@message":"proxied",`...)
	if module != "" {
		b = append(b, `"@module":`...)
		b = appendJSONString(b, module)
		b = append(b, ',')
	}
	b = append(b, `"@timestamp":"`...)
	b = t.AppendFormat(b, hclog.TimeFormatJSON) // digits, '-', ':', '.', 'T', 'Z', '+': nothing to escape
	b = append(b, `","bytes":`...)
	b = strconv.AppendInt(b, l.bytes, 10)
	b = append(b, `,"client_ip":`...)
	b = appendAddr(b, l.client)
	b = append(b, `,"duration":`...)
	b = strconv.AppendInt(b, int64(l.duration), 10)
	b = appendStringKey(b, `,"email":`, l.email)
	if l.info.batch > 0 {
		b = append(b, `,"mcp_batch":`...)
		b = strconv.AppendInt(b, int64(l.info.batch), 10)
	}
	b = appendStringKeyIfSet(b, `,"mcp_method":`, l.info.method)
	b = appendStringKeyIfSet(b, `,"mcp_tool":`, l.info.tool)
	b = appendStringKeyIfSet(b, `,"mcp_uri":`, l.info.uri)
	b = appendStringKey(b, `,"method":`, l.method)
	b = appendStringKey(b, `,"path":`, l.path)
	b = appendStringKey(b, `,"request_id":`, l.requestID)
	b = appendStringKeyIfSet(b, `,"rule":`, l.rule)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(l.status), 10)
	b = appendStringKey(b, `,"sub":`, l.sub)
	return append(b, "}\n"...)
}

// appendStringKey appends key (`,"name":`) and v as a JSON string.
func appendStringKey(b []byte, key, v string) []byte {
	return appendJSONString(append(b, key...), v)
}

// appendStringKeyIfSet appends key and v unless v is empty: the line's
// optional keys, which hclog's map has only when logged.
func appendStringKeyIfSet(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	return appendStringKey(b, key, v)
}

// appendAddr appends a as a JSON string of a.String(), without its
// allocation when a has no zone (then it is hex digits, '.' and ':').
func appendAddr(b []byte, a netip.Addr) []byte {
	if !a.IsValid() || a.Zone() != "" {
		return appendJSONString(b, a.String())
	}
	b = append(b, '"')
	b = a.AppendTo(b)
	return append(b, '"')
}

// appendJSONString appends s as encoding/json encodes a string with HTML
// escaping on (its default, and hclog's): `"` and `\` escaped with a
// backslash; \b, \f, \n, \r, \t; every other byte below 0x20, and <, > and
// &, as \u00XX; U+2028 and U+2029 as \u2028 and \u2029; each byte that is
// not part of valid UTF-8 as \ufffd. FuzzProxiedLine compares it with
// encoding/json.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0 // s[start:i] is still to be copied as it is
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// maxPooledLine bounds the buffers kept for audit lines: a line is a few
// hundred bytes, and one with a long escaped path is not kept.
const maxPooledLine = 4 << 10

// writeProxied writes l to Config.AuditOutput, as Logger would have at
// info: the logger's clock (time.Now) and name, one Write per line. A
// failed write is dropped, as hclog drops it.
func (g *gate) writeProxied(l *proxiedLine) {
	bp := g.lines.Get().(*[]byte)
	b := l.appendJSON((*bp)[:0], time.Now(), g.module)
	_, _ = g.auditOut.Write(b)
	if cap(b) <= maxPooledLine {
		*bp = b
		g.lines.Put(bp)
	}
}
