#!/usr/bin/env node
// The strict client of the MCP 2026-07-28 revision, @modelcontextprotocol/client 2.x, driven
// headless through the whole OAuth flow against a gateway: 401 -> protected-resource metadata
// -> authorization-server metadata (whose `issuer` must equal the one it was fetched for,
// RFC 8414 §3.3) -> registration -> authorization (PKCE, resource, state) with a scripted
// login or a real browser -> the authorization response's `iss` checked (RFC 9207 §2.4) ->
// token -> tools/list, tools/call echo, and with --refresh a refresh-token grant and another
// tools/call; with --call, more tools/calls, through step-up authorization when refused.
//
// Usage: node client-v2.mjs <mcp-url> [--login-hint EMAIL] [--redirect-port N]
//          [--expect-denied] [--expect-error NAME] [--browser STEPS] [--refresh]
//          [--negotiation legacy|auto|VERSION] [--client-metadata-url URL] [--call TOOL[:JSON]]...
//          [--redirect-uris A,B,...]
//   --redirect-uris A,B  register these redirect URIs (a native client's several) and use the
//                        first, instead of a loopback one on --redirect-port; nothing listens
//                        there either: the code is read from the Location header
//   --expect-error NAME  the flow must fail with an error of this class (e.g.
//                        IssuerMismatchError); the report then carries error.{name,kind,
//                        expected,received} and ok is true only if it did
//   --expect-denied      login succeeds, the MCP connection is refused (allow-list)
//   --browser STEPS      browser.mjs steps (JSON array, inline or @file) for the login pages;
//                        needs Node 22
//   --refresh            after the first tools/call, make the access token unusable so the
//                        gateway answers 401 and the SDK refreshes, then call again
//   --negotiation        the SDK's versionNegotiation mode: legacy (the 2025 initialize, the
//                        SDK's default), auto (probe with server/discover, fall back), or a
//                        protocol version to pin (default: auto, as a 2026 client would)
//   --client-metadata-url URL  the SDK's clientMetadataUrl: where the client's Client ID Metadata
//                        Document is; used as client_id (no registration) when the
//                        authorization server advertises client_id_metadata_document_supported
//   --call TOOL[:JSON]   after echo (and the refresh), call TOOL with the JSON arguments (default
//                        {}); repeatable. A refusal with 403 insufficient_scope makes the SDK
//                        start a step-up authorization with the wider scope (the user logs in
//                        again) and throw UnauthorizedError: the driver redeems the new code and
//                        repeats the call once. If that is refused again, the driver declines the
//                        next authorization the SDK starts (a host asks its user once per call;
//                        the SDK leaves cross-request limits to the host) and records the call as
//                        failed. Each call's outcome is in calls[]; authorizations[] lists every
//                        authorization the SDK started (its scope, performed or declined).
// Prints one JSON object on stdout; exits 0 on success, 1 on failure.
import {
  Client, StreamableHTTPClientTransport, UnauthorizedError,
} from '@modelcontextprotocol/client';
import { randomBytes } from 'node:crypto';
import { loginAndConnect, parseSteps, recordingFetch, RecordingOAuthProvider } from './flow.mjs';

function parseArgs(argv) {
  const out = {
    url: undefined, loginHint: undefined, redirectPort: 33418, expectDenied: false,
    expectError: undefined, browser: undefined, refresh: false, negotiation: 'auto',
    clientMetadataUrl: undefined, calls: [], redirectUris: undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--login-hint') out.loginHint = argv[++i];
    else if (a === '--redirect-port') out.redirectPort = Number(argv[++i]);
    else if (a === '--redirect-uris') out.redirectUris = argv[++i].split(',');
    else if (a === '--expect-denied') out.expectDenied = true;
    else if (a === '--expect-error') out.expectError = argv[++i];
    else if (a === '--browser') out.browser = argv[++i];
    else if (a === '--refresh') out.refresh = true;
    else if (a === '--negotiation') out.negotiation = argv[++i];
    else if (a === '--client-metadata-url') out.clientMetadataUrl = argv[++i];
    else if (a === '--call') out.calls.push(parseCall(argv[++i]));
    else if (!out.url) out.url = a;
    else throw new Error(`unexpected argument ${a}`);
  }
  if (!out.url) throw new Error('usage: node client-v2.mjs <mcp-url> [options] (see the comment at the top)');
  return out;
}

// parseCall reads --call's TOOL[:JSON].
function parseCall(v) {
  const i = v.indexOf(':');
  if (i < 0) return { tool: v, arguments: {} };
  return { tool: v.slice(0, i), arguments: JSON.parse(v.slice(i + 1)) };
}

const args = parseArgs(process.argv.slice(2));
const result = { ok: false, url: args.url, sdk: '@modelcontextprotocol/client', requests: [], flow: {} };
const t0 = Date.now();
const stamp = () => Date.now() - t0;
const steps = args.browser ? await parseSteps(args.browser) : undefined;
const fetchFn = recordingFetch(result.requests, stamp);

