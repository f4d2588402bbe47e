package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// rpcRequest is the JSON-RPC message every load request POSTs.
const rpcRequest = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello"}}}`

// rpcReply is the upstream's answer, about 200 bytes.
const rpcReply = `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello"}],"structuredContent":{"echo":"hello","server":"bench-upstream","note":"a small fixed reply of about two hundred bytes"},"isError":false}}`

// upstream is the fast MCP-like server behind the proxies: POST answers
// rpcReply; GET with Accept: text/event-stream opens an SSE stream that
// receives every broadcast (numbered events) until the client leaves.
type upstream struct {
	mu   sync.Mutex
	seq  int64         // number of the last broadcast
	next chan struct{} // closed by the next broadcast

	streams atomic.Int64 // SSE streams open now
	posts   atomic.Int64
	conns   atomic.Int64 // connections accepted
}

// connState counts accepted connections (http.Server.ConnState).
func (u *upstream) connState(_ net.Conn, s http.ConnState) {
	if s == http.StateNew {
		u.conns.Add(1)
	}
}

func newUpstream() *upstream { return &upstream{next: make(chan struct{})} }

// broadcast sends event seq+1 to every open stream and returns its number.
func (u *upstream) broadcast() int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.seq++
	close(u.next)
	u.next = make(chan struct{})
	return u.seq
}

func (u *upstream) current() (int64, chan struct{}) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seq, u.next
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost:
		_, _ = io.Copy(io.Discard, r.Body)
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{strconv.Itoa(len(rpcReply))}
		_, _ = io.WriteString(w, rpcReply)
		u.posts.Add(1)
	case r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/event-stream"):
		u.sse(w, r)
	default:
		w.WriteHeader(http.StatusOK)
	}
}

// sse holds a stream open: "open" carries the number of the last broadcast,
// then every later broadcast is sent as a "tick" with its number, none
// skipped even if two come close together.
func (u *upstream) sse(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	last, next := u.current()
	u.streams.Add(1)
	defer u.streams.Add(-1)
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "event: open\ndata: %d\n\n", last)
	if rc.Flush() != nil {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-next:
		}
		var cur int64
		cur, next = u.current()
		for s := last + 1; s <= cur; s++ {
			fmt.Fprintf(w, "event: tick\ndata: %d\n\n", s)
		}
		last = cur
		if rc.Flush() != nil {
			return
		}
	}
}

// ticker broadcasts every period until ctx ends (the "event every N
// seconds" of a real server); 0 disables it.
func (u *upstream) ticker(ctx context.Context, period time.Duration) {
	if period <= 0 {
		return
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			u.broadcast()
		}
	}
}

// serveLoopback serves h on a fresh 127.0.0.1 port until ctx ends.
// connState may be nil.
func serveLoopback(ctx context.Context, h http.Handler, connState func(net.Conn, http.ConnState)) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ConnState: connState}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	return "http://" + ln.Addr().String(), nil
}
