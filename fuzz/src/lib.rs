//! Shared by the fuzz targets: fixed keys, and the byte layout a stored record is fuzzed in.
//!
//! `cargo test --manifest-path fuzz/Cargo.toml --lib` checks the committed seeds; with
//! `ZKVAULT_WRITE_SEEDS=1` it (re)writes them into `corpus/<target>/seed-*`.

use std::sync::OnceLock;

use zkvault_core::{
    seal_with, BlindIndex, Dek, DerivationMaster, IndexKey, RecordContext, ResidentId, ResidentKey, Secret32,
};

pub const NS: &str = "rp";
pub const RECORD_NAME: &str = "demographics";
pub const RECORD_ID: [u8; 16] = [7; 16];
pub const RESIDENT: &str = "4930098371";
pub const BODY: &[u8] = br#"{"name":"Asha","dob":"1990-01-01"}"#;
/// The passphrase of the seed keystore file.
pub const PASSPHRASE: &str = "fuzz passphrase";

/// Fixed keys: a resident key for [`RESIDENT`] under DM v1, its blind index, and a second
/// resident key (another master) for rewrap and re-key.
pub struct Keys {
    pub rk: ResidentKey,
    pub rk2: ResidentKey,
    pub bi: BlindIndex,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let id = ResidentId::parse(RESIDENT).expect("valid id");
        let dm = DerivationMaster::new(Secret32::from_bytes([1; 32]), [2; 32]);
        let dm2 = DerivationMaster::new(Secret32::from_bytes([4; 32]), [5; 32]);
        let ik = IndexKey::new(Secret32::from_bytes([3; 32]));
        Keys { rk: dm.resident_key(NS, &id), rk2: dm2.resident_key(NS, &id), bi: ik.blind_index(NS, &id) }
    })
}

pub fn context(k: &Keys) -> RecordContext<'_> {
    RecordContext { namespace: NS, blind_index: &k.bi, record_name: RECORD_NAME, record_id: &RECORD_ID }
}

/// A stored row's columns, as `SealedRecord::from_stored` takes them.
pub struct Stored<'a> {
    pub format: u8,
    pub master_version: u32,
    pub dek_nonce: &'a [u8],
    pub wrapped_dek: &'a [u8],
    pub body_nonce: &'a [u8],
    pub body_ciphertext: &'a [u8],
}

/// `format (1) || u32be master_version || lp8(dek_nonce) || lp8(wrapped_dek) || lp8(body_nonce)
/// || body_ciphertext`, where `lp8(x)` is a one-byte length then `x`. `None` if cut short.
pub fn decode(bytes: &[u8]) -> Option<Stored<'_>> {
    let (&format, rest) = bytes.split_first()?;
    let master_version = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let mut rest = &rest[4..];
    let mut field = || -> Option<&[u8]> {
        let (&len, tail) = rest.split_first()?;
        let f = tail.get(..usize::from(len))?;
        rest = &tail[usize::from(len)..];
        Some(f)
    };
    let (dek_nonce, wrapped_dek, body_nonce) = (field()?, field()?, field()?);
    Some(Stored { format, master_version, dek_nonce, wrapped_dek, body_nonce, body_ciphertext: rest })
}

pub fn encode(s: &Stored<'_>) -> Vec<u8> {
    let mut out = vec![s.format];
    out.extend_from_slice(&s.master_version.to_be_bytes());
    for f in [s.dek_nonce, s.wrapped_dek, s.body_nonce] {
        out.push(u8::try_from(f.len()).expect("short field"));
        out.extend_from_slice(f);
    }
    out.extend_from_slice(s.body_ciphertext);
    out
}

