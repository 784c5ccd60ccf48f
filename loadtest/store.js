// ID-Repository writes: new residents' ~2 KiB JSON demographic records (namespace ZKV_NS) and,
// for a fraction ZKV_BIO_RATIO (default 0.1), ~50 KiB CBEFF biometric blobs (namespace ZKV_BIO_NS,
// which checks the UIN's Verhoeff digit). Closed model: ZKV_VUS writers, no think time.
import http from 'k6/http';
import { check } from 'k6';
import { TOKEN, NS, BIO_NS, VUS, DURATION, TREND_STATS, recordUrl, params, freshIndex, requireTokens } from './lib/common.js';
import { seedUin } from './lib/uin.js';
import { demographic, biometric } from './lib/records.js';

const BIO_RATIO = parseFloat(__ENV.ZKV_BIO_RATIO || '0.1');
const P99_MS = __ENV.ZKV_P99_MS || '500';
// Above any seeded index; a rerun against the same database replaces (200) instead of creating.
const WRITE_BASE = parseInt(__ENV.ZKV_WRITE_BASE || '300000000', 10);

export const options = {
  scenarios: { store: { executor: 'constant-vus', vus: VUS, duration: DURATION } },
  summaryTrendStats: TREND_STATS,
  thresholds: {
    http_req_failed: ['rate==0'],
    checks: ['rate==1'],
    'http_req_duration{op:put}': [`p(99)<${P99_MS}`],
    'http_req_duration{op:put_bio}': [`p(99)<${__ENV.ZKV_BIO_P99_MS || 2000}`],
    'http_reqs{op:put}': ['count>0'],
    'http_reqs{op:put_bio}': [BIO_RATIO > 0 ? 'count>0' : 'count>=0'],
  },
};

export function setup() {
  requireTokens(false);
}

export default function () {
  const uin = seedUin(freshIndex(WRITE_BASE));
  if (Math.random() < BIO_RATIO) {
    const r = http.put(recordUrl(BIO_NS, 'finger/right-index'), biometric(uin), params(TOKEN, uin, { op: 'put_bio' }, [200, 201], { 'Content-Type': 'application/xml' }));
    check(r, { 'biometric stored': (x) => x.status === 201 || x.status === 200 });
  } else {
    const r = http.put(recordUrl(NS, 'demographics'), demographic(uin), params(TOKEN, uin, { op: 'put' }, [200, 201], { 'Content-Type': 'application/json' }));
    check(r, { 'demographics stored': (x) => x.status === 201 || x.status === 200 });
  }
}
