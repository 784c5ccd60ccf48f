//! Policy-driven lifecycle: what is due now (run by the scheduler inside `serve`, one instance
//! at a time) and what will be due (`zkvault policy plan`).

use std::time::Duration;

use serde::Serialize;

use super::{now_ms, Actor, Grant, MasterState, Role, Vault, VaultError};
use crate::keystore::KekState;
use crate::storage::{Advisory, KekRow, StorageError};

/// Work the scheduler did in one pass.
#[derive(Debug, Default, Serialize)]
pub struct LifecycleReport {
    pub kek_rotated: Option<u32>,
    pub masters_rotated: Vec<(String, u32)>,
    pub masters_retired: Vec<(String, u32)>,
    pub masters_destroyed: Vec<(String, u32)>,
    /// Decrypt-only masters past the policy's window: their remaining records need a bulk
    /// re-encryption pass with resident IDs, which only the caller can supply.
    pub overdue_decrypt_only: Vec<(String, u32)>,
    pub signers: super::SignerReport,
    /// Partner certificate expiry warnings audited in this pass.
    pub expiry_warnings: usize,
}

/// One entry of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedEvent {
    pub at_ms: i64,
    pub what: String,
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl Vault {
    /// The active KEK's metadata (its creation date schedules the next rotation; its keystore
    /// is the deployment's).
    pub(super) fn active_kek_row(&self) -> Result<Option<KekRow>, VaultError> {
        Ok(self
            .store()
            .keks()?
            .into_iter()
            .find(|k| k.state == KekState::Active))
    }

    /// Rotates, retires and destroys whatever the policy says is due at `now`.
    pub fn run_due_lifecycle(&self, now: i64) -> Result<LifecycleReport, VaultError> {
        let actor = Actor::new("scheduler", "due by key policy");
        let mut report = LifecycleReport::default();
        // A forged key row stops the work that needs it, not the rest: the first such failure
        // is answered once the rest is done.
        let mut forged = None;
        if let Some(kek) = self.active_kek_row()? {
            if kek.created_at + ms(self.policy().kek_rotation) <= now {
                match self.rotate_kek(&Grant::system(actor.clone(), Role::Operator, None)) {
                    Ok(rotation) => report.kek_rotated = Some(rotation.active),
                    Err(VaultError::Integrity) => {
                        forged.get_or_insert(VaultError::Integrity);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        for (ns, policy) in &self.policy().namespaces {
            let masters = match self.store().masters(ns) {
                Ok(masters) => masters,
                Err(StorageError::Integrity(_)) => {
                    forged.get_or_insert(VaultError::Integrity);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(active) = masters.iter().find(|m| m.state == MasterState::Active) {
                if active.created_at + ms(policy.dm_rotation) <= now {
                    report.masters_rotated.push((
                        ns.clone(),
                        self.rotate_master(&Grant::system(
                            actor.clone(),
                            Role::Operator,
                            Some(ns),
                        ))?
                        .active,
                    ));
                }
            }
            for m in masters
                .iter()
                .filter(|m| m.state == MasterState::DecryptOnly)
            {
                if m.updated_at + ms(policy.decrypt_only_max) <= now {
                    tracing::warn!(namespace = %ns, version = m.version, "decrypt-only master past its window: run a bulk re-encryption");
                    report
                        .overdue_decrypt_only
                        .push((ns.clone(), m.version as u32));
                }
            }
        }
        report.masters_retired = self.retire_empty_masters(&actor)?;
        report.expiry_warnings = self.warn_expiring_partners(now)?;
        match self.run_due_signers(now) {
            Ok(signers) => report.signers = signers,
            Err(VaultError::Integrity) => {
                forged.get_or_insert(VaultError::Integrity);
            }
            Err(e) => return Err(e),
        }
        for m in self.store().each_master()?.into_iter().flatten() {
            let Some(policy) = self.policy().namespace(&m.namespace) else {
                continue;
            };
            if m.state == MasterState::Retired
                && m.updated_at + ms(policy.destroy_after_retired) <= now
            {
                // A retired master protects no record: nothing to shred, no approval needed.
                match self.destroy_master_as(&m.namespace, &actor, m.version as u32, false) {
                    Ok(_) => report
                        .masters_destroyed
                        .push((m.namespace.clone(), m.version as u32)),
                    Err(VaultError::Integrity) => {
                        forged.get_or_insert(VaultError::Integrity);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        match forged {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// The rotations, window ends and destructions the policy schedules from the current key
    /// state up to `now + horizon`, in date order.
    pub fn plan(&self, now: i64, horizon: Duration) -> Result<Vec<PlannedEvent>, VaultError> {
        let end = now + ms(horizon);
        let mut events = Vec::new();
        // Adds `what(n)` at `first + n * period` for every such date within the horizon.
        let every = |events: &mut Vec<PlannedEvent>,
                     first: i64,
                     period: i64,
                     what: &dyn Fn(usize) -> String| {
            let (mut at, mut n) = (first.max(now), 0);
            while at <= end && period > 0 {
                events.push(PlannedEvent {
                    at_ms: at,
                    what: what(n),
                });
                at += period;
                n += 1;
            }
        };
        if let Some(kek) = self.active_kek_row()? {
            let v = kek.version;
            every(
                &mut events,
                kek.created_at + ms(self.policy().kek_rotation),
                ms(self.policy().kek_rotation),
                &|n| format!("rotate KEK (v{} → v{})", v + n as i32, v + n as i32 + 1),
            );
        }
        for (ns, policy) in &self.policy().namespaces {
            let masters = self.store().masters(ns)?;
            if let Some(active) = masters.iter().find(|m| m.state == MasterState::Active) {
                let (v, rot, window) = (
                    active.version,
                    ms(policy.dm_rotation),
                    ms(policy.decrypt_only_max),
                );
                every(&mut events, active.created_at + rot, rot, &|n| {
                    format!("{ns}: rotate DM v{} → v{}", v + n as i32, v + n as i32 + 1)
                });
                every(&mut events, active.created_at + rot + window, rot, &|n| {
                    format!(
                        "{ns}: DM v{} decrypt-only window ends (bulk re-encryption due)",
                        v + n as i32
                    )
                });
            }
            for m in &masters {
                if m.state == MasterState::DecryptOnly {
                    events.push(PlannedEvent {
                        at_ms: (m.updated_at + ms(policy.decrypt_only_max)).max(now),
                        what: format!(
                            "{ns}: DM v{} decrypt-only window ends (bulk re-encryption due)",
                            m.version
                        ),
                    });
                }
                if m.state == MasterState::Retired {
                    events.push(PlannedEvent {
                        at_ms: (m.updated_at + ms(policy.destroy_after_retired)).max(now),
                        what: format!("{ns}: destroy retired DM v{}", m.version),
                    });
                }
            }
        }
        for c in self.credentials().list(|_| true)? {
            if let (Some(exp), None) = (c.expires_at, c.revoked_at) {
                if exp <= end {
                    events.push(PlannedEvent {
                        at_ms: exp.max(now),
                        what: format!("credential {} ({}) expires", c.id, c.label),
                    });
                }
            }
        }
        events.extend(self.signer_plan(now, end)?);
        events.extend(self.trust_plan(now));
        // Window ends and destructions are dated from state, not generated up to the horizon.
        events.retain(|e| e.at_ms <= end);
        events.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then_with(|| a.what.cmp(&b.what)));
        Ok(events)
    }
}

impl Vault {
    /// One pass of the scheduler: if this instance wins the scheduler lock (PostgreSQL advisory
    /// lock; SQLite has one writer), runs due lifecycle work and checkpoints the audit trail.
    /// `None` when another instance holds the lock.
    pub fn run_scheduled_pass(&self, now: i64) -> Result<Option<LifecycleReport>, VaultError> {
        let Some(_leader) = self.store().try_leader_lock(Advisory::Scheduler)? else {
            return Ok(None);
        };
        // Each part runs whatever the others did: a forged key row that stops the lifecycle
        // work must not also stop the audit checkpoints.
        let report = self.run_due_lifecycle(now);
        let reconciled = self.reconcile_destructions();
        let checkpointed = self.checkpoint_audit();
        let report = report?;
        reconciled?;
        checkpointed?;
        Ok(Some(report))
    }
}

/// Runs [`Vault::run_scheduled_pass`] every `tick` on a background thread. Stops when the vault
/// is dropped.
pub fn spawn_scheduler(vault: std::sync::Arc<Vault>, tick: Duration) {
    let weak = std::sync::Arc::downgrade(&vault);
    drop(vault);
    std::thread::Builder::new()
        .name("lifecycle-scheduler".into())
        .spawn(move || {
            // The failure last recorded in the trail: one entry per change, not one per tick.
            let mut recorded: Option<String> = None;
            loop {
                std::thread::sleep(tick);
                let Some(vault) = weak.upgrade() else { return };
                match vault.run_scheduled_pass(now_ms()) {
                    Ok(Some(r)) if r.kek_rotated.is_some() || !r.masters_rotated.is_empty() || !r.masters_destroyed.is_empty() || !r.masters_retired.is_empty() || !r.signers.is_empty() => {
                        tracing::info!(report = ?r, "scheduled lifecycle work done");
                        recorded = None;
                    }
                    Ok(_) => recorded = None,
                    Err(e) => {
                        tracing::warn!(error = %e, "scheduled lifecycle pass failed; retrying next tick");
                        let failure = e.to_string();
                        if matches!(e, VaultError::Integrity) && recorded.as_ref() != Some(&failure) {
                            let mut entry = Actor::new("scheduler", "").entry("scheduler.pass", "", "");
                            entry.outcome = e.code().to_owned();
                            if vault.store().append_audit(&entry).is_ok() {
                                recorded = Some(failure);
                            }
                        }
                    }
                }
            }
        })
        .expect("spawn lifecycle scheduler thread");
}
