// Smoke: a few seconds, 1 VU. Every data-plane answer the contract promises, checked once per
// iteration: PUT (201, then 200 with If-Match, 412 with If-None-Match), GET (exact bytes,
// Content-Type, ETag), list, 404 (absent name, wrong resident), 401 (no/unknown token), Verhoeff
// refusal (400) and a 50 KiB biometric blob, DELETE and erasure. Any failed check fails the run.
import http from 'k6/http';
import { check } from 'k6';
import { BASE, TOKEN, NS, BIO_NS, TREND_STATS, recordUrl, params, freshIndex, requireTokens } from './lib/common.js';
import { seedUin, badUin } from './lib/uin.js';
import { validate } from './lib/verhoeff.js';
import { demographic, biometric, DEMOGRAPHIC_BYTES } from './lib/records.js';

export const options = {
  scenarios: {
    smoke: { executor: 'per-vu-iterations', vus: 1, iterations: parseInt(__ENV.ZKV_ITERATIONS || '10', 10), maxDuration: '60s' },
  },
  summaryTrendStats: TREND_STATS,
  thresholds: {
    checks: ['rate==1'],
    http_req_failed: ['rate==0'],
    'http_req_duration{op:put}': [`p(95)<${__ENV.ZKV_SMOKE_P95_MS || 1000}`],
    'http_req_duration{op:get}': [`p(95)<${__ENV.ZKV_SMOKE_P95_MS || 1000}`],
  },
};

export function setup() {
  requireTokens(false);
  const r = http.get(`${BASE}/healthz`);
  if (r.status !== 200) throw new Error(`service not healthy at ${BASE}: ${r.status}`);
}

export default function () {
  // Far from any seeded range and different on every run, so reruns start from a clean record.
  const index = freshIndex(700000000 + (Date.now() % 100000) * 1000);
  const uin = seedUin(index);
  const other = seedUin(index + 500000);
  const url = recordUrl(NS, 'demographics');
  const body = demographic(uin);
  const json = { 'Content-Type': 'application/json' };

  let r = http.put(url, body, params(TOKEN, uin, { op: 'put' }, [201], json));
  const etag = r.status === 201 ? r.json('etag') : '';
  check(r, {
    'PUT new -> 201': (x) => x.status === 201,
    'PUT answers revision 1 and an etag': (x) => x.status === 201 && x.json('revision') === 1 && etag.length > 0,
  });

  r = http.get(url, params(TOKEN, uin, { op: 'get' }, [200]));
  check(r, {
    'GET -> 200': (x) => x.status === 200,
    'GET returns the exact bytes': (x) => x.body === body && x.body.length === DEMOGRAPHIC_BYTES,
    'GET keeps Content-Type': (x) => (x.headers['Content-Type'] || '').startsWith('application/json'),
    'GET ETag matches': (x) => x.headers['Etag'] === `"${etag}"`,
  });

  r = http.put(url, body, params(TOKEN, uin, { op: 'put_if_match' }, [200], Object.assign({ 'If-Match': `"${etag}"` }, json)));
  check(r, { 'PUT If-Match -> 200, revision 2': (x) => x.status === 200 && x.json('revision') === 2 });
  r = http.put(url, body, params(TOKEN, uin, { op: 'put_if_none_match' }, [412], Object.assign({ 'If-None-Match': '*' }, json)));
  check(r, { 'PUT If-None-Match on existing -> 412': (x) => x.status === 412 });

  r = http.get(`${BASE}/v1/ns/${NS}/records`, params(TOKEN, uin, { op: 'list' }, [200]));
  check(r, {
    'list -> 200 with the record': (x) => x.status === 200 && x.json('records').some((e) => e.name === 'demographics' && e.bytes === DEMOGRAPHIC_BYTES),
  });

  r = http.get(recordUrl(NS, 'no-such-record'), params(TOKEN, uin, { op: 'get_absent' }, [404]));
  check(r, { 'GET absent name -> 404': (x) => x.status === 404 });
  r = http.get(url, params(TOKEN, other, { op: 'get_wrong_resident' }, [404]));
  check(r, { 'GET with another resident -> 404': (x) => x.status === 404 });

  r = http.get(url, { headers: { 'Resident-Id': uin }, tags: { op: 'no_token' }, responseCallback: http.expectedStatuses(401) });
  check(r, { 'no token -> 401': (x) => x.status === 401 });
  r = http.get(url, params('zkv_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', uin, { op: 'bad_token' }, [401]));
  check(r, { 'unknown token -> 401': (x) => x.status === 401 });

  // Verhoeff-checked namespace: a valid UIN stores a 50 KiB blob, a wrong check digit is refused.
  check(uin, { 'UIN carries a valid Verhoeff digit': (u) => validate(u) && !validate(badUin(index)) });
  const blob = biometric(uin);
  r = http.put(recordUrl(BIO_NS, 'finger/left-index'), blob, params(TOKEN, uin, { op: 'put_bio' }, [200, 201], { 'Content-Type': 'application/xml' }));
  check(r, { 'PUT 50 KiB biometric -> 201': (x) => x.status === 201 || x.status === 200 });
  r = http.put(recordUrl(BIO_NS, 'finger/left-index'), blob, params(TOKEN, badUin(index), { op: 'put_bad_uin' }, [400], { 'Content-Type': 'application/xml' }));
  check(r, { 'bad Verhoeff digit -> 400': (x) => x.status === 400 });
  r = http.get(recordUrl(BIO_NS, 'finger/left-index'), params(TOKEN, uin, { op: 'get_bio' }, [200]));
  check(r, { 'GET biometric returns the blob': (x) => x.status === 200 && x.body === blob });

  r = http.del(url, null, params(TOKEN, uin, { op: 'delete' }, [204]));
  check(r, { 'DELETE -> 204': (x) => x.status === 204 });
  r = http.get(url, params(TOKEN, uin, { op: 'get_deleted' }, [404]));
  check(r, { 'GET after DELETE -> 404': (x) => x.status === 404 });
  r = http.del(`${BASE}/v1/ns/${BIO_NS}/resident`, null, params(TOKEN, uin, { op: 'erase' }, [200]));
  check(r, { 'erase resident -> 200 {erased: 1}': (x) => x.status === 200 && x.json('erased') === 1 });
}
