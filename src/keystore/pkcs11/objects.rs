//! KEKs as objects on the token, and the blobs they wrap.
//!
//! - a KEK is `CKO_SECRET_KEY`/`CKK_AES`, 32 bytes, token, private, sensitive, not extractable,
//!   label `zkvault-kek-v{n}`, `CKA_ID` = `u32be(n)`, generated with `CKM_AES_KEY_GEN` under the
//!   label `zkvault-kek-pending-v{n}` (invisible to listing and wrapping) until its version is
//!   claimed;
//! - **retired** = `CKA_ENCRYPT` set to false: the HSM itself then refuses to wrap with it, which
//!   also holds for other service instances sharing the token, and it survives restarts;
//! - **destroyed** = the key object is gone (`C_DestroyObject`) and a tombstone remains: a private
//!   `CKO_DATA` object labelled `zkvault-kek-destroyed` with `CKA_VALUE` = `u32be(n)`, so version
//!   numbers are never reused and listing still reports the version. The tombstone is written
//!   before the key is destroyed; a key with a tombstone counts as destroyed.
//!
//! Beside the KEKs, private `CKO_DATA` objects hold what the database must not be able to undo:
//! one per destroyed master (`zkvault-master-destroyed`), and the audit anchor
//! (`zkvault-audit-anchor`, `CKA_VALUE` = `u64be counter || digest`). The anchor advances by
//! creating the new object and then destroying the older ones, so a crash in between leaves
//! two and the newest counts. Public objects with these labels need no PIN and are ignored.
//!
//! Wrapping uses `CKM_AES_GCM` encrypt/decrypt (SoftHSM offers GCM only there) with
//! AAD = `ctx.aad()`, a 96-bit IV from the OS CSPRNG and a 128-bit tag:
//! `blob = iv (12) || ciphertext (32) || tag (16)`. The IV in the blob is read back from the
//! mechanism parameters after `C_Encrypt`, since a token may generate its own and write it there.
//! A failed `C_Decrypt` is `KeystoreError::Unwrap` when its code names the data, or when it is
//! `CKR_GENERAL_ERROR` (SoftHSM's tag mismatch) and a health probe ([`token_works`]) shows the
//! token still works; otherwise the token is failing: `KeystoreError::Unavailable`.

use std::collections::{BTreeMap, BTreeSet};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::Ulong;
use zeroize::Zeroizing;
use zkvault_core::random;

use super::session::require_login;
use crate::keystore::{AuditAnchor, KekInfo, KekState, KeystoreError};

const LABEL_PREFIX: &str = "zkvault-kek-v";
const PENDING_PREFIX: &str = "zkvault-kek-pending-v";
const TOMBSTONE_LABEL: &str = "zkvault-kek-destroyed";
/// A derivation master's destruction record: a private data object valued
/// `namespace || 0x00 || u32be version`.
const DESTROYED_MASTER_LABEL: &str = "zkvault-master-destroyed";
/// The audit anchor: a private data object valued `u64be counter || digest`.
const AUDIT_ANCHOR_LABEL: &str = "zkvault-audit-anchor";
pub(super) const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
pub(super) const WRAPPED_LEN: usize = IV_LEN + 32 + TAG_LEN;

/// Generates a new AES key for KEK `version`, labelled pending until [`claim`] relabels it.
pub(super) fn generate_pending(s: &Session, version: u32) -> Result<ObjectHandle, CkError> {
    s.generate_key(&Mechanism::AesKeyGen, &kek_template(version))
}

/// Makes the pending key `handle` KEK `version` if it is the only key object with that
/// `CKA_ID`; otherwise destroys it. Returns whether it was claimed.
pub(super) fn claim(s: &Session, version: u32, handle: ObjectHandle) -> Result<bool, CkError> {
    require_login(s)?;
    let same_id = s.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Id(version.to_be_bytes().to_vec()),
    ])?;
    if same_id == [handle] {
        s.update_attributes(handle, &[Attribute::Label(kek_label(version).into_bytes())])?;
        return Ok(true);
    }
    match s.destroy_object(handle) {
        // Already gone (a retry of this closure, or someone cleaning up): fine.
        Ok(()) | Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The key object of KEK `version`, if it is present and not tombstoned.
pub(super) fn find_kek(s: &Session, version: u32) -> Result<Option<ObjectHandle>, CkError> {
    require_login(s)?;
    let found = s.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Id(version.to_be_bytes().to_vec()),
        Attribute::Label(kek_label(version).into_bytes()),
    ])?;
    let Some(&h) = found.first() else {
        return Ok(None);
    };
    if find_tombstones(s)?.contains(&version) {
        return Ok(None);
    }
    Ok(Some(h))
}

