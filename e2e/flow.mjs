// What the client drivers (client.mjs for the MCP TypeScript SDK 1.x, client-v2.mjs for
// @modelcontextprotocol/client 2.x) share: a fetch that records every request, the user's
// part of the authorization (a scripted HTTP "browser", or a real one through browser.mjs),
// and small helpers.

// recordingFetch returns a fetch that appends every HTTP exchange to `requests`, for the
// harness to assert on the order of discovery, registration, token and MCP requests.
export function recordingFetch(requests, stamp) {
  return async (input, init) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const method = init?.method || (typeof input === 'object' && input.method) || 'GET';
    let rpc;
    if (typeof init?.body === 'string') {
      try {
        const b = JSON.parse(init.body);
        rpc = Array.isArray(b) ? b.map((m) => m.method).join(',') : b.method;
      } catch { /* not JSON */ }
    }
    let grant;
    if (init?.body instanceof URLSearchParams) grant = init.body.get('grant_type') || undefined;
    else if (typeof init?.body === 'string' && !rpc) grant = new URLSearchParams(init.body).get('grant_type') || undefined;
    const res = await fetch(input, init);
    requests.push({
      t: stamp(), method, url, rpc, grant, status: res.status,
      contentType: res.headers.get('content-type') || undefined,
      wwwAuthenticate: res.headers.get('www-authenticate') || undefined,
    });
    return res;
  };
}

export function decodeJwt(tok) {
  try {
    const p = String(tok).split('.');
    if (p.length !== 3) return undefined;
    return JSON.parse(Buffer.from(p[1], 'base64url').toString());
  } catch { return undefined; }
}

// parseSteps reads --browser's value: a JSON array of browser.mjs steps, inline or @file.
export async function parseSteps(v) {
  const fs = await import('node:fs');
  const text = v.startsWith('@') ? fs.readFileSync(v.slice(1), 'utf8') : v;
  const steps = JSON.parse(text);
  if (!Array.isArray(steps)) throw new Error('--browser takes a JSON array of steps');
  return steps;
}

// AuthorizationPageError: the user's walk through the authorization pages stopped at a page that
// is neither a redirect nor the gateway's consent form (an error page such as the broker's
// invalid_client page), so no code came back. `status` is the page's HTTP status, `text` its
// words without markup.
export class AuthorizationPageError extends Error {
  constructor(url, status, text) {
    super(`authorization stopped at ${url}: HTTP ${status}: ${text.slice(0, 800)}`);
    this.name = 'AuthorizationPageError';
    this.status = status;
    this.text = text;
  }
}

// pageText is an HTML page's words: without head, markup and runs of white space.
function pageText(html) {
  return unescapeHTML(html.replace(/<head\b[\s\S]*?<\/head>/i, ' ').replace(/<[^>]*>/g, ' ')).replace(/\s+/g, ' ').trim();
}

// authorize plays the user: from the authorization URL to the redirect URI. Without steps it
// fetches and follows redirects by hand with a cookie jar, approving the gateway's consent page
// (broker mode) by its form; with steps, a headless Chromium loads the pages and performs them. It returns the
// redirect URI's query parameters (code, state, iss, or error), the hops taken, and (without
// steps) the words of the consent page it approved, if any.
export async function authorize(start, redirectUri, steps) {
  if (steps) {
    const { runBrowser } = await import('./browser.mjs');
    const r = await runBrowser({ url: start, stopAt: redirectUri, steps });
    if (!r.ok) throw new Error(`browser: ${r.error}\nconsole errors: ${JSON.stringify(r.consoleErrors)}`);
    const hops = r.pages.map((p) => `${p.status} ${new URL(p.url).pathname}`);
    const browser = {
      pages: r.pages, steps: r.steps, consoleErrors: r.consoleErrors, pageErrors: r.pageErrors,
      failedRequests: r.failedRequests, httpErrors: r.httpErrors, cookies: r.cookies, elapsedMs: r.elapsedMs,
    };
    return { params: new URLSearchParams(r.callback || {}), hops, browser };
  }
  return followToRedirect(start, redirectUri);
}

