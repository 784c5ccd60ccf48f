//! Replays of a key or credential row's own older version: the row from before a revocation, a
//! rotation or a compromise mark, put back from a backup, is authentic (its MAC covers its
//! content, not its age), so storage accepts it. The trail remembers each change: `audit
//! verify` reports a credential the trail revoked that its row says is not, one whose row
//! expires later than its rotation set, a master the trail marked compromised that its row says
//! is not, and any credential, master or KEK row that is not authentic.

use std::collections::{HashMap, HashSet};

use super::audit::AuditBreak;
use super::{MasterState, Vault, VaultError};
use crate::storage::{AuditRow, StorageError};

#[derive(Default)]
pub(super) struct StateHistory {
    revoked: HashSet<String>,
    /// Credential → the expiry its rotation gave it (it only ever comes sooner).
    rotated: HashMap<String, i64>,
    compromised: HashSet<(String, i32)>,
}

impl StateHistory {
    pub fn observe(&mut self, row: &AuditRow) {
        let e = &row.entry;
        match (e.operation.as_str(), e.outcome.as_str()) {
            ("credential.revoke", "ok") => {
                self.revoked.insert(e.target.clone());
            }
            ("credential.rotate", "ok") => {
                let until = e.detail.rsplit("old expires_at=").next();
                if let Some(until) = until.and_then(|t| t.parse().ok()) {
                    self.rotated.insert(e.target.clone(), until);
                }
            }
            ("master.compromise", "ok") => {
                if let Some(v) = e.target.strip_prefix('v').and_then(|v| v.parse().ok()) {
                    self.compromised.insert((e.namespace.clone(), v));
                }
            }
            _ => {}
        }
    }
}

fn broken(what: String, reason: &str) -> Option<AuditBreak> {
    Some(AuditBreak {
        chain: "keys".into(),
        seq: 0,
        reason: format!("{what}: {reason}"),
    })
}

impl Vault {
    /// The first credential, master or KEK row that is not authentic, or that contradicts the
    /// trail (an older copy put back).
    pub(super) fn check_states(
        &self,
        history: &StateHistory,
    ) -> Result<Option<AuditBreak>, VaultError> {
        let forged = "not authentic: written outside zkvault";
        for listed in self.store().credential_listing()? {
            let row = match self.store().credential(&listed.id) {
                Err(StorageError::Integrity(what)) => return Ok(broken(what, forged)),
                other => other?,
            };
            let Some(row) = row else { continue };
            if history.revoked.contains(&listed.id) && row.revoked_at.is_none() {
                return Ok(broken(
                    format!("credential {}", listed.id),
                    "revoked, but its row says it is not: an older copy was put back",
                ));
            }
            let until = history.rotated.get(&listed.id);
            if until.is_some_and(|t| row.expires_at.is_none_or(|e| e > *t)) {
                return Ok(broken(
                    format!("credential {}", listed.id),
                    "rotated, but its row expires later than the rotation said: an older copy was put back",
                ));
            }
        }
        let masters = match self.store().all_masters() {
            Err(StorageError::Integrity(what)) => return Ok(broken(what, forged)),
            other => other?,
        };
        for m in masters {
            if history
                .compromised
                .contains(&(m.namespace.clone(), m.version))
                && m.compromised_at.is_none()
                && m.state != MasterState::Destroyed
            {
                return Ok(broken(
                    format!("master {} v{}", m.namespace, m.version),
                    "marked compromised, but its row says it is not: an older copy was put back",
                ));
            }
        }
        match self.store().keks() {
            Err(StorageError::Integrity(what)) => Ok(broken(what, forged)),
            other => other.map(|_| None).map_err(Into::into),
        }
    }
}
