//! The expiry watch: certificates expiring within a window (partners' and signers'), the
//! per-domain gauge of seconds to the nearest expiry, and one audit entry per partner
//! certificate at each of the domain's warning thresholds.

use std::time::Duration;

use serde::Serialize;

use super::{check_any_global, pki};
use crate::vault::{now_ms, Actor, EntryExt, Grant, Role, Vault, VaultError};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// `GET /v1/trust/expiring`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Expiring {
    pub within_secs: u64,
    /// Soonest first; already expired ones included.
    pub certificates: Vec<ExpiringCertificate>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExpiringCertificate {
    Partner {
        domain: String,
        id: String,
        version: i32,
        thumbprint: String,
        #[serde(serialize_with = "crate::time::serialize")]
        #[schema(value_type = String, format = DateTime)]
        not_after: i64,
    },
    Signer {
        signer: String,
        version: i32,
        #[serde(serialize_with = "crate::time::serialize")]
        #[schema(value_type = String, format = DateTime)]
        not_after: i64,
    },
}

impl ExpiringCertificate {
    fn not_after(&self) -> i64 {
        match self {
            ExpiringCertificate::Partner { not_after, .. }
            | ExpiringCertificate::Signer { not_after, .. } => *not_after,
        }
    }
}

impl Vault {
    /// Partners' current certificates and signers' attached certificates expiring within
    /// `within` (roles `operator`, `auditor`).
    pub fn expiring(&self, grant: &Grant, within: Duration) -> Result<Expiring, VaultError> {
        check_any_global(grant, &[Role::Operator, Role::Auditor])?;
        let until = now_ms().saturating_add(within.as_millis().min(i64::MAX as u128) as i64);
        let mut certificates: Vec<ExpiringCertificate> = self
            .current_partners()
            .filter(|(_, row)| row.not_after <= until)
            .map(|(_, row)| ExpiringCertificate::Partner {
                domain: row.domain.clone(),
                id: row.partner_id.clone(),
                version: row.version,
                thumbprint: row.thumbprint.clone(),
                not_after: row.not_after,
            })
            .collect();
        for (signer, version, pem) in self.signers().published_certificates() {
            let not_after = pki::certificates(&pem)
                .ok()
                .and_then(|chain| pki::not_after(&chain[0]));
            if let Some(not_after) = not_after.filter(|t| *t <= until) {
                certificates.push(ExpiringCertificate::Signer {
                    signer,
                    version,
                    not_after,
                });
            }
        }
        certificates.sort_by_key(ExpiringCertificate::not_after);
        Ok(Expiring {
            within_secs: within.as_secs(),
            certificates,
        })
    }

    /// Per policy domain with partners: seconds until the nearest expiry of a current,
    /// unrevoked partner certificate (negative once expired).
    pub fn trust_expiry_seconds(&self) -> Vec<(String, i64)> {
        let now = now_ms();
        let mut nearest = std::collections::BTreeMap::new();
        for (_, row) in self.current_partners() {
            let secs = (row.not_after - now).div_euclid(1000);
            nearest
                .entry(row.domain.clone())
                .and_modify(|s: &mut i64| *s = (*s).min(secs))
                .or_insert(secs);
        }
        nearest.into_iter().collect()
    }

    /// Audits each warning threshold a current partner certificate has crossed, once across
    /// every instance; answers how many warnings were given. Only the missing ones are
    /// written, and a failed write is logged, not allowed to stop the scheduler's pass.
    pub(crate) fn warn_expiring_partners(&self, now: i64) -> Result<usize, VaultError> {
        let actor = Actor::new("system", "trust expiry watch");
        let given: std::collections::BTreeSet<_> =
            self.store().expiry_warnings()?.into_iter().collect();
        let mut count = 0;
        for (policy, row) in self.current_partners() {
            let left = row.not_after - now;
            for days in policy
                .expiry_warn_days
                .iter()
                .filter(|d| left <= i64::from(**d) * DAY_MS)
            {
                let key = (
                    row.domain.clone(),
                    row.partner_id.clone(),
                    row.version,
                    *days as i32,
                );
                if given.contains(&key) {
                    continue;
                }
                let entry = actor
                    .entry(
                        "trust.expiry_warning",
                        "",
                        format!("partner {}/{} v{}", row.domain, row.partner_id, row.version),
                    )
                    .with_detail(format!(
                        "{} days threshold; not_after {}",
                        days,
                        crate::time::rfc3339(row.not_after)
                    ));
                let (domain, id, version, days) = key;
                match self
                    .store()
                    .note_expiry_warning(&domain, &id, version, days, &entry)
                {
                    Ok(true) => {
                        tracing::warn!(%domain, partner = %id, version, days, "partner certificate expires soon");
                        count += 1;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "could not record an expiry warning; the next pass retries")
                    }
                }
            }
        }
        Ok(count)
    }

    /// For `policy plan`: each current partner certificate's expiry warnings and expiry.
    pub(crate) fn trust_plan(&self, now: i64) -> Vec<crate::vault::PlannedEvent> {
        let mut events = Vec::new();
        for (policy, row) in self.current_partners() {
            let name = format!("partner {}/{} v{}", row.domain, row.partner_id, row.version);
            for days in &policy.expiry_warn_days {
                let at = row.not_after - i64::from(*days) * DAY_MS;
                if at >= now {
                    events.push(crate::vault::PlannedEvent {
                        at_ms: at,
                        what: format!("{name}: certificate expiry warning ({days} days)"),
                    });
                }
            }
            events.push(crate::vault::PlannedEvent {
                at_ms: row.not_after.max(now),
                what: format!("{name}: certificate expires"),
            });
        }
        events
    }

    /// Each policy domain's partners' current, unrevoked versions, with the domain's policy.
    fn current_partners(
        &self,
    ) -> impl Iterator<
        Item = (
            &crate::policy::TrustDomainPolicy,
            crate::storage::PartnerRow,
        ),
    > + '_ {
        let snapshot = self.trust.snapshot();
        // The version shares use: none for a partner whose newest row is missing.
        let rows: Vec<_> = snapshot
            .partners
            .iter()
            .filter(|(key, _)| !snapshot.newest_missing.contains(*key))
            .filter_map(|(_, versions)| versions.last())
            .filter(|row| row.revoked_reason.is_none())
            .cloned()
            .collect();
        rows.into_iter().filter_map(|row| {
            self.policy()
                .trust_domain(&row.domain)
                .map(|policy| (policy, row))
        })
    }
}
