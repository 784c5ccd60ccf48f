// Key lifecycle under steady load. `load` runs mixed 90/10 traffic (ZKV_VUS, default 8) for
// ZKV_DURATION (default 40s) with a valid credential while, mid-run:
//   - at ZKV_KEK_AT (10s):    POST /v1/keys/kek/rotate            (operator)
//   - at ZKV_DM_AT (20s):     POST /v1/ns/{ns}/masters/rotate      (operator), then a write must
//                             land under the new master
//   - at ZKV_REVOKE_AT (30s): DELETE /v1/credentials/{id}          (admin) of a second credential
//                             that has been reading since the start.
// Fails unless: no request with a valid credential fails, the revoked credential is refused
// within 1 s of the revocation being acknowledged (and on every request after that), and each
// rotation answers 200.
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { BASE, TOKEN, ADMIN_TOKEN, NS, RECORD, SEEDED, TREND_STATS, recordUrl, params, requireSeeded, requireTokens } from './lib/common.js';
import { seedUin } from './lib/uin.js';
import { Zipf } from './lib/zipf.js';
import { demographic } from './lib/records.js';
import { mixedIteration } from './lib/traffic.js';

const DURATION_S = parseInt((__ENV.ZKV_DURATION || '40s').replace(/s$/, ''), 10);
const KEK_AT = parseInt(__ENV.ZKV_KEK_AT || '10', 10);
const DM_AT = parseInt(__ENV.ZKV_DM_AT || '20', 10);
const REVOKE_AT = parseInt(__ENV.ZKV_REVOKE_AT || '30', 10);
const WATCH_S = 5; // how long the revoked credential keeps knocking

const kekMs = new Trend('kek_rotation_ms', true);
const dmMs = new Trend('dm_rotation_ms', true);
const refusedMs = new Trend('revocation_refused_ms', true);
const late = new Counter('revoked_accepted_late');
const neverRefused = new Counter('revoked_never_refused');

export const options = {
  scenarios: {
    load: { executor: 'constant-vus', vus: parseInt(__ENV.ZKV_VUS || '8', 10), duration: `${DURATION_S}s`, exec: 'load' },
    kek: { executor: 'per-vu-iterations', vus: 1, iterations: 1, startTime: `${KEK_AT}s`, exec: 'rotateKek', maxDuration: '60s' },
    dm: { executor: 'per-vu-iterations', vus: 1, iterations: 1, startTime: `${DM_AT}s`, exec: 'rotateDm', maxDuration: '60s' },
    revoke: { executor: 'per-vu-iterations', vus: 1, iterations: 1, exec: 'victim', maxDuration: `${Math.max(DURATION_S, REVOKE_AT + WATCH_S) + 30}s` },
  },
  summaryTrendStats: TREND_STATS,
  setupTimeout: '60s',
  thresholds: {
    'http_req_failed{cred:valid}': ['rate==0'],
    'checks{cred:valid}': ['rate==1'],
    'checks{op:rotation}': ['rate==1'],
    'http_reqs{cred:valid}': ['count>0'],
    'http_req_duration{cred:valid}': [`p(99)<${__ENV.ZKV_P99_MS || 1000}`],
    revocation_refused_ms: ['max<1000'],
    revoked_accepted_late: ['count==0'],
    revoked_never_refused: ['count==0'],
    kek_rotation_ms: [`max<${__ENV.ZKV_KEK_ROTATE_MAX_MS || 1000}`],
    dm_rotation_ms: [`max<${__ENV.ZKV_DM_ROTATE_MAX_MS || 1000}`],
  },
};

const zipf = SEEDED > 0 ? new Zipf(SEEDED, parseFloat(__ENV.ZKV_ZIPF_S || '1.0')) : null;
const VALID = { cred: 'valid' };

export function setup() {
  requireTokens(true);
  requireSeeded('rotation_under_load.js');
  // The credential that will be revoked mid-run: reader on the namespace only.
  const r = http.post(
    `${BASE}/v1/credentials`,
    JSON.stringify({ label: 'loadtest victim', roles: ['reader'], namespaces: [NS] }),
    params(ADMIN_TOKEN, null, { op: 'credential_create', cred: 'valid' }, [201], { 'Content-Type': 'application/json' }),
  );
  if (r.status !== 201) throw new Error(`POST /v1/credentials answered ${r.status}: ${r.body}`);
  return { victimId: r.json('id'), victimToken: r.json('token') };
}

export function load() {
  mixedIteration(TOKEN, zipf, 0.1, 600000000, VALID);
}

export function rotateKek() {
  const r = http.post(`${BASE}/v1/keys/kek/rotate`, null, params(ADMIN_TOKEN, null, { op: 'rotation', cred: 'valid' }, [200]));
  check(r, { 'KEK rotated': (x) => x.status === 200 && x.json('active') > (x.json('previous') || 0) }, { op: 'rotation' });
  kekMs.add(r.timings.duration);
}

export function rotateDm() {
  const r = http.post(`${BASE}/v1/ns/${NS}/masters/rotate`, null, params(ADMIN_TOKEN, null, { op: 'rotation', cred: 'valid' }, [200]));
  const ok = check(r, { 'master rotated': (x) => x.status === 200 && x.json('active') > (x.json('previous') || 0) }, { op: 'rotation' });
  dmMs.add(r.timings.duration);
  if (!ok) return;
  const active = r.json('active');
  const uin = seedUin(650000000 + (Date.now() % 1000000));
  const w = http.put(recordUrl(NS, RECORD), demographic(uin), params(TOKEN, uin, { op: 'put', cred: 'valid' }, [200, 201], { 'Content-Type': 'application/json' }));
  check(w, { 'new write lands under the new master': (x) => (x.status === 201 || x.status === 200) && x.json('master_version') === active }, { op: 'rotation' });
}

export function victim(data) {
  const started = Date.now();
  const get = (tags, statuses) => {
    const uin = seedUin(zipf.sample() - 1);
    return http.get(recordUrl(NS, RECORD), params(data.victimToken, uin, Object.assign({ op: 'get' }, tags), statuses));
  };
  // Before revocation: a valid credential like any other.
  while (Date.now() - started < REVOKE_AT * 1000) {
    const r = get({ cred: 'valid' }, [200]);
    check(r, { 'victim reads while valid': (x) => x.status === 200 }, VALID);
    sleep(0.02);
  }
  const d = http.del(`${BASE}/v1/credentials/${data.victimId}`, null, params(ADMIN_TOKEN, null, { op: 'revoke', cred: 'valid' }, [200, 204]));
  check(d, { 'credential revoked': (x) => x.status === 200 || x.status === 204 }, VALID);
  const acked = Date.now();
  let refusedAt = null;
  while (Date.now() - acked < WATCH_S * 1000) {
    const r = get({ cred: 'revoked' }, [200, 401]);
    const now = Date.now();
    if (r.status === 401 && refusedAt === null) {
      refusedAt = now;
      refusedMs.add(now - acked);
    }
    if (r.status === 200 && now - acked > 1000) late.add(1);
    sleep(0.01);
  }
  if (refusedAt === null) neverRefused.add(1);
}
