//! Unwrapped namespace keys, cached so the hot path never calls the keystore.
//!
//! Masters and index keys are unwrapped once per cache TTL; an evicted or expired entry drops its
//! `Arc`, and the last drop zeroizes the key. Master states are cached for one second at most.
//!
//! Any change to a key row — made here, by another instance or by the CLI — empties every cache
//! within [`SYNC_INTERVAL`]: [`Keyring::sync`] compares a digest of the key rows with the last one
//! it saw. Entries are keyed by a generation that every emptying bumps, so a load that raced the
//! emptying lands under a dead generation and is never served. A master whose row says
//! `destroyed`, or that the keystore records as destroyed, is never unwrapped, whatever material
//! the row still holds.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::sync::Cache;
use zkvault_core::{DerivationMaster, IndexKey, KeyKind, Secret32, WrapContext};

use super::VaultError;
use crate::keystore::Keystore;
use crate::states::MasterState;
use crate::storage::{MasterRow, Store};

/// How often the service runs [`Keyring::sync`]: the bound on how long another instance's key
/// change can go unseen here.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(250);

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
    generation: AtomicU64,
    masters: Cache<(u64, String, u32), Arc<DerivationMaster>>,
    index_keys: Cache<(u64, String), Arc<IndexKey>>,
    states: Cache<(u64, String), Arc<Vec<MasterMeta>>>,
    /// Digest of the key rows at the last [`Keyring::sync`].
    seen: Mutex<Option<[u8; 32]>>,
}

impl Keyring {
    pub fn new(store: Store, keystore: Arc<dyn Keystore>, ttl: Duration) -> Self {
        Keyring {
            store,
            keystore,
            generation: AtomicU64::new(0),
            masters: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            index_keys: Cache::builder()
                .max_capacity(1_000)
                .time_to_live(ttl)
                .build(),
            states: Cache::builder()
                .max_capacity(1_000)
                .time_to_live(Duration::from_secs(1))
                .build(),
            seen: Mutex::new(None),
        }
    }

    pub fn keystore(&self) -> &Arc<dyn Keystore> {
        &self.keystore
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The namespace's masters, oldest first.
    pub fn master_states(&self, ns: &str) -> Result<Arc<Vec<MasterMeta>>, VaultError> {
        self.states
            .try_get_with((self.generation(), ns.to_owned()), || {
                let rows = self.store.masters(ns)?;
                Ok(Arc::new(rows.iter().map(meta_of).collect()))
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
            .try_get_with((self.generation(), ns.to_owned()), || {
                let row = self.store.index_key(ns)?.ok_or(VaultError::NotFound)?;
                let ctx = WrapContext::new(ns, KeyKind::IndexKey, 1);
                let secret = self
                    .keystore
                    .unwrap(row.kek_version as u32, &ctx, &row.wrapped)?;
                Ok(Arc::new(IndexKey::new(secret)))
            })
            .map_err(unshare)
    }

    /// Master `version` of `ns`, unwrapped. A destroyed master answers [`VaultError::Shredded`].
    pub fn master(&self, ns: &str, version: u32) -> Result<Arc<DerivationMaster>, VaultError> {
        self.masters
            .try_get_with((self.generation(), ns.to_owned(), version), || {
                let row = self
                    .store
                    .masters(ns)?
                    .into_iter()
                    .find(|r| r.version as u32 == version)
                    .ok_or(VaultError::Integrity)?;
                let destroyed = self.keystore.destroyed_masters()?;
                unwrap_master(self.keystore.as_ref(), &row, &destroyed)
            })
            .map_err(unshare)
    }

    /// Drops every cached key and state (after any key change here or elsewhere).
    pub fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.states.invalidate_all();
        self.index_keys.invalidate_all();
        self.masters.invalidate_all();
    }

    /// Empties the caches if any key row (KEK, master, index key) changed since the last call.
    /// The service calls it every [`SYNC_INTERVAL`].
    pub fn sync(&self) -> Result<(), VaultError> {
        let digest = self.store.key_rows_digest()?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if *seen != Some(digest) {
            self.forget_all();
            tracing::debug!("key rows changed: cached keys dropped");
        }
        *seen = Some(digest);
        Ok(())
    }
}

fn meta_of(row: &MasterRow) -> MasterMeta {
    MasterMeta {
        version: row.version as u32,
        state: row.state,
        compromised: row.compromised_at.is_some(),
    }
}

/// Unwraps a master row's key with the keystore. A destroyed master — no material, a
/// `destroyed` state whatever the row still holds, or in the keystore's ledger `destroyed`
/// whatever the row says (a database restored from before the destruction) — answers
/// [`VaultError::Shredded`].
pub fn unwrap_master(
    keystore: &dyn Keystore,
    row: &MasterRow,
    destroyed: &BTreeSet<(String, u32)>,
) -> Result<Arc<DerivationMaster>, VaultError> {
    if row.state == MasterState::Destroyed
        || destroyed.contains(&(row.namespace.clone(), row.version as u32))
    {
        return Err(VaultError::Shredded);
    }
    let wrapped = row.wrapped.as_deref().ok_or(VaultError::Shredded)?;
    let ctx = WrapContext::new(
        &row.namespace,
        KeyKind::DerivationMaster,
        row.version as u32,
    );
    let secret: Secret32 = keystore.unwrap(row.kek_version as u32, &ctx, wrapped)?;
    let salt = row
        .salt
        .as_slice()
        .try_into()
        .map_err(|_| VaultError::Integrity)?;
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
        VaultError::Conflict(m) => VaultError::Conflict(m.clone()),
        other => VaultError::Internal(other.to_string()),
    }
}
