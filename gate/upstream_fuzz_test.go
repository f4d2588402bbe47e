package gate

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// readAnswer reads the first answer in data as the gate's client does: its
// head, then its body to the end. mode bit 0: the request was HEAD; bit 1:
// the bytes arrive one at a time. It returns what it read and how many
// bytes of data that took.
func readAnswer(data []byte, mode uint8) (h responseHead, body []byte, used int, err error) {
	src := bytes.NewReader(data)
	var rd io.Reader = src
	if mode&2 != 0 {
		rd = iotest.OneByteReader(src)
	}
	c := &upstreamConn{rd: rd, pool: newBytePool()}
	c.reset()
	if err = c.readHead(mode&1 != 0); err != nil {
		return h, nil, 0, err
	}
	for {
		p, err := c.next(false)
		body = append(body, p...)
		if err == io.EOF {
			break
		}
		if err != nil {
			return h, nil, 0, err
		}
	}
	return c.head, body, len(data) - src.Len() - c.buffered(), nil
}

// FuzzUpstreamResponse holds the gate's reading of an upstream's answer to
// net/http's (http.ReadResponse) on the same bytes: whatever the gate
// accepts, Go reads too, with the same status, header fields and body, and,
// when the gate would use the connection again, ending at the same byte.
// The gate may refuse more (obsolete folding, duplicate Content-Length,
// bare LF, ...), never read an answer otherwise.
func FuzzUpstreamResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-A\r\n\r\n2;ext=1\r\nok\r\n0\r\nX-A: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n Content-Length: 3\r\n\r\nokk",
		"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
		"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n",
		"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 999 Custom\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
		"HTTP/2 200\r\n\r\n",
	} {
		for mode := range uint8(4) {
			f.Add([]byte(s), mode)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		h, body, used, err := readAnswer(data, mode)
		if err != nil {
			return // refused: stricter than net/http is allowed
		}
		req := &http.Request{Method: http.MethodGet}
		if mode&1 != 0 {
			req.Method = http.MethodHead
		}
		src := bytes.NewReader(data)
		br := bufio.NewReader(src)
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatalf("the gate read an answer net/http refuses (%v):\n%q", err, data)
		}
		goBody, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("the gate read a body net/http cannot (%v):\n%q", err, data)
		}
		if h.status != resp.StatusCode || h.minor != resp.ProtoMinor || resp.ProtoMajor != 1 {
			t.Fatalf("status: gate %d HTTP/1.%d, net/http %d %s:\n%q", h.status, h.minor, resp.StatusCode, resp.Proto, data)
		}
		if !bytes.Equal(body, goBody) {
			t.Fatalf("body: gate %q, net/http %q:\n%q", body, goBody, data)
		}
		got := http.Header{}
		for _, f := range h.fields {
			got[f.name] = append(got[f.name], f.value)
		}
		want := resp.Header.Clone()
		// Hop-by-hop framing fields, which the gate never relays; net/http
		// drops some of them while reading.
		for _, k := range []string{"Transfer-Encoding", "Trailer", "Connection"} {
			delete(got, k)
			delete(want, k)
		}
		if !equalHeaders(got, want) {
			t.Fatalf("header: gate %v, net/http %v:\n%q", got, want, data)
		}
		if !h.close {
			if goUsed := len(data) - src.Len() - br.Buffered(); goUsed != used {
				t.Fatalf("the answer ends at byte %d for the gate, %d for net/http:\n%q", used, goUsed, data)
			}
		}
	})
}

