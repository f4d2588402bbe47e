package mcp

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxDepth bounds the nesting of arrays and objects, as encoding/json does:
// a body nested deeper is ErrSyntax.
const MaxDepth = 10000

// Parse reads body, the whole of a POST body: a single JSON-RPC message or
// a batch (JSON-RPC 2.0 §4, §6). On an error it returns what it read before
// the error, for a log line; a decision must not use it.
func Parse(body []byte) (Body, error) { return parse(body, false) }

// ParsePrefix reads prefix, the first bytes of a longer body (one cut off
// by a size limit). It returns what the prefix says, including a message
// whose object is cut off, and an error: one wrapping ErrTruncated when
// every byte of the prefix was right, another when one was wrong. What it
// returns is never the whole truth (a later key may repeat or change it),
// so it may be logged but not decided on.
func ParsePrefix(prefix []byte) (Body, error) { return parse(prefix, true) }

func parse(b []byte, prefix bool) (Body, error) {
	p := parser{b: b, prefix: prefix}
	var body Body
	p.ws()
	switch {
	case p.i >= len(b):
		p.end()
	case b[p.i] == '[':
		body.Batch = true
		p.batch(&body)
	case b[p.i] == '{':
		if m, ok := p.message(0, 1); ok {
			body.Messages = append(body.Messages, m)
		}
	default:
		p.skip(0)
	}
	if p.err == nil {
		p.ws()
		switch {
		case p.i < len(b):
			p.fail(ErrSyntax, "data after the JSON value")
		case prefix:
			p.end() // the body goes on past the prefix
		}
	}
	if err := p.result(); err != nil {
		return body, fmt.Errorf("read mcp body: %w", err)
	}
	return body, nil
}

// parser is a strict JSON reader (RFC 8259) over a byte slice. It allocates
// only the strings it returns.
type parser struct {
	b      []byte
	i      int
	prefix bool  // b is the start of a longer body: running out is ErrTruncated
	err    error // the first ErrSyntax or ErrTruncated; nothing is read after it
	bad    error // the first ErrAmbiguous or ErrInvalid; reading goes on
}

// fail records an error that stops reading (ErrSyntax, ErrTruncated).
func (p *parser) fail(kind error, what string) {
	if p.err == nil {
		p.err = fmt.Errorf("byte %d: %s: %w", p.i, what, kind)
	}
}

// flag records an error of meaning (ErrAmbiguous, ErrInvalid); reading goes
// on, so that a body that is not JSON is always ErrSyntax.
func (p *parser) flag(kind error, what string) {
	if p.bad == nil {
		p.bad = fmt.Errorf("byte %d: %s: %w", p.i, what, kind)
	}
}

// result returns the error to report: not JSON first, then an error of
// meaning, then a body cut off.
func (p *parser) result() error {
	switch {
	case p.err != nil && !errors.Is(p.err, ErrTruncated):
		return p.err
	case p.bad != nil:
		return p.bad
	}
	return p.err
}

// end records that the input ended inside a value.
func (p *parser) end() {
	p.i = len(p.b)
	if p.prefix {
		p.fail(ErrTruncated, "body cut off by the size limit")
		return
	}
	p.fail(ErrSyntax, "unexpected end of input")
}

func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) peek(c byte) bool { return p.i < len(p.b) && p.b[p.i] == c }

// batch reads the array at p.i, each element a message.
func (p *parser) batch(body *Body) {
	p.i++ // '['
	p.ws()
	if p.peek(']') {
		p.i++
		return
	}
	for {
		p.ws()
		if p.i >= len(p.b) {
			p.end()
			return
		}
		index := body.Len
		body.Len++
		if p.b[p.i] == '{' {
			if m, ok := p.message(index, 2); ok {
				body.Messages = append(body.Messages, m)
			}
		} else {
			p.skip(1)
		}
		if p.err != nil {
			return
		}
		if !p.next(']', "batch") {
			return
		}
	}
}

// next reads what follows a member or element: true after a comma, false
// after the closing byte (or an error).
func (p *parser) next(closing byte, what string) bool {
	p.ws()
	switch {
	case p.i >= len(p.b):
		p.end()
	case p.b[p.i] == ',':
		p.i++
		return true
	case p.b[p.i] == closing:
		p.i++
	default:
		p.fail(ErrSyntax, "expected , or "+string(closing)+" in "+what)
	}
	return false
}

