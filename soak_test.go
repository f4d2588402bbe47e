package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSoak is a bounded load (issue 6 item 6): several goroutines send, as
// fast as loopback allows, a mix of valid, invalid, rate-limited and
// streaming requests through run() to a real upstream for SOAK_DURATION
// (default 30 s; skipped with -short), at most soakMaxRequests in all. The
// gateway must answer no 5xx, and afterwards its goroutines, open file
// descriptors and heap must come back near their baseline.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test; SOAK_DURATION sets its length")
	}
	duration := 30 * time.Second
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SOAK_DURATION: %v", err)
		}
		duration = d
	}
	const (
		workers         = 8
		soakMaxRequests = 5_000_000
		subjects        = 200
	)

	subs := make([]string, subjects)
	for i := range subs {
		subs[i] = fmt.Sprintf("user-%d", i)
	}
	g := startGateway(t, map[string]string{
		"ALLOW_SUBS":      strings.Join(append(subs, "hot"), ","),
		"RATE_LIMIT_RPM":  "300",       // 5/s, burst 300: "hot" runs out from 75 requests/s, the others below 7500/s
		"TRUSTED_PROXIES": "127.0.0.1", // so simulated clients have their own addresses
		"LOG_LEVEL":       "info",
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
	expired := mustToken(t, g, "user-1", gwAudience, -time.Hour)
	wrongAud := mustToken(t, g, "user-1", "https://other.example.com", time.Hour)

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

	var (
		total   atomic.Int64
		mu      sync.Mutex
		counts  = map[string]int{}
		errs    []string
		wg      sync.WaitGroup
		stop    = time.Now().Add(duration)
		started = time.Now()
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := map[string]int{}
			var localErrs []string
			for i := 0; time.Now().Before(stop) && total.Add(1) <= soakMaxRequests; i++ {
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
			t.Errorf("%d responses %q", v, k)
		}
	}
	t.Logf("%d requests in %v (%.0f/s): %v", n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), counts)
	if len(errs) > 0 {
		t.Errorf("%d client errors, first: %s", len(errs), errs[0])
	}
	for _, k := range []string{"valid 200", "stream 200", "hot 429", "invalid 401", "invalid 429", "no token 401"} {
		if counts[k] == 0 {
			t.Errorf("no %q responses: the mix did not exercise it", k)
		}
	}

	client.CloseIdleConnections()
	var after sample
	deadline := time.Now().Add(10 * time.Second)
	for {
		after = measure(t)
		if after.goroutines <= base.goroutines+20 && after.fds <= base.fds+20 && after.heap <= base.heap+32<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("after the load: %s; baseline %s", after, base)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("baseline %s; after the load %s", base, after)
}

type sample struct {
	goroutines, fds int
	heap            uint64
}

func (s sample) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, heap %.1f MiB", s.goroutines, s.fds, float64(s.heap)/(1<<20))
}

func measure(t *testing.T) sample {
	t.Helper()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Logf("open fds: %v", err)
	}
	return sample{goroutines: runtime.NumGoroutine(), fds: len(fds), heap: m.HeapAlloc}
}
