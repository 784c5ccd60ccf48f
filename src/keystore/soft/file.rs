//! The soft keystore's file: every KEK in one table sealed under a key derived from the
//! operator passphrase.
//!
//! ```text
//! file   = header || XChaCha20-Poly1305(file_key, nonce, aad = header, table || ledger || anchor)
//! header = "ZKVKS1" || u8 format (3) || u32be m_cost_kib || u32be t_cost || u32be p_cost
//!          || salt (32) || verifier (32) || nonce (24)
//! file_key || verifier = Argon2id(passphrase, salt, m, t, p, output 64 bytes)
//! table  = u32be count || count × (u32be version || u8 state || key (32, absent if destroyed))
//! ledger = u32be count || count × (u8 len || namespace (len) || u32be master version)
//! anchor = u8 present (0 | 1) || [u64be counter || digest (32)]   (the part in [] if present)
//! ```
//! The ledger lists the derivation masters destroyed for good; the anchor is the audit trail's
//! newest checkpoint. Formats 1 (table only) and 2 (table || ledger) are still read, and
//! rewritten as format 3 on their first change.
//! The verifier tells a wrong passphrase ([`KeystoreError::BadPassphrase`]) from a damaged file
//! ([`KeystoreError::Corrupt`]). It gives an attacker nothing the ciphertext does not: either
//! way, testing a guess costs one Argon2id run.
//!
//! Argon2 parameters live in the header (bound as AAD). [`super::SoftKeystoreOptions::default`]
//! uses m = 64 MiB, t = 3, p = 1. Every file, created or opened, must lie between
//! [`Argon2Params::FLOOR`] (m = 8 MiB, t = 1, p = 1: what
//! [`super::SoftKeystoreOptions::for_tests`] uses) and [`Argon2Params::CEILING`]. The floor
//! refuses files with trivially cheap parameters; the ceiling stops a crafted header from making
//! `open` allocate without bound.
//!
//! Writes go to a temporary file in the same directory (mode 0600), are fsynced, renamed over
//! the old file, and the directory is fsynced, so a crash leaves the old file or the new one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;
use zkvault_core::{random, Secret32};

use crate::keystore::{AuditAnchor, KekState, KeystoreError};
use crate::secret::SecretString;

const MAGIC: &[u8; 6] = b"ZKVKS1";
/// The format written; formats 1 (no ledger) and 2 (no anchor) are still read.
const FORMAT: u8 = 3;
const SALT_LEN: usize = 32;
const VERIFIER_LEN: usize = 32;
/// XChaCha20-Poly1305's nonce and tag, as the file and every wrapped key use them.
pub(super) const NONCE_LEN: usize = 24;
pub(super) const TAG_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + 1 + 12 + SALT_LEN + VERIFIER_LEN + NONCE_LEN;

/// Argon2id cost parameters for the file key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Argon2Params {
    /// Production default: 64 MiB, 3 passes, 1 lane (≈ 150 ms on the reference CPU).
    pub const DEFAULT: Self = Argon2Params {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
    /// Lowest parameters any file may carry.
    pub const FLOOR: Self = Argon2Params {
        m_cost_kib: 8 * 1024,
        t_cost: 1,
        p_cost: 1,
    };
    /// Highest parameters `open` will run (a crafted header must not exhaust memory).
    pub const CEILING: Self = Argon2Params {
        m_cost_kib: 2 * 1024 * 1024,
        t_cost: 64,
        p_cost: 16,
    };

    pub(super) fn check(self) -> Result<(), String> {
        let (lo, hi) = (Self::FLOOR, Self::CEILING);
        if !(lo.m_cost_kib..=hi.m_cost_kib).contains(&self.m_cost_kib)
            || !(lo.t_cost..=hi.t_cost).contains(&self.t_cost)
            || !(lo.p_cost..=hi.p_cost).contains(&self.p_cost)
        {
            return Err(format!(
                "Argon2 parameters m={} KiB t={} p={} outside the allowed range",
                self.m_cost_kib, self.t_cost, self.p_cost
            ));
        }
        Ok(())
    }
}

/// A table row as sealed: version, state, key (absent once destroyed).
pub(super) type Row<'a> = (u32, KekState, Option<&'a Secret32>);

