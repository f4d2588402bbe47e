// Package redistest runs a real redis-server (Debian's package) for tests:
// on 127.0.0.1, on a free port, in a temporary directory, saving nothing to
// disk unless asked (Options.Persist), stopped by its PID when the test
// ends. A test can stop and start it again on the same port, to see what an
// outage does.
//
// When redis-server is not installed the test is skipped with a reason
// naming it, except under CI=true, where it fails: CI must run these tests.
package redistest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Options configures Start. The zero value is a plain server without a
// password.
type Options struct {
	// Password is required of clients (requirepass). Empty: none.
	Password string
	// TLS serves TLS only, with a certificate for 127.0.0.1 signed by a CA
	// made for the test (CertPool trusts it); URL is then rediss://.
	TLS bool
	// Persist keeps the dataset across Stop and Restart, as a production
	// Redis with an append-only file does (appendonly yes, appendfsync
	// always, in the test's directory). False: nothing is saved, and a
	// restarted server is empty.
	Persist bool
}

// Server is one redis-server process.
type Server struct {
	t    testing.TB
	bin  string
	port int
	dir  string
	args []string
	opt  Options
	pool *x509.CertPool

	mu     sync.Mutex
	cmd    *exec.Cmd // nil: stopped
	out    *bytes.Buffer
	exited chan struct{} // closed when cmd has been waited for
}

// Start starts a redis-server and stops it when the test ends. It skips
// the test when redis-server is absent (fails when CI=true).
func Start(t testing.TB, opt Options) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server is not installed, and CI=true requires these tests: apt-get install redis-server")
		}
		t.Skip("redis-server is not installed (apt-get install redis-server); skipping a test that needs a real Redis")
	}
	s := &Server{t: t, bin: bin, port: freePort(t), dir: t.TempDir(), opt: opt}
	s.args = []string{
		"--bind", "127.0.0.1", "--save", "", "--dir", s.dir,
		"--daemonize", "no", "--logfile", "", "--loglevel", "warning", "--databases", "4",
	}
	if opt.Persist {
		s.args = append(s.args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		s.args = append(s.args, "--appendonly", "no")
	}
	if opt.Password != "" {
		s.args = append(s.args, "--requirepass", opt.Password)
	}
	if opt.TLS {
		s.args = append(s.args, s.tlsArgs()...)
	} else {
		s.args = append(s.args, "--port", strconv.Itoa(s.port))
	}
	t.Cleanup(s.Stop)
	s.Restart()
	return s
}

// Addr is 127.0.0.1:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is the server's STORE_URL, database 0, with the password if any.
func (s *Server) URL() string {
	u := url.URL{Scheme: "redis", Host: s.Addr(), Path: "/0"}
	if s.opt.TLS {
		u.Scheme = "rediss"
	}
	if s.opt.Password != "" {
		u.User = url.UserPassword("", s.opt.Password)
	}
	return u.String()
}

// CertPool trusts the test CA of a TLS server (nil otherwise).
func (s *Server) CertPool() *x509.CertPool { return s.pool }

// PID is the running process's id, 0 when stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Restart starts the server (again) on the same port, with an empty
// dataset unless Options.Persist, and waits until it answers PING (a
// server that accepts connections but is still loading its append-only
// file answers LOADING). It fails the test if the server is running or does
// not come up within 10 s.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatalf("redistest: restart of a running server")
	}
	out := &bytes.Buffer{}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = s.dir, out, out
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("redistest: start redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }() // ends with the process, which Stop ends
	s.cmd, s.out = cmd, out
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s.answers() {
			break
		}
		select {
		case <-exited:
			s.cmd = nil
			s.t.Fatalf("redistest: redis-server exited at start: %s", out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			s.cmd = nil
			s.t.Fatalf("redistest: redis-server did not listen on %s within 10 s: %s", s.Addr(), out)
		}
	}
	s.exited = exited
}

// answers reports whether the server answers PING (with its password, if
// any): it listens and has loaded its dataset (it answers LOADING before).
func (s *Server) answers() bool {
	opt := &redis.Options{
		Addr: s.Addr(), Password: s.opt.Password, Protocol: 2,
		DialTimeout: 200 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second,
		MaxRetries: -1, DisableIdentity: true,
	}
	if s.opt.TLS {
		opt.TLSConfig = &tls.Config{RootCAs: s.pool, ServerName: "127.0.0.1"}
	}
	c := redis.NewClient(opt)
	defer c.Close()
	return c.Ping(context.Background()).Err() == nil
}

// Stop stops the server by its PID (SIGTERM, SIGKILL after 5 s) and waits
// for it. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // if paused
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// Pause stops the process (SIGSTOP) without closing its connections: a
// Redis that hangs, whose clients wait for their timeouts. Resume
// continues it; Stop resumes a paused server first.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// tlsArgs writes a CA and a server certificate for 127.0.0.1 to the
// server's directory and returns the arguments that serve TLS only.
func (s *Server) tlsArgs() []string {
	s.t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		s.t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "redistest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		s.t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		s.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		s.t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		s.t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(s.dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			s.t.Fatal(err)
		}
		return p
	}
	s.pool = x509.NewCertPool()
	s.pool.AddCert(ca)
	return []string{
		"--port", "0", "--tls-port", strconv.Itoa(s.port),
		"--tls-cert-file", write("server.crt", "CERTIFICATE", der),
		"--tls-key-file", write("server.key", "EC PRIVATE KEY", keyDER),
		"--tls-ca-cert-file", write("ca.crt", "CERTIFICATE", caDER),
		"--tls-auth-clients", "no",
	}
}

// freePort asks the kernel for a free loopback port.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// String names the server in test logs.
func (s *Server) String() string { return fmt.Sprintf("redis-server on %s", s.Addr()) }
