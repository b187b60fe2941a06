// A real OpenID provider for the tests: node-oidc-provider (npm
// `oidc-provider`, installed by scripts/test.sh into the directory named by
// TENANCY_OIDC_PROVIDER, default ~/.cache/tenancy-oidc) on a free loopback
// port, issuing JWT access tokens with client credentials.
//
//   node op.mjs            prints {"issuer": "http://127.0.0.1:<port>"} once listening
//
// Clients (client_secret_basic): `app`/`app-secret` (tenant acme) and
// `other`/`other-secret` (tenant globex). Resources: https://api.test
// (RS256 tokens, the default) and https://es.test (ES256 tokens). The
// `tenant_id` and `tenants` claims come from extraTokenClaims.
//
// Test-only admin routes (POST), for key rotation without a restart:
//   /admin/rotate   a new RSA signing key first, the others kept
//   /admin/retire   only the newest RSA key (and the EC key) kept
// Both answer {"kids": [...]}, the key ids now published.
//
// The process exits when its stdin closes (the test process ended) or
// after TENANCY_OIDC_LIFETIME_S seconds (default 600).

import crypto from 'node:crypto';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const dir = process.env.TENANCY_OIDC_PROVIDER || path.join(os.homedir(), '.cache', 'tenancy-oidc');
const entry = path.join(dir, 'node_modules', 'oidc-provider', 'lib', 'index.js');
let Provider;
try {
  ({ default: Provider } = await import(pathToFileURL(entry).href));
} catch (e) {
  console.error(`oidc-provider not found at ${entry}: run scripts/test.sh (it installs it) (${e.message})`);
  process.exit(2);
}

const lifetime = Number(process.env.TENANCY_OIDC_LIFETIME_S || 600);
setTimeout(() => process.exit(0), lifetime * 1000).unref();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();

let serial = 0;
function rsaKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  serial += 1;
  return { ...privateKey.export({ format: 'jwk' }), kid: `rsa-${serial}`, alg: 'RS256', use: 'sig' };
}
function ecKey() {
  const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { ...privateKey.export({ format: 'jwk' }), kid: 'ec-1', alg: 'ES256', use: 'sig' };
}

// Newest RSA key first: it signs.
let rsaKeys = [rsaKey()];
const ec = ecKey();

const RESOURCES = { 'https://api.test': 'RS256', 'https://es.test': 'ES256' };
const TENANT = { app: 'acme', other: 'globex' };

let issuer;
let provider;

function make() {
  const p = new Provider(issuer, {
    clients: Object.keys(TENANT).map((id) => ({
      client_id: id,
      client_secret: `${id}-secret`,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    jwks: { keys: [...rsaKeys, ec] },
    cookies: { keys: ['tenancy-test-cookie-key'] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'https://api.test',
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          const alg = RESOURCES[resource];
          if (!alg) throw new Error(`unknown resource ${resource}`);
          return {
            scope: 'api',
            audience: resource,
            accessTokenFormat: 'jwt',
            accessTokenTTL: 300,
            jwt: { sign: { alg } },
          };
        },
      },
    },
    extraTokenClaims: (ctx, token) => {
      const tenant = TENANT[token.clientId];
      return tenant ? { tenant_id: tenant, tenants: [tenant] } : {};
    },
  });
  p.on('server_error', (ctx, err) => console.error('server_error', err));
  return p;
}

function kids() {
  return [...rsaKeys, ec].map((k) => k.kid);
}

function admin(req, res) {
  if (req.url === '/admin/rotate') {
    rsaKeys = [rsaKey(), ...rsaKeys];
  } else if (req.url === '/admin/retire') {
    rsaKeys = rsaKeys.slice(0, 1);
  } else {
    res.writeHead(404).end();
    return;
  }
  provider = make();
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ kids: kids() }));
}

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url.startsWith('/admin/')) {
    admin(req, res);
    return;
  }
  provider.callback()(req, res);
});
server.listen(0, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  provider = make();
  console.log(JSON.stringify({ issuer, kids: kids() }));
});