// object reads the object at p.i ('{'), at nesting depth (counting the
// object itself), calling member with each key and p.i at its value; member
// reads the value.
func (p *parser) object(depth int, member func(key []byte, esc bool)) {
	if depth > MaxDepth {
		p.fail(ErrSyntax, "nested too deeply")
		return
	}
	p.i++ // '{'
	p.ws()
	if p.peek('}') {
		p.i++
		return
	}
	for {
		key, esc, ok := p.key()
		if !ok {
			return
		}
		member(key, esc)
		if p.err != nil || !p.next('}', "object") {
			return
		}
	}
}

// key reads `"key" :` and the white space after it.
func (p *parser) key() (raw []byte, esc, ok bool) {
	p.ws()
	if p.i >= len(p.b) {
		p.end()
		return nil, false, false
	}
	if p.b[p.i] != '"' {
		p.fail(ErrSyntax, "expected a key")
		return nil, false, false
	}
	if raw, esc, ok = p.str(); !ok {
		return nil, false, false
	}
	p.ws()
	if p.i >= len(p.b) {
		p.end()
		return nil, false, false
	}
	if p.b[p.i] != ':' {
		p.fail(ErrSyntax, "expected :")
		return nil, false, false
	}
	p.i++
	p.ws()
	if p.i >= len(p.b) {
		p.end()
		return nil, false, false
	}
	return raw, esc, true
}

// field is what an object (params, params.ref) says of one key that can
// name a call.
type field struct {
	count   int    // exact occurrences
	variant bool   // a variant spelling was present
	value   string // the last string value
	str     bool   // the last value was a string, decoded without a lone surrogate
}

// reference is what a params object says of its ref key (that of a
// completion/complete), and what the last ref object says of its type, name
// and uri.
type reference struct {
	count          int  // exact occurrences of ref
	variant        bool // a variant spelling of ref was present
	object         bool // the last value was an object
	typ, name, uri field
}

// message reads the object at p.i as a JSON-RPC message at nesting depth.
// ok: the object has a string method, so it is a request or a notification;
// also when the object is cut off, m then holds what came before the end.
func (p *parser) message(index, depth int) (m Message, ok bool) {
	m.Index = index
	var seenMethod, seenParams, paramsObject bool
	var name, uri field
	var ref reference
	p.object(depth, func(key []byte, esc bool) {
		k := keyOf(key, esc)
		switch {
		case string(k) == "method":
			if seenMethod {
				p.flag(ErrAmbiguous, `"method" twice`)
			}
			seenMethod = true
			if !p.peek('"') {
				p.flag(ErrInvalid, "method is not a string")
				p.skip(depth)
				return
			}
			raw, esc, sok := p.str()
			if !sok {
				return
			}
			if m.Method, sok = methodOf(raw, esc); !sok {
				p.flag(ErrInvalid, "method holds a lone surrogate")
			}
			ok = true
		case string(k) == "params":
			if seenParams {
				p.flag(ErrAmbiguous, `"params" twice`)
			}
			seenParams = true
			if !p.peek('{') {
				p.skip(depth)
				return
			}
			paramsObject = true
			p.object(depth+1, func(key []byte, esc bool) {
				k := keyOf(key, esc)
				switch {
				case string(k) == "name":
					p.field(&name, depth+1)
				case string(k) == "uri":
					p.field(&uri, depth+1)
				case string(k) == "ref":
					p.ref(&ref, depth+1)
				default:
					name.variant = name.variant || looseEqual(k, "name")
					uri.variant = uri.variant || looseEqual(k, "uri")
					ref.variant = ref.variant || looseEqual(k, "ref")
					p.skip(depth + 1)
				}
			})
		case string(k) == "id":
			if p.peek('"') || p.peek('-') || p.i < len(p.b) && '0' <= p.b[p.i] && p.b[p.i] <= '9' {
				start := p.i
				p.skip(depth)
				if p.err == nil {
					m.ID = string(p.b[start:p.i])
				}
				return
			}
			m.ID = ""
			p.skip(depth)
		case looseEqual(k, "method"), looseEqual(k, "params"):
			p.flag(ErrAmbiguous, fmt.Sprintf("key %q is a variant of method or params", k))
			p.skip(depth)
		default:
			p.skip(depth)
		}
	})

	switch nameKey(m.Method) {
	case "name":
		p.named(&m, &name, paramsObject, "params", "name")
	case "uri":
		p.named(&m, &uri, paramsObject, "params", "uri")
	case "ref":
		p.completion(&m, &ref, paramsObject)
	}
	return m, ok
}

