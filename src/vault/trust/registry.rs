//! The registry's use cases: a domain's anchors (under dual control, two operators), CRLs,
//! partner registration with path validation, the partner view and revocation.

use serde::Serialize;

use super::{
    check_any_global, crl_ledger, highest, ledger_name, pki, revoked_ledger, valid_partner_id,
    versions_ledger, DomainState, Refusal, PARTNER_ID_PATTERN, REVOCATION_REASONS,
};
use crate::storage::{AnchorProposal, AnchorRow, CrlRow, PartnerRow, StorageError};
use crate::vault::approvals::{Decision, Irreversible};
use crate::vault::{now_ms, Actor, EntryExt, Grant, Role, Vault, VaultError};

/// `PUT …/anchors`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnchorsReport {
    pub domain: String,
    pub roots: usize,
    pub intermediates: usize,
    /// SHA-256 (hex) of each certificate, roots first.
    pub fingerprints: Vec<String>,
}

/// `GET …/partners/{id}`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PartnerView {
    pub domain: String,
    pub id: String,
    pub versions: Vec<PartnerVersionView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PartnerVersionView {
    pub version: i32,
    /// `x5t#S256` of the certificate.
    pub thumbprint: String,
    /// `EC P-256` or `RSA <bits>`.
    pub key: String,
    #[serde(serialize_with = "crate::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub not_before: i64,
    #[serde(serialize_with = "crate::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub not_after: i64,
    /// `active` (the newest, used for shares), `superseded` or `revoked`.
    pub state: &'static str,
    pub revoked_reason: Option<String>,
    #[serde(serialize_with = "crate::time::serialize_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<i64>,
    #[serde(serialize_with = "crate::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

/// `POST …/partners`' answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Registered {
    pub domain: String,
    pub id: String,
    pub version: i32,
    pub thumbprint: String,
    pub key: String,
    #[serde(serialize_with = "crate::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub not_after: i64,
}

/// `PUT …/crl`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CrlReport {
    pub domain: String,
    /// SHA-256 (hex) of the DER of its issuer's Name: one CRL is kept per issuing CA.
    pub issuer: String,
    #[serde(serialize_with = "crate::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub this_update: i64,
    #[serde(serialize_with = "crate::time::serialize_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_update: Option<i64>,
    /// Entries in the CRL.
    pub revoked: usize,
}

fn refused(r: Refusal) -> VaultError {
    VaultError::CertificateRefused(r)
}

impl Vault {
    /// Replaces a domain's anchors (role `trust_admin`); under dual control, a request that
    /// an operator approves.
    pub fn put_anchors(
        &self,
        grant: &Grant,
        domain: &str,
        pem: &str,
    ) -> Result<Decision<AnchorsReport>, VaultError> {
        grant.check_global(Role::TrustAdmin)?;
        self.trust_domain(domain)?;
        let anchors = pki::anchors(pem, Some(now_ms() / 1000)).map_err(refused)?;
        let pem = pem_of(anchors.roots.iter().chain(&anchors.intermediates));
        if self.policy().dual_control {
            let decision = self.request_approval(grant, Irreversible::ReplaceAnchors)?;
            if let Decision::Pending(p) = &decision {
                self.store().propose_trust_anchors(&AnchorProposal {
                    approval: p.approval.clone(),
                    domain: domain.to_owned(),
                    pem,
                })?;
            }
            return Ok(decision);
        }
        self.replace_anchors(grant.actor(), domain, &pem)
            .map(Decision::Done)
    }

    /// Stores a checked bundle (`pem`, re-encoded from its certificates).
    pub(in crate::vault) fn replace_anchors(
        &self,
        actor: &Actor,
        domain: &str,
        pem: &str,
    ) -> Result<AnchorsReport, VaultError> {
        let anchors = pki::anchors(pem, Some(now_ms() / 1000)).map_err(refused)?;
        let fingerprints: Vec<String> = anchors
            .roots
            .iter()
            .chain(&anchors.intermediates)
            .map(|d| pki::fingerprint(d))
            .collect();
        let row = AnchorRow {
            domain: domain.to_owned(),
            pem: pem.to_owned(),
            updated_at: now_ms(),
        };
        let entry = actor
            .entry("trust.anchors", "", format!("domain {domain}"))
            .with_detail(format!(
                "{} roots, {} intermediates: {}",
                anchors.roots.len(),
                anchors.intermediates.len(),
                fingerprints.join(",")
            ));
        self.store().set_trust_anchors(&row, &entry)?;
        self.trust.refresh_after_change();
        Ok(AnchorsReport {
            domain: domain.to_owned(),
            roots: anchors.roots.len(),
            intermediates: anchors.intermediates.len(),
            fingerprints,
        })
    }

    /// The bundle waiting under `approval`: `(domain, pem)`.
    pub(in crate::vault) fn proposed_anchors(
        &self,
        approval: &str,
    ) -> Result<(String, String), VaultError> {
        let proposal = self
            .store()
            .trust_anchor_proposal(approval)?
            .ok_or(VaultError::Integrity)?;
        Ok((proposal.domain, proposal.pem))
    }

