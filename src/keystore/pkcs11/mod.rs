//! PKCS#11 keystore: KEKs are AES-256 token objects generated inside the HSM.
//!
//! `objects.rs` says how a KEK and its lifecycle look on the token (labels, `CKA_ID`,
//! `CKA_ENCRYPT`, tombstones) and how it wraps; `session.rs` keeps the module, the logged-in
//! sessions and their retries; the lifecycle rules themselves are `kek_state`'s.
//!
//! **Creating**: other instances may share the token, so a new version is claimed, not
//! assumed: the key is generated as `zkvault-kek-pending-v{n}` (invisible to listing and
//! wrapping), then, if it is the only key object with its `CKA_ID`, relabelled
//! `zkvault-kek-v{n}`; otherwise it is destroyed and the next free version tried. Of two
//! objects for one version, whichever looks second sees the first, so at most one is
//! claimed. Afterwards every active version but the newest is retired. A crash while
//! pending leaves an unused pending object behind; its version is skipped, never reused.

mod objects;
mod session;
mod signing_keys;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use zkvault_core::{random, Secret32, WrapContext};

use objects::{gcm_open, gcm_seal, token_works, IV_LEN, WRAPPED_LEN};
pub use session::module_context;
use session::{backoff, is_auth_failure, read, token_gate, unavailable, write, Gate, SessionPool};

use super::kek_state::{self, Op};
use super::{
    secret_from_env_or_file, signing, AuditAnchor, KekInfo, KekState, Keystore, KeystoreError,
    NewSigningKey, SigningKeyRef, SIGNATURE_LEN,
};
use crate::secret::SecretString;

/// Environment variable naming the PKCS#11 module; see [`Pkcs11Config::module_from_env`].
pub const MODULE_ENV: &str = "ZKVAULT_PKCS11_MODULE";
/// Module used when [`MODULE_ENV`] is unset: Debian's SoftHSM2.
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// Environment variable read by [`Pkcs11Config::pin_from_env_or_file`] when no file is given.
pub const PIN_ENV: &str = "ZKVAULT_PKCS11_PIN";

/// Versions `create_kek` tries before giving up when other instances keep taking them.
const CREATE_ATTEMPTS: u32 = 8;

/// Where the KEKs live. Holds the user PIN, so it implements neither `Debug` nor `Clone`.
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// Label of the token that holds the KEKs.
    pub token_label: String,
    /// User PIN.
    pub pin: SecretString,
}

impl Pkcs11Config {
    /// `ZKVAULT_PKCS11_MODULE`, else [`DEFAULT_MODULE`].
    pub fn module_from_env() -> PathBuf {
        std::env::var_os(MODULE_ENV).map_or_else(|| PathBuf::from(DEFAULT_MODULE), PathBuf::from)
    }

    /// Reads the user PIN: from `file` if given (one trailing newline dropped), else from
    /// `ZKVAULT_PKCS11_PIN`. Never from argv.
    pub fn pin_from_env_or_file(file: Option<&Path>) -> Result<SecretString, KeystoreError> {
        secret_from_env_or_file(file, PIN_ENV, "PKCS#11 PIN")
    }
}

/// The PKCS#11 keystore.
pub struct Pkcs11Keystore {
    sessions: SessionPool,
    token_label: String,
    handles: RwLock<BTreeMap<u32, ObjectHandle>>,
    /// Signing keys' private key objects, by `CKA_ID`.
    signing_handles: RwLock<BTreeMap<Vec<u8>, ObjectHandle>>,
    /// Key operations share it; lifecycle changes take it alone. SoftHSM's object store fails
    /// (CKR_GENERAL_ERROR, CKR_TEMPLATE_INCONSISTENT, CKR_ATTRIBUTE_VALUE_INVALID) when a token
    /// object is created or changed while other sessions of the process read, and lifecycle
    /// changes are rare enough to stop the world. It belongs to the token, not the keystore:
    /// every keystore open on the same token in this process shares it. It orders calls
    /// within a process only; versions are kept apart by `create_kek`'s claim, which also
    /// holds between processes.
    gate: Gate,
}