// A browser, minus the rendering: follow redirects, keep cookies, answer the gateway's consent
// page as the user would, stop at the redirect URI. Any other page ends the walk with an error
// (the provider's scripted login needs no HTML).
async function followToRedirect(start, redirectUri) {
  const jar = new Map();
  let req = { url: start, method: 'GET' };
  const hops = [];
  let consent;
  for (let i = 0; i < 20; i++) {
    const headers = {};
    const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    if (cookie) headers.cookie = cookie;
    if (req.method === 'POST') {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      headers.origin = req.origin; // browsers send it with every POST
    }
    const res = await fetch(req.url, { method: req.method, body: req.body, redirect: 'manual', headers });
    for (const sc of res.headers.getSetCookie()) {
      const [pair] = sc.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      if (/expires=Thu, 01 Jan 1970/i.test(sc) || /max-age=(0|-)/i.test(sc) || value === '') jar.delete(name); else jar.set(name, value);
    }
    hops.push(`${res.status} ${req.method === 'POST' ? 'POST ' : ''}${new URL(req.url).pathname}`);
    const loc = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && loc) {
      const target = new URL(loc, req.url);
      if (target.href.startsWith(redirectUri)) return { params: target.searchParams, hops, consent };
      req = { url: target.href, method: 'GET' };
      continue;
    }
    const body = await res.text();
    const isHTML = /^text\/html/.test(res.headers.get('content-type') || '');
    const html = res.status === 200 && isHTML;
    const form = html ? readForm(body, req.url) : undefined;
    if (form?.buttons.decision?.includes('approve')) {
      // The gateway's consent page (broker mode): its form, as the Allow button submits it.
      consent = pageText(body);
      form.fields.set('decision', 'approve');
      req = { url: form.action, method: 'POST', body: form.fields.toString(), origin: new URL(req.url).origin };
      continue;
    }
    throw new AuthorizationPageError(req.url, res.status, isHTML ? pageText(body) : body);
  }
  throw new Error('too many redirects during authorization');
}

