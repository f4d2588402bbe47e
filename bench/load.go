package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// loadResult is one load run against one target.
type loadResult struct {
	requests int64
	elapsed  time.Duration
	p50, p99 time.Duration
	non2xx   int64 // responses with a status >= 400 (wrk) or not 200 (Go)
	sockErr  int64 // connect, read, write and timeout errors
}

func (r loadResult) rps() float64 { return float64(r.requests) / r.elapsed.Seconds() }

// loader sends POST rpcRequest with the bearer token to url for d.
type loader interface {
	load(ctx context.Context, url string, d time.Duration) (loadResult, error)
	name() string
}

// wrkLoader runs wrk with a Lua script that sets the method, body and
// headers and prints a parseable summary line.
type wrkLoader struct {
	bin     string
	script  string
	threads int
	conns   int
	think   time.Duration
}

func newWrkLoader(bin, dir, token string, threads, conns int, think time.Duration) (*wrkLoader, error) {
	q := func(s string) string { return strings.ReplaceAll(s, `'`, `\'`) }
	script := fmt.Sprintf(`wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Authorization"] = "Bearer %s"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %%d %%d %%d %%d %%d %%d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
`, q(rpcRequest), token)
	if think > 0 {
		script += fmt.Sprintf("delay = function() return %d end\n", think.Milliseconds())
	}
	path := filepath.Join(dir, "post.lua")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		return nil, err
	}
	return &wrkLoader{bin: bin, script: path, threads: threads, conns: conns, think: think}, nil
}

func (w *wrkLoader) name() string {
	if w.think > 0 {
		return fmt.Sprintf("wrk -t%d -c%d -s post.lua, each connection pausing %s between requests", w.threads, w.conns, w.think)
	}
	return fmt.Sprintf("wrk -t%d -c%d -s post.lua", w.threads, w.conns)
}

func (w *wrkLoader) load(ctx context.Context, url string, d time.Duration) (loadResult, error) {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	cmd := exec.CommandContext(ctx, w.bin, fmt.Sprintf("-t%d", w.threads), fmt.Sprintf("-c%d", w.conns),
		fmt.Sprintf("-d%ds", secs), "-s", w.script, url)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return loadResult{}, fmt.Errorf("wrk: %w: %s", err, out.String())
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if !strings.HasPrefix(line, "BENCH ") {
			continue
		}
		var req, durUS, p50, p99, status, sock int64
		if _, err := fmt.Sscan(line[6:], &req, &durUS, &p50, &p99, &status, &sock); err != nil {
			return loadResult{}, fmt.Errorf("wrk: parse %q: %w", line, err)
		}
		return loadResult{requests: req, elapsed: time.Duration(durUS) * time.Microsecond,
			p50: time.Duration(p50) * time.Microsecond, p99: time.Duration(p99) * time.Microsecond,
			non2xx: status, sockErr: sock}, nil
	}
	return loadResult{}, fmt.Errorf("wrk: no summary in output: %s", out.String())
}

// goLoader is the fallback when wrk is absent: conns goroutines, each with
// a kept-alive connection, sending requests back to back. It runs in the
// bench process, so the upstream's own CPU cannot be told apart from it.
type goLoader struct {
	token string
	conns int
	think time.Duration
}

func (g *goLoader) name() string {
	if g.think > 0 {
		return fmt.Sprintf("built-in Go load generator, %d connections, each pausing %s between requests", g.conns, g.think)
	}
	return fmt.Sprintf("built-in Go load generator, %d connections", g.conns)
}

func (g *goLoader) load(ctx context.Context, url string, d time.Duration) (loadResult, error) {
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: g.conns, MaxConnsPerHost: g.conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		mu   sync.Mutex
		all  []time.Duration
		res  loadResult
		wg   sync.WaitGroup
		body = []byte(rpcRequest)
	)
	start := time.Now()
	for range g.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var non2xx, sockErr int64
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				req.Header.Set("Authorization", "Bearer "+g.token)
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						sockErr++
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					non2xx++
				}
				lat = append(lat, time.Since(t0))
				if g.think > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(g.think):
					}
				}
			}
			mu.Lock()
			all = append(all, lat...)
			res.non2xx += non2xx
			res.sockErr += sockErr
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.requests = int64(len(all))
	if len(all) > 0 {
		slices.Sort(all)
		res.p50 = all[len(all)*50/100]
		res.p99 = all[min(len(all)-1, len(all)*99/100)]
	}
	return res, nil
}
