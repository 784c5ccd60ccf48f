//! Soft keystore: every KEK, the ledger of destroyed masters and the audit anchor, in one file
//! sealed under an operator passphrase (the format, its Argon2 parameters and its atomic writes
//! are in `file.rs`).
//!
//! Several processes may share the file (the service and the CLI, two instances on one host).
//! A change takes an exclusive lock on `<file>.lock`, reloads the file if another process
//! rewrote it, applies the change and writes it back, so no writer works from a stale table.
//! Every other operation reloads first when the file changed (a `stat` compares inode, size and
//! mtime), so a KEK created or retired elsewhere is seen at once.

mod file;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;
use zkvault_core::{random, Secret32, WrapContext};

#[doc(hidden)]
pub use file::untrusted;
pub use file::Argon2Params;
use file::{io_error, rng_error, write_atomic, Kek, Ledger, Row, Sealer, NONCE_LEN, TAG_LEN};

use super::kek_state::{self, Op};
use super::{
    secret_from_env_or_file, signing, AuditAnchor, KekInfo, KekState, Keystore, KeystoreError,
    NewSigningKey, SigningKeyRef, SIGNATURE_LEN,
};
use crate::lockfile::FileLock;
use crate::secret::SecretString;

/// How long a change waits for another process's change to the same file.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// nonce || ciphertext of a 32-byte secret || tag.
const WRAPPED_LEN: usize = NONCE_LEN + 32 + TAG_LEN;

/// Environment variable read by [`passphrase_from_env_or_file`] when no file is given.
pub const PASSPHRASE_ENV: &str = "ZKVAULT_PASSPHRASE";

/// Reads the operator passphrase: from `file` if given (one trailing newline dropped), else
/// from `ZKVAULT_PASSPHRASE`. Never from argv.
pub fn passphrase_from_env_or_file(file: Option<&Path>) -> Result<SecretString, KeystoreError> {
    secret_from_env_or_file(file, PASSPHRASE_ENV, "passphrase")
}

/// Options for [`SoftKeystore::create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftKeystoreOptions {
    pub argon2: Argon2Params,
}

impl Default for SoftKeystoreOptions {
    fn default() -> Self {
        SoftKeystoreOptions {
            argon2: Argon2Params::DEFAULT,
        }
    }
}

impl SoftKeystoreOptions {
    /// The cheapest allowed parameters ([`Argon2Params::FLOOR`]), to keep test suites fast.
    /// Never for a real keystore.
    pub fn for_tests() -> Self {
        SoftKeystoreOptions {
            argon2: Argon2Params::FLOOR,
        }
    }
}

struct State {
    keks: BTreeMap<u32, Kek>,
    destroyed: Ledger,
    anchor: Option<AuditAnchor>,
    /// The file as it was when `keks` was read or written: a different one means another
    /// process changed it.
    loaded: Option<FileSig>,
}

impl State {
    fn infos(&self) -> impl Iterator<Item = KekInfo> + '_ {
        self.keks.iter().map(|(v, k)| KekInfo {
            version: *v,
            state: k.state,
        })
    }
}

/// What tells one version of the file from another: every write renames a new inode in.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileSig {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i64,
}

fn file_sig(path: &Path) -> Result<FileSig, KeystoreError> {
    let m = fs::metadata(path).map_err(|e| io_error("stat", path, e))?;
    Ok(FileSig {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
    })
}

/// The soft keystore. Holds the unlocked KEKs and the derived file key in zeroizing memory.
pub struct SoftKeystore {
    path: PathBuf,
    sealer: Sealer,
    state: RwLock<State>,
}

