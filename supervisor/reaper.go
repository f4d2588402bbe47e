package supervisor

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// reapTick is the backstop for SIGCHLDs that were coalesced or missed.
const reapTick = 250 * time.Millisecond

// reaper owns all waiting for child processes while Run runs (see the package
// comment). Its mutex is held around every wait4 pass and around every
// os.StartProcess plus registration, so a started pid is always registered
// before its exit can be collected.
type reaper struct {
	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus
	log     hclog.Logger
}

// start begins reaping on SIGCHLD and on a tick; the returned func stops it
// and returns once the goroutine has ended.
func (r *reaper) start(log hclog.Logger) (stop func()) {
	r.mu.Lock()
	r.waiters = make(map[int]chan syscall.WaitStatus)
	r.log = log
	r.mu.Unlock()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(reapTick)
		defer t.Stop()
		for {
			r.reapNow()
			select {
			case <-done:
				return
			case <-sigs:
			case <-t.C:
			}
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
		wg.Wait()
		r.reapNow()
	}
}

// ReapOrphans reaps every child process of this one as it exits, until ctx
// is done: for a gateway that is PID 1 without a child of its own (no
// Supervisor runs), to which the kernel gives the namespace's orphans all
// the same (what a `docker exec` left in the background). It must not run
// while a Supervisor runs, nor while anything else waits for child
// processes.
func ReapOrphans(ctx context.Context, log hclog.Logger) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	var r reaper
	stop := r.start(log)
	<-ctx.Done()
	stop()
}

// startProcess starts a process under the reaper's lock and registers its
// pid; its wait status is later sent on the returned channel (buffered).
func (r *reaper) startProcess(name string, argv []string, attr *os.ProcAttr) (int, <-chan syscall.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := os.StartProcess(name, argv, attr)
	if err != nil {
		return 0, nil, err
	}
	pid := p.Pid
	_ = p.Release() // we wait by pid in reapNow, never through p
	ch := make(chan syscall.WaitStatus, 1)
	r.waiters[pid] = ch
	return pid, ch, nil
}

// holding runs f while no child can be reaped: a pid f finds among this
// process's children stays that child's, a zombie at worst, until f
// returns.
func (r *reaper) holding(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f()
}

// reapNow collects every exited child without blocking, hands registered
// pids' statuses to their waiters and drops the rest (orphans). It reports
// whether we have no children left at all.
func (r *reaper) reapNow() (none bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.ECHILD):
			return true
		case err != nil:
			r.log.Warn("reap children", "error", err)
			return false
		case pid <= 0:
			return false
		}
		if ws.Stopped() || ws.Continued() {
			continue // not an exit (we do not ask for these, but be safe)
		}
		if ch, ok := r.waiters[pid]; ok {
			delete(r.waiters, pid)
			ch <- ws
			continue
		}
		r.log.Debug("reaped an orphaned process", "pid", pid)
	}
}
