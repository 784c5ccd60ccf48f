//! KEK rotation and keystore migration: rewrap every master and index key, never a record.
//!
//! Cost grows with the number of masters (tens), not records (millions). The database update
//! is one transaction and the commit point: before it, every master is still wrapped under a
//! KEK the keystore keeps (a retired KEK still unwraps), so a crash at any step leaves every
//! record readable, and running the rotation again finishes the job.
//!
//! Every key change runs under the store's key lock, so rotations on several instances and
//! the CLI queue instead of racing (a lost wait is a 409 that created nothing). Each rewrap is
//! unwrapped once under the new KEK before commit — a faulty token cannot replace a good blob
//! with one it cannot open — and the commit applies only to rows still as they were read, so a
//! master destroyed meanwhile stays destroyed.

use std::time::Instant;

use serde::Serialize;
use zkvault_core::{KeyKind, WrapContext};

use super::approvals::{Decision, Irreversible};
use super::{mirror_keks, now_ms, Actor, Grant, MasterState, Role, Vault, VaultError};
use crate::keystore::{KekState, Keystore};
use crate::storage::{IndexKeyRow, IntegrityKeyRow, MasterRow, StorageError, Store};

/// How often a rotation re-reads and retries after a concurrent change to a master row.
const REWRAP_ATTEMPTS: usize = 5;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KekRotation {
    pub previous: Option<u32>,
    pub active: u32,
    pub rewrapped_masters: usize,
    pub rewrapped_index_keys: usize,
    /// Wall time of the whole rotation, in milliseconds.
    pub elapsed_ms: f64,
}

impl KekRotation {
    /// The report of a rotation begun at `started` that rewrapped `(masters, index keys)`.
    fn finished(
        previous: Option<u32>,
        active: u32,
        (masters, index_keys): (usize, usize),
        started: Instant,
    ) -> Self {
        KekRotation {
            previous,
            active,
            rewrapped_masters: masters,
            rewrapped_index_keys: index_keys,
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        }
    }
}

/// Rows rewrapped under a new KEK, each with the KEK version it was read under.
struct Rewrapped {
    masters: Vec<(MasterRow, i32)>,
    index_keys: Vec<(IndexKeyRow, i32)>,
    integrity_key: (IntegrityKeyRow, i32),
}

/// Unwraps `wrapped` with `from`, wraps it under `to`'s KEK `to_kek`, and checks the new blob
/// opens to the same secret before anything is committed.
fn rewrap_one(
    from: &dyn Keystore,
    to: &dyn Keystore,
    to_kek: u32,
    read_under: i32,
    ctx: &WrapContext,
    wrapped: &[u8],
) -> Result<Vec<u8>, VaultError> {
    let secret = from.unwrap(read_under as u32, ctx, wrapped)?;
    let rewrapped = to.wrap(to_kek, ctx, &secret)?;
    // A faulty keystore, not stored data: 503, and nothing is committed.
    let faulty = || {
        VaultError::KeystoreUnavailable("the keystore returned a wrap it cannot open back to the same key; nothing was committed".into())
    };
    match to.unwrap(to_kek, ctx, &rewrapped) {
        Ok(back) if back == secret => Ok(rewrapped),
        Ok(_) | Err(crate::keystore::KeystoreError::Unwrap) => Err(faulty()),
        Err(e) => Err(e.into()),
    }
}

