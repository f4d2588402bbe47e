#!/usr/bin/env node
// A real oidc-provider deployment for the end-to-end suite.
//
// Usage: node provider.mjs [port]      (port also from PROVIDER_PORT; 0 or none: a free port)
// Prints "READY <issuer>" on stdout once listening on 127.0.0.1.
//
// What it offers, as a real deployment would:
//   - JWT access tokens (RFC 9068) whose aud is the RFC 8707 `resource` the client asked for
//   - authorization code + PKCE with a scripted login and consent (no HTML): the interaction
//     endpoint logs in the account named by `login_hint` (default DEFAULT_LOGIN) and grants
//     what was asked, so a client following redirects lands on its redirect_uri with a code
//   - client_credentials for service clients (their tokens' sub is the client_id)
//   - open dynamic client registration
//   - refresh tokens (for every client allowed the refresh_token grant)
//   - email, email_verified and groups claims, in the ID token, userinfo and access tokens
//   - short, configurable access token lifetimes
//
// Environment:
//   PROVIDER_PORT            port (argv[2] wins)
//   TOKEN_TTL                access token lifetime in seconds (default 300)
//   SHORT_TOKEN_TTL          lifetime for the svc-short client's tokens (default 2)
//   STATIC_CLIENT_ID/SECRET  the pre-registered confidential client (default e2e-static / e2e-static-secret)
//   STATIC_CLIENT_AUTH_METHOD its token endpoint auth method (default client_secret_post)
//   GATEWAY_CLIENT_ID/SECRET  the client of a gateway in broker mode, which logs users in here as
//                            an ordinary OIDC client (default e2e-gateway / e2e-gateway-secret);
//                            its redirect URI is http://127.0.0.1/oauth/callback on any port
//   CLIENT_AUTH_METHODS      advertised/accepted methods (default none,client_secret_basic,client_secret_post)
//   SERVICE_CLIENTS          id:secret,... for client_credentials (default svc-allowed, svc-denied, svc-short, svc-other)
//   DEFAULT_RESOURCE         resource used when a client_credentials request names none
//   DEFAULT_LOGIN            account logged in when no login_hint is given (default alice@example.com)
//   PROVIDER_INTERACTIVE=1   login and consent are HTML pages a person (or browser.mjs) fills in,
//                            instead of the scripted interaction: a login form (input[name=email],
//                            prefilled from login_hint; button#login) and a consent form naming
//                            the client and scopes (button#approve, button#deny)
import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const env = process.env;
const portArg = process.argv[2] ?? env.PROVIDER_PORT ?? '0';
const tokenTTL = Number(env.TOKEN_TTL || 300);
const shortTTL = Number(env.SHORT_TOKEN_TTL || 2);
const staticId = env.STATIC_CLIENT_ID || 'e2e-static';
const staticSecret = env.STATIC_CLIENT_SECRET || 'e2e-static-secret';
const staticAuth = env.STATIC_CLIENT_AUTH_METHOD || 'client_secret_post';
const gatewayId = env.GATEWAY_CLIENT_ID || 'e2e-gateway';
const gatewaySecret = env.GATEWAY_CLIENT_SECRET || 'e2e-gateway-secret';
const authMethods = (env.CLIENT_AUTH_METHODS || 'none,client_secret_basic,client_secret_post').split(',').map((s) => s.trim()).filter(Boolean);
const defaultLogin = env.DEFAULT_LOGIN || 'alice@example.com';
const interactive = env.PROVIDER_INTERACTIVE === '1';
const serviceClients = (env.SERVICE_CLIENTS || 'svc-allowed:svc-allowed-secret,svc-denied:svc-denied-secret,svc-short:svc-short-secret,svc-other:svc-other-secret')
  .split(',').map((s) => s.trim()).filter(Boolean).map((s) => {
    const i = s.indexOf(':');
    return { id: s.slice(0, i), secret: s.slice(i + 1) };
  });

