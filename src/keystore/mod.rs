//! Keystores hold the KEKs that wrap every derivation master and index key.
//!
//! One trait, two implementations: [`soft`] (a sealed file, the embedded default) and
//! [`pkcs11`] (any PKCS#11 HSM). Both pass the same conformance suite (`tests/keystore_conformance.rs`).
//! All methods block (file I/O, Argon2, HSM calls): callers run them off the async executor.

mod kek_state;
pub mod pkcs11;
mod signing;
pub mod soft;

use std::collections::BTreeSet;
use std::path::Path;

use thiserror::Error;
use zeroize::Zeroizing;
use zkvault_core::{Secret32, WrapContext};

use crate::secret::SecretString;
pub use crate::states::KekState;
pub use signing::{NewSigningKey, SigningKeyRef, EC_POINT_LEN, SIGNATURE_LEN};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekInfo {
    pub version: u32,
    pub state: KekState,
}

#[derive(Debug, Error)]
pub enum KeystoreError {
    /// The keystore cannot be reached or refused the session (HSM down, token missing, I/O).
    #[error("keystore unavailable: {0}")]
    Unavailable(String),
    #[error("KEK version {0} does not exist")]
    UnknownVersion(u32),
    /// The operation is not allowed in the KEK's current state (e.g. wrapping with a retired KEK,
    /// perhaps retired by another process since this one looked).
    #[error("KEK version {version} is {state:?}; operation not allowed")]
    State { version: u32, state: KekState },
    /// A wrapped key failed authentication: wrong KEK, wrong context, or altered bytes.
    #[error("wrapped key failed authentication")]
    Unwrap,
    /// The soft keystore's passphrase did not open its file.
    #[error("wrong passphrase, or the keystore file was altered")]
    BadPassphrase,
    /// The keystore's own storage is damaged or unreadable as a keystore.
    #[error("keystore corrupt: {0}")]
    Corrupt(String),
    #[error("keystore configuration: {0}")]
    Config(String),
    /// An audit anchor older than the one recorded, or another at the same counter: the
    /// database was rolled back, or two writers raced.
    #[error("the audit anchor would move back: the keystore recorded checkpoint {recorded}")]
    AnchorRegression { recorded: u64 },
}

/// The newest audit checkpoint as the keystore remembers it: its counter and the SHA-256 digest
/// of its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditAnchor {
    pub counter: u64,
    pub digest: [u8; 32],
}

impl AuditAnchor {
    /// Length of [`AuditAnchor::to_bytes`]: `u64be counter || digest`.
    const LEN: usize = 8 + 32;

    fn to_bytes(self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        out[..8].copy_from_slice(&self.counter.to_be_bytes());
        out[8..].copy_from_slice(&self.digest);
        out
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        let (counter, digest) = b.split_first_chunk::<8>()?;
        Some(AuditAnchor {
            counter: u64::from_be_bytes(*counter),
            digest: digest.try_into().ok()?,
        })
    }

    /// Whether `self` may be recorded over `recorded`, every anchor the keystore holds (one,
    /// unless a crash or a race left more): `Ok(false)` if it is already there, an error if any
    /// of them is newer or has its counter with another digest.
    fn advances(&self, recorded: &[AuditAnchor]) -> Result<bool, KeystoreError> {
        let behind = |r: &AuditAnchor| {
            r.counter > self.counter || (r.counter == self.counter && r.digest != self.digest)
        };
        if recorded.iter().any(behind) {
            let newest = recorded.iter().map(|r| r.counter).max().unwrap_or_default();
            return Err(KeystoreError::AnchorRegression { recorded: newest });
        }
        Ok(!recorded.contains(self))
    }

    /// The newest of `anchors`; of two with one counter (left by a crash in a race), always the
    /// same one.
    fn newest(anchors: impl IntoIterator<Item = AuditAnchor>) -> Option<AuditAnchor> {
        anchors.into_iter().max_by_key(|a| (a.counter, a.digest))
    }
}

