package main

// The replica examples (examples/replicas: compose with two gateways, nginx and Redis;
// examples/kubernetes: a Deployment of two, a Service, Redis) cannot run here: there is no
// container engine. These tests read them as YAML and hold them to what the gateway does:
// each configuration is valid and draws no warning, every variable is a setting or one for
// the MCP server, secrets come from secrets, the probes ask public routes, and the ports
// agree. The same topology runs for real in e2e/replicas_test.go, nginx.conf included.

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"go.yaml.in/yaml/v3"
)

// exampleSecrets stand for the values of the secrets the examples refer to, so that their
// configuration can be parsed.
var exampleSecrets = map[string]string{
	"BROKER_SECRET":      "an example broker secret of more than 32 bytes",
	"OIDC_CLIENT_SECRET": "example-client-secret",
	"STORE_URL":          "redis://:example@mcp-oauth-proxy-redis:6379/0",
}

// mustBeSecret reports whether a setting's value must come from a secret, never from the
// example's text: every *SECRET* setting, and STORE_URL, which holds Redis's password.
func mustBeSecret(name string) bool {
	return strings.Contains(name, "SECRET") || name == "STORE_URL"
}

// exampleVariable says what is wrong with a variable an example sets for the gateway ("":
// nothing). A variable is a setting, or one for the MCP server: the gateway passes it on
// (not a credential name it withholds), it is not a misspelt setting, and the example says
// so in a comment beside it naming the MCP server.
func exampleVariable(name, comments string) string {
	for _, s := range settings(new(Config)) {
		if s.env == name {
			return ""
		}
	}
	if w := misspelt([]string{name + "=x"}); len(w) > 0 {
		return w[0]
	}
	if len(childEnvironment([]string{name + "=x"})) == 0 {
		return name + " is not a setting, and the gateway never passes it to the MCP server"
	}
	if !strings.Contains(comments, "MCP server") {
		return name + " is not a setting: a variable for the MCP server needs a comment beside it saying so"
	}
	return ""
}

func TestExampleVariable(t *testing.T) {
	for _, tc := range []struct {
		name, variable, comments string
		ok                       bool
	}{
		{"a setting", "RESOURCE_URL", "", true},
		{"a misspelt setting", "OIDC_ISSUER", "for the MCP server", false},
		{"a credential name the child never sees", "BROKER_TOKEN", "for the MCP server", false},
		{"the MCP server's, documented", "GITHUB_TOKEN", "# read by the MCP server", true},
		{"the MCP server's, undocumented", "GITHUB_TOKEN", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := exampleVariable(tc.variable, tc.comments); (got == "") != tc.ok {
				t.Errorf("exampleVariable(%q, %q) = %q, want ok %t", tc.variable, tc.comments, got, tc.ok)
			}
		})
	}
}

// checkExampleConfig parses env (the values an example sets, secrets standing in) as the
// gateway would and checks it is valid, draws no warning, and answers each of probes (paths)
// with a public route: not 401, as every other path without a token is. It returns the
// configuration.
func checkExampleConfig(t *testing.T, env map[string]string, probes ...string) *Config {
	t.Helper()
	cfg, err := parseConfig(nil, envOf(env), false)
	if err != nil {
		t.Fatalf("the example's configuration is not valid: %v", err)
	}
	if len(cfg.warnings) > 0 {
		t.Errorf("the example's configuration draws warnings: %q", cfg.warnings)
	}
	p, err := build(cfg, logs{root: hclog.NewNullLogger()}, false)
	if err != nil {
		t.Fatalf("build the gateway of the example: %v", err)
	}
	defer p.state.close()
	defer p.endStreams()
	ask := func(path string) (int, []byte) {
		rec := httptest.NewRecorder()
		p.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.Bytes()
	}
	if got, _ := ask("/not-a-public-route"); got != http.StatusUnauthorized {
		t.Fatalf("a path that is not public: %d, want 401 (else the probe checks below prove nothing)", got)
	}
	for _, path := range probes {
		switch got, body := ask(path); {
		case path == "/healthz" && got != http.StatusOK:
			t.Errorf("probe %s: %d, want 200", path, got)
		case path == "/readyz" && !json.Valid(body), got == http.StatusUnauthorized:
			t.Errorf("probe %s: %d %s, want a public route's answer", path, got, body)
		}
	}
	return cfg
}

