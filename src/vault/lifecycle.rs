//! Derivation-master lifecycle: rotate, compromise, retire, destroy (DESIGN.md "Key states").
//!
//! `active` → `decrypt_only` → `retired` (no records left) → `destroyed`; `compromised` may be
//! set on `active` (which rotates first) or `decrypt_only`. Anything else is a 409. Every
//! transition is checked against the state it was decided on, so concurrent operators cannot
//! both apply one.

use serde::Serialize;
use zkvault_core::{DerivationMaster, KeyKind, WrapContext};

use super::approvals::{Decision, Irreversible};
use super::{now_ms, Actor, EntryExt, Grant, MasterState, Role, Vault, VaultError};
use crate::storage::{MasterRow, StorageError};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MasterRotation {
    pub namespace: String,
    pub previous: Option<u32>,
    pub active: u32,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompromiseReport {
    pub namespace: String,
    pub version: u32,
    /// The new active master, when the compromised one was active.
    pub rotated_to: Option<u32>,
    /// Records still sealed under the compromised master: re-keyed first, on read and in bulk.
    pub records_at_risk: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DestroyReport {
    pub namespace: String,
    pub version: u32,
    /// Records left under the master, now unreadable for good (410).
    pub shredded_records: i64,
}

/// The version a new master of `ns` takes: above every version the database holds and every
/// one the keystore records as destroyed, so a master made on a database restored from an
/// older backup never takes the number of one destroyed since (its records would answer 410).
pub(super) fn next_master_version(
    existing: &[MasterRow],
    keystore: &dyn crate::keystore::Keystore,
    ns: &str,
) -> Result<u32, VaultError> {
    let in_db = existing.iter().map(|m| m.version as u32).max().unwrap_or(0);
    let destroyed = keystore
        .destroyed_masters()?
        .into_iter()
        .filter(|(n, _)| n == ns)
        .map(|(_, v)| v)
        .max()
        .unwrap_or(0);
    in_db
        .max(destroyed)
        .checked_add(1)
        .ok_or_else(|| VaultError::Internal("master versions exhausted".into()))
}

/// A new active master `version` of `ns` from the OS CSPRNG, wrapped under KEK `kek`.
pub(super) fn new_master(
    keystore: &dyn crate::keystore::Keystore,
    kek: u32,
    ns: &str,
    version: u32,
) -> Result<MasterRow, VaultError> {
    let dm = DerivationMaster::generate()?;
    let now = now_ms();
    Ok(MasterRow {
        namespace: ns.to_owned(),
        version: version as i32,
        state: MasterState::Active,
        compromised_at: None,
        kek_version: kek as i32,
        wrapped: Some(keystore.wrap(
            kek,
            &WrapContext::new(ns, KeyKind::DerivationMaster, version),
            dm.secret(),
        )?),
        salt: dm.salt().to_vec(),
        created_at: now,
        updated_at: now,
    })
}

/// An active master is never destroyed, a destroyed one not twice.
fn check_destroyable(row: &MasterRow) -> Result<(), VaultError> {
    let version = row.version;
    match row.state {
        MasterState::Active => Err(conflict(format!(
            "master v{version} is active: rotate first"
        ))),
        MasterState::Destroyed => Err(conflict(format!("master v{version} is already destroyed"))),
        MasterState::DecryptOnly | MasterState::Retired => Ok(()),
    }
}

fn conflict(msg: String) -> VaultError {
    VaultError::Conflict(msg)
}

impl Vault {
    fn master_row(&self, ns: &str, version: u32) -> Result<MasterRow, VaultError> {
        self.policy()
            .namespace(ns)
            .ok_or(VaultError::UnknownNamespace)?;
        self.store()
            .masters(ns)?
            .into_iter()
            .find(|m| m.version as u32 == version)
            .ok_or(VaultError::NotFound)
    }

    /// Records sealed under `(ns, version)`.
    pub fn records_under(&self, ns: &str, version: u32) -> Result<i64, VaultError> {
        Ok(self
            .store()
            .count_records_by_master()?
            .into_iter()
            .find(|(n, v, _)| n == ns && *v as u32 == version)
            .map_or(0, |c| c.2))
    }

    /// A new active master for `ns`, generated from the OS CSPRNG and stored wrapped under the
    /// active KEK; the previous active one turns decrypt-only. New writes use it at once (on
    /// other instances within the one-second state cache).
    pub fn rotate_master(&self, grant: &Grant) -> Result<MasterRotation, VaultError> {
        let (ns, actor) = (
            grant.namespace(Role::Operator)?,
            &grant.actor_for("master rotation"),
        );
        // Under the key lock no KEK rotation can retire the KEK between reading and using it.
        let _lock = self.key_lock()?;
        let keystore = self.keyring().keystore().clone();
        let kek = keystore
            .active_kek()?
            .ok_or_else(|| VaultError::Internal("keystore has no active KEK".into()))?;
        for _ in 0..3 {
            let existing = self.store().masters(ns)?;
            let previous = existing
                .iter()
                .rev()
                .find(|m| m.state == MasterState::Active)
                .map(|m| m.version as u32);
            let version = next_master_version(&existing, keystore.as_ref(), ns)?;
            let row = new_master(keystore.as_ref(), kek, ns, version)?;
            let now = row.created_at;
            // The previous active master turns decrypt-only in the same transaction.
            let rotated = self.store().unit_of_work(
                &actor.entry("master.rotate", ns, format!("v{version}")),
                |u| {
                    if let Some(p) = previous {
                        u.set_master_state(
                            ns,
                            p as i32,
                            MasterState::Active,
                            MasterState::DecryptOnly,
                            now,
                        )?;
                    }
                    u.insert_master(&row)
                },
            );
            match rotated {
                Ok(()) => {
                    self.keyring().forget_all();
                    tracing::info!(namespace = ns, previous, active = version, who = %actor.who, why = %actor.why, "derivation master rotated");
                    return Ok(MasterRotation {
                        namespace: ns.to_owned(),
                        previous,
                        active: version,
                    });
                }
                Err(StorageError::Conflict) => continue, // another instance rotated: go again from its state
                Err(e) => return Err(e.into()),
            }
        }
        Err(conflict(
            "namespace is being rotated concurrently; retry".into(),
        ))
    }

    /// Marks master `version` compromised (rotating first if it is active). From then on its
    /// records are re-keyed — new DEK, body re-encrypted — whenever read or bulk re-encrypted,
    /// since whoever holds the master may hold every DEK under it.
    pub fn compromise_master(
        &self,
        grant: &Grant,
        version: u32,
    ) -> Result<CompromiseReport, VaultError> {
        let (ns, actor) = (
            grant.namespace(Role::Operator)?,
            &grant.actor_for("compromise response"),
        );
        let row = self.master_row(ns, version)?;
        let state = row.state;
        if !state.is_live() {
            return Err(conflict(format!("master v{version} is {}; only an active or decrypt-only master can be marked compromised", state.as_str())));
        }
        let rotated_to = if state == MasterState::Active {
            Some(self.rotate_master(grant)?.active)
        } else {
            None
        };
        // Under the key lock no KEK rotation rewraps the row between this read and the write.
        let _lock = self.key_lock()?;
        let row = self.master_row(ns, version)?;
        if row.compromised_at.is_none() {
            let marked = MasterRow {
                compromised_at: Some(now_ms()),
                updated_at: now_ms(),
                ..row.clone()
            };
            if !self.store().update_master_if(
                &marked,
                row.state,
                None,
                &actor.entry("master.compromise", ns, format!("v{version}")),
            )? {
                return Err(conflict(format!(
                    "master v{version} changed state concurrently; retry"
                )));
            }
        }
        self.keyring().forget_all();
        let records_at_risk = self.records_under(ns, version)?;
        tracing::warn!(namespace = ns, version, records_at_risk, who = %actor.who, why = %actor.why, "derivation master marked compromised");
        Ok(CompromiseReport {
            namespace: ns.to_owned(),
            version,
            rotated_to,
            records_at_risk,
        })
    }

    /// Deletes master `version`'s wrapped material. Refused while records remain, unless
    /// `shred`, which crypto-shreds them (reads answer 410). An active master is never destroyed.
    /// Under dual control a shred only asks for a second operator's approval.
    pub fn destroy_master(
        &self,
        grant: &Grant,
        version: u32,
        shred: bool,
    ) -> Result<Decision<DestroyReport>, VaultError> {
        let namespace = grant.namespace(Role::Operator)?;
        if shred && self.policy().dual_control {
            // Refused now as it would be without dual control: a second operator approves
            // destroying a master that exists and may be destroyed, never one yet to come.
            check_destroyable(&self.master_row(namespace, version)?)?;
            let master = Irreversible::ShredMaster {
                namespace: namespace.to_owned(),
                version,
            };
            return self.request_approval(grant, master);
        }
        let actor = &grant.actor_for(if shred {
            "destruction with shredding"
        } else {
            "destruction"
        });
        self.destroy_master_as(namespace, actor, version, shred)
            .map(Decision::Done)
    }

    pub(super) fn destroy_master_as(
        &self,
        ns: &str,
        actor: &Actor,
        version: u32,
        shred: bool,
    ) -> Result<DestroyReport, VaultError> {
        let _lock = self.key_lock()?;
        let row = self.master_row(ns, version)?;
        if row.state == MasterState::Destroyed {
            // Already destroyed: make sure the keystore remembers it (it may have failed then).
            self.keyring().keystore().record_destroyed(ns, version)?;
        }
        check_destroyable(&row)?;
        let remaining = self.records_under(ns, version)?;
        if remaining > 0 && !shred {
            return Err(conflict(format!(
                "master v{version} still protects {remaining} records: re-encrypt them first, or destroy with ?shred=true to crypto-shred them"
            )));
        }
        let destroyed = MasterRow {
            state: MasterState::Destroyed,
            wrapped: None,
            updated_at: now_ms(),
            ..row.clone()
        };
        let entry = actor
            .entry("master.destroy", ns, format!("v{version}"))
            .with_detail(format!(
                "{} shred={shred} shredded_records={remaining}",
                actor.why
            ));
        if !self
            .store()
            .update_master_if(&destroyed, row.state, row.compromised_at, &entry)?
        {
            return Err(conflict(format!(
                "master v{version} changed state concurrently; retry"
            )));
        }
        self.keyring().forget_all();
        // The keystore remembers it too, so no restored backup brings the master back. Should
        // this fail, `keys destroy` of the destroyed master records it (see above); the
        // reconciliation only warns, so that a database write alone never records one.
        if let Err(e) = self.keyring().keystore().record_destroyed(ns, version) {
            tracing::error!(namespace = ns, version, error = %e, "destroyed master not recorded in the keystore: run `zkvault keys destroy` for it again");
        }
        tracing::warn!(namespace = ns, version, shredded_records = remaining, who = %actor.who, why = %actor.why, "derivation master destroyed");
        Ok(DestroyReport {
            namespace: ns.to_owned(),
            version,
            shredded_records: remaining,
        })
    }

    /// Makes the database agree with the keystore's ledger of destroyed masters, under the key
    /// lock: a master the ledger records as destroyed but the database holds live — a database
    /// restored from a backup older than the destruction — is destroyed again, loudly, with an
    /// audit entry (and replaced by a new active master if it was the active one). Returns how
    /// many rows it destroyed again.
    pub fn reconcile_destructions(&self) -> Result<usize, VaultError> {
        let _lock = self.key_lock()?;
        reconcile_destructions(self.store(), self.keyring().keystore().as_ref())
    }

    /// Decrypt-only masters that protect no record any more become `retired`. Returns them.
    pub fn retire_empty_masters(&self, actor: &Actor) -> Result<Vec<(String, u32)>, VaultError> {
        let _lock = self.key_lock()?;
        let counts = self.store().count_records_by_master()?;
        let mut retired = Vec::new();
        // Forged rows are left out (`audit verify` names them); the others are retired.
        for row in self.store().each_master()?.into_iter().flatten() {
            let empty = !counts
                .iter()
                .any(|(n, v, c)| *n == row.namespace && *v == row.version && *c > 0);
            if row.state == MasterState::DecryptOnly && empty {
                let next = MasterRow {
                    state: MasterState::Retired,
                    updated_at: now_ms(),
                    ..row.clone()
                };
                let entry =
                    actor.entry("master.retire", &row.namespace, format!("v{}", row.version));
                if self
                    .store()
                    .update_master_if(&next, row.state, row.compromised_at, &entry)?
                {
                    self.keyring().forget_all();
                    tracing::info!(namespace = %row.namespace, version = row.version, who = %actor.who, why = %actor.why, "derivation master retired");
                    retired.push((row.namespace, row.version as u32));
                }
            }
        }
        Ok(retired)
    }
}

/// [`Vault::reconcile_destructions`] without the lock (the caller holds it).
pub(super) fn reconcile_destructions(
    store: &crate::storage::Store,
    keystore: &dyn crate::keystore::Keystore,
) -> Result<usize, VaultError> {
    let ledger = keystore.destroyed_masters()?;
    let mut restored = 0;
    // A forged row is skipped (and answered at the end), not allowed to stop the others.
    let mut forged = None;
    for row in store.each_master()? {
        let row = match row {
            Ok(row) => row,
            Err(e @ crate::storage::StorageError::Integrity(_)) => {
                forged.get_or_insert(e);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let key = (row.namespace.clone(), row.version as u32);
        match (row.state == MasterState::Destroyed, ledger.contains(&key)) {
            // Only a destruction through zkvault writes the ledger: a row merely marked
            // destroyed in the database (a stray UPDATE) must stay recoverable from a backup.
            // `keys destroy` of it records it, if the keystore failed at the time.
            (true, false) => {
                tracing::warn!(namespace = %row.namespace, version = row.version, "a master destroyed in the database is not in the keystore's ledger: if zkvault destroyed it, run `zkvault keys destroy` for it again to record it");
            }
            (false, true) => {
                tracing::error!(namespace = %row.namespace, version = row.version, "the database holds a master the keystore records as destroyed: restored from a backup older than the destruction; destroying it again");
                let destroyed = MasterRow {
                    state: MasterState::Destroyed,
                    wrapped: None,
                    updated_at: now_ms(),
                    ..row.clone()
                };
                let actor = Actor::new("system", "destroyed in the keystore's ledger");
                let entry = actor
                    .entry(
                        "master.destroy",
                        &row.namespace,
                        format!("v{}", row.version),
                    )
                    .with_detail(
                        "the database was restored from before this master's destruction".into(),
                    );
                if !store.update_master_if(&destroyed, row.state, row.compromised_at, &entry)? {
                    continue;
                }
                restored += 1;
                if row.state == MasterState::Active {
                    // The namespace needs an active master to write to: a new one.
                    let kek = keystore
                        .active_kek()?
                        .ok_or_else(|| VaultError::Internal("keystore has no active KEK".into()))?;
                    let existing = store.masters(&row.namespace)?;
                    let version = next_master_version(&existing, keystore, &row.namespace)?;
                    let fresh = new_master(keystore, kek, &row.namespace, version)?;
                    store.insert_master(
                        &fresh,
                        &actor.entry("master.rotate", &row.namespace, format!("v{version}")),
                    )?;
                }
            }
            _ => {}
        }
    }
    match forged {
        Some(e) => Err(e.into()),
        None => Ok(restored),
    }
}
