package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// report collects every phase's numbers and renders them as markdown.
type report struct {
	o          *options
	loadName   string
	nofile     uint64
	gwProfiled bool
	elapsed    time.Duration

	idleKB   map[string]int64
	samples  map[string][]sample
	cpuRatio float64 // median over rounds of gateway/floor CPU per request
	rpsRatio float64
	cpuPer   []float64 // per round
	rpsPer   []float64

	// The same against nginx, when it ran.
	ngxCPURatio, ngxRPSRatio, ngxP99Ratio float64
	ngxCPUPer, ngxRPSPer, ngxP99Per       []float64
	// The gateway without its audit line against nginx, when it ran.
	quietCPURatio float64
	quietCPUPer   []float64
	// The gateway against the -compare binary, when it ran.
	befCPURatio, befP99Ratio float64
	befCPUPer, befP99Per     []float64

	gwLogTail     string
	streamsCapped string
	profiles      []profileResult
	profileErr    string
	sse           []sseResult
	startups      []startupResult
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianOf(ss []sample, f func(sample) float64) float64 {
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	return median(v)
}

func (r *report) computeRatios() {
	gw, fl, ngx := r.samples["gateway"], r.samples["floor"], r.samples["nginx"]
	for i := range min(len(gw), len(fl)) {
		if c := fl[i].cpuPerReq(); c > 0 {
			r.cpuPer = append(r.cpuPer, gw[i].cpuPerReq()/c)
		}
		if q := fl[i].res.rps(); q > 0 {
			r.rpsPer = append(r.rpsPer, gw[i].res.rps()/q)
		}
	}
	r.cpuRatio, r.rpsRatio = median(r.cpuPer), median(r.rpsPer)
	for i := range min(len(gw), len(ngx)) {
		if c := ngx[i].cpuPerReq(); c > 0 {
			r.ngxCPUPer = append(r.ngxCPUPer, gw[i].cpuPerReq()/c)
		}
		if q := ngx[i].res.rps(); q > 0 {
			r.ngxRPSPer = append(r.ngxRPSPer, gw[i].res.rps()/q)
		}
		if p := ngx[i].res.p99; p > 0 {
			r.ngxP99Per = append(r.ngxP99Per, float64(gw[i].res.p99)/float64(p))
		}
	}
	r.ngxCPURatio, r.ngxRPSRatio, r.ngxP99Ratio = median(r.ngxCPUPer), median(r.ngxRPSPer), median(r.ngxP99Per)
	quiet, bef := r.samples[nameAuditOff], r.samples[nameBefore]
	for i := range min(len(quiet), len(ngx)) {
		if c := ngx[i].cpuPerReq(); c > 0 {
			r.quietCPUPer = append(r.quietCPUPer, quiet[i].cpuPerReq()/c)
		}
	}
	r.quietCPURatio = median(r.quietCPUPer)
	for i := range min(len(gw), len(bef)) {
		if c := bef[i].cpuPerReq(); c > 0 {
			r.befCPUPer = append(r.befCPUPer, gw[i].cpuPerReq()/c)
		}
		if p := bef[i].res.p99; p > 0 {
			r.befP99Per = append(r.befP99Per, float64(gw[i].res.p99)/float64(p))
		}
	}
	r.befCPURatio, r.befP99Ratio = median(r.befCPUPer), median(r.befP99Per)
}

func verdict(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**missed**"
}

func mib(kb int64) string {
	if kb < 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f", float64(kb)/1024)
}

func ratios(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(s, ", ")
}

func (r *report) markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	p("# mcp-oauth-proxy bench\n\n")
	p("%s · %s · %d CPUs · Linux %s · %s · %s · RLIMIT_NOFILE %d · run took %s\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), host, runtime.NumCPU(), strings.TrimSpace(string(kernel)),
		runtime.Version(), commit(r.o.repo), r.nofile, r.elapsed.Round(time.Second))
	p("Command: `go run ./bench %s`\n\n", strings.Join(os.Args[1:], " "))

	if len(r.samples) > 0 {
		r.loadSection(&b)
	}

	if len(r.profiles) > 0 || r.profileErr != "" {
		r.profileSection(&b)
	}

	if len(r.sse) > 0 {
		r.streamsSection(&b)
	}

	if len(r.startups) > 0 {
		r.startupSection(&b)
	}
	p("Reproduce: `cd` to the repository root and run `bench/run.sh` (or `go run ./bench`; `-quick` for a short run, `-streams 10000` for the full SSE target). Ratios within one run are what count; absolute numbers move with the machine.\n")
	return b.String()
}