// --- Kubernetes ---

// k8sDoc is one object of a manifest: its kind and name, and the node to decode by kind.
type k8sDoc struct {
	kind, name string
	node       *yaml.Node
}

type podTemplate struct {
	Metadata struct {
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		SecurityContext struct {
			RunAsNonRoot *bool  `yaml:"runAsNonRoot"`
			RunAsUser    *int64 `yaml:"runAsUser"`
		} `yaml:"securityContext"`
		Containers []k8sContainer `yaml:"containers"`
	} `yaml:"spec"`
}

type k8sContainer struct {
	Name  string `yaml:"name"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env            []yaml.Node `yaml:"env"` // nodes: their comments document a variable
	EnvFrom        []any       `yaml:"envFrom"`
	Args           []string    `yaml:"args"`
	ReadinessProbe *k8sProbe   `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe   `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"` // a number or a port's name
	} `yaml:"httpGet"`
}

type k8sEnvVar struct {
	Name      string  `yaml:"name"`
	Value     *string `yaml:"value"`
	ValueFrom *struct {
		SecretKeyRef *struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
		} `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

type k8sWorkload struct {
	Spec struct {
		Replicas int         `yaml:"replicas"`
		Template podTemplate `yaml:"template"`
	} `yaml:"spec"`
}

type k8sService struct {
	Spec struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Port       int `yaml:"port"`
			TargetPort any `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type k8sNetworkPolicy struct {
	Spec struct {
		PodSelector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"podSelector"`
		Ingress []struct {
			Ports []struct {
				Port any `yaml:"port"`
			} `yaml:"ports"`
		} `yaml:"ingress"`
	} `yaml:"spec"`
}

// readK8s reads every object of a multi-document manifest.
func readK8s(t *testing.T, path string) (docs []k8sDoc, text string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var head struct {
			Kind     string `yaml:"kind"`
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
		}
		if err := n.Decode(&head); err != nil || head.Kind == "" || head.Metadata.Name == "" {
			t.Fatalf("%s: an object without kind or name (%v)", path, err)
		}
		docs = append(docs, k8sDoc{head.Kind, head.Metadata.Name, &n})
	}
	return docs, string(b)
}

// object decodes the object of kind and name into v.
func object(t *testing.T, docs []k8sDoc, kind, name string, v any) {
	t.Helper()
	for _, d := range docs {
		if d.kind == kind && d.name == name {
			if err := d.node.Decode(v); err != nil {
				t.Fatalf("%s %s: %v", kind, name, err)
			}
			return
		}
	}
	t.Fatalf("no %s named %s in the manifest", kind, name)
}

// containerPort resolves a port reference (a number, or a name) against c's ports; 0 if
// it names none of them.
func containerPort(c k8sContainer, ref any) int {
	for _, p := range c.Ports {
		if ref == p.Name || ref == p.ContainerPort {
			return p.ContainerPort
		}
	}
	return 0
}

// comments gathers every comment in and around a node.
func comments(n *yaml.Node) string {
	s := n.HeadComment + n.LineComment + n.FootComment
	for _, c := range n.Content {
		s += comments(c)
	}
	return s
}

func TestKubernetesExample(t *testing.T) {
	const file = "examples/kubernetes/mcp-oauth-proxy.yaml"
	docs, text := readK8s(t, file)
	var dep k8sWorkload
	object(t, docs, "Deployment", "mcp-oauth-proxy", &dep)
	if dep.Spec.Replicas != 2 {
		t.Errorf("replicas: %d, want 2", dep.Spec.Replicas)
	}
	pod := dep.Spec.Template
	if sc := pod.Spec.SecurityContext; sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		t.Errorf("the pod must run as a numbered user that is not root (runAsNonRoot cannot check the image's user name)")
	}
	i := slices.IndexFunc(pod.Spec.Containers, func(c k8sContainer) bool { return c.Name == "gateway" })
	if i < 0 {
		t.Fatal("no container named gateway")
	}
	gw := pod.Spec.Containers[i]
	if sc := gw.SecurityContext; sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("the gateway's securityContext: want a read-only root filesystem, no privilege escalation, every capability dropped")
	}
	if gw.Resources.Requests["memory"] == "" || gw.Resources.Limits["memory"] == "" {
		t.Errorf("the gateway's resources: want a memory request and limit")
	}
	if len(gw.EnvFrom) > 0 {
		t.Errorf("envFrom: every key of the source becomes a variable, and those that are not settings reach the MCP server; name each variable")
	}

	// Every variable: a setting or the MCP server's; secrets from Secrets, named in the
	// kubectl command the file gives.
	env := map[string]string{}
	for _, n := range gw.Env {
		var v k8sEnvVar
		if err := n.Decode(&v); err != nil {
			t.Fatal(err)
		}
		if why := exampleVariable(v.Name, comments(&n)); why != "" {
			t.Errorf("%s: %s", file, why)
		}
		var ref *struct{ Name, Key string }
		if v.ValueFrom != nil && v.ValueFrom.SecretKeyRef != nil {
			ref = &struct{ Name, Key string }{v.ValueFrom.SecretKeyRef.Name, v.ValueFrom.SecretKeyRef.Key}
		}
		switch {
		case mustBeSecret(v.Name) && ref == nil:
			t.Errorf("%s: %s must come from a Secret (valueFrom.secretKeyRef), never be written in the manifest", file, v.Name)
		case ref != nil:
			if !strings.Contains(text, "--from-literal="+ref.Key+"=") {
				t.Errorf("%s: %s comes from key %s, which the kubectl command in the file does not create", file, v.Name, ref.Key)
			}
			secret, ok := exampleSecrets[v.Name]
			if !ok {
				t.Fatalf("no example value for the secret %s: add one to exampleSecrets", v.Name)
			}
			env[v.Name] = secret
		case v.Value != nil:
			env[v.Name] = *v.Value
		default:
			t.Errorf("%s: %s has neither a value nor a secret", file, v.Name)
		}
	}
	var probes []string
	for what, p := range map[string]*k8sProbe{"readiness": gw.ReadinessProbe, "liveness": gw.LivenessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Fatalf("no %s probe over HTTP", what)
		}
		probes = append(probes, p.HTTPGet.Path)
	}
	if gw.ReadinessProbe.HTTPGet.Path != "/readyz" || gw.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("probes: readiness %s, liveness %s; want /readyz and /healthz", gw.ReadinessProbe.HTTPGet.Path, gw.LivenessProbe.HTTPGet.Path)
	}
	cfg := checkExampleConfig(t, env, probes...)

	// One port: PORT, the container's, the probes', the Service's target, the policy's.
	port := cfg.Listen.Port
	for what, ref := range map[string]any{
		"the container port named http": "http",
		"the readiness probe's port":    gw.ReadinessProbe.HTTPGet.Port,
		"the liveness probe's port":     gw.LivenessProbe.HTTPGet.Port,
	} {
		if got := containerPort(gw, ref); got != port {
			t.Errorf("%s (%v) is %d; PORT is %d", what, ref, got, port)
		}
	}
	var svc k8sService
	object(t, docs, "Service", "mcp-oauth-proxy", &svc)
	if len(svc.Spec.Ports) != 1 || containerPort(gw, svc.Spec.Ports[0].TargetPort) != port {
		t.Errorf("the Service's targetPort does not lead to PORT %d: %+v", port, svc.Spec.Ports)
	}
	if !matches(svc.Spec.Selector, pod.Metadata.Labels) {
		t.Errorf("the Service's selector %v does not select the pods %v", svc.Spec.Selector, pod.Metadata.Labels)
	}
	var np k8sNetworkPolicy
	object(t, docs, "NetworkPolicy", "mcp-oauth-proxy", &np)
	if !matches(np.Spec.PodSelector.MatchLabels, pod.Metadata.Labels) || len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].Ports) != 1 ||
		containerPort(gw, np.Spec.Ingress[0].Ports[0].Port) != port {
		t.Errorf("the NetworkPolicy must let in exactly PORT %d of the gateway's pods: %+v", port, np.Spec)
	}

	// Redis: persistent, and where the STORE_URL of the kubectl command points.
	var redis k8sWorkload
	object(t, docs, "StatefulSet", "mcp-oauth-proxy-redis", &redis)
	if c := redis.Spec.Template.Spec.Containers; len(c) != 1 || !hasFlag(c[0].Args, "--appendonly", "yes") {
		t.Errorf("Redis must run with --appendonly yes (used codes and revocations survive its restart)")
	}
	var redisSvc k8sService
	object(t, docs, "Service", "mcp-oauth-proxy-redis", &redisSvc)
	m := regexp.MustCompile(`--from-literal=STORE_URL="(redis://[^"]+)"`).FindStringSubmatch(text)
	if m == nil {
		t.Fatal("no STORE_URL in the file's kubectl command")
	}
	u, err := url.Parse(m[1])
	if err != nil || u.Hostname() != "mcp-oauth-proxy-redis" || len(redisSvc.Spec.Ports) != 1 || u.Port() != strconv.Itoa(redisSvc.Spec.Ports[0].Port) ||
		containerPort(redis.Spec.Template.Spec.Containers[0], redisSvc.Spec.Ports[0].TargetPort) != 6379 {
		t.Errorf("STORE_URL %s does not lead to the Redis Service and its container's port: %v %+v", m[1], err, redisSvc.Spec)
	}
}

