// Package metrics owns the gateway's Prometheus metrics: a registry of its
// own (never the global one) holding the Go and process collectors and the
// mcp_oauth_proxy_* metrics, and what feeds them: the gate's outcomes
// (Metrics implements gate.Metrics), the provider's fetches (Fetch, for
// provider.Config.OnFetch), the child's state, read from the supervisor
// at each scrape (WatchChild), and the shared store's round trips and
// fallback (StoreHooks, for store.RedisConfig).
//
// It does not listen: main serves Handler on METRICS_ADDR, a listener of
// its own, never the public port. Label values come from fixed sets (route
// class, status code, rejection reason, fetch result, child state, a
// policy rule's number and its decision); no subject, token, path or tool
// name is ever a label.
package metrics

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/gate"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/store"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/supervisor"
)

const namespace = "mcp_oauth_proxy"

// classes are gate.Outcome's classes, in the order of Metrics' arrays.
const (
	public = iota
	proxied
	rejected
	nClasses
)

func classIndex(c string) int {
	switch c {
	case gate.ClassProxied:
		return proxied
	case gate.ClassRejected:
		return rejected
	}
	return public
}

// Metrics is the gateway's metrics and their registry. Build it with New;
// its methods are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	requests    [nClasses]codeCounters
	durations   [nClasses]prometheus.Observer
	upstream    prometheus.Observer
	admitted    prometheus.Counter
	rejected    map[string]prometheus.Counter // every gate.RejectReasons(); read-only after New
	rejectedVec *prometheus.CounterVec        // a reason New did not know
	streams     prometheus.Gauge
	decisions   *prometheus.CounterVec // by rule number and decision: as many children as rules, times three

	jwksOK, jwksError, metadataOK, metadataError prometheus.Counter
}

// New registers every metric, with the Go and process collectors, in a new
// registry. Every label value known in advance is created here, so series
// exist (at zero) before the first event and the request path only
// increments.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m := &Metrics{reg: reg}
	// From the gateway's own sub-millisecond work up to slow tool calls.
	durationBuckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "requests_total",
		Help: "Requests answered, by route class (public, proxied, rejected) and status code.",
	}, []string{"route", "code"})
	durations := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "request_duration_seconds",
		Help:    "Time to answer a request, by route class (event streams, open as long as their client stays, are not observed).",
		Buckets: durationBuckets,
	}, []string{"route"})
	for i, class := range []string{gate.ClassPublic, gate.ClassProxied, gate.ClassRejected} {
		m.requests[i].vec = requests.MustCurryWith(prometheus.Labels{"route": class})
		m.durations[i] = durations.WithLabelValues(class)
	}
	upstream := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Name: "upstream_duration_seconds",
		Help:    "Time from forwarding a request to the MCP server's response headers.",
		Buckets: durationBuckets,
	})
	m.upstream = upstream
	admitted := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "auth_admitted_total",
		Help: "Requests that passed every check (token, allow-list, scopes, limits) and were forwarded.",
	})
	m.admitted = admitted
	m.rejectedVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "auth_rejected_total",
		Help: "Requests the gate refused, by reason.",
	}, []string{"reason"})
	m.rejected = map[string]prometheus.Counter{}
	for _, r := range gate.RejectReasons() {
		m.rejected[r] = m.rejectedVec.WithLabelValues(r)
	}
	streams := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "open_streams",
		Help: "Proxied event-stream (text/event-stream) responses open now.",
	})
	m.streams = streams
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "policy_decisions_total",
		Help: "Bodies whose calls (tools/call, resources/read, prompts/get) MCP_POLICY decided, by the deciding rule's number (\"none\": no rule matched) and decision (allow, deny, step_up).",
	}, []string{"rule", "decision"})

	jwks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "jwks_refresh_total",
		Help: "Fetches of the provider's JWKS (scheduled and for unknown key ids), by result.",
	}, []string{"result"})
	metadata := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "provider_metadata_fetch_total",
		Help: "Fetches of the provider's discovery document, by result.",
	}, []string{"result"})
	m.jwksOK, m.jwksError = jwks.WithLabelValues(provider.FetchOK), jwks.WithLabelValues(provider.FetchError)
	m.metadataOK, m.metadataError = metadata.WithLabelValues(provider.FetchOK), metadata.WithLabelValues(provider.FetchError)

	reg.MustRegister(requests, durations, upstream, admitted, m.rejectedVec, streams, m.decisions, jwks, metadata)
	return m
}

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Request counts one request the gate answered (gate.Metrics).
func (m *Metrics) Request(o gate.Outcome) {
	i := classIndex(o.Class)
	m.requests[i].inc(o.Status)
	switch i {
	case proxied:
		m.admitted.Inc()
	case rejected:
		if c, ok := m.rejected[o.Reason]; ok {
			c.Inc()
		} else {
			m.rejectedVec.WithLabelValues(o.Reason).Inc()
		}
	}
	if o.Decision != "" {
		// Bounded: a rule's number, never the tool's name.
		m.decisions.WithLabelValues(o.Rule, o.Decision).Inc()
	}
	if !o.Stream {
		m.durations[i].Observe(o.Duration.Seconds())
	}
	if o.Upstream > 0 {
		m.upstream.Observe(o.Upstream.Seconds())
	}
}

// Stream counts event streams opening (+1) and ending (-1) (gate.Metrics).
func (m *Metrics) Stream(delta int) { m.streams.Add(float64(delta)) }

