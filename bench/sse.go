package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// sseResult is one target holding N idle SSE streams.
type sseResult struct {
	name        string
	round       int
	n           int
	opened      int
	openErrs    int
	firstErr    string
	logTail     string // the proxy's last log lines when streams failed to open
	openTime    time.Duration
	rssBeforeKB int64 // -1: not a separate process
	rssAfterKB  int64
	gBefore     int // goroutines; -1: unknown
	gAfter      int
	openCPU     time.Duration // CPU of the target's process while opening
	heapBefore  map[string]uint64
	heapAfter   map[string]uint64
	heapTop     string // inuse_space top of a heap profile with the streams open
	expected    int64  // events every stream should have received
	delivered   int64
	complete    int // streams that received every event
}

// streamState is what one client stream has seen.
type streamState struct {
	base  atomic.Int64 // the broadcast number in the open event
	last  atomic.Int64
	count atomic.Int64
	ok    atomic.Bool // opened
}

func (e *env) ssePhase(ctx context.Context, rep *report) error {
	e.logf("sse: %d idle streams each against upstream, floor, gateway (opening %d at a time), %d round(s)", e.o.streams, e.o.openConc, e.o.sseRounds)
	for round := 1; round <= e.o.sseRounds; round++ {
		if err := e.sseRound(ctx, rep, round); err != nil {
			return err
		}
	}
	return nil
}

