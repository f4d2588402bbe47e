package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// browserStep is one step of browser.mjs, as data: exactly one of
//
//	{"waitFor": css}   {"fill": css, "value": text}   {"click": css}   {"click": css, "navigation": false}
//	{"expectText": text, "selector": css}   {"screenshot": path}
//
// with "optional": true to skip a step whose element does not appear, and "timeoutMs".
type browserStep map[string]any

// browserSpec is what browser.mjs runs: open URL, perform Steps, stop when the main frame
// reaches StopAt (a loopback redirect URI, which the driver then serves itself).
type browserSpec struct {
	URL       string        `json:"url"`
	StopAt    string        `json:"stopAt,omitempty"`
	Steps     []browserStep `json:"steps"`
	TimeoutMs int           `json:"timeoutMs,omitempty"`
}

// browserResult is browser.mjs's report.
type browserResult struct {
	OK       bool              `json:"ok"`
	Error    string            `json:"error"`
	FinalURL string            `json:"finalUrl"`
	Callback map[string]string `json:"callback"`
	Pages    []struct {
		URL    string `json:"url"`
		Status int    `json:"status"`
	} `json:"pages"`
	Steps []struct {
		Step    string `json:"step"`
		Ms      int    `json:"ms"`
		Skipped bool   `json:"skipped"`
	} `json:"steps"`
	ConsoleErrors  []string `json:"consoleErrors"`
	PageErrors     []string `json:"pageErrors"`
	FailedRequests []struct {
		URL   string `json:"url"`
		Error string `json:"error"`
	} `json:"failedRequests"`
	HTTPErrors []struct {
		URL    string `json:"url"`
		Status int    `json:"status"`
	} `json:"httpErrors"`
	Cookies   []browserCookie `json:"cookies"`
	ElapsedMs int             `json:"elapsedMs"`
}

// browserCookie is a cookie the browser kept, without its value.
type browserCookie struct {
	Name     string `json:"name"`
	Domain   string `json:"domain"`
	Path     string `json:"path"`
	HTTPOnly bool   `json:"httpOnly"`
	Secure   bool   `json:"secure"`
	SameSite string `json:"sameSite"`
	Session  bool   `json:"session"`
}

// runBrowser runs browser.mjs with Node 22 and Debian's Chromium and returns its report,
// whether or not the run succeeded (check OK and Error).
func runBrowser(t *testing.T, spec browserSpec) browserResult {
	t.Helper()
	node, chrome := node22(t), chromium(t)
	needNodeModule(t, "puppeteer-core")
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runScript(t, node, 90*time.Second, []string{"E2E_CHROMIUM=" + chrome}, "browser.mjs", string(b))
	var r browserResult
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		t.Fatalf("browser.mjs: no JSON report (%v)\nstdout:\n%s\nstderr:\n%s", err, out, stderr)
	}
	return r
}

// TestBrowserDriver proves browser.mjs's instruments on a page made to trip them: a form to
// fill and submit, a redirect to a loopback redirect URI, a console error, a cookie.
func TestBrowserDriver(t *testing.T) {
	t.Parallel()
	needSuite(t)
	timed(t, "browser-driver", func(t *testing.T) {
		stopAt := fmt.Sprintf("http://127.0.0.1:%d/callback", freePort(t))
		site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.Method == http.MethodGet && r.URL.Path == "/login":
				http.SetCookie(w, &http.Cookie{Name: "e2e_login", Value: "secret-value", Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				fmt.Fprint(w, `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Log in</title></head><body>
<script>console.error("e2e-console-check")</script>
<form method="post" action="/login"><input name="user"><button id="go" type="submit">Go</button></form></body></html>`)
			case r.Method == http.MethodPost && r.URL.Path == "/login":
				_ = r.ParseForm()
				http.Redirect(w, r, stopAt+"?code=c-"+r.PostForm.Get("user")+"&state=s1", http.StatusSeeOther)
			default:
				http.NotFound(w, r)
			}
		}))
		defer site.Close()

		r := runBrowser(t, browserSpec{URL: site.URL + "/login", StopAt: stopAt, Steps: []browserStep{
			{"waitFor": "form"},
			{"click": "#consent-shown-only-once", "optional": true},
			{"fill": "input[name=user]", "value": "alice"},
			{"expectText": "Go", "selector": "#go"},
			{"click": "#go"},
		}})
		if !r.OK {
			t.Fatalf("browser run failed: %s", r.Error)
		}
		if got := r.Callback["code"]; got != "c-alice" || r.Callback["state"] != "s1" {
			t.Errorf("callback: got %v, want code c-alice and state s1", r.Callback)
		}
		if !strings.HasPrefix(r.FinalURL, stopAt) {
			t.Errorf("final URL %q, want it under %s", r.FinalURL, stopAt)
		}
		if len(r.Steps) != 5 || !r.Steps[1].Skipped || r.Steps[2].Skipped {
			t.Errorf("steps: want 5 with only the optional click skipped, got %+v", r.Steps)
		}
		if len(r.ConsoleErrors) != 1 || !strings.Contains(r.ConsoleErrors[0], "e2e-console-check") {
			t.Errorf("console errors: want exactly the page's e2e-console-check, got %v", r.ConsoleErrors)
		}
		if len(r.PageErrors) != 0 {
			t.Errorf("page errors: %v", r.PageErrors)
		}
		var found bool
		for _, c := range r.Cookies {
			if c.Name == "e2e_login" {
				found = true
				if !c.HTTPOnly || c.SameSite != "Lax" || c.Secure {
					t.Errorf("cookie e2e_login: got %+v, want HttpOnly, SameSite=Lax, not Secure", c)
				}
			}
		}
		if !found {
			t.Errorf("cookie e2e_login not recorded: %+v", r.Cookies)
		}
		raw, _ := json.Marshal(r)
		if strings.Contains(string(raw), "secret-value") {
			t.Errorf("the report holds a cookie's value")
		}

		// A step whose element never comes fails the run, naming the selector.
		bad := runBrowser(t, browserSpec{URL: site.URL + "/login", Steps: []browserStep{{"click": "#absent", "timeoutMs": 300}}})
		if bad.OK || !strings.Contains(bad.Error, "#absent") {
			t.Errorf("a missing element: want a failed run naming #absent, got ok=%v %q", bad.OK, bad.Error)
		}
	})
}
