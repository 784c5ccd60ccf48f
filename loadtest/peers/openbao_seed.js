// OpenBao's counterpart of `zkvault seed`: encrypts one ~2 KiB demographic document for each of
// the ZKV_SEEDED residents (batches of ZKV_BAO_BATCH, default 200: OpenBao refuses 250 with 400) and prints, one line per
// resident, "<index> <ciphertext> <sha256 of the plaintext>". Run with
// `--log-output file=PATH --log-format raw`; loadtest/peers/run.sh turns the lines into the corpus
// that openbao_decrypt.js reads.
import { check, fail } from 'k6';
import crypto from 'k6/crypto';
import exec from 'k6/execution';
import { SEEDED, TOKEN, requireSeeded } from '../lib/common.js';
import { seedUin } from '../lib/uin.js';
import { demographic } from '../lib/records.js';
import { encryptBatch } from './openbao.js';

const BATCH = parseInt(__ENV.ZKV_BAO_BATCH || '200', 10);
const ITERATIONS = Math.max(1, Math.ceil(SEEDED / BATCH));

export const options = {
  scenarios: {
    seed: { executor: 'shared-iterations', vus: Math.min(2, ITERATIONS), iterations: ITERATIONS, maxDuration: '30m' },
  },
  thresholds: { http_req_failed: ['rate==0'], checks: ['rate==1'] },
};

export function setup() {
  requireSeeded('openbao_seed.js');
  if (!TOKEN) fail('set ZKV_TOKEN (the OpenBao token)');
}

export default function () {
  const first = exec.scenario.iterationInTest * BATCH;
  const items = [];
  for (let i = first; i < Math.min(first + BATCH, SEEDED); i++) {
    const uin = seedUin(i);
    items.push({ uin: uin, plaintext: demographic(uin) });
  }
  const r = encryptBatch(items, 'seed');
  const results = r.status === 200 ? r.json('data.batch_results') : [];
  const ok = check(r, { 'batch encrypted': () => results.length === items.length && results.every((x) => x.ciphertext && !x.error) });
  if (!ok) return;
  const lines = results.map((x, j) => `${first + j} ${x.ciphertext} ${crypto.sha256(items[j].plaintext, 'hex')}`);
  console.log(lines.join('\n'));
}