// readForm reads the first <form method="post"> of an HTML page as a browser would submit it:
// its action (resolved against the page's URL), its hidden fields, and its submit buttons' names
// and values. undefined when the page has no such form.
export function readForm(html, pageUrl) {
  const m = /<form\b([^>]*)>([\s\S]*?)<\/form>/i.exec(html);
  if (!m) return undefined;
  const attrs = (s) => Object.fromEntries([...s.matchAll(/([a-zA-Z_-]+)="([^"]*)"/g)].map(([, k, v]) => [k.toLowerCase(), unescapeHTML(v)]));
  const fa = attrs(m[1]);
  if ((fa.method || 'get').toLowerCase() !== 'post') return undefined;
  const fields = new URLSearchParams();
  for (const [, a] of m[2].matchAll(/<input\b([^>]*)>/gi)) {
    const ia = attrs(a);
    if (ia.type === 'hidden' && ia.name) fields.set(ia.name, ia.value ?? '');
  }
  const buttons = {};
  for (const [, a] of m[2].matchAll(/<button\b([^>]*)>/gi)) {
    const ba = attrs(a);
    if (ba.name) (buttons[ba.name] ??= []).push(ba.value ?? '');
  }
  return { action: new URL(fa.action || pageUrl, pageUrl).href, fields, buttons };
}

function unescapeHTML(s) {
  return s.replace(/&#x([0-9a-f]+);/gi, (_, h) => String.fromCodePoint(parseInt(h, 16)))
    .replace(/&#(\d+);/g, (_, d) => String.fromCodePoint(Number(d)))
    .replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}

// RecordingOAuthProvider is the OAuthClientProvider both SDK lines accept (2.x adds optional
// methods; client-v2.mjs subclasses it): a public client keeping everything in memory,
// recording registration, tokens and the authorization round trip into result.flow, and
// playing the user through authorize(). After redirectToAuthorization, `callback` holds the
// redirect URI's query parameters.
export class RecordingOAuthProvider {
  constructor(result, { redirectUrl, redirectUris, loginHint, clientName, steps }) {
    this._result = result;
    this._redirectUrl = redirectUrl;
    this._redirectUris = redirectUris || [redirectUrl];
    this._loginHint = loginHint;
    this._clientName = clientName;
    this._steps = steps;
    this._client = undefined;
    this._tokens = undefined;
    this._verifier = undefined;
    this.callback = undefined;
  }

  get redirectUrl() { return this._redirectUrl; }

  get clientMetadata() {
    return {
      client_name: this._clientName,
      redirect_uris: this._redirectUris,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }

  clientInformation() { return this._client; }
  saveClientInformation(info) {
    this._client = info;
    this._result.flow.registration = {
      client_id: info.client_id, token_endpoint_auth_method: info.token_endpoint_auth_method,
      has_secret: Boolean(info.client_secret), issuer: info.issuer,
    };
  }

  tokens() { return this._tokens; }
  // The first tokens are flow.tokens; those from refreshes go to flow.refreshed.
  saveTokens(tokens) {
    this._tokens = tokens;
    const saved = {
      token_type: tokens.token_type, expires_in: tokens.expires_in, scope: tokens.scope,
      refresh_token: Boolean(tokens.refresh_token), issuer: tokens.issuer,
      access_token_claims: decodeJwt(tokens.access_token),
    };
    if (!this._result.flow.tokens) this._result.flow.tokens = saved;
    else (this._result.flow.refreshed ??= []).push(saved);
  }

  // spoilAccessToken keeps the refresh token but makes the access token one the gateway
  // refuses, so the next MCP request gets a 401 and the SDK refreshes (--refresh).
  spoilAccessToken() {
    this._tokens = { ...this._tokens, access_token: 'spoiled.by.e2e' };
  }

  saveCodeVerifier(v) { this._verifier = v; }
  codeVerifier() {
    if (!this._verifier) throw new Error('no code verifier saved');
    return this._verifier;
  }

  async redirectToAuthorization(authorizationUrl) {
    const url = new URL(authorizationUrl);
    if (this._loginHint) url.searchParams.set('login_hint', this._loginHint);
    const flow = this._result.flow;
    flow.authorization = {
      endpoint: `${url.origin}${url.pathname}`,
      params: Object.fromEntries([...url.searchParams].filter(([k]) => k !== 'code_challenge' && k !== 'state')),
      code_challenge_method: url.searchParams.get('code_challenge_method'),
    };
    const { params, hops, browser, consent } = await authorize(url.href, this._redirectUrl, this._steps);
    flow.authorization.hops = hops;
    if (consent) flow.authorization.consent = consent;
    if (browser) flow.browser = browser;
    this.callback = params;
    flow.authorization_response = {
      iss: params.get('iss') || undefined, state: Boolean(params.get('state')),
      code: Boolean(params.get('code')), error: params.get('error') || undefined,
    };
  }
}

// loginAndConnect runs the login as an MCP client does: a first connection that the gateway
// answers 401, which makes the SDK discover, register and send the user to authorize; then
// finish(callback parameters) redeems the code, and a second connection uses the token. It
// returns the connected { client, transport }, or null when expectDenied and the gateway
// refused the second connection (result.denied says how).
export async function loginAndConnect({ newClient, newTransport, auth, finish, expectDenied, isUnauthorized, result, stamp }) {
  let client = newClient();
  let transport = newTransport();
  try {
    await client.connect(transport);
    throw new Error('connected without authorization: the gateway did not answer 401');
  } catch (err) {
    if (!isUnauthorized(err)) throw err;
  }
  await client.close().catch(() => {});
  const cb = auth.callback;
  if (!cb) throw new Error('the SDK did not reach the authorization endpoint');
  result.flow.t_authorized = stamp();
  if (cb.get('error')) throw new Error(`authorization error: ${cb.get('error')}: ${cb.get('error_description') || ''}`);
  if (!cb.get('code')) throw new Error(`redirect without code: ${cb}`);
  await finish(transport, cb);
  result.flow.t_token = stamp();

  client = newClient();
  transport = newTransport();
  try {
    await client.connect(transport);
  } catch (err) {
    if (expectDenied) {
      result.denied = String(err?.message || err);
      return null;
    }
    throw err;
  }
  if (expectDenied) throw new Error('connected although a denial was expected');
  return { client, transport };
}
