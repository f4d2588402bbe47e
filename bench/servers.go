package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Names of the bare servers -servers adds to the load phase. Each answers
// every request with the upstream's reply from memory: no proxying, no
// checks, no log. They measure what the server side alone costs, which the
// gateway's distance to 2× nginx is argued from.
const (
	nameServerNginx   = "server: nginx"
	nameServerNetHTTP = "server: net/http"
	nameServerOwnLoop = "server: own loop"
)

// bareServerMain runs one bare server (bench bare-server) as its own
// process, so its CPU can be read from /proc:
//
//   - net/http: an http.Server whose handler drains the body and writes the
//     reply, as the bench's upstream does;
//   - own-loop: a goroutine per connection around net/http's own request
//     parser (http.ReadRequest, the function the server calls) that writes
//     the reply head and body in one write. It has none of the server's
//     other work (timeouts, a context per request, client-gone detection,
//     Host checks, panics recovered), so it is a lower bound on what
//     replacing net/http's server while keeping its parser could cost.
//
// It exits by itself after -max-life or when the bench that started it is
// gone.
func bareServerMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("bare-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kind := fs.String("kind", "net/http", "net/http or own-loop")
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	maxLife := fs.Duration("max-life", 30*time.Minute, "exit after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *kind != "net/http" && *kind != "own-loop" {
		fmt.Fprintf(stderr, "bare-server: -kind %q is not net/http or own-loop\n", *kind)
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(stderr, "bare-server:", err)
		return 1
	}
	go exitWhenOrphaned(*maxLife)
	if *kind == "net/http" {
		srv := &http.Server{Handler: http.HandlerFunc(answer), ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 32 << 10}
		err = srv.Serve(ln)
	} else {
		err = ownLoop(ln)
	}
	fmt.Fprintln(stderr, "bare-server:", err)
	return 1
}

// answer is the net/http server's handler.
func answer(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(rpcReply))}
	_, _ = io.WriteString(w, rpcReply)
}

// ownLoop serves ln with a goroutine per connection around http.ReadRequest.
func ownLoop(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go ownConn(c)
	}
}

// ownConn answers the requests of one connection in order until it closes
// or sends something ReadRequest refuses.
func ownConn(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 4<<10)
	bw := bufio.NewWriterSize(c, 4<<10)
	var date []byte
	var dateSec int64
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
		if now := time.Now(); now.Unix() != dateSec {
			dateSec, date = now.Unix(), now.UTC().AppendFormat(date[:0], http.TimeFormat)
		}
		_, _ = bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ")
		_, _ = bw.WriteString(strconv.Itoa(len(rpcReply)))
		_, _ = bw.WriteString("\r\nDate: ")
		_, _ = bw.Write(date)
		_, _ = bw.WriteString("\r\n\r\n")
		_, _ = bw.WriteString(rpcReply)
		if br.Buffered() == 0 { // pipelined requests share one write
			if err := bw.Flush(); err != nil {
				return
			}
		}
	}
}

// startBareServers starts the three bare servers: nginx (when installed)
// answering from memory, and bench bare-server of both kinds.
func (e *env) startBareServers() ([]*target, func(), error) {
	var targets []*target
	var children []*child
	stop := func() {
		for _, c := range children {
			c.stop()
		}
	}
	if e.nginx != "" {
		ngx, err := e.startNginxWith(e.o.nginxWorkers, nginxAnswer)
		children = append(children, ngx)
		if err != nil {
			return nil, stop, fmt.Errorf("nginx as a bare server: %w", err)
		}
		targets = append(targets, &target{name: nameServerNginx, url: fmt.Sprintf("http://127.0.0.1:%d/mcp", ngx.port), pid: ngx.pid, port: ngx.port, proc: ngx, tree: e.o.nginxWorkers > 1})
	}
	for _, k := range []struct{ kind, name string }{{"net/http", nameServerNetHTTP}, {"own-loop", nameServerOwnLoop}} {
		port, err := freePort()
		if err != nil {
			return nil, stop, err
		}
		c, err := startChild(k.name, e.self, []string{"bare-server", "-kind", k.kind, "-listen", fmt.Sprintf("127.0.0.1:%d", port)},
			[]string{"PATH=" + os.Getenv("PATH")}, filepath.Join(e.tmp, fmt.Sprintf("bare-%d.log", port)), port)
		if c != nil {
			children = append(children, c)
		}
		if err == nil {
			err = waitListening(c, 10*time.Second)
		}
		if err != nil {
			return nil, stop, fmt.Errorf("%s: %w", k.name, err)
		}
		targets = append(targets, &target{name: k.name, url: fmt.Sprintf("http://127.0.0.1:%d/mcp", port), pid: c.pid, port: port, proc: c})
	}
	return targets, stop, nil
}
