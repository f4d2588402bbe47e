package doctor

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// response is one answer, its body read whole (at most maxBody bytes).
type response struct {
	status int
	header http.Header
	body   []byte
	url    *url.URL // the URL that answered, after any redirects followed
	tls    *tls.ConnectionState
}

// send makes one request bounded by the request timeout, reading at most
// maxBody bytes of the answer. It never follows redirects.
func (c *checker) send(ctx context.Context, method, rawURL string, header http.Header, body []byte) (*response, error) {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(rctx, method, rawURL, rd)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, c.describe(ctx, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("read the answer: %w", c.describe(ctx, err))
	}
	if len(b) > maxBody {
		return nil, fmt.Errorf("the answer's body is over %d bytes", maxBody)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: b, url: req.URL, tls: resp.TLS}, nil
}

// get GETs rawURL with header, following at most 5 redirects within the
// same origin, as MCP clients follow them for metadata. A redirect to
// another origin is returned as the answer.
func (c *checker) get(ctx context.Context, rawURL string, header http.Header) (*response, error) {
	next := rawURL
	for range 6 {
		res, err := c.send(ctx, http.MethodGet, next, header, nil)
		if err != nil {
			return nil, err
		}
		if res.status < 300 || res.status > 399 || res.header.Get("Location") == "" {
			return res, nil
		}
		loc, err := res.url.Parse(res.header.Get("Location"))
		if err != nil || origin(loc) != origin(res.url) {
			return res, nil
		}
		next = loc.String()
	}
	return nil, errors.New("more than 5 redirects")
}

// getJSON GETs a metadata document and decodes it into a generic map.
func (c *checker) getJSON(ctx context.Context, rawURL string) (*response, map[string]any, error) {
	res, err := c.get(ctx, rawURL, http.Header{"Accept": {"application/json"}, "Mcp-Protocol-Version": {protocolVersion}})
	if err != nil {
		return nil, nil, err
	}
	if res.status != http.StatusOK {
		return res, nil, nil
	}
	doc, err := decodeObject(res.body)
	if err != nil {
		return res, nil, err
	}
	return res, doc, nil
}

// decodeObject decodes a JSON object.
func decodeObject(b []byte) (map[string]any, error) {
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not a JSON object: %v", err)
	}
	if doc == nil {
		return nil, errors.New("not a JSON object: null")
	}
	// JSON.parse, json.loads and json.Unmarshal refuse a body with more
	// after the object, so every client would.
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("not a JSON object: data after the object (clients refuse the whole document)")
	}
	return doc, nil
}

// isJSON reports whether a Content-Type is JSON.
func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// describe turns a transport error into a short reason a person can act on.
func (c *checker) describe(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return errors.New("the overall deadline passed (raise --timeout)")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no answer within %s", c.cfg.RequestTimeout)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var host x509.HostnameError
	switch {
	case errors.As(err, &unknown):
		return certError("TLS certificate signed by an unknown authority")
	case errors.As(err, &invalid):
		return certError("TLS certificate invalid: " + invalid.Error())
	case errors.As(err, &host):
		return certError("TLS certificate: " + host.Error())
	}
	return err
}

// certError is a certificate the client refused.
type certError string

func (e certError) Error() string { return string(e) }

// str returns doc[k] as a string ("" when absent or not a string).
func str(doc map[string]any, k string) string {
	s, _ := doc[k].(string)
	return s
}

// strs returns doc[k] as a list of strings, and whether it was one.
func strs(doc map[string]any, k string) ([]string, bool) {
	raw, ok := doc[k].([]any)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(raw))
	for _, v := range raw {
		s, ok := v.(string)
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// wrongType reports whether doc has k but not as an array of strings, as
// strs reads it: a client validating the document (the TypeScript SDK's
// schema) then refuses all of it, not just the field.
func wrongType(doc map[string]any, k string) bool {
	_, present := doc[k]
	_, ok := strs(doc, k)
	return present && !ok
}

// wrongTypeFail is the failure for a field of the wrong type.
const wrongTypeFail = " is not an array of strings: clients that validate the metadata (the TypeScript SDK) refuse the whole document"

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// shorten cuts s for a message.
func shorten(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
