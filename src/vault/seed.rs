//! Bulk seeding for load tests: `count` residents with deterministic, Verhoeff-valid UINs, each
//! with one ~2 KiB JSON record sealed through the normal crypto path ([`zkvault_core::seal`]:
//! blind index, resident key, fresh DEK and nonces per record), inserted in batches.
//!
//! The UIN of resident `i` is a pure function of `i` ([`seed_uin`]), so a load generator can
//! recompute the IDs it needs from an index without any file; `loadtest/lib/uin.js` is the same
//! function in JavaScript. Sealing runs on worker threads while one thread writes batches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use zkvault_core::{seal, verhoeff, RecordContext, ResidentId};

use super::records::sealed_row;
use super::{record_name::valid_record_name, Actor, Vault, VaultError};
use crate::storage::RecordRow;

/// Largest index [`seed_uin`] maps to a distinct UIN.
pub const SEED_MAX_RESIDENTS: u64 = 900_000_000;
/// Multiplier scattering consecutive indices over the 9-digit payload space (prime, coprime to
/// 900,000,000, so `i -> payload` is a bijection on `0..SEED_MAX_RESIDENTS`).
const SCATTER: u64 = 7919;
/// Target size of [`seed_body`]'s JSON.
pub const SEED_BODY_BYTES: usize = 2048;

/// The 10-digit UIN of seeded resident `index`: a 9-digit payload not starting with 0 followed by
/// its Verhoeff check digit. `index` must be below [`SEED_MAX_RESIDENTS`].
pub fn seed_uin(index: u64) -> String {
    let payload = 100_000_000 + (index % SEED_MAX_RESIDENTS) * SCATTER % SEED_MAX_RESIDENTS;
    let payload = payload.to_string();
    let check = verhoeff::check_digit(&payload).expect("payload is all digits");
    format!("{payload}{check}")
}

/// A deterministic demographic record of exactly [`SEED_BODY_BYTES`] bytes of JSON, shaped like
/// a MOSIP ID-schema document (names, date of birth, address, contact, document references).
pub fn seed_body(index: u64, uin: &str) -> Vec<u8> {
    const FIRST: [&str; 16] = [
        "Asha", "Kwame", "Maria", "Tendai", "Juan", "Amina", "Ravi", "Fatima", "Jose", "Nia",
        "Omar", "Lina", "Kofi", "Sara", "Ibrahim", "Mei",
    ];
    const LAST: [&str; 16] = [
        "Mensah", "Santos", "Okafor", "Reyes", "Diallo", "Kumar", "Cruz", "Banda", "Haddad",
        "Mwangi", "Garcia", "Traore", "Nair", "Tembo", "Lopez", "Osei",
    ];
    const REGION: [&str; 8] = [
        "Rabat Sale Kenitra",
        "Tanger Tetouan",
        "Fes Meknes",
        "Oriental",
        "Souss Massa",
        "Draa Tafilalet",
        "Beni Mellal",
        "Casablanca Settat",
    ];
    let mut r = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5DEE_CE66_D1CE_4E5B;
    let mut next = |m: u64| {
        // splitmix64: cheap, deterministic, good enough for fake demographics.
        r = r.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = r;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % m
    };
    let first = FIRST[next(16) as usize];
    let last = LAST[next(16) as usize];
    let region = REGION[next(8) as usize];
    let dob = format!(
        "{}/{:02}/{:02}",
        1940 + next(80),
        1 + next(12),
        1 + next(28)
    );
    let gender = ["Male", "Female", "Others"][next(3) as usize];
    let phone = format!("+212 6{:08}", next(100_000_000));
    let postal = format!("{:05}", 10_000 + next(90_000));
    let mut value = serde_json::json!({
        "IDSchemaVersion": 0.2,
        "UIN": uin,
        "fullName": [
            {"language": "eng", "value": format!("{first} {last}")},
            {"language": "fra", "value": format!("{first} {last}")},
            {"language": "ara", "value": format!("{first} {last}")}
        ],
        "dateOfBirth": dob,
        "gender": [{"language": "eng", "value": gender}, {"language": "fra", "value": gender}],
        "addressLine1": [{"language": "eng", "value": format!("{} Avenue Hassan II", 1 + next(400))}],
        "addressLine2": [{"language": "eng", "value": format!("Building {}, floor {}", 1 + next(50), next(12))}],
        "addressLine3": [{"language": "eng", "value": "Near the central market"}],
        "region": [{"language": "eng", "value": region}],
        "province": [{"language": "eng", "value": region}],
        "city": [{"language": "eng", "value": "Kenitra"}],
        "zone": [{"language": "eng", "value": format!("Zone {}", next(40))}],
        "postalCode": postal,
        "phone": phone,
        "email": format!("{}.{}{}@example.org", first.to_lowercase(), last.to_lowercase(), next(1000)),
        "referenceIdentityNumber": format!("{:012}", next(1_000_000_000_000)),
        "residenceStatus": [{"language": "eng", "value": "Non-Foreigner"}],
        "proofOfAddress": {"format": "pdf", "type": "DOC001", "value": "proofOfAddress", "refNumber": format!("POA-{:010}", next(10_000_000_000))},
        "proofOfIdentity": {"format": "pdf", "type": "DOC002", "value": "proofOfIdentity", "refNumber": format!("POI-{:010}", next(10_000_000_000))},
        "individualBiometrics": {"format": "cbeff", "version": 1.0, "value": "individualBiometrics_bio_CBEFF"},
        "registrationId": format!("1000{:06}{:014}", next(1_000_000), 20260101000000u64 + next(1_000_000)),
        "updatedBy": "id-repository-seed",
        "remarks": ""
    });
    let bare = serde_json::to_vec(&value)
        .expect("JSON of strings and numbers")
        .len();
    // Pad `remarks` (dots need no escaping) so every body has the same size.
    value["remarks"] = serde_json::Value::String(".".repeat(SEED_BODY_BYTES.saturating_sub(bare)));
    serde_json::to_vec(&value).expect("JSON of strings and numbers")
}

