#!/usr/bin/env node
// Remit's test OpenID provider: panva's certified oidc-provider on a loopback port, with a
// headless login for tests. See README.md next to this file.
//
//   node provider.mjs [--config FILE] [--port N] [--host ADDR] [--exit-with-stdin]
//
// Prints exactly one line on stdout once it is listening, a JSON object
//   {"issuer": "http://127.0.0.1:PORT", "pid": 1234}
// and nothing else there; every log line goes to stderr. SIGTERM/SIGINT (and, with
// --exit-with-stdin, the end of stdin, i.e. the parent test process being gone) close the
// server and exit 0. A bad config or a failed start exits 2 with the reason on stderr.
//
// This is a TEST harness: no passwords, in-memory storage, keys generated per start.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

// oidc-provider prints its notices with console.info, i.e. on stdout; stdout is reserved for
// the ready line, so everything that logs goes to stderr.
for (const level of ['log', 'info', 'debug']) {
  console[level] = (...args) => console.error(...args);
}

const here = path.dirname(fileURLToPath(import.meta.url));
const log = (...args) => console.error('oidc-provider-harness:', ...args);

function fail(message) {
  log(message);
  process.exit(2);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      config: { type: 'string', default: path.join(here, 'config.json') },
      port: { type: 'string', default: '0' },
      host: { type: 'string', default: '127.0.0.1' },
      'exit-with-stdin': { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  }));
} catch (e) {
  fail(`${e.message}\nusage: node provider.mjs [--config FILE] [--port N] [--host ADDR] [--exit-with-stdin]`);
}

const port = Number(args.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`--port: not a port: ${args.port}`);
if (!['127.0.0.1', '::1', 'localhost'].includes(args.host)) {
  fail(`--host must be a loopback address (127.0.0.1, ::1, localhost), not ${args.host}`);
}

// ---------------------------------------------------------------------------------------
// Config

let config;
try {
  config = JSON.parse(fs.readFileSync(args.config, 'utf8'));
} catch (e) {
  fail(`cannot read config ${args.config}: ${e.message}`);
}
if (typeof config !== 'object' || config === null || Array.isArray(config)) {
  fail(`config ${args.config}: must be a JSON object`);
}
const KNOWN = new Set(['clients', 'accounts', 'conformIdTokenClaims', 'ttl', 'jwks']);
for (const key of Object.keys(config)) {
  if (key.startsWith('$') || key.startsWith('_')) continue; // comments
  if (!KNOWN.has(key)) fail(`config ${args.config}: unknown key "${key}" (known: ${[...KNOWN].join(', ')})`);
}
if (!Array.isArray(config.clients) || config.clients.length === 0) {
  fail(`config ${args.config}: "clients" must be a non-empty array`);
}
if (!Array.isArray(config.accounts)) fail(`config ${args.config}: "accounts" must be an array`);

const accounts = new Map();
for (const a of config.accounts) {
  if (typeof a?.sub !== 'string' || !a.sub) fail(`config ${args.config}: every account needs a "sub" string`);
  if (accounts.has(a.sub)) fail(`config ${args.config}: duplicate account "${a.sub}"`);
  accounts.set(a.sub, a);
}

const TTL_DEFAULTS = {
  AccessToken: 3600,
  AuthorizationCode: 60,
  IdToken: 3600,
  RefreshToken: 14 * 24 * 3600,
  Interaction: 3600,
  Session: 14 * 24 * 3600,
  Grant: 14 * 24 * 3600,
};
const ttl = { ...TTL_DEFAULTS };
for (const [k, v] of Object.entries(config.ttl ?? {})) {
  if (!(k in TTL_DEFAULTS)) fail(`config ${args.config}: ttl.${k} is not one of ${Object.keys(TTL_DEFAULTS).join(', ')}`);
  if (!Number.isInteger(v) || v <= 0) fail(`config ${args.config}: ttl.${k} must be a positive integer (seconds)`);
  ttl[k] = v;
}

