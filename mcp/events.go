package mcp

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
)

// FilterEvents copies an event stream (text/event-stream, HTML Living
// Standard "Server-sent events" §9.2.6) from src to dst event by event,
// filtering the listings in each event's data as NewEventFilter does. Each
// event is written to dst once it is whole, and dst is flushed when it is an
// http.Flusher.
//
// An event of more than max bytes is ErrTooLarge; the data of a message
// event that is not JSON (a client would fail on it too) is ErrSyntax. On an
// error, dst has every event before the one that failed.
func FilterEvents(dst io.Writer, src io.Reader, max int, lists List, keep Keep) error {
	f := NewEventFilter(src, max, lists, keep)
	flusher, _ := dst.(http.Flusher)
	for {
		out, err := f.next()
		if len(out) > 0 {
			if _, werr := dst.Write(out); werr != nil {
				return werr
			}
			if flusher != nil && (err == nil || err == io.EOF) {
				flusher.Flush()
			}
		}
		switch {
		case err == io.EOF:
			return nil
		case err != nil:
			return err
		}
	}
}

// EventFilter reads an event stream from its source, filtering the
// listings in each event's data. Build it with NewEventFilter.
type EventFilter struct {
	e     eventReader
	lists List
	keep  Keep
	out   []byte // what Read has still to return of the last event
	err   error  // returned once out is drained
}

// NewEventFilter returns a reader of the event stream src (text/event-stream,
// HTML Living Standard "Server-sent events" §9.2.6), with the listings in
// each event's data filtered as FilterList does. An event whose type is
// "message" (or absent, which means the same) carries one JSON-RPC message
// in its data; it is rewritten only when entries are dropped: its data
// lines are replaced, where the first one was, by the filtered JSON, one
// data line per line of it. Every other byte (comments, other fields, other
// events, line endings) passes as it was.
//
// Read returns bytes of one event at a time, and only once that event is
// whole, so a proxy that flushes after each write streams event by event;
// it never waits for more of src than the event it returns. Memory is
// bounded by max: an event of more than max bytes is ErrTooLarge; the data
// of a message event that is not JSON (a client would fail on it too) is
// ErrSyntax. After an error, Read has returned every event before the one
// that failed.
func NewEventFilter(src io.Reader, max int, lists List, keep Keep) *EventFilter {
	return &EventFilter{e: eventReader{r: bufio.NewReader(src), max: max, first: true}, lists: lists, keep: keep}
}

// Read implements io.Reader.
func (f *EventFilter) Read(p []byte) (int, error) {
	for len(f.out) == 0 {
		if f.err != nil {
			return 0, f.err
		}
		f.out, f.err = f.next()
	}
	n := copy(p, f.out)
	f.out = f.out[n:]
	return n, nil
}

// next reads and filters the next event: its bytes (valid until the next
// call), and io.EOF at the end of the stream or the error that ended it.
func (f *EventFilter) next() ([]byte, error) {
	e := &f.e
	err := e.read()
	if len(e.raw) > 0 && (err == nil || err == io.EOF) {
		out, ferr := e.filtered(f.lists, f.keep)
		if ferr != nil {
			// The last event's LF; the error is what matters.
			return e.raw[:e.lead], fmt.Errorf("filter mcp event stream: %w", ferr)
		}
		return out, err
	}
	if err != nil && err != io.EOF {
		return e.raw[:e.lead], fmt.Errorf("filter mcp event stream: %w", err)
	}
	return nil, err
}

// eventReader reads an event stream one event at a time, keeping the
// event's bytes as they came.
type eventReader struct {
	r       *bufio.Reader
	max     int
	first   bool // no line read yet: the stream may start with a BOM
	afterCR bool // the last line ended with CR: an LF first belongs to it
	raw     []byte
	lines   []line
	lead    int // bytes of raw before the first line: the LF of the last event's CRLF
}

// line is one line of raw: raw[start:text] is a BOM (first line only),
// raw[text:content] its text, raw[content:end] its end of line (CR, LF,
// CRLF, or nothing at the end of the stream).
type line struct {
	start, text, content, end int
	data                      bool // a data field
}

