package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/testkit"
)

// soakMaxRequests bounds each of the soak's two loads.
const soakMaxRequests = 2_500_000

// soakHeapTolerance is how much more live heap the second load may leave
// than the first: GC and allocator noise, far below what any per-request
// leak would add over hundreds of thousands of requests.
const soakHeapTolerance = 2 << 20

// TestSoak is a bounded load. It runs only
// when asked: SOAK_DURATION (its length, e.g. 30s) or SOAK=1 (30 s); test.sh
// sets SOAK_DURATION. Several goroutines send, as fast as loopback allows, a
// mix of valid, invalid, rate-limited and streaming requests through run()
// to a real upstream, in three loads: a priming one for a third of the
// duration, then two of as many requests each. The gateway must answer no
// 5xx; after each load its goroutines and open file descriptors must come
// back near their baseline; and the second measured load must leave the
// live heap no higher than the first did, within soakHeapTolerance, so a
// leak shows whatever the machine's speed (a fixed ceiling over the
// baseline does not: a faster machine sends more requests and keeps more
// live heap). SOAK_HEAPPROFILE=file writes a heap
// profile taken after the last load, while the gateway still runs.
func TestSoak(t *testing.T) {
	duration := 30 * time.Second
	switch v := os.Getenv("SOAK_DURATION"); {
	case v != "":
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("SOAK_DURATION %q is not a positive duration", v)
		}
		duration = d
	case os.Getenv("SOAK") == "":
		t.Skip("soak test: set SOAK_DURATION (e.g. 30s) or SOAK=1 to run it; test.sh does")
	}
	const (
		workers  = 8
		subjects = 200
	)

	subs := make([]string, subjects)
	for i := range subs {
		subs[i] = fmt.Sprintf("user-%d", i)
	}
	g := startSoakGateway(t, map[string]string{
		"ALLOW_SUBS":      strings.Join(append(subs, "hot"), ","),
		"RATE_LIMIT_RPM":  "300",       // 5/s, burst 300: "hot" runs out from 75 requests/s, the others below 7500/s
		"TRUSTED_PROXIES": "127.0.0.1", // so simulated clients have their own addresses
		"LOG_LEVEL":       "info",      // every admitted request writes an audit line
	}, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 3 {
				fmt.Fprintf(w, "id: %d\ndata: {\"n\":%d}\n\n", i, i)
				w.(http.Flusher).Flush()
				time.Sleep(time.Millisecond)
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`)
	})
	tokens := make([]string, subjects)
	for i, s := range subs {
		tokens[i] = g.token(t, s, nil)
	}
	hot := g.token(t, "hot", nil)
	expired := mustToken(t, &g.gateway, "user-1", gwAudience, -time.Hour)
	wrongAud := mustToken(t, &g.gateway, "user-1", "https://other.example.com", time.Hour)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers, DisableCompression: true}, Timeout: 30 * time.Second}
	send := func(method, path, token, xff string, stream bool) (int, error) {
		req, err := http.NewRequest(method, g.base+path, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		if err != nil {
			return 0, err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		if stream {
			req.Header.Set("Accept", "text/event-stream")
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if stream && resp.StatusCode == 200 {
			events := 0
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "data:") {
					events++
				}
			}
			if events != 3 {
				return resp.StatusCode, fmt.Errorf("stream: %d events, want 3", events)
			}
			return resp.StatusCode, sc.Err()
		}
		_, err = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, err
	}
	// Warm up from every worker at once, so the gateway's pool of upstream
	// connections is as large before the baseline as during the load.
	var warm sync.WaitGroup
	for w := range workers {
		warm.Add(1)
		go func() {
			defer warm.Done()
			for i := range 20 {
				if st, err := send("GET", "/mcp", tokens[w], "192.0.2.1", i%2 == 0); err != nil || st != 200 {
					t.Errorf("warm-up: %d, %v", st, err)
					return
				}
			}
		}()
	}
	warm.Wait()
	client.CloseIdleConnections()
	base := measure(t)

	// load sends the mix from every worker until stop or max requests.
	load := func(name string, stop time.Time, max int64) int {
		var (
			total   atomic.Int64
			mu      sync.Mutex
			counts  = map[string]int{}
			errs    []string
			wg      sync.WaitGroup
			started = time.Now()
		)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				local := map[string]int{}
				var localErrs []string
				for i := 0; time.Now().Before(stop) && total.Add(1) <= max; i++ {
					var (
						kind, method, token, xff = "valid", "POST", tokens[(w*7919+i)%subjects], fmt.Sprintf("192.0.2.%d", w)
						stream                   bool
					)
					switch i % 10 {
					case 0, 1, 2:
					case 3:
						kind, method, stream = "stream", "GET", true
					case 4, 5:
						kind, token = "hot", hot // the per-subject limit
					case 6:
						kind, token = "no token", ""
					case 7:
						// An attacker per worker, each with its own address:
						// 60 failures a minute, then 429 before any
						// signature check.
						kind, token, xff = "invalid", wrongAud, fmt.Sprintf("198.51.100.%d", w)
					case 8:
						kind, token, xff = "invalid", expired, fmt.Sprintf("198.51.100.%d", w)
					case 9:
						kind, token, xff = "invalid", "garbage.not.ajwt", fmt.Sprintf("198.51.100.%d", w)
					}
					st, err := send(method, "/mcp", token, xff, stream)
					if err != nil {
						localErrs = append(localErrs, err.Error())
						continue
					}
					local[fmt.Sprintf("%s %d", kind, st)]++
				}
				mu.Lock()
				defer mu.Unlock()
				for k, v := range local {
					counts[k] += v
				}
				errs = append(errs, localErrs...)
			}()
		}
		wg.Wait()
		elapsed := time.Since(started)
		n := 0
		for k, v := range counts {
			n += v
			if strings.Contains(k, " 5") {
				t.Errorf("%s: %d responses %q", name, v, k)
			}
		}
		t.Logf("%s: %d requests in %v (%.0f/s): %v", name, n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), counts)
		if len(errs) > 0 {
			t.Errorf("%s: %d client errors, first: %s", name, len(errs), errs[0])
		}
		for _, k := range []string{"valid 200", "stream 200", "hot 429", "invalid 401", "invalid 429", "no token 401"} {
			if counts[k] == 0 && name == "priming load" { // later loads may find buckets empty
				t.Errorf("%s: no %q responses: the mix did not exercise it", name, k)
			}
		}
		client.CloseIdleConnections()
		return n
	}
	// settled waits until goroutines and open files are back near base and
	// returns the state then.
	settled := func(name string) sample {
		var s sample
		deadline := time.Now().Add(10 * time.Second)
		for {
			s = measure(t)
			if s.goroutines <= base.goroutines+20 && s.fds <= base.fds+20 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("after %s: %s; baseline %s", name, s, base)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		return s
	}

	// The priming load brings every bounded structure (token cache,
	// limiters, connection pools) to the state the load keeps it in, and
	// every subject's bucket to what the load leaves of it, so the two
	// loads after it are alike: as many requests each (a slower moment of
	// the machine may cut one short, which can only lower its heap).
	n := load("priming load", time.Now().Add(duration/3), soakMaxRequests)
	afterPriming := settled("the priming load")
	load("first load", time.Now().Add(duration), int64(n))
	afterFirst := settled("the first load")
	load("second load", time.Now().Add(duration), int64(n))
	afterSecond := settled("the second load")
	if f := os.Getenv("SOAK_HEAPPROFILE"); f != "" {
		writeHeapProfile(t, f)
	}
	t.Logf("baseline %s; after the priming load %s; after the first %s; after the second %s; %d log bytes written beyond the first MiB and dropped",
		base, afterPriming, afterFirst, afterSecond, g.logs.dropped())
	if afterSecond.heap > afterFirst.heap+soakHeapTolerance {
		t.Errorf("the second load left the live heap at %.1f MiB, the first at %.1f MiB: more than %d MiB growth for as many requests",
			mib(afterSecond.heap), mib(afterFirst.heap), soakHeapTolerance>>20)
	}
}

// soakGateway is an in-process run() whose log is a headWriter.
type soakGateway struct {
	gateway
	logs *headWriter
}

// startSoakGateway is startGateway with a bounded log: the soak's audit
// lines (hundreds of bytes per admitted request) would otherwise pile up in
// the test's memory and be measured as the gateway's heap.
func startSoakGateway(t *testing.T, env map[string]string, upstream http.HandlerFunc) *soakGateway {
	t.Helper()
	g := &soakGateway{gateway: gateway{is: testkit.StartIssuer(t, nil)}, logs: &headWriter{max: 1 << 20}}
	g.logs.b.Grow(g.logs.max) // allocated before the baseline, never grown by a load
	g.up = httptest.NewServer(upstream)
	t.Cleanup(g.up.Close)
	full := gatewayEnv(g.is.URL, map[string]string{"OIDC_AUDIENCE": gwAudience, "RESOURCE_URL": gwAudience, "MCP_UPSTREAM_URL": g.up.URL})
	for k, v := range env {
		full[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"mcp-oauth-proxy"}, envOf(full), io.Discard, g.logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("run did not return within 15 s of its context ending")
		}
	})
	var addr string
	testkit.WaitFor(t, "the listening log line", 5*time.Second, func() bool { addr = listenAddr(g.logs.String()); return addr != "" })
	g.base = "http://" + addr
	waitReady(t, g.base)
	return g
}

// headWriter keeps the first max bytes written to it and counts the rest.
type headWriter struct {
	mu   sync.Mutex
	b    bytes.Buffer
	max  int
	drop int64
}

func (h *headWriter) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	keep := min(len(p), max(h.max-h.b.Len(), 0))
	h.b.Write(p[:keep])
	h.drop += int64(len(p) - keep)
	return len(p), nil
}

func (h *headWriter) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.b.String()
}

func (h *headWriter) dropped() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.drop
}

func writeHeapProfile(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Errorf("SOAK_HEAPPROFILE: %v", err)
		return
	}
	defer f.Close()
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Errorf("SOAK_HEAPPROFILE: %v", err)
	}
}

type sample struct {
	goroutines, fds int
	heap            uint64
}

func (s sample) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, heap %.1f MiB", s.goroutines, s.fds, mib(s.heap))
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// measure samples goroutines, open files and the live heap. Two collections:
// the first moves sync.Pool contents to the pools' victim caches, the second
// frees them.
func measure(t *testing.T) sample {
	t.Helper()
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Logf("open fds: %v", err)
	}
	return sample{goroutines: runtime.NumGoroutine(), fds: len(fds), heap: m.HeapAlloc}
}