/// The masters destroyed for good: `(namespace, version)`.
pub(super) type Ledger = BTreeSet<(String, u32)>;

/// What a file holds.
pub(super) struct Contents {
    pub(super) keks: BTreeMap<u32, Kek>,
    pub(super) destroyed: Ledger,
    pub(super) anchor: Option<AuditAnchor>,
}

/// One KEK as held in memory. `key` is `None` once destroyed.
pub(super) struct Kek {
    pub(super) state: KekState,
    pub(super) key: Option<Secret32>,
}

/// What every re-seal needs: derived once at open, because Argon2 is deliberately slow.
pub(super) struct Sealer {
    params: Argon2Params,
    salt: [u8; SALT_LEN],
    verifier: [u8; VERIFIER_LEN],
    file_key: Secret32,
}

impl Sealer {
    /// The sealer of a new file: a fresh salt, and the file key `passphrase` derives with it.
    pub(super) fn new(
        passphrase: &SecretString,
        params: Argon2Params,
    ) -> Result<Self, KeystoreError> {
        let salt = random::array::<SALT_LEN>().map_err(rng_error)?;
        let (file_key, verifier) = derive(passphrase.expose(), &salt, params)?;
        Ok(Sealer {
            params,
            salt,
            verifier,
            file_key,
        })
    }

    /// Opens a file's `bytes` with `passphrase`: its sealer and its table.
    pub(super) fn open(
        bytes: &[u8],
        passphrase: &SecretString,
    ) -> Result<(Self, Contents), KeystoreError> {
        let header = Header::parse(bytes)?;
        let (file_key, verifier) = derive(passphrase.expose(), &header.salt, header.params)?;
        if !bool::from(verifier.ct_eq(&header.verifier)) {
            return Err(KeystoreError::BadPassphrase);
        }
        let sealer = Sealer {
            params: header.params,
            salt: header.salt,
            verifier,
            file_key,
        };
        let contents = sealer.unseal(bytes, &header)?;
        Ok((sealer, contents))
    }

    /// The table of `bytes`, the same file rewritten since it was opened. The file key is kept:
    /// a file sealed under another salt or parameters is another keystore, and is refused rather
    /// than trusted.
    pub(super) fn reopen(&self, bytes: &[u8]) -> Result<Contents, KeystoreError> {
        let header = Header::parse(bytes)?;
        if header.params != self.params
            || header.salt != self.salt
            || !bool::from(header.verifier.ct_eq(&self.verifier))
        {
            return Err(KeystoreError::Corrupt(
                "the keystore file was replaced by a different keystore".into(),
            ));
        }
        self.unseal(bytes, &header)
    }

    pub(super) fn params(&self) -> Argon2Params {
        self.params
    }

    /// Seals `rows` (version, state, key), the ledger and the anchor under the file key with a
    /// fresh nonce.
    pub(super) fn seal(
        &self,
        rows: &[Row<'_>],
        destroyed: &Ledger,
        anchor: Option<&AuditAnchor>,
    ) -> Result<Vec<u8>, KeystoreError> {
        let s = self;
        let nonce = random::array::<NONCE_LEN>().map_err(rng_error)?;
        let mut out = Vec::with_capacity(HEADER_LEN + 4 + rows.len() * 37 + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        for v in [s.params.m_cost_kib, s.params.t_cost, s.params.p_cost] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&s.salt);
        out.extend_from_slice(&s.verifier);
        out.extend_from_slice(&nonce);
        let mut table = serialize_table(rows, destroyed);
        serialize_ledger(&mut table, destroyed);
        serialize_anchor(&mut table, anchor);
        let ciphertext = XChaCha20Poly1305::new(s.file_key.expose().into())
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &table,
                    aad: &out,
                },
            )
            .map_err(|_| KeystoreError::Corrupt("table too large to seal".into()))?;
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Opens the sealed contents of a file whose header is `header`.
    fn unseal(&self, bytes: &[u8], header: &Header) -> Result<Contents, KeystoreError> {
        let plain = Zeroizing::new(
            XChaCha20Poly1305::new(self.file_key.expose().into())
                .decrypt(
                    &XNonce::from(header.nonce),
                    Payload {
                        msg: &bytes[HEADER_LEN..],
                        aad: &bytes[..HEADER_LEN],
                    },
                )
                .map_err(|_| KeystoreError::Corrupt("sealed table failed authentication".into()))?,
        );
        parse_contents(header.format, &plain)
    }