impl SoftKeystore {
    /// Creates a new, empty keystore file at `path`; refuses if the file exists.
    /// No KEK is created: call [`Keystore::create_kek`].
    pub fn create(
        path: &Path,
        passphrase: &SecretString,
        opts: SoftKeystoreOptions,
    ) -> Result<Self, KeystoreError> {
        opts.argon2.check().map_err(KeystoreError::Config)?;
        if passphrase.expose().is_empty() {
            return Err(KeystoreError::Config("passphrase is empty".into()));
        }
        let store = SoftKeystore {
            path: path.to_owned(),
            sealer: Sealer::new(passphrase, opts.argon2)?,
            state: RwLock::new(State {
                keks: BTreeMap::new(),
                destroyed: Ledger::new(),
                anchor: None,
                loaded: None,
            }),
        };
        let sealed = store.sealer.seal(&[], &Ledger::new(), None)?;
        write_atomic(path, &sealed, true)?;
        store.write().loaded = Some(file_sig(path)?);
        Ok(store)
    }

    /// Opens an existing keystore file. Never writes: a wrong passphrase or a damaged file
    /// leaves it as it was.
    pub fn open(path: &Path, passphrase: &SecretString) -> Result<Self, KeystoreError> {
        // The real file, not a symlink to it (a mounted secret): every process then locks the
        // same lock file, and a write replaces the file rather than the link.
        let path = &fs::canonicalize(path).map_err(|e| io_error("resolve", path, e))?;
        let sig = file_sig(path)?;
        let bytes = fs::read(path).map_err(|e| io_error("read", path, e))?;
        let (sealer, contents) = Sealer::open(&bytes, passphrase)?;
        Ok(SoftKeystore {
            path: path.to_owned(),
            sealer,
            state: RwLock::new(State {
                keks: contents.keks,
                destroyed: contents.destroyed,
                anchor: contents.anchor,
                loaded: Some(sig),
            }),
        })
    }

    /// Reloads the table if another process rewrote the file since this one last read or
    /// wrote it.
    fn refresh(&self) -> Result<(), KeystoreError> {
        let sig = file_sig(&self.path)?;
        if self.read().loaded == Some(sig) {
            return Ok(());
        }
        let mut state = self.write();
        if state.loaded == Some(sig) {
            return Ok(()); // another thread reloaded meanwhile
        }
        let bytes = fs::read(&self.path).map_err(|e| io_error("read", &self.path, e))?;
        let contents = self.sealer.reopen(&bytes)?;
        (state.keks, state.destroyed, state.anchor) =
            (contents.keks, contents.destroyed, contents.anchor);
        // The signature from before the read: if the file changed again meanwhile, the next
        // call reloads once more.
        state.loaded = Some(sig);
        Ok(())
    }