// read reads the next event into e.raw and e.lines: lines up to and with a
// blank line, or to the end of the stream (io.EOF, with the last lines, if
// any, in e.raw).
func (e *eventReader) read() error {
	e.raw, e.lines, e.lead = e.raw[:0], e.lines[:0], 0
	for {
		lf, l, err := e.line()
		switch {
		case lf && len(e.lines) > 0:
			e.lines[len(e.lines)-1].end++ // the LF of a CRLF split between reads
		case lf:
			e.lead = 1
		}
		if l.end > l.start {
			e.lines = append(e.lines, l)
		}
		if err != nil {
			return err
		}
		if l.content == l.text {
			return nil // a blank line ends the event
		}
	}
}

// line reads one line into e.raw. lf: it first read the LF of a CRLF whose
// CR ended the line before.
func (e *eventReader) line() (lf bool, l line, err error) {
	if e.afterCR {
		e.afterCR = false
		if b, err := e.r.Peek(1); err == nil && b[0] == '\n' {
			if err := e.grow(1); err != nil {
				return false, line{}, err
			}
			e.raw = append(e.raw, '\n')
			_, _ = e.r.Discard(1)
			lf = true
		}
	}
	l.start = len(e.raw)
	for {
		if _, err := e.r.Peek(1); err != nil {
			l.text = e.bom(l.start)
			l.content, l.end = len(e.raw), len(e.raw)
			return lf, l, err
		}
		buf, _ := e.r.Peek(e.r.Buffered())
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			i = len(buf)
		}
		if j := bytes.IndexByte(buf[:i], '\r'); j >= 0 {
			i = j
		}
		if i == len(buf) { // no end of line yet
			if err := e.grow(len(buf)); err != nil {
				return lf, line{}, err
			}
			e.raw = append(e.raw, buf...)
			_, _ = e.r.Discard(len(buf))
			continue
		}
		n := i + 1
		if buf[i] == '\r' {
			switch {
			case i+1 < len(buf) && buf[i+1] == '\n':
				n++
			case i+1 == len(buf):
				e.afterCR = true // the LF, if any, is not here yet
			}
		}
		if err := e.grow(n); err != nil {
			return lf, line{}, err
		}
		l.content = len(e.raw) + i
		e.raw = append(e.raw, buf[:n]...)
		_, _ = e.r.Discard(n)
		l.text = e.bom(l.start)
		l.end = len(e.raw)
		return lf, l, nil
	}
}

// bom returns where the text of the line at start begins: after a UTF-8
// BOM that starts the stream, which the client's parser strips.
func (e *eventReader) bom(start int) int {
	if !e.first {
		return start
	}
	e.first = false
	if bytes.HasPrefix(e.raw[start:], []byte("\xef\xbb\xbf")) {
		return start + 3
	}
	return start
}

func (e *eventReader) grow(n int) error {
	if len(e.raw)+n > e.max {
		return fmt.Errorf("an event of more than %d bytes: %w", e.max, ErrTooLarge)
	}
	return nil
}

// filtered returns the event, with its data's listings filtered.
func (e *eventReader) filtered(lists List, keep Keep) ([]byte, error) {
	var data []byte
	dataLines := 0
	message := true
	for k := range e.lines {
		l := &e.lines[k]
		text := e.raw[l.text:l.content]
		if len(text) == 0 || text[0] == ':' {
			continue // a blank line, a comment
		}
		name, value := text, []byte(nil)
		if i := bytes.IndexByte(text, ':'); i >= 0 {
			name, value = text[:i], text[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(name) {
		case "data":
			l.data = true
			if dataLines > 0 {
				data = append(data, '\n')
			}
			data = append(data, value...)
			dataLines++
		case "event":
			message = len(value) == 0 || string(value) == "message"
		}
	}
	if dataLines == 0 || !message || len(bytes.Trim(data, " \t\r\n")) == 0 {
		return e.raw, nil
	}
	out, err := FilterList(data, lists, keep)
	if err != nil {
		return nil, err
	}
	if len(out) == len(data) {
		return e.raw, nil // FilterList only removes bytes: nothing dropped
	}
	b := make([]byte, 0, len(e.raw))
	b = append(b, e.raw[:e.lead]...)
	written := false
	for _, l := range e.lines {
		if !l.data {
			b = append(b, e.raw[l.start:l.end]...)
			continue
		}
		if written {
			continue
		}
		written = true
		b = append(b, e.raw[l.start:l.text]...)
		eol := e.raw[l.content:l.end]
		for part := range bytes.SplitSeq(out, []byte("\n")) {
			b = append(b, "data: "...)
			b = append(b, part...)
			b = append(b, eol...)
		}
	}
	return b, nil
}