    /// A stable public name for the file: derived from its random salt, so it survives a move
    /// or a restart and tells two keystores apart.
    pub(super) fn id(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(b"zkvault:soft-keystore-id")
            .chain_update(self.salt)
            .finalize();
        format!("soft:{}", hex::encode(&digest[..8]))
    }
}

struct Header {
    format: u8,
    params: Argon2Params,
    salt: [u8; SALT_LEN],
    verifier: [u8; VERIFIER_LEN],
    nonce: [u8; NONCE_LEN],
}

impl Header {
    fn parse(bytes: &[u8]) -> Result<Self, KeystoreError> {
        let corrupt = |why: &str| KeystoreError::Corrupt(why.to_owned());
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("not a zkvault keystore (bad magic)"));
        }
        if bytes.len() < HEADER_LEN + TAG_LEN + 4 {
            return Err(corrupt("truncated"));
        }
        let format = bytes[MAGIC.len()];
        if !(1..=FORMAT).contains(&format) {
            return Err(corrupt("unknown format version"));
        }
        let mut at = MAGIC.len() + 1;
        let mut take = |n: usize| {
            let s = &bytes[at..at + n];
            at += n;
            s
        };
        let u32_at = |s: &[u8]| u32::from_be_bytes(s.try_into().expect("4 bytes"));
        let params = Argon2Params {
            m_cost_kib: u32_at(take(4)),
            t_cost: u32_at(take(4)),
            p_cost: u32_at(take(4)),
        };
        params.check().map_err(KeystoreError::Corrupt)?;
        Ok(Header {
            format,
            params,
            salt: take(SALT_LEN).try_into().expect("fixed length"),
            verifier: take(VERIFIER_LEN).try_into().expect("fixed length"),
            nonce: take(NONCE_LEN).try_into().expect("fixed length"),
        })
    }
}

/// The file's two parsers, exposed for the fuzz targets in `fuzz/` (no keys, no I/O). Not API.
#[doc(hidden)]
pub mod untrusted {
    use super::{
        parse_contents, Argon2Params, AuditAnchor, Header, KekState, KeystoreError, FORMAT,
    };

    /// Parses a file's header; on success, the Argon2 parameters it carries.
    pub fn header(bytes: &[u8]) -> Result<Argon2Params, KeystoreError> {
        Header::parse(bytes).map(|h| h.params)
    }

    /// A KEK row as parsed: version, state, whether it holds a key.
    pub type TableRow = (u32, KekState, bool);
    /// A destroyed master: namespace, version.
    pub type LedgerEntry = (String, u32);
    /// Decrypted contents as parsed: each row, the ledger's entries and the anchor.
    pub type Parsed = (Vec<TableRow>, Vec<LedgerEntry>, Option<AuditAnchor>);

    /// Parses decrypted contents of the current format (KEK table, ledger, anchor).
    pub fn contents(bytes: &[u8]) -> Result<Parsed, KeystoreError> {
        let c = parse_contents(FORMAT, bytes)?;
        Ok((
            c.keks
                .into_iter()
                .map(|(v, k)| (v, k.state, k.key.is_some()))
                .collect(),
            c.destroyed.into_iter().collect(),
            c.anchor,
        ))
    }
}

/// Argon2id → 64 bytes: the file key, then the passphrase verifier.
fn derive(
    passphrase: &str,
    salt: &[u8],
    p: Argon2Params,
) -> Result<(Secret32, [u8; VERIFIER_LEN]), KeystoreError> {
    let params = Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(64))
        .map_err(|e| KeystoreError::Config(format!("Argon2 parameters: {e}")))?;
    let mut out = Zeroizing::new([0u8; 64]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, out.as_mut_slice())
        .map_err(|e| KeystoreError::Config(format!("Argon2: {e}")))?;
    let key = Secret32::from_slice(&out[..32]).expect("32 bytes");
    let verifier = out[32..].try_into().expect("32 bytes");
    Ok((key, verifier))
}