// ---------------------------------------------------------------------------------------
// Keys: a fresh RSA-2048 (RS256, PS256), P-256 (ES256) and Ed25519 (EdDSA) key per start,
// unless the config brings its own private JWKS.

async function generateJwks() {
  const gen = (type, opts) => new Promise((resolve, reject) => {
    crypto.generateKeyPair(type, opts, (err, _pub, priv) => (err ? reject(err) : resolve(priv)));
  });
  const [rsa, ec, ed] = await Promise.all([
    gen('rsa', { modulusLength: 2048 }),
    gen('ec', { namedCurve: 'P-256' }),
    gen('ed25519', {}),
  ]);
  const withKid = (jwk) => ({ ...jwk, kid: thumbprint(jwk), use: 'sig' });
  return {
    keys: [rsa, ec, ed].map((k) => withKid(k.export({ format: 'jwk' }))),
  };
}

// RFC 7638 JWK thumbprint (what oidc-provider would compute anyway), as the kid.
function thumbprint(jwk) {
  const members = { RSA: ['e', 'kty', 'n'], EC: ['crv', 'kty', 'x', 'y'], OKP: ['crv', 'kty', 'x'] }[jwk.kty];
  const canonical = JSON.stringify(Object.fromEntries(members.map((m) => [m, jwk[m]])));
  return crypto.createHash('sha256').update(canonical).digest('base64url');
}

// Started now: key generation runs on libuv's thread pool while the main thread loads
// oidc-provider (RSA key generation alone takes 50-500 ms).
const jwksPromise = config.jwks ? Promise.resolve(config.jwks) : generateJwks();
const providerModule = import('oidc-provider');

// ---------------------------------------------------------------------------------------
// Small HTTP helpers for the interaction routes (plain node:http, no framework).

function send(res, status, type, body, headers = {}) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', ...headers });
  res.end(body);
}
const sendJson = (res, status, obj) => send(res, status, 'application/json', JSON.stringify(obj));
const html = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw Object.assign(new Error('request body too large'), { status: 413 });
    chunks.push(chunk);
  }
  const type = req.headers['content-type'] ?? '';
  const body = Buffer.concat(chunks).toString('utf8');
  if (!body) return {};
  if (type.startsWith('application/json')) return JSON.parse(body);
  return Object.fromEntries(new URLSearchParams(body));
}

function wantsJson(req) {
  return /application\/json/.test(req.headers.accept ?? '');
}

// ---------------------------------------------------------------------------------------
// The headless login: GET /interaction/:uid (HTML form, or JSON with Accept: application/json),
// POST /interaction/:uid/login (login=<sub>: logs in and consents to everything requested),
// POST /interaction/:uid/abort (the End-User declines: access_denied back to the client).

// A grant for everything the authorization request asked for (and whatever the current prompt
// says is missing), reusing the interaction's existing grant for the same account.
async function grantEverything(provider, details, accountId) {
  const { params, prompt } = details;
  let grant;
  if (details.grantId) {
    grant = await provider.Grant.find(details.grantId);
    if (grant && grant.accountId !== accountId) grant = undefined;
  }
  grant ??= new provider.Grant({ accountId, clientId: params.client_id });
  if (params.scope) grant.addOIDCScope(params.scope);
  const missing = prompt?.details ?? {};
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return grant.save();
}

