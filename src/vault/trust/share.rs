//! Records shared with partners, encrypted to the partner's current certificate as a compact
//! JWE (josekit: `ECDH-ES+A256KW` or `RSA-OAEP-256`, `A256GCM`), each with a receipt that
//! names the resident only by its keyed audit tag; and the exposure reports read from them.

use std::collections::BTreeMap;

use josekit::jwe::{JweHeader, ECDH_ES_A256KW, RSA_OAEP_256};
use serde::Serialize;
use serde_json::json;

use super::pki::{self, PartnerKey};
use super::{check_any_global, valid_partner_id, DomainState, PARTNER_ID_PATTERN};
use crate::storage::{AuditEntry, ShareReceipt};
use crate::vault::record_name::audit_name;
use crate::vault::{now_ms, EntryExt, Grant, Role, Vault, VaultError};

/// A record encrypted to a partner.
pub struct Shared {
    /// Compact JWE.
    pub jwe: String,
}

/// `GET …/partners/{id}/exposure`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PartnerExposure {
    pub domain: String,
    pub id: String,
    /// Shares to the versions listed.
    pub shares: i64,
    /// Distinct residents among them.
    pub residents: i64,
    /// Whether the receipts agree with the audit trail's `trust.share` entries, version by
    /// version, and every version's row is there. Receipts are plain rows; the hash-chained
    /// trail is the record. `false` means rows were deleted or edited: trust the `audited_*`
    /// counts (and run `audit verify`).
    pub consistent: bool,
    pub versions: Vec<VersionExposure>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionExposure {
    pub version: i32,
    /// `None` when the version's row is gone (`row_missing`).
    pub thumbprint: Option<String>,
    /// The keystore knows this version was registered, the database no longer holds it.
    pub row_missing: bool,
    pub revoked_reason: Option<String>,
    pub shares: i64,
    pub residents: i64,
    /// Shares and distinct residents as the audit trail records them.
    pub audited_shares: i64,
    pub audited_residents: i64,
    #[serde(serialize_with = "crate::time::serialize_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub first_at: Option<i64>,
    #[serde(serialize_with = "crate::time::serialize_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_at: Option<i64>,
    /// Shares per record name.
    pub by_record_name: BTreeMap<String, i64>,
}

/// `GET /v1/ns/{ns}/exposure`'s answer: where one resident's records went.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResidentExposure {
    pub shares: Vec<ResidentShare>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResidentShare {
    pub domain: String,
    pub id: String,
    pub version: i32,
    pub thumbprint: String,
    pub revoked: bool,
    pub revoked_reason: Option<String>,
    pub record_name: String,
    pub revision: i64,
    #[serde(serialize_with = "crate::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub shared_at: i64,
    pub jti: String,
}

/// `DOMAIN/id`.
fn partner_ref(partner: &str) -> Result<(&str, &str), VaultError> {
    partner
        .split_once('/')
        .filter(|(d, id)| crate::policy::valid_domain_name(d) && valid_partner_id(id))
        .ok_or_else(|| {
            VaultError::BadInput(format!(
                "partner must be DOMAIN/id, id matching {PARTNER_ID_PATTERN}"
            ))
        })
}

impl Vault {
    /// Encrypts a record's exact bytes to a partner's current certificate (role `sharer`),
    /// after validating that certificate's path again now; records the share.
    pub fn share_record(
        &self,
        grant: &Grant,
        raw_id: &str,
        name: &str,
        partner: &str,
        ttl_secs: Option<u64>,
    ) -> Result<Shared, VaultError> {
        let ns = grant.namespace(Role::Sharer)?;
        let actor = grant.actor();
        let mut entry = actor.entry("trust.share", ns, audit_name(name));
        let shared = self.share_as(actor, ns, raw_id, name, partner, ttl_secs, &mut entry);
        if let Err(e) = &shared {
            self.record_failure(entry, e);
        }
        shared
    }

