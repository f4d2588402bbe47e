package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The helpers that replica tests build on, each proven on its own.

func TestRedisHelper(t *testing.T) {
	t.Parallel()
	timed(t, "redis-helper", func(t *testing.T) {
		t.Run("password-and-persistence", func(t *testing.T) {
			r := startRedis(t, redisOptions{Password: "e2e-redis-password", AppendOnly: true})
			if want := "redis://:e2e-redis-password@" + r.Addr + "/0"; r.URL != want {
				t.Errorf("URL: got %q, want %q", r.URL, want)
			}
			if got, err := r.Do("SET", "e2e:key", "kept"); err != nil || got != "OK" {
				t.Fatalf("SET: %v %v", got, err)
			}
			// Without the password the server refuses.
			anon := &redisServer{Addr: r.Addr}
			if _, err := anon.Do("GET", "e2e:key"); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
				t.Errorf("GET without AUTH: want NOAUTH, got %v", err)
			}
			r.Stop(t)
			if _, err := r.Do("PING"); err == nil {
				t.Fatalf("PING answered after Stop")
			}
			r.Start(t)
			if got, err := r.Do("GET", "e2e:key"); err != nil || got != "kept" {
				t.Errorf("GET after a restart with AppendOnly: got %v %v, want \"kept\"", got, err)
			}
		})
		t.Run("nothing-kept-by-default", func(t *testing.T) {
			r := startRedis(t, redisOptions{})
			if got, err := r.Do("INCR", "e2e:n"); err != nil || got != int64(1) {
				t.Fatalf("INCR: %v %v", got, err)
			}
			r.Stop(t)
			r.Start(t)
			if got, err := r.Do("GET", "e2e:n"); err != nil || got != nil {
				t.Errorf("GET after a restart without persistence: got %v %v, want nil", got, err)
			}
		})
	})
}

func TestNginxHelper(t *testing.T) {
	t.Parallel()
	timed(t, "nginx-helper", func(t *testing.T) {
		release := make(chan struct{})
		upstream := func(name string) *httptest.Server {
			return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/stream" {
					w.Header().Set("Content-Type", "text/event-stream")
					fmt.Fprintf(w, "data: first from %s\n\n", name)
					w.(http.Flusher).Flush()
					select {
					case <-release:
					case <-r.Context().Done():
						return
					}
					fmt.Fprintf(w, "data: second from %s\n\n", name)
					return
				}
				fmt.Fprintf(w, "%s host=%s xff=%s proto=%s", name, r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"))
			}))
		}
		a, b := upstream("a"), upstream("b")
		defer a.Close()
		defer b.Close()
		aAddr, bAddr := strings.TrimPrefix(a.URL, "http://"), strings.TrimPrefix(b.URL, "http://")
		n := startNginx(t, aAddr, bAddr)

		// Round robin over both, with the forwarding headers a gateway behind it sees.
		seen := map[string]int{}
		for i := 0; i < 4; i++ {
			resp, err := http.Get(n.URL + "/hello")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			f := strings.Fields(string(body))
			if resp.StatusCode != http.StatusOK || len(f) != 4 {
				t.Fatalf("GET /hello through nginx: %d %q", resp.StatusCode, body)
			}
			seen[f[0]]++
			if want := "host=" + n.Addr; f[1] != want {
				t.Errorf("upstream saw %s, want %s (Host passed through)", f[1], want)
			}
			if f[2] != "xff=127.0.0.1" || f[3] != "proto=http" {
				t.Errorf("forwarding headers: got %q %q", f[2], f[3])
			}
		}
		if seen["a"] != 2 || seen["b"] != 2 {
			t.Errorf("want 2 requests at each upstream (round robin), got %v", seen)
		}
		used := n.upstreamsUsed(4)
		if len(used) != 4 || used[0] == used[1] {
			t.Errorf("access log: want 4 requests alternating upstreams, got %v", used)
		}
		for _, u := range used {
			if u != aAddr && u != bAddr {
				t.Errorf("access log names upstream %q, neither %s nor %s", u, aAddr, bAddr)
			}
		}

		// An event stream comes through as it is written, not when it ends.
		first := make(chan string, 1)
		go func() {
			resp, err := http.Get(n.URL + "/stream")
			if err != nil {
				first <- err.Error()
				return
			}
			defer resp.Body.Close()
			line, _ := bufio.NewReader(resp.Body).ReadString('\n')
			first <- line
			_, _ = io.Copy(io.Discard, resp.Body)
		}()
		select {
		case line := <-first:
			if !strings.HasPrefix(line, "data: first from ") {
				t.Errorf("first event: %q", line)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("the first event did not come through nginx before the upstream finished (buffered)")
		}
		close(release)
	})
}
