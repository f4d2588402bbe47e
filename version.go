package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

// printVersion prints the version, commit and Go version from the build
// information the Go toolchain stamps into every binary.
func printVersion(w io.Writer) {
	version, commit, modified := "(devel)", "unknown", false
	goVersion := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if modified {
		commit += " (modified)"
	}
	fmt.Fprintf(w, "mcp-oauth-proxy %s\ncommit %s\n%s\n", version, commit, goVersion)
}
