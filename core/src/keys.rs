//! Secret key types of the hierarchy, and the public blind index.
//!
//! Secrets live in a boxed `Zeroizing` buffer: moving a key moves a pointer, not the bytes, so no
//! stray copy is left on the stack, and the one copy is wiped on drop. None of these types
//! implements `Debug`, `Clone` or `Serialize` (see `tests/secret_traits.rs`).

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::encoding::labelled;
use crate::{random, CryptoError, ResidentId};

pub const SALT_LEN: usize = 32;
const RK_INFO: &str = "zkvault:v1:resident-key";
const BI_LABEL: &str = "zkvault:v1:blind-index";
const TAG_LABEL: &str = "zkvault:v1:audit-tag";
const INTEGRITY_LABEL: &str = "zkvault:v1:integrity";

/// 32 secret bytes, zeroized on drop. The unit keystores wrap and unwrap.
pub struct Secret32(Box<Zeroizing<[u8; 32]>>);

impl Secret32 {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut boxed = Box::new(Zeroizing::new([0u8; 32]));
        boxed.copy_from_slice(&bytes);
        let mut bytes = bytes;
        zeroize::Zeroize::zeroize(&mut bytes);
        Secret32(boxed)
    }

    /// Copies from a slice that must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 32 {
            return None;
        }
        let mut boxed = Box::new(Zeroizing::new([0u8; 32]));
        boxed.copy_from_slice(bytes);
        Some(Secret32(boxed))
    }

    pub fn random() -> Result<Self, CryptoError> {
        let mut boxed = Box::new(Zeroizing::new([0u8; 32]));
        random::fill(boxed.as_mut_slice())?;
        Ok(Secret32(boxed))
    }

    /// The raw bytes, for handing to a cipher or a keystore. Never log or store them.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for Secret32 {
    /// Constant-time: secrets are never compared with an early-exit `==`.
    fn eq(&self, other: &Self) -> bool {
        self.expose()[..].ct_eq(&other.expose()[..]).into()
    }
}

/// A namespace's derivation master (DM): 32 secret bytes plus the public 32-byte HKDF salt.
pub struct DerivationMaster {
    key: Secret32,
    salt: [u8; SALT_LEN],
}

impl DerivationMaster {
    pub fn new(key: Secret32, salt: [u8; SALT_LEN]) -> Self {
        DerivationMaster { key, salt }
    }

    /// A fresh master from the OS CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(DerivationMaster {
            key: Secret32::random()?,
            salt: random::array()?,
        })
    }

    pub fn salt(&self) -> &[u8; SALT_LEN] {
        &self.salt
    }

    pub fn secret(&self) -> &Secret32 {
        &self.key
    }

    /// `RK = HKDF-SHA256(salt = dm_salt, ikm = DM, info = "zkvault:v1:resident-key" || lp(ns) || lp(id), L = 32)`
    pub fn resident_key(&self, namespace: &str, id: &ResidentId) -> ResidentKey {
        let info = Zeroizing::new(labelled(RK_INFO, &[namespace.as_bytes(), id.as_bytes()]));
        let hk = Hkdf::<Sha256>::new(Some(&self.salt), self.key.expose());
        let mut okm = Box::new(Zeroizing::new([0u8; 32]));
        hk.expand(&info, okm.as_mut_slice())
            .expect("32 bytes is a valid HKDF-SHA256 length");
        ResidentKey(Secret32(okm))
    }
}

/// The per-resident key derived from a DM; computed per request and never stored.
pub struct ResidentKey(pub(crate) Secret32);

impl ResidentKey {
    /// Builds a resident key from known bytes: for known-answer tests against other implementations.
    pub fn from_secret(secret: Secret32) -> Self {
        ResidentKey(secret)
    }

    pub fn secret(&self) -> &Secret32 {
        &self.0
    }
}

/// A record's data-encryption key: random per write, stored only wrapped under a resident key.
pub struct Dek(pub(crate) Secret32);