/// Every KEK on the token with the state its objects show, in ascending order.
pub(super) fn list(s: &Session) -> Result<Vec<KekInfo>, CkError> {
    let (objects, tombstones) = (kek_objects(s)?, find_tombstones(s)?);
    let mut all = BTreeMap::new();
    for o in objects.into_iter().filter(|o| !o.pending) {
        all.insert(
            o.version,
            if o.encrypt {
                KekState::Active
            } else {
                KekState::Retired
            },
        );
    }
    for v in tombstones {
        all.insert(v, KekState::Destroyed);
    }
    Ok(all
        .into_iter()
        .map(|(version, state)| KekInfo { version, state })
        .collect())
}

/// Every version any key object, pending or finished, or tombstone holds.
pub(super) fn used_versions(s: &Session) -> Result<Vec<u32>, CkError> {
    let keys = kek_objects(s)?.into_iter().map(|o| o.version);
    Ok(keys.chain(find_tombstones(s)?).collect())
}

/// Retires the KEK whose key object is `key`: the token stops encrypting with it.
pub(super) fn retire(s: &Session, key: ObjectHandle) -> Result<(), CkError> {
    s.update_attributes(key, &[Attribute::Encrypt(false)])
}

/// Destroys KEK `version`, whose key object is `key`: its tombstone first (unless a retry
/// already wrote it), so the version stays listed and is never reused.
pub(super) fn destroy(s: &Session, version: u32, key: ObjectHandle) -> Result<(), CkError> {
    if !find_tombstones(s)?.contains(&version) {
        s.create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Label(TOMBSTONE_LABEL.as_bytes().to_vec()),
            Attribute::Value(version.to_be_bytes().to_vec()),
        ])?;
    }
    s.destroy_object(key)
}

/// The versions the tombstones on the token name.
pub(super) fn find_tombstones(s: &Session) -> Result<Vec<u32>, CkError> {
    require_login(s)?;
    let handles = s.find_objects(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Label(TOMBSTONE_LABEL.as_bytes().to_vec()),
    ])?;
    let mut versions = Vec::with_capacity(handles.len());
    for h in handles {
        for a in s.get_attributes(h, &[AttributeType::Value])? {
            if let Attribute::Value(id) = a {
                versions.extend(version_from_id(&id));
            }
        }
    }
    Ok(versions)
}

/// Records master `(namespace, version)` as destroyed, unless it already is.
pub(super) fn record_destroyed_master(
    s: &Session,
    namespace: &str,
    version: u32,
) -> Result<(), CkError> {
    if destroyed_masters(s)?.contains(&(namespace.to_owned(), version)) {
        return Ok(());
    }
    let mut value = namespace.as_bytes().to_vec();
    value.push(0);
    value.extend_from_slice(&version.to_be_bytes());
    s.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Label(DESTROYED_MASTER_LABEL.as_bytes().to_vec()),
        Attribute::Value(value),
    ])?;
    Ok(())
}

/// The masters the token's destruction records name; a record it cannot read is skipped (no
/// zkvault writes one).
pub(super) fn destroyed_masters(s: &Session) -> Result<BTreeSet<(String, u32)>, CkError> {
    require_login(s)?;
    // Private objects only: a public one can be made without the PIN, by anyone sharing the
    // token, and must not destroy anything.
    let handles = s.find_objects(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Label(DESTROYED_MASTER_LABEL.as_bytes().to_vec()),
    ])?;
    let mut destroyed = BTreeSet::new();
    for h in handles {
        for a in s.get_attributes(h, &[AttributeType::Value])? {
            if let Attribute::Value(v) = a {
                destroyed.extend(parse_destroyed(&v));
            }
        }
    }
    Ok(destroyed)
}

fn parse_destroyed(value: &[u8]) -> Option<(String, u32)> {
    let split = value.len().checked_sub(5)?;
    let (ns, rest) = value.split_at(split);
    let version = u32::from_be_bytes(rest.get(1..)?.try_into().ok()?);
    (rest[0] == 0).then(|| {
        std::str::from_utf8(ns)
            .ok()
            .map(|ns| (ns.to_owned(), version))
    })?
}

