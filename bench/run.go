package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/devissuer"
)

// Identity the bench's token carries; the gateway allows exactly it.
const (
	benchSub      = "bench-user"
	benchAudience = "bench-mcp"
)

type options struct {
	repo       string
	gatewayBin string
	loadgen    string
	out        string
	quick      bool

	rounds   int
	duration time.Duration
	warmup   time.Duration
	threads  int
	conns    int

	streams   int
	openConc  int
	sseEvery  time.Duration
	sseEvents int
	sseRounds int

	floorFlush   time.Duration
	nginx        string
	nginxWorkers int
	compare      string
	auditOff     bool

	think   time.Duration
	servers bool

	startups int
	profile  string
	skip     string
}

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.repo, "repo", ".", "repository root the gateway is built from (go build -o <tmp> .)")
	fs.StringVar(&o.gatewayBin, "gateway", "", "use this gateway binary instead of building one")
	fs.StringVar(&o.loadgen, "loadgen", "auto", "auto (wrk if on PATH, else go), wrk or go")
	fs.StringVar(&o.out, "out", "bench/results/latest.md", "also write the report here (empty: stdout only)")
	fs.BoolVar(&o.quick, "quick", false, "a run of about 40 s: 2 rounds of 3 s, fewer start-ups")
	fs.IntVar(&o.rounds, "rounds", 3, "interleaved rounds of (upstream, floor, gateway)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "load per target per round")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "load per target before the rounds, not measured")
	fs.DurationVar(&o.floorFlush, "floor-flush-interval", -1, "the floor's ReverseProxy.FlushInterval (-1ns: flush every write, as the gateway; 0: Go's default)")
	fs.StringVar(&o.nginx, "nginx", "auto", "the second floor, nginx as a bare keep-alive proxy: auto (if installed), never, or the nginx binary")
	fs.IntVar(&o.nginxWorkers, "nginx-workers", 1, "nginx's worker processes: 1 runs one process doing all the work (nginx at its cheapest per request); 2 is Debian's default on this machine (worker_processes auto), its CPU and RSS summed over master and workers")
	fs.StringVar(&o.compare, "compare", "", "another gateway binary (e.g. built from main) measured side by side as \"before\" in the load and SSE phases")
	fs.BoolVar(&o.auditOff, "audit-off", true, "also load the gateway with LOG_LEVEL=warn (no audit line), to show what the audit log costs")
	fs.IntVar(&o.threads, "threads", 2, "wrk threads")
	fs.DurationVar(&o.think, "think", 0, "pause of each connection between its requests (whole ms; 0: back to back). With it every target gets about the same request rate, conns/(think+latency), so CPU per request is compared at equal load rather than at each one's saturation")
	fs.BoolVar(&o.servers, "servers", false, "also load three bare servers that answer from memory (nginx, net/http's server, and a loop around net/http's request parser): what the server side alone costs")
	fs.IntVar(&o.conns, "conns", 32, "concurrent keep-alive connections of the load generator")
	fs.IntVar(&o.streams, "streams", 2000, "idle SSE streams to hold open (10000 for the full target)")
	fs.IntVar(&o.openConc, "open-concurrency", 64, "SSE streams being opened at once")
	fs.DurationVar(&o.sseEvery, "sse-every", 10*time.Second, "the upstream sends every open stream an event this often (0: only the test's)")
	fs.IntVar(&o.sseEvents, "sse-events", 3, "events broadcast to every stream once all are open")
	fs.IntVar(&o.sseRounds, "sse-rounds", 3, "rounds of the SSE test (fresh processes each)")
	fs.IntVar(&o.startups, "startups", 5, "gateway starts timed with the provider unreachable")
	fs.StringVar(&o.profile, "profile", "auto", "CPU-profile gateway and floor under load: auto (if gateway/floor CPU > 1.10), always, never")
	fs.StringVar(&o.skip, "skip", "", "phases to skip, comma-separated: load, sse, startup")
	if err := fs.Parse(args[1:]); err != nil {
		return nil, err
	}
	if o.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("rounds", func() { o.rounds = 2 })
		def("duration", func() { o.duration = 3 * time.Second })
		def("warmup", func() { o.warmup = time.Second })
		def("startups", func() { o.startups = 3 })
		def("sse-rounds", func() { o.sseRounds = 1 })
	}
	if o.rounds < 1 || o.duration < time.Second || o.conns < 1 || o.streams < 0 || o.openConc < 1 || o.sseRounds < 1 {
		return nil, errors.New("rounds, conns, open-concurrency and sse-rounds must be positive, duration at least 1s")
	}
	if o.think < 0 || o.think%time.Millisecond != 0 {
		return nil, errors.New("think must be whole milliseconds (wrk's delay() counts in ms), or 0")
	}
	return o, nil
}

func (o *options) skips(phase string) bool {
	for _, s := range strings.Split(o.skip, ",") {
		if strings.TrimSpace(s) == phase {
			return true
		}
	}
	return false
}

