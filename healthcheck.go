package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// runHealthcheck probes a running gateway's /healthz on its configured
// PORT (and LISTEN_HOST) and succeeds when it answers 200; for a container
// HEALTHCHECK in an image without a shell or curl.
func runHealthcheck(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) > 0 {
		return usageError("healthcheck takes no arguments (it reads PORT and LISTEN_HOST)")
	}
	// Read as the gateway reads them (blanks trimmed, the same checks), so
	// a value the gateway runs with is one the probe finds it on.
	p := strings.TrimSpace(getenv("PORT"))
	if p == "" {
		p = "8080"
	}
	port, err := port(1)(p)
	if err != nil {
		return fmt.Errorf("healthcheck: PORT %w", err)
	}
	host, err := ipHost(strings.TrimSpace(getenv("LISTEN_HOST")))
	if err != nil {
		return fmt.Errorf("healthcheck: LISTEN_HOST %w", err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: "/healthz"}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s", u.String(), resp.Status)
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}
