package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/http/pprof"
	"net/url"
	"time"
)

// floorMain runs the floor: a bare keep-alive reverse proxy with no
// verification, the cheapest thing the gateway could possibly be. It runs as
// its own process (bench floor-proxy) so its CPU and RSS can be read from
// /proc. It exits by itself after -max-life or when the bench that started
// it is gone.
func floorMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("floor-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	upstream := fs.String("upstream", "", "upstream URL, e.g. http://127.0.0.1:9000")
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	pprofAddr := fs.String("pprof", "", "address for /debug/pprof (empty: none)")
	flush := fs.Duration("flush-interval", -1, "ReverseProxy.FlushInterval")
	maxLife := fs.Duration("max-life", 30*time.Minute, "exit after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	u, err := url.Parse(*upstream)
	if err != nil || u.Host == "" {
		fmt.Fprintln(stderr, "floor-proxy: -upstream must be an absolute URL")
		return 2
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = ""
		},
		Transport:     tr,
		FlushInterval: *flush,
		ErrorLog:      log.New(stderr, "floor-proxy: ", 0),
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(stderr, "floor-proxy:", err)
		return 1
	}
	if *pprofAddr != "" {
		pl, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			fmt.Fprintln(stderr, "floor-proxy:", err)
			return 1
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		go func() { _ = http.Serve(pl, mux) }()
	}
	go exitWhenOrphaned(*maxLife)
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 32 << 10}
	err = srv.Serve(ln)
	fmt.Fprintln(stderr, "floor-proxy:", err)
	return 1
}