func (e *env) sseRound(ctx context.Context, rep *report, round int) error {
	// Upstream directly: the bench process holds both ends, so no RSS.
	r, err := e.sseRun(ctx, "upstream", e.upURL+"/mcp", -1, "")
	if err != nil {
		return err
	}
	r.round = round
	rep.sse = append(rep.sse, r)

	names := []string{"floor", "gateway"}
	if e.nginx != "" {
		names = append([]string{"nginx"}, names...)
	}
	if e.o.compare != "" {
		names = append(names, nameBefore)
	}
	for _, name := range names {
		paddr := ""
		if name == "floor" || name == "gateway" && e.gwProf != "" {
			port, err := freePort()
			if err != nil {
				return err
			}
			paddr = fmt.Sprintf("127.0.0.1:%d", port)
		}
		var c *child
		if name == "nginx" {
			c, err = e.startNginx(1) // one process: its RSS is all of nginx's
		} else if name == nameBefore {
			c, err = e.startGateway(e.o.compare, e.issURL, nil, true)
		} else if name == "floor" {
			c, err = e.startFloor(paddr)
		} else if e.gwProf != "" {
			c, err = e.startGateway(e.gwProf, e.issURL, []string{"MOP_BENCH_PPROF=" + paddr}, true)
		} else {
			c, err = e.startGateway(e.gwBin, e.issURL, nil, true)
		}
		if err != nil {
			c.stop()
			return err
		}
		url := fmt.Sprintf("http://127.0.0.1:%d/mcp", c.port)
		// A few requests first, so the baseline has its pools and caches.
		for range 3 {
			if err := e.checkPost(url); err != nil {
				c.stop()
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		r, err := e.sseRun(ctx, name, url, c.pid, paddr)
		if c.exited() {
			err = fmt.Errorf("%s exited during the SSE test:\n%s", name, c.logTail(2000))
		}
		if r.openErrs > 0 {
			r.logTail = lastLines(c.logTail(4000), 3)
		}
		c.stop()
		if err != nil {
			return err
		}
		r.round = round
		rep.sse = append(rep.sse, r)
	}
	return nil
}

// sseRun opens n streams to url, openConc at a time, then broadcasts
// sseEvents events and checks that every stream got every one. It is one
// measurement of one process (memory and goroutines before, with the
// streams open, after), so its steps share the counters they compare and
// stay together in the order they happen.
func (e *env) sseRun(ctx context.Context, name, url string, pid int, paddr string) (sseResult, error) {
	n := e.o.streams
	r := sseResult{name: name, n: n, rssBeforeKB: -1, rssAfterKB: -1, gBefore: -1, gAfter: -1}
	settle := func() {
		time.Sleep(300 * time.Millisecond)
	}
	if pid > 0 {
		settle()
		r.rssBeforeKB = rssKB(pid)
	}
	if paddr != "" {
		r.gBefore = goroutines(paddr)
		r.heapBefore, _ = memStats(paddr, true)
	}
	var cpu0 time.Duration
	if pid > 0 {
		cpu0, _ = cpuTime(pid)
	}

	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxConnsPerHost:     0,
		MaxIdleConnsPerHost: n,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()

	states := make([]streamState, n)
	var (
		openWG, allWG sync.WaitGroup
		errMu         sync.Mutex
		openErrs      int
	)
	sem := make(chan struct{}, e.o.openConc)
	start := time.Now()
	for i := range n {
		sem <- struct{}{}
		openWG.Add(1)
		allWG.Add(1)
		go func(st *streamState) {
			defer allWG.Done()
			released := false
			release := func() {
				if !released {
					released = true
					<-sem
					openWG.Done()
				}
			}
			defer release()
			fail := func(err error) {
				errMu.Lock()
				openErrs++
				if r.firstErr == "" {
					r.firstErr = err.Error()
				}
				errMu.Unlock()
			}
			req, _ := http.NewRequestWithContext(sctx, http.MethodGet, url, nil)
			req.Header.Set("Accept", "text/event-stream")
			req.Header.Set("Authorization", "Bearer "+e.token)
			resp, err := client.Do(req)
			if err != nil {
				fail(err)
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				fail(fmt.Errorf("status %s", resp.Status))
				return
			}
			br := bufio.NewReaderSize(resp.Body, 256)
			opened := false
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					if !opened && sctx.Err() == nil {
						fail(fmt.Errorf("stream ended before its open event: %w", err))
					}
					return
				}
				v, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r\n"), []byte("data: "))
				if !ok {
					continue
				}
				seq, _ := strconv.ParseInt(string(v), 10, 64)
				if !opened {
					opened = true
					st.base.Store(seq)
					st.last.Store(seq)
					st.ok.Store(true)
					release()
					continue
				}
				st.count.Add(1)
				st.last.Store(seq)
			}
		}(&states[i])
	}
	openWG.Wait()
	r.openTime = time.Since(start)
	if pid > 0 {
		cpu1, _ := cpuTime(pid)
		r.openCPU = cpu1 - cpu0
	}
	r.openErrs = openErrs
	for i := range states {
		if states[i].ok.Load() {
			r.opened++
		}
	}
	e.logf("sse: %-8s opened %d/%d streams in %s", name, r.opened, n, r.openTime.Round(time.Millisecond))

	// Every open stream gets every event from now on.
	for range e.o.sseEvents {
		e.up.broadcast()
		time.Sleep(50 * time.Millisecond)
	}
	deadline := time.Now().Add(10*time.Second + time.Duration(n)*time.Millisecond)
	for {
		final, _ := e.up.current()
		behind := 0
		for i := range states {
			if states[i].ok.Load() && states[i].last.Load() < final {
				behind++
			}
		}
		if behind == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	final, _ := e.up.current()
	for i := range states {
		st := &states[i]
		if !st.ok.Load() {
			continue
		}
		want := final - st.base.Load()
		got := st.count.Load()
		r.expected += want
		r.delivered += got
		if got == want {
			r.complete++
		}
	}
	if pid > 0 {
		settle()
		r.rssAfterKB = rssKB(pid)
	}
	if paddr != "" {
		r.gAfter = goroutines(paddr)
		r.heapAfter, _ = memStats(paddr, true)
		file := filepath.Join(e.resultsDir(), "sse-"+name+".heap.pprof")
		if err := fetchTo("http://"+paddr+"/debug/pprof/heap?gc=1", file); err == nil {
			r.heapTop = pprofTop(file, "-top", "-sample_index=inuse_space", "-nodecount=12")
		}
	}

	// Close every stream and wait until the upstream has let go of them.
	cancel()
	allWG.Wait()
	tr.CloseIdleConnections()
	for wait := time.Now().Add(10 * time.Second); e.up.streams.Load() > 0 && time.Now().Before(wait); {
		time.Sleep(20 * time.Millisecond)
	}
	return r, nil
}
