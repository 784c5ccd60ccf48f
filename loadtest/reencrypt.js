// Bulk re-encryption while reads continue. setup() rotates the namespace's derivation master
// (POST /v1/ns/{ns}/masters/rotate, operator token), then:
//   - `bulk`: the ID-Repository's job, ZKV_REENCRYPT_VUS (default 1) VUs feeding every seeded
//     resident's UIN in batches of ZKV_BATCH (default 1000, the API maximum) to
//     POST /v1/ns/{ns}/reencrypt; every ID must be found and end up moved or already current.
//   - `reads`: ZKV_VUS (default 8; 0 = none) Zipfian GETs of the same residents, all 200 with the
//     right document, throughout (reads also move records lazily).
// teardown() checks GET /v1/keys: no record is left under the previous master.
import http from 'k6/http';
import exec from 'k6/execution';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { BASE, TOKEN, ADMIN_TOKEN, NS, SEEDED, DURATION, TREND_STATS, params, requireSeeded, requireTokens } from './lib/common.js';
import { seedUin } from './lib/uin.js';
import { Zipf } from './lib/zipf.js';
import { mixedIteration } from './lib/traffic.js';

const BATCH = parseInt(__ENV.ZKV_BATCH || '1000', 10);
const READ_VUS = parseInt(__ENV.ZKV_VUS || '8', 10);
const JOB_VUS = parseInt(__ENV.ZKV_REENCRYPT_VUS || '1', 10);
const BATCHES = Math.max(1, Math.ceil(SEEDED / BATCH));
const MIN_RATE = __ENV.ZKV_REENCRYPT_MIN_RATE || '0';

const moved = new Counter('reencrypt_moved');
const rekeyed = new Counter('reencrypt_rekeyed');
const current = new Counter('reencrypt_already_current');
const notFound = new Counter('reencrypt_not_found');
const records = new Counter('reencrypt_records');
const batchRate = new Trend('reencrypt_batch_records_per_s');
const leftBehind = new Counter('reencrypt_left_on_old_master');

const scenarios = {
  bulk: { executor: 'shared-iterations', vus: JOB_VUS, iterations: BATCHES, maxDuration: __ENV.ZKV_REENCRYPT_MAX || '10m', exec: 'bulk' },
};
if (READ_VUS > 0) {
  scenarios.reads = { executor: 'constant-vus', vus: READ_VUS, duration: DURATION, exec: 'reads' };
}

export const options = {
  scenarios,
  summaryTrendStats: TREND_STATS,
  setupTimeout: '60s',
  teardownTimeout: '60s',
  thresholds: {
    http_req_failed: ['rate==0'],
    checks: ['rate==1'],
    'http_req_duration{op:get}': [`p(99)<${__ENV.ZKV_P99_MS || 500}`],
    'http_reqs{op:get}': [READ_VUS > 0 ? 'count>0' : 'count>=0'],
    'http_req_duration{op:reencrypt}': ['max<30000'],
    reencrypt_not_found: ['count==0'],
    reencrypt_records: [`count==${SEEDED}`],
    reencrypt_left_on_old_master: ['count==0'],
    reencrypt_batch_records_per_s: [`med>=${MIN_RATE}`],
  },
};

const zipf = SEEDED > 0 ? new Zipf(SEEDED, parseFloat(__ENV.ZKV_ZIPF_S || '1.0')) : null;

function keys() {
  const r = http.get(`${BASE}/v1/keys`, params(ADMIN_TOKEN, null, { op: 'keys' }, [200]));
  return r.status === 200 ? r.json('namespaces').find((n) => n.namespace === NS) : null;
}

export function setup() {
  requireTokens(true);
  requireSeeded('reencrypt.js');
  const r = http.post(`${BASE}/v1/ns/${NS}/masters/rotate`, null, params(ADMIN_TOKEN, null, { op: 'rotate_master' }, [200]));
  if (!check(r, { 'master rotated': (x) => x.status === 200 })) {
    throw new Error(`POST /v1/ns/${NS}/masters/rotate answered ${r.status}: ${r.body}`);
  }
  return { previous: r.json('previous'), active: r.json('active') };
}

export function bulk() {
  const k = exec.scenario.iterationInTest;
  const lo = k * BATCH;
  const hi = Math.min(SEEDED, lo + BATCH);
  if (lo >= hi) return;
  const ids = [];
  for (let i = lo; i < hi; i++) ids.push(seedUin(i));
  const r = http.post(`${BASE}/v1/ns/${NS}/reencrypt`, JSON.stringify({ resident_ids: ids }), params(TOKEN, null, { op: 'reencrypt' }, [200], { 'Content-Type': 'application/json' }));
  const ok = check(r, {
    'reencrypt -> 200': (x) => x.status === 200,
    'every ID accounted for': (x) => {
      if (x.status !== 200) return false;
      const b = x.json();
      return b.moved + b.rekeyed + b.already_current + b.not_found === ids.length && b.not_found === 0;
    },
  });
  if (ok) {
    const b = r.json();
    moved.add(b.moved);
    rekeyed.add(b.rekeyed);
    current.add(b.already_current);
    notFound.add(b.not_found);
    records.add(ids.length);
    batchRate.add(ids.length / (r.timings.duration / 1000));
  }
}

export function reads() {
  mixedIteration(TOKEN, zipf, 0, 0);
}

export function teardown(data) {
  const ns = keys();
  const old = ns && ns.masters.find((m) => m.version === data.previous);
  check(ns, { 'key overview readable': (n) => n !== null && n !== undefined });
  if (old) leftBehind.add(old.records);
}