// loadSection writes the load run's tables: throughput, latency and CPU
// per request, with the ratios to each floor.
func (r *report) loadSection(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("## Load: POST of a small JSON-RPC message with an RS256 bearer token, ~200-byte reply\n\n")
	p("%s, %d interleaved rounds × %s per target (order rotated each round), after a %s warm-up. ",
		r.loadName, r.o.rounds, r.o.duration, r.o.warmup)
	p("Medians over the rounds. CPU is utime+stime of the process serving the target, from `/proc/<pid>/stat` ")
	p("(for `upstream` that is the bench process, which serves the upstream%s). ", map[bool]string{true: " and runs the Go load generator, so it is not the upstream's alone", false: ""}[strings.HasPrefix(r.loadName, "built-in")])
	p("The gateway runs with verification, allow-list, rate limit (100000000/min), no bound on requests in flight per subject, and audit at `LOG_LEVEL=info` to a file.\n\n")
	p("| target | req/s | p50 | p99 | CPU µs/req | RSS idle MiB | RSS peak MiB | errors (non-2xx / socket) | new upstream conns | new TIME-WAIT (client side / upstream side) | log bytes/req |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, name := range []string{"upstream", "nginx", "floor", "gateway", nameAuditOff, nameBefore, nameServerNginx, nameServerNetHTTP, nameServerOwnLoop} {
		ss := r.samples[name]
		if len(ss) == 0 {
			continue
		}
		var non2xx, sockErr, upConns, reqs int64
		var twc, twu []string
		for _, s := range ss {
			non2xx += s.res.non2xx
			sockErr += s.res.sockErr
			upConns += s.upConns
			reqs += s.res.requests
			twc = append(twc, fmt.Sprint(s.twClient))
			twu = append(twu, fmt.Sprint(s.twUpstream))
		}
		idle := "—"
		if kb, ok := r.idleKB[name]; ok {
			idle = mib(kb)
		}
		tw := strings.Join(twc, ",") + " / " + strings.Join(twu, ",")
		if name == "upstream" {
			tw = strings.Join(twc, ",") + " / —"
		}
		if name == "floor" && r.o.floorFlush != -1 {
			name = fmt.Sprintf("floor (FlushInterval %s)", r.o.floorFlush)
		}
		logb := "—"
		if name == "gateway" {
			logb = fmt.Sprintf("%.0f", medianOf(ss, func(s sample) float64 { return float64(s.logBytes) / float64(max(s.res.requests, 1)) }))
		}
		p("| %s | %.0f | %s | %s | %.1f | %s | %s | %d / %d | %d in %d req | %s | %s |\n", name,
			medianOf(ss, func(s sample) float64 { return s.res.rps() }),
			time.Duration(medianOf(ss, func(s sample) float64 { return float64(s.res.p50) })).Round(time.Microsecond),
			time.Duration(medianOf(ss, func(s sample) float64 { return float64(s.res.p99) })).Round(time.Microsecond),
			medianOf(ss, sample.cpuPerReq), idle,
			mib(int64(medianOf(ss, func(s sample) float64 { return float64(s.peakKB) }))),
			non2xx, sockErr, upConns, reqs, tw, logb)
	}
	p("\n**gateway / floor, CPU per request: %.2f** (per round: %s) — target ≤ 1.10: %s  \n", r.cpuRatio, ratios(r.cpuPer), verdict(r.cpuRatio <= 1.10))
	p("**gateway / floor, req/s: %.2f** (per round: %s)  \n", r.rpsRatio, ratios(r.rpsPer))
	if len(r.ngxCPUPer) > 0 {
		p("**gateway / nginx, CPU per request: %.2f** (per round: %s) — target ≤ 2: %s  \n", r.ngxCPURatio, ratios(r.ngxCPUPer), verdict(r.ngxCPURatio <= 2))
		p("gateway / nginx, req/s: %.2f (per round: %s); p99: %.2f (per round: %s)  \n", r.ngxRPSRatio, ratios(r.ngxRPSPer), r.ngxP99Ratio, ratios(r.ngxP99Per))
	}
	if len(r.quietCPUPer) > 0 {
		p("gateway without its audit line (LOG_LEVEL=warn) / nginx, CPU per request: %.2f (per round: %s)  \n", r.quietCPURatio, ratios(r.quietCPUPer))
	}
	if len(r.befCPUPer) > 0 {
		p("**gateway / before (`-compare %s`), CPU per request: %.2f** (per round: %s); **p99: %.2f** (per round: %s) — p99 not worse: %s  \n",
			r.o.compare, r.befCPURatio, ratios(r.befCPUPer), r.befP99Ratio, ratios(r.befP99Per), verdict(r.befP99Ratio <= 1))
	}
	r.serversLines(b)
	if up, fl := r.samples["upstream"], r.samples["floor"]; len(up) > 0 && len(fl) > 0 {
		p("floor / upstream, CPU per request: %.1f×\n\n", medianOf(fl, sample.cpuPerReq)/max(medianOf(up, sample.cpuPerReq), 1e-9))
	}
	p("Keep-alive: *new upstream conns* counts connections the upstream accepted during the runs (a pool ≤ the %d client connections means reuse; one per request would mean `Connection: close`). ", r.o.conns)
	p("Requests still in flight when the load generator stops are cancelled, and a proxy closes the upstream connections they were using, so a few new upstream connections (and TIME-WAIT on the upstream side) per run are teardown, not churn. ")
	p("*New TIME-WAIT* counts sockets entering TIME-WAIT per run on the target's port and on the upstream's port: about %d on the client side per run is the load generator closing its connections at the end, independent of the request count.\n\n", r.o.conns)
	if r.gwLogTail != "" {
		p("An audit line of the gateway:\n\n```\n%s\n```\n\n", r.gwLogTail)
	}
}