/// Every live master and index key rewrapped under `to`'s KEK `to_kek`. Nothing is written:
/// the caller commits the rows in one transaction.
fn rewrap_all(
    store: &Store,
    from: &dyn Keystore,
    to: &dyn Keystore,
    to_kek: u32,
) -> Result<Rewrapped, VaultError> {
    let now = now_ms();
    let mut masters = Vec::new();
    for row in store.all_masters()? {
        // Destroyed: nothing to carry over (and material left beside that state is never used).
        let Some(wrapped) = row
            .wrapped
            .as_deref()
            .filter(|_| row.state != MasterState::Destroyed)
        else {
            continue;
        };
        let ctx = WrapContext::new(
            &row.namespace,
            KeyKind::DerivationMaster,
            row.version as u32,
        );
        let wrapped = rewrap_one(from, to, to_kek, row.kek_version, &ctx, wrapped)?;
        let read_under = row.kek_version;
        masters.push((
            MasterRow {
                kek_version: to_kek as i32,
                wrapped: Some(wrapped),
                updated_at: now,
                ..row
            },
            read_under,
        ));
    }
    let mut index_keys = Vec::new();
    for row in store.all_index_keys()? {
        let ctx = WrapContext::new(&row.namespace, KeyKind::IndexKey, 1);
        let wrapped = rewrap_one(from, to, to_kek, row.kek_version, &ctx, &row.wrapped)?;
        let read_under = row.kek_version;
        index_keys.push((
            IndexKeyRow {
                kek_version: to_kek as i32,
                wrapped,
                ..row
            },
            read_under,
        ));
    }
    let integrity_key = match store.integrity_key()? {
        Some(row) => {
            let ctx = super::integrity::context();
            let wrapped = rewrap_one(from, to, to_kek, row.kek_version, &ctx, &row.wrapped)?;
            let read_under = row.kek_version;
            (
                IntegrityKeyRow {
                    kek_version: to_kek as i32,
                    wrapped,
                    ..row
                },
                read_under,
            )
        }
        // Deleted from the database: rewrapping without it would let the KEK it is wrapped
        // under (in every backup) be destroyed, and no backup could then start again.
        None => {
            tracing::error!("the integrity key's row is missing from the database: restore it from a backup before changing KEKs");
            return Err(VaultError::Integrity);
        }
    };
    Ok(Rewrapped {
        masters,
        index_keys,
        integrity_key,
    })
}

impl Vault {
    /// The highest KEK version the deployment ever recorded, in any keystore.
    pub(super) fn highest_kek_version(&self) -> Result<u32, VaultError> {
        Ok(self.store().highest_kek_version()? as u32)
    }

