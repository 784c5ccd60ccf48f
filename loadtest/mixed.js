// Mixed traffic, 90 % reads / 10 % writes (ZKV_WRITE_RATIO): reads as in retrieve.js (Zipfian over
// seeded residents); writes are ~2 KiB demographic PUTs, half replacing a uniformly chosen seeded
// resident's record (200), half enrolling a new resident (201).
import { TOKEN, VUS, DURATION, SEEDED, TREND_STATS, requireSeeded, requireTokens } from './lib/common.js';
import { Zipf } from './lib/zipf.js';
import { mixedIteration } from './lib/traffic.js';

const WRITE_RATIO = parseFloat(__ENV.ZKV_WRITE_RATIO || '0.1');
const P99_MS = __ENV.ZKV_P99_MS || '500';
const WRITE_BASE = parseInt(__ENV.ZKV_WRITE_BASE || '400000000', 10);

export const options = {
  scenarios: { mixed: { executor: 'constant-vus', vus: VUS, duration: DURATION } },
  summaryTrendStats: TREND_STATS,
  thresholds: {
    http_req_failed: ['rate==0'],
    checks: ['rate==1'],
    'http_req_duration{op:get}': [`p(99)<${P99_MS}`],
    'http_req_duration{op:put}': [`p(99)<${P99_MS}`],
    'http_reqs{op:get}': ['count>0'],
    'http_reqs{op:put}': ['count>0'],
  },
};

const zipf = SEEDED > 0 ? new Zipf(SEEDED, parseFloat(__ENV.ZKV_ZIPF_S || '1.0')) : null;

export function setup() {
  requireTokens(false);
  requireSeeded('mixed.js');
}

export default function () {
  mixedIteration(TOKEN, zipf, WRITE_RATIO, WRITE_BASE);
}
