package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Servers from Debian's packages that a test starts for itself: each on 127.0.0.1 with a free
// port, its files in the test's temp dir, stopped at cleanup. Nothing is started outside the
// tests (.ci/run only installs the packages).

// redisOptions configure startRedis.
type redisOptions struct {
	// Password, when set, is required of clients (requirepass); URL carries it.
	Password string
	// AppendOnly persists every write before answering (appendonly, fsync always), so data
	// survives Stop and Start. Off: Redis keeps nothing across a restart.
	AppendOnly bool
}

// redisServer is a redis-server a test started.
type redisServer struct {
	Addr    string // 127.0.0.1:port
	URL     string // redis://[:password@]127.0.0.1:port/0, the form STORE_URL takes
	opts    redisOptions
	bin     string
	dir     string
	logPath string
	p       *proc
}

// startRedis starts redis-server on a free loopback port and waits until it answers PING.
// It is stopped at cleanup; its log is printed when the test failed.
func startRedis(t *testing.T, opts redisOptions) *redisServer {
	t.Helper()
	bin := lookTool("redis-server", "/usr/bin/redis-server")
	if bin == "" {
		missing(t, "redis-server (Debian package: apt-get install --no-install-recommends redis-server)")
	}
	dir := t.TempDir()
	r := &redisServer{Addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), opts: opts, bin: bin, dir: dir, logPath: filepath.Join(dir, "redis.log")}
	u := url.URL{Scheme: "redis", Host: r.Addr, Path: "/0"}
	if opts.Password != "" {
		u.User = url.UserPassword("", opts.Password)
	}
	r.URL = u.String()
	t.Cleanup(func() {
		if r.p != nil {
			r.p.kill()
		}
		if t.Failed() {
			t.Logf("redis log (tail):\n%s", tail(readFile(r.logPath), 30))
		}
	})
	r.Start(t)
	return r
}

