// Signing: compact JWS (ES256) over a ~300-byte credential-like payload, the request an
// ID-Repository makes once per credential it issues; with ZKV_SIGN_OP=verify, verification of
// such JWSs instead. Closed model: ZKV_VUS callers, no think time. loadtest/sign.sh runs it
// beside OpenBao transit (peers/openbao_sign.js), which signs the same payloads.
//
//   ZKV_TOKEN      a credential with the roles signer and verifier
//   ZKV_SIGNER     the policy's signer (default credential, ES256 in keys-policy/example.toml)
//   ZKV_SIGN_OP    sign (default) or verify
//   ZKV_P99_MS     latency threshold (default 500)
import http from 'k6/http';
import encoding from 'k6/encoding';
import { check, fail } from 'k6';
import { BASE, TOKEN, VUS, DURATION, TREND_STATS, params, freshIndex } from './lib/common.js';
import { seedUin } from './lib/uin.js';

const SIGNER = __ENV.ZKV_SIGNER || 'credential';
export const OP = __ENV.ZKV_SIGN_OP || 'sign';
const P99_MS = __ENV.ZKV_P99_MS || '500';
const POOL = 32; // JWSs signed in setup for the verify runs
const NAMES = ['Asha Mensah', 'Kwame Okafor', 'Maria Santos', 'Tendai Banda', 'Amina Diallo', 'Ravi Nair'];
const REGIONS = ['Rabat Sale Kenitra', 'Fes Meknes', 'Souss Massa', 'Casablanca Settat'];

/** A credential's claims as JSON (~300 bytes): a new subject each call, so nothing can be reused. */
export function credentialPayload(uin) {
  const now = Math.floor(Date.now() / 1000);
  const pick = (xs) => xs[Math.floor(Math.random() * xs.length)];
  return JSON.stringify({
    iss: 'https://id-repository.example.gov',
    sub: uin,
    iat: now,
    exp: now + 3600, // within the signer's max_token_ttl_secs, which /jws enforces
    jti: `urn:uuid:${Math.random().toString(16).slice(2, 10)}-${Math.random().toString(16).slice(2, 10)}`,
    vc: {
      type: ['VerifiableCredential', 'NationalIdCredential'],
      credentialSubject: { name: pick(NAMES), dob: `19${50 + Math.floor(Math.random() * 50)}-0${1 + Math.floor(Math.random() * 9)}-1${Math.floor(Math.random() * 9)}`, gender: pick(['Male', 'Female']), region: pick(REGIONS) },
    },
  });
}

/** Fresh subjects far above any seeded resident index. */
export function nextUin() {
  return seedUin(freshIndex(500000000));
}

export function b64url(s) {
  return encoding.b64encode(s, 'rawurl');
}

/** A string's bytes as an ArrayBuffer, for WebCrypto (k6 has no TextEncoder). */
export function bytes(s) {
  return encoding.b64decode(b64url(s), 'rawurl');
}

export const options = {
  scenarios: { [OP]: { executor: 'constant-vus', vus: VUS, duration: DURATION } },
  summaryTrendStats: TREND_STATS,
  thresholds: {
    http_req_failed: ['rate==0'],
    checks: ['rate==1'],
    [`http_req_duration{op:${OP}}`]: [`p(99)<${P99_MS}`],
    [`http_reqs{op:${OP}}`]: ['count>0'],
  },
};

function sign(payload, op) {
  return http.post(`${BASE}/v1/signers/${SIGNER}/jws`, JSON.stringify({ payload: b64url(payload), typ: 'JOSE' }),
    params(TOKEN, null, { op: op }, [200], { 'Content-Type': 'application/json' }));
}

function verify(jws, op) {
  return http.post(`${BASE}/v1/signers/${SIGNER}/verify`, JSON.stringify({ jws: jws }),
    params(TOKEN, null, { op: op }, [200], { 'Content-Type': 'application/json' }));
}

/** The JWS of a 200 answer when it is compact, carries our payload and names a kid; else null. */
function jwsOf(res, payload) {
  if (res.status !== 200) return null;
  const jws = res.json('jws');
  const parts = String(jws).split('.');
  return parts.length === 3 && parts[1] === b64url(payload) && parts[2].length === 86 && res.json('kid') ? jws : null;
}

// Untimed checks before the load: the signature verifies under the key the JWKS publishes
// (WebCrypto, independently of the service), and the service's own verify agrees.
export async function setup() {
  if (!TOKEN) fail('set ZKV_TOKEN (a signer + verifier credential)');
  const payload = credentialPayload(seedUin(1));
  const res = sign(payload, 'setup');
  const jws = jwsOf(res, payload);
  if (!jws) fail(`sign: ${res.status} ${res.body}`);
  const kid = res.json('kid');
  const jwks = http.get(`${BASE}/.well-known/jwks.json`, { tags: { op: 'setup' } });
  const jwk = (jwks.json('keys') || []).find((k) => k.kid === kid);
  if (!jwk) fail(`kid ${kid} is not in the JWKS: ${jwks.body}`);
  const [h, p, s] = jws.split('.');
  if (JSON.parse(encoding.b64decode(h, 'rawurl', 's')).alg !== 'ES256') fail(`header ${h}`);
  const key = await crypto.subtle.importKey('jwk', { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y }, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
  const ok = await crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, key, encoding.b64decode(s, 'rawurl'), bytes(`${h}.${p}`));
  if (!ok) fail('the JWS does not verify under its JWKS key');
  const v = verify(jws, 'setup');
  if (v.status !== 200 || v.json('valid') !== true) fail(`verify: ${v.status} ${v.body}`);
  console.log(`signer ${SIGNER}: kid ${kid}, payload ${payload.length} bytes, JWS ${jws.length} bytes`);
  const pool = [];
  for (let i = 0; OP === 'verify' && i < POOL; i++) {
    const pl = credentialPayload(seedUin(i));
    pool.push(jwsOf(sign(pl, 'setup'), pl));
  }
  return { pool: pool };
}

export default function (data) {
  if (OP === 'verify') {
    const r = verify(data.pool[Math.floor(Math.random() * data.pool.length)], 'verify');
    check(r, { 'JWS valid': (x) => x.status === 200 && x.json('valid') === true });
    return;
  }
  const payload = credentialPayload(nextUin());
  const r = sign(payload, 'sign');
  check(r, { 'JWS signed': (x) => jwsOf(x, payload) !== null });
}