    /// Imports a CRL signed by one of the domain's CAs (role `trust_admin`).
    pub fn put_crl(
        &self,
        grant: &Grant,
        domain: &str,
        body: &[u8],
    ) -> Result<CrlReport, VaultError> {
        grant.check_global(Role::TrustAdmin)?;
        self.trust_domain(domain)?;
        let der = pki::crl_der(body).map_err(refused)?;
        let snapshot = self.trust.snapshot();
        let empty = DomainState::default();
        let state = snapshot.domains.get(domain).unwrap_or(&empty);
        let crl = pki::crl(&der, &state.anchors, now_ms() / 1000).map_err(refused)?;
        let stale = Refusal {
            reason: "crl_stale",
            message: "a newer CRL of this CA is already imported",
        };
        // Older than the newest the keystore saw imported (its row may be gone): refused too.
        let keystore = self.keyring().keystore();
        let newest = highest(
            &keystore.destroyed_masters()?,
            &crl_ledger(domain, &crl.issuer),
        );
        if newest.is_some_and(|t| i64::from(t) > crl.this_update) {
            return Err(refused(stale));
        }
        let row = CrlRow {
            domain: domain.to_owned(),
            issuer: crl.issuer.clone(),
            der,
            this_update: crl.this_update * 1000,
            updated_at: now_ms(),
        };
        let entry = grant
            .actor()
            .entry("trust.crl", "", format!("domain {domain}"))
            .with_detail(format!("issuer {} entries {}", crl.issuer, crl.revoked));
        match self.store().put_trust_crl(&row, &entry) {
            Err(StorageError::Conflict) => return Err(refused(stale)),
            other => other?,
        }
        // `pki::crl` bounds thisUpdate to 1970..now+1d: it fits the ledger's u32 seconds.
        keystore.record_destroyed(
            &crl_ledger(domain, &crl.issuer),
            u32::try_from(crl.this_update).unwrap_or(0),
        )?;
        self.trust.refresh_after_change();
        Ok(CrlReport {
            domain: domain.to_owned(),
            issuer: crl.issuer,
            this_update: crl.this_update * 1000,
            next_update: crl.next_update.map(|t| t * 1000),
            revoked: crl.revoked,
        })
    }

    /// Registers a partner certificate (role `trust_admin`) after validating its path; a new
    /// certificate for a known id is its next version.
    pub fn register_partner(
        &self,
        grant: &Grant,
        domain: &str,
        id: &str,
        chain_pem: &str,
    ) -> Result<Registered, VaultError> {
        grant.check_global(Role::TrustAdmin)?;
        let policy = self.trust_domain(domain)?;
        if !valid_partner_id(id) {
            return Err(VaultError::BadInput(format!(
                "id must match {PARTNER_ID_PATTERN}"
            )));
        }
        let chain = pki::certificates(chain_pem).map_err(refused)?;
        // Fresh rows: a revocation made on another instance a moment ago counts.
        let keystore = self.keyring().keystore();
        let ledger = keystore.destroyed_masters()?;
        self.trust.refresh_with(&ledger)?;
        let snapshot = self.trust.snapshot();
        let empty = DomainState::default();
        let state = snapshot.domains.get(domain).unwrap_or(&empty);
        if state.forged {
            return Err(VaultError::Integrity);
        }
        let now = now_ms() / 1000;
        let valid =
            pki::validate(&chain, &state.anchors, &state.crls, policy, now).map_err(refused)?;
        if valid.not_after - now < policy.min_remaining.as_secs() as i64 {
            return Err(refused(Refusal {
                reason: "remaining_validity",
                message: "the certificate expires within the domain's min_remaining_days",
            }));
        }
        // A revoked certificate stays revoked, under any id of the domain: the keystore
        // remembers its thumbprint even if its row is gone.
        let revoked_before = snapshot
            .partners
            .iter()
            .filter(|((d, _), _)| d == domain)
            .flat_map(|(_, rows)| rows)
            .any(|r| r.thumbprint == valid.thumbprint && r.revoked_reason.is_some())
            || ledger.contains(&(revoked_ledger(domain, &valid.thumbprint), 0));
        if revoked_before {
            return Err(refused(Refusal {
                reason: "revoked",
                message: "this certificate was revoked in this domain",
            }));
        }
        let versions = snapshot.versions(domain, id).unwrap_or_default();
        if let Some(same) = versions.iter().find(|r| r.thumbprint == valid.thumbprint) {
            // A retry after a lost answer: make sure the keystore knows the version.
            if versions.last() == Some(same) {
                keystore.record_destroyed(&versions_ledger(domain, id), same.version as u32)?;
            }
            return Err(VaultError::Conflict(
                "this certificate is already registered for the partner".into(),
            ));
        }
        // Above every version the keystore has seen, so a deleted row's number is not reused.
        let registered = highest(&ledger, &versions_ledger(domain, id));
        let version = versions
            .last()
            .map_or(0, |r| r.version)
            .max(registered.map_or(0, |v| v as i32))
            + 1;
        let row = PartnerRow {
            domain: domain.to_owned(),
            partner_id: id.to_owned(),
            version,
            chain: pem_of(&chain),
            thumbprint: valid.thumbprint.clone(),
            key_desc: valid.key.describe(),
            not_before: valid.not_before * 1000,
            not_after: valid.not_after * 1000,
            created_at: now_ms(),
            revoked_reason: None,
            revoked_at: None,
        };
        let entry = grant
            .actor()
            .entry(
                "trust.register",
                "",
                format!("partner {domain}/{id} v{version}"),
            )
            .with_detail(format!("x5t#S256={} {}", row.thumbprint, row.key_desc));
        self.store().add_partner(&row, &entry)?;
        // After the row: a keystore failure now leaves a row the ledger does not know yet,
        // which is served (it is authentic), not a ledger entry without its row.
        keystore.record_destroyed(&versions_ledger(domain, id), version as u32)?;
        self.trust.refresh_after_change();
        Ok(Registered {
            domain: domain.to_owned(),
            id: id.to_owned(),
            version,
            thumbprint: row.thumbprint,
            key: row.key_desc,
            not_after: row.not_after,
        })
    }