/// What every keystore offers the vault. Implementations are shared across threads.
pub trait Keystore: Send + Sync {
    /// Short name for logs and `/v1/keys` ("soft", "pkcs11").
    fn kind(&self) -> &'static str;

    /// Which keystore this is, stable across restarts and paths: `pkcs11:<token label>:<serial>`
    /// or `soft:<file id>`. Recorded beside every KEK version in the database.
    fn id(&self) -> String;

    /// Creates a new active KEK numbered above both this keystore's versions and `floor` (the
    /// highest version the deployment ever used, in any keystore, so numbers are never reused);
    /// the previous active version becomes retired. Returns the new version.
    fn create_kek_after(&self, floor: u32) -> Result<u32, KeystoreError>;

    /// [`Keystore::create_kek_after`] with no floor: the next of this keystore's own versions.
    fn create_kek(&self) -> Result<u32, KeystoreError> {
        self.create_kek_after(0)
    }

    /// Every KEK version the keystore knows, in ascending order, destroyed ones included.
    fn list_keks(&self) -> Result<Vec<KekInfo>, KeystoreError>;

    /// Wraps a 32-byte secret under an active KEK, binding `ctx` as associated data.
    fn wrap(
        &self,
        kek_version: u32,
        ctx: &WrapContext,
        secret: &Secret32,
    ) -> Result<Vec<u8>, KeystoreError>;

    /// Unwraps with an active or retired KEK; fails with [`KeystoreError::Unwrap`] if `ctx` or the
    /// bytes differ from the wrap.
    fn unwrap(
        &self,
        kek_version: u32,
        ctx: &WrapContext,
        wrapped: &[u8],
    ) -> Result<Secret32, KeystoreError>;

    /// Active → retired (unwrap only).
    fn retire_kek(&self, version: u32) -> Result<(), KeystoreError>;

    /// Retired → destroyed: the key material is deleted for good.
    fn destroy_kek(&self, version: u32) -> Result<(), KeystoreError>;

    /// A cheap liveness check for `/readyz`.
    fn check(&self) -> Result<(), KeystoreError>;

    /// Records, for good, that derivation master `(namespace, version)` was destroyed. The
    /// keystore, not the database, remembers it: a database restored from a backup taken before
    /// the destruction cannot bring the master back. Idempotent.
    fn record_destroyed(&self, namespace: &str, version: u32) -> Result<(), KeystoreError>;

    /// Every master destruction recorded, as `(namespace, version)`.
    fn destroyed_masters(&self) -> Result<BTreeSet<(String, u32)>, KeystoreError>;

    /// The anchor last recorded, if any.
    fn audit_anchor(&self) -> Result<Option<AuditAnchor>, KeystoreError>;

    /// Records `anchor` as the newest. Never moves backwards: a counter below the recorded one,
    /// or the same counter with a different digest, is refused with
    /// [`KeystoreError::AnchorRegression`] and changes nothing; the same anchor again is a no-op.
    /// The keystore, not the database, remembers it: a rolled-back database is detected.
    fn advance_audit_anchor(&self, anchor: &AuditAnchor) -> Result<(), KeystoreError>;

    /// Generates an ES256 (P-256) key pair for signer key `ctx` (namespace = the signer, kind
    /// [`KeyKind::SigningKey`](zkvault_core::KeyKind), version). A token generates it on the
    /// token; the soft keystore seals it under `kek_version`.
    fn generate_signing_key(
        &self,
        kek_version: u32,
        ctx: &WrapContext,
    ) -> Result<NewSigningKey, KeystoreError>;

    /// Signs a SHA-256 `digest` with signer key `ctx`, answering the raw `r || s`.
    fn sign_digest(
        &self,
        ctx: &WrapContext,
        key: &SigningKeyRef,
        digest: &[u8; 32],
    ) -> Result<[u8; SIGNATURE_LEN], KeystoreError>;

    /// Deletes a signing key's private half where the keystore holds it (a token object); a
    /// sealed key is gone once its row drops the sealed bytes. Idempotent.
    fn destroy_signing_key(&self, key: &SigningKeyRef) -> Result<(), KeystoreError>;

