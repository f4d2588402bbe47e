#!/usr/bin/env node
// The MCP TypeScript SDK client, driven headless through the whole OAuth flow against a
// gateway: 401 -> protected-resource metadata -> authorization-server metadata -> dynamic
// registration -> authorization (PKCE, resource) with a scripted login -> token ->
// initialize, tools/list, tools/call echo, a tool streaming progress notifications over SSE,
// and a resource read.
//
// Usage: node client.mjs <mcp-url> [--login-hint alice@example.com] [--redirect-port 33418]
//                                  [--expect-denied] [--browser STEPS]
// Prints one JSON object on stdout; exits 0 on success, 1 on failure (the JSON then has
// "ok": false and "error").
//
// redirectToAuthorization "opens the browser" by fetching the authorization URL and following
// redirects by hand (with a cookie jar, as a browser would) until one points at our
// redirect_uri; nothing listens there, the code is read from the Location header. With
// --browser STEPS (browser.mjs steps as a JSON array, inline or @file; needs Node 22) a
// headless Chromium loads the pages and performs the steps instead, and the report gains
// flow.browser (pages, console errors, cookies).
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { authorize, decodeJwt, parseSteps, recordingFetch } from './flow.mjs';

function parseArgs(argv) {
  const out = { url: undefined, loginHint: undefined, redirectPort: 33418, expectDenied: false, browser: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--login-hint') out.loginHint = argv[++i];
    else if (a === '--redirect-port') out.redirectPort = Number(argv[++i]);
    else if (a === '--expect-denied') out.expectDenied = true;
    else if (a === '--browser') out.browser = argv[++i];
    else if (!out.url) out.url = a;
    else throw new Error(`unexpected argument ${a}`);
  }
  if (!out.url) throw new Error('usage: node client.mjs <mcp-url> [--login-hint EMAIL] [--redirect-port N]');
  return out;
}

const args = parseArgs(process.argv.slice(2));
const result = { ok: false, url: args.url, requests: [], flow: {} };
const t0 = Date.now();
const stamp = () => Date.now() - t0;

const steps = args.browser ? await parseSteps(args.browser) : undefined;

class MemoryOAuthProvider {
  constructor(redirectUrl, loginHint) {
    this._redirectUrl = redirectUrl;
    this._loginHint = loginHint;
    this._client = undefined;
    this._tokens = undefined;
    this._verifier = undefined;
    this.code = undefined;
    this.authorizationUrl = undefined;
  }

  get redirectUrl() { return this._redirectUrl; }

  get clientMetadata() {
    return {
      client_name: 'mcp-oauth-proxy e2e (TypeScript SDK)',
      redirect_uris: [this._redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }

  clientInformation() { return this._client; }
  saveClientInformation(info) { this._client = info; result.flow.registration = { client_id: info.client_id, token_endpoint_auth_method: info.token_endpoint_auth_method, has_secret: Boolean(info.client_secret) }; }
  tokens() { return this._tokens; }
  saveTokens(tokens) {
    this._tokens = tokens;
    result.flow.tokens = {
      token_type: tokens.token_type, expires_in: tokens.expires_in, scope: tokens.scope,
      refresh_token: Boolean(tokens.refresh_token), access_token_claims: decodeJwt(tokens.access_token),
    };
  }
  saveCodeVerifier(v) { this._verifier = v; }
  codeVerifier() {
    if (!this._verifier) throw new Error('no code verifier saved');
    return this._verifier;
  }

  async redirectToAuthorization(authorizationUrl) {
    const url = new URL(authorizationUrl);
    if (this._loginHint) url.searchParams.set('login_hint', this._loginHint);
    this.authorizationUrl = url.href;
    result.flow.authorization = {
      endpoint: `${url.origin}${url.pathname}`,
      params: Object.fromEntries([...url.searchParams].filter(([k]) => k !== 'code_challenge' && k !== 'state')),
      code_challenge_method: url.searchParams.get('code_challenge_method'),
    };
    const { params, hops, browser } = await authorize(url.href, this._redirectUrl, steps);
    result.flow.authorization.hops = hops;
    if (browser) result.flow.browser = browser;
    const err = params.get('error');
    if (err) throw new Error(`authorization error: ${err}: ${params.get('error_description') || ''}`);
    this.code = params.get('code');
    if (!this.code) throw new Error(`redirect without code: ${params}`);
    result.flow.authorization_response = { iss: params.get('iss') || undefined, state: Boolean(params.get('state')) };
  }
}

function newTransport(authProvider) {
  return new StreamableHTTPClientTransport(new URL(args.url), { authProvider, fetch: recordingFetch(result.requests, stamp) });
}

async function main() {
  const redirectUrl = `http://127.0.0.1:${args.redirectPort}/callback`;
  const auth = new MemoryOAuthProvider(redirectUrl, args.loginHint);
  const clientInfo = { name: 'mcp-oauth-proxy-e2e-ts', version: '1.0.0' };

  // First connection: the gateway answers 401 and the SDK runs discovery, registration and
  // sends the "browser" to the authorization endpoint.
  let client = new Client(clientInfo);
  let transport = newTransport(auth);
  try {
    await client.connect(transport);
    throw new Error('connected without authorization: the gateway did not answer 401');
  } catch (err) {
    if (!(err instanceof UnauthorizedError)) throw err;
  }
  await client.close().catch(() => {});
  if (!auth.code) throw new Error('the SDK did not reach the authorization endpoint');
  result.flow.t_authorized = stamp();
  await transport.finishAuth(auth.code);
  result.flow.t_token = stamp();

  // Second connection with the token.
  client = new Client(clientInfo);
  transport = newTransport(auth);
  try {
    await client.connect(transport);
  } catch (err) {
    if (args.expectDenied) {
      result.ok = true;
      result.denied = String(err?.message || err);
      return;
    }
    throw err;
  }
  if (args.expectDenied) throw new Error('connected although a denial was expected');
  result.sessionId = transport.sessionId;
  result.serverVersion = client.getServerVersion();
  result.protocolVersion = transport.protocolVersion;

  const tools = await client.listTools();
  result.tools = tools.tools.map((t) => t.name);

  const echo = await client.callTool({ name: 'echo', arguments: { message: 'hello through the gateway' } });
  result.echo = echo.content?.[0]?.text;

  const progressTool = result.tools.find((n) => /long.?running/i.test(n));
  if (!progressTool) throw new Error(`no long-running tool among ${result.tools.join(', ')}`);
  const progress = [];
  const long = await client.callTool(
    { name: progressTool, arguments: { duration: 1, steps: 4 } },
    undefined,
    { onprogress: (p) => progress.push({ t: stamp(), progress: p.progress, total: p.total }), timeout: 30000 },
  );
  result.longRunning = { tool: progressTool, progress, text: long.content?.[0]?.text };
  const call = result.requests.filter((r) => r.rpc === 'tools/call').pop();
  result.longRunning.contentType = call?.contentType;

  const resources = await client.listResources();
  const first = resources.resources[0];
  if (!first) throw new Error('the server listed no resources');
  const read = await client.readResource({ uri: first.uri });
  const c = read.contents?.[0];
  result.resource = { uri: first.uri, mimeType: c?.mimeType, textLength: c?.text?.length, blobLength: c?.blob?.length };

  await transport.terminateSession().catch(() => {});
  await client.close();
  result.ok = true;
}

try {
  await main();
} catch (err) {
  result.ok = false;
  result.error = String(err?.stack || err);
}
result.elapsedMs = stamp();
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
process.exit(result.ok ? 0 : 1);
