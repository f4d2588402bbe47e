package gate

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"time"
)

// The gate's own HTTP/1.1 client for the one upstream (an http:// MCP
// server: the child on loopback, or MCP_UPSTREAM_URL). net/http's server
// still reads every client request, strictly; this replaces only
// http.Transport and httputil.ReverseProxy between the gate and the MCP
// server, because a proxy hop through them cost about 38 µs of CPU per
// request here (docs/performance.md): two goroutines per connection and a
// channel hand-off each way, the request head and body in two writes,
// header maps cloned. This client writes a request (head and, when it is
// small, body) in one write, reads the answer into a pooled buffer on the
// request's own goroutine, and relays it as it arrives (relay.go). Idle
// connections have no goroutine and no buffer; before one is reused a
// non-blocking peek checks the upstream has not closed it.

// Defaults of the upstream pool.
const (
	// DefaultMaxUpstreamConns bounds the connections open to the upstream
	// when Config.MaxUpstreamConns is zero. Each open event stream holds
	// one, so it is sized for many thousands of listening clients.
	DefaultMaxUpstreamConns = 16384

	// maxIdleUpstreamConns bounds the idle keep-alive connections kept
	// (as MaxIdleConnsPerHost did).
	maxIdleUpstreamConns = 256
	// idleUpstreamTimeout closes a connection idle for longer.
	idleUpstreamTimeout = 90 * time.Second
	// upstreamWait is how long a request waits for a connection when all
	// MaxUpstreamConns are busy, before 503.
	upstreamWait = 5 * time.Second
	// dialTimeout bounds connecting to the upstream.
	dialTimeout = 5 * time.Second
)

// errUpstreamBusy is the answer when every connection to the upstream is
// busy and none came free in time.
var errUpstreamBusy = errors.New("proxy: every connection to the upstream is busy")

// upstreamPool holds the connections to the upstream: at most maxConns
// open (busy or idle), at most maxIdleUpstreamConns of them idle, the most
// recently used first. A request that finds all busy queues (FIFO, at most
// maxConns waiting) for upstreamWait.
type upstreamPool struct {
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	maxConns int
	wait     time.Duration // upstreamWait; shorter in tests
	idleFor  time.Duration // idleUpstreamTimeout; shorter in tests
	bufs     *bytePool
	now      func() time.Time

	mu      sync.Mutex
	addr    string          // the address the idle connections are for
	idle    []*upstreamConn // idle[0] the oldest
	open    int             // connections open or being dialled, idle ones included
	waiters []chan *upstreamConn
	// sweeping: a timer will close the idle connections that outlive
	// idleFor, so they do not stay open when traffic stops. One timer for
	// the whole pool, armed while any connection is idle.
	sweeping bool
}

func newUpstreamPool(maxConns int, now func() time.Time) *upstreamPool {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	return &upstreamPool{dial: d.DialContext, maxConns: maxConns, wait: upstreamWait, idleFor: idleUpstreamTimeout, bufs: newBytePool(), now: now}
}

// get returns a connection to addr: an idle one that is still alive
// (reused), or a new one (always, when fresh).
func (p *upstreamPool) get(ctx context.Context, addr string, fresh bool) (c *upstreamConn, reused bool, err error) {
	var stale []*upstreamConn
	defer func() {
		for _, s := range stale {
			s.close()
		}
	}()
	p.mu.Lock()
	if addr != p.addr {
		// The upstream moved (a child on another port): the old
		// connections are of no use.
		stale = append(stale, p.idle...)
		p.open -= len(p.idle)
		p.idle = p.idle[:0]
		p.addr = addr
	}
	for len(p.idle) > 0 && !fresh {
		c := p.idle[len(p.idle)-1]
		p.idle[len(p.idle)-1] = nil
		p.idle = p.idle[:len(p.idle)-1]
		p.mu.Unlock()
		if c.alive() {
			return c, true, nil
		}
		c.close()
		p.mu.Lock()
		p.open--
	}
	if fresh && p.open >= p.maxConns && len(p.idle) > 0 {
		stale = append(stale, p.idle[0]) // its slot, for the new one
		p.idle[0] = nil
		p.idle = p.idle[1:]
		p.open--
	}
	if p.open < p.maxConns {
		p.open++
		p.mu.Unlock()
		return p.dialNew(ctx, addr)
	}
	if len(p.waiters) >= p.maxConns {
		p.mu.Unlock()
		return nil, false, errUpstreamBusy
	}
	ch := make(chan *upstreamConn, 1)
	p.waiters = append(p.waiters, ch)
	p.mu.Unlock()
	return p.await(ctx, addr, ch)
}

