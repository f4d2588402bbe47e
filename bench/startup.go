package main

import (
	"context"
	"fmt"
	"net"
	"time"
)

// startupResult is one process started and timed until it accepts a TCP
// connection, and its RSS once idle.
type startupResult struct {
	name    string
	listen  []time.Duration
	idleKB  []int64
	failure string
}

// listenMS is the time to the first accepted connect of each start, in
// milliseconds.
func (s startupResult) listenMS() []float64 {
	ms := make([]float64, len(s.listen))
	for i, d := range s.listen {
		ms[i] = float64(d) / float64(time.Millisecond)
	}
	return ms
}

// idleKiB is the idle RSS of each start, in KiB.
func (s startupResult) idleKiB() []float64 {
	kb := make([]float64, len(s.idleKB))
	for i, k := range s.idleKB {
		kb[i] = float64(k)
	}
	return kb
}

// unreachableIssuer is a loopback port nothing listens on.
const unreachableIssuer = "http://127.0.0.1:1"

func (e *env) startupPhase(ctx context.Context, rep *report) error {
	settle := time.Second
	if e.o.quick {
		settle = 500 * time.Millisecond
	}
	e.logf("startup: %d starts each of gateway (provider unreachable) and floor", e.o.startups)
	gw := startupResult{name: "gateway, provider unreachable"}
	fl := startupResult{name: "floor"}
	for range e.o.startups {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c, d, err := e.timeStart(func() (*child, error) {
			return e.startGateway(e.gwBin, unreachableIssuer, nil, false)
		})
		if err != nil {
			gw.failure = err.Error()
			c.stop()
			break
		}
		time.Sleep(settle)
		if c.exited() {
			gw.failure = "exited: " + lastLines(c.logTail(2000), 3)
			break
		}
		gw.listen = append(gw.listen, d)
		gw.idleKB = append(gw.idleKB, rssKB(c.pid))
		c.stop()

		c, d, err = e.timeStart(func() (*child, error) { return e.startFloorNoWait() })
		if err != nil {
			fl.failure = err.Error()
			c.stop()
			continue
		}
		time.Sleep(settle)
		fl.listen = append(fl.listen, d)
		fl.idleKB = append(fl.idleKB, rssKB(c.pid))
		c.stop()
	}
	rep.startups = []startupResult{gw, fl}
	return nil
}

// timeStart starts a process and polls its port every millisecond until a
// TCP connect succeeds; the time includes fork and exec.
func (e *env) timeStart(start func() (*child, error)) (*child, time.Duration, error) {
	t0 := time.Now()
	c, err := start()
	if err != nil {
		return c, 0, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", c.port)
	for {
		conn, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			d := time.Since(t0)
			conn.Close()
			return c, d, nil
		}
		if c.exited() {
			return c, 0, fmt.Errorf("%s exited before listening:\n%s", c.name, lastLines(c.logTail(2000), 5))
		}
		if time.Since(t0) > 10*time.Second {
			return c, 0, fmt.Errorf("%s not listening after 10s", c.name)
		}
		time.Sleep(time.Millisecond)
	}
}

func (e *env) startFloorNoWait() (*child, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	return startChild("floor", e.self, []string{"floor-proxy", "-upstream", e.upURL, "-listen", fmt.Sprintf("127.0.0.1:%d", port)},
		nil, fmt.Sprintf("%s/floor-start-%d.log", e.tmp, port), port)
}