    #[allow(clippy::too_many_arguments)]
    fn share_as(
        &self,
        actor: &crate::vault::Actor,
        ns: &str,
        raw_id: &str,
        name: &str,
        partner: &str,
        ttl_secs: Option<u64>,
        entry: &mut AuditEntry,
    ) -> Result<Shared, VaultError> {
        let (domain, id) = partner_ref(partner)?;
        let policy = self.trust_domain(domain)?;
        let max = policy.max_share_ttl.as_secs();
        let ttl = ttl_secs.unwrap_or(max);
        if ttl == 0 || ttl > max {
            return Err(VaultError::BadInput(format!(
                "ttl_secs must be 1-{max} (the domain's max_share_ttl_secs)"
            )));
        }
        let snapshot = self.trust.snapshot();
        let current = snapshot
            .current(domain, id)
            .ok_or(VaultError::UnknownPartner)?;
        // The trail names the certificate a record went to; the record is in the detail.
        entry.target = format!("partner {domain}/{id} v{}", current.version);
        entry.detail = format!("record {}", audit_name(name));
        let newest_missing = snapshot
            .newest_missing
            .contains(&(domain.to_owned(), id.to_owned()));
        if current.revoked_reason.is_some() || newest_missing {
            return Err(VaultError::PartnerUntrusted);
        }
        let empty = DomainState::default();
        let state = snapshot.domains.get(domain).unwrap_or(&empty);
        if state.forged {
            return Err(VaultError::PartnerUntrusted);
        }
        let now = now_ms();
        let chain = pki::certificates(&current.chain).map_err(|_| VaultError::Integrity)?;
        let valid = pki::validate(&chain, &state.anchors, &state.crls, policy, now / 1000)
            .map_err(|refusal| {
                tracing::warn!(%domain, partner = %id, reason = refusal.reason, "share refused: the partner's certificate no longer validates");
                VaultError::PartnerUntrusted
            })?;
        let record = self.read_record(actor, ns, raw_id, name, entry)?;
        let jti = hex::encode(zkvault_core::random::array::<16>()?);
        let iat = now / 1000;
        let mut header = JweHeader::new();
        header.set_content_encryption("A256GCM");
        header.set_key_id(&current.thumbprint);
        for (claim, value) in [
            ("zkv_ns", json!(ns)),
            ("zkv_name", json!(name)),
            ("zkv_rev", json!(record.revision)),
            ("iat", json!(iat)),
            ("exp", json!(iat + ttl as i64)),
            ("jti", json!(jti)),
        ] {
            header
                .set_claim(claim, Some(value))
                .map_err(|e| VaultError::Internal(format!("JWE header: {e}")))?;
        }
        let jwe = match valid.key {
            PartnerKey::P256 => ECDH_ES_A256KW
                .encrypter_from_der(&valid.spki)
                .and_then(|enc| josekit::jwe::serialize_compact(&record.body, &header, &enc)),
            PartnerKey::Rsa(_) => RSA_OAEP_256
                .encrypter_from_der(&valid.spki)
                .and_then(|enc| josekit::jwe::serialize_compact(&record.body, &header, &enc)),
        }
        .map_err(|e| VaultError::Internal(format!("JWE encryption failed: {e}")))?;
        let receipt = ShareReceipt {
            jti: jti.clone(),
            domain: domain.to_owned(),
            partner_id: id.to_owned(),
            version: current.version,
            thumbprint: current.thumbprint.clone(),
            namespace: ns.to_owned(),
            resident_tag: entry.resident_tag.clone(),
            record_name: name.to_owned(),
            revision: record.revision,
            created_at: now,
        };
        let entry = entry.clone().with_detail(format!(
            "record {name} rev {} x5t#S256={} jti={jti}",
            record.revision, current.thumbprint
        ));
        self.store().add_share(&receipt, &entry)?;
        Ok(Shared { jwe })
    }

