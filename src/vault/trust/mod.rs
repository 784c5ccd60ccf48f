//! Partner and device trust (DESIGN.md "Partner and device trust (v1)"): per-domain anchors
//! and CRLs, partner certificates validated to them, revocation, and the expiry watch.
//! Records shared with partners, and the exposure reports, are in `share.rs`.
//!
//! Every instance decides trust from a [`Snapshot`] of the authentic rows, reloaded every
//! [`super::SYNC_INTERVAL`] (the cache-sync thread) and after each change made here, so a
//! revocation made on any instance is honoured by every instance within a second. A
//! revocation is recorded in the keystore before the database: a restored backup cannot lift
//! it. Every share re-validates the partner's path at that moment (expiry, CRLs, anchors).

mod expiry;
mod pki;
mod share;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use webpki::OwnedCertRevocationList;

use super::approvals::{Decision, Irreversible};
use super::{now_ms, EntryExt, Grant, Role, Vault, VaultError};
use crate::keystore::Keystore;
use crate::storage::{AnchorProposal, AnchorRow, CrlRow, PartnerRow, StorageError, Store};
pub use expiry::{Expiring, ExpiringCertificate};
pub use pki::Refusal;
pub use share::{PartnerExposure, ResidentExposure, Shared};

/// Partner ids: what MOSIP's partner ids look like, and safe in paths and the audit trail.
pub const PARTNER_ID_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";

pub fn valid_partner_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Largest anchor bundle or partner chain, in bytes.
pub const MAX_PEM_BYTES: usize = 64 * 1024;

/// Why a partner certificate was revoked.
pub const REVOCATION_REASONS: [&str; 3] = ["key_compromise", "superseded", "cessation"];

/// The keystore's ledger remembers, beyond any database restore, three things about trust
/// (domain and partner names hold no `/`, so these name no namespace and no signer):
/// a partner's revoked versions,
fn ledger_name(domain: &str, id: &str) -> String {
    format!("trust/{domain}/{id}")
}

/// its registered versions (the highest is the one shares must use),
fn versions_ledger(domain: &str, id: &str) -> String {
    format!("trust-version/{domain}/{id}")
}

/// and, per CA of a domain, the `thisUpdate` (seconds) of each CRL imported: an older or
/// missing CRL row is then detected, not trusted.
fn crl_ledger(domain: &str, issuer: &str) -> String {
    format!("trust-crl/{domain}/{issuer}")
}

/// The highest number the ledger holds for `name`.
fn highest(ledger: &BTreeSet<(String, u32)>, name: &str) -> Option<u32> {
    ledger
        .range((name.to_owned(), 0)..=(name.to_owned(), u32::MAX))
        .next_back()
        .map(|(_, v)| *v)
}

/// One domain's anchors and CRLs as last loaded.
#[derive(Default)]
struct DomainState {
    anchors: pki::Anchors,
    crls: Vec<OwnedCertRevocationList>,
    /// An anchor or CRL row failed authentication: the domain trusts nothing until an
    /// operator stores them again (failing open would let a database writer lift a CRL).
    forged: bool,
}

/// The trust rows as last loaded.
#[derive(Default)]
struct Snapshot {
    domains: BTreeMap<String, DomainState>,
    /// Each partner's versions, oldest first; a version the keystore records as revoked is
    /// revoked here whatever its row says.
    partners: BTreeMap<(String, String), Vec<PartnerRow>>,
    /// Partners whose newest registered version (as the keystore records it) has no authentic
    /// row: deleted or edited. They receive nothing rather than fall back to an older key.
    newest_missing: BTreeSet<(String, String)>,
}

impl Snapshot {
    fn versions(&self, domain: &str, id: &str) -> Option<&[PartnerRow]> {
        self.partners
            .get(&(domain.to_owned(), id.to_owned()))
            .map(Vec::as_slice)
    }

    /// The version shares use: the newest.
    fn current(&self, domain: &str, id: &str) -> Option<&PartnerRow> {
        self.versions(domain, id).and_then(<[_]>::last)
    }
}

/// The trust registry of one vault.
pub struct Trust {
    store: Store,
    keystore: Arc<dyn Keystore>,
    snapshot: RwLock<Arc<Snapshot>>,
}