/// What to seed.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    pub namespace: String,
    /// Record name every resident gets (e.g. `demographics`).
    pub record_name: String,
    /// First resident index.
    pub start: u64,
    /// How many residents.
    pub count: u64,
    /// Rows per database transaction.
    pub batch: usize,
    /// Sealing threads (the calling thread writes).
    pub threads: usize,
}

/// What seeding did.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct SeedReport {
    pub inserted: u64,
    /// Residents that already had the record (left untouched).
    pub skipped: u64,
    pub seconds: f64,
    pub master_version: u32,
}

impl Vault {
    /// Seeds `opts.count` residents (see the module doc). Idempotent: a resident that already
    /// has the record is skipped. `progress(done, total)` is called after every batch. The load
    /// is one entry in the audit trail (`records.seed`, with the index range and counts).
    pub fn seed(
        &self,
        actor: &Actor,
        opts: &SeedOptions,
        progress: impl FnMut(u64, u64),
    ) -> Result<SeedReport, VaultError> {
        let result = self.seed_rows(opts, progress);
        let mut entry = actor.entry("records.seed", &opts.namespace, opts.record_name.clone());
        let range = format!(
            "indices {}..{}",
            opts.start,
            opts.start.saturating_add(opts.count)
        );
        match &result {
            Ok(r) => {
                entry.detail = format!(
                    "{}; {range}: {} inserted, {} already present",
                    entry.detail, r.inserted, r.skipped
                )
            }
            Err(e) => {
                entry.outcome = e.code().to_owned();
                entry.detail = format!("{}; {range}", entry.detail);
            }
        }
        self.store().append_audit(&entry)?;
        result
    }