// env is the shared state of one bench run.
type env struct {
	o        *options
	tmp      string
	self     string // this binary, for floor-proxy
	gwBin    string
	gwProf   string // the gateway built with a pprof listener, or ""
	nginx    string // the nginx binary, or "": no nginx floor
	nofile   uint64 // RLIMIT_NOFILE, as raised
	up       *upstream
	upURL    string
	upPort   int
	issURL   string
	token    string
	load     loader
	progress io.Writer
}

// run is the whole benchmark, in the order the report reads: options,
// the upstream and issuer, each target's process, the load rounds, the
// profile, the stream runs, start-up. It is long because each phase needs
// what the ones before it started, and it stops them on every way out;
// the phases' work lives in their own functions.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	started := time.Now()

	nofile := raiseNoFile(1 << 20)
	e := &env{o: o, progress: stderr, nofile: nofile}
	if e.tmp, err = os.MkdirTemp("", "mop-bench-"); err != nil {
		return err
	}
	defer os.RemoveAll(e.tmp)
	if e.self, err = os.Executable(); err != nil {
		return err
	}

	// The gateway binary, and a copy with a pprof listener for goroutine
	// counts and CPU profiles (never used for the timed load rounds).
	if o.gatewayBin != "" {
		e.gwBin = o.gatewayBin
	} else {
		e.gwBin = filepath.Join(e.tmp, "mcp-oauth-proxy")
		e.logf("building the gateway: go build -o %s . (in %s)", e.gwBin, o.repo)
		if err := goBuild(ctx, o.repo, e.gwBin, ""); err != nil {
			return err
		}
	}
	if p, err := buildProfiled(ctx, o.repo, e.tmp); err != nil {
		e.logf("no pprof build of the gateway (goroutine counts and profile skipped): %v", err)
	} else {
		e.gwProf = p
	}

	switch o.nginx {
	case "never":
	case "auto":
		if e.nginx = nginxBin(); e.nginx == "" {
			e.logf("nginx not installed (Debian: apt-get install nginx-light): no nginx floor")
		}
	default:
		e.nginx = o.nginx
	}

	// Upstream and issuer, in this process.
	e.up = newUpstream()
	go e.up.ticker(ctx, o.sseEvery)
	if e.upURL, err = serveLoopback(ctx, e.up, e.up.connState); err != nil {
		return err
	}
	e.upPort = urlPort(e.upURL)
	iss, err := devissuer.New()
	if err != nil {
		return err
	}
	if e.issURL, err = serveLoopback(ctx, iss, nil); err != nil {
		return err
	}
	iss.URL = e.issURL
	if e.token, err = iss.AccessToken(benchSub, benchAudience, 2*time.Hour, nil); err != nil {
		return err
	}

	switch o.loadgen {
	case "auto", "wrk":
		if bin, lerr := exec.LookPath("wrk"); lerr == nil {
			e.load, err = newWrkLoader(bin, e.tmp, e.token, o.threads, o.conns, o.think)
			if err != nil {
				return err
			}
		} else if o.loadgen == "wrk" {
			return fmt.Errorf("wrk not found: %w", lerr)
		}
	case "go":
	default:
		return fmt.Errorf("-loadgen %q is not auto, wrk or go", o.loadgen)
	}
	if e.load == nil {
		e.load = &goLoader{token: e.token, conns: o.conns, think: o.think}
	}

	rep := &report{o: o, loadName: e.load.name(), nofile: nofile, gwProfiled: e.gwProf != ""}
	if !o.skips("load") {
		if err := e.loadPhase(ctx, rep); err != nil {
			return err
		}
		if o.profile == "always" || (o.profile == "auto" && rep.cpuRatio > 1.10) {
			if err := e.profilePhase(ctx, rep); err != nil {
				e.logf("profile: %v", err)
				rep.profileErr = err.Error()
			}
		}
	}
	// Each stream is two descriptors in the proxy (client and upstream
	// side) and two in this process (client and upstream server).
	if most := int(nofile-256) / 2; o.streams > most {
		e.logf("sse: RLIMIT_NOFILE is %d (the hard limit here): %d streams instead of %d", nofile, most, o.streams)
		rep.streamsCapped = fmt.Sprintf("asked for %d streams; RLIMIT_NOFILE's hard limit %d (no CAP_SYS_RESOURCE to raise it) allows %d (2 descriptors per stream in the proxy and in the bench)", o.streams, nofile, most)
		o.streams = most
	}
	if !o.skips("sse") && o.streams > 0 {
		if err := e.ssePhase(ctx, rep); err != nil {
			return err
		}
	}
	if !o.skips("startup") && o.startups > 0 {
		if err := e.startupPhase(ctx, rep); err != nil {
			return err
		}
	}
	rep.elapsed = time.Since(started)
	text := rep.markdown()
	fmt.Fprint(stdout, text)
	if o.out != "" {
		if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err == nil {
			if err := os.WriteFile(o.out, []byte(text), 0o644); err != nil {
				e.logf("write %s: %v", o.out, err)
			}
		}
	}
	return nil
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.progress, "bench: "+format+"\n", args...)
}