/// [`BODY`] sealed for [`RESIDENT`] under the fixed keys, with a fixed DEK and nonces.
pub fn valid_record() -> Vec<u8> {
    let k = keys();
    let sealed = seal_with(&k.rk, 1, &context(k), &Dek::from_secret(Secret32::from_bytes([9; 32])), [10; 24], [11; 24], BODY);
    encode(&Stored {
        format: sealed.format(),
        master_version: sealed.dek.master_version,
        dek_nonce: &sealed.dek.nonce,
        wrapped_dek: &sealed.dek.wrapped,
        body_nonce: &sealed.body_nonce,
        body_ciphertext: &sealed.body_ciphertext,
    })
}

/// The wrapped DEK of [`valid_record`].
pub fn valid_envelope() -> Vec<u8> {
    let bytes = valid_record();
    decode(&bytes).expect("valid layout").wrapped_dek.to_vec()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use zkvault::keystore::soft::{SoftKeystore, SoftKeystoreOptions};
    use zkvault::keystore::Keystore;

    use super::*;

    fn corpus(target: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target)
    }

    fn write(target: &str, name: &str, bytes: &[u8]) {
        std::fs::create_dir_all(corpus(target)).unwrap();
        std::fs::write(corpus(target).join(name), bytes).unwrap();
    }

    #[test]
    fn valid_record_decodes_and_opens() {
        let bytes = valid_record();
        let s = decode(&bytes).unwrap();
        assert_eq!(encode(&s), bytes);
        let sealed = zkvault_core::SealedRecord::from_stored(s.format, s.master_version, s.dek_nonce, s.wrapped_dek, s.body_nonce, s.body_ciphertext.to_vec()).unwrap();
        assert_eq!(&zkvault_core::open(&keys().rk, &context(keys()), &sealed).unwrap()[..], BODY);
    }

    /// Writes the seeds when `ZKVAULT_WRITE_SEEDS=1`; otherwise checks every target has some.
    #[test]
    fn seeds() {
        let targets = ["resident_id", "record_name", "stored_record", "keystore_parse", "keystore_file"];
        if std::env::var("ZKVAULT_WRITE_SEEDS").is_ok_and(|v| v == "1") {
            for (i, id) in ["4930098371", " 4930098371\t", "RESIDENTzq81x", "a.b_c-d", "49300983714919", "-x", "", &"9".repeat(65)].iter().enumerate() {
                write("resident_id", &format!("seed-{i}"), id.as_bytes());
            }
            for (i, n) in ["demographics", "bio/finger/left-thumb.iso", "a/../b", "a//b", "demographics/", "0.v2_x", "A"].iter().enumerate() {
                write("record_name", &format!("seed-{i}"), n.as_bytes());
            }
            write("stored_record", "seed-valid", &valid_record());
            // A real keystore at the floor parameters with an active, a retired and a destroyed KEK.
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("k.zks");
            let pass = zkvault::secret::SecretString::new(PASSPHRASE);
            let ks = SoftKeystore::create(&path, &pass, SoftKeystoreOptions::for_tests()).unwrap();
            for _ in 0..3 {
                ks.create_kek().unwrap();
            }
            ks.destroy_kek(1).unwrap();
            drop(ks);
            let file = std::fs::read(&path).unwrap();
            write("keystore_file", "seed-valid", &file);
            // keystore_parse: first byte even = header, odd = table.
            write("keystore_parse", "seed-header", &[&[0u8][..], &file].concat());
            let mut table = vec![1u8];
            table.extend_from_slice(&3u32.to_be_bytes());
            table.extend_from_slice(&1u32.to_be_bytes());
            table.push(3);
            for (v, state) in [(2u32, 2u8), (3, 1)] {
                table.extend_from_slice(&v.to_be_bytes());
                table.push(state);
                table.extend_from_slice(&[v as u8; 32]);
            }
            write("keystore_parse", "seed-table", &table);
        }
        for t in targets {
            let n = std::fs::read_dir(corpus(t)).map(|d| d.count()).unwrap_or(0);
            assert!(n > 0, "no seed corpus for {t}: run with ZKVAULT_WRITE_SEEDS=1");
        }
    }
}
