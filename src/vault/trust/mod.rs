//! Partner and device trust (DESIGN.md "Partner and device trust (v1)"): per-domain anchors
//! and CRLs, partner certificates validated to them, and revocation (`registry.rs`), checked
//! with maintained X.509 code (`pki.rs`); records shared with partners and the exposure
//! reports (`share.rs`); the expiry watch (`expiry.rs`). This file holds what they share: the
//! snapshot of the trust rows and the keystore ledger's names.
//!
//! Every instance decides trust from a [`Snapshot`] of the authentic rows, reloaded every
//! [`super::SYNC_INTERVAL`] (the cache-sync thread) and after each change made here, so a
//! revocation made on any instance is honoured by every instance within a second. A
//! revocation is recorded in the keystore before the database: a restored backup cannot lift
//! it. Every share re-validates the partner's path at that moment (expiry, CRLs, anchors).

mod expiry;
mod pki;
mod registry;
mod share;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use webpki::OwnedCertRevocationList;

use super::{Grant, Role, Vault, VaultError};
use crate::keystore::Keystore;
use crate::storage::{PartnerRow, Store};
pub use expiry::{Expiring, ExpiringCertificate};
pub use pki::Refusal;
pub use registry::{AnchorsReport, CrlReport, PartnerView, Registered};
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

/// The keystore's ledger remembers, beyond any database restore, four things about trust
/// (domain and partner names hold no `/`, so these name no namespace and no signer):
/// a partner's revoked versions,
fn ledger_name(domain: &str, id: &str) -> String {
    format!("trust/{domain}/{id}")
}

/// the thumbprints of its revoked certificates (version 0), so none is registered again,
fn revoked_ledger(domain: &str, thumbprint: &str) -> String {
    format!("trust-revoked/{domain}/{thumbprint}")
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
    /// What the last reload found wrong, so each problem is logged once.
    problems: Mutex<BTreeSet<String>>,
}

impl Trust {
    pub(super) fn new(store: Store, keystore: Arc<dyn Keystore>) -> Trust {
        Trust {
            store,
            keystore,
            snapshot: RwLock::default(),
            problems: Mutex::default(),
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads anchors, CRLs, partners and the keystore's record of revocations. A forged
    /// partner row is left out; a forged anchor or CRL row makes its domain trust nothing.
    pub fn refresh(&self) -> Result<(), VaultError> {
        self.refresh_with(&self.keystore.destroyed_masters()?)
    }

    /// [`Trust::refresh`] with the keystore's ledger as just read. What is wrong is logged
    /// once, when it appears, not at every reload.
    pub fn refresh_with(&self, ledger: &BTreeSet<(String, u32)>) -> Result<(), VaultError> {
        let mut snapshot = Snapshot::default();
        let mut problems = BTreeSet::new();
        for (domain, row) in self.store.trust_anchors()? {
            // Validity was checked at upload; since then `pki::validate` leaves out expired
            // roots, and webpki checks every other certificate of a path.
            let anchors = match row.map(|row| pki::anchors(&row.pem, None)) {
                Ok(Ok(anchors)) => anchors,
                Ok(Err(_)) | Err(_) => {
                    problems.insert(format!("{domain}: the anchors row failed authentication or no longer parses; the domain trusts nothing"));
                    snapshot.domains.entry(domain).or_default().forged = true;
                    continue;
                }
            };
            snapshot.domains.entry(domain).or_default().anchors = anchors;
        }
        let mut stored_crls = BTreeSet::new();
        for (domain, row) in self.store.trust_crls()? {
            let state = snapshot.domains.entry(domain.clone()).or_default();
            match row.map(|r| (OwnedCertRevocationList::from_der(&r.der), r)) {
                Ok((Ok(crl), row)) => {
                    state.crls.push(crl);
                    let name = crl_ledger(&domain, &row.issuer);
                    stored_crls.insert((name, crl_secs(row.this_update)));
                }
                Ok((Err(_), _)) | Err(_) => {
                    problems.insert(format!("{domain}: a CRL row failed authentication or no longer parses; the domain trusts nothing until it is imported again"));
                    state.forged = true;
                }
            }
        }
        // The newest CRL the keystore saw imported for each CA still in the anchors must be
        // stored, or a newer one. (A CA that left the anchors signs no path any more.)
        for (name, _) in ledger.iter().filter(|(n, _)| n.starts_with("trust-crl/")) {
            let Some((domain, issuer)) = name["trust-crl/".len()..].split_once('/') else {
                continue;
            };
            let Some(state) = snapshot.domains.get_mut(domain) else {
                continue;
            };
            if !state.anchors.name_hashes().contains(issuer) {
                continue;
            }
            let newest = highest(ledger, name).unwrap_or(0);
            let kept = stored_crls
                .range((name.clone(), newest)..=(name.clone(), u32::MAX))
                .next()
                .is_some();
            if !kept {
                problems.insert(format!("{domain}: a CRL row is missing or older than the last one imported (a restored backup?); the domain trusts nothing until it is imported again"));
                state.forged = true;
            }
        }
        for row in self.store.trust_partners()? {
            let mut row = match row {
                Ok(row) => row,
                Err(what) => {
                    problems.insert(format!("{what}: failed authentication; left out"));
                    continue;
                }
            };
            let revoked = (
                ledger_name(&row.domain, &row.partner_id),
                row.version as u32,
            );
            if ledger.contains(&revoked) && row.revoked_reason.is_none() {
                problems.insert(format!("partner {}/{} v{}: revoked in the keystore, not in the database (an older backup?); served as revoked", row.domain, row.partner_id, row.version));
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
            let registered = highest(ledger, &versions_ledger(domain, id));
            let current = rows.last().map_or(0, |r| r.version as u32);
            if registered.is_some_and(|v| v > current) {
                problems.insert(format!("partner {domain}/{id}: the newest registered certificate has no authentic row (deleted or edited); it receives nothing"));
                snapshot.newest_missing.insert((domain.clone(), id.clone()));
            }
        }
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
        let mut known = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        for problem in problems.difference(&known) {
            tracing::error!(%problem, "trust rows");
        }
        *known = problems;
        Ok(())
    }

    /// Reloads after a change this instance committed. A failure is only logged: the change
    /// stands, and the cache sync reloads within a tick.
    fn refresh_after_change(&self) {
        if let Err(e) = self.refresh() {
            tracing::warn!(error = %e, "trust reload after a change failed; the next sync retries");
        }
    }
}

/// A CRL's `thisUpdate` as the ledger holds it: seconds (imports are bounded to 1970..now+1d).
fn crl_secs(ms: i64) -> u32 {
    u32::try_from(ms.div_euclid(1000)).unwrap_or(0)
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
