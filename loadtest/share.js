// Sharing a record with a partner (DESIGN.md "Partner and device trust (v1)"): what an
// ID-Repository or credential service does once per credential it issues to IDA. With
// ZKV_SHARE_OP=get the same records are read instead, the baseline a share builds on (a share
// opens the record as a GET does, then validates the partner's path, encrypts a JWE to its key
// and writes a receipt). Closed model: ZKV_VUS callers, no think time. loadtest/share.sh runs it.
//
//   ZKV_TOKEN      a credential with the roles writer, reader and sharer in ZKV_NS
//   ZKV_SHARE_OP   get (default), share-ec (a P-256 partner) or share-rsa (RSA 3072)
//   ZKV_PARTNER_EC, ZKV_PARTNER_RSA   the partners, DOMAIN/id
//   ZKV_RESIDENTS  records stored in setup (default 200), one per resident
//   ZKV_P99_MS     latency threshold (default 500)
import http from 'k6/http';
import { check, fail } from 'k6';
import { BASE, TOKEN, NS, RECORD, VUS, DURATION, TREND_STATS, params, recordUrl } from './lib/common.js';
import { seedUin } from './lib/uin.js';

export const OP = __ENV.ZKV_SHARE_OP || 'get';
const RESIDENTS = parseInt(__ENV.ZKV_RESIDENTS || '200', 10);
const P99_MS = __ENV.ZKV_P99_MS || '500';
const PARTNER = { 'share-ec': __ENV.ZKV_PARTNER_EC, 'share-rsa': __ENV.ZKV_PARTNER_RSA }[OP];
// Far above `zkvault seed`'s indices, so a seeded deployment's records are not overwritten.
const FIRST = 700000000;

export const options = {
  scenarios: { [OP]: { executor: 'constant-vus', vus: VUS, duration: DURATION } },
  summaryTrendStats: TREND_STATS,
  thresholds: {
    http_req_failed: ['rate==0'],
    checks: ['rate==1'],
    [`http_req_duration{op:${OP}}`]: [`p(99)<${P99_MS}`],
    [`http_reqs{op:${OP}}`]: ['count>0'],
  },
};

/** A ~1 KiB demographic record. */
function body(i) {
  return JSON.stringify({ name: `Resident ${i}`, dob: '1984-03-12', address: 'x'.repeat(900), i: i });
}

// Untimed: every resident's record stored (a PUT replaces it, so reruns agree).
export function setup() {
  if (!TOKEN) fail('set ZKV_TOKEN (writer, reader and sharer)');
  if (OP !== 'get' && !PARTNER) fail(`set the partner for ${OP}`);
  for (let i = 0; i < RESIDENTS; i++) {
    const r = http.put(recordUrl(NS, RECORD), body(i),
      params(TOKEN, seedUin(FIRST + i), { op: 'setup' }, [200, 201], { 'Content-Type': 'application/json' }));
    if (r.status !== 200 && r.status !== 201) fail(`store: ${r.status} ${r.body}`);
  }
}

export default function () {
  const i = Math.floor(Math.random() * RESIDENTS);
  const uin = seedUin(FIRST + i);
  if (OP === 'get') {
    const r = http.get(recordUrl(NS, RECORD), params(TOKEN, uin, { op: OP }));
    check(r, { 'record read': (x) => x.status === 200 && x.body.length > 900 });
    return;
  }
  const r = http.post(`${recordUrl(NS, RECORD)}/share`, JSON.stringify({ partner: PARTNER }),
    params(TOKEN, uin, { op: OP }, [200], { 'Content-Type': 'application/json' }));
  check(r, { 'compact JWE': (x) => x.status === 200 && String(x.body).split('.').length === 5 });
}
