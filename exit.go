package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/supervisor"
)

// stopped is how a gateway that was serving ended, for exitStatus. serve
// returns it only when the status is not 0.
type stopped struct {
	failed  bool // a part failed (and serve logged why); false: a signal or the end of ctx stopped it
	spawned bool // the gateway ran the MCP server as its child
	child   int  // the last child's status as a shell reports it (128+N for signal N); 0 if none ran
	dev     bool // dev mode

	// start, when the MCP server could not be started at all (a command
	// that does not exist, or in dev mode a child that exited before it
	// was ready), is said on stderr with the child's last lines: it is
	// what a newcomer needs to read, not a log line among others.
	start *supervisor.StartError
}

func (s *stopped) Error() string {
	if s.start != nil {
		return s.start.Error()
	}
	return fmt.Sprintf("gateway stopped: exit status %d", exitStatus(s))
}

// status is the error of a subcommand that decides its own exit status
// (doctor: 1 when a check failed, 2 for a usage error). err nil: nothing
// more to print.
type status struct {
	code int
	err  error
}

func (s *status) Error() string {
	if s.err == nil {
		return fmt.Sprintf("exit status %d", s.code)
	}
	return s.err.Error()
}

// exitStatus is the exit-status policy, the one place that decides it (the
// README's "Exit status" table says the same):
//
//	0       stopped by SIGTERM, SIGINT or the end of ctx, with no child or a child
//	        that exited 0; in dev mode, stopped that way whatever the child did
//	1       a failure: a listener would not open, a part failed while running
//	        (more than MCP_SPAWN_MAX_RESTARTS restarts of a child that exited
//	        0, ...), a healthcheck failed
//	2       a usage or configuration error, found before anything listened
//	N       spawn mode: the child's own exit status once it was stopped (the
//	        supervisor reports 126 or 127 when the command could not run)
//	128+N   spawn mode: the child was ended by signal N (143: SIGTERM;
//	        137: SIGKILL, after SHUTDOWN_GRACE)
//
// A child's status wins over the 1 of a failure, as a container runtime
// expects; dev mode's Ctrl-C is not a failure of the developer's server.
func exitStatus(err error) int {
	var s *stopped
	var ce *configError
	var st *status
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ce):
		return 2
	case errors.As(err, &st):
		return st.code
	case !errors.As(err, &s):
		return 1
	case s.dev && !s.failed:
		return 0
	case s.spawned && s.child != 0:
		return s.child
	case s.failed:
		return 1
	}
	return 0
}

// exit prints what err says, unless the log said it already, and returns
// the exit status.
func exit(err error, stderr io.Writer) int {
	var s *stopped
	var st *status
	switch {
	case errors.As(err, &s):
		if s.start != nil {
			fmt.Fprintln(stderr, "mcp-oauth-proxy:", s.start)
			if len(s.start.Tail) > 0 {
				fmt.Fprintln(stderr, "its last lines:")
				for _, l := range s.start.Tail {
					fmt.Fprintln(stderr, "  "+l)
				}
			}
		}
	case errors.As(err, &st):
		if st.err != nil {
			fmt.Fprintln(stderr, "mcp-oauth-proxy:", st.err)
		}
	case err != nil:
		fmt.Fprintln(stderr, "mcp-oauth-proxy:", err)
	}
	return exitStatus(err)
}
