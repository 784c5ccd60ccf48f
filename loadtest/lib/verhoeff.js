// The Verhoeff check digit (dihedral group D5), as used by MOSIP's UIN and Aadhaar.
// Same scheme as core/src/verhoeff.rs; verhoeff.test.mjs checks it against tests/vectors/verhoeff.json.

const D = [
  [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
  [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
  [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
  [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
  [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
  [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
  [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
  [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
  [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
  [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];
// Row 1 of the permutation table; the others are generated, p(i+1)[j] = p(i)[p(1)[j]], not
// typed: a typed copy once had rows 4 and 5 wrong and agreed only with itself.
const P1 = [1, 5, 7, 6, 2, 8, 3, 0, 9, 4];
const P = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]];
for (let i = 1; i < 8; i++) P.push(P1.map((d) => P[i - 1][d]));
const INV = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9];

function digits(s) {
  if (!/^[0-9]+$/.test(s)) return null;
  return s.split('').map(Number);
}

/** The check digit to append to the all-digit string `payload`. */
export function checkDigit(payload) {
  const ds = digits(payload);
  if (ds === null) throw new Error('verhoeff: payload must be digits');
  let c = 0;
  for (let i = 0; i < ds.length; i++) {
    c = D[c][P[(i + 1) % 8][ds[ds.length - 1 - i]]];
  }
  return INV[c];
}

/** True when `s` is all digits (at least two) and its last digit checks the rest. */
export function validate(s) {
  const ds = digits(s);
  if (ds === null || ds.length < 2) return false;
  let c = 0;
  for (let i = 0; i < ds.length; i++) {
    c = D[c][P[i % 8][ds[ds.length - 1 - i]]];
  }
  return c === 0;
}
