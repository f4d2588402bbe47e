package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Names of the optional load targets.
const (
	nameAuditOff = "gateway, audit off"
	nameBefore   = "before"
)

// target is one thing measured under load.
type target struct {
	name string
	url  string
	pid  int
	port int
	proc *child // nil for the upstream (this process)
	tree bool   // its CPU and RSS include its child processes (nginx with workers)
}

// rssKB is the target's RSS, with its children's when it has workers.
func (t *target) rssKB() int64 {
	if t.tree {
		var kb int64
		for _, pid := range withChildren(t.pid) {
			kb += rssKB(pid)
		}
		return kb
	}
	return rssKB(t.pid)
}

// cpu is the target's utime+stime, with its children's when it has workers.
func (t *target) cpu() (time.Duration, error) {
	if t.tree {
		return treeCPUTime(t.pid)
	}
	return cpuTime(t.pid)
}

// sample is one load run against one target.
type sample struct {
	res         loadResult
	cpu         time.Duration // utime+stime of the target's process
	peakKB      int64
	twClient    int // new TIME-WAIT sockets on the target's port
	twUpstream  int // new TIME-WAIT sockets on the upstream's port
	upConns     int64
	logBytes    int64
	interleaved int // position in its round
}

func (s sample) cpuPerReq() float64 {
	if s.res.requests == 0 {
		return 0
	}
	return float64(s.cpu.Microseconds()) / float64(s.res.requests)
}

func (e *env) loadPhase(ctx context.Context, rep *report) error {
	floor, err := e.startFloor("")
	defer floor.stop()
	if err != nil {
		return err
	}
	gw, err := e.startGateway(e.gwBin, e.issURL, nil, true)
	defer gw.stop()
	if err != nil {
		return err
	}
	targets := []*target{
		{name: "upstream", url: e.upURL + "/mcp", pid: os.Getpid(), port: e.upPort},
		{name: "floor", url: fmt.Sprintf("http://127.0.0.1:%d/mcp", floor.port), pid: floor.pid, port: floor.port, proc: floor},
		{name: "gateway", url: fmt.Sprintf("http://127.0.0.1:%d/mcp", gw.port), pid: gw.pid, port: gw.port, proc: gw},
	}
	if e.nginx != "" {
		ngx, err := e.startNginx(e.o.nginxWorkers)
		defer ngx.stop()
		if err != nil {
			return fmt.Errorf("nginx: %w", err)
		}
		targets = append(targets, &target{name: "nginx", url: fmt.Sprintf("http://127.0.0.1:%d/mcp", ngx.port), pid: ngx.pid, port: ngx.port, proc: ngx, tree: e.o.nginxWorkers > 1})
	}
	if e.o.auditOff {
		quiet, err := e.startGateway(e.gwBin, e.issURL, []string{"LOG_LEVEL=warn"}, true)
		defer quiet.stop()
		if err != nil {
			return fmt.Errorf("gateway, audit off: %w", err)
		}
		targets = append(targets, &target{name: nameAuditOff, url: fmt.Sprintf("http://127.0.0.1:%d/mcp", quiet.port), pid: quiet.pid, port: quiet.port, proc: quiet})
	}
	if e.o.compare != "" {
		before, err := e.startGateway(e.o.compare, e.issURL, nil, true)
		defer before.stop()
		if err != nil {
			return fmt.Errorf("gateway before (-compare): %w", err)
		}
		targets = append(targets, &target{name: nameBefore, url: fmt.Sprintf("http://127.0.0.1:%d/mcp", before.port), pid: before.pid, port: before.port, proc: before})
	}
	if e.o.servers {
		bare, stop, err := e.startBareServers()
		defer stop()
		if err != nil {
			return err
		}
		targets = append(targets, bare...)
	}
	rep.idleKB = map[string]int64{}
	for _, t := range targets {
		if err := e.checkPost(t.url); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		if t.proc != nil {
			rep.idleKB[t.name] = t.rssKB()
		}
	}
	e.logf("load: %s, %d rounds x %s per target, warm-up %s", e.load.name(), e.o.rounds, e.o.duration, e.o.warmup)
	for _, t := range targets {
		if _, err := e.load.load(ctx, t.url, e.o.warmup); err != nil {
			return err
		}
	}
	rep.samples = map[string][]sample{}
	for round := range e.o.rounds {
		for i := range targets {
			// Rotate the order each round so no target always runs first.
			t := targets[(i+round)%len(targets)]
			s, err := e.measure(ctx, t)
			if err != nil {
				return err
			}
			s.interleaved = i
			rep.samples[t.name] = append(rep.samples[t.name], s)
			e.logf("load: round %d %-8s %8.0f req/s  p50 %6s  p99 %6s  CPU %6.1f µs/req  RSS peak %5.1f MiB  non-2xx %d",
				round+1, t.name, s.res.rps(), s.res.p50, s.res.p99, s.cpuPerReq(), float64(s.peakKB)/1024, s.res.non2xx)
		}
	}
	rep.computeRatios()
	rep.gwLogTail = lastOK(gw.logTail(16 << 10))
	return nil
}

func (e *env) measure(ctx context.Context, t *target) (sample, error) {
	var s sample
	if t.proc != nil {
		t.proc.truncateLog()
	}
	twc0, twu0 := timeWaitSet(t.port), timeWaitSet(e.upPort)
	up0 := e.up.conns.Load()
	cpu0, err := t.cpu()
	if err != nil {
		return s, err
	}
	stop := make(chan struct{})
	peak := peakRSS(t.rssKB, 100*time.Millisecond, stop)
	s.res, err = e.load.load(ctx, t.url, e.o.duration)
	close(stop)
	s.peakKB = <-peak
	if err != nil {
		return s, err
	}
	cpu1, err := t.cpu()
	if err != nil {
		return s, fmt.Errorf("%s: %w", t.name, err)
	}
	s.cpu = cpu1 - cpu0
	time.Sleep(100 * time.Millisecond) // let the closing handshakes finish
	s.twClient, s.twUpstream = newTimeWait(twc0, t.port), newTimeWait(twu0, e.upPort)
	s.upConns = e.up.conns.Load() - up0
	if t.proc != nil {
		s.logBytes = t.proc.logSize()
	}
	return s, nil
}