    /// What was shared with a partner, per certificate version (role `auditor`); with
    /// `reason`, only the versions revoked for it.
    pub fn partner_exposure(
        &self,
        grant: &Grant,
        domain: &str,
        id: &str,
        reason: Option<&str>,
    ) -> Result<PartnerExposure, VaultError> {
        check_any_global(grant, &[Role::Auditor])?;
        self.trust_domain(domain)?;
        if reason.is_some_and(|r| !super::REVOCATION_REASONS.contains(&r)) {
            return Err(VaultError::BadInput(format!(
                "reason must be one of {:?}",
                super::REVOCATION_REASONS
            )));
        }
        let snapshot = self.trust.snapshot();
        let rows = snapshot.versions(domain, id).unwrap_or_default();
        let counts = self.store().share_counts(domain, id)?;
        // Every version that ever was: a deleted row must not hide its shares.
        let ledger = self.keyring().keystore().destroyed_masters()?;
        let registered = super::highest(&ledger, &super::versions_ledger(domain, id)).unwrap_or(0);
        let mut all: std::collections::BTreeSet<i32> = (1..=registered as i32).collect();
        all.extend(rows.iter().map(|r| r.version));
        all.extend(counts.iter().map(|c| c.0));
        if all.is_empty() {
            return Err(VaultError::UnknownPartner);
        }
        let target = |v: i32| format!("partner {domain}/{id} v{v}");
        let targets: Vec<String> = all.iter().map(|v| target(*v)).collect();
        let audited = self.store().audited_shares(&targets)?;
        let mut versions = Vec::new();
        for version in all {
            let row = rows.iter().find(|r| r.version == version);
            let revoked_in_ledger =
                ledger.contains(&(super::ledger_name(domain, id), version as u32));
            let revoked_reason = match row {
                Some(row) => row.revoked_reason.clone(),
                // The row is gone: the keystore knows it was revoked, not why.
                None => revoked_in_ledger.then(|| "key_compromise".to_owned()),
            };
            if reason.is_some_and(|r| revoked_reason.as_deref() != Some(r)) {
                continue;
            }
            let mine: Vec<_> = counts.iter().filter(|c| c.0 == version).collect();
            let (audited_shares, audited_residents) = audited
                .iter()
                .find(|a| a.0 == target(version))
                .map_or((0, 0), |a| (a.1, a.2));
            versions.push(VersionExposure {
                audited_shares,
                audited_residents,
                version,
                thumbprint: row.map(|r| r.thumbprint.clone()),
                row_missing: row.is_none(),
                revoked_reason,
                shares: mine.iter().map(|c| c.2).sum(),
                residents: self.store().shared_residents(domain, id, &[version])?,
                first_at: mine.iter().filter_map(|c| c.3).min(),
                last_at: mine.iter().filter_map(|c| c.4).max(),
                by_record_name: mine.iter().map(|c| (c.1.clone(), c.2)).collect(),
            });
        }
        let listed: Vec<i32> = versions.iter().map(|v| v.version).collect();
        let consistent = versions.iter().all(|v| {
            !v.row_missing && v.shares == v.audited_shares && v.residents == v.audited_residents
        });
        if !consistent {
            tracing::error!(%domain, partner = %id, "share receipts disagree with the audit trail (deleted or edited receipts?): the exposure report says so");
        }
        Ok(PartnerExposure {
            consistent,
            domain: domain.to_owned(),
            id: id.to_owned(),
            shares: versions.iter().map(|v| v.shares).sum(),
            residents: self.store().shared_residents(domain, id, &listed)?,
            versions,
        })
    }

    /// The partners that received one resident's records (role `reader`), newest first.
    pub fn resident_exposure(
        &self,
        grant: &Grant,
        raw_id: &str,
    ) -> Result<ResidentExposure, VaultError> {
        let ns = grant.namespace(Role::Reader)?;
        let entry = grant.actor().entry("trust.exposure", ns, "");
        self.audited_read(entry, |entry| {
            let keys = self.resident(ns, raw_id)?;
            entry.resident_tag = keys.tag.clone();
            let snapshot = self.trust.snapshot();
            let shares = self
                .store()
                .resident_shares(ns, &keys.tag)?
                .into_iter()
                .map(|r| {
                    let revoked_reason = snapshot
                        .versions(&r.domain, &r.partner_id)
                        .and_then(|rows| rows.iter().find(|row| row.version == r.version))
                        .and_then(|row| row.revoked_reason.clone());
                    ResidentShare {
                        revoked: revoked_reason.is_some(),
                        revoked_reason,
                        domain: r.domain,
                        id: r.partner_id,
                        version: r.version,
                        thumbprint: r.thumbprint,
                        record_name: r.record_name,
                        revision: r.revision,
                        shared_at: r.created_at,
                        jti: r.jti,
                    }
                })
                .collect();
            Ok(ResidentExposure { shares })
        })
    }
}