fn state_byte(s: KekState) -> u8 {
    match s {
        KekState::Active => 1,
        KekState::Retired => 2,
        KekState::Destroyed => 3,
    }
}

/// The table, with room for `ledger` and an anchor after it.
fn serialize_table(rows: &[Row<'_>], ledger: &Ledger) -> Zeroizing<Vec<u8>> {
    // Enough capacity: a reallocation would leave an unzeroized copy of the keys behind.
    let ledger_len: usize = 4 + ledger.iter().map(|(ns, _)| 1 + ns.len() + 4).sum::<usize>();
    let anchor_len = 1 + AuditAnchor::LEN;
    let mut out = Zeroizing::new(Vec::with_capacity(
        4 + rows.len() * (5 + 32) + ledger_len + anchor_len,
    ));
    out.extend_from_slice(&(rows.len() as u32).to_be_bytes());
    for (version, state, key) in rows {
        out.extend_from_slice(&version.to_be_bytes());
        match key.filter(|_| *state != KekState::Destroyed) {
            Some(key) => {
                out.push(state_byte(*state));
                out.extend_from_slice(key.expose());
            }
            None => out.push(state_byte(KekState::Destroyed)),
        }
    }
    out
}

fn serialize_ledger(out: &mut Vec<u8>, ledger: &Ledger) {
    out.extend_from_slice(&(ledger.len() as u32).to_be_bytes());
    for (ns, version) in ledger {
        // Checked on the way in (`record_destroyed`): a length fits a byte.
        let ns = ns.as_bytes();
        out.push(ns.len() as u8);
        out.extend_from_slice(ns);
        out.extend_from_slice(&version.to_be_bytes());
    }
}

fn serialize_anchor(out: &mut Vec<u8>, anchor: Option<&AuditAnchor>) {
    match anchor {
        Some(a) => {
            out.push(1);
            out.extend_from_slice(&a.to_bytes());
        }
        None => out.push(0),
    }
}

/// The decrypted contents of a file of `format`; what that format lacks is empty.
fn parse_contents(format: u8, b: &[u8]) -> Result<Contents, KeystoreError> {
    let (keks, rest) = parse_table(b)?;
    let (destroyed, rest) = match format {
        1 => (Ledger::new(), rest),
        _ => parse_ledger(rest)?,
    };
    let (anchor, rest) = match format {
        1 | 2 => (None, rest),
        _ => parse_anchor(rest)?,
    };
    whole(
        rest,
        Contents {
            keks,
            destroyed,
            anchor,
        },
    )
}

/// The ledger at the start of `b`, and what follows it.
fn parse_ledger(mut b: &[u8]) -> Result<(Ledger, &[u8]), KeystoreError> {
    let corrupt = |why: &str| KeystoreError::Corrupt(format!("destruction ledger: {why}"));
    let mut take = |n: usize| -> Result<&[u8], KeystoreError> {
        if b.len() < n {
            return Err(corrupt("truncated"));
        }
        let (head, rest) = b.split_at(n);
        b = rest;
        Ok(head)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
    let mut ledger = Ledger::new();
    for _ in 0..count {
        let len = take(1)?[0] as usize;
        let ns = std::str::from_utf8(take(len)?).map_err(|_| corrupt("namespace not UTF-8"))?;
        let version = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
        if !ledger.insert((ns.to_owned(), version)) {
            return Err(corrupt("duplicate entry"));
        }
    }
    Ok((ledger, b))
}

/// The anchor at the start of `b`, and what follows it.
fn parse_anchor(b: &[u8]) -> Result<(Option<AuditAnchor>, &[u8]), KeystoreError> {
    let corrupt = |why: &str| KeystoreError::Corrupt(format!("audit anchor: {why}"));
    match b.split_first() {
        Some((0, rest)) => Ok((None, rest)),
        Some((1, rest)) => {
            let anchor = rest
                .get(..AuditAnchor::LEN)
                .and_then(AuditAnchor::from_bytes)
                .ok_or_else(|| corrupt("truncated"))?;
            Ok((Some(anchor), &rest[AuditAnchor::LEN..]))
        }
        Some(_) => Err(corrupt("unknown presence byte")),
        None => Err(corrupt("truncated")),
    }
}

/// `value` if nothing is left after it.
fn whole<T>(rest: &[u8], value: T) -> Result<T, KeystoreError> {
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(KeystoreError::Corrupt("trailing bytes".into()))
    }
}

/// The KEK table at the start of `b`, and what follows it.
fn parse_table(mut b: &[u8]) -> Result<(BTreeMap<u32, Kek>, &[u8]), KeystoreError> {
    let corrupt = |why: &str| KeystoreError::Corrupt(format!("KEK table: {why}"));
    let mut take = |n: usize| -> Result<&[u8], KeystoreError> {
        if b.len() < n {
            return Err(corrupt("truncated"));
        }
        let (head, rest) = b.split_at(n);
        b = rest;
        Ok(head)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
    let mut keks = BTreeMap::new();
    let mut actives = 0;
    for _ in 0..count {
        let version = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
        let (state, key) = match take(1)?[0] {
            1 => (KekState::Active, Some(take(32)?)),
            2 => (KekState::Retired, Some(take(32)?)),
            3 => (KekState::Destroyed, None),
            _ => return Err(corrupt("unknown state")),
        };
        actives += usize::from(state == KekState::Active);
        let key = key.map(|k| Secret32::from_slice(k).expect("32 bytes"));
        if keks.insert(version, Kek { state, key }).is_some() {
            return Err(corrupt("duplicate version"));
        }
    }
    if actives > 1 {
        return Err(corrupt("more than one active KEK"));
    }
    Ok((keks, b))
}

/// Writes `bytes` to a temporary file beside `path` (0600), fsyncs it, moves it into place and
/// fsyncs the directory. With `create_new`, an existing `path` is an error and is left alone.
pub(super) fn write_atomic(
    path: &Path,
    bytes: &[u8],
    create_new: bool,
) -> Result<(), KeystoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| KeystoreError::Config("keystore path has no file name".into()))?;
    let suffix = hex::encode(random::array::<8>().map_err(rng_error)?);
    let tmp = dir.join(format!(".{}.{suffix}.tmp", name.to_string_lossy()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        if create_new {
            // link() refuses to replace an existing file, unlike rename().
            fs::hard_link(&tmp, path)?;
            fs::remove_file(&tmp)?;
        } else {
            fs::rename(&tmp, path)?;
        }
        File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_error("write", path, e)
    })
}

