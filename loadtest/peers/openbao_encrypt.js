// OpenBao transit encrypt of the body store.js PUTs to zkvault: a new resident's ~2 KiB demographic
// document, under a key derived from that resident's UIN. Same load shape and latency threshold as
// store.js. OpenBao stores nothing: this is the cost of the encryption alone.
import { check } from 'k6';
import { VUS, DURATION, TREND_STATS, freshIndex } from '../lib/common.js';
import { seedUin } from '../lib/uin.js';
import { demographic } from '../lib/records.js';
import { encrypt } from './openbao.js';

const P99_MS = __ENV.ZKV_P99_MS || '500';
const WRITE_BASE = parseInt(__ENV.ZKV_WRITE_BASE || '300000000', 10);

export const options = {
  scenarios: { encrypt: { executor: 'constant-vus', vus: VUS, duration: DURATION } },
  summaryTrendStats: TREND_STATS,
  thresholds: {
    http_req_failed: ['rate==0'],
    checks: ['rate==1'],
    'http_req_duration{op:encrypt}': [`p(99)<${P99_MS}`],
    'http_reqs{op:encrypt}': ['count>0'],
  },
};

export default function () {
  const uin = seedUin(freshIndex(WRITE_BASE));
  const r = encrypt(demographic(uin), uin);
  check(r, { 'document encrypted': (x) => x.status === 200 && String(x.json('data.ciphertext')).startsWith('vault:v') });
}
