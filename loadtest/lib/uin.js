// Resident UINs derived from an index, exactly as `zkvault seed` does (src/vault/seed.rs
// `seed_uin`): a 9-digit payload 100000000 + (i * 7919) mod 900000000, then its Verhoeff digit.
// 7919 is prime and coprime to 900,000,000, so distinct indices give distinct UINs.
import { checkDigit } from './verhoeff.js';

export const MAX_RESIDENTS = 900000000;

export function seedUin(index) {
  const i = index % MAX_RESIDENTS;
  // i * 7919 < 2^53: exact in a double.
  const payload = String(100000000 + ((i * 7919) % MAX_RESIDENTS));
  return payload + checkDigit(payload);
}

/** A UIN whose last digit is wrong: the biometrics namespace must refuse it (400). */
export function badUin(index) {
  const good = seedUin(index);
  const last = Number(good[good.length - 1]);
  return good.slice(0, -1) + String((last + 1) % 10);
}
