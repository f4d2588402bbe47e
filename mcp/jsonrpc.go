package mcp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// JSON-RPC error codes the gateway answers with (JSON-RPC 2.0 §5.1; MCP
// 2026-07-28 "Error Codes").
const (
	CodeParseError     = -32700 // not JSON
	CodeInvalidRequest = -32600 // not a valid request
	CodeHeaderMismatch = -32020 // HeaderMismatch: headers disagree with the body

	// CodeForbidden is the gateway's own: a call its policy refuses. MCP
	// 2026-07-28 ("Error Codes") has codes for purposes it does not
	// define allocated outside -32768..-32000; 403 is for the HTTP status.
	CodeForbidden = -31403
)

// ErrorBody returns a JSON-RPC error response (JSON-RPC 2.0 §5): id is a
// JSON string or number as Message.ID holds it ("" writes null, as for a
// request whose id could not be read), code and message as given.
func ErrorBody(id string, code int, message string) []byte {
	msg, _ := json.Marshal(message) // a string always marshals
	b := make([]byte, 0, 64+len(id)+len(msg))
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	if id == "" {
		id = "null"
	}
	b = append(b, id...)
	b = append(b, `,"error":{"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"message":`...)
	b = append(b, msg...)
	b = append(b, "}}\n"...)
	return b
}

// WriteError answers with status and ErrorBody(id, code, message), with
// the headers of every gateway answer: Content-Type: application/json,
// Cache-Control: no-store, X-Content-Type-Options: nosniff.
func WriteError(w http.ResponseWriter, status int, id string, code int, message string) {
	body := ErrorBody(id, code, message)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body) // the client went away: nothing to do
}

// WriteHeaderMismatch answers a request that CheckHeaders refused: 400 and
// the JSON-RPC error -32020 (HeaderMismatch), with the id of the body's
// message when it is a single request. The message names the header, never
// a value taken from the request.
func WriteHeaderMismatch(w http.ResponseWriter, body Body, err error) {
	id := ""
	if !body.Batch && len(body.Messages) == 1 {
		id = body.Messages[0].ID
	}
	message := "Header mismatch"
	var me *mismatchError
	if errors.As(err, &me) {
		message += ": " + me.detail
	}
	WriteError(w, http.StatusBadRequest, id, CodeHeaderMismatch, message)
}

// ReadBody reads r to its end, at most limit bytes. A longer body is
// ErrTooLarge: a body cut off by the limit is never returned as if whole.
// An error of r (an *http.MaxBytesError, a client gone) is returned as is.
func ReadBody(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("read mcp body: more than %d bytes: %w", limit, ErrTooLarge)
	}
	return b, nil
}
