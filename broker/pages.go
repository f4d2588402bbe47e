package broker

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
)

// pageCSS is the only style of the broker's pages. The Content-Security-
// Policy allows exactly this stylesheet by its hash, and nothing else: no
// script, no image, no frame, no framing (clickjacking, RFC 9700 §4.16).
const pageCSS = `body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#1f2328;line-height:1.45;overflow-wrap:anywhere}
h1{font-size:1.4rem}.box{border:1px solid #d0d7de;border-radius:6px;padding:.8rem 1rem;margin:1rem 0}
.muted{color:#59636e;font-size:.92rem}code{word-break:break-all}
button,.button{font:inherit;padding:.5rem 1.3rem;margin:1rem .6rem 0 0;border-radius:6px;border:1px solid #8c959f;background:#f6f8fa;color:#1f2328;text-decoration:none;display:inline-block;cursor:pointer}
button.primary,.button.primary{background:#1f883d;border-color:#1a7f37;color:#fff}`

const pagesTemplate = `{{define "head"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>{{.}}</title>
<style>` + pageCSS + `</style>
</head><body>{{end}}

{{define "error"}}{{template "head" .Title}}
<h1>{{.Title}}</h1>
<p>{{.Message}}</p>
<p class="muted">Nothing was shared with the application. Go back to it and start again.</p>
</body></html>{{end}}

{{define "consent"}}{{template "head" "Allow access?"}}
{{if .MetadataHost}}<h1>Allow an application from <strong>{{.MetadataHost}}</strong> to use {{.Resource}}?</h1>
<div class="box">
{{if .HostVerified}}<p><strong>Verified:</strong> this application is identified by <code>{{.MetadataURL}}</code>; the gateway fetched its metadata from <strong>{{.MetadataHost}}</strong> over HTTPS.</p>
{{else}}<p><strong>Not verified:</strong> this application is identified by <code>{{.MetadataURL}}</code>; the gateway fetched its metadata from <strong>{{.MetadataHost}}</strong> over plain HTTP, which this gateway's operator allows for this host.</p>
{{end}}<p>It calls itself {{if .Name}}“{{.Name}}”{{else}}nothing{{end}}: <strong>not verified</strong>, the application chooses its name itself.</p>
{{else}}<h1>Allow {{if .Name}}“{{.Name}}”{{else}}an unnamed application{{end}} to use {{.Resource}}?</h1>
<div class="box">
{{end}}<p>After you sign in, this application will be able to call the MCP server at <code>{{.Resource}}</code> as you{{if .Scopes}}, with the scopes <code>{{.Scopes}}</code>{{end}}.</p>
<p>It receives its access at <code>{{.Destination}}</code>{{if .Where}} ({{.Where}}){{end}}.</p>
{{if .Unvouched}}<p><strong>Check:</strong> the {{if .HostVerified}}verified {{end}}host does not vouch for where the access goes. Any program on this device could be the one waiting at <code>{{.Destination}}</code>.</p>
{{end}}</div>
<p class="muted">{{if .HostVerified}}Only the host that publishes its metadata is verified, not the name.{{else if .MetadataHost}}Neither the host that publishes its metadata nor the name is verified.{{else}}The name is chosen by the application itself and is not verified.{{end}} Allow only if you started this just now, in an application you trust.</p>
<form method="post" action="{{.Action}}">
<input type="hidden" name="flow" value="{{.Flow}}">
<input type="hidden" name="client" value="{{.Client}}">
<button type="submit" name="decision" value="approve" class="primary">Allow</button>
<button type="submit" name="decision" value="deny">Deny</button>
</form>
</body></html>{{end}}

{{define "rejected"}}{{template "head" "Request not accepted"}}
<h1>The application's request was not accepted</h1>
<p>The application asked to sign you in with a request this gateway does not accept: <code>{{.Code}}</code>{{if .Description}} ({{.Description}}){{end}}.</p>
<p>It expects the answer at <code>{{.Destination}}</code>{{if .Where}} ({{.Where}}){{end}}. You have not allowed this application here yet, so the gateway did not send you there by itself.</p>
<p><a class="button" href="{{.Continue}}">Return to the application</a></p>
<p class="muted">Nothing was shared with the application. The link takes you to {{.Destination}} and tells the application that its request failed; follow it only if you started this just now, in an application you trust.</p>
</body></html>{{end}}

{{define "denied"}}{{template "head" "Not allowed"}}
<h1>Signed in as {{.Who}}; not allowed here</h1>
<p>The identity provider signed you in as <strong>{{.Who}}</strong>, but this account is not allowed to use <code>{{.Resource}}</code>. Ask its operator to add you, or sign in with another account.</p>
<p><a class="button primary" href="{{.Continue}}">Continue</a></p>
<p class="muted">Continue returns to the application, telling it that access was denied.</p>
</body></html>{{end}}`

