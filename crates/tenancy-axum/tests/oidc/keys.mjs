// Key pairs for the algorithms the test provider does not issue, made
// with node's crypto: prints one JSON object, by name, of
// {"alg", "private_pem" (PKCS#8), "jwk" (public, with kid and alg)}.
// `rs256_short` is a 512-bit RSA key, which verifiers must refuse.

import crypto from 'node:crypto';

const specs = {
  ps256: ['rsa', { modulusLength: 2048 }, 'PS256'],
  rs512: ['rsa', { modulusLength: 2048 }, 'RS512'],
  es384: ['ec', { namedCurve: 'P-384' }, 'ES384'],
  eddsa: ['ed25519', {}, 'EdDSA'],
  rs256_short: ['rsa', { modulusLength: 512 }, 'RS256'],
};

const out = {};
for (const [name, [type, options, alg]] of Object.entries(specs)) {
  const { privateKey, publicKey } = crypto.generateKeyPairSync(type, options);
  out[name] = {
    alg,
    private_pem: privateKey.export({ format: 'pem', type: 'pkcs8' }),
    jwk: { ...publicKey.export({ format: 'jwk' }), kid: name, alg, use: 'sig' },
  };
}
console.log(JSON.stringify(out));
