//! Dual control. Where the policy sets `dual_control`, the irreversible operations — shredding
//! a master's remaining records, destroying a KEK — take two different operators: the first
//! call records a request and answers its approval id; a second operator's approval within the
//! policy's `approval_minutes` carries it out, checked against the state at that moment (a
//! master rotated back to active, or already destroyed, is refused then). Both steps are audit
//! entries. The requester cannot approve its own request; an approval is used once.

use serde::Serialize;

use super::{now_ms, EntryExt, Grant, Role, Vault, VaultError};
use crate::storage::ApprovalRow;

/// What a dual-control request asks for.
pub(super) enum Irreversible {
    ShredMaster {
        namespace: String,
        version: u32,
    },
    DestroyKek {
        version: u32,
    },
    /// A trust domain's anchors, as proposed with the request (`trust_anchor_proposals`).
    ReplaceAnchors,
}

impl Irreversible {
    fn operation(&self) -> &'static str {
        match self {
            Irreversible::ShredMaster { .. } => "master.shred",
            Irreversible::DestroyKek { .. } => "kek.destroy",
            Irreversible::ReplaceAnchors => "trust.anchors",
        }
    }
}

/// An irreversible operation done, or waiting for a second operator (as JSON: either's own).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Decision<T> {
    Done(T),
    Pending(PendingApproval),
}

/// The answer to the first call of a dual-control operation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PendingApproval {
    /// Pass to `POST /v1/approvals/{id}` (another operator).
    pub approval: String,
    /// `master.shred`, `kek.destroy` or `trust.anchors`.
    pub operation: String,
    #[serde(serialize_with = "crate::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: i64,
}

/// What an approval carried out.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Approved {
    Shredded(super::DestroyReport),
    KekDestroyed { destroyed_kek: u32 },
    AnchorsReplaced(super::AnchorsReport),
}

/// Approval ids: 16 hex characters.
fn valid_approval_id(id: &str) -> bool {
    id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl Vault {
    pub(super) fn request_approval<T>(
        &self,
        grant: &Grant,
        what: Irreversible,
    ) -> Result<Decision<T>, VaultError> {
        let (namespace, version) = match &what {
            Irreversible::ShredMaster { namespace, version } => (namespace.clone(), *version),
            Irreversible::DestroyKek { version } => (String::new(), *version),
            Irreversible::ReplaceAnchors => (String::new(), 0),
        };
        let now = now_ms();
        let row = ApprovalRow {
            id: hex::encode(zkvault_core::random::array::<8>()?),
            operation: what.operation().to_owned(),
            namespace,
            version: version.into(),
            requested_by: grant.actor().who.clone(),
            requested_at: now,
            expires_at: now + self.policy().approval_ttl.as_millis() as i64,
            decided_by: None,
            decided_at: None,
        };
        let entry = grant
            .actor()
            .entry("approval.request", &row.namespace, format!("v{version}"))
            .with_detail(format!("{} approval={}", row.operation, row.id));
        self.store().insert_approval(&row, &entry)?;
        Ok(Decision::Pending(PendingApproval {
            approval: row.id,
            operation: row.operation,
            expires_at: row.expires_at,
        }))
    }

    /// Carries out approval `id` as its second operator. An unknown id, or one outside the
    /// approver's namespaces, is 404; the requester's own, an expired or a used approval is 409.
    pub fn approve(&self, grant: &Grant, id: &str) -> Result<Approved, VaultError> {
        grant.check(Role::Operator)?;
        let row = valid_approval_id(id)
            .then(|| self.store().approval(id))
            .transpose()?
            .flatten()
            .filter(|r| r.namespace.is_empty() || grant.covers(&r.namespace))
            .ok_or(VaultError::NotFound)?;
        let version = u32::try_from(row.version).map_err(|_| VaultError::Integrity)?;
        let what = match row.operation.as_str() {
            "master.shred" => Irreversible::ShredMaster {
                namespace: row.namespace.clone(),
                version,
            },
            "kek.destroy" => {
                grant.check_global(Role::Operator)?;
                Irreversible::DestroyKek { version }
            }
            "trust.anchors" => {
                grant.check_global(Role::Operator)?;
                Irreversible::ReplaceAnchors
            }
            _ => return Err(VaultError::Integrity),
        };
        let approver = grant.actor();
        if self.same_holder(&approver.who, &row.requested_by)? {
            return Err(VaultError::Conflict(
                "dual control: a second, different operator must approve".into(),
            ));
        }
        let entry = approver
            .entry("approval.grant", &row.namespace, format!("v{version}"))
            .with_detail(format!(
                "{} approval={id} requested_by={}",
                row.operation, row.requested_by
            ));
        if !self
            .store()
            .decide_approval(id, &approver.who, now_ms(), &entry)?
        {
            return Err(VaultError::Conflict(
                "the approval has expired or was already used".into(),
            ));
        }
        let mut actor = approver.clone();
        actor.why = format!(
            "{} requested by {} and approved ({id})",
            row.operation, row.requested_by
        );
        let done = match what {
            Irreversible::ShredMaster { namespace, version } => self
                .destroy_master_as(&namespace, &actor, version, true)
                .map(Approved::Shredded),
            Irreversible::DestroyKek { version } => {
                self.destroy_kek_as(&actor, version)
                    .map(|()| Approved::KekDestroyed {
                        destroyed_kek: version,
                    })
            }
            Irreversible::ReplaceAnchors => self.proposed_anchors(id).and_then(|(domain, pem)| {
                self.replace_anchors(&actor, &domain, &pem)
                    .map(Approved::AnchorsReplaced)
            }),
        };
        if let Err(e) = &done {
            // Nothing was carried out: the approval stays usable, and the trail says why.
            let mut failed =
                approver.entry("approval.grant", &row.namespace, format!("v{version}"));
            failed.outcome = e.code().to_owned();
            failed.detail = format!("{} approval={id} not carried out; released", row.operation);
            self.store().release_approval(id, &approver.who, &failed)?;
        }
        done
    }

    /// Whether credentials `a` and `b` are one holder's: the same id, or one a successor of the
    /// other by rotation (a rotation issues a new id to the same holder).
    fn same_holder(&self, a: &str, b: &str) -> Result<bool, VaultError> {
        Ok(a == b || self.succeeds(a, b)? || self.succeeds(b, a)?)
    }

    /// Whether `later` is `earlier` rotated, once or more: followed back through each
    /// credential's own MACed row, so a writer cannot cut the link.
    fn succeeds(&self, later: &str, earlier: &str) -> Result<bool, VaultError> {
        let mut id = later.to_owned();
        // Bounded: a rotation chain longer than this is a damaged table, not a holder.
        for _ in 0..1000 {
            let row = self.store().credential(&id)?;
            match row.map(|c| c.rotated_from) {
                Some(Some(previous)) if previous == earlier => return Ok(true),
                Some(Some(previous)) => id = previous,
                Some(None) => return Ok(false),
                // A credential named by a rotation is gone (deleted from the database): whose it
                // was cannot be told, so it counts as the same holder's.
                None => return Ok(id != later),
            }
        }
        Ok(true)
    }
}
