package mcp

import "fmt"

// List is a set of listings whose entries a filter may drop.
type List uint8

// The listings, each the result of a method: the array at result.<key>, its
// entries named by one string member.
const (
	ListTools     List = 1 << iota // tools/list: result.tools[].name
	ListResources                  // resources/list: result.resources[].uri
	ListPrompts                    // prompts/list: result.prompts[].name
)

// ListOf returns the listing a method asks for; 0 for other methods.
func ListOf(method string) List {
	switch method {
	case "tools/list":
		return ListTools
	case "resources/list":
		return ListResources
	case "prompts/list":
		return ListPrompts
	}
	return 0
}

// keys returns the result member and the entry member of a single list.
func (l List) keys() (array, name string) {
	switch l {
	case ListTools:
		return "tools", "name"
	case ListResources:
		return "resources", "uri"
	case ListPrompts:
		return "prompts", "name"
	}
	return "", ""
}

// Keep says whether the entry of list (a single List) named name stays.
type Keep func(list List, name string) bool

// FilterList drops entries from the listings of a JSON-RPC response body (a
// single response or a batch of them): in each response's result, the
// arrays of lists (a set: what the request asked for) lose the entries that
// keep refuses and the entries it cannot name (not an object, no string
// name or uri, or that key twice or in a variant spelling). Every other byte
// stays as it was: each array is spliced, every entry that stays keeps the
// separator and white space that came before it. When nothing is dropped
// body itself is returned.
//
// The body is read as Parse reads a request: not JSON is ErrSyntax; a result
// or listing key that appears twice or in a variant spelling is
// ErrAmbiguous, since a client could read either one.
func FilterList(body []byte, lists List, keep Keep) ([]byte, error) {
	f := filter{parser: parser{b: body}, lists: lists, keep: keep}
	f.ws()
	switch {
	case f.i >= len(body):
		f.end()
	case body[f.i] == '[':
		f.i++
		f.ws()
		if f.peek(']') {
			f.i++
			break
		}
		for {
			f.ws()
			if f.peek('{') {
				f.response(2)
			} else {
				f.skip(1)
			}
			if f.err != nil || !f.next(']', "batch") {
				break
			}
		}
	case body[f.i] == '{':
		f.response(1)
	default:
		f.skip(0)
	}
	if f.err == nil {
		f.ws()
		if f.i < len(body) {
			f.fail(ErrSyntax, "data after the JSON value")
		}
	}
	if err := f.result(); err != nil {
		return nil, fmt.Errorf("filter mcp listing: %w", err)
	}
	if len(f.cuts) == 0 {
		return body, nil
	}
	n := len(body)
	for _, c := range f.cuts {
		n -= c.end - c.start
	}
	out := make([]byte, 0, n)
	at := 0
	for _, c := range f.cuts {
		out = append(out, body[at:c.start]...)
		at = c.end
	}
	return append(out, body[at:]...), nil
}

// filter is a parser that records the byte ranges to cut out of a listing.
type filter struct {
	parser
	lists List
	keep  Keep
	cuts  []span // in order, not overlapping
}

type span struct{ start, end int }

// response reads a JSON-RPC response object at depth, filtering its result.
func (f *filter) response(depth int) {
	seen := false
	f.object(depth, func(key []byte, esc bool) {
		k := keyOf(key, esc)
		switch {
		case string(k) == "result":
			if seen {
				f.flag(ErrAmbiguous, `"result" twice`)
			}
			seen = true
			if !f.peek('{') {
				f.skip(depth)
				return
			}
			f.listings(depth + 1)
		case looseEqual(k, "result"):
			f.flag(ErrAmbiguous, fmt.Sprintf("key %q is a variant of result", k))
			f.skip(depth)
		default:
			f.skip(depth)
		}
	})
}

// listings reads a result object at depth, filtering the arrays of f.lists.
func (f *filter) listings(depth int) {
	var seen List
	f.object(depth, func(key []byte, esc bool) {
		k := keyOf(key, esc)
		for l := ListTools; l <= ListPrompts; l <<= 1 {
			if f.lists&l == 0 {
				continue
			}
			array, _ := l.keys()
			switch {
			case string(k) == array:
				if seen&l != 0 {
					f.flag(ErrAmbiguous, `"`+array+`" twice`)
				}
				seen |= l
				if !f.peek('[') {
					f.skip(depth)
					return
				}
				f.array(l, depth+1)
				return
			case looseEqual(k, array):
				f.flag(ErrAmbiguous, fmt.Sprintf("key %q is a variant of %s", k, array))
				f.skip(depth)
				return
			}
		}
		f.skip(depth)
	})
}

// array reads the listing at p.i ('['), at depth, and records the cuts that
// drop the entries keep refuses: everything before the first entry kept,
// everything between two kept entries but the separator before the second,
// everything after the last one.
func (f *filter) array(l List, depth int) {
	if depth > MaxDepth {
		f.fail(ErrSyntax, "nested too deeply")
		return
	}
	f.i++ // '['
	f.ws()
	if f.peek(']') {
		f.i++
		return
	}
	first := f.i   // start of the first entry
	lastKept := -1 // end of the last entry kept; -1: none yet
	prevEnd := -1  // end of the previous entry
	for {
		f.ws()
		start := f.i
		name, ok := f.entry(l, depth)
		if f.err != nil {
			return
		}
		end := f.i
		if ok && f.keep(l, name) {
			switch {
			case lastKept < 0 && start > first:
				f.cuts = append(f.cuts, span{first, start})
			case lastKept >= 0 && prevEnd > lastKept:
				f.cuts = append(f.cuts, span{lastKept, prevEnd})
			}
			lastKept = end
		}
		prevEnd = end
		if !f.next(']', "a listing") {
			break
		}
	}
	switch {
	case f.err != nil:
	case lastKept < 0:
		f.cuts = append(f.cuts, span{first, prevEnd})
	case prevEnd > lastKept:
		f.cuts = append(f.cuts, span{lastKept, prevEnd})
	}
}

// entry reads one entry of a listing at depth-1 and returns its name; ok is
// false when it cannot be named.
func (f *filter) entry(l List, depth int) (name string, ok bool) {
	if !f.peek('{') {
		f.skip(depth)
		return "", false
	}
	_, want := l.keys()
	var nf field
	f.object(depth+1, func(key []byte, esc bool) {
		k := keyOf(key, esc)
		switch {
		case string(k) == want:
			f.field(&nf, depth+1)
		case looseEqual(k, want):
			nf.variant = true
			f.skip(depth + 1)
		default:
			f.skip(depth + 1)
		}
	})
	return nf.value, nf.count == 1 && !nf.variant && nf.str
}