// Start starts the server again (after Stop) on the same port with the same data directory.
func (r *redisServer) Start(t *testing.T) {
	t.Helper()
	if r.p != nil && !r.p.exited() {
		t.Fatalf("redis at %s is running already", r.Addr)
	}
	_, port, _ := net.SplitHostPort(r.Addr)
	args := []string{
		"--bind", "127.0.0.1", "--port", port, "--dir", r.dir,
		"--save", "", "--daemonize", "no", "--protected-mode", "yes", "--logfile", "",
	}
	if r.opts.AppendOnly {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	if r.opts.Password != "" {
		args = append(args, "--requirepass", r.opts.Password)
	}
	logf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(r.bin, args...)
	cmd.Dir = r.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := startProc("redis-server", cmd)
	if err != nil {
		t.Fatal(err)
	}
	r.p = p
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := r.Do("PING")
		if err == nil && got == "PONG" {
			return
		}
		if p.exited() {
			t.Fatalf("redis-server exited at start (%v):\n%s", p.err, tail(readFile(r.logPath), 30))
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server at %s does not answer PING after 10s: %v %v", r.Addr, got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop ends the server with SIGTERM (as an operator's restart would) and waits for it; with
// AppendOnly off it keeps nothing.
func (r *redisServer) Stop(t *testing.T) {
	t.Helper()
	if r.p == nil || r.p.exited() {
		return
	}
	_ = syscall.Kill(r.p.pid(), syscall.SIGTERM)
	select {
	case <-r.p.done:
	case <-time.After(10 * time.Second):
		r.p.kill()
		t.Fatalf("redis-server did not stop within 10s of SIGTERM")
	}
}

// Do sends one command on a new connection (authenticated when the server has a password)
// and returns the reply: a string (simple, bulk), int64, nil (null), []any (array), or an
// error for an error reply or a failed connection.
func (r *redisServer) Do(args ...string) (any, error) {
	c, err := net.DialTimeout("tcp", r.Addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	if r.opts.Password != "" {
		if _, err := redisCommand(c, br, "AUTH", r.opts.Password); err != nil {
			return nil, fmt.Errorf("AUTH: %w", err)
		}
	}
	return redisCommand(c, br, args...)
}

func redisCommand(w io.Writer, br *bufio.Reader, args ...string) (any, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return nil, err
	}
	return readRESP(br)
}

// readRESP reads one reply of the Redis protocol (RESP2).
func readRESP(br *bufio.Reader) (any, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty RESP line")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return nil, fmt.Errorf("redis: %s", line[1:])
	case ':':
		return strconv.ParseInt(line[1:], 10, 64)
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return nil, err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return nil, err
		}
		out := make([]any, 0, n)
		for i := 0; i < n; i++ {
			v, err := readRESP(br)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown RESP reply %q", line)
}

// nginxServer is Debian's nginx as a round-robin load balancer a test started.
type nginxServer struct {
	URL       string // http://127.0.0.1:port
	Addr      string // 127.0.0.1:port
	accessLog string
	errorLog  string
}

// startNginx starts nginx on a free loopback port in front of the upstream addresses
// (host:port), round robin, as a deployment would put it in front of gateway replicas:
// HTTP/1.1 with keep-alive to the upstreams, Host passed through, X-Forwarded-For and
// X-Forwarded-Proto set, no buffering either way (event streams flow as written) and no
// read timeout shorter than an hour. It is stopped at cleanup; its error log is printed when
// the test failed. upstreamsUsed tells which upstream served each request.
func startNginx(t *testing.T, upstreams ...string) *nginxServer {
	t.Helper()
	bin := lookTool("nginx", "/usr/sbin/nginx")
	if bin == "" {
		missing(t, "nginx (Debian package: apt-get install --no-install-recommends nginx-light)")
	}
	if len(upstreams) == 0 {
		t.Fatal("startNginx: no upstreams")
	}
	dir := t.TempDir()
	n := &nginxServer{Addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), accessLog: filepath.Join(dir, "access.log"), errorLog: filepath.Join(dir, "error.log")}
	n.URL = "http://" + n.Addr
	var servers strings.Builder
	for _, u := range upstreams {
		fmt.Fprintf(&servers, "    server %s;\n", u)
	}
	conf := nginxConf(dir, n.errorLog, fmt.Sprintf(`  log_format upstreams '$status $request_method $request_uri | $upstream_addr';
  access_log %[1]s upstreams;
  upstream replicas {
%[2]s    keepalive 32;
  }
  server {
    listen %[3]s;
    location / {
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 1h;
    }
  }
`, n.accessLog, servers.String(), n.Addr))
	runNginx(t, bin, dir, conf, n)
	return n
}

// nginxConf is a whole nginx.conf around httpBody (what goes inside
// http { }): in the foreground, one worker, and its pid, error log and
// temporary files in dir, so nothing outside the test's directory is used.
func nginxConf(dir, errorLog, httpBody string) string {
	user := ""
	if os.Geteuid() == 0 {
		// As root the workers would switch to nobody, who cannot enter the test's temp dir.
		user = "user root root;"
	}
	return fmt.Sprintf(`daemon off;
%s
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[3]s notice;
events { worker_connections 1024; }
http {
  client_body_temp_path %[2]s/client_body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
%[4]s}
`, user, dir, errorLog, httpBody)
}

// runNginx writes conf to dir and runs nginx (bin) with it until the test ends, once it
// listens on n.Addr; its error log (n.errorLog) is printed when the test failed.
func runNginx(t *testing.T, bin, dir, conf string, n *nginxServer) {
	t.Helper()
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", confPath, "-e", n.errorLog)
	out, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	p, err := startProc("nginx", cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("nginx error log (tail):\n%s\n%s", tail(readFile(n.errorLog), 30), readFile(out.Name()))
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", n.Addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if p.exited() {
			t.Fatalf("nginx exited at start (%v):\n%s\n%s", p.err, readFile(n.errorLog), readFile(out.Name()))
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx does not listen on %s after 10s: %v", n.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// upstreamsUsed lists, for each request nginx has logged, the upstream that served it
// ("host:port", or several separated by ", " when nginx tried more than one), once at least
// want requests are logged (or after 5 s, with what there is).
func (n *nginxServer) upstreamsUsed(want int) []string {
	// nginx writes a request's access-log line in its log phase, after the
	// response went out: a client can have its answer before the line is
	// there. Wait (briefly) for want lines.
	var out []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		out = out[:0]
		for _, line := range strings.Split(strings.TrimSpace(readFile(n.accessLog)), "\n") {
			if _, up, ok := strings.Cut(line, " | "); ok {
				out = append(out, up)
			}
		}
		if len(out) >= want || time.Now().After(deadline) {
			return out
		}
		time.Sleep(10 * time.Millisecond)
	}
}