impl Pkcs11Keystore {
    /// Loads the module, finds the token by label and logs in. If a crash left more than one
    /// active KEK, all but the newest are retired.
    pub fn open(config: &Pkcs11Config) -> Result<Self, KeystoreError> {
        let sessions = SessionPool::open(&config.module, &config.token_label, &config.pin)?;
        let store = Pkcs11Keystore {
            gate: token_gate(&config.module, sessions.slot()),
            sessions,
            token_label: config.token_label.clone(),
            handles: RwLock::new(BTreeMap::new()),
            signing_handles: RwLock::new(BTreeMap::new()),
        };
        store.retire_stale_actives()?;
        Ok(store)
    }

    /// Retires every active KEK but the newest (left by a crash inside `create_kek`).
    fn retire_stale_actives(&self) -> Result<(), KeystoreError> {
        let _gate = write(&self.gate);
        let older = self.retire_all_but_newest_active()?;
        if !older.is_empty() {
            tracing::warn!(
                ?older,
                "more than one active KEK on the token; retired all but the newest"
            );
        }
        Ok(())
    }

    /// Retires every active version but the newest, as the token shows them now; returns the
    /// versions retired (callers hold the gate). Never retires the newest active version, so
    /// instances doing this concurrently agree on the one that stays.
    fn retire_all_but_newest_active(&self) -> Result<Vec<u32>, KeystoreError> {
        let older = kek_state::superseded(self.list()?);
        for &v in &older {
            self.retire(v)?;
        }
        Ok(older)
    }

    /// The version to try next: above every version the token holds in any form, pending
    /// keys and tombstones included.
    fn next_version(&self, floor: u32) -> Result<u32, KeystoreError> {
        let used = self
            .with_session(objects::used_versions)
            .map_err(unavailable)?;
        kek_state::next_version(used, floor)
    }

    /// Runs `f` on a pooled session, retried after the token lost sessions or handles; the
    /// handle cache is emptied whenever the pool says handles went stale.
    fn with_session<T>(&self, f: impl FnMut(&Session) -> Result<T, CkError>) -> Result<T, CkError> {
        self.sessions.run(f, || {
            write(&self.handles).clear();
            write(&self.signing_handles).clear();
        })
    }

    /// The private key object of signing key `id`, if on the token; cached.
    fn signing_handle(&self, s: &Session, id: &[u8]) -> Result<Option<ObjectHandle>, CkError> {
        if let Some(h) = read(&self.signing_handles).get(id) {
            return Ok(Some(*h));
        }
        let found = signing_keys::find(s, id)?;
        if let Some(h) = found {
            write(&self.signing_handles).insert(id.to_vec(), h);
        }
        Ok(found)
    }

    /// The key object of `version`, if present and not tombstoned; cached per version.
    fn key_handle(&self, s: &Session, version: u32) -> Result<Option<ObjectHandle>, CkError> {
        if let Some(h) = read(&self.handles).get(&version) {
            return Ok(Some(*h));
        }
        let found = objects::find_kek(s, version)?;
        if let Some(h) = found {
            write(&self.handles).insert(version, h);
        }
        Ok(found)
    }

    /// The error for a version whose key object is missing.
    fn missing(&self, version: u32) -> KeystoreError {
        match self.with_session(objects::find_tombstones) {
            Ok(t) if t.contains(&version) => KeystoreError::State {
                version,
                state: KekState::Destroyed,
            },
            Ok(_) => KeystoreError::UnknownVersion(version),
            Err(e) => unavailable(e),
        }
    }

    /// Retires `version` on the token (callers checked the lifecycle and hold the gate).
    fn retire(&self, version: u32) -> Result<(), KeystoreError> {
        let done = self
            .with_session(|s| match self.key_handle(s, version)? {
                Some(h) => objects::retire(s, h).map(|()| true),
                None => Ok(false),
            })
            .map_err(unavailable)?;
        if done {
            Ok(())
        } else {
            Err(self.missing(version))
        }
    }

    /// Every KEK on the token (callers hold the gate).
    fn list(&self) -> Result<Vec<KekInfo>, KeystoreError> {
        self.with_session(objects::list).map_err(unavailable)
    }

    /// The state of `version` as the token shows it now; `None` if it has no such KEK.
    fn state_of(&self, version: u32) -> Result<Option<KekState>, KeystoreError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|k| k.version == version)
            .map(|k| k.state))
    }
}

impl Keystore for Pkcs11Keystore {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn id(&self) -> String {
        let serial = self.sessions.token_serial();
        format!("pkcs11:{}:{serial}", self.token_label)
    }

