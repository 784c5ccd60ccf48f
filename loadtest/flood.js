// Refusal floods beside valid traffic (issue 10): what a flood of refused requests costs the
// database and the latency of valid reads.
//
// Phase 1 (0 to ZKV_QUIET): valid reads alone, at a fixed rate. Phase 2 (ZKV_QUIET to the end):
// the same reads while 8 VUs flood the service with requests it must refuse and audit:
//   - an authenticated reader asking for a 60,000-character namespace (400 before anything is
//     audited verbatim; counted, aggregated refusal entries);
//   - made-up HTTP methods on known paths (405; bounded metric labels);
//   - no token, and tokens shaped like credentials that do not exist (401, or 503 once the
//     bounded Argon2 queue is full: never a queue without bound).
// Valid reads are tagged `phase:quiet` and `phase:flood`, so the report shows both latencies;
// run.sh records the database's size before and after the run (the refusal audit's cost).
// Needs seeded residents (ZKV_SEEDED) and the writer token (the embedded default's writer.token
// reads and writes every namespace).
import http from 'k6/http';
import { check } from 'k6';
import { BASE, TOKEN, NS, RECORD, DURATION, SEEDED, TREND_STATS, recordUrl, params, requireSeeded, requireTokens } from './lib/common.js';
import { seedUin } from './lib/uin.js';

const QUIET = __ENV.ZKV_QUIET || '10s';
const READ_RATE = parseInt(__ENV.ZKV_READ_RATE || '100', 10);
const P99_MS = __ENV.ZKV_P99_MS || '1000';
const HUGE_NS = 'N'.repeat(60000);

export const options = {
  scenarios: {
    quiet: {
      executor: 'constant-arrival-rate', rate: READ_RATE, timeUnit: '1s', duration: QUIET,
      preAllocatedVUs: 8, exec: 'read', tags: { phase: 'quiet' },
    },
    reads_under_flood: {
      executor: 'constant-arrival-rate', rate: READ_RATE, timeUnit: '1s', duration: DURATION, startTime: QUIET,
      preAllocatedVUs: 8, exec: 'read', tags: { phase: 'flood' },
    },
    // Refusals that cost the server little: as many as 6 VUs can send.
    flood: { executor: 'constant-vus', vus: 6, duration: DURATION, startTime: QUIET, exec: 'flood' },
    // Tokens shaped like credentials: each costs an Argon2id run (or a 503 when the bounded queue is full).
    flood_tokens: { executor: 'constant-vus', vus: 2, duration: DURATION, startTime: QUIET, exec: 'floodTokens' },
  },
  summaryTrendStats: TREND_STATS,
  thresholds: {
    // Every valid read answered, in both phases.
    'http_req_failed{op:get}': ['rate==0'],
    'checks{op:get}': ['rate==1'],
    'http_req_duration{phase:flood,op:get}': [`p(99)<${P99_MS}`],
    'http_req_duration{phase:quiet,op:get}': ['p(99)>=0'],
    'http_reqs{phase:quiet,op:get}': ['count>0'],
    'http_reqs{phase:flood,op:get}': ['count>0'],
    'http_reqs{op:flood}': ['count>0'],
    'http_req_duration{op:flood}': ['p(99)>=0'],
    // Every flood request refused with an expected status: nothing accepted, nothing 5xx but 503.
    'checks{op:flood}': ['rate==1'],
  },
};

export function setup() {
  requireTokens(false);
  requireSeeded('flood.js');
}

export function read() {
  const uin = seedUin(Math.floor(Math.random() * SEEDED));
  const r = http.get(recordUrl(NS, RECORD), params(TOKEN, uin, { op: 'get' }, [200]));
  check(r, { 'valid read answered': (x) => x.status === 200 && x.body.indexOf(uin) > 0 }, { op: 'get' });
}

const REFUSED = [400, 401, 403, 404, 405, 503];

function refused(r) {
  check(r, { 'flood request refused': (x) => REFUSED.includes(x.status) }, { op: 'flood' });
}

export function flood() {
  const n = Math.floor(Math.random() * 1e9);
  const attempts = [
    () => http.get(`${BASE}/v1/ns/${HUGE_NS}/records`, params(TOKEN, '4930098370', { op: 'flood' }, REFUSED)),
    () => http.request(`X${n}`, recordUrl(NS, RECORD), null, params(TOKEN, '4930098370', { op: 'flood' }, REFUSED)),
    () => http.get(recordUrl(NS, RECORD), { headers: { 'Resident-Id': '4930098370' }, tags: { op: 'flood' }, responseCallback: http.expectedStatuses(...REFUSED) }),
  ];
  refused(attempts[n % attempts.length]());
}

export function floodTokens() {
  const n = Math.floor(Math.random() * 0xffffffff);
  const shaped = `zkv_${n.toString(16).padStart(16, '0')}_${'A'.repeat(43)}`;
  refused(http.get(recordUrl(NS, RECORD), params(shaped, '4930098370', { op: 'flood' }, REFUSED)));
}