// Page data.
type (
	pageError struct{ Title, Message string }

	pageConsent struct {
		Name, Resource, Scopes string
		Destination, Where     string
		// Unvouched: a metadata-document client whose access goes to
		// this device (loopback, a private-use scheme), which the
		// document's verified host cannot vouch for.
		Unvouched bool
		// A metadata-document client (draft §8.5): its URL, and its
		// host, which the page names as the verified part when the
		// document came over https.
		MetadataURL, MetadataHost string
		HostVerified              bool
		Action, Flow              string
		Client                    string // the client_id, which the flow cookie holds only by its binding
	}

	// pageRejected is an authorization request of a valid client and
	// redirect URI that the broker refuses before the user has approved
	// the client (RFC 9700 §4.11.2): the error, where it would go, and a
	// link there for the user to follow or not.
	pageRejected struct {
		Code, Description  string
		Destination, Where string
		Continue           template.URL // a validated redirect URI with its response
	}

	pageDenied struct {
		Who, Resource string
		Continue      template.URL // a validated redirect URI with its response
	}
)

// parsePages parses the page templates and builds the pages' CSP.
func parsePages() (*template.Template, string, error) {
	t, err := template.New("pages").Parse(pagesTemplate)
	if err != nil {
		return nil, "", fmt.Errorf("parse pages: %w", err)
	}
	sum := sha256.Sum256([]byte(pageCSS))
	// form-action is left out on purpose: browsers apply it to the
	// redirects that follow a form post, and the consent form's answer
	// redirects to the provider or to the client, whose origins vary.
	csp := "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
		"'; frame-ancestors 'none'; base-uri 'none'"
	return t, csp, nil
}

// page answers an HTML page for a browser: the consent page, a not-allowed
// page, an error found before the redirect URI could be trusted (RFC 6749
// §4.1.2.1: such errors are never redirected), or one found before the
// user approved the client (RFC 9700 §4.11.2: redirected only if the user
// follows the page's link). data's type names the template.
func (b *Broker) page(w http.ResponseWriter, status int, data any) {
	name := "error"
	switch data.(type) {
	case pageConsent:
		name = "consent"
	case pageDenied:
		name = "denied"
	case pageRejected:
		name = "rejected"
	}
	var buf bytes.Buffer
	if err := b.pages.ExecuteTemplate(&buf, name, data); err != nil {
		b.log.Error("render page", "page", name, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", b.csp)
	h.Set("X-Frame-Options", "DENY") // for browsers without frame-ancestors
	h.Set("X-Content-Type-Options", "nosniff")
	// same-origin, not no-referrer: under no-referrer browsers send
	// "Origin: null" with the consent form's POST (Fetch standard,
	// serializing a request origin), which the gate and sameOrigin must
	// refuse. Other origins (the provider, the client) still get no
	// Referer.
	h.Set("Referrer-Policy", "same-origin")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// safeURL marks a client redirect URL as safe for an href. It is: its
// redirect URI was checked at registration (https, loopback http, or a
// private-use scheme with a dot; never javascript: or data:) and matched
// the request exactly, and html/template would otherwise replace a
// private-use scheme with "#ZgotmplZ".
func safeURL(s string) template.URL { return template.URL(s) } // #nosec G203 -- see above

// errorPage answers an HTML error page.
func (b *Broker) errorPage(w http.ResponseWriter, status int, title, message string) {
	b.page(w, status, pageError{Title: title, Message: message})
}