func goBuild(ctx context.Context, dir, out, overlay string) error {
	args := []string{"build", "-o", out}
	if overlay != "" {
		args = append(args, "-overlay", overlay)
	}
	cmd := exec.CommandContext(ctx, "go", append(args, ".")...)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return nil
}

// profiledMain is added to the gateway's main package with go build
// -overlay, so the repository is untouched: with MOP_BENCH_PPROF set, the
// binary serves /debug/pprof on that address.
const profiledMain = `package main

import (
	benchnet "net"
	benchhttp "net/http"
	benchpprof "net/http/pprof"
	benchos "os"
)

func init() {
	addr := benchos.Getenv("MOP_BENCH_PPROF")
	if addr == "" {
		return
	}
	mux := benchhttp.NewServeMux()
	mux.HandleFunc("/debug/pprof/", benchpprof.Index)
	mux.HandleFunc("/debug/pprof/profile", benchpprof.Profile)
	ln, err := benchnet.Listen("tcp", addr)
	if err != nil {
		panic(err)
	}
	go func() { _ = benchhttp.Serve(ln, mux) }()
}
`

func buildProfiled(ctx context.Context, repo, tmp string) (string, error) {
	abs, err := filepath.Abs(repo)
	if err != nil {
		return "", err
	}
	src := filepath.Join(tmp, "bench_pprof.go")
	if err := os.WriteFile(src, []byte(profiledMain), 0o644); err != nil {
		return "", err
	}
	overlay := filepath.Join(tmp, "overlay.json")
	js := fmt.Sprintf(`{"Replace":{%q:%q}}`, filepath.Join(abs, "zz_bench_pprof.go"), src)
	if err := os.WriteFile(overlay, []byte(js), 0o644); err != nil {
		return "", err
	}
	out := filepath.Join(tmp, "mcp-oauth-proxy-pprof")
	return out, goBuild(ctx, repo, out, overlay)
}

// startFloor starts the floor proxy on a free port.
func (e *env) startFloor(pprofAddr string) (*child, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"floor-proxy", "-upstream", e.upURL, "-listen", fmt.Sprintf("127.0.0.1:%d", port),
		"-flush-interval", e.o.floorFlush.String()}
	if pprofAddr != "" {
		args = append(args, "-pprof", pprofAddr)
	}
	c, err := startChild("floor", e.self, args, []string{"PATH=" + os.Getenv("PATH")},
		filepath.Join(e.tmp, fmt.Sprintf("floor-%d.log", port)), port)
	if err != nil {
		return nil, err
	}
	return c, waitListening(c, 10*time.Second)
}

// startGateway starts bin on a free port against issuer; ready waits for
// /readyz (the provider's keys loaded).
func (e *env) startGateway(bin, issuer string, extraEnv []string, ready bool) (*child, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	envv := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"MCP_UPSTREAM_URL=" + e.upURL,
		"OIDC_ISSUER_URL=" + issuer,
		"OIDC_AUDIENCE=" + benchAudience,
		fmt.Sprintf("RESOURCE_URL=http://127.0.0.1:%d/mcp", port),
		"ALLOW_SUBS=" + benchSub,
		"RATE_LIMIT_RPM=100000000",
		// One subject holds every connection and every idle stream of the
		// bench; no per-subject bound on requests in flight (a gateway from
		// before the setting ignores it).
		"MAX_CONCURRENT_PER_SUBJECT=0",
		"LOG_LEVEL=info",
		"LOG_FORMAT=json",
		"LISTEN_HOST=127.0.0.1",
		"PORT=" + strconv.Itoa(port),
	}
	c, err := startChild("gateway", bin, nil, append(envv, extraEnv...),
		filepath.Join(e.tmp, fmt.Sprintf("gateway-%d.log", port)), port)
	if err != nil {
		return nil, err
	}
	if !ready {
		return c, nil
	}
	if err := waitListening(c, 10*time.Second); err != nil {
		return c, err
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c, nil
			}
		}
		if time.Now().After(deadline) || c.exited() {
			return c, fmt.Errorf("gateway not ready: %v\n%s", err, c.logTail(2000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitListening(c *child, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", c.port), time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if c.exited() || time.Now().After(deadline) {
			return fmt.Errorf("%s never listened on %d: %v\n%s", c.name, c.port, err, c.logTail(2000))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkPost sends one authorised POST and wants 200 with the upstream's reply.
func (e *env) checkPost(url string) error {
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(rpcRequest))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(b) != rpcReply {
		return fmt.Errorf("POST %s: %d %q", url, resp.StatusCode, b)
	}
	return nil
}

func urlPort(u string) int {
	i := strings.LastIndexByte(u, ':')
	p, _ := strconv.Atoi(strings.TrimRight(u[i+1:], "/"))
	return p
}
