// OpenBao transit signing, the peer of ../sign.js: the same ~300-byte credential payloads, made
// into an ES256 compact JWS the way an OpenBao client has to. The client builds the header and
// the signing input, transit signs it with an ecdsa-p256 key (marshaling_algorithm=jws: the
// 64-byte r||s that JWS wants, base64url), and the client joins the three parts. With
// ZKV_SIGN_OP=verify, transit verifies such JWSs instead. Same load shape and thresholds as sign.js.
//
//   ZKV_URL, ZKV_TOKEN   OpenBao's address (loopback only) and token
//   ZKV_BAO_SIGN_KEY     the transit key (default sig, type=ecdsa-p256)
import http from 'k6/http';
import encoding from 'k6/encoding';
import { check, fail } from 'k6';
import { BASE, TOKEN, VUS, DURATION, TREND_STATS } from '../lib/common.js';
import { seedUin } from '../lib/uin.js';
import { OP, credentialPayload, nextUin, b64url, bytes } from '../sign.js';

const KEY = __ENV.ZKV_BAO_SIGN_KEY || 'sig';
const P99_MS = __ENV.ZKV_P99_MS || '500';
const POOL = 32;
// zkvault's header names its key by kid; this one by transit key and version.
const HEADER = b64url(JSON.stringify({ alg: 'ES256', typ: 'JOSE', kid: `transit/${KEY}/v1` }));

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

function post(path, body, op) {
  return http.post(`${BASE}/v1/transit/${path}/${KEY}`, JSON.stringify(Object.assign({ marshaling_algorithm: 'jws' }, body)), {
    headers: { 'X-Vault-Token': TOKEN, 'Content-Type': 'application/json' },
    tags: { op: op },
    responseCallback: http.expectedStatuses(200),
  });
}

/** Signs the payload; returns the compact JWS, or null when transit did not answer one. */
function signJws(payload, op) {
  const input = `${HEADER}.${b64url(payload)}`;
  const r = post('sign', { input: encoding.b64encode(input, 'std') }, op);
  const sig = r.status === 200 ? String(r.json('data.signature')) : '';
  return sig.startsWith('vault:v1:') && sig.length === 9 + 86 ? `${input}.${sig.slice(9)}` : null;
}

function verify(jws, op) {
  const [h, p, s] = jws.split('.');
  return post('verify', { input: encoding.b64encode(`${h}.${p}`, 'std'), signature: `vault:v1:${s}` }, op);
}

// Untimed: the assembled JWS verifies under the key's public key (WebCrypto), and transit agrees.
export async function setup() {
  const jws = signJws(credentialPayload(seedUin(1)), 'setup');
  if (!jws) fail('transit sign gave no JWS signature');
  const k = http.get(`${BASE}/v1/transit/keys/${KEY}`, { headers: { 'X-Vault-Token': TOKEN }, tags: { op: 'setup' } });
  const pem = k.json('data.keys.1.public_key');
  if (!pem) fail(`transit key ${KEY}: ${k.status} ${k.body}`);
  const spki = encoding.b64decode(pem.replace(/-----[A-Z ]+-----|\s/g, ''), 'std');
  const key = await crypto.subtle.importKey('spki', spki, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
  const [h, p, s] = jws.split('.');
  if (!(await crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, key, encoding.b64decode(s, 'rawurl'), bytes(`${h}.${p}`)))) {
    fail('the assembled JWS does not verify under the transit public key');
  }
  const v = verify(jws, 'setup');
  if (v.status !== 200 || v.json('data.valid') !== true) fail(`transit verify: ${v.status} ${v.body}`);
  const pool = [];
  for (let i = 0; OP === 'verify' && i < POOL; i++) pool.push(signJws(credentialPayload(seedUin(i)), 'setup'));
  return { pool: pool };
}

export default function (data) {
  if (OP === 'verify') {
    const r = verify(data.pool[Math.floor(Math.random() * data.pool.length)], 'verify');
    check(r, { 'JWS valid': (x) => x.status === 200 && x.json('data.valid') === true });
    return;
  }
  check(signJws(credentialPayload(nextUin()), 'sign'), { 'JWS signed': (jws) => jws !== null });
}