/// Every audit anchor on the token with its object: one, unless a crash or a race left more. An
/// object it cannot read is skipped (no zkvault writes one).
pub(super) fn audit_anchors(s: &Session) -> Result<Vec<(ObjectHandle, AuditAnchor)>, CkError> {
    require_login(s)?;
    // Private objects only: a public one can be made without the PIN.
    let handles = s.find_objects(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Label(AUDIT_ANCHOR_LABEL.as_bytes().to_vec()),
    ])?;
    let mut anchors = Vec::with_capacity(handles.len());
    for h in handles {
        for a in s.get_attributes(h, &[AttributeType::Value])? {
            if let Attribute::Value(v) = a {
                anchors.extend(AuditAnchor::from_bytes(&v).map(|anchor| (h, anchor)));
            }
        }
    }
    Ok(anchors)
}

/// Records `next` as the audit anchor unless that moves it backwards (the inner error).
pub(super) fn advance_audit_anchor(
    s: &Session,
    next: &AuditAnchor,
) -> Result<Result<(), KeystoreError>, CkError> {
    let recorded: Vec<_> = audit_anchors(s)?.into_iter().map(|(_, a)| a).collect();
    match next.advances(&recorded) {
        Ok(true) => {}
        Ok(false) => return Ok(Ok(())),
        Err(e) => return Ok(Err(e)),
    }
    let mine = s.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Label(AUDIT_ANCHOR_LABEL.as_bytes().to_vec()),
        Attribute::Value(next.to_bytes().to_vec()),
    ])?;
    // No lock spans processes: another instance may have recorded an anchor meanwhile. Checked
    // again against everything else on the token, the loser takes its object back, so two
    // racers never both succeed with one counter. (That needs a token that shows a process the
    // objects others made; SoftHSM2 may hide them from a process that just wrote itself.)
    let after = audit_anchors(s)?;
    let others: Vec<_> = after
        .iter()
        .filter(|(h, _)| *h != mine)
        .map(|(_, a)| *a)
        .collect();
    if let Err(e) = next.advances(&others) {
        destroy_if_present(s, mine)?;
        return Ok(Err(e));
    }
    for (h, a) in after {
        if a.counter < next.counter {
            destroy_if_present(s, h)?;
        }
    }
    Ok(Ok(()))
}

/// Destroys `h`, unless another instance already did.
fn destroy_if_present(s: &Session, h: ObjectHandle) -> Result<(), CkError> {
    match s.destroy_object(h) {
        Ok(()) | Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A key object that is, or is becoming, a KEK.
struct KekObject {
    version: u32,
    /// Still labelled pending: being created, or left by a crash while it was.
    pending: bool,
    encrypt: bool,
}

/// Every KEK key object on the token, pending ones included.
fn kek_objects(s: &Session) -> Result<Vec<KekObject>, CkError> {
    require_login(s)?;
    // Private objects only, as for every object zkvault reads: a public one (a key of a
    // chosen value, a tombstone) can be made without the PIN.
    let handles = s.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Private(true),
    ])?;
    let mut objects = Vec::with_capacity(handles.len());
    for h in handles {
        let attrs = s.get_attributes(
            h,
            &[
                AttributeType::Label,
                AttributeType::Id,
                AttributeType::Encrypt,
            ],
        )?;
        let (mut label, mut id, mut encrypt) = (None, None, false);
        for a in attrs {
            match a {
                Attribute::Label(l) => label = Some(l),
                Attribute::Id(i) => id = Some(i),
                Attribute::Encrypt(e) => encrypt = e,
                _ => {}
            }
        }
        let (Some(version), Some(label)) = (id.as_deref().and_then(version_from_id), label) else {
            continue;
        };
        let pending = if label == kek_label(version).as_bytes() {
            false
        } else if label == pending_label(version).as_bytes() {
            true
        } else {
            continue;
        };
        objects.push(KekObject {
            version,
            pending,
            encrypt,
        });
    }
    Ok(objects)
}

/// A new KEK's attributes, labelled pending until [`claim`] relabels it.
fn kek_template(version: u32) -> [Attribute; 16] {
    [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(Ulong::from(32)),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Label(pending_label(version).into_bytes()),
        Attribute::Id(version.to_be_bytes().to_vec()),
    ]
}

fn kek_label(version: u32) -> String {
    format!("{LABEL_PREFIX}{version}")
}