    /// The gate is taken per step, not across them: the claim, not the gate, keeps versions
    /// apart (the same holds for another process, which the gate does not reach).
    fn create_kek_after(&self, floor: u32) -> Result<u32, KeystoreError> {
        for attempt in 0..CREATE_ATTEMPTS {
            let version = {
                let _gate = read(&self.gate);
                self.next_version(floor)?
            };
            let handle = {
                let _gate = write(&self.gate);
                self.with_session(|s| objects::generate_pending(s, version))
                    .map_err(unavailable)?
            };
            let claimed = {
                let _gate = write(&self.gate);
                self.with_session(|s| objects::claim(s, version, handle))
                    .map_err(unavailable)?
            };
            if claimed {
                let _gate = write(&self.gate);
                write(&self.handles).insert(version, handle);
                // The new key is active before the old one stops encrypting, so there is never
                // a moment without an active KEK; `open` repairs a crash in between.
                self.retire_all_but_newest_active()?;
                return Ok(version);
            }
            tracing::debug!(
                version,
                attempt,
                "another instance created the same KEK version; trying the next"
            );
            backoff(attempt);
        }
        Err(KeystoreError::Unavailable(format!(
            "no KEK version claimed in {CREATE_ATTEMPTS} attempts: other instances keep creating KEKs"
        )))
    }

    fn list_keks(&self) -> Result<Vec<KekInfo>, KeystoreError> {
        let _gate = read(&self.gate);
        self.list()
    }

