package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// nginxConf is a bare keep-alive reverse proxy to the bench's upstream: the
// second floor, what a proxy hop costs when written in C with no
// verification. One process (master_process off), so /proc/<pid>/stat is all
// of its CPU and the bench's Pdeathsig ends it; no access log (the gateway
// writes an audit line, which is part of what it is measured with);
// proxy_buffering off, so event streams pass as they arrive as they do
// through the gateway; no read timeout that would cut an idle stream.
const nginxConf = `daemon off;
%[5]s
worker_rlimit_nofile %[4]d;
pid %[1]s/nginx.pid;
error_log stderr warn;
events {
    worker_connections %[4]d;
}
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    upstream mcp {
        server 127.0.0.1:%[3]d;
        keepalive 256;
    }
    server {
        listen 127.0.0.1:%[2]d;
        location / {
%[6]s
        }
    }
}
`

// nginxProxy is the location of the bare keep-alive proxy.
const nginxProxy = `            proxy_pass http://mcp;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 1h;`

// nginxAnswer is the location of nginx as a bare server (-servers): every
// request is answered with the upstream's reply from memory, no proxying.
var nginxAnswer = "            default_type application/json;\n            return 200 '" + rpcReply + "';"

// nginxBin returns the nginx binary on PATH or in /usr/sbin, or "".
func nginxBin() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	return ""
}

// startNginx starts nginx as a bare keep-alive proxy to the upstream, with
// its configuration generated into a fresh directory under the bench's
// temporary one. workers is its process model (see processes).
func (e *env) startNginx(workers int) (*child, error) {
	return e.startNginxWith(workers, nginxProxy)
}

// startNginxWith starts nginx with location as its one location's body.
func (e *env) startNginxWith(workers int, location string) (*child, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(e.tmp, fmt.Sprintf("nginx-%d", port))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// Two connections per stream (client and upstream), the upstream
	// keep-alive cache and some room; no more descriptors than the bench
	// itself may open.
	conns := max(1024, 2*e.o.streams+1024)
	if e.nofile > 0 {
		conns = min(conns, int(e.nofile))
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, port, e.upPort, conns, processes(workers), location), 0o644); err != nil {
		return nil, err
	}
	c, err := startChild("nginx", e.nginx, []string{"-p", dir, "-c", conf, "-e", "stderr"},
		[]string{"PATH=" + os.Getenv("PATH")}, filepath.Join(dir, "stderr.log"), port)
	if err != nil {
		return nil, err
	}
	return c, waitListening(c, 10*time.Second)
}

// processes is nginx's process model: one process doing all the work
// (master_process off), or a master with n workers, as Debian's default
// configuration runs (worker_processes auto: one per CPU).
func processes(n int) string {
	if n <= 1 {
		return "master_process off;"
	}
	return fmt.Sprintf("master_process on;\nworker_processes %d;", n)
}