    /// Rewraps every master, index key and the integrity key under `to`'s KEK `to_kek` and
    /// commits, re-reading when a row changed meanwhile (a destruction, a compromise mark).
    /// Returns the counts.
    fn rewrap_and_commit(
        &self,
        to: &dyn Keystore,
        to_kek: u32,
        entry: &crate::storage::AuditEntry,
    ) -> Result<(usize, usize), VaultError> {
        let from = self.keyring().keystore().clone();
        // A master the keystore records as destroyed (a restored row) is destroyed first, so
        // its material is never carried over to the new KEK.
        super::lifecycle::reconcile_destructions(self.store(), from.as_ref())?;
        for _ in 0..REWRAP_ATTEMPTS {
            let rewrapped = rewrap_all(self.store(), from.as_ref(), to, to_kek)?;
            match self.store().rewrap_keys(
                &rewrapped.masters,
                &rewrapped.index_keys,
                &rewrapped.integrity_key,
                entry,
            ) {
                Ok(()) => {
                    self.rewrap_signer_keys(from.as_ref(), to, to_kek, entry)?;
                    return Ok((rewrapped.masters.len(), rewrapped.index_keys.len()));
                }
                Err(StorageError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(VaultError::Conflict("masters kept changing during the rewrap; the new KEK is active, run the rotation again".into()))
    }

    /// The signing keys with sealed material that may still sign: a version `keystore`
    /// records as revoked never does (a restored row's material is dropped by the scheduler's
    /// reconciliation), so it is neither carried to a new KEK nor keeps an old one alive.
    fn sealed_signer_keys(
        &self,
        keystore: &dyn Keystore,
    ) -> Result<Vec<crate::storage::SignerKeyRow>, VaultError> {
        let revoked = keystore.destroyed_masters()?;
        Ok(self
            .store()
            .signer_keys()?
            .into_iter()
            .flatten()
            .filter(|k| {
                k.wrapped.is_some()
                    && !revoked
                        .contains(&(super::signers::ledger_name(&k.signer), k.version as u32))
            })
            .collect())
    }

    /// Rewraps every sealed signing key under `to`'s KEK `to_kek`, one row at a time (a key
    /// left under the old KEK still signs: a retired KEK unwraps, and is not destroyed while
    /// a signing key uses it).
    fn rewrap_signer_keys(
        &self,
        from: &dyn Keystore,
        to: &dyn Keystore,
        to_kek: u32,
        entry: &crate::storage::AuditEntry,
    ) -> Result<(), VaultError> {
        for row in self.sealed_signer_keys(from)? {
            let (Some(kek), Some(wrapped)) = (row.kek_version, row.wrapped.as_deref()) else {
                continue;
            };
            if kek as u32 == to_kek {
                continue;
            }
            let ctx = WrapContext::new(&row.signer, KeyKind::SigningKey, row.version as u32);
            let rewrapped = crate::storage::SignerKeyRow {
                kek_version: Some(to_kek as i32),
                wrapped: Some(rewrap_one(from, to, to_kek, kek, &ctx, wrapped)?),
                ..row.clone()
            };
            let mut entry = entry.clone();
            entry.target = format!("signer {} v{}", row.signer, row.version);
            self.store()
                .change_signer_keys(&[(Some(&row), &rewrapped)], &entry)?;
        }
        self.signers().refresh()
    }

    /// A new KEK version in the keystore (the previous one retires: it still unwraps, never
    /// wraps), then every master and index key rewrapped under it in one transaction.
    pub fn rotate_kek(&self, grant: &Grant) -> Result<KekRotation, VaultError> {
        grant.check_global(Role::Operator)?;
        let actor = &grant.actor_for("KEK rotation");
        let started = Instant::now();
        let _lock = self.key_lock()?;
        let keystore = self.keyring().keystore().clone();
        // Every key row must be authentic before a KEK is made: a rewrap that then failed on a
        // forged row would leave a keystore KEK the database does not know of (and a scheduler
        // that retried every tick would make one each time).
        self.store().all_masters()?;
        self.store().integrity_key()?.ok_or(VaultError::Integrity)?;
        let previous = keystore.active_kek()?;
        let active = keystore.create_kek_after(self.highest_kek_version()?)?;
        let rewrapped = self.rewrap_and_commit(
            keystore.as_ref(),
            active,
            &actor.entry("kek.rotate", "", format!("v{active}")),
        )?;
        mirror_keks(self.store(), keystore.as_ref(), actor)?;
        self.keyring().forget_all();
        let rotation = KekRotation::finished(previous, active, rewrapped, started);
        tracing::info!(previous, active, masters = rotation.rewrapped_masters, elapsed_ms = rotation.elapsed_ms, who = %actor.who, why = %actor.why, "KEK rotated");
        Ok(rotation)
    }

    /// Destroys a retired KEK in the keystore, refused while any master or index key is still
    /// wrapped under it. Under dual control, only asks for a second operator's approval.
    pub fn destroy_kek(&self, grant: &Grant, version: u32) -> Result<Decision<()>, VaultError> {
        grant.check_global(Role::Operator)?;
        if self.policy().dual_control {
            return self.request_approval(grant, Irreversible::DestroyKek { version });
        }
        self.destroy_kek_as(&grant.actor_for("KEK destruction"), version)
            .map(Decision::Done)
    }

    pub(super) fn destroy_kek_as(&self, actor: &Actor, version: u32) -> Result<(), VaultError> {
        let _lock = self.key_lock()?;
        let keystore = self.keyring().keystore();
        let in_use = self.store().all_masters()?.iter().any(|m| {
            m.wrapped.is_some()
                && m.state != MasterState::Destroyed
                && m.kek_version as u32 == version
        }) || self
            .store()
            .all_index_keys()?
            .iter()
            .any(|k| k.kek_version as u32 == version)
            || self
                .store()
                .integrity_key()?
                .is_none_or(|k| k.kek_version as u32 == version)
            || self
                .sealed_signer_keys(keystore.as_ref())?
                .iter()
                .any(|k| k.kek_version == Some(version as i32));
        if in_use {
            return Err(VaultError::Conflict(format!(
                "KEK v{version} still wraps masters: rotate the KEK first"
            )));
        }
        match keystore
            .list_keks()?
            .into_iter()
            .find(|k| k.version == version)
        {
            None => return Err(VaultError::NotFound),
            Some(k) if k.state != KekState::Retired => {
                return Err(VaultError::Conflict(format!(
                    "KEK v{version} is {}; only a retired KEK can be destroyed",
                    k.state.as_str()
                )))
            }
            Some(_) => keystore.destroy_kek(version)?,
        }
        self.store()
            .append_audit(&actor.entry("kek.destroy", "", format!("v{version}")))?;
        mirror_keks(self.store(), keystore.as_ref(), actor)?;
        tracing::warn!(version, who = %actor.who, why = %actor.why, "KEK destroyed");
        Ok(())
    }

    /// Suspected KEK/HSM exposure: a new KEK, then every live master marked compromised and each
    /// namespace rotated, so every record is re-keyed on its next read or bulk pass.
    pub fn compromise_kek(&self, grant: &Grant) -> Result<KekRotation, VaultError> {
        let rotation = self.rotate_kek(grant)?;
        let actor = &grant.actor_for("KEK compromise response");
        for ns in self.policy().namespaces.keys() {
            let live: Vec<u32> = self
                .store()
                .masters(ns)?
                .iter()
                .filter(|m| m.state.is_live())
                .map(|m| m.version as u32)
                .collect();
            let grant = Grant::system(actor.clone(), Role::Operator, Some(ns));
            for version in live {
                self.compromise_master(&grant, version)?;
            }
        }
        // Signing keys sealed under the exposed KEK are exposed too (token-held ones are not).
        let _lock = self.key_lock()?;
        let marked = self.compromise_sealed_signer_keys(actor)?;
        if !marked.is_empty() {
            tracing::warn!(
                ?marked,
                "sealed signing keys marked compromised with the KEK"
            );
        }
        Ok(rotation)
    }

    /// Moves the deployment to another keystore: a new KEK there, numbered above every version
    /// the deployment used so far, every master and index key rewrapped under it, committed in
    /// one transaction. Records are not touched. The source's active KEK is then retired (it
    /// still unwraps, for a roll-back), so an instance left on the old configuration fails to
    /// wrap instead of diverging. Afterwards every instance must run with the target's
    /// configuration.
    pub fn migrate_keystore(
        &self,
        grant: &Grant,
        target: &dyn Keystore,
    ) -> Result<KekRotation, VaultError> {
        grant.check_global(Role::Operator)?;
        let actor = &grant.actor_for("keystore migration");
        let started = Instant::now();
        let _lock = self.key_lock()?;
        let source = self.keyring().keystore().clone();
        if target.id() == source.id() {
            return Err(VaultError::BadInput(
                "the target keystore is the one in use".into(),
            ));
        }
        let previous = source.active_kek()?;
        let floor = self
            .highest_kek_version()?
            .max(target.list_keks()?.last().map_or(0, |k| k.version));
        let active = target.create_kek_after(floor)?;
        // What was destroyed stays destroyed, and the audit trail stays anchored, in the
        // keystore the deployment moves to.
        for (ns, version) in source.destroyed_masters()? {
            target.record_destroyed(&ns, version)?;
        }
        if let Some(anchor) = source.audit_anchor()? {
            target.advance_audit_anchor(&anchor)?;
        }
        let entry = actor.entry("keystore.migrate", "", format!("{} v{active}", target.id()));
        let rewrapped = self.rewrap_and_commit(target, active, &entry)?;
        if let Some(v) = previous {
            source.retire_kek(v)?;
        }
        mirror_keks(self.store(), source.as_ref(), actor)?;
        mirror_keks(self.store(), target, actor)?;
        tracing::warn!(from = %source.id(), to = %target.id(), active, who = %actor.who, why = %actor.why, "keystore migrated");
        Ok(KekRotation::finished(previous, active, rewrapped, started))
    }
}