// Fetch counts a fetch by the provider (provider.Config.OnFetch).
func (m *Metrics) Fetch(kind, result string) {
	ok := result == provider.FetchOK
	switch {
	case kind == provider.FetchJWKS && ok:
		m.jwksOK.Inc()
	case kind == provider.FetchJWKS:
		m.jwksError.Inc()
	case ok:
		m.metadataOK.Inc()
	default:
		m.metadataError.Inc()
	}
}

// codeCounters are one route class's requests_total children, one per
// status code, created on first use and then found without a lock or an
// allocation.
type codeCounters struct {
	vec   *prometheus.CounterVec // curried with the route
	cells [1000]atomic.Pointer[prometheus.Counter]
}

func (c *codeCounters) inc(code int) {
	if code < 100 || code > 999 { // net/http never writes these
		code = 0
	}
	cell := &c.cells[code%1000]
	if p := cell.Load(); p != nil {
		(*p).Inc()
		return
	}
	ctr := c.vec.WithLabelValues(strconv.Itoa(code)) // the same child on a race
	cell.Store(&ctr)
	ctr.Inc()
}

// Child models *supervisor.Supervisor.
type Child interface {
	Status() supervisor.Status
	ExitCode() int
}

// WatchChild adds the child_* metrics, read from c at each scrape: a gauge
// per supervisor state (1 for the current one), starts, restarts, and the
// last exit code (once a child has exited). Call it once.
func (m *Metrics) WatchChild(c Child) {
	m.reg.MustRegister(&childCollector{
		c: c,
		state: prometheus.NewDesc(namespace+"_child_state",
			"1 for the supervisor's current state of the MCP server child, 0 for the others.", []string{"state"}, nil),
		starts: prometheus.NewDesc(namespace+"_child_starts_total",
			"Child processes started.", nil, nil),
		restarts: prometheus.NewDesc(namespace+"_child_restarts_total",
			"Restarts of the child after it exited or failed to become ready.", nil, nil),
		exit: prometheus.NewDesc(namespace+"_child_last_exit_code",
			"Exit status of the last child that ended, as a shell reports it (128+N for signal N).", nil, nil),
	})
}

type childCollector struct {
	c                             Child
	state, starts, restarts, exit *prometheus.Desc
}

func (cc *childCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- cc.state
	ch <- cc.starts
	ch <- cc.restarts
	ch <- cc.exit
}

func (cc *childCollector) Collect(ch chan<- prometheus.Metric) {
	st := cc.c.Status()
	for _, s := range supervisor.States() {
		v := 0.0
		if s == st.State {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(cc.state, prometheus.GaugeValue, v, s)
	}
	ch <- prometheus.MustNewConstMetric(cc.starts, prometheus.CounterValue, float64(st.Starts))
	ch <- prometheus.MustNewConstMetric(cc.restarts, prometheus.CounterValue, float64(st.Restarts))
	if st.LastExit != "" {
		ch <- prometheus.MustNewConstMetric(cc.exit, prometheus.GaugeValue, float64(cc.c.ExitCode()))
	}
}

// WatchMemoryStore adds store_memory_entries and store_memory_capacity,
// read at each scrape, for a gateway that keeps its one-time values and
// revocations in memory (no STORE_URL): when the entries reach the
// capacity, the broker's token endpoint answers 503 until they expire.
// Call it once.
func (m *Metrics) WatchMemoryStore(entries func() int, capacity int) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "store_memory_entries",
			Help: "Keys held by the in-memory store (used codes and refresh tokens, revocations, logins in progress), expired ones not yet swept included.",
		}, func() float64 { return float64(entries()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "store_memory_capacity",
			Help: "Keys the in-memory store holds at most; near it, claims fail and the broker's token endpoint answers 503.",
		}, func() float64 { return float64(capacity) }),
	)
}

// StoreHooks registers the store_* metrics and returns the hooks that feed
// them, for store.RedisConfig's OnOp and OnFallback: operations by op and
// result (store.Ops(), store.Results()), the round trips' latency by op,
// and whether the store answers from the replica's own state. Call it
// once, when the gateway shares its state through Redis.
func (m *Metrics) StoreHooks() (onOp func(op, result string, d time.Duration), onFallback func(active bool)) {
	ops := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "store_operations_total",
		Help: "Operations of the shared store (Redis), by operation and result: ok, error (the round trip failed), skipped (Redis failed moments ago and was not asked). A limit that was not ok was decided from this replica's state; a claim or revocation failed.",
	}, []string{"op", "result"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "store_round_trip_seconds",
		Help:    "Time of a round trip to the shared store (Redis), answered or failed, by operation.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	}, []string{"op"})
	fallback := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "store_fallback",
		Help: "1 while the shared store (Redis) does not answer and limits and revocation checks use this replica's state; 0 otherwise.",
	})
	type opMetrics struct {
		results map[string]prometheus.Counter
		latency prometheus.Observer
	}
	byOp := map[string]opMetrics{} // read-only once built
	for _, op := range store.Ops() {
		om := opMetrics{results: map[string]prometheus.Counter{}, latency: latency.WithLabelValues(op)}
		for _, res := range store.Results() {
			om.results[res] = ops.WithLabelValues(op, res)
		}
		byOp[op] = om
	}
	m.reg.MustRegister(ops, latency, fallback)
	onOp = func(op, result string, d time.Duration) {
		om, ok := byOp[op]
		c, known := om.results[result]
		if !ok || !known { // not one of store's: counted, never dropped
			ops.WithLabelValues(op, result).Inc()
			return
		}
		c.Inc()
		if result != store.ResultSkipped {
			om.latency.Observe(d.Seconds())
		}
	}
	onFallback = func(active bool) {
		if active {
			fallback.Set(1)
		} else {
			fallback.Set(0)
		}
	}
	return onOp, onFallback
}