function loginPage(details) {
  const { uid, prompt, params } = details;
  const hint = params.login_hint ?? '';
  const who = prompt.name === 'login'
    ? `<label>Login (sub) <input name="login" value="${html(hint)}" autofocus></label>`
    : `<p>Signed in as ${html(details.session?.accountId ?? '')}</p>`;
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Remit test OP: ${html(prompt.name)}</title></head>
<body>
<h1>Remit test OP: ${html(prompt.name)}</h1>
<p>Client <code>${html(params.client_id)}</code> asks for <code>${html(params.scope ?? '')}</code>
 (${html(prompt.reasons.join(', '))}).</p>
<form method="post" action="/interaction/${html(uid)}/login">${who}
<button type="submit">Continue</button></form>
<form method="post" action="/interaction/${html(uid)}/abort"><button type="submit">Cancel</button></form>
</body></html>`;
}

async function handleInteraction(provider, req, res, uid, action) {
  const url = `/interaction/${uid}${action ? `/${action}` : ''}`;
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (e) {
    // Unknown or expired interaction, or the interaction cookie is missing.
    return sendJson(res, 400, { error: 'invalid_interaction', error_description: e.message });
  }
  if (details.uid !== uid) {
    return sendJson(res, 400, { error: 'invalid_interaction', error_description: 'interaction cookie is for another interaction' });
  }

  if (req.method === 'GET' && !action) {
    const summary = {
      uid: details.uid,
      prompt: details.prompt,
      params: details.params,
      session: details.session ? { accountId: details.session.accountId } : null,
      login: `${url}/login`,
      abort: `${url}/abort`,
    };
    return wantsJson(req) ? sendJson(res, 200, summary) : send(res, 200, 'text/html; charset=utf-8', loginPage(details));
  }
  if (req.method !== 'POST' || !['login', 'abort'].includes(action)) {
    return sendJson(res, 405, { error: 'method_not_allowed', error_description: `${req.method} ${url}` });
  }

  const form = await readForm(req);
  if (action === 'abort') {
    log(`interaction ${uid}: aborted`);
    return provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }

  const { name } = details.prompt;
  if (name === 'login') {
    const sub = form.login;
    if (!sub || !accounts.has(sub)) {
      return sendJson(res, 400, { error: 'unknown_account', error_description: `no account "${sub ?? ''}" in the config` });
    }
    const login = { accountId: sub, remember: true };
    if (form.acr) login.acr = form.acr;
    if (form.amr) login.amr = form.amr.split(',').filter(Boolean);
    const grantId = await grantEverything(provider, details, sub);
    log(`interaction ${uid}: login ${sub}, consent ${grantId}`);
    return provider.interactionFinished(req, res, { login, consent: { grantId } }, { mergeWithLastSubmission: false });
  }
  if (name === 'consent') {
    const sub = details.session?.accountId;
    if (!sub) return sendJson(res, 400, { error: 'no_session', error_description: 'consent prompt without a session' });
    if (form.login && form.login !== sub) {
      return sendJson(res, 400, {
        error: 'session_mismatch',
        error_description: `the session is "${sub}", not "${form.login}"; send prompt=login to switch`,
      });
    }
    const grantId = await grantEverything(provider, details, sub);
    log(`interaction ${uid}: consent ${grantId} for ${sub}`);
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  return sendJson(res, 400, { error: 'unsupported_prompt', error_description: `prompt ${name}` });
}

// ---------------------------------------------------------------------------------------
// Tampering, for the relying party's security tests: make the token endpoint hand out a bad
// ID token on purpose (expired, wrong aud/iss/nonce, forged signature, alg none, HS256 with
// the client secret, unknown kid, ...). POST /_harness/tamper with a JSON body:
//   { "claims": {"exp": 1, "nonce": null},   // set these payload claims (null removes one)
//     "header": {"kid": "nope"},             // set these header members (null removes one)
//     "key": "op",                           // sign with: "op" (the OP's own key for the alg,
//                                            //   default), "foreign" (a fresh key of the same
//                                            //   type, same kid: a forged signature), "none"
//                                            //   (alg none, empty signature), "client_secret"
//                                            //   (HS256 keyed with the client's secret)
//     "client_id": "rp",                     // only for this client (default: any)
//     "times": 1 }                           // how many ID tokens to alter (default 1)
// GET /_harness/tamper shows what is pending; DELETE clears it. Applies to the id_token of
// token endpoint responses (authorization_code and refresh_token grants) only.

let tamper = null;

const KEY_FOR_ALG = { RS256: 'RSA', PS256: 'RSA', ES256: 'EC', EdDSA: 'OKP', Ed25519: 'OKP' };
const opKeys = new Map(); // kid -> { kty, key }, the OP's private signing keys
const foreignKeys = new Map(); // kty -> KeyObject

function b64json(obj) {
  return Buffer.from(JSON.stringify(obj)).toString('base64url');
}

function signJws(alg, key, input) {
  const data = Buffer.from(input);
  switch (alg) {
    case 'RS256': return crypto.sign('sha256', data, key);
    case 'PS256': return crypto.sign('sha256', data, { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
    case 'ES256': return crypto.sign('sha256', data, { key, dsaEncoding: 'ieee-p1363' });
    case 'EdDSA':
    case 'Ed25519': return crypto.sign(null, data, key);
    case 'HS256': return crypto.createHmac('sha256', key).update(data).digest();
    default: throw new Error(`tamper: cannot sign with alg ${alg}`);
  }
}

async function foreignKey(kty) {
  if (!foreignKeys.has(kty)) {
    const [type, opts] = { RSA: ['rsa', { modulusLength: 2048 }], EC: ['ec', { namedCurve: 'P-256' }], OKP: ['ed25519', {}] }[kty];
    foreignKeys.set(kty, crypto.generateKeyPairSync(type, opts).privateKey);
  }
  return foreignKeys.get(kty);
}

async function tamperIdToken(idToken, client) {
  const t = tamper;
  const [h64, p64] = idToken.split('.');
  const header = JSON.parse(Buffer.from(h64, 'base64url'));
  const payload = JSON.parse(Buffer.from(p64, 'base64url'));
  const origAlg = header.alg;
  const origKid = header.kid;
  for (const [k, v] of Object.entries(t.header ?? {})) if (v === null) delete header[k]; else header[k] = v;
  for (const [k, v] of Object.entries(t.claims ?? {})) if (v === null) delete payload[k]; else payload[k] = v;
  const key = t.key ?? 'op';
  if (key === 'none') header.alg = 'none';
  if (key === 'client_secret') header.alg = 'HS256';
  const input = `${b64json(header)}.${b64json(payload)}`;
  let sig;
  switch (key) {
    case 'none': sig = Buffer.alloc(0); break;
    case 'client_secret':
      if (!client.clientSecret) throw new Error(`tamper: client ${client.clientId} has no secret`);
      sig = signJws('HS256', client.clientSecret, input);
      break;
    case 'op':
    case 'foreign': {
      const alg = header.alg in KEY_FOR_ALG ? header.alg : origAlg;
      const kty = KEY_FOR_ALG[alg];
      // The key the OP signed with, else (another alg asked for) its first key of that type.
      const own = opKeys.get(origKid)?.kty === kty ? opKeys.get(origKid) : [...opKeys.values()].find((k) => k.kty === kty);
      if (!kty || !own) throw new Error(`tamper: the OP has no ${kty ?? alg} key to sign ${alg} with`);
      sig = signJws(alg, key === 'op' ? own.key : await foreignKey(kty), input);
      break;
    }
    default: throw new Error(`tamper: unknown key "${key}"`);
  }
  return `${input}.${sig.toString('base64url')}`;
}

function checkTamper(body) {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new Error('body must be a JSON object');
  const known = new Set(['claims', 'header', 'key', 'client_id', 'times']);
  for (const k of Object.keys(body)) if (!known.has(k)) throw new Error(`unknown member "${k}"`);
  if (body.key !== undefined && !['op', 'foreign', 'none', 'client_secret'].includes(body.key)) throw new Error(`unknown key "${body.key}"`);
  if (body.times !== undefined && !(Number.isInteger(body.times) && body.times > 0)) throw new Error('times must be a positive integer');
  for (const k of ['claims', 'header']) {
    if (body[k] !== undefined && (typeof body[k] !== 'object' || body[k] === null || Array.isArray(body[k]))) throw new Error(`${k} must be an object`);
  }
  return { ...body, times: body.times ?? 1 };
}

async function handleTamper(req, res) {
  if (req.method === 'GET') return sendJson(res, 200, { pending: tamper });
  if (req.method === 'DELETE') {
    tamper = null;
    res.writeHead(204).end();
    return undefined;
  }
  if (req.method !== 'POST') return sendJson(res, 405, { error: 'method_not_allowed' });
  let body;
  try {
    const raw = [];
    for await (const c of req) raw.push(c);
    body = checkTamper(JSON.parse(Buffer.concat(raw).toString('utf8') || 'null'));
  } catch (e) {
    return sendJson(res, 400, { error: 'invalid_request', error_description: e.message });
  }
  tamper = body;
  log(`tamper armed: ${JSON.stringify(tamper)}`);
  res.writeHead(204).end();
  return undefined;
}

// ---------------------------------------------------------------------------------------
// Start: listen first (the issuer needs the port), then build the provider.

const server = http.createServer();
server.keepAliveTimeout = 5_000;
const sockets = new Set();
server.on('connection', (s) => {
  sockets.add(s);
  s.on('close', () => sockets.delete(s));
});

let stopping = false;
function shutdown(why) {
  if (stopping) return;
  stopping = true;
  log(`${why}: shutting down`);
  server.close(() => process.exit(0));
  for (const s of sockets) s.destroy();
  setTimeout(() => process.exit(0), 1_000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
if (args['exit-with-stdin']) {
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, args.host, resolve);
}).catch((e) => fail(`cannot listen on ${args.host}:${port}: ${e.message}`));

const { port: boundPort } = server.address();
const hostPart = args.host === '::1' ? '[::1]' : args.host;
const issuer = `http://${hostPart}:${boundPort}`;

const { default: Provider } = await providerModule;

const jwks = await jwksPromise;

for (const jwk of jwks.keys ?? []) {
  if (!jwk.d) continue;
  const kid = jwk.kid ?? thumbprint(jwk);
  opKeys.set(kid, { kty: jwk.kty, key: crypto.createPrivateKey({ key: jwk, format: 'jwk' }) });
}

const clients = config.clients.map((c) => ({ ...c }));

let provider;
try {
  provider = new Provider(issuer, {
    clients,
    clientDefaults: {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      id_token_signed_response_alg: 'RS256',
      token_endpoint_auth_method: 'client_secret_basic',
    },
    jwks,
    cookies: {
      keys: [crypto.randomBytes(32).toString('base64url')],
    },
    async findAccount(_ctx, sub) {
      const account = accounts.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { ...account, sub };
        },
      };
    },
    // acr/amr come from the login form (both optional) and then go into the ID token;
    // auth_time when the client asks for it (max_age, require_auth_time).
    acrValues: ['urn:remit:test:pwd', 'urn:remit:test:mfa'],
    claims: {
      auth_time: null,
      sid: null,
      iss: null,
      openid: ['sub', 'acr', 'amr'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
    // false (the default here): the ID token carries every claim the granted scopes allow,
    // as most real IdPs do; true: only sub & co. (claims go to userinfo), OIDC Core 5.4.
    conformIdTokenClaims: config.conformIdTokenClaims ?? false,
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      // Machine clients (grant_types ["client_credentials"]): Remit's tool proxy obtains
      // upstream access tokens this way.
      clientCredentials: { enabled: true },
      revocation: {
        enabled: true,
        allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId,
      },
      introspection: {
        enabled: true,
        allowedPolicy: async (ctx, client, token) => client.clientAuthMethod !== 'none'
          || token.clientId === ctx.oidc.client.clientId,
      },
      rpInitiatedLogout: {
        enabled: true,
        async postLogoutSuccessSource(ctx) {
          ctx.type = 'html';
          ctx.body = '<!DOCTYPE html><html><body><h1>Signed out</h1></body></html>';
        },
      },
      userinfo: { enabled: true },
    },
    interactions: {
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    ttl: Object.fromEntries(Object.entries(ttl).map(([k, v]) => [k, () => v])),
    async renderError(ctx, out, error) {
      log(`error page: ${JSON.stringify(out)}${error?.stack ? `\n${error.stack}` : ''}`);
      ctx.type = 'json';
      ctx.body = out;
    },
  });
} catch (e) {
  fail(`invalid config ${args.config}: ${e.message}${e.error_description ? `: ${e.error_description}` : ''}`);
}

// Clients are validated lazily; find a bad one now rather than at the first request.
for (const c of clients) {
  try {
    await provider.Client.find(c.client_id);
  } catch (e) {
    fail(`invalid client ${c.client_id} in ${args.config}: ${e.message}${e.error_description ? `: ${e.error_description}` : ''}`);
  }
}

for (const event of ['server_error', 'authorization.error', 'grant.error', 'introspection.error',
  'revocation.error', 'end_session.error', 'userinfo.error', 'jwks.error', 'discovery.error']) {
  provider.on(event, (_ctx, err) => log(`${event}: ${err.name}: ${err.message}${err.error_description ? ` (${err.error_description})` : ''}`));
}

provider.use(async (ctx, next) => {
  await next();
  if (!tamper || ctx.oidc?.route !== 'token' || ctx.status !== 200 || typeof ctx.body?.id_token !== 'string') return;
  const client = ctx.oidc.client;
  if (tamper.client_id && tamper.client_id !== client?.clientId) return;
  ctx.body = { ...ctx.body, id_token: await tamperIdToken(ctx.body.id_token, client) };
  log(`tamper: altered the ID token for ${client?.clientId} (${JSON.stringify(tamper)})`);
  tamper.times -= 1;
  if (tamper.times <= 0) tamper = null;
});

const callback = provider.callback();
const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|abort))?\/?$/;

