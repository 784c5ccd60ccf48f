// One iteration of steady mixed traffic (reads Zipfian over seeded residents, writes ~2 KiB
// demographic PUTs: half replacing a seeded resident's record, half enrolling a new resident).
// Shared by mixed.js, reencrypt.js and rotation_under_load.js.
import http from 'k6/http';
import { check } from 'k6';
import { NS, RECORD, SEEDED, recordUrl, params, freshIndex } from './common.js';
import { seedUin } from './uin.js';
import { demographic } from './records.js';

export function mixedIteration(token, zipf, writeRatio, writeBase, tags) {
  const t = tags || {};
  if (Math.random() < writeRatio) {
    const update = Math.random() < 0.5;
    const uin = seedUin(update ? Math.floor(Math.random() * SEEDED) : freshIndex(writeBase));
    const r = http.put(recordUrl(NS, RECORD), demographic(uin), params(token, uin, Object.assign({ op: 'put' }, t), [200, 201], { 'Content-Type': 'application/json' }));
    check(r, { 'write accepted': (x) => x.status === 200 || x.status === 201 }, t);
    return r;
  }
  const uin = seedUin(zipf.sample() - 1);
  const r = http.get(recordUrl(NS, RECORD), params(token, uin, Object.assign({ op: 'get' }, t), [200]));
  check(r, { 'seeded record read back': (x) => x.status === 200 && x.body.indexOf(uin) > 0 }, t);
  return r;
}