    /// Runs a change of the table under the cross-process lock, on the file's latest content.
    fn change<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, KeystoreError>,
    ) -> Result<T, KeystoreError> {
        let lock_path = PathBuf::from(format!("{}.lock", self.path.display()));
        let _lock = FileLock::acquire(&lock_path, LOCK_WAIT)
            .map_err(|e| KeystoreError::Unavailable(e.to_string()))?;
        self.refresh()?;
        let mut state = self.write();
        let out = f(&mut state)?;
        state.loaded = Some(file_sig(&self.path)?);
        Ok(out)
    }

    /// Retires or destroys KEK `version`, if its state allows `op`.
    fn transition(&self, op: Op, version: u32) -> Result<(), KeystoreError> {
        self.change(|state| {
            let to = kek_state::check(op, version, state.keks.get(&version).map(|k| k.state))?;
            self.persist(state, |rows| set_row(rows, version, to))?;
            if let Some(k) = state.keks.get_mut(&version) {
                k.state = to;
                if to == KekState::Destroyed {
                    k.key = None; // Secret32 zeroizes on drop
                }
            }
            Ok(())
        })
    }

    /// The file this keystore lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The Argon2 parameters of the open file.
    pub fn argon2_params(&self) -> Argon2Params {
        self.sealer.params()
    }

    /// Persists the table as `edit` changes it, then returns; the caller applies the same
    /// change in memory only after the file is safely on disk.
    fn persist<'a>(
        &self,
        state: &'a State,
        edit: impl FnOnce(&mut Vec<Row<'a>>),
    ) -> Result<(), KeystoreError> {
        self.persist_with(state, edit, &state.destroyed, state.anchor.as_ref())
    }

    /// [`SoftKeystore::persist`] with `destroyed` as the ledger and `anchor` as the anchor.
    fn persist_with<'a>(
        &self,
        state: &'a State,
        edit: impl FnOnce(&mut Vec<Row<'a>>),
        destroyed: &Ledger,
        anchor: Option<&AuditAnchor>,
    ) -> Result<(), KeystoreError> {
        let mut rows: Vec<_> = state
            .keks
            .iter()
            .map(|(v, k)| (*v, k.state, k.key.as_ref()))
            .collect();
        edit(&mut rows);
        let sealed = self.sealer.seal(&rows, destroyed, anchor)?;
        write_atomic(&self.path, &sealed, false)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave the table half-edited: edits happen in
        // single assignments after persisting, so a poisoned lock is still consistent.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Keystore for SoftKeystore {
    fn kind(&self) -> &'static str {
        "soft"
    }

    fn id(&self) -> String {
        self.sealer.id()
    }

    fn create_kek_after(&self, floor: u32) -> Result<u32, KeystoreError> {
        self.change(|state| {
            let version = kek_state::next_version(state.keks.keys().copied(), floor)?;
            let key = Secret32::random().map_err(rng_error)?;
            let new = KekInfo {
                version,
                state: KekState::Active,
            };
            // The new KEK is the newest, so every other active one retires.
            let retiring = kek_state::superseded(state.infos().chain([new]));
            self.persist(state, |rows| {
                for &v in &retiring {
                    set_row(rows, v, KekState::Retired);
                }
                rows.push((version, KekState::Active, Some(&key)));
            })?;
            for v in &retiring {
                if let Some(k) = state.keks.get_mut(v) {
                    k.state = KekState::Retired;
                }
            }
            state.keks.insert(
                version,
                Kek {
                    state: KekState::Active,
                    key: Some(key),
                },
            );
            Ok(version)
        })
    }

    fn list_keks(&self) -> Result<Vec<KekInfo>, KeystoreError> {
        self.refresh()?;
        Ok(self.read().infos().collect())
    }

    fn wrap(
        &self,
        kek_version: u32,
        ctx: &WrapContext,
        secret: &Secret32,
    ) -> Result<Vec<u8>, KeystoreError> {
        self.refresh()?;
        let state = self.read();
        let key = usable_key(&state, kek_version, Op::Wrap)?;
        let nonce = random::array::<NONCE_LEN>().map_err(rng_error)?;
        let aad = ctx.aad();
        let ciphertext = XChaCha20Poly1305::new(key.expose().into())
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: secret.expose(),
                    aad: &aad,
                },
            )
            .map_err(|_| KeystoreError::Unwrap)?;
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    fn unwrap(
        &self,
        kek_version: u32,
        ctx: &WrapContext,
        wrapped: &[u8],
    ) -> Result<Secret32, KeystoreError> {
        self.refresh()?;
        let state = self.read();
        let key = usable_key(&state, kek_version, Op::Unwrap)?;
        if wrapped.len() != WRAPPED_LEN {
            return Err(KeystoreError::Unwrap);
        }
        let (nonce, ciphertext) = wrapped.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| KeystoreError::Unwrap)?;
        let aad = ctx.aad();
        let plain = Zeroizing::new(
            XChaCha20Poly1305::new(key.expose().into())
                .decrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| KeystoreError::Unwrap)?,
        );
        Secret32::from_slice(&plain).ok_or(KeystoreError::Unwrap)
    }

    fn retire_kek(&self, version: u32) -> Result<(), KeystoreError> {
        self.transition(Op::Retire, version)
    }

    fn destroy_kek(&self, version: u32) -> Result<(), KeystoreError> {
        self.transition(Op::Destroy, version)
    }

    fn generate_signing_key(
        &self,
        kek_version: u32,
        ctx: &WrapContext,
    ) -> Result<NewSigningKey, KeystoreError> {
        signing::generate_sealed(self, kek_version, ctx)
    }

    fn sign_digest(
        &self,
        ctx: &WrapContext,
        key: &SigningKeyRef,
        digest: &[u8; 32],
    ) -> Result<[u8; SIGNATURE_LEN], KeystoreError> {
        match key {
            SigningKeyRef::Sealed {
                kek_version,
                wrapped,
            } => signing::sign_sealed(self, ctx, *kek_version, wrapped, digest),
            SigningKeyRef::Token { .. } => Err(signing::no_token()),
        }
    }

    fn destroy_signing_key(&self, key: &SigningKeyRef) -> Result<(), KeystoreError> {
        match key {
            SigningKeyRef::Sealed { .. } => Ok(()),
            SigningKeyRef::Token { .. } => Err(signing::no_token()),
        }
    }

    fn check(&self) -> Result<(), KeystoreError> {
        // The file must still be there, and still be this keystore.
        self.refresh()
    }

    fn record_destroyed(&self, namespace: &str, version: u32) -> Result<(), KeystoreError> {
        super::check_ledger_namespace(namespace)?;
        self.change(|state| {
            let entry = (namespace.to_owned(), version);
            if state.destroyed.contains(&entry) {
                return Ok(());
            }
            let mut ledger = state.destroyed.clone();
            ledger.insert(entry);
            self.persist_with(state, |_| {}, &ledger, state.anchor.as_ref())?;
            state.destroyed = ledger;
            Ok(())
        })
    }

    fn destroyed_masters(&self) -> Result<BTreeSet<(String, u32)>, KeystoreError> {
        self.refresh()?;
        Ok(self.read().destroyed.clone())
    }

    fn audit_anchor(&self) -> Result<Option<AuditAnchor>, KeystoreError> {
        self.refresh()?;
        Ok(self.read().anchor)
    }

    fn advance_audit_anchor(&self, anchor: &AuditAnchor) -> Result<(), KeystoreError> {
        // Compared with the file as it is under the lock, not as this process last saw it.
        self.change(|state| {
            if !anchor.advances(state.anchor.as_slice())? {
                return Ok(());
            }
            self.persist_with(state, |_| {}, &state.destroyed, Some(anchor))?;
            state.anchor = Some(*anchor);
            Ok(())
        })
    }
}