// Accounts, keyed by sub.
const accounts = {
  'user-alice': { email: 'alice@example.com', email_verified: true, name: 'Alice', groups: ['mcp-users'] },
  'user-bob': { email: 'bob@example.com', email_verified: true, name: 'Bob', groups: ['others'] },
  'user-carol': { email: 'carol@example.com', email_verified: false, name: 'Carol', groups: ['mcp-users'] },
};
function accountByHint(hint) {
  if (!hint) hint = defaultLogin;
  if (accounts[hint]) return hint;
  const found = Object.entries(accounts).find(([, a]) => a.email.toLowerCase() === String(hint).toLowerCase());
  return found ? found[0] : undefined;
}

function log(...args) {
  if (env.PROVIDER_DEBUG) console.error('[provider]', ...args);
}

const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(portArg), '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  clientAuthMethods: authMethods,
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups', 'mcp'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  clients: [
    {
      // The pre-created confidential client the gateway hands out in facade mode. A native
      // application with a loopback redirect URI: any port is accepted (RFC 8252 §7.3).
      client_id: staticId,
      client_secret: staticSecret,
      application_type: 'native',
      redirect_uris: ['http://127.0.0.1/callback', 'http://localhost/callback'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: staticAuth,
    },
    {
      // A gateway in broker mode: one redirect URI, <origin>/oauth/callback. Loopback and native,
      // so the port of each test's gateway is accepted (RFC 8252 §7.3).
      client_id: gatewayId,
      client_secret: gatewaySecret,
      application_type: 'native',
      redirect_uris: ['http://127.0.0.1/oauth/callback'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: authMethods.includes('client_secret_post') ? 'client_secret_post' : 'client_secret_basic',
    },
    ...serviceClients.map(({ id, secret }) => ({
      client_id: id,
      client_secret: secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: authMethods.includes('client_secret_post') ? 'client_secret_post' : 'client_secret_basic',
    })),
  ],
  async findAccount(ctx, sub) {
    const a = accounts[sub];
    if (!a) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, ...a };
      },
    };
  },
  // RFC 9068 access tokens carry the identity claims the gateway allow-lists on.
  async extraTokenClaims(ctx, token) {
    if (token.accountId && accounts[token.accountId]) {
      const a = accounts[token.accountId];
      return { email: a.email, email_verified: a.email_verified, groups: a.groups };
    }
    if (token.kind === 'ClientCredentials') {
      return { email: `${token.clientId}@service.example.com`, email_verified: true, groups: ['services'] };
    }
    return undefined;
  },
  async issueRefreshToken(ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  pkce: {
    required(ctx, client) {
      return client.clientAuthMethod === 'none' || client.applicationType === 'native';
    },
  },
  ttl: {
    // A resource server's own lifetime (getResourceServerInfo) wins over the default.
    AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL || tokenTTL,
    ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL || tokenTTL,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: 24 * 3600,
    Interaction: 600,
    Session: 3600,
    Grant: 24 * 3600,
  },
  interactions: {
    url(ctx, interaction) {
      return `/interaction/${interaction.uid}`;
    },
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    registration: { enabled: true, initialAccessToken: false },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      async defaultResource(ctx, client, oneOf) {
        if (oneOf) return oneOf;
        return env.DEFAULT_RESOURCE || undefined;
      },
      async useGrantedResource() {
        return true;
      },
      async getResourceServerInfo(ctx, resourceIndicator, client) {
        return {
          scope: 'mcp',
          audience: resourceIndicator,
          accessTokenFormat: 'jwt',
          accessTokenTTL: client?.clientId === 'svc-short' ? shortTTL : tokenTTL,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
});
provider.on('server_error', (ctx, err) => console.error('[provider] server_error', err));
provider.on('grant.error', (ctx, err) => log('grant.error', err.message, err.error_description));
provider.on('authorization.error', (ctx, err) => log('authorization.error', err.message, err.error_description));
provider.on('registration_create.error', (ctx, err) => log('registration.error', err.message, err.error_description));

// grantAll records consent to everything the authorization request asked for.
async function grantAll(details) {
  const { prompt, params, session } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const d = prompt.details;
  if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
  if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
  if (d.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  // A resource asked for with no scope of its own still needs to be in the grant.
  for (const r of [].concat(params.resource || [])) {
    if (!grant.resources?.[r]) grant.addResourceScope(r, '');
  }
  return grant.save();
}

// Scripted login and consent: the account named by login_hint, everything granted.
async function scriptedInteraction(req, res, details) {
  const { prompt, params } = details;
  if (prompt.name === 'login') {
    const url = new URL(req.url, issuer);
    const accountId = accountByHint(params.login_hint || url.searchParams.get('login_hint'));
    if (!accountId) {
      await provider.interactionFinished(req, res, {
        error: 'access_denied', error_description: `unknown login_hint ${params.login_hint}`,
      }, { mergeWithLastSubmission: false });
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
    return;
  }
  if (prompt.name === 'consent') {
    const grantId = await grantAll(details);
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  res.writeHead(400, { 'content-type': 'text/plain' });
  res.end(`unexpected prompt ${prompt.name}`);
}

function escapeHTML(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

function page(res, status, title, body) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  });
  res.end(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHTML(title)}</title></head>
<body><h1>${escapeHTML(title)}</h1>
${body}
</body></html>`);
}

async function readForm(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// Interactive login and consent (PROVIDER_INTERACTIVE=1): HTML forms.
async function interactivePage(req, res, details) {
  const { uid, prompt, params } = details;
  const url = new URL(req.url, issuer);
  if (req.method === 'GET' && prompt.name === 'login') {
    const error = url.searchParams.get('error');
    page(res, 200, 'Sign in', `${error ? `<p id="error" role="alert">${escapeHTML(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHTML(uid)}/login">
<label>Email <input type="email" name="email" autocomplete="username" value="${escapeHTML(params.login_hint)}" required></label>
<button id="login" type="submit">Sign in</button>
</form>`);
    return;
  }
  if (req.method === 'POST' && prompt.name === 'login' && url.pathname.endsWith('/login')) {
    const form = await readForm(req);
    const accountId = accountByHint(form.get('email'));
    if (!accountId) {
      res.writeHead(303, { location: `/interaction/${uid}?error=${encodeURIComponent(`no account ${form.get('email')}`)}` });
      res.end();
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
    return;
  }
  if (req.method === 'GET' && prompt.name === 'consent') {
    const client = await provider.Client.find(params.client_id);
    const scopes = String(params.scope || '').split(' ').filter(Boolean);
    page(res, 200, 'Allow access?', `<p><strong id="client">${escapeHTML(client?.clientName || params.client_id)}</strong> asks for:</p>
<ul>${scopes.map((s) => `<li>${escapeHTML(s)}</li>`).join('')}</ul>
<p>Resource: <code>${escapeHTML([].concat(params.resource || []).join(' '))}</code></p>
<form method="post" action="/interaction/${escapeHTML(uid)}/confirm">
<button id="approve" type="submit" name="decision" value="approve">Allow</button>
<button id="deny" type="submit" name="decision" value="deny">Deny</button>
</form>`);
    return;
  }
  if (req.method === 'POST' && prompt.name === 'consent' && url.pathname.endsWith('/confirm')) {
    const form = await readForm(req);
    if (form.get('decision') !== 'approve') {
      await provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'the user denied access' }, { mergeWithLastSubmission: false });
      return;
    }
    const grantId = await grantAll(details);
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  page(res, 400, 'Unexpected request', `<p>${escapeHTML(req.method)} during prompt ${escapeHTML(prompt.name)}</p>`);
}

async function interaction(req, res) {
  try {
    const details = await provider.interactionDetails(req, res);
    log('interaction', details.prompt.name, JSON.stringify(details.prompt.details));
    if (interactive) await interactivePage(req, res, details);
    else await scriptedInteraction(req, res, details);
  } catch (err) {
    console.error('[provider] interaction failed:', err);
    res.writeHead(500, { 'content-type': 'text/plain' });
    res.end(String(err));
  }
}

const callback = provider.callback();
server.on('request', (req, res) => {
  log(req.method, req.url);
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res);
    return;
  }
  callback(req, res);
});

process.on('SIGTERM', () => { server.close(); process.exit(0); });
process.on('SIGINT', () => { server.close(); process.exit(0); });
console.log(`READY ${issuer}`);