    /// The active KEK version, if any.
    fn active_kek(&self) -> Result<Option<u32>, KeystoreError> {
        Ok(self
            .list_keks()?
            .into_iter()
            .rev()
            .find(|k| k.state == KekState::Active)
            .map(|k| k.version))
    }
}

/// Longest namespace a destruction record holds: a policy's names are far shorter.
pub const MAX_LEDGER_NAMESPACE: usize = 255;

fn check_ledger_namespace(namespace: &str) -> Result<(), KeystoreError> {
    if namespace.is_empty() || namespace.len() > MAX_LEDGER_NAMESPACE {
        return Err(KeystoreError::Config(format!(
            "a destroyed master's namespace must be 1-{MAX_LEDGER_NAMESPACE} bytes"
        )));
    }
    Ok(())
}

/// Reads a secret (passphrase, PIN) from `file` if given, else from the environment variable
/// `env`; never from argv, where `ps` shows it. One trailing newline of a file is dropped.
pub(crate) fn secret_from_env_or_file(
    file: Option<&Path>,
    env: &str,
    what: &str,
) -> Result<SecretString, KeystoreError> {
    let mut secret = match file {
        Some(path) => {
            let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
                KeystoreError::Config(format!(
                    "cannot read {what} file {}: {}",
                    path.display(),
                    e.kind()
                ))
            })?);
            let text = std::str::from_utf8(&bytes).map_err(|_| {
                KeystoreError::Config(format!("{what} file {} is not UTF-8", path.display()))
            })?;
            Zeroizing::new(text.to_owned())
        }
        None => Zeroizing::new(std::env::var(env).map_err(|_| {
            KeystoreError::Config(format!("{what} not set: give a file or set {env}"))
        })?),
    };
    if secret.ends_with('\n') {
        secret.pop();
        if secret.ends_with('\r') {
            secret.pop();
        }
    }
    if secret.is_empty() {
        return Err(KeystoreError::Config(format!("{what} is empty")));
    }
    Ok(SecretString::new(std::mem::take(&mut *secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor(counter: u64, byte: u8) -> AuditAnchor {
        AuditAnchor {
            counter,
            digest: [byte; 32],
        }
    }

    #[test]
    fn anchor_bytes_round_trip() {
        let a = anchor(0x0102_0304_0506_0708, 9);
        let bytes = a.to_bytes();
        assert_eq!(bytes[..8], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(AuditAnchor::from_bytes(&bytes), Some(a));
        assert_eq!(AuditAnchor::from_bytes(&bytes[1..]), None);
        assert_eq!(
            AuditAnchor::from_bytes(&[bytes.as_slice(), &[0]].concat()),
            None
        );
    }

    #[test]
    fn an_anchor_advances_only_past_every_recorded_one() {
        let regression = |r: Result<bool, KeystoreError>| match r {
            Err(KeystoreError::AnchorRegression { recorded }) => recorded,
            other => panic!("expected a regression, got {other:?}"),
        };
        assert!(anchor(0, 0).advances(&[]).unwrap());
        assert!(anchor(5, 5).advances(&[anchor(4, 4)]).unwrap());
        assert!(!anchor(5, 5).advances(&[anchor(5, 5)]).unwrap());
        assert!(!anchor(5, 5)
            .advances(&[anchor(3, 3), anchor(5, 5)])
            .unwrap());
        assert_eq!(regression(anchor(4, 4).advances(&[anchor(5, 5)])), 5);
        assert_eq!(regression(anchor(5, 6).advances(&[anchor(5, 5)])), 5);
        // Left by a crash in a race: every one of them counts, the newest is reported.
        let left = [anchor(7, 1), anchor(7, 2), anchor(6, 6)];
        assert_eq!(regression(anchor(7, 1).advances(&left)), 7);
        assert!(anchor(8, 8).advances(&left).unwrap());
        assert_eq!(AuditAnchor::newest(left), Some(anchor(7, 2)));
        assert_eq!(AuditAnchor::newest([]), None);
    }
}
