//! Known-answer tests: every case of the vectors file reproduces, byte for byte.
//!
//! The file is `$ZKVAULT_VECTORS`, or the repository's own copy `tests/vectors/v1.json` (so a
//! clone stands alone). A relative `ZKVAULT_VECTORS` is taken from the repository root, so
//! another file of the same shape is checked the same way: nothing below is hard-coded.
//! When the shared contract `../shared/vectors/` sits beside the repository, the in-repo copies
//! must be byte-identical to it.

use std::path::PathBuf;

use serde::Deserialize;
use zkvault_core::*;

#[derive(Deserialize)]
struct Vectors {
    resident_key: Vec<RkCase>,
    blind_index: Vec<BiCase>,
    record: Vec<RecordCase>,
    resident_id_normalization: Normalization,
}

#[derive(Deserialize)]
struct RkCase {
    dm: String,
    dm_salt: String,
    namespace: String,
    resident_id: String,
    resident_key: String,
}

#[derive(Deserialize)]
struct BiCase {
    index_key: String,
    namespace: String,
    resident_id: String,
    blind_index: String,
}

#[derive(Deserialize)]
struct RecordCase {
    dm: String,
    dm_salt: String,
    dm_version: u32,
    index_key: String,
    namespace: String,
    resident_id: String,
    record_name: String,
    record_id: String,
    dek: String,
    dek_nonce: String,
    body_nonce: String,
    plaintext: String,
    resident_key: String,
    blind_index: String,
    wrapped_dek: String,
    body_ciphertext: String,
}

#[derive(Deserialize)]
struct Normalization {
    accepted: Vec<(String, String)>,
    rejected: Vec<String>,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn vectors() -> Vectors {
    let path = match std::env::var_os("ZKVAULT_VECTORS") {
        Some(p) => repo_root().join(p), // an absolute path replaces the root
        None => repo_root().join("tests/vectors/v1.json"),
    };
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read vectors file {}: {e}", path.display()));
    let v: Vectors = serde_json::from_str(&text).expect("vectors file has the v1 shape");
    assert!(
        !v.resident_key.is_empty() && !v.blind_index.is_empty() && !v.record.is_empty(),
        "vectors file {} has an empty section",
        path.display()
    );
    v
}

fn bytes<const N: usize>(h: &str) -> [u8; N] {
    hex::decode(h).unwrap().try_into().unwrap()
}

fn secret(h: &str) -> Secret32 {
    Secret32::from_bytes(bytes(h))
}

fn id(raw: &str) -> ResidentId {
    ResidentId::parse(raw).unwrap_or_else(|_| panic!("vector resident id must be valid"))
}

#[test]
fn resident_keys_reproduce() {
    for (i, c) in vectors().resident_key.iter().enumerate() {
        let dm = DerivationMaster::new(secret(&c.dm), bytes(&c.dm_salt));
        let rk = dm.resident_key(&c.namespace, &id(&c.resident_id));
        assert_eq!(
            hex::encode(rk.secret().expose()),
            c.resident_key,
            "resident_key case {i}"
        );
    }
}

#[test]
fn blind_indexes_reproduce() {
    for (i, c) in vectors().blind_index.iter().enumerate() {
        let ik = IndexKey::new(secret(&c.index_key));
        let bi = ik.blind_index(&c.namespace, &id(&c.resident_id));
        assert_eq!(
            hex::encode(bi.as_bytes()),
            c.blind_index,
            "blind_index case {i}"
        );
    }
}

#[test]
fn records_seal_and_open_exactly() {
    for (i, c) in vectors().record.iter().enumerate() {
        let rid = id(&c.resident_id);
        let dm = DerivationMaster::new(secret(&c.dm), bytes(&c.dm_salt));
        let rk = dm.resident_key(&c.namespace, &rid);
        assert_eq!(
            hex::encode(rk.secret().expose()),
            c.resident_key,
            "record case {i}: RK"
        );
        let bi = IndexKey::new(secret(&c.index_key)).blind_index(&c.namespace, &rid);
        assert_eq!(
            hex::encode(bi.as_bytes()),
            c.blind_index,
            "record case {i}: BI"
        );

        let record_id: [u8; 16] = bytes(&c.record_id);
        let ctx = RecordContext {
            namespace: &c.namespace,
            blind_index: &bi,
            record_name: &c.record_name,
            record_id: &record_id,
        };
        let plaintext = hex::decode(&c.plaintext).unwrap();
        let sealed = seal_with(
            &rk,
            c.dm_version,
            &ctx,
            &Dek::from_secret(secret(&c.dek)),
            bytes(&c.dek_nonce),
            bytes(&c.body_nonce),
            &plaintext,
        );
        assert_eq!(
            hex::encode(sealed.dek.wrapped),
            c.wrapped_dek,
            "record case {i}: wrapped_dek"
        );
        assert_eq!(
            hex::encode(&sealed.body_ciphertext),
            c.body_ciphertext,
            "record case {i}: body"
        );

        // Open the vector's own bytes, as another implementation would have stored them.
        let stored = SealedRecord::from_stored(
            FORMAT_V1,
            c.dm_version,
            &hex::decode(&c.dek_nonce).unwrap(),
            &hex::decode(&c.wrapped_dek).unwrap(),
            &hex::decode(&c.body_nonce).unwrap(),
            hex::decode(&c.body_ciphertext).unwrap(),
        )
        .unwrap();
        assert_eq!(
            *open(&rk, &ctx, &stored).unwrap(),
            plaintext,
            "record case {i}: open"
        );
    }
}

#[test]
fn normalisation_accepts_and_rejects() {
    let n = vectors().resident_id_normalization;
    assert!(!n.accepted.is_empty() && !n.rejected.is_empty());
    for (raw, normalised) in &n.accepted {
        let got = ResidentId::parse(raw).unwrap_or_else(|_| panic!("should accept {raw:?}"));
        assert_eq!(got.as_str(), normalised);
    }
    for raw in &n.rejected {
        assert!(ResidentId::parse(raw).is_err(), "should reject {raw:?}");
    }
}

/// The in-repo copies must not drift from the shared contract. A user's clone has no
/// `../shared`, so its absence is no failure.
#[test]
fn in_repo_vectors_match_shared_contract() {
    let shared = repo_root().join("../shared/vectors");
    if !shared.is_dir() {
        return;
    }
    for name in ["v1.json", "verhoeff.json"] {
        let ours = std::fs::read(repo_root().join("tests/vectors").join(name)).unwrap();
        let theirs = std::fs::read(shared.join(name)).unwrap();
        assert!(
            ours == theirs,
            "tests/vectors/{name} differs from {}; copy it again",
            shared.join(name).display()
        );
    }
}