server.on('request', (req, res) => {
  const started = process.hrtime.bigint();
  res.on('finish', () => {
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    log(`${req.method} ${req.url.split('?')[0]} -> ${res.statusCode} (${ms.toFixed(1)} ms)`);
  });
  let pathname;
  try {
    pathname = new URL(req.url, issuer).pathname;
  } catch {
    return sendJson(res, 400, { error: 'invalid_request', error_description: 'bad request target' });
  }
  // DELETE /_harness/accounts/<sub>: the account leaves the organisation. Its sessions and
  // refresh tokens stay, but every later refresh_token grant for it fails with invalid_grant
  // (the OP finds no account), as at a real IdP after offboarding.
  const gone = /^\/_harness\/accounts\/([^/]+)$/.exec(pathname);
  if (gone && req.method === 'DELETE') {
    const existed = accounts.delete(decodeURIComponent(gone[1]));
    res.writeHead(existed ? 204 : 404).end();
    return;
  }
  if (pathname === '/_harness/tamper') {
    return handleTamper(req, res).catch((e) => {
      log(`tamper: ${e.stack ?? e}`);
      if (!res.headersSent) sendJson(res, 500, { error: 'server_error', error_description: e.message });
    });
  }
  const m = INTERACTION.exec(pathname);
  if (!m) return callback(req, res);
  return handleInteraction(provider, req, res, m[1], m[2]).catch((e) => {
    log(`interaction ${m[1]}: ${e.stack ?? e}`);
    if (!res.headersSent) sendJson(res, e.status ?? 500, { error: 'server_error', error_description: e.message });
  });
});

process.stdout.write(`${JSON.stringify({ issuer, pid: process.pid })}\n`);
log(`listening: ${issuer} (config ${args.config})`);
