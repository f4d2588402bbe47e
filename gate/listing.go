package gate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/mcp"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/policy"
)

// listingError is a listing answer the gate refuses to pass on: it could
// not be filtered, so the caller could see entries the policy hides.
// proxyError answers it 502.
type listingError struct{ err error }

func (e *listingError) Error() string { return "refuse listing: " + e.err.Error() }
func (e *listingError) Unwrap() error { return e.err }

// filterListing puts a filter in place of the body of a successful answer
// to a listing request (lists, asked for by s): a JSON body is read whole
// (up to maxListing bytes) and filtered now, so that one that cannot be
// filtered is a 502 and nothing of it reaches the client; an event stream
// is filtered event by event as it arrives (filteredEvents), so it stays a
// stream. Any other answer passes as it came.
func (g *gate) filterListing(resp *http.Response, lists mcp.List, s *policy.Subject, requestID string) error {
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil // an error has no listing to hide
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !equalFoldASCII(ce, "identity") {
		resp.Body.Close()
		return &listingError{fmt.Errorf("content encoding %q cannot be filtered", bounded(ce))}
	}
	rd, err := g.policy.Filter(resp.Body, resp.Header.Get("Content-Type"), lists, s, g.maxListing)
	if err != nil {
		resp.Body.Close()
		if errors.Is(err, mcp.ErrTooLarge) {
			err = fmt.Errorf("larger than the cap of %d bytes: %w", g.maxListing, err)
		}
		return &listingError{err}
	}
	switch rd := rd.(type) {
	case *bytes.Reader: // a JSON body, filtered whole
		resp.Body.Close()
		resp.Body = io.NopCloser(rd)
		resp.ContentLength = int64(rd.Len())
		resp.Header.Set("Content-Length", strconv.Itoa(rd.Len()))
	case *mcp.EventFilter:
		resp.Body = &filteredEvents{EventFilter: rd, body: resp.Body, log: g.log, max: g.maxListing, id: requestID}
	}
	return nil
}

// filteredEvents is an event stream whose listings are filtered as the
// events pass. An event that cannot be filtered ends the stream there,
// after the events before it: its headers are gone, so there is no 502 to
// give.
type filteredEvents struct {
	*mcp.EventFilter
	body io.Closer // the upstream's
	log  hclog.Logger
	max  int
	id   string // the request ID
}

func (f *filteredEvents) Read(p []byte) (int, error) {
	n, err := f.EventFilter.Read(p)
	switch {
	case err == nil || err == io.EOF:
	case errors.Is(err, context.Canceled):
		err = context.Canceled // the stream ended at shutdown: nothing to report
	default:
		if errors.Is(err, mcp.ErrTooLarge) {
			err = fmt.Errorf("an event larger than the cap of %d bytes: %w", f.max, err)
		}
		f.log.Warn("proxy: listing event stream cut", "request_id", f.id, "error", err)
		err = context.Canceled // said above; ReverseProxy need not say it again
	}
	return n, err
}

func (f *filteredEvents) Close() error { return f.body.Close() }
