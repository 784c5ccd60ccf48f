// Resident Portal reads: GET of seeded residents' records with Zipfian popularity (rank k is read
// with probability ∝ 1/k^s, s = ZKV_ZIPF_S, default 1.0). Needs `zkvault seed --count N` and
// ZKV_SEEDED=N. Each answer must be 200 and be that resident's document.
import http from 'k6/http';
import { check } from 'k6';
import { TOKEN, NS, RECORD, VUS, DURATION, SEEDED, TREND_STATS, recordUrl, params, requireSeeded, requireTokens } from './lib/common.js';
import { seedUin } from './lib/uin.js';
import { Zipf } from './lib/zipf.js';

const P99_MS = __ENV.ZKV_P99_MS || '500';

export const options = {
  scenarios: { retrieve: { executor: 'constant-vus', vus: VUS, duration: DURATION } },
  summaryTrendStats: TREND_STATS,
  thresholds: {
    http_req_failed: ['rate==0'],
    checks: ['rate==1'],
    'http_req_duration{op:get}': [`p(99)<${P99_MS}`],
    'http_reqs{op:get}': ['count>0'],
  },
};

const zipf = SEEDED > 0 ? new Zipf(SEEDED, parseFloat(__ENV.ZKV_ZIPF_S || '1.0')) : null;

export function setup() {
  requireTokens(false);
  requireSeeded('retrieve.js');
}

export default function () {
  const uin = seedUin(zipf.sample() - 1);
  const r = http.get(recordUrl(NS, RECORD), params(TOKEN, uin, { op: 'get' }, [200]));
  check(r, { 'seeded record read back': (x) => x.status === 200 && x.body.indexOf(uin) > 0 });
}