    fn wrap(
        &self,
        kek_version: u32,
        ctx: &WrapContext,
        secret: &Secret32,
    ) -> Result<Vec<u8>, KeystoreError> {
        let _gate = read(&self.gate);
        let aad = ctx.aad();
        let iv = random::array::<IV_LEN>()
            .map_err(|_| KeystoreError::Unavailable("OS random number generator failed".into()))?;
        let result = self.with_session(|s| {
            let Some(h) = self.key_handle(s, kek_version)? else {
                return Ok(None);
            };
            gcm_seal(iv, &aad, |mechanism| {
                s.encrypt(&*mechanism, h, secret.expose())
            })
            .map(Some)
        });
        match result {
            Ok(Some(blob)) if blob.len() == WRAPPED_LEN => Ok(blob),
            // Unwrap would refuse it: fail now rather than store a key nothing can open.
            Ok(Some(blob)) => Err(KeystoreError::Unavailable(format!(
                "PKCS#11 AES-GCM returned {} bytes instead of {}",
                blob.len() - IV_LEN,
                WRAPPED_LEN - IV_LEN
            ))),
            Ok(None) => Err(self.missing(kek_version)),
            // CKA_ENCRYPT = false: the HSM refuses, whichever instance retired the key.
            Err(CkError::Pkcs11(RvError::KeyFunctionNotPermitted, _)) => {
                let state = kek_state::check(Op::Wrap, kek_version, self.state_of(kek_version)?)?;
                // A KEK the token lists as active yet refused is reported as a state error too.
                Err(KeystoreError::State {
                    version: kek_version,
                    state,
                })
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    fn unwrap(
        &self,
        kek_version: u32,
        ctx: &WrapContext,
        wrapped: &[u8],
    ) -> Result<Secret32, KeystoreError> {
        let _gate = read(&self.gate);
        let aad = ctx.aad();
        let result = self.with_session(|s| {
            let Some(h) = self.key_handle(s, kek_version)? else {
                return Ok(None);
            };
            if wrapped.len() != WRAPPED_LEN {
                return Ok(Some(None));
            }
            match gcm_open(s, h, wrapped, &aad) {
                Ok(plain) => Ok(Some(Some(plain))),
                Err(e) if is_auth_failure(&e, || token_works(s)) => Ok(Some(None)),
                Err(e) => Err(e),
            }
        });
        match result {
            Ok(Some(Some(plain))) => Secret32::from_slice(&plain).ok_or(KeystoreError::Unwrap),
            Ok(Some(None)) => Err(KeystoreError::Unwrap),
            Ok(None) => Err(self.missing(kek_version)),
            Err(e) => Err(unavailable(e)),
        }
    }

    fn retire_kek(&self, version: u32) -> Result<(), KeystoreError> {
        let _gate = write(&self.gate);
        kek_state::check(Op::Retire, version, self.state_of(version)?)?;
        self.retire(version)
    }

    fn destroy_kek(&self, version: u32) -> Result<(), KeystoreError> {
        let _gate = write(&self.gate);
        kek_state::check(Op::Destroy, version, self.state_of(version)?)?;
        self.with_session(|s| match self.key_handle(s, version)? {
            Some(h) => objects::destroy(s, version, h),
            None => Ok(()),
        })
        .map_err(unavailable)?;
        write(&self.handles).remove(&version);
        Ok(())
    }

    /// On the token; `kek_version` is not used (nothing is wrapped).
    fn generate_signing_key(
        &self,
        _kek_version: u32,
        _ctx: &WrapContext,
    ) -> Result<NewSigningKey, KeystoreError> {
        // Creates a token object: alone, as every object change here.
        let _gate = write(&self.gate);
        let id = random::array::<{ signing_keys::ID_LEN }>()
            .map_err(|_| KeystoreError::Unavailable("OS random number generator failed".into()))?
            .to_vec();
        let public = self
            .with_session(|s| signing_keys::generate(s, &id))
            .map_err(unavailable)?
            .ok_or_else(|| {
                KeystoreError::Unavailable("the token's new EC key is not a P-256 point".into())
            })?;
        Ok(NewSigningKey {
            public,
            key: SigningKeyRef::Token { id },
        })
    }

    fn sign_digest(
        &self,
        ctx: &WrapContext,
        key: &SigningKeyRef,
        digest: &[u8; 32],
    ) -> Result<[u8; SIGNATURE_LEN], KeystoreError> {
        let id = match key {
            SigningKeyRef::Token { id } => id,
            // Sealed by the soft keystore before a migration to this one: its KEKs unwrap it.
            SigningKeyRef::Sealed {
                kek_version,
                wrapped,
            } => return signing::sign_sealed(self, ctx, *kek_version, wrapped, digest),
        };
        let _gate = read(&self.gate);
        let signature = self
            .with_session(|s| match self.signing_handle(s, id)? {
                Some(h) => signing_keys::sign(s, h, digest).map(Some),
                None => Ok(None),
            })
            .map_err(unavailable)?
            .ok_or_else(|| KeystoreError::Config("the signing key is not on the token".into()))?;
        signature.try_into().map_err(|sig: Vec<u8>| {
            KeystoreError::Unavailable(format!(
                "CKM_ECDSA answered {} bytes, not {SIGNATURE_LEN}",
                sig.len()
            ))
        })
    }

    fn destroy_signing_key(&self, key: &SigningKeyRef) -> Result<(), KeystoreError> {
        let SigningKeyRef::Token { id } = key else {
            return Ok(());
        };
        let _gate = write(&self.gate);
        self.with_session(|s| signing_keys::destroy(s, id))
            .map_err(unavailable)?;
        write(&self.signing_handles).remove(id);
        Ok(())
    }

    fn check(&self) -> Result<(), KeystoreError> {
        self.with_session(|s| s.get_session_info().map(|_| ()))
            .map_err(unavailable)
    }

    fn record_destroyed(&self, namespace: &str, version: u32) -> Result<(), KeystoreError> {
        super::check_ledger_namespace(namespace)?;
        let _gate = read(&self.gate);
        self.with_session(|s| objects::record_destroyed_master(s, namespace, version))
            .map_err(unavailable)
    }

    fn destroyed_masters(&self) -> Result<BTreeSet<(String, u32)>, KeystoreError> {
        let _gate = read(&self.gate);
        self.with_session(objects::destroyed_masters)
            .map_err(unavailable)
    }

    fn audit_anchor(&self) -> Result<Option<AuditAnchor>, KeystoreError> {
        let _gate = read(&self.gate);
        let anchors = self
            .with_session(objects::audit_anchors)
            .map_err(unavailable)?;
        Ok(AuditAnchor::newest(anchors.into_iter().map(|(_, a)| a)))
    }

    /// Takes the gate alone: it creates and destroys token objects, and its read-then-write
    /// must not interleave with another of this process.
    fn advance_audit_anchor(&self, anchor: &AuditAnchor) -> Result<(), KeystoreError> {
        let _gate = write(&self.gate);
        self.with_session(|s| objects::advance_audit_anchor(s, anchor))
            .map_err(unavailable)?
    }
}
