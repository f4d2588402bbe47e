// Command bench is a whole-process benchmark of the gateway. It
// starts, on 127.0.0.1 only, a fast upstream (JSON-RPC POST and SSE) and a
// development issuer in its own process, then as separate OS processes a bare
// keep-alive reverse proxy (the floor, this binary's floor-proxy subcommand),
// nginx as a bare keep-alive proxy when it is installed (the second floor),
// and the gateway binary, and measures them interleaved in rounds: req/s,
// latency, CPU per request and RSS from /proc, TIME-WAIT sockets, idle SSE
// streams, and start-up time with the provider unreachable. It prints a
// markdown report.
//
// It owns no part of the gateway and changes nothing outside bench/results.
//
//	go run ./bench            # default run, about 4 minutes
//	go run ./bench -quick     # about 40 seconds
//	go run ./bench -streams 10000 -rounds 5 -duration 15s   # the full targets
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "floor-proxy" {
		os.Exit(floorMain(os.Args[2:], os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "bare-server" {
		os.Exit(bareServerMain(os.Args[2:], os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
