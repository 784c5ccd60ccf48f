// OpenBao transit, the peer that loadtest/peers/run.sh measures zkvault against: its requests and
// the per-resident context. ZKV_URL is OpenBao's address (loopback only, as for zkvault: see
// ../lib/common.js), ZKV_TOKEN its token, ZKV_BAO_KEY the transit key (default res, created with
// derived=true, type=xchacha20-poly1305).
import http from 'k6/http';
import encoding from 'k6/encoding';
import { BASE, TOKEN } from '../lib/common.js';

const KEY = __ENV.ZKV_BAO_KEY || 'res';

/** The resident's key-derivation context: its UIN, as zkvault derives a key per resident. */
export function context(uin) {
  return encoding.b64encode(uin, 'std');
}

function post(path, body, op) {
  return http.post(`${BASE}/v1/transit/${path}/${KEY}`, JSON.stringify(body), {
    headers: { 'X-Vault-Token': TOKEN, 'Content-Type': 'application/json' },
    tags: { op: op },
    responseCallback: http.expectedStatuses(200),
  });
}

export function encrypt(plaintext, uin, op) {
  return post('encrypt', { plaintext: encoding.b64encode(plaintext, 'std'), context: context(uin) }, op || 'encrypt');
}

/** One request for many residents; items are { plaintext, uin }. */
export function encryptBatch(items, op) {
  return post('encrypt', { batch_input: items.map((x) => ({ plaintext: encoding.b64encode(x.plaintext, 'std'), context: context(x.uin) })) }, op);
}

export function decrypt(ciphertext, uin) {
  return post('decrypt', { ciphertext: ciphertext, context: context(uin) }, 'decrypt');
}

/** The plaintext of a decrypt answer, or null. */
export function plaintextOf(res) {
  try {
    return encoding.b64decode(res.json('data.plaintext'), 'std', 's');
  } catch (e) {
    return null;
  }
}
