#!/usr/bin/env node
// The strict client of the MCP 2026-07-28 revision, @modelcontextprotocol/client 2.x, driven
// headless through the whole OAuth flow against a gateway: 401 -> protected-resource metadata
// -> authorization-server metadata (whose `issuer` must equal the one it was fetched for,
// RFC 8414 §3.3) -> registration -> authorization (PKCE, resource, state) with a scripted
// login or a real browser -> the authorization response's `iss` checked (RFC 9207 §2.4) ->
// token -> tools/list, tools/call echo, and with --refresh a refresh-token grant and another
// tools/call.
//
// Usage: node client-v2.mjs <mcp-url> [--login-hint EMAIL] [--redirect-port N]
//          [--expect-denied] [--expect-error NAME] [--browser STEPS] [--refresh]
//          [--negotiation legacy|auto|VERSION]
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
// Prints one JSON object on stdout; exits 0 on success, 1 on failure.
import {
  Client, StreamableHTTPClientTransport, UnauthorizedError,
} from '@modelcontextprotocol/client';
import { randomBytes } from 'node:crypto';
import { authorize, decodeJwt, parseSteps, recordingFetch } from './flow.mjs';

function parseArgs(argv) {
  const out = {
    url: undefined, loginHint: undefined, redirectPort: 33418, expectDenied: false,
    expectError: undefined, browser: undefined, refresh: false, negotiation: 'auto',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--login-hint') out.loginHint = argv[++i];
    else if (a === '--redirect-port') out.redirectPort = Number(argv[++i]);
    else if (a === '--expect-denied') out.expectDenied = true;
    else if (a === '--expect-error') out.expectError = argv[++i];
    else if (a === '--browser') out.browser = argv[++i];
    else if (a === '--refresh') out.refresh = true;
    else if (a === '--negotiation') out.negotiation = argv[++i];
    else if (!out.url) out.url = a;
    else throw new Error(`unexpected argument ${a}`);
  }
  if (!out.url) throw new Error('usage: node client-v2.mjs <mcp-url> [options] (see the comment at the top)');
  return out;
}

const args = parseArgs(process.argv.slice(2));
const result = { ok: false, url: args.url, sdk: '@modelcontextprotocol/client', requests: [], flow: {} };
const t0 = Date.now();
const stamp = () => Date.now() - t0;
const steps = args.browser ? await parseSteps(args.browser) : undefined;
const fetchFn = recordingFetch(result.requests, stamp);

class MemoryOAuthProvider {
  constructor(redirectUrl, loginHint) {
    this._redirectUrl = redirectUrl;
    this._loginHint = loginHint;
    this._client = undefined;
    this._tokens = undefined;
    this._verifier = undefined;
    this._state = undefined;
    this._discovery = undefined;
    this.callback = undefined; // the redirect URI's query parameters
  }

  get redirectUrl() { return this._redirectUrl; }

  get clientMetadata() {
    return {
      client_name: 'mcp-oauth-proxy e2e (@modelcontextprotocol/client 2.x)',
      redirect_uris: [this._redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }

  // The SDK does not check state (its documentation says so): the client does.
  state() {
    this._state = randomBytes(16).toString('base64url');
    return this._state;
  }

  clientInformation() { return this._client; }
  saveClientInformation(info) {
    this._client = info;
    result.flow.registration = {
      client_id: info.client_id, token_endpoint_auth_method: info.token_endpoint_auth_method,
      has_secret: Boolean(info.client_secret), issuer: info.issuer,
    };
  }
  tokens() { return this._tokens; }
  saveTokens(tokens) {
    this._tokens = tokens;
    const saved = {
      token_type: tokens.token_type, expires_in: tokens.expires_in, scope: tokens.scope,
      refresh_token: Boolean(tokens.refresh_token), issuer: tokens.issuer,
      access_token_claims: decodeJwt(tokens.access_token),
    };
    if (!result.flow.tokens) result.flow.tokens = saved;
    else (result.flow.refreshed ??= []).push(saved);
  }
  // Kept beside the code verifier, so the SDK can check that the authorization response
  // comes from the authorization server the flow started with (SEP-2352).
  saveDiscoveryState(state) { this._discovery = state; }
  discoveryState() { return this._discovery; }
  saveCodeVerifier(v) { this._verifier = v; }
  codeVerifier() {
    if (!this._verifier) throw new Error('no code verifier saved');
    return this._verifier;
  }

  // spoilAccessToken keeps the refresh token but makes the access token one the gateway refuses.
  spoilAccessToken() {
    this._tokens = { ...this._tokens, access_token: 'spoiled.by.e2e' };
  }

  async redirectToAuthorization(authorizationUrl) {
    const url = new URL(authorizationUrl);
    if (this._loginHint) url.searchParams.set('login_hint', this._loginHint);
    result.flow.authorization = {
      endpoint: `${url.origin}${url.pathname}`,
      params: Object.fromEntries([...url.searchParams].filter(([k]) => k !== 'code_challenge' && k !== 'state')),
      code_challenge_method: url.searchParams.get('code_challenge_method'),
    };
    const { params, hops, browser } = await authorize(url.href, this._redirectUrl, steps);
    result.flow.authorization.hops = hops;
    if (browser) result.flow.browser = browser;
    this.callback = params;
    result.flow.authorization_response = {
      iss: params.get('iss') || undefined, state_matches: params.get('state') === this._state,
      code: Boolean(params.get('code')), error: params.get('error') || undefined,
    };
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

async function main() {
  const redirectUrl = `http://127.0.0.1:${args.redirectPort}/callback`;
  const auth = new MemoryOAuthProvider(redirectUrl, args.loginHint);

  // First connection: the gateway answers 401 and the SDK runs discovery, registration and
  // sends the "browser" to the authorization endpoint.
  let client = newClient();
  let transport = newTransport(auth);
  try {
    await client.connect(transport);
    throw new Error('connected without authorization: the gateway did not answer 401');
  } catch (err) {
    if (!(err instanceof UnauthorizedError)) throw err;
  }
  await client.close().catch(() => {});
  if (!auth.callback) throw new Error('the SDK did not reach the authorization endpoint');
  result.flow.t_authorized = stamp();
  const cb = auth.callback;
  if (cb.get('error')) throw new Error(`authorization error: ${cb.get('error')}: ${cb.get('error_description') || ''}`);
  if (cb.get('state') !== auth._state) throw new Error('the authorization response carries another state than the request');
  // The whole query: finishAuth checks iss against the issuer before it redeems the code.
  await transport.finishAuth(cb);
  result.flow.t_token = stamp();

  // Second connection with the token.
  client = newClient();
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