// profileResult is one CPU profile taken under load.
type profileResult struct {
	name          string
	file          string
	requests      int64
	cpuPerReq     float64
	allocsPerReq  float64
	bytesPerReq   float64
	top, topCum   string
	goroutines    int
	profileSecond int
}

// profilePhase profiles the floor and the pprof build of the gateway under
// the same load, and counts heap allocations per request from MemStats.
func (e *env) profilePhase(ctx context.Context, rep *report) error {
	if e.gwProf == "" {
		return fmt.Errorf("no pprof build of the gateway")
	}
	dur := min(e.o.duration, 10*time.Second)
	dir := e.resultsDir()
	for _, name := range []string{"floor", "gateway"} {
		pport, err := freePort()
		if err != nil {
			return err
		}
		paddr := fmt.Sprintf("127.0.0.1:%d", pport)
		var c *child
		if name == "floor" {
			c, err = e.startFloor(paddr)
		} else {
			c, err = e.startGateway(e.gwProf, e.issURL, []string{"MOP_BENCH_PPROF=" + paddr}, true)
		}
		if err != nil {
			c.stop()
			return err
		}
		url := fmt.Sprintf("http://127.0.0.1:%d/mcp", c.port)
		if _, err := e.load.load(ctx, url, time.Second); err != nil {
			c.stop()
			return err
		}
		pr, err := e.profileOne(ctx, name, c, url, paddr, dur, dir)
		c.stop()
		if err != nil {
			return err
		}
		rep.profiles = append(rep.profiles, pr)
	}
	return nil
}

func (e *env) profileOne(ctx context.Context, name string, c *child, url, paddr string, dur time.Duration, dir string) (profileResult, error) {
	pr := profileResult{name: name, file: filepath.Join(dir, name+".cpu.pprof"), profileSecond: int(dur/time.Second) - 1}
	m0, err := memStats(paddr, false)
	if err != nil {
		return pr, err
	}
	cpu0, _ := cpuTime(c.pid)
	profErr := make(chan error, 1)
	go func() {
		profErr <- fetchTo(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", paddr, pr.profileSecond), pr.file)
	}()
	res, err := e.load.load(ctx, url, dur)
	if err != nil {
		return pr, err
	}
	cpu1, _ := cpuTime(c.pid)
	m1, err := memStats(paddr, false)
	if err != nil {
		return pr, err
	}
	if err := <-profErr; err != nil {
		return pr, err
	}
	pr.requests = res.requests
	if res.requests > 0 {
		// The two MemStats reads and the profile request add a few
		// hundred allocations in all: noise next to the run's.
		pr.allocsPerReq = float64(m1["Mallocs"]-m0["Mallocs"]) / float64(res.requests)
		pr.bytesPerReq = float64(m1["TotalAlloc"]-m0["TotalAlloc"]) / float64(res.requests)
		pr.cpuPerReq = float64((cpu1 - cpu0).Microseconds()) / float64(res.requests)
	}
	pr.top = pprofTop(pr.file, "-top", "-nodecount=22")
	pr.topCum = pprofTop(pr.file, "-top", "-cum", "-nodecount=30",
		"-show=mcp-oauth-proxy|hclog|go-jose|go-oidc|crypto|encoding/json|net/http|httputil|syscall|bufio|runtime.mallocgc|runtime.gcBgMarkWorker")
	return pr, nil
}

// resultsDir is where profiles are kept: beside the report, or in the
// temporary directory when there is no report file.
func (e *env) resultsDir() string {
	dir := filepath.Dir(e.o.out)
	if e.o.out == "" {
		dir = e.tmp
	}
	_ = os.MkdirAll(dir, 0o755)
	return dir
}

// memStats reads the runtime.MemStats lines at the end of
// /debug/pprof/heap?debug=1 ("# Stack = inuse / sys": the in-use number),
// after a GC if gc.
func memStats(paddr string, gc bool) (map[string]uint64, error) {
	url := "http://" + paddr + "/debug/pprof/heap?debug=1"
	if gc {
		url += "&gc=1"
	}
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := map[string]uint64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# "); ok {
			if k, v, ok := strings.Cut(rest, " = "); ok {
				v, _, _ = strings.Cut(v, " ")
				if n, err := strconv.ParseUint(v, 10, 64); err == nil {
					m[k] = n
				}
			}
		}
	}
	if _, ok := m["Mallocs"]; !ok {
		return nil, fmt.Errorf("no MemStats at %s", paddr)
	}
	return m, sc.Err()
}

// goroutines reads the total of /debug/pprof/goroutine?debug=1.
func goroutines(paddr string) int {
	resp, err := http.Get("http://" + paddr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	var n int
	if _, err := fmt.Sscanf(line, "goroutine profile: total %d", &n); err != nil {
		return -1
	}
	return n
}

func fetchTo(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func pprofTop(file string, args ...string) string {
	cmd := exec.Command("go", append([]string{"tool", "pprof"}, append(args, file)...)...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("go tool pprof: %v\n%s", err, b)
	}
	return strings.TrimSpace(string(b))
}

// lastOK returns the last audit line with status 200 (the very last ones
// are often requests cancelled when the load generator stopped).
func lastOK(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], `"status":200`) {
			return lines[i]
		}
	}
	return lastLines(s, 1)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