// await waits for a connection handed over by put (reused) or for a slot
// handed over by discard (nil: dial).
func (p *upstreamPool) await(ctx context.Context, addr string, ch chan *upstreamConn) (*upstreamConn, bool, error) {
	t := time.NewTimer(p.wait)
	defer t.Stop()
	select {
	case c := <-ch:
		return p.handed(ctx, addr, c)
	case <-ctx.Done():
	case <-t.C:
	}
	p.mu.Lock()
	i := slices.Index(p.waiters, ch)
	if i >= 0 {
		p.waiters = slices.Delete(p.waiters, i, i+1)
	}
	p.mu.Unlock()
	if i < 0 {
		// Handed over meanwhile: pass it on rather than lose it.
		if c := <-ch; c != nil {
			p.put(c)
		} else {
			p.discard(nil)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	return nil, false, errUpstreamBusy
}

func (p *upstreamPool) handed(ctx context.Context, addr string, c *upstreamConn) (*upstreamConn, bool, error) {
	if c != nil {
		if c.addr == addr && c.alive() {
			return c, true, nil
		}
		c.close() // its slot is ours now
	}
	return p.dialNew(ctx, addr)
}

// dialNew dials addr in a slot already counted in open.
func (p *upstreamPool) dialNew(ctx context.Context, addr string) (*upstreamConn, bool, error) {
	nc, err := p.dial(ctx, "tcp", addr)
	if err != nil {
		p.discard(nil)
		return nil, false, err
	}
	return newUpstreamConn(nc, addr, p.bufs), false, nil
}

// put takes back a connection whose answer was read to its end and whose
// request was written whole: the next waiter gets it, or it goes idle.
func (p *upstreamPool) put(c *upstreamConn) {
	c.release()
	if c.buf != nil {
		// Bytes after the answer: not one of ours.
		p.discard(c)
		return
	}
	var old []*upstreamConn
	p.mu.Lock()
	if p.handOffLocked(c) {
		return
	}
	if c.addr != p.addr || len(p.idle) >= maxIdleUpstreamConns {
		p.open--
		p.mu.Unlock()
		c.close()
		return
	}
	now := p.now()
	c.idleSince = now
	p.idle = append(p.idle, c)
	old = p.expireLocked(now, old)
	if !p.sweeping {
		p.sweeping = true
		time.AfterFunc(p.idleFor, p.sweep)
	}
	p.mu.Unlock()
	for _, o := range old {
		o.close()
	}
}

// expireLocked takes the idle connections that waited longer than idleFor
// out of the pool, oldest first, and appends them to old for closing.
// p.mu is held.
func (p *upstreamPool) expireLocked(now time.Time, old []*upstreamConn) []*upstreamConn {
	for len(p.idle) > 0 && now.Sub(p.idle[0].idleSince) > p.idleFor {
		old = append(old, p.idle[0])
		p.idle[0] = nil
		p.idle = p.idle[1:]
		p.open--
	}
	return old
}

// sweep is the pool's one timer: it closes the idle connections that
// outlived idleFor (put does the same while requests come), and runs again
// when the oldest one left is due, until none is idle.
func (p *upstreamPool) sweep() {
	p.mu.Lock()
	now := p.now()
	old := p.expireLocked(now, nil)
	if len(p.idle) == 0 {
		p.sweeping = false
	} else {
		next := p.idleFor - now.Sub(p.idle[0].idleSince)
		time.AfterFunc(max(next, 0)+time.Millisecond, p.sweep)
	}
	p.mu.Unlock()
	for _, o := range old {
		o.close()
	}
}

// discard closes c (nil: a slot whose dial failed) and hands its slot to
// the next waiter, if any.
func (p *upstreamPool) discard(c *upstreamConn) {
	if c != nil {
		c.close()
		c.release()
		if c.bufp != nil {
			c.pool.put(c.bufp)
			c.bufp, c.buf = nil, nil
		}
	}
	p.mu.Lock()
	if p.handOffLocked(nil) {
		return
	}
	p.open--
	p.mu.Unlock()
}

// handOffLocked gives c (nil: its slot, to dial) to the first waiter, if
// any, unlocking p.mu then; it reports whether it did. p.mu is held.
func (p *upstreamPool) handOffLocked(c *upstreamConn) bool {
	if len(p.waiters) == 0 {
		return false
	}
	ch := p.waiters[0]
	p.waiters[0] = nil
	p.waiters = p.waiters[1:]
	p.mu.Unlock()
	ch <- c
	return true
}