// The 2.x additions: the client's own state check, the discovery state the SDK uses to bind
// the callback to the authorization server the flow started with (SEP-2352).
class StrictOAuthProvider extends RecordingOAuthProvider {
  constructor(res, opts, clientMetadataUrl) {
    super(res, opts);
    this._state = undefined;
    this._discovery = undefined;
    // The SDK reads it when it has no client information yet (SEP-991 URL-based client ids).
    if (clientMetadataUrl) this.clientMetadataUrl = clientMetadataUrl;
    this.decline = false; // --call: the user declines the next authorization
  }

  // The SDK does not check state (its documentation says so): the client does.
  state() {
    this._state = randomBytes(16).toString('base64url');
    return this._state;
  }

  stateMatches(params) { return params.get('state') === this._state; }

  saveDiscoveryState(state) { this._discovery = state; }
  discoveryState() { return this._discovery; }

  async redirectToAuthorization(authorizationUrl) {
    const q = new URL(authorizationUrl).searchParams;
    (result.flow.authorizations ??= []).push({ client_id: q.get('client_id'), scope: q.get('scope') || undefined, performed: !this.decline });
    if (this.decline) {
      this.callback = undefined;
      return;
    }
    await super.redirectToAuthorization(authorizationUrl);
    result.flow.authorization_response.state_matches = this.stateMatches(this.callback);
  }

  saveTokens(tokens) {
    super.saveTokens(tokens);
    (result.flow.grants ??= []).push(tokens.scope);
  }
}

function negotiation() {
  if (args.negotiation === 'legacy' || args.negotiation === 'auto') return { mode: args.negotiation };
  return { mode: { pin: args.negotiation } };
}

function newClient() {
  return new Client({ name: 'mcp-oauth-proxy-e2e-ts2', version: '1.0.0' }, { versionNegotiation: negotiation() });
}

function newTransport(authProvider) {
  return new StreamableHTTPClientTransport(new URL(args.url), { authProvider, fetch: fetchFn });
}

// callWithStepUp makes one --call as a host would: a step-up (the SDK's UnauthorizedError after
// it started an authorization for a 403 insufficient_scope) is finished and the call repeated
// once; after that the user declines.
async function callWithStepUp(client, transport, auth, { tool, arguments: toolArgs }) {
  const out = { tool, attempts: 0, stepUps: 0, ok: false };
  for (;;) {
    out.attempts++;
    const before = result.flow.authorizations?.length ?? 0;
    try {
      const r = await client.callTool({ name: tool, arguments: toolArgs });
      out.ok = !r.isError;
      out.text = r.content?.find((c) => c.type === 'text')?.text;
      auth.decline = false;
      return out;
    } catch (err) {
      out.error = String(err?.message || err);
      out.errorName = err?.constructor?.name;
      const started = (result.flow.authorizations?.length ?? 0) > before;
      if (!(err instanceof UnauthorizedError) || !started || auth.decline) {
        auth.decline = false;
        return out;
      }
      out.stepUps++;
      const cb = auth.callback;
      if (!cb?.get('code')) throw new Error(`step-up authorization without a code: ${cb}`);
      if (!auth.stateMatches(cb)) throw new Error('the step-up authorization response carries another state than the request');
      await transport.finishAuth(cb);
      auth.decline = out.stepUps >= 1;
    }
  }
}

async function main() {
  const auth = new StrictOAuthProvider(result, {
    redirectUrl: args.redirectUris?.[0] ?? `http://127.0.0.1:${args.redirectPort}/callback`,
    redirectUris: args.redirectUris,
    loginHint: args.loginHint,
    clientName: 'mcp-oauth-proxy e2e (@modelcontextprotocol/client 2.x)',
    steps,
  }, args.clientMetadataUrl);
  const connected = await loginAndConnect({
    newClient,
    newTransport: () => newTransport(auth),
    auth,
    finish: async (transport, cb) => {
      if (!auth.stateMatches(cb)) throw new Error('the authorization response carries another state than the request');
      // The whole query: finishAuth checks iss against the issuer before it redeems the code.
      await transport.finishAuth(cb);
    },
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
  result.protocolVersion = client.getNegotiatedProtocolVersion();
  result.era = client.getProtocolEra();

  const tools = await client.listTools();
  result.tools = tools.tools.map((t) => t.name);
  const echo = await client.callTool({ name: 'echo', arguments: { message: 'hello through the gateway' } });
  result.echo = echo.content?.[0]?.text;

  if (args.refresh) {
    auth.spoilAccessToken();
    const again = await client.callTool({ name: 'echo', arguments: { message: 'after the refresh' } });
    result.echoAfterRefresh = again.content?.[0]?.text;
  }

  result.calls = [];
  for (const c of args.calls) result.calls.push(await callWithStepUp(client, transport, auth, c));

  await client.close();
  result.ok = true;
}

try {
  await main();
  if (args.expectError) {
    result.ok = false;
    result.error = `the flow succeeded although ${args.expectError} was expected`;
  }
} catch (err) {
  result.ok = false;
  result.error = String(err?.stack || err);
  result.errorDetail = {
    name: err?.constructor?.name, kind: err?.kind, expected: err?.expected, received: err?.received,
  };
  if (args.expectError && err?.constructor?.name === args.expectError) result.ok = true;
}
result.elapsedMs = stamp();
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
process.exit(result.ok ? 0 : 1);