func equalHeaders(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// TestParseRefusesAmbiguity: answers an HTTP/1.1 peer could read in two
// ways, or that break the line structure, are refused whole.
func TestParseRefusesAmbiguity(t *testing.T) {
	for _, c := range []struct{ name, answer string }{
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n"},
		{"bare LF after the status line", "HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n"},
		{"bare CR in a value", "HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n"},
		{"obsolete line folding", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n"},
		{"space before the colon", "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"},
		{"two Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"},
		{"two Content-Type", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Type: text/event-stream\r\nContent-Length: 0\r\n\r\n"},
		{"a list in Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx"},
		{"a signed Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx"},
		{"Transfer-Encoding and Content-Length", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"},
		{"a coding before chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
		{"two Transfer-Encoding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"identity", "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n"},
		{"chunked in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"HTTP/2 status line", "HTTP/2 200\r\n\r\n"},
		{"a two-digit status", "HTTP/1.1 20 OK\r\n\r\n"},
		{"a status below 100", "HTTP/1.1 099 OK\r\n\r\n"},
		{"a control byte in the reason", "HTTP/1.1 200 O\x01K\r\n\r\n"},
		{"a name that is not a token", "HTTP/1.1 200 OK\r\nX A: 1\r\nContent-Length: 0\r\n\r\n"},
		{"a NUL in a value", "HTTP/1.1 200 OK\r\nX-A: \x00\r\nContent-Length: 0\r\n\r\n"},
		{"empty status line", "\r\nHTTP/1.1 200 OK\r\n\r\n"},
		{"a head too large", "HTTP/1.1 200 OK\r\nX-A: " + strings.Repeat("a", maxResponseHeadBytes) + "\r\n\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for mode := range uint8(4) {
				if _, _, _, err := readAnswer([]byte(c.answer), mode); err == nil {
					t.Errorf("mode %d: read without an error", mode)
				}
			}
		})
	}
	for _, c := range []struct{ name, answer string }{
		{"a chunk size that is not hex", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"},
		{"whitespace before an extension", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 ;x\r\nok\r\n0\r\n\r\n"},
		{"chunk data longer than its size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n"},
		{"a chunk size that overflows", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n"},
		{"a bare LF after a chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n"},
		{"a folded trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-A: 1\r\n 2\r\n\r\n"},
		{"cut before the last chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n"},
		{"cut inside the body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"},
		{"framing far larger than data", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
			strings.Repeat("1;"+strings.Repeat("e", 200)+"\r\nx\r\n", 200) + "0\r\n\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, mode := range []uint8{0, 2} { // not HEAD: that answer has no body
				if _, _, _, err := readAnswer([]byte(c.answer), mode); err == nil {
					t.Errorf("mode %d: body read without an error", mode)
				}
			}
		})
	}
}

// TestHeadTrickled: an answer head that arrives a few bytes at a time is
// parsed in time linear in its size. readHead calls headEnd after every
// read with what it already knows to be whole lines. Here headEnd is
// called a byte at a time with those lines made invalid, so looking at
// them again fails, and the bytes left for it to look at are counted (no
// clock: this machine is shared); readHead itself reads such a head whole.
func TestHeadTrickled(t *testing.T) {
	var b strings.Builder
	b.WriteString("HTTP/1.1 200 OK\r\n")
	for b.Len() < 60<<10 {
		b.WriteString("A: b\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	head := b.String()

	// Each call is given the head so far, with the whole lines an earlier
	// call reported overwritten by bare LFs, an error if looked at again.
	buf := []byte(head)
	looked, scanned, poisoned := 0, 0, 0
	for i := 1; i <= len(head); i++ {
		for ; poisoned < scanned; poisoned++ {
			buf[poisoned] = '\n'
		}
		looked += i - scanned // headEnd looks at b[scanned:] only
		n, next, err := headEnd(buf[:i], scanned)
		if err == nil {
			if i != len(head) || n != len(head) {
				t.Fatalf("head ends at %d of %d bytes (%d given)", n, len(head), i)
			}
			break
		}
		if err != errIncomplete {
			t.Fatal(err)
		}
		scanned = next
	}
	if looked > 8*len(head) {
		t.Errorf("a head given a byte at a time: %d bytes looked at for a %d-byte head, want at most 8 per byte", looked, len(head))
	}

	c := &upstreamConn{rd: iotest.OneByteReader(strings.NewReader(head)), pool: newBytePool()}
	if err := c.readHead(false); err != nil {
		t.Fatal(err)
	}
	if got, want := len(c.head.fields), strings.Count(head, "\r\n")-2; got != want {
		t.Fatalf("fields: got %d, want %d", got, want)
	}
}