pub(super) fn io_error(op: &str, path: &Path, e: std::io::Error) -> KeystoreError {
    KeystoreError::Unavailable(format!("cannot {op} keystore file {}: {e}", path.display()))
}

pub(super) fn rng_error(_: zkvault_core::CryptoError) -> KeystoreError {
    KeystoreError::Unavailable("OS random number generator failed".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: u32, s: KekState, k: Option<&Secret32>) -> Row<'_> {
        (v, s, k)
    }

    /// Table then ledger: format 2's contents.
    fn format_2(rows: &[Row<'_>], ledger: &Ledger) -> Vec<u8> {
        let mut out = serialize_table(rows, ledger);
        serialize_ledger(&mut out, ledger);
        out.to_vec()
    }

    /// Table, ledger, then anchor, as sealed.
    fn contents(rows: &[Row<'_>], ledger: &Ledger, anchor: Option<&AuditAnchor>) -> Vec<u8> {
        let mut out = format_2(rows, ledger);
        serialize_anchor(&mut out, anchor);
        out
    }

    fn parse(b: &[u8]) -> Result<Contents, KeystoreError> {
        parse_contents(FORMAT, b)
    }

    const ANCHOR: AuditAnchor = AuditAnchor {
        counter: 0x0102_0304_0506_0708,
        digest: [9; 32],
    };

    #[test]
    fn contents_round_trip_and_drop_destroyed_keys() {
        let (a, b) = (Secret32::from_bytes([1; 32]), Secret32::from_bytes([2; 32]));
        let ledger: Ledger = [("uin".to_string(), 3), ("rp".to_string(), 1)].into();
        let bytes = contents(
            &[
                row(1, KekState::Destroyed, Some(&a)),
                row(2, KekState::Retired, Some(&a)),
                row(3, KekState::Active, Some(&b)),
            ],
            &ledger,
            Some(&ANCHOR),
        );
        assert_eq!(
            bytes.len(),
            4 + 5 + (5 + 32) * 2 + 4 + (1 + 3 + 4) + (1 + 2 + 4) + 1 + 8 + 32
        );
        assert_eq!(bytes[bytes.len() - 41..][..9], [1, 1, 2, 3, 4, 5, 6, 7, 8]);
        let read = parse(&bytes).unwrap();
        assert!(read.keks[&1].key.is_none());
        assert_eq!(read.keks[&2].state, KekState::Retired);
        assert!(read.keks[&3].key.as_ref().unwrap() == &b);
        assert_eq!(read.destroyed, ledger);
        assert_eq!(read.anchor, Some(ANCHOR));
        let none = parse(&contents(&[], &Ledger::new(), None)).unwrap();
        assert_eq!(none.anchor, None);
    }

    /// Files written before the anchor (format 2) or the ledger (format 1) still parse, with
    /// none; the format byte, not a guess from the length, says which parts there are.
    #[test]
    fn older_formats_parse_without_an_anchor() {
        let a = Secret32::from_bytes([1; 32]);
        let ledger: Ledger = [("rp".to_string(), 2)].into();
        let v2 = format_2(&[row(1, KekState::Active, Some(&a))], &ledger);
        let read = parse_contents(2, &v2).unwrap();
        assert_eq!(read.keks[&1].state, KekState::Active);
        assert_eq!(read.destroyed, ledger);
        assert_eq!(read.anchor, None);
        assert!(matches!(parse(&v2), Err(KeystoreError::Corrupt(_))));
        let v3 = contents(&[row(1, KekState::Active, Some(&a))], &ledger, None);
        assert!(matches!(
            parse_contents(2, &v3),
            Err(KeystoreError::Corrupt(_))
        ));

        let v1 = serialize_table(&[row(1, KekState::Active, Some(&a))], &Ledger::new());
        let read = parse_contents(1, &v1).unwrap();
        assert!(read.destroyed.is_empty() && read.anchor.is_none());
    }

    #[test]
    fn contents_reject_garbage() {
        let a = Secret32::from_bytes([1; 32]);
        let ledger: Ledger = [("rp".to_string(), 1)].into();
        let rows = [row(1, KekState::Active, Some(&a))];
        for anchor in [None, Some(&ANCHOR)] {
            let good = contents(&rows, &ledger, anchor);
            assert!(parse(&good).is_ok());
            assert!(matches!(
                parse(&good[..good.len() - 1]),
                Err(KeystoreError::Corrupt(_))
            ));
            let mut extra = good.clone();
            extra.push(0);
            assert!(matches!(parse(&extra), Err(KeystoreError::Corrupt(_))));
        }
        let mut unknown = format_2(&rows, &ledger);
        unknown.push(2);
        assert!(matches!(parse(&unknown), Err(KeystoreError::Corrupt(_))));
        let two_active = contents(
            &[
                row(1, KekState::Active, Some(&a)),
                row(2, KekState::Active, Some(&a)),
            ],
            &Ledger::new(),
            None,
        );
        assert!(matches!(parse(&two_active), Err(KeystoreError::Corrupt(_))));
        // The same ledger entry twice.
        let mut twice = serialize_table(&rows, &Ledger::new()).to_vec();
        twice.extend_from_slice(&2u32.to_be_bytes());
        for _ in 0..2 {
            twice.extend_from_slice(&[2, b'r', b'p', 0, 0, 0, 1]);
        }
        twice.push(0);
        assert!(matches!(parse(&twice), Err(KeystoreError::Corrupt(_))));
    }

    #[test]
    fn params_outside_floor_and_ceiling_are_refused() {
        assert!(Argon2Params::DEFAULT.check().is_ok());
        assert!(Argon2Params::FLOOR.check().is_ok());
        assert!(Argon2Params {
            m_cost_kib: 1024,
            ..Argon2Params::FLOOR
        }
        .check()
        .is_err());
        assert!(Argon2Params {
            t_cost: 1000,
            ..Argon2Params::DEFAULT
        }
        .check()
        .is_err());
    }
}
