// OpenBao transit decrypt with retrieve.js's popularity: residents drawn Zipfian (s = ZKV_ZIPF_S,
// default 1.0) over the ZKV_SEEDED residents whose documents openbao_seed.js encrypted
// (ZKV_BAO_CORPUS: line i is resident i's "<ciphertext> <sha256 of the plaintext>"). Each answer
// must be the document that was encrypted for that resident.
import { check } from 'k6';
import crypto from 'k6/crypto';
import { SharedArray } from 'k6/data';
import { VUS, DURATION, SEEDED, TREND_STATS, requireSeeded } from '../lib/common.js';
import { seedUin } from '../lib/uin.js';
import { Zipf } from '../lib/zipf.js';
import { decrypt, plaintextOf } from './openbao.js';

const P99_MS = __ENV.ZKV_P99_MS || '500';

export const options = {
  scenarios: { decrypt: { executor: 'constant-vus', vus: VUS, duration: DURATION } },
  summaryTrendStats: TREND_STATS,
  thresholds: {
    http_req_failed: ['rate==0'],
    checks: ['rate==1'],
    'http_req_duration{op:decrypt}': [`p(99)<${P99_MS}`],
    'http_reqs{op:decrypt}': ['count>0'],
  },
};

// Plain lines, not one JSON document: k6 reads ~280 MB for 100,000 residents, once for all VUs.
const corpus = new SharedArray('corpus', () => open(__ENV.ZKV_BAO_CORPUS).split('\n').filter((line) => line));
const zipf = SEEDED > 0 ? new Zipf(SEEDED, parseFloat(__ENV.ZKV_ZIPF_S || '1.0')) : null;

export function setup() {
  requireSeeded('openbao_decrypt.js');
  if (corpus.length !== SEEDED) throw new Error(`corpus has ${corpus.length} residents, ZKV_SEEDED is ${SEEDED}`);
}

export default function () {
  const i = zipf.sample() - 1;
  const uin = seedUin(i);
  const [ciphertext, digest] = corpus[i].split(' ');
  const r = decrypt(ciphertext, uin);
  check(r, {
    'the encrypted document decrypted': (x) => {
      const text = x.status === 200 ? plaintextOf(x) : null;
      return text !== null && text.indexOf(uin) > 0 && crypto.sha256(text, "hex") === digest;
    },
  });
}