// named sets m.Name from f, the key of the object at where (params or
// params.ref, found: it is an object) that names m's call, and flags what
// keeps it from naming the call for sure. A cut-off object names what it
// has, for the log, and is not checked.
func (p *parser) named(m *Message, f *field, found bool, where, key string) {
	if f.count == 1 && f.str {
		m.Name = f.value
	}
	if p.err != nil {
		return
	}
	switch {
	case f.count > 1:
		p.flag(ErrAmbiguous, `"`+key+`" twice in `+where)
	case f.variant:
		p.flag(ErrAmbiguous, `a variant of "`+key+`" in `+where)
	case !found:
		p.flag(ErrInvalid, m.Method+" without "+where)
	case f.count == 0:
		p.flag(ErrInvalid, m.Method+" without "+where+"."+key)
	case !f.str:
		p.flag(ErrInvalid, m.Method+" with "+where+"."+key+" not a string")
	}
}

// completion sets m.Ref and m.Name from r, the params.ref of a
// completion/complete: its type says whether its name (a prompt) or its uri
// (a resource) names the call. What keeps them from naming it for sure is
// flagged as named does, ref and its type first.
func (p *parser) completion(m *Message, r *reference, paramsObject bool) {
	if r.count == 1 && r.typ.count == 1 && r.typ.str {
		m.Ref = refOf(r.typ.value)
	}
	if p.err == nil {
		switch {
		case r.count > 1:
			p.flag(ErrAmbiguous, `"ref" twice in params`)
		case r.variant:
			p.flag(ErrAmbiguous, `a variant of "ref" in params`)
		case !paramsObject:
			p.flag(ErrInvalid, m.Method+" without params")
		case r.count == 0:
			p.flag(ErrInvalid, m.Method+" without params.ref")
		case !r.object:
			p.flag(ErrInvalid, m.Method+" with params.ref not an object")
		case r.typ.count > 1:
			p.flag(ErrAmbiguous, `"type" twice in params.ref`)
		case r.typ.variant:
			p.flag(ErrAmbiguous, `a variant of "type" in params.ref`)
		case m.Ref == 0:
			p.flag(ErrInvalid, m.Method+` without a params.ref.type of "ref/prompt" or "ref/resource"`)
		}
	}
	switch m.Ref {
	case RefPrompt:
		p.named(m, &r.name, r.object, "params.ref", "name")
	case RefResource:
		p.named(m, &r.uri, r.object, "params.ref", "uri")
	}
}

// refOf returns the Ref of a params.ref.type; 0 for another type.
func refOf(typ string) Ref {
	switch typ {
	case "ref/prompt":
		return RefPrompt
	case "ref/resource":
		return RefResource
	}
	return 0
}

// field reads the value of a key of params or params.ref that can name a
// call into f; depth is its object's.
func (p *parser) field(f *field, depth int) {
	f.count++
	f.value, f.str = "", false
	if !p.peek('"') {
		p.skip(depth)
		return
	}
	raw, esc, ok := p.str()
	if !ok {
		return
	}
	f.value, f.str = unquote(raw, esc, true)
}

// ref reads the value of a ref key of params into r: what an object says of
// its type, name and uri; depth is params'.
func (p *parser) ref(r *reference, depth int) {
	r.count++
	r.object = false
	r.typ, r.name, r.uri = field{}, field{}, field{}
	if !p.peek('{') {
		p.skip(depth)
		return
	}
	r.object = true
	p.object(depth+1, func(key []byte, esc bool) {
		k := keyOf(key, esc)
		switch {
		case string(k) == "type":
			p.field(&r.typ, depth+1)
		case string(k) == "name":
			p.field(&r.name, depth+1)
		case string(k) == "uri":
			p.field(&r.uri, depth+1)
		default:
			r.typ.variant = r.typ.variant || looseEqual(k, "type")
			r.name.variant = r.name.variant || looseEqual(k, "name")
			r.uri.variant = r.uri.variant || looseEqual(k, "uri")
			p.skip(depth + 1)
		}
	})
}