impl Trust {
    pub(super) fn new(store: Store, keystore: Arc<dyn Keystore>) -> Trust {
        Trust {
            store,
            keystore,
            snapshot: RwLock::default(),
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads anchors, CRLs, partners and the keystore's record of revocations. A forged
    /// row is left out (logged; a forged partner is then unknown, a forged anchor set trusts
    /// nothing).
    pub fn refresh(&self) -> Result<(), VaultError> {
        let ledger = self.keystore.destroyed_masters()?;
        let mut snapshot = Snapshot::default();
        for (domain, row) in self.store.trust_anchors()? {
            match row {
                // Validity was checked at upload; since then path validation decides (a
                // root's expiry, by design of RFC 5280 trust anchors, does not).
                Ok(row) => match pki::anchors(&row.pem, None) {
                    Ok(anchors) => snapshot.domains.entry(domain).or_default().anchors = anchors,
                    Err(_) => snapshot.domains.entry(domain).or_default().forged = true,
                },
                Err(what) => {
                    forged(&what);
                    snapshot.domains.entry(domain).or_default().forged = true;
                }
            }
        }
        let mut stored_crls = BTreeSet::new();
        for (domain, row) in self.store.trust_crls()? {
            let state = snapshot.domains.entry(domain.clone()).or_default();
            match row.map(|r| (OwnedCertRevocationList::from_der(&r.der), r)) {
                Ok((Ok(crl), row)) => {
                    state.crls.push(crl);
                    let name = crl_ledger(&domain, &row.issuer);
                    stored_crls.insert((name, (row.this_update / 1000) as u32));
                }
                Ok((Err(_), _)) | Err(_) => {
                    tracing::error!(%domain, "a stored CRL failed authentication or no longer parses: the domain trusts nothing until it is imported again");
                    state.forged = true;
                }
            }
        }
        // The newest CRL the keystore saw imported for each CA must be stored, or a newer one.
        for (name, _) in ledger.iter().filter(|(n, _)| n.starts_with("trust-crl/")) {
            let Some((domain, _)) = name["trust-crl/".len()..].split_once('/') else {
                continue;
            };
            let newest = highest(&ledger, name).unwrap_or(0);
            let kept = stored_crls
                .range((name.clone(), newest)..=(name.clone(), u32::MAX))
                .next()
                .is_some();
            if !kept {
                tracing::error!(%domain, "a CRL row is missing or older than the last one imported (a restored backup?): the domain trusts nothing until it is imported again");
                snapshot
                    .domains
                    .entry(domain.to_owned())
                    .or_default()
                    .forged = true;
            }
        }
        for row in self.store.trust_partners()? {
            let mut row = match row {
                Ok(row) => row,
                Err(what) => {
                    forged(&what);
                    continue;
                }
            };
            let revoked = (
                ledger_name(&row.domain, &row.partner_id),
                row.version as u32,
            );
            if ledger.contains(&revoked) && row.revoked_reason.is_none() {
                tracing::error!(domain = %row.domain, partner = %row.partner_id, version = row.version, "the keystore records this partner certificate as revoked, the database does not (an older backup?): served as revoked");
                // The reason lives in the lost row; the worst one keeps it in exposure reports.
                row.revoked_reason = Some("key_compromise".into());
                row.revoked_at = Some(row.created_at);
            }
            snapshot
                .partners
                .entry((row.domain.clone(), row.partner_id.clone()))
                .or_default()
                .push(row);
        }
        for ((domain, id), rows) in &snapshot.partners {
            let registered = highest(&ledger, &versions_ledger(domain, id));
            let current = rows.last().map_or(0, |r| r.version as u32);
            if registered.is_some_and(|v| v > current) {
                tracing::error!(%domain, partner = %id, "the partner's newest registered certificate has no authentic row (deleted or edited): it receives nothing");
                snapshot.newest_missing.insert((domain.clone(), id.clone()));
            }
        }
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
        Ok(())
    }
}

fn forged(what: &str) {
    tracing::error!(row = %what, "a trust row failed authentication: left out");
}

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
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    fn trust_domain(&self, domain: &str) -> Result<&crate::policy::TrustDomainPolicy, VaultError> {
        self.policy()
            .trust_domain(domain)
            .ok_or(VaultError::UnknownDomain)
    }

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
    pub(super) fn replace_anchors(
        &self,
        actor: &super::Actor,
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
        self.trust.refresh()?;
        Ok(AnchorsReport {
            domain: domain.to_owned(),
            roots: anchors.roots.len(),
            intermediates: anchors.intermediates.len(),
            fingerprints,
        })
    }

    /// The bundle waiting under `approval`: `(domain, pem)`.
    pub(super) fn proposed_anchors(&self, approval: &str) -> Result<(String, String), VaultError> {
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
        let crl = pki::crl(&der, &state.anchors).map_err(refused)?;
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
            Err(StorageError::Conflict) => {
                return Err(refused(Refusal {
                    reason: "crl_stale",
                    message: "a newer CRL of this CA is already imported",
                }))
            }
            other => other?,
        }
        self.keyring().keystore().record_destroyed(
            &crl_ledger(domain, &crl.issuer),
            u32::try_from(crl.this_update).unwrap_or(u32::MAX),
        )?;
        self.trust.refresh()?;
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
        // A revoked certificate stays revoked, under any id of the domain.
        let revoked_before = snapshot
            .partners
            .iter()
            .filter(|((d, _), _)| d == domain)
            .flat_map(|(_, rows)| rows)
            .any(|r| r.thumbprint == valid.thumbprint && r.revoked_reason.is_some());
        if revoked_before {
            return Err(refused(Refusal {
                reason: "revoked",
                message: "this certificate was revoked in this domain",
            }));
        }
        let versions = snapshot.versions(domain, id).unwrap_or_default();
        if versions.iter().any(|r| r.thumbprint == valid.thumbprint) {
            return Err(VaultError::Conflict(
                "this certificate is already registered for the partner".into(),
            ));
        }
        // Above every version the keystore has seen, so a deleted row's number is not reused.
        let keystore = self.keyring().keystore();
        let registered = highest(&keystore.destroyed_masters()?, &versions_ledger(domain, id));
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
        self.trust.refresh()?;
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
        // The keystore first: from now on no restored row can lift it.
        self.keyring()
            .keystore()
            .record_destroyed(&ledger_name(domain, id), from.version as u32)?;
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
        self.trust.refresh()?;
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

/// One of `roles`, deployment-wide.
fn check_any_global(grant: &Grant, roles: &[Role]) -> Result<(), VaultError> {
    let mut last = VaultError::Forbidden("role not granted");
    for role in roles {
        match grant.check_global(*role) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The PEM of DER certificates.
fn pem_of<'a>(ders: impl IntoIterator<Item = &'a Vec<u8>>) -> String {
    let blocks: Vec<pem::Pem> = ders
        .into_iter()
        .map(|d| pem::Pem::new("CERTIFICATE", d.clone()))
        .collect();
    pem::encode_many(&blocks)
}
