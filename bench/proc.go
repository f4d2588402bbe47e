package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is the length of a /proc/<pid>/stat CPU tick (USER_HZ, 100 on
// every Linux this runs on).
const clockTick = 10 * time.Millisecond

// child is a process the bench started: the floor proxy or the gateway.
type child struct {
	name    string
	cmd     *exec.Cmd
	pid     int
	port    int
	logPath string // its stderr (and stdout), appended to
	done    chan struct{}
	waitErr error
}

// startChild starts bin with args and env, its output appended to logPath.
// The child gets SIGKILL if the bench dies (Pdeathsig), so nothing outlives
// a run.
func startChild(name, bin string, args, env []string, logPath string, port int) (*child, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, pid: cmd.Process.Pid, port: port, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.waitErr = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// stop ends the child by its PID: SIGTERM, then SIGKILL after 5 s.
func (c *child) stop() {
	if c == nil {
		return
	}
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// logTail returns the last n bytes of the child's output.
func (c *child) logTail(n int64) string {
	f, err := os.Open(c.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// logSize is the size of the child's output so far; truncateLog empties it
// (the child appends, so it keeps writing at the new end).
func (c *child) logSize() int64 {
	st, err := os.Stat(c.logPath)
	if err != nil {
		return 0
	}
	return st.Size()
}

func (c *child) truncateLog() { _ = os.Truncate(c.logPath, 0) }

// cpuTime is utime+stime of pid, from /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("parse stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("parse stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("parse stat")
	}
	return time.Duration(ut+st) * clockTick, nil
}

// withChildren is pid and its direct children, from
// /proc/<pid>/task/*/children.
func withChildren(pid int) []int {
	pids := []int{pid}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				pids = append(pids, n)
			}
		}
	}
	return pids
}

// treeCPUTime is utime+stime of pid and its live children (nginx's master
// and its workers). Workers live as long as the master here, so the
// difference of two readings is the CPU the tree spent in between.
func treeCPUTime(pid int) (time.Duration, error) {
	var sum time.Duration
	for i, p := range withChildren(pid) {
		d, err := cpuTime(p)
		if err != nil {
			if i == 0 {
				return 0, err
			}
			continue
		}
		sum += d
	}
	return sum, nil
}

// statusKB reads a "Key: N kB" (or plain number) line of /proc/<pid>/status.
func statusKB(pid int, key string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return 0
}

func rssKB(pid int) int64 { return statusKB(pid, "VmRSS") }

// timeWaitSet lists the TCP sockets in TIME-WAIT (state 06 in /proc/net/tcp
// and tcp6) with either end on port, by their address pair; the sockets
// that are new since an earlier set are the ones a run caused (a plain count
// would also fall as older sockets expire).
func timeWaitSet(port int) map[string]bool {
	set := map[string]bool{}
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 4 || f[3] != "06" {
				continue
			}
			if portOf(f[1]) == port || portOf(f[2]) == port {
				set[f[1]+" "+f[2]] = true
			}
		}
	}
	return set
}

// newTimeWait counts the sockets of now that were not in before.
func newTimeWait(before map[string]bool, port int) int {
	n := 0
	for k := range timeWaitSet(port) {
		if !before[k] {
			n++
		}
	}
	return n
}

func portOf(hexAddr string) int {
	i := strings.LastIndexByte(hexAddr, ':')
	if i < 0 {
		return -1
	}
	p, err := strconv.ParseInt(hexAddr[i+1:], 16, 32)
	if err != nil {
		return -1
	}
	return int(p)
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// raiseNoFile lifts RLIMIT_NOFILE as far as allowed; children inherit it.
func raiseNoFile(want uint64) uint64 {
	var lim syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	if lim.Cur >= want {
		return lim.Cur
	}
	try := syscall.Rlimit{Cur: want, Max: max(want, lim.Max)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &try); err == nil {
		return want
	}
	lim.Cur = lim.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	return lim.Cur
}

// peakRSS samples pid's RSS every interval until stop is closed and returns
// the largest value seen (kB).
func peakRSS(rss func() int64, interval time.Duration, stop <-chan struct{}) <-chan int64 {
	out := make(chan int64, 1)
	go func() {
		peak := rss()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				peak = max(peak, rss())
				out <- peak
				return
			case <-t.C:
				peak = max(peak, rss())
			}
		}
	}()
	return out
}

// exitWhenOrphaned ends a child the bench started (floor-proxy,
// bare-server) by itself: after maxLife, or once reparented because the
// bench died.
func exitWhenOrphaned(maxLife time.Duration) {
	ppid := os.Getppid()
	deadline := time.Now().Add(maxLife)
	for time.Now().Before(deadline) && os.Getppid() == ppid {
		time.Sleep(time.Second)
	}
	os.Exit(3)
}