// keyOf returns a key's bytes: raw when it has no escapes (compared as
// string(k) == "...", which does not copy), decoded otherwise.
func keyOf(raw []byte, esc bool) []byte {
	if esc {
		s, _ := unquote(raw, true, false)
		return []byte(s)
	}
	return raw
}

// methodOf decodes a method, without an allocation for the methods of the
// MCP specification. ok is false for a lone surrogate.
func methodOf(raw []byte, esc bool) (string, bool) {
	if esc {
		return unquote(raw, true, true)
	}
	switch string(raw) {
	case "initialize":
		return "initialize", true
	case "ping":
		return "ping", true
	case "tools/list":
		return "tools/list", true
	case MethodToolsCall:
		return MethodToolsCall, true
	case "resources/list":
		return "resources/list", true
	case MethodResourcesRead:
		return MethodResourcesRead, true
	case "resources/templates/list":
		return "resources/templates/list", true
	case "prompts/list":
		return "prompts/list", true
	case MethodPromptsGet:
		return MethodPromptsGet, true
	case MethodCompletionComplete:
		return MethodCompletionComplete, true
	case MethodResourcesSubscribe:
		return MethodResourcesSubscribe, true
	case MethodResourcesUnsubscribe:
		return MethodResourcesUnsubscribe, true
	case "subscriptions/listen":
		return "subscriptions/listen", true
	case "notifications/initialized":
		return "notifications/initialized", true
	case "notifications/cancelled":
		return "notifications/cancelled", true
	}
	return string(raw), true
}

// looseEqual reports whether key would be taken for want (lower-case ASCII
// letters) by a decoder that matches names case-insensitively: Unicode
// simple case folding (encoding/json, which also maps "ſ" to "s" and the
// Kelvin sign to "k"), ignoring dashes and underscores as well
// (encoding/json/v2's case-insensitive matching). key == want is true too.
func looseEqual(key []byte, want string) bool {
	j := 0
	for _, r := range string(key) {
		if r == '_' || r == '-' {
			continue
		}
		if j >= len(want) || !foldsTo(r, rune(want[j])) {
			return false
		}
		j++
	}
	return j == len(want)
}

// foldsTo reports whether r is w or in w's simple case-folding orbit.
func foldsTo(r, w rune) bool {
	if r == w {
		return true
	}
	for f := unicode.SimpleFold(w); f != w; f = unicode.SimpleFold(f) {
		if f == r {
			return true
		}
	}
	return false
}

// str reads the string at p.i ('"') and returns its raw contents (between
// the quotes) and whether they hold escapes. It checks the escapes and that
// the contents are UTF-8 (RFC 8259 §7, §8.1).
func (p *parser) str() (raw []byte, esc, ok bool) {
	b := p.b
	start := p.i + 1
	i := start
	for {
		for i < len(b) && plain[b[i]] == '1' {
			i++
		}
		if i >= len(b) {
			p.end()
			return nil, false, false
		}
		switch c := b[i]; {
		case c == '"':
			p.i = i + 1
			return b[start:i], esc, true
		case c == '\\':
			esc = true
			p.i = i
			if !p.escape() {
				return nil, false, false
			}
			i = p.i
		case c < 0x20:
			p.i = i
			p.fail(ErrSyntax, "control character in a string")
			return nil, false, false
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size <= 1 {
				p.i = i
				if !utf8.FullRune(b[i:]) {
					p.end()
				} else {
					p.fail(ErrSyntax, "invalid UTF-8")
				}
				return nil, false, false
			}
			i += size
		}
	}
}

// plain marks, by byte, what a string holds as is: ASCII from space on but
// '"' and '\\' ('1'); the rest is a quote, an escape, a control byte (an
// error) or the start of a UTF-8 sequence ('0').
const plain = "0000000000000000000000000000000011011111111111111111111111111111" +
	"1111111111111111111111111111011111111111111111111111111111111111" +
	"0000000000000000000000000000000000000000000000000000000000000000" +
	"0000000000000000000000000000000000000000000000000000000000000000"

