// Checks verhoeff.js against the independent vectors: `node loadtest/lib/verhoeff.test.mjs [file]`
// (default tests/vectors/verhoeff.json). Plain node, no dependencies; core/tests/verhoeff_vectors.rs
// runs it too. Exits non-zero on any mismatch.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { checkDigit, validate } from './verhoeff.js';

const file = process.argv[2] ?? fileURLToPath(new URL('../../tests/vectors/verhoeff.json', import.meta.url));
const { valid, invalid } = JSON.parse(readFileSync(file, 'utf8'));
if (!valid?.length || !invalid?.length) throw new Error(`${file}: empty section`);

const refused = valid.filter((s) => !validate(s));
const wrongDigit = valid.filter((s) => String(checkDigit(s.slice(0, -1))) !== s.slice(-1));
const accepted = invalid.filter((s) => validate(s));
// The textbook example, so a wrong vectors file cannot pass alone.
const textbook = checkDigit('236') === 3;

console.log(`${file}: valid refused ${refused.length}/${valid.length}, wrong check digit ` +
  `${wrongDigit.length}/${valid.length}, invalid accepted ${accepted.length}/${invalid.length}, 236 -> ${checkDigit('236')}`);
if (refused.length || wrongDigit.length || accepted.length || !textbook) {
  console.error('FAIL; first:', refused[0], wrongDigit[0], accepted[0]);
  process.exit(1);
}