    /// A partner's versions (roles `trust_admin`, `auditor`).
    pub fn partner(
        &self,
        grant: &Grant,
        domain: &str,
        id: &str,
    ) -> Result<PartnerView, VaultError> {
        check_any_global(grant, &[Role::TrustAdmin, Role::Auditor])?;
        self.trust_domain(domain)?;
        let snapshot = self.trust.snapshot();
        let rows = snapshot
            .versions(domain, id)
            .ok_or(VaultError::UnknownPartner)?;
        Ok(partner_view(domain, id, rows))
    }

    /// Revokes a partner version (default: the current one), on every instance within a
    /// second (role `trust_admin`).
    pub fn revoke_partner(
        &self,
        grant: &Grant,
        domain: &str,
        id: &str,
        reason: &str,
        version: Option<i32>,
    ) -> Result<PartnerView, VaultError> {
        grant.check_global(Role::TrustAdmin)?;
        self.trust_domain(domain)?;
        if !REVOCATION_REASONS.contains(&reason) {
            return Err(VaultError::BadInput(format!(
                "reason must be one of {REVOCATION_REASONS:?}"
            )));
        }
        // Rows as stored (not as the ledger shows them): the one to change must be authentic.
        let stored: Vec<PartnerRow> = self
            .store()
            .trust_partners()?
            .into_iter()
            .filter_map(Result::ok)
            .filter(|r| r.domain == domain && r.partner_id == id)
            .collect();
        let from = match version {
            Some(v) => stored.iter().find(|r| r.version == v),
            None => stored.last(),
        }
        .ok_or(VaultError::UnknownPartner)?;
        if from.revoked_reason.is_some() {
            return Err(VaultError::Conflict("already revoked".into()));
        }
        // The keystore first: from now on no restored row can lift it, and the certificate
        // cannot be registered again even if its row is deleted.
        let keystore = self.keyring().keystore();
        keystore.record_destroyed(&ledger_name(domain, id), from.version as u32)?;
        keystore.record_destroyed(&revoked_ledger(domain, &from.thumbprint), 0)?;
        let to = PartnerRow {
            revoked_reason: Some(reason.to_owned()),
            revoked_at: Some(now_ms()),
            ..from.clone()
        };
        let entry = grant
            .actor()
            .entry(
                "trust.revoke",
                "",
                format!("partner {domain}/{id} v{}", from.version),
            )
            .with_detail(format!("reason={reason} x5t#S256={}", from.thumbprint));
        self.store().change_partner(from, &to, &entry)?;
        self.trust.refresh_after_change();
        self.partner(grant, domain, id)
    }
}

/// The view of a partner's rows.
fn partner_view(domain: &str, id: &str, rows: &[PartnerRow]) -> PartnerView {
    let newest = rows.last().map(|r| r.version);
    PartnerView {
        domain: domain.to_owned(),
        id: id.to_owned(),
        versions: rows
            .iter()
            .map(|r| PartnerVersionView {
                version: r.version,
                thumbprint: r.thumbprint.clone(),
                key: r.key_desc.clone(),
                not_before: r.not_before,
                not_after: r.not_after,
                state: if r.revoked_reason.is_some() {
                    "revoked"
                } else if Some(r.version) == newest {
                    "active"
                } else {
                    "superseded"
                },
                revoked_reason: r.revoked_reason.clone(),
                revoked_at: r.revoked_at,
                created_at: r.created_at,
            })
            .collect(),
    }
}

/// The PEM of DER certificates.
fn pem_of<'a>(ders: impl IntoIterator<Item = &'a Vec<u8>>) -> String {
    let blocks: Vec<pem::Pem> = ders
        .into_iter()
        .map(|d| pem::Pem::new("CERTIFICATE", d.clone()))
        .collect();
    pem::encode_many(&blocks)
}