/// The key of KEK `version` if its state allows `op` (wrap or unwrap).
fn usable_key(state: &State, version: u32, op: Op) -> Result<&Secret32, KeystoreError> {
    let kek = state.keks.get(&version);
    let allowed = kek_state::check(op, version, kek.map(|k| k.state))?;
    // Active and retired rows always hold their key (the table parser insists on it).
    kek.and_then(|k| k.key.as_ref())
        .ok_or(KeystoreError::State {
            version,
            state: allowed,
        })
}

/// Sets the state of `version`'s row; a destroyed row loses its key.
fn set_row(rows: &mut [Row<'_>], version: u32, to: KekState) {
    for row in rows.iter_mut().filter(|r| r.0 == version) {
        row.1 = to;
        if to == KekState::Destroyed {
            row.2 = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_refuses_params_below_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        let weak = SoftKeystoreOptions {
            argon2: Argon2Params {
                t_cost: 0,
                ..Argon2Params::FLOOR
            },
        };
        let pass = SecretString::new("pw");
        assert!(matches!(
            SoftKeystore::create(&dir.path().join("k"), &pass, weak),
            Err(KeystoreError::Config(_))
        ));
    }

    #[test]
    fn default_options_meet_the_production_minimum() {
        let p = SoftKeystoreOptions::default().argon2;
        assert!(p.m_cost_kib >= 64 * 1024 && p.t_cost >= 3 && p.p_cost >= 1);
    }
}