    fn seed_rows(
        &self,
        opts: &SeedOptions,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<SeedReport, VaultError> {
        let ns = opts.namespace.as_str();
        let policy = self
            .policy()
            .namespace(ns)
            .ok_or(VaultError::UnknownNamespace)?;
        if !valid_record_name(&opts.record_name) {
            return Err(VaultError::BadInput("invalid record name".into()));
        }
        if opts
            .start
            .checked_add(opts.count)
            .is_none_or(|end| end > SEED_MAX_RESIDENTS)
        {
            return Err(VaultError::BadInput(format!(
                "seed indices must stay below {SEED_MAX_RESIDENTS}"
            )));
        }
        if SEED_BODY_BYTES > policy.max_record_bytes {
            return Err(VaultError::TooLarge {
                size: SEED_BODY_BYTES,
                limit: policy.max_record_bytes,
            });
        }
        let checksum = policy.id_checksum;
        let index_key = self.keyring().index_key(ns)?;
        let version = self.keyring().active_version(ns)?;
        let master = self.keyring().master(ns, version)?;
        let batch = opts.batch.max(1) as u64;
        let end = opts.start + opts.count;
        let next_batch = AtomicU64::new(0);
        let started = Instant::now();

        // One batch of sealed rows, exactly as `put_record` would write them for a new record.
        let seal_batch = |lo: u64, hi: u64| -> Result<Vec<RecordRow>, VaultError> {
            let mut rows = Vec::with_capacity((hi - lo) as usize);
            for i in lo..hi {
                let uin = seed_uin(i);
                let body = seed_body(i, &uin);
                let id = ResidentId::parse_with(&uin, checksum)
                    .map_err(|e| VaultError::BadInput(e.to_string()))?;
                let blind_index = index_key.blind_index(ns, &id);
                let rk = master.resident_key(ns, &id);
                let record_id = *uuid::Uuid::new_v4().as_bytes();
                let ctx = RecordContext {
                    namespace: ns,
                    blind_index: &blind_index,
                    record_name: &opts.record_name,
                    record_id: &record_id,
                };
                let sealed = seal(&rk, version, &ctx, &body)?;
                rows.push(sealed_row(&ctx, sealed, "application/json", body.len())?);
            }
            Ok(rows)
        };

        let mut inserted = 0u64;
        let mut done = 0u64;
        std::thread::scope(|scope| -> Result<(), VaultError> {
            let (tx, rx) =
                mpsc::sync_channel::<Result<Vec<RecordRow>, VaultError>>(opts.threads.max(1) * 2);
            for _ in 0..opts.threads.max(1) {
                let tx = tx.clone();
                let (next_batch, seal_batch) = (&next_batch, &seal_batch);
                scope.spawn(move || loop {
                    let lo = opts.start + next_batch.fetch_add(1, Ordering::Relaxed) * batch;
                    if lo >= end {
                        return;
                    }
                    let out = seal_batch(lo, (lo + batch).min(end));
                    let failed = out.is_err();
                    if tx.send(out).is_err() || failed {
                        return; // the writer stopped
                    }
                });
            }
            drop(tx);
            // On an error `rx` is dropped on return, so the sealing threads stop too.
            for rows in rx {
                let rows = rows?;
                done += rows.len() as u64;
                inserted += self.store().insert_records(&rows)? as u64;
                progress(done, opts.count);
            }
            Ok(())
        })?;
        Ok(SeedReport {
            inserted,
            skipped: done - inserted,
            seconds: started.elapsed().as_secs_f64(),
            master_version: version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uins_are_distinct_verhoeff_valid_and_stable() {
        // Pinned: loadtest/lib/uin.js must give the same values.
        assert_eq!(
            seed_uin(0),
            format!("100000000{}", verhoeff::check_digit("100000000").unwrap())
        );
        let mut seen = std::collections::HashSet::new();
        for i in (0..200_000).chain([SEED_MAX_RESIDENTS - 1]) {
            let uin = seed_uin(i);
            assert_eq!(uin.len(), 10);
            assert!(verhoeff::validate(&uin), "{uin}");
            assert!(seen.insert(uin));
        }
    }

    #[test]
    fn bodies_have_the_target_size_and_are_json() {
        for i in [0, 1, 999_999, 123_456_789] {
            let uin = seed_uin(i);
            let body = seed_body(i, &uin);
            assert_eq!(body.len(), SEED_BODY_BYTES);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["UIN"], uin.as_str());
        }
    }
}
