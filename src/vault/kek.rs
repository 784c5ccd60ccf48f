//! KEK rotation and keystore migration: rewrap every master and index key, never a record.
//!
//! Cost grows with the number of masters (tens), not records (millions). The database update
//! is one transaction and the commit point: before it, every master is still wrapped under a
//! KEK the keystore keeps (a retired KEK still unwraps), so a crash at any step leaves every
//! record readable, and running the rotation again finishes the job.

use std::time::Instant;

use serde::Serialize;
use zkvault_core::{KeyKind, WrapContext};

use super::{mirror_keks, now_ms, Actor, MasterState, Vault, VaultError};
use crate::keystore::{KekState, Keystore};
use crate::storage::{IndexKeyRow, MasterRow, Store};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KekRotation {
    pub previous: Option<u32>,
    pub active: u32,
    pub rewrapped_masters: usize,
    pub rewrapped_index_keys: usize,
    /// Wall time of the whole rotation, in milliseconds.
    pub elapsed_ms: f64,
}

/// Unwraps every live master and index key with `from` and wraps it under `to`'s KEK `to_kek`.
/// Nothing is written: the caller commits the rows in one transaction.
fn rewrap_all(store: &Store, from: &dyn Keystore, to: &dyn Keystore, to_kek: u32) -> Result<(Vec<MasterRow>, Vec<IndexKeyRow>), VaultError> {
    let now = now_ms();
    let mut masters = Vec::new();
    for row in store.all_masters()? {
        let Some(wrapped) = &row.wrapped else { continue }; // destroyed: nothing to carry over
        let ctx = WrapContext::new(&row.namespace, KeyKind::DerivationMaster, row.version as u32);
        let secret = from.unwrap(row.kek_version as u32, &ctx, wrapped)?;
        let wrapped = to.wrap(to_kek, &ctx, &secret)?;
        masters.push(MasterRow { kek_version: to_kek as i32, wrapped: Some(wrapped), updated_at: now, ..row });
    }
    let mut index_keys = Vec::new();
    for row in store.all_index_keys()? {
        let ctx = WrapContext::new(&row.namespace, KeyKind::IndexKey, 1);
        let secret = from.unwrap(row.kek_version as u32, &ctx, &row.wrapped)?;
        let wrapped = to.wrap(to_kek, &ctx, &secret)?;
        index_keys.push(IndexKeyRow { kek_version: to_kek as i32, wrapped, ..row });
    }
    Ok((masters, index_keys))
}

impl Vault {
    /// A new KEK version in the keystore (the previous one retires: it still unwraps, never
    /// wraps), then every master and index key rewrapped under it in one transaction.
    pub fn rotate_kek(&self, actor: &Actor) -> Result<KekRotation, VaultError> {
        let started = Instant::now();
        let keystore = self.keyring().keystore().clone();
        let previous = keystore.active_kek()?;
        let active = keystore.create_kek()?;
        let (masters, index_keys) = rewrap_all(self.store(), keystore.as_ref(), keystore.as_ref(), active)?;
        self.store().rewrap_keys(&masters, &index_keys, &actor.entry("kek.rotate", "", format!("v{active}")))?;
        mirror_keks(self.store(), keystore.as_ref(), actor)?;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(previous, active, masters = masters.len(), elapsed_ms, who = %actor.who, why = %actor.why, "KEK rotated");
        Ok(KekRotation { previous, active, rewrapped_masters: masters.len(), rewrapped_index_keys: index_keys.len(), elapsed_ms })
    }

    /// Destroys a retired KEK in the keystore, refused while any master or index key is still
    /// wrapped under it.
    pub fn destroy_kek(&self, version: u32, actor: &Actor) -> Result<(), VaultError> {
        let keystore = self.keyring().keystore();
        let in_use = self.store().all_masters()?.iter().any(|m| m.wrapped.is_some() && m.kek_version as u32 == version)
            || self.store().all_index_keys()?.iter().any(|k| k.kek_version as u32 == version);
        if in_use {
            return Err(VaultError::Conflict(format!("KEK v{version} still wraps masters: rotate the KEK first")));
        }
        match keystore.list_keks()?.into_iter().find(|k| k.version == version) {
            None => return Err(VaultError::NotFound),
            Some(k) if k.state != KekState::Retired => {
                return Err(VaultError::Conflict(format!("KEK v{version} is {}; only a retired KEK can be destroyed", k.state.as_str())))
            }
            Some(_) => keystore.destroy_kek(version)?,
        }
        self.store().append_audit(&actor.entry("kek.destroy", "", format!("v{version}")))?;
        mirror_keks(self.store(), keystore.as_ref(), actor)?;
        tracing::warn!(version, who = %actor.who, why = %actor.why, "KEK destroyed");
        Ok(())
    }

    /// Suspected KEK/HSM exposure: a new KEK, then every live master marked compromised and each
    /// namespace rotated, so every record is re-keyed on its next read or bulk pass.
    pub fn compromise_kek(&self, actor: &Actor) -> Result<KekRotation, VaultError> {
        let rotation = self.rotate_kek(actor)?;
        for ns in self.policy().namespaces.keys() {
            let live: Vec<u32> = self
                .store()
                .masters(ns)?
                .iter()
                .filter(|m| m.state == MasterState::Active.as_str() || m.state == MasterState::DecryptOnly.as_str())
                .map(|m| m.version as u32)
                .collect();
            for version in live {
                self.compromise_master(ns, version, actor)?;
            }
        }
        Ok(rotation)
    }

    /// Moves the deployment to another keystore: a KEK there (created if it has none), every
    /// master and index key rewrapped under it, committed in one transaction. Records are not
    /// touched. Afterwards every instance must run with the target keystore's configuration.
    pub fn migrate_keystore(&self, target: &dyn Keystore, actor: &Actor) -> Result<KekRotation, VaultError> {
        let started = Instant::now();
        let previous = self.keyring().keystore().active_kek()?;
        let active = match target.active_kek()? {
            Some(v) => v,
            None => target.create_kek()?,
        };
        let (masters, index_keys) = rewrap_all(self.store(), self.keyring().keystore().as_ref(), target, active)?;
        let entry = actor.entry("keystore.migrate", "", format!("{} v{active}", target.kind()));
        self.store().rewrap_keys(&masters, &index_keys, &entry)?;
        mirror_keks(self.store(), target, actor)?;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::warn!(from = self.keyring().keystore().kind(), to = target.kind(), active, who = %actor.who, why = %actor.why, "keystore migrated");
        Ok(KekRotation { previous, active, rewrapped_masters: masters.len(), rewrapped_index_keys: index_keys.len(), elapsed_ms })
    }
}