fn pending_label(version: u32) -> String {
    format!("{PENDING_PREFIX}{version}")
}

fn version_from_id(id: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(id.try_into().ok()?))
}

/// Runs one AES-GCM encryption through `encrypt` and returns `iv || ciphertext || tag`, with the
/// IV as it is in the mechanism's IV buffer *after* the call: a token may generate the IV itself
/// and write it there (PKCS#11 3.0, and some HSMs in FIPS mode), in which case `iv` is only the
/// buffer's starting value and emitting it would make the blob unopenable.
pub(super) fn gcm_seal(
    iv: [u8; IV_LEN],
    aad: &[u8],
    encrypt: impl FnOnce(&mut Mechanism<'_>) -> Result<Vec<u8>, CkError>,
) -> Result<Vec<u8>, CkError> {
    let mut iv = iv;
    let ct = {
        let mut mechanism = Mechanism::AesGcm(GcmParams::new(&mut iv, aad, Ulong::from(128))?);
        encrypt(&mut mechanism)?
    };
    let mut out = Vec::with_capacity(IV_LEN + ct.len());
    out.extend_from_slice(&iv);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Decrypts `iv || ciphertext || tag` with AES-GCM under `key`.
pub(super) fn gcm_open(
    s: &Session,
    key: ObjectHandle,
    blob: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CkError> {
    let (iv, ct) = blob.split_at(IV_LEN);
    let mut iv: [u8; IV_LEN] = iv.try_into().expect("IV_LEN bytes");
    let params = GcmParams::new(&mut iv, aad, Ulong::from(128))?;
    s.decrypt(&Mechanism::AesGcm(params), key, ct)
        .map(Zeroizing::new)
}

/// Health probe, run when `C_Decrypt` failed with a code that does not say why: a fresh
/// session (non-token) AES-256 key, an AES-GCM round trip of 32 random bytes with random AAD,
/// the key destroyed. True if the token did it all and gave the bytes back.
pub(super) fn token_works(s: &Session) -> bool {
    match gcm_probe(s) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!(%why, "PKCS#11 health probe failed after C_Decrypt failed");
            false
        }
    }
}

fn gcm_probe(s: &Session) -> Result<(), String> {
    let rng = |_| "OS random number generator failed".to_owned();
    let data = Zeroizing::new(random::array::<32>().map_err(rng)?);
    let aad = random::array::<16>().map_err(rng)?;
    let iv = random::array::<IV_LEN>().map_err(rng)?;
    let ck = |e: CkError| e.to_string();
    let key = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(Ulong::from(32)),
                Attribute::Token(false),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .map_err(ck)?;
    let round_trip = gcm_seal(iv, &aad, |m| s.encrypt(&*m, key, &data[..]))
        .and_then(|sealed| gcm_open(s, key, &sealed, &aad));
    let destroyed = s.destroy_object(key);
    match round_trip.map_err(ck)? {
        plain if plain[..] == data[..] => {}
        _ => return Err("AES-GCM round trip returned other bytes".into()),
    }
    destroyed.map_err(ck)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ids_are_four_bytes_big_endian() {
        assert_eq!(version_from_id(&7u32.to_be_bytes()), Some(7));
        assert_eq!(version_from_id(&[0, 7]), None);
        assert_eq!(kek_label(12), "zkvault-kek-v12");
    }

    /// A token that generates the IV and writes it into the parameters, as some HSMs do:
    /// the blob must carry that IV, not the one we put in.
    #[test]
    fn gcm_seal_emits_the_iv_the_token_used() {
        let host_iv = [0x11; IV_LEN];
        let token_iv = [0xEE; IV_LEN];
        let blob = gcm_seal(host_iv, b"aad", |mechanism| {
            let Mechanism::AesGcm(params) = mechanism else {
                panic!("not AES-GCM");
            };
            assert_eq!(params.aad(), b"aad");
            assert_eq!(u64::from(params.tag_bits()), 128);
            // What C_Encrypt does through CK_GCM_PARAMS.pIv.
            assert_eq!(params.iv(), host_iv);
            params.iv().copy_from_slice(&token_iv);
            Ok(vec![0xCC; 48])
        })
        .unwrap();
        assert_eq!(blob.len(), WRAPPED_LEN);
        assert_eq!(blob[..IV_LEN], token_iv);
        assert_eq!(blob[IV_LEN..], [0xCC; 48]);
    }
}