// escape reads the escape sequence at p.i ('\\').
func (p *parser) escape() bool {
	b := p.b
	if p.i+1 >= len(b) {
		p.end()
		return false
	}
	switch b[p.i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		p.i += 2
		return true
	case 'u':
		for k := p.i + 2; k < p.i+6; k++ {
			if k >= len(b) {
				p.end()
				return false
			}
			if !isHex(b[k]) {
				p.i = k
				p.fail(ErrSyntax, "invalid \\u escape")
				return false
			}
		}
		p.i += 6
		return true
	}
	p.i++
	p.fail(ErrSyntax, "invalid escape")
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// unquote decodes the raw contents of a string that str accepted. A lone
// surrogate escape becomes U+FFFD, as encoding/json decodes it, or makes ok
// false when strict (a name another decoder would read differently).
func unquote(raw []byte, esc, strict bool) (s string, ok bool) {
	if !esc {
		return string(raw), true
	}
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		switch raw[i+1] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := hex4(raw[i+2:])
			i += 6
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					r2 = hex4(raw[i+2:])
				}
				if d := utf16.DecodeRune(r, r2); d != unicode.ReplacementChar {
					r = d
					i += 6
				} else {
					if strict {
						return "", false
					}
					r = unicode.ReplacementChar
				}
			}
			out = utf8.AppendRune(out, r)
			continue
		default: // '"', '\\', '/'
			out = append(out, raw[i+1])
		}
		i += 2
	}
	return string(out), true
}

// hex4 decodes four hex digits that str checked.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c <= 'F':
			c -= 'A' - 10
		default:
			c -= 'a' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// skip reads any one value at p.i, whose container is at nesting depth,
// iteratively: nesting costs a byte of stack per level, not a Go frame.
func (p *parser) skip(depth int) {
	var inline [32]byte
	stack := inline[:0] // '{' or '[' per open container
	for p.err == nil {
		// A value.
		p.ws()
		if p.i >= len(p.b) {
			p.end()
			return
		}
		switch c := p.b[p.i]; c {
		case '{', '[':
			if depth+len(stack)+1 > MaxDepth {
				p.fail(ErrSyntax, "nested too deeply")
				return
			}
			p.i++
			p.ws()
			if c == '{' && p.peek('}') || c == '[' && p.peek(']') {
				p.i++
				break
			}
			stack = append(stack, c)
			if c == '{' {
				p.key()
			}
			continue
		case '"':
			p.str()
		case 't':
			p.literal("true")
		case 'f':
			p.literal("false")
		case 'n':
			p.literal("null")
		default:
			p.number()
		}
		// After a value: close containers, or go on to the next member.
		for p.err == nil {
			if len(stack) == 0 {
				return
			}
			top := stack[len(stack)-1]
			closing := byte(']')
			if top == '{' {
				closing = '}'
			}
			if p.next(closing, "a value") {
				if top == '{' {
					p.key()
				}
				break
			}
			stack = stack[:len(stack)-1]
		}
	}
}

func (p *parser) literal(lit string) {
	rest := p.b[p.i:]
	if len(rest) < len(lit) {
		if string(rest) == lit[:len(rest)] {
			p.end()
			return
		}
		p.fail(ErrSyntax, "invalid literal")
		return
	}
	if string(rest[:len(lit)]) != lit {
		p.fail(ErrSyntax, "invalid literal")
		return
	}
	p.i += len(lit)
}

// number reads an RFC 8259 §6 number. A number that reaches the end of a
// prefix is cut off: more digits may follow.
func (p *parser) number() {
	digits := func() int {
		n := 0
		for p.i < len(p.b) && '0' <= p.b[p.i] && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	need := func() bool { // a digit must come
		if p.i >= len(p.b) {
			p.end()
			return false
		}
		if digits() == 0 {
			p.fail(ErrSyntax, "invalid number")
			return false
		}
		return true
	}
	if p.peek('-') {
		p.i++
	}
	switch {
	case p.i >= len(p.b):
		p.end()
		return
	case p.b[p.i] == '0':
		p.i++
	case '1' <= p.b[p.i] && p.b[p.i] <= '9':
		digits()
	default:
		p.fail(ErrSyntax, "invalid value")
		return
	}
	if p.peek('.') {
		p.i++
		if !need() {
			return
		}
	}
	if p.peek('e') || p.peek('E') {
		p.i++
		if p.peek('+') || p.peek('-') {
			p.i++
		}
		if !need() {
			return
		}
	}
	if p.prefix && p.i >= len(p.b) {
		p.end()
	}
}
