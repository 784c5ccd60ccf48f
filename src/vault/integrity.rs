//! The deployment's integrity key: an HMAC key that authenticates what the database holds but
//! must not be able to forge — credential, master and KEK rows (see `storage::row_macs`) and
//! the audit trail's checkpoints. It is stored only wrapped under the active KEK, rewrapped
//! with every master on a KEK rotation or keystore migration, and made once per deployment.

use std::sync::Arc;

use zkvault_core::{IntegrityKey, KeyKind, WrapContext};

use super::{now_ms, Actor, VaultError};
use crate::keystore::Keystore;
use crate::storage::{IntegrityKeyRow, StorageError, Store};

/// Where the integrity key sits in the key hierarchy (namespace `""`: it is the deployment's).
pub(super) fn context() -> WrapContext {
    WrapContext::new("", KeyKind::IntegrityKey, 1)
}

/// Unwraps the deployment's integrity key and hands it to the store, so every MACed row read
/// from now on is checked. On the first start of a deployment (or of a database written by a
/// version without row MACs), makes the key and MACs every row as it stands, in one
/// transaction. Runs under the key lock.
pub(super) fn load_or_create(
    store: &Store,
    keystore: &dyn Keystore,
    actor: &Actor,
) -> Result<Arc<IntegrityKey>, VaultError> {
    if let Some(row) = store.integrity_key()? {
        let secret = keystore
            .unwrap(row.kek_version as u32, &context(), &row.wrapped)
            .map_err(|e| match e {
                crate::keystore::KeystoreError::Unwrap
                | crate::keystore::KeystoreError::UnknownVersion(_) => VaultError::Internal(format!(
                    "the integrity key cannot be unwrapped by this {} keystore: wrong keystore for this database?",
                    keystore.kind()
                )),
                other => other.into(),
            })?;
        let key = Arc::new(IntegrityKey::new(secret));
        store.set_row_key(key.clone());
        return Ok(key);
    }
    // The keystore anchors audit checkpoints only after this key was made: a database without
    // it beside such a keystore was replaced (or emptied), and making a new key would MAC
    // whatever rows it holds.
    if let Some(anchor) = keystore.audit_anchor()? {
        tracing::error!(checkpoint = anchor.counter, "the database has no integrity key, but the keystore anchors audit checkpoint {}: this database was replaced or restored from before zkvault MACed its rows; refusing to start", anchor.counter);
        return Err(VaultError::Integrity);
    }
    let kek = match keystore.active_kek()? {
        Some(v) => v,
        None => keystore.create_kek_after(store.highest_kek_version()? as u32)?,
    };
    let key = Arc::new(IntegrityKey::generate()?);
    let row = IntegrityKeyRow {
        id: 1,
        kek_version: kek as i32,
        wrapped: keystore.wrap(kek, &context(), key.secret())?,
        created_at: now_ms(),
    };
    store.set_row_key(key.clone());
    let entry = actor.entry("integrity.init", "", format!("kek v{kek}"));
    match store.create_integrity_key(&row, &entry) {
        Ok(maced) => {
            tracing::info!(
                rows = maced,
                "integrity key made: credential, master and KEK rows are MACed from now on"
            );
            Ok(key)
        }
        Err(StorageError::Conflict) => Err(VaultError::Conflict(
            "another instance made the integrity key at the same time; start again".into(),
        )),
        Err(e) => Err(e.into()),
    }
}
