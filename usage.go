package main

import (
	"fmt"
	"io"
	"strings"
)

// configError is a mistake in how the gateway was invoked or configured,
// found before anything listens (exit status 2): every problem at once,
// then hints.
type configError struct {
	problems []string
	hints    []string // "did you mean ...?", a word for newcomers
	usage    bool     // a command-line mistake: one problem, said alone
}

// usageError is a command-line mistake: the error first, then the hints.
func usageError(problem string, hints ...string) *configError {
	return &configError{problems: []string{problem}, hints: hints, usage: true}
}

func (e *configError) Error() string {
	var b strings.Builder
	if e.usage {
		b.WriteString(strings.Join(e.problems, "; "))
	} else {
		b.WriteString("invalid configuration:\n  " + strings.Join(e.problems, "\n  "))
	}
	for _, h := range e.hints {
		b.WriteString("\n" + h)
	}
	b.WriteString("\nsee mcp-oauth-proxy --help")
	return b.String()
}

// subcommands are the words run accepts before any flag.
func subcommands() []string { return []string{"dev", "healthcheck", "doctor", "version", "help"} }

// flagError explains an error of the flag package, with the flag probably
// meant when it names an unknown one.
func flagError(err error, all []setting) error {
	msg := err.Error()
	name, unknown := strings.CutPrefix(msg, "flag provided but not defined: ")
	if !unknown {
		return usageError(strings.Replace(msg, ": -", ": --", 1))
	}
	name = strings.TrimLeft(name, "-")
	flags := make([]string, len(all))
	for i, s := range all {
		flags[i] = s.flag()
	}
	e := usageError("unknown flag --" + name)
	if s := closest(flagName(name), flags, '-'); s != "" {
		e.hints = append(e.hints, "did you mean --"+s+"?")
	}
	return e
}

// strayArgument explains an argument before "--" that is not a flag.
func strayArgument(arg string) error {
	e := usageError(fmt.Sprintf("unexpected argument %q", arg))
	if s := closest(arg, subcommands(), 0); s != "" {
		e.hints = append(e.hints, "did you mean `mcp-oauth-proxy "+s+"`? (a subcommand comes first)")
	}
	e.hints = append(e.hints, "the MCP server's own command goes after --: mcp-oauth-proxy [flags] -- COMMAND ARGS...")
	return e
}

// misspelt warns of each variable in environ that is not a setting but
// looks like a misspelling of one, naming the setting probably meant. So
// that the MCP server's own variables stay quiet, a name is suspect only
// when, for some setting:
//
//   - it is in the setting's family: the same first word (OIDC, ALLOW,
//     RATE, ...), or the same first two for MCP_ settings (MCP_SPAWN,
//     MCP_UPSTREAM, MCP_AUDIT), because MCP_* names are the MCP server's
//     too; a setting of one word (PORT) has no family and is never matched;
//   - and it is within one edit of the setting (two for names of 12
//     characters or more), or the setting cut short at a word boundary
//     (OIDC_ISSUER for OIDC_ISSUER_URL), case aside;
//   - and it is not a name other programs commonly read (usedElsewhere).
func misspelt(environ []string) []string {
	own := map[string]bool{}
	for _, s := range settings(new(Config)) {
		own[s.env] = true
	}
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		upper := strings.ToUpper(name)
		if own[name] || usedElsewhere(upper) {
			continue
		}
		var family []string
		for env := range own {
			if f := familyOf(env); f != "" && f == familyOf(upper) {
				family = append(family, env)
			}
		}
		if s := closest(upper, family, '_'); s != "" {
			out = append(out, fmt.Sprintf("%s is set but is not a setting; did you mean %s?", name, s))
		}
	}
	return out
}

// familyOf is the first word of a variable's name, or its first two for an
// MCP_ name; "" for a name of one word.
func familyOf(env string) string {
	words := strings.SplitN(env, "_", 3)
	switch {
	case len(words) < 2:
		return ""
	case words[0] == "MCP":
		return words[0] + "_" + words[1]
	}
	return words[0]
}

// usedElsewhere lists names near a setting that other programs read: an MCP
// server may well be configured with them.
func usedElsewhere(name string) bool {
	switch name {
	case "RATE_LIMIT", "CORS_ALLOW_ORIGIN", "AUTH_SERVER":
		return true
	}
	return false
}

// closest returns the candidate name most likely meant by name: one within
// one edit (two for candidates of 12 characters or more), or, when name has
// several words, one it is cut short of at a word boundary (sep); the
// nearest, the first of equals; "" if none.
func closest(name string, candidates []string, sep byte) string {
	best, bestD := "", -1
	for _, c := range candidates {
		d := editDistance(name, c)
		limit := 1
		if len(c) >= 12 {
			limit = 2
		}
		cut := sep != 0 && strings.IndexByte(name, sep) > 0 && strings.HasPrefix(c, name+string(sep))
		if (d <= limit || cut) && (bestD < 0 || d < bestD || d == bestD && c < best) {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and swaps of adjacent bytes.
func editDistance(a, b string) int {
	prev2, prev, cur := make([]int, len(b)+1), make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// printUsage prints the help: subcommands, then every setting.
func printUsage(w io.Writer) {
	fmt.Fprint(w, `Usage:
  mcp-oauth-proxy [flags] [-- COMMAND ARGS...]      run the gateway
  mcp-oauth-proxy dev [flags] [-- COMMAND ARGS...]  run it against an embedded development issuer
  mcp-oauth-proxy healthcheck                       probe a running gateway's /healthz on PORT
  mcp-oauth-proxy doctor [flags] URL                say why an MCP client cannot connect to URL
  mcp-oauth-proxy version                           print version information
  mcp-oauth-proxy help                              print this help

Every flag defaults to the environment variable named beside it.

Flags:
`)
	for _, s := range settings(new(Config)) {
		def := s.def
		if def == "" {
			def = "(empty)"
		}
		fmt.Fprintf(w, "  --%s  [%s]  default %s\n      %s\n", s.flag(), s.env, def, s.usage)
	}
}
