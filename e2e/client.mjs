#!/usr/bin/env node
// The MCP TypeScript SDK client, driven headless through the whole OAuth flow against a
// gateway: 401 -> protected-resource metadata -> authorization-server metadata -> dynamic
// registration -> authorization (PKCE, resource) with a scripted login -> token ->
// initialize, tools/list, tools/call echo, a tool streaming progress notifications over SSE,
// and a resource read.
//
// Usage: node client.mjs <mcp-url> [--login-hint alice@example.com] [--redirect-port 33418]
//                                  [--expect-denied] [--browser STEPS] [--refresh]
//   --refresh  after the first tools/call, make the access token unusable so the gateway
//              answers 401 and the SDK refreshes, then call again
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
import { loginAndConnect, parseSteps, recordingFetch, RecordingOAuthProvider } from './flow.mjs';

function parseArgs(argv) {
  const out = { url: undefined, loginHint: undefined, redirectPort: 33418, expectDenied: false, browser: undefined, refresh: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--login-hint') out.loginHint = argv[++i];
    else if (a === '--redirect-port') out.redirectPort = Number(argv[++i]);
    else if (a === '--expect-denied') out.expectDenied = true;
    else if (a === '--browser') out.browser = argv[++i];
    else if (a === '--refresh') out.refresh = true;
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

function newTransport(authProvider) {
  return new StreamableHTTPClientTransport(new URL(args.url), { authProvider, fetch: recordingFetch(result.requests, stamp) });
}

async function main() {
  const auth = new RecordingOAuthProvider(result, {
    redirectUrl: `http://127.0.0.1:${args.redirectPort}/callback`,
    loginHint: args.loginHint,
    clientName: 'mcp-oauth-proxy e2e (TypeScript SDK)',
    steps,
  });
  const clientInfo = { name: 'mcp-oauth-proxy-e2e-ts', version: '1.0.0' };
  const connected = await loginAndConnect({
    newClient: () => new Client(clientInfo),
    newTransport: () => newTransport(auth),
    auth,
    finish: (transport, cb) => transport.finishAuth(cb.get('code')), // 1.x takes the code alone
    expectDenied: args.expectDenied,
    isUnauthorized: (err) => err instanceof UnauthorizedError,
    result,
    stamp,
  });
  if (!connected) {
    result.ok = true;
    return;
  }
  const { client, transport } = connected;
  result.sessionId = transport.sessionId;
  result.serverVersion = client.getServerVersion();
  result.protocolVersion = transport.protocolVersion;

  const tools = await client.listTools();
  result.tools = tools.tools.map((t) => t.name);

  const echo = await client.callTool({ name: 'echo', arguments: { message: 'hello through the gateway' } });
  result.echo = echo.content?.[0]?.text;

  if (args.refresh) {
    auth.spoilAccessToken();
    const again = await client.callTool({ name: 'echo', arguments: { message: 'after the refresh' } });
    result.echoAfterRefresh = again.content?.[0]?.text;
  }

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
