//! Unwrapped namespace keys, cached so the hot path never calls the keystore.
//!
//! Masters and index keys are unwrapped once per cache TTL; an evicted or expired entry drops its
//! `Arc`, and the last drop zeroizes the key. Master states are cached for one second only, so a
//! rotation made by another instance is seen within that second.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use zkvault_core::{DerivationMaster, IndexKey, KeyKind, Secret32, WrapContext};

use super::masters::MasterState;
use super::VaultError;
use crate::keystore::Keystore;
use crate::storage::{MasterRow, Store};

/// A master's public metadata, as the data plane needs it.
#[derive(Debug, Clone)]
pub struct MasterMeta {
    pub version: u32,
    pub state: MasterState,
    pub compromised: bool,
}

pub struct Keyring {
    store: Store,
    keystore: Arc<dyn Keystore>,
    masters: Cache<(String, u32), Arc<DerivationMaster>>,
    index_keys: Cache<String, Arc<IndexKey>>,
    states: Cache<String, Arc<Vec<MasterMeta>>>,
}

impl Keyring {
    pub fn new(store: Store, keystore: Arc<dyn Keystore>, ttl: Duration) -> Self {
        Keyring {
            store,
            keystore,
            masters: Cache::builder().max_capacity(10_000).time_to_live(ttl).support_invalidation_closures().build(),
            index_keys: Cache::builder().max_capacity(1_000).time_to_live(ttl).build(),
            states: Cache::builder().max_capacity(1_000).time_to_live(Duration::from_secs(1)).build(),
        }
    }

    pub fn keystore(&self) -> &Arc<dyn Keystore> {
        &self.keystore
    }

    /// The namespace's masters, oldest first.
    pub fn master_states(&self, ns: &str) -> Result<Arc<Vec<MasterMeta>>, VaultError> {
        self.states
            .try_get_with(ns.to_owned(), || {
                let rows = self.store.masters(ns)?;
                rows.iter().map(meta_of).collect::<Result<Vec<_>, VaultError>>().map(Arc::new)
            })
            .map_err(unshare)
    }

    /// The version new writes go to.
    pub fn active_version(&self, ns: &str) -> Result<u32, VaultError> {
        self.master_states(ns)?
            .iter()
            .rev()
            .find(|m| m.state == MasterState::Active)
            .map(|m| m.version)
            .ok_or_else(|| VaultError::Internal("namespace has no active master".into()))
    }

    pub fn index_key(&self, ns: &str) -> Result<Arc<IndexKey>, VaultError> {
        self.index_keys
            .try_get_with(ns.to_owned(), || {
                let row = self.store.index_key(ns)?.ok_or(VaultError::NotFound)?;
                let ctx = WrapContext::new(ns, KeyKind::IndexKey, 1);
                let secret = self.keystore.unwrap(row.kek_version as u32, &ctx, &row.wrapped)?;
                Ok(Arc::new(IndexKey::new(secret)))
            })
            .map_err(unshare)
    }

    /// Master `version` of `ns`, unwrapped. A destroyed master answers [`VaultError::Shredded`].
    pub fn master(&self, ns: &str, version: u32) -> Result<Arc<DerivationMaster>, VaultError> {
        self.masters
            .try_get_with((ns.to_owned(), version), || {
                let row = self
                    .store
                    .masters(ns)?
                    .into_iter()
                    .find(|r| r.version as u32 == version)
                    .ok_or(VaultError::Integrity)?;
                unwrap_master(self.keystore.as_ref(), &row)
            })
            .map_err(unshare)
    }

    /// Drops every cached key and state of `ns` (after a rotation, compromise or destruction).
    pub fn forget(&self, ns: &str) {
        self.states.invalidate(ns);
        self.index_keys.invalidate(ns);
        let ns = ns.to_owned();
        self.masters.invalidate_entries_if(move |(n, _), _| *n == ns).expect("closure invalidation is enabled");
    }

    /// Drops every cached key (after a KEK rotation or keystore switch).
    pub fn forget_all(&self) {
        self.states.invalidate_all();
        self.index_keys.invalidate_all();
        self.masters.invalidate_all();
    }
}

fn meta_of(row: &MasterRow) -> Result<MasterMeta, VaultError> {
    Ok(MasterMeta {
        version: row.version as u32,
        state: MasterState::parse(&row.state)?,
        compromised: row.compromised_at.is_some(),
    })
}

/// Unwraps a master row's key with the keystore; a row without material was destroyed.
pub fn unwrap_master(keystore: &dyn Keystore, row: &MasterRow) -> Result<Arc<DerivationMaster>, VaultError> {
    let wrapped = row.wrapped.as_deref().ok_or(VaultError::Shredded)?;
    let ctx = WrapContext::new(&row.namespace, KeyKind::DerivationMaster, row.version as u32);
    let secret: Secret32 = keystore.unwrap(row.kek_version as u32, &ctx, wrapped)?;
    let salt = row.salt.as_slice().try_into().map_err(|_| VaultError::Integrity)?;
    Ok(Arc::new(DerivationMaster::new(secret, salt)))
}

/// moka shares a loader's error between concurrent waiters; rebuild an owned one.
fn unshare(e: Arc<VaultError>) -> VaultError {
    match &*e {
        VaultError::NotFound => VaultError::NotFound,
        VaultError::Shredded => VaultError::Shredded,
        VaultError::Integrity => VaultError::Integrity,
        VaultError::StorageUnavailable(m) => VaultError::StorageUnavailable(m.clone()),
        VaultError::KeystoreUnavailable(m) => VaultError::KeystoreUnavailable(m.clone()),
        other => VaultError::Internal(other.to_string()),
    }
}