// profileSection writes where the gateway's CPU went under the load, from its pprof build.
func (r *report) profileSection(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("## Profile under load (pprof build of the gateway, same load)\n\n")
	if r.profileErr != "" {
		p("Profile failed: %s\n\n", r.profileErr)
	}
	p("The gateway here is built with `go build -overlay` adding a `net/http/pprof` listener (the repository is untouched); allocations from `runtime.MemStats` (Mallocs, TotalAlloc) before and after the run.\n\n")
	p("| process | requests | CPU µs/req | heap allocs/req | heap bytes/req | profile |\n|---|---:|---:|---:|---:|---|\n")
	for _, pr := range r.profiles {
		p("| %s | %d | %.1f | %.0f | %.0f | `%s` |\n", pr.name, pr.requests, pr.cpuPerReq, pr.allocsPerReq, pr.bytesPerReq, pr.file)
	}
	p("\n")
	for _, pr := range r.profiles {
		p("<details><summary>%s: go tool pprof -top</summary>\n\n```\n%s\n```\n\n", pr.name, pr.top)
		p("Cumulative, selected packages:\n\n```\n%s\n```\n</details>\n\n", pr.topCum)
	}
}

// streamsSection writes the idle-stream runs: memory and goroutines per
// stream, events delivered. It is one table per stream count and the notes
// under them, written in the order they appear.
func (r *report) streamsSection(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	n := r.o.streams
	p("## %d idle SSE streams\n\n", n)
	if r.streamsCapped != "" {
		p("Note: %s.\n\n", r.streamsCapped)
	}
	p("Each target gets %d `GET` streams with `Accept: text/event-stream` (Go client, one goroutine and one HTTP/1.1 connection per stream, %d being opened at a time). ", n, r.o.openConc)
	p("Once all are open the upstream broadcasts %d events (and one every %s); every stream must receive every event sent after it opened. ", r.o.sseEvents, r.o.sseEvery)
	p("Floor and gateway are fresh processes; RSS before = after 3 requests, RSS with streams = after the events, both after 300 ms settling.")
	if r.gwProfiled {
		p(" Goroutines from `/debug/pprof/goroutine` (the gateway is its pprof build here).")
	}
	p("\n\n| target | opened | open time | vs upstream | RSS before MiB | RSS with streams MiB | KiB/stream | goroutines before → after | goroutines/stream | heap / stack KiB per stream | CPU µs per open | events delivered / expected | streams complete |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	var upOpen time.Duration
	var notes []string
	var gwKiB, gwG, flG, gwOpen, flOpen, ngxKiB, gwRSS []float64
	var gwComplete, gwStreams int
	var gwDelivered, gwExpected int64
	heapTops := map[string]string{}
	for _, s := range r.sse {
		if s.name == "upstream" {
			upOpen = s.openTime
		}
		vs := "—"
		openRatio := 0.0
		if upOpen > 0 {
			openRatio = float64(s.openTime) / float64(upOpen)
			vs = fmt.Sprintf("%.2f×", openRatio)
		}
		kib, g, gps, hs, ocpu := "—", "—", "—", "—", "—"
		if s.openCPU > 0 {
			ocpu = fmt.Sprintf("%.0f", float64(s.openCPU.Microseconds())/float64(max(s.opened, 1)))
		}
		if s.heapBefore != nil && s.heapAfter != nil {
			d := func(k string) float64 {
				return (float64(s.heapAfter[k]) - float64(s.heapBefore[k])) / 1024 / float64(max(s.opened, 1))
			}
			hs = fmt.Sprintf("%.1f / %.1f", d("HeapAlloc"), d("Stack"))
		}
		perKiB := 0.0
		if s.rssBeforeKB >= 0 && s.opened > 0 {
			perKiB = float64(s.rssAfterKB-s.rssBeforeKB) / float64(s.opened)
			kib = fmt.Sprintf("%.1f", perKiB)
		}
		perG := -1.0
		if s.gBefore >= 0 && s.gAfter >= 0 {
			g = fmt.Sprintf("%d → %d", s.gBefore, s.gAfter)
			perG = float64(s.gAfter-s.gBefore) / float64(max(s.opened, 1))
			gps = fmt.Sprintf("%.2f", perG)
		}
		switch s.name {
		case "nginx":
			ngxKiB = append(ngxKiB, perKiB)
		case "gateway":
			gwKiB = append(gwKiB, perKiB)
			gwRSS = append(gwRSS, float64(s.rssAfterKB))
			gwOpen = append(gwOpen, openRatio)
			if perG >= 0 {
				gwG = append(gwG, perG)
			}
			gwComplete += s.complete
			gwStreams += s.n
			gwDelivered += s.delivered
			gwExpected += s.expected
		case "floor":
			flOpen = append(flOpen, openRatio)
			if perG >= 0 {
				flG = append(flG, perG)
			}
		}
		if s.heapTop != "" {
			heapTops[s.name] = s.heapTop
		}
		name := s.name
		if r.o.sseRounds > 1 {
			name = fmt.Sprintf("%s (round %d)", s.name, s.round)
		}
		p("| %s | %d/%d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d / %d | %d/%d |\n", name, s.opened, s.n,
			s.openTime.Round(time.Millisecond), vs, mib(s.rssBeforeKB), mib(s.rssAfterKB), kib, g, gps, hs, ocpu,
			s.delivered, s.expected, s.complete, s.opened)
		if s.firstErr != "" {
			note := fmt.Sprintf("%s: %d streams failed to open; first error: %s", s.name, s.openErrs, s.firstErr)
			if s.logTail != "" {
				note += "; its log ends: `" + strings.ReplaceAll(s.logTail, "\n", " | ") + "`"
			}
			notes = append(notes, note)
		}
	}
	for _, n := range notes {
		p("\n%s\n", n)
	}
	if len(gwKiB) > 0 {
		p("\nTargets (medians over %d round(s)):\n\n", len(gwKiB))
		kib := median(gwKiB)
		p("- RSS per stream ≤ 25 KiB: %.1f KiB, %s", kib, verdict(kib <= 25))
		if v := median(ngxKiB); len(ngxKiB) > 0 {
			p(" (nginx: %.1f KiB, %.2f×)", v, kib/v)
		}
		if n < 10000 {
			p(" (at %d streams; the target is stated for 10,000: `-streams 10000`)", n)
		}
		p("\n")
		if n >= 5000 {
			// RSS with the streams open, and what 10,000 would take at
			// the same cost per stream.
			mb := median(gwRSS) * 1024 / 1e6
			proj := mb + (10000-float64(n))*kib*1024/1e6
			p("- 10,000 idle streams ≤ 250 MB: %.0f MB with %d open", mb, n)
			if n != 10000 {
				p(", %.0f MB at 10,000 by the same cost per stream", proj)
			}
			p(", %s\n", verdict(proj <= 250))
		}
		if len(gwG) > 0 && len(flG) > 0 {
			g, f := median(gwG), median(flG)
			p("- goroutines per stream beyond the floor's (plain `net/http` + `httputil.ReverseProxy`): %.2f − %.2f = %.2f, ≤ 2: %s\n", g, f, g-f, verdict(g-f <= 2))
		}
		p("- every stream got every event: %d/%d streams, %d/%d events: %s\n", gwComplete, gwStreams, gwDelivered, gwExpected,
			verdict(gwComplete == gwStreams && gwDelivered == gwExpected))
		p("- opening time vs upstream directly ≤ 1.20×: %.2f× (per round: %s; the floor: %.2f×), %s\n",
			median(gwOpen), ratios(gwOpen), median(flOpen), verdict(median(gwOpen) <= 1.20))
	}
	p("\n")
	for _, name := range []string{"floor", "gateway"} {
		if t := heapTops[name]; t != "" {
			p("<details><summary>%s with the streams open (last round): go tool pprof -top -sample_index=inuse_space</summary>\n\n```\n%s\n```\n</details>\n\n", name, t)
		}
	}
}

// startupSection writes start-up time and the idle footprint.
func (r *report) startupSection(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("## Start-up and idle footprint\n\n")
	p("Time from `exec` to the first accepted TCP connect (polled every 1 ms), and RSS once idle; the gateway with `OIDC_ISSUER_URL=%s` (nothing listens there).\n\n", unreachableIssuer)
	p("| process | starts | listening after (median, min–max) | idle RSS MiB (median) |\n|---|---:|---:|---:|\n")
	for _, s := range r.startups {
		if len(s.listen) == 0 {
			p("| %s | 0 | failed: %s | — |\n", s.name, strings.ReplaceAll(s.failure, "\n", " "))
			continue
		}
		ms, kb := s.listenMS(), s.idleKiB()
		p("| %s | %d | %.1f ms (%.1f–%.1f) | %.1f |\n", s.name, len(s.listen), median(ms), slices.Min(ms), slices.Max(ms), median(kb)/1024)
	}
	if gw := r.startups[0]; len(gw.listen) > 0 {
		ms, kb := gw.listenMS(), gw.idleKiB()
		p("\n- listening within 50 ms with the provider unreachable: %.1f ms median, %s\n", median(ms), verdict(median(ms) <= 50))
		p("- idle RSS ≤ 15 MB: %.1f MiB median (%.1f MB), %s", median(kb)/1024, median(kb)*1024/1e6, verdict(median(kb)*1024 <= 15e6))
		if kb, ok := r.idleKB["gateway"]; ok {
			p("; with the provider reachable and keys loaded: %.1f MiB", float64(kb)/1024)
		}
		p("\n")
	}
	p("\n")
}

func commit(repo string) string {
	cmd := exec.Command("git", "rev-parse", "--short", "HEAD")
	cmd.Dir = repo
	b, err := cmd.Output()
	if err != nil {
		return "no commit"
	}
	s := strings.TrimSpace(string(b))
	if out, err := exec.Command("git", "-C", repo, "status", "--porcelain").Output(); err == nil && len(out) > 0 {
		s += "+dirty"
	}
	return "commit " + s
}

// serversLines writes what the bare servers (-servers) show: how much of the
// gateway's CPU per request net/http's server costs beyond a loop around
// its own request parser, against how far the gateway is from 2× nginx.
func (r *report) serversLines(b *strings.Builder) {
	nh, own := r.samples[nameServerNetHTTP], r.samples[nameServerOwnLoop]
	if len(nh) == 0 || len(own) == 0 {
		return
	}
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	var diff []float64
	for i := range min(len(nh), len(own)) {
		diff = append(diff, nh[i].cpuPerReq()-own[i].cpuPerReq())
	}
	d := median(diff)
	p("bare servers, CPU per request: net/http's server %.1f µs, a loop around its request parser %.1f µs", medianOf(nh, sample.cpuPerReq), medianOf(own, sample.cpuPerReq))
	if ng := r.samples[nameServerNginx]; len(ng) > 0 {
		p(", nginx %.1f µs", medianOf(ng, sample.cpuPerReq))
	}
	p("; net/http's server beyond the loop: **%.1f µs** (per round: %s)", d, ratios(diff))
	gw, ngx := r.samples["gateway"], r.samples["nginx"]
	if len(gw) > 0 && len(ngx) > 0 {
		over := medianOf(gw, sample.cpuPerReq) - 2*medianOf(ngx, sample.cpuPerReq)
		p("; the gateway is %.1f µs per request over 2× nginx", over)
		if over > 0 {
			p(" (replacing net/http's server and keeping its parser would recover at most %.0f%% of that)", 100*max(d, 0)/over)
		}
	}
	p("  \n")
}