impl Dek {
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Dek(Secret32::random()?))
    }

    pub fn from_secret(secret: Secret32) -> Self {
        Dek(secret)
    }
}

/// A namespace's index key (IK): makes blind indexes, stable for the namespace's life.
pub struct IndexKey(Secret32);

impl IndexKey {
    pub fn new(secret: Secret32) -> Self {
        IndexKey(secret)
    }

    pub fn generate() -> Result<Self, CryptoError> {
        Ok(IndexKey(Secret32::random()?))
    }

    pub fn secret(&self) -> &Secret32 {
        &self.0
    }

    /// `BI = HMAC-SHA256(key = IK, msg = "zkvault:v1:blind-index" || lp(ns) || lp(id))`
    pub fn blind_index(&self, namespace: &str, id: &ResidentId) -> BlindIndex {
        let msg = Zeroizing::new(labelled(BI_LABEL, &[namespace.as_bytes(), id.as_bytes()]));
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.expose())
            .expect("HMAC accepts any key length");
        mac.update(&msg);
        BlindIndex(mac.finalize().into_bytes().into())
    }
}

impl IndexKey {
    /// A short keyed tag of a resident for the audit trail: an auditor can see that two
    /// accesses concern the same resident, without the ID or the (longer) blind index.
    /// `HMAC-SHA256(IK, "zkvault:v1:audit-tag" || lp(BI))`, first 8 bytes.
    pub fn audit_tag(&self, bi: &BlindIndex) -> [u8; 8] {
        let msg = labelled(TAG_LABEL, &[bi.as_bytes()]);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.expose())
            .expect("HMAC accepts any key length");
        mac.update(&msg);
        let full: [u8; 32] = mac.finalize().into_bytes().into();
        full[..8].try_into().expect("8 of 32 bytes")
    }
}

/// The deployment's integrity key: authenticates what the database holds but must not be able
/// to forge (credential and key-state rows, audit checkpoints). Stored only wrapped under a KEK.
pub struct IntegrityKey(Secret32);

impl IntegrityKey {
    pub fn new(secret: Secret32) -> Self {
        IntegrityKey(secret)
    }

    pub fn generate() -> Result<Self, CryptoError> {
        Ok(IntegrityKey(Secret32::random()?))
    }

    pub fn secret(&self) -> &Secret32 {
        &self.0
    }

    /// `HMAC-SHA256(key, "zkvault:v1:integrity" || lp(kind) || lp(message))`: `kind` keeps a
    /// MAC made for one sort of object from passing as another's.
    pub fn mac(&self, kind: &str, message: &[u8]) -> [u8; 32] {
        let msg = labelled(INTEGRITY_LABEL, &[kind.as_bytes(), message]);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.expose())
            .expect("HMAC accepts any key length");
        mac.update(&msg);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is [`IntegrityKey::mac`] of `message`, compared in constant time.
    pub fn verify(&self, kind: &str, message: &[u8], tag: &[u8]) -> bool {
        self.mac(kind, message)[..].ct_eq(tag).into()
    }
}

/// A resident's blind index within a namespace: the lookup key of their records.
///
/// Not secret in the way keys are (it is stored in clear), but it is a stable pseudonym of a
/// resident, so it has no `Debug` either and is never logged in full.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BlindIndex([u8; 32]);

impl BlindIndex {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        BlindIndex(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(BlindIndex(bytes.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrity_macs_bind_key_kind_and_message() {
        let key = IntegrityKey::new(Secret32::from_bytes([7; 32]));
        let tag = key.mac("credential", b"row");
        assert!(key.verify("credential", b"row", &tag));
        assert!(!key.verify("master", b"row", &tag));
        assert!(!key.verify("credential", b"rov", &tag));
        assert!(!key.verify("credential", b"row", &tag[..31]));
        let other = IntegrityKey::new(Secret32::from_bytes([8; 32]));
        assert!(!other.verify("credential", b"row", &tag));
    }
}
