// Realistic record bodies: ~2 KiB JSON demographic documents shaped like MOSIP's ID schema (the
// same shape `zkvault seed` writes), and ~50 KiB CBEFF-style biometric blobs.
import { randomBytes } from 'k6/crypto';
import encoding from 'k6/encoding';

export const DEMOGRAPHIC_BYTES = 2048;
export const BIOMETRIC_BYTES = 50 * 1024;

const FIRST = ['Asha', 'Kwame', 'Maria', 'Tendai', 'Juan', 'Amina', 'Ravi', 'Fatima', 'Jose', 'Nia', 'Omar', 'Lina', 'Kofi', 'Sara', 'Ibrahim', 'Mei'];
const LAST = ['Mensah', 'Santos', 'Okafor', 'Reyes', 'Diallo', 'Kumar', 'Cruz', 'Banda', 'Haddad', 'Mwangi', 'Garcia', 'Traore', 'Nair', 'Tembo', 'Lopez', 'Osei'];
const REGION = ['Rabat Sale Kenitra', 'Tanger Tetouan', 'Fes Meknes', 'Oriental', 'Souss Massa', 'Draa Tafilalet', 'Beni Mellal', 'Casablanca Settat'];

function pick(list) {
  return list[Math.floor(Math.random() * list.length)];
}
function num(n) {
  return Math.floor(Math.random() * n);
}
function pad(v, w) {
  return String(v).padStart(w, '0');
}

/** A demographic JSON document of exactly DEMOGRAPHIC_BYTES bytes (ASCII), containing `uin`. */
export function demographic(uin) {
  const first = pick(FIRST);
  const last = pick(LAST);
  const region = pick(REGION);
  const name = `${first} ${last}`;
  const gender = pick(['Male', 'Female', 'Others']);
  const doc = {
    IDSchemaVersion: 0.2,
    UIN: uin,
    fullName: [{ language: 'eng', value: name }, { language: 'fra', value: name }, { language: 'ara', value: name }],
    dateOfBirth: `${1940 + num(80)}/${pad(1 + num(12), 2)}/${pad(1 + num(28), 2)}`,
    gender: [{ language: 'eng', value: gender }, { language: 'fra', value: gender }],
    addressLine1: [{ language: 'eng', value: `${1 + num(400)} Avenue Hassan II` }],
    addressLine2: [{ language: 'eng', value: `Building ${1 + num(50)}, floor ${num(12)}` }],
    addressLine3: [{ language: 'eng', value: 'Near the central market' }],
    region: [{ language: 'eng', value: region }],
    province: [{ language: 'eng', value: region }],
    city: [{ language: 'eng', value: 'Kenitra' }],
    zone: [{ language: 'eng', value: `Zone ${num(40)}` }],
    postalCode: pad(10000 + num(90000), 5),
    phone: `+212 6${pad(num(100000000), 8)}`,
    email: `${first.toLowerCase()}.${last.toLowerCase()}${num(1000)}@example.org`,
    referenceIdentityNumber: pad(num(1e12), 12),
    residenceStatus: [{ language: 'eng', value: 'Non-Foreigner' }],
    proofOfAddress: { format: 'pdf', type: 'DOC001', value: 'proofOfAddress', refNumber: `POA-${pad(num(1e10), 10)}` },
    proofOfIdentity: { format: 'pdf', type: 'DOC002', value: 'proofOfIdentity', refNumber: `POI-${pad(num(1e10), 10)}` },
    individualBiometrics: { format: 'cbeff', version: 1.0, value: 'individualBiometrics_bio_CBEFF' },
    registrationId: `1000${pad(num(1e6), 6)}${20260101000000 + num(1e6)}`,
    updatedBy: 'id-repository-loadtest',
    remarks: '',
  };
  const json = JSON.stringify(doc);
  const fill = DEMOGRAPHIC_BYTES - json.length;
  return fill > 0 ? json.slice(0, -2) + '.'.repeat(fill) + '"}' : json;
}

let bdb = null;

/** A CBEFF-style XML biometric record of about BIOMETRIC_BYTES bytes (a random base64 BDB). */
export function biometric(uin) {
  if (bdb === null) {
    // Once per VU: base64 of random bytes, sized so the whole document is ~50 KiB.
    bdb = encoding.b64encode(randomBytes(Math.floor(((BIOMETRIC_BYTES - 600) * 3) / 4)), 'std');
  }
  const finger = pick(['Left IndexFinger', 'Right IndexFinger', 'Left Thumb', 'Right Thumb', 'Left RingFinger']);
  return (
    '<?xml version="1.0" encoding="UTF-8"?>' +
    '<BIR xmlns="http://standards.iso.org/iso-iec/19785/-3/ed-2/">' +
    '<Version><Major>1</Major><Minor>1</Minor></Version><CBEFFVersion><Major>1</Major><Minor>1</Minor></CBEFFVersion>' +
    '<BIRInfo><Integrity>false</Integrity></BIRInfo>' +
    `<BDBInfo><Format><Organization>Mosip</Organization><Type>7</Type></Format><CreationDate>${new Date().toISOString()}</CreationDate>` +
    `<Type>Finger</Type><Subtype>${finger}</Subtype><Level>Raw</Level><Purpose>Enroll</Purpose><Quality><Score>${60 + num(40)}</Score></Quality></BDBInfo>` +
    `<others><entry key="RID">${uin}</entry></others>` +
    `<BDB>${bdb}</BDB></BIR>`
  );
}
