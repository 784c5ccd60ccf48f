// Configuration (environment only) and request helpers shared by the scenarios.
//
//   ZKV_URL          base URL (default http://127.0.0.1:8080); must be loopback unless ZKV_ALLOW_REMOTE=1
//   ZKV_TOKEN        writer/reader/reencrypt token (the embedded default's writer.token)
//   ZKV_ADMIN_TOKEN  admin/operator token (admin.token), for key-plane and credential calls
//   ZKV_NS           namespace of demographic records (default resident-portal)
//   ZKV_BIO_NS       namespace of biometric blobs, Verhoeff-checked (default biometrics)
//   ZKV_SEEDED       how many residents `zkvault seed` created (indices 0..N-1)
//   ZKV_RECORD       record name the seed wrote (default demographics)
//   ZKV_VUS, ZKV_DURATION   load shape (defaults per scenario)
import http from 'k6/http';
import exec from 'k6/execution';

export const BASE = (__ENV.ZKV_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const TOKEN = __ENV.ZKV_TOKEN || '';
export const ADMIN_TOKEN = __ENV.ZKV_ADMIN_TOKEN || '';
export const NS = __ENV.ZKV_NS || 'resident-portal';
export const BIO_NS = __ENV.ZKV_BIO_NS || 'biometrics';
export const SEEDED = parseInt(__ENV.ZKV_SEEDED || '0', 10);
export const RECORD = __ENV.ZKV_RECORD || 'demographics';
export const VUS = parseInt(__ENV.ZKV_VUS || '16', 10);
export const DURATION = __ENV.ZKV_DURATION || '30s';

const host = BASE.replace(/^https?:\/\//, '').replace(/[:/].*$/, '');
if (!['127.0.0.1', 'localhost', '[::1]', ''].includes(host) && !BASE.startsWith('http://[::1]') && __ENV.ZKV_ALLOW_REMOTE !== '1') {
  throw new Error(`ZKV_URL ${BASE} is not loopback; set ZKV_ALLOW_REMOTE=1 to load a remote service on purpose`);
}

/** Percentiles every summary shows (k6 omits p99 by default). */
export const TREND_STATS = ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'];

export function recordUrl(ns, name) {
  return `${BASE}/v1/ns/${ns}/records/${name}`;
}

export function auth(token, uin, extra) {
  const h = { Authorization: `Bearer ${token}` };
  if (uin !== undefined && uin !== null) h['Resident-Id'] = uin;
  return Object.assign(h, extra || {});
}

/** Request params: tags plus the statuses that count as success for http_req_failed. */
export function params(token, uin, tags, statuses, extraHeaders) {
  return {
    headers: auth(token, uin, extraHeaders),
    tags: tags,
    responseCallback: http.expectedStatuses(...(statuses || [200])),
  };
}

/** Fresh write indices: disjoint per VU and iteration, far above the seeded range. */
export function freshIndex(base) {
  return base + (exec.vu.idInTest - 1) * 1000000 + exec.vu.iterationInScenario;
}

export function requireSeeded(scenario) {
  if (!(SEEDED > 0)) {
    throw new Error(`${scenario} reads seeded residents: run \`zkvault seed --count N\` and set ZKV_SEEDED=N`);
  }
}

export function requireTokens(admin) {
  if (!TOKEN) throw new Error('set ZKV_TOKEN (the writer token)');
  if (admin && !ADMIN_TOKEN) throw new Error('set ZKV_ADMIN_TOKEN (the admin/operator token)');
}