// matches reports whether selector selects labels.
func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// hasFlag reports whether args hold flag followed by value.
func hasFlag(args []string, flag, value string) bool {
	i := slices.Index(args, flag)
	return i >= 0 && i+1 < len(args) && args[i+1] == value
}

// --- compose ---

type composeFile struct {
	Services map[string]struct {
		Image       string    `yaml:"image"`
		Command     []string  `yaml:"command"`
		Environment yaml.Node `yaml:"environment"` // a mapping; its comments document a variable
		EnvFile     any       `yaml:"env_file"`
		Ports       []string  `yaml:"ports"`
		Volumes     []string  `yaml:"volumes"`
		Networks    map[string]struct {
			IPv4Address string `yaml:"ipv4_address"`
		} `yaml:"networks"`
	} `yaml:"services"`
}

// interpolation is compose's ${NAME}, ${NAME:?message} and their kin.
var interpolation = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}`)

func TestComposeExample(t *testing.T) {
	const dir = "examples/replicas/"
	b, err := os.ReadFile(dir + "compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(b, &cf); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	envExample, err := os.ReadFile(dir + "env.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range interpolation.FindAllStringSubmatch(string(b), -1) {
		if !regexp.MustCompile(`(?m)^` + m[1] + `=`).Match(envExample) {
			t.Errorf("compose.yaml reads ${%s}, which env.example does not list", m[1])
		}
	}

	var gateways []string
	var port int
	var trusted []netip.Prefix
	for name, svc := range cf.Services {
		if !strings.HasPrefix(name, "gateway-") {
			continue
		}
		gateways = append(gateways, name)
		if svc.EnvFile != nil {
			t.Errorf("%s: env_file: every variable of the file reaches the gateway, and those that are not settings the MCP server; name each in environment", name)
		}
		env := map[string]string{}
		e := svc.Environment
		if e.Kind != yaml.MappingNode {
			t.Fatalf("%s: environment is not a mapping", name)
		}
		for i := 0; i+1 < len(e.Content); i += 2 {
			k, v := e.Content[i], e.Content[i+1]
			if why := exampleVariable(k.Value, comments(k)+comments(v)); why != "" {
				t.Errorf("compose.yaml, %s: %s", name, why)
			}
			if mustBeSecret(k.Value) && !secretOnly(k.Value, v.Value) {
				t.Errorf("compose.yaml, %s: %s = %q: its secret must come from .env (${...}), never be written in the file", name, k.Value, v.Value)
			}
			// ${...} stands for what .env holds: an example value of the right shape.
			env[k.Value] = interpolation.ReplaceAllString(v.Value, "example-value-of-more-than-32-bytes-0123456789")
		}
		cfg := checkExampleConfig(t, env, "/healthz", "/readyz")
		if port != 0 && cfg.Listen.Port != port {
			t.Errorf("the gateways listen on different ports: %d and %d", port, cfg.Listen.Port)
		}
		port, trusted = cfg.Listen.Port, cfg.Gate.TrustedProxies
		if u, err := url.Parse(env["STORE_URL"]); err != nil || u.Hostname() != "redis" || u.Port() != "6379" {
			t.Errorf("%s: STORE_URL %q does not lead to the redis service", name, env["STORE_URL"])
		}
	}
	slices.Sort(gateways)
	if !slices.Equal(gateways, []string{"gateway-1", "gateway-2"}) {
		t.Fatalf("gateway services: %v, want gateway-1 and gateway-2", gateways)
	}

	// nginx: this directory's nginx.conf, in front of exactly the gateways on PORT, and the
	// address the gateways trust.
	nginx := cf.Services["nginx"]
	if !slices.Contains(nginx.Volumes, "./nginx.conf:/etc/nginx/conf.d/default.conf:ro") {
		t.Errorf("nginx does not mount ./nginx.conf as the image's default.conf (e2e runs it that way): %v", nginx.Volumes)
	}
	conf, err := os.ReadFile(dir + "nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	servers := regexp.MustCompile(`(?m)^\s*server\s+([\w.-]+):(\d+)\s*;`).FindAllStringSubmatch(string(conf), -1)
	if len(servers) == 0 {
		t.Fatal("nginx.conf has no upstream server")
	}
	for _, s := range servers {
		if !slices.Contains(gateways, s[1]) || s[2] != strconv.Itoa(port) {
			t.Errorf("nginx.conf's upstream server %s:%s is not a gateway on PORT %d", s[1], s[2], port)
		}
	}
	for _, d := range []string{"proxy_buffering off;", "proxy_request_buffering off;", "proxy_http_version 1.1;", `proxy_set_header Connection "";`, "proxy_read_timeout 1h;"} {
		if !strings.Contains(string(conf), d) {
			t.Errorf("nginx.conf lacks %s (streams and keep-alive to the replicas)", d)
		}
	}
	addr, err := netip.ParseAddr(nginx.Networks["replicas"].IPv4Address)
	if err != nil || !slices.ContainsFunc(trusted, func(p netip.Prefix) bool { return p.Contains(addr) }) {
		t.Errorf("TRUSTED_PROXIES %v does not name nginx's address %q", trusted, nginx.Networks["replicas"].IPv4Address)
	}

	redis := cf.Services["redis"]
	if !hasFlag(redis.Command, "--appendonly", "yes") {
		t.Errorf("Redis must run with --appendonly yes (used codes and revocations survive its restart): %v", redis.Command)
	}
	if len(redis.Ports) > 0 {
		t.Errorf("Redis is published (%v): only nginx should be", redis.Ports)
	}
	for _, name := range gateways {
		if ports := cf.Services[name].Ports; len(ports) > 0 {
			t.Errorf("%s is published (%v): only nginx should be", name, ports)
		}
	}
}

// secretOnly reports whether a compose value of a secret setting writes none of the secret
// itself: the whole value is one ${...}, or for STORE_URL the password is.
func secretOnly(name, value string) bool {
	if name != "STORE_URL" {
		m := interpolation.FindStringIndex(value)
		return m != nil && m[0] == 0 && m[1] == len(value)
	}
	const stand = "INTERPOLATED"
	u, err := url.Parse(interpolation.ReplaceAllString(value, stand))
	if err != nil || u.User == nil {
		return false
	}
	p, _ := u.User.Password()
	return p == stand
}

// The example values of the secrets fit their settings (a test of the test's own table).
func TestExampleSecretsAreValid(t *testing.T) {
	env := map[string]string{"OIDC_ISSUER_URL": "https://auth.example.com", "RESOURCE_URL": "https://mcp.example.com/mcp",
		"MCP_UPSTREAM_URL": "http://127.0.0.1:3001", "AUTH_SERVER_MODE": "broker", "OIDC_CLIENT_ID": "x", "ALLOW_SUBS": "x"}
	for name, v := range exampleSecrets {
		if !mustBeSecret(name) {
			t.Errorf("%s is in exampleSecrets but is not a secret setting", name)
		}
		env[name] = v
	}
	if _, err := parseConfig(nil, envOf(env), false); err != nil {
		t.Errorf("the example secrets: %v", err)
	}
}
