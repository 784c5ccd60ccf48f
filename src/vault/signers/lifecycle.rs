//! Signer keys' lifecycle: created by the schedule or an operator, promoted, demoted, retired,
//! compromised and destroyed — each change under the deployment's key lock, audited, and
//! followed by a reload so this instance serves it at once (others within a second).

use std::time::Duration;

use serde::Serialize;

use super::{certs, jose, key_ref, ledger_name, KeystoreSigner};
use crate::policy::SignerPolicy;
use crate::states::SignerState;
use crate::storage::{SignerKeyRow, StorageError};
use crate::vault::{now_ms, Actor, Grant, PlannedEvent, Role, Vault, VaultError};

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// What a signer change left: the version changed, its state, and the signer's active version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SignerChange {
    pub signer: String,
    pub version: i32,
    pub state: String,
    pub active: Option<i32>,
    /// When a pending version becomes active.
    #[serde(serialize_with = "crate::time::serialize_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub activate_at: Option<i64>,
    /// The attached certificate's `notAfter`.
    #[serde(serialize_with = "crate::time::serialize_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub not_after: Option<i64>,
}

/// What one scheduler pass did to signer keys, as `(signer, version)`.
#[derive(Debug, Default, Serialize)]
pub struct SignerReport {
    pub created: Vec<(String, i32)>,
    pub promoted: Vec<(String, i32)>,
    pub retired: Vec<(String, i32)>,
}

impl SignerReport {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.promoted.is_empty() && self.retired.is_empty()
    }
}

/// `GET /v1/signers`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SignersOverview {
    pub signers: Vec<SignerView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SignerView {
    pub name: String,
    pub alg: String,
    pub versions: Vec<SignerVersionView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SignerVersionView {
    pub version: i32,
    pub kid: String,
    pub state: String,
    #[serde(serialize_with = "crate::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(serialize_with = "crate::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub activate_at: i64,
    #[serde(serialize_with = "crate::time::serialize_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub retire_at: Option<i64>,
    /// Signatures made with this version (each instance adds its count about once a second).
    pub signatures: i64,
    /// Whether a certificate chain is attached (then the JWKS carries `x5c`).
    pub certificate: bool,
}

/// A signer's rows as stored now, authentic ones only (a forged row is refused wherever it
/// is used; `audit verify` names it), and the highest version any row or the keystore's
/// ledger ever used.
fn rows_of(vault: &Vault, signer: &str) -> Result<(Vec<SignerKeyRow>, i32), VaultError> {
    let mut highest = 0;
    let mut rows = Vec::new();
    for row in vault.store().signer_keys()? {
        match row {
            Ok(row) if row.signer == signer => {
                highest = highest.max(row.version);
                rows.push(row);
            }
            Ok(_) => {}
            Err(what) => {
                if what.starts_with(&format!("signer {signer} v")) {
                    return Err(VaultError::Integrity);
                }
            }
        }
    }
    let ledger = vault.keyring().keystore().destroyed_masters()?;
    let name = ledger_name(signer);
    for (n, v) in &ledger {
        if *n == name {
            highest = highest.max(*v as i32);
        }
    }
    // What the keystore records as revoked is compromised, whatever a (restored) row says;
    // changes reconcile the rows first (`reconcile_signer_revocations`), so this only shows.
    for row in rows.iter_mut() {
        if ledger.contains(&(name.clone(), row.version as u32)) && row.state.is_published() {
            row.state = SignerState::Compromised;
        }
    }
    Ok((rows, highest))
}

/// Version `version` among a signer's rows; `UnknownSigner` if it has none.
fn version_in(rows: &[SignerKeyRow], version: i32) -> Result<&SignerKeyRow, VaultError> {
    rows.iter()
        .find(|r| r.version == version)
        .ok_or(VaultError::UnknownSigner)
}

/// 409 unless `row` is published (what CSRs and certificates are for).
fn require_published(row: &SignerKeyRow) -> Result<(), VaultError> {
    if row.state.is_published() {
        return Ok(());
    }
    Err(VaultError::Conflict(format!(
        "signer {} v{} is {}",
        row.signer, row.version, row.state
    )))
}

fn find(rows: &[SignerKeyRow], state: SignerState) -> Option<&SignerKeyRow> {
    rows.iter().rev().find(|r| r.state == state)
}

impl Vault {
    /// Generates signer key `version` in the keystore; its row, not yet stored.
    fn new_signer_key(
        &self,
        policy: &SignerPolicy,
        version: i32,
        state: SignerState,
        activate_at: i64,
    ) -> Result<SignerKeyRow, VaultError> {
        let keystore = self.keyring().keystore();
        let kek = keystore
            .active_kek()?
            .ok_or_else(|| VaultError::Internal("keystore has no active KEK".into()))?;
        let ctx = zkvault_core::WrapContext::new(
            &policy.name,
            zkvault_core::KeyKind::SigningKey,
            version as u32,
        );
        let new = keystore.generate_signing_key(kek, &ctx)?;
        let jwk = jose::public_jwk(&new.public)
            .ok_or_else(|| VaultError::Internal("the keystore made no P-256 key".into()))?;
        let (token_id, kek_version, wrapped) = match new.key {
            crate::keystore::SigningKeyRef::Token { id } => (Some(id), None, None),
            crate::keystore::SigningKeyRef::Sealed {
                kek_version,
                wrapped,
            } => (None, Some(kek_version as i32), Some(wrapped)),
        };
        let now = now_ms();
        Ok(SignerKeyRow {
            signer: policy.name.clone(),
            version,
            alg: policy.alg.clone(),
            kid: jose::thumbprint(&jwk),
            public_key: new.public,
            token_id,
            kek_version,
            wrapped,
            state,
            created_at: now,
            activate_at,
            updated_at: now,
            retire_at: None,
            certificate: None,
        })
    }

    /// Stores `changes` with one audit entry and reloads the signers.
    fn commit_signer_changes(
        &self,
        changes: &[(Option<&SignerKeyRow>, &SignerKeyRow)],
        actor: &Actor,
        operation: &str,
        signer: &str,
        target: String,
    ) -> Result<(), VaultError> {
        let entry = actor.entry(operation, "", format!("signer {signer} {target}"));
        let stored = self.store().change_signer_keys(changes, &entry);
        self.signers().refresh()?;
        match stored {
            Err(StorageError::Conflict) => Err(VaultError::Conflict(
                "the signer's keys changed concurrently; retry".into(),
            )),
            other => Ok(other?),
        }
    }

    /// `pending` → `active` now; the active key (if any) turns `verify_only` for the window.
    fn promote(
        &self,
        policy: &SignerPolicy,
        rows: &[SignerKeyRow],
        pending: &SignerKeyRow,
        actor: &Actor,
    ) -> Result<(), VaultError> {
        let now = now_ms();
        let promoted = SignerKeyRow {
            state: SignerState::Active,
            activate_at: now.min(pending.activate_at),
            updated_at: now,
            ..pending.clone()
        };
        let demoted = find(rows, SignerState::Active).map(|a| SignerKeyRow {
            state: SignerState::VerifyOnly,
            updated_at: now,
            retire_at: Some(now + ms(policy.verify_window)),
            ..a.clone()
        });
        let mut changes = vec![(Some(pending), &promoted)];
        let old = find(rows, SignerState::Active);
        if let (Some(old), Some(demoted)) = (old, demoted.as_ref()) {
            changes.push((Some(old), demoted));
        }
        let target = match old {
            Some(old) => format!("v{} active, v{} verify_only", pending.version, old.version),
            None => format!("v{} active", pending.version),
        };
        self.commit_signer_changes(&changes, actor, "signer.promote", &policy.name, target)?;
        tracing::info!(signer = %policy.name, version = pending.version, who = %actor.who, "signer key promoted");
        Ok(())
    }

    /// A new key for `policy`: `pending` until `activate_at`, or `active` at once.
    fn add_signer_key(
        &self,
        policy: &SignerPolicy,
        activate_at: Option<i64>,
        actor: &Actor,
    ) -> Result<SignerKeyRow, VaultError> {
        let (rows, highest) = rows_of(self, &policy.name)?;
        let version = highest + 1;
        match activate_at {
            Some(at) => {
                let row = self.new_signer_key(policy, version, SignerState::Pending, at)?;
                self.commit_signer_changes(
                    &[(None, &row)],
                    actor,
                    "signer.create",
                    &policy.name,
                    format!("v{version} pending"),
                )?;
                Ok(row)
            }
            None => {
                let row = self.new_signer_key(policy, version, SignerState::Pending, now_ms())?;
                self.commit_signer_changes(
                    &[(None, &row)],
                    actor,
                    "signer.create",
                    &policy.name,
                    format!("v{version} pending"),
                )?;
                self.promote(policy, &rows, &row, actor)?;
                Ok(row)
            }
        }
    }

    /// Gives every policy signer without an active or pending key an active one (first start,
    /// or after every key was compromised). Takes the key lock.
    pub(crate) fn ensure_signers(&self, actor: &Actor) -> Result<Vec<(String, i32)>, VaultError> {
        let _lock = self.key_lock()?;
        self.reconcile_signer_revocations(actor)?;
        let mut created = Vec::new();
        for policy in self.policy().signers.values() {
            let (rows, _) = rows_of(self, &policy.name)?;
            let live = rows
                .iter()
                .any(|r| matches!(r.state, SignerState::Active | SignerState::Pending));
            if !live {
                let row = self.add_signer_key(policy, None, actor)?;
                created.push((policy.name.clone(), row.version));
            }
        }
        Ok(created)
    }

    /// Writes back to the database a compromise or destruction the keystore recorded and the
    /// database lost (restored from an older backup), so the signer gets a new active key
    /// instead of serving none. The caller holds the key lock.
    fn reconcile_signer_revocations(&self, actor: &Actor) -> Result<(), VaultError> {
        let ledger = self.keyring().keystore().destroyed_masters()?;
        for row in self.store().signer_keys()?.into_iter().flatten() {
            let revoked = ledger.contains(&(ledger_name(&row.signer), row.version as u32));
            // A revoked key never signs again: sealed material a restore brought back is
            // dropped too, so no KEK rotation carries it over.
            if revoked && (row.state.is_published() || row.wrapped.is_some()) {
                let compromised = SignerKeyRow {
                    state: match row.state {
                        SignerState::Destroyed => SignerState::Destroyed,
                        _ => SignerState::Compromised,
                    },
                    kek_version: None,
                    wrapped: None,
                    updated_at: now_ms(),
                    ..row.clone()
                };
                tracing::error!(signer = %row.signer, version = row.version, "the keystore records this signer key as revoked and the database did not (an older backup?): marked compromised again");
                let target = format!(
                    "v{} compromised (the keystore's record; the database said {})",
                    row.version, row.state
                );
                self.commit_signer_changes(
                    &[(Some(&row), &compromised)],
                    actor,
                    "signer.compromise",
                    &row.signer.clone(),
                    target,
                )?;
            }
        }
        Ok(())
    }

    /// Publishes, promotes and retires whatever the policy says is due at `now`.
    pub(crate) fn run_due_signers(&self, now: i64) -> Result<SignerReport, VaultError> {
        let actor = Actor::new("scheduler", "due by key policy");
        let mut report = SignerReport {
            created: self.ensure_signers(&actor)?,
            ..SignerReport::default()
        };
        let _lock = self.key_lock()?;
        for policy in self.policy().signers.values() {
            let (rows, _) = rows_of(self, &policy.name)?;
            let pending = find(&rows, SignerState::Pending);
            if let Some(active) = find(&rows, SignerState::Active) {
                let next_at = active.activate_at + ms(policy.rotation);
                if pending.is_none() && next_at - ms(policy.publish_ahead) <= now {
                    let row = self.add_signer_key(policy, Some(next_at.max(now)), &actor)?;
                    report.created.push((policy.name.clone(), row.version));
                }
            }
            let (rows, _) = rows_of(self, &policy.name)?;
            if let Some(pending) = find(&rows, SignerState::Pending) {
                if pending.activate_at <= now {
                    self.promote(policy, &rows, pending, &actor)?;
                    report.promoted.push((policy.name.clone(), pending.version));
                }
            }
            let (rows, _) = rows_of(self, &policy.name)?;
            for row in rows.iter().filter(|r| r.state == SignerState::VerifyOnly) {
                if row.retire_at.is_some_and(|at| at <= now) {
                    let retired = SignerKeyRow {
                        state: SignerState::Retired,
                        updated_at: now_ms(),
                        ..row.clone()
                    };
                    self.commit_signer_changes(
                        &[(Some(row), &retired)],
                        &actor,
                        "signer.retire",
                        &policy.name,
                        format!("v{} retired", row.version),
                    )?;
                    report.retired.push((policy.name.clone(), row.version));
                }
            }
        }
        Ok(report)
    }

    /// `POST /v1/signers/{name}/rotate`: a new pending key, promoted after the policy's
    /// publish-ahead days, or at once with `now` (then verifiers that cached the JWKS meet a
    /// `kid` they do not know until they fetch it again).
    pub fn rotate_signer(&self, grant: &Grant, now: bool) -> Result<SignerChange, VaultError> {
        let signer = grant.signer(Role::Operator)?;
        let policy = self
            .policy()
            .signer(signer)
            .ok_or(VaultError::UnknownSigner)?;
        let actor = grant.actor_for("signer rotation");
        let _lock = self.key_lock()?;
        self.reconcile_signer_revocations(&actor)?;
        let (rows, _) = rows_of(self, signer)?;
        let row = match (find(&rows, SignerState::Pending), now) {
            (Some(_), false) => {
                return Err(VaultError::Conflict(
                    "a pending key is already published; rotate with ?now=true to promote it"
                        .into(),
                ))
            }
            (Some(pending), true) => {
                self.promote(policy, &rows, pending, &actor)?;
                pending.clone()
            }
            (None, true) => self.add_signer_key(policy, None, &actor)?,
            (None, false) => {
                self.add_signer_key(policy, Some(now_ms() + ms(policy.publish_ahead)), &actor)?
            }
        };
        self.signer_change(signer, row.version)
    }

    /// `POST …/versions/{v}/compromise`: the key leaves the JWKS and fails verification. The
    /// keystore records it first, so no database state, restored or forged, can bring it
    /// back. An active key is replaced at once (the pending one, else a new one).
    pub fn compromise_signer(
        &self,
        grant: &Grant,
        version: i32,
    ) -> Result<SignerChange, VaultError> {
        let signer = grant.signer(Role::Operator)?;
        let actor = grant.actor_for("signer key compromise");
        let _lock = self.key_lock()?;
        self.reconcile_signer_revocations(&actor)?;
        self.compromise_signer_as(signer, version, &actor)?;
        self.signer_change(signer, version)
    }

    /// Marks every signer key sealed under a KEK compromised (a KEK compromise exposes them),
    /// replacing active ones at once; token-held keys are left as they are. The caller holds
    /// the key lock. Returns the versions marked.
    pub(crate) fn compromise_sealed_signer_keys(
        &self,
        actor: &Actor,
    ) -> Result<Vec<(String, i32)>, VaultError> {
        self.reconcile_signer_revocations(actor)?;
        let mut marked = Vec::new();
        for row in self.store().signer_keys()?.into_iter().flatten() {
            let live = !matches!(row.state, SignerState::Compromised | SignerState::Destroyed);
            if live && row.wrapped.is_some() {
                self.compromise_signer_as(&row.signer, row.version, actor)?;
                marked.push((row.signer, row.version));
            }
        }
        Ok(marked)
    }

    /// Compromise of `signer` v`version` (the caller holds the key lock and reconciled): the
    /// keystore's record first, then the row (sealed material dropped: it never signs again;
    /// a token key stays on the token until destroyed), then a replacement if it was active.
    fn compromise_signer_as(
        &self,
        signer: &str,
        version: i32,
        actor: &Actor,
    ) -> Result<(), VaultError> {
        let policy = self
            .policy()
            .signer(signer)
            .ok_or(VaultError::UnknownSigner)?;
        let (rows, _) = rows_of(self, signer)?;
        let row = version_in(&rows, version)?;
        if matches!(row.state, SignerState::Compromised | SignerState::Destroyed) {
            return Err(VaultError::Conflict(format!(
                "signer {signer} v{version} is {}",
                row.state
            )));
        }
        self.keyring()
            .keystore()
            .record_destroyed(&ledger_name(signer), version as u32)?;
        let compromised = SignerKeyRow {
            state: SignerState::Compromised,
            kek_version: None,
            wrapped: None,
            updated_at: now_ms(),
            ..row.clone()
        };
        self.commit_signer_changes(
            &[(Some(row), &compromised)],
            actor,
            "signer.compromise",
            signer,
            format!("v{version} compromised (was {})", row.state),
        )?;
        tracing::warn!(signer, version, who = %actor.who, "signer key marked compromised");
        if row.state == SignerState::Active {
            let (rows, _) = rows_of(self, signer)?;
            let replaced = match find(&rows, SignerState::Pending) {
                Some(pending) => self.promote(policy, &rows, pending, actor),
                None => self.add_signer_key(policy, None, actor).map(drop),
            };
            // The compromise stands either way; the scheduler's next pass gives the signer a
            // key if this one could not (a keystore that failed just now).
            if let Err(e) = replaced {
                tracing::error!(signer, error = %e, "no replacement for a compromised active signer key yet; the scheduler retries");
            }
        }
        Ok(())
    }

    /// `POST …/versions/{v}/destroy`: deletes a retired or compromised key's private half
    /// (from the token, or the sealed bytes from its row). Published keys are refused (409).
    pub fn destroy_signer(&self, grant: &Grant, version: i32) -> Result<SignerChange, VaultError> {
        let signer = grant.signer(Role::Operator)?;
        let actor = grant.actor_for("signer key destruction");
        let _lock = self.key_lock()?;
        self.reconcile_signer_revocations(&actor)?;
        let (rows, _) = rows_of(self, signer)?;
        let row = version_in(&rows, version)?;
        if !matches!(row.state, SignerState::Retired | SignerState::Compromised) {
            return Err(VaultError::Conflict(format!(
                "signer {signer} v{version} is {}: only a retired or compromised key can be destroyed",
                row.state
            )));
        }
        let keystore = self.keyring().keystore();
        if let Some(key) = key_ref(row) {
            keystore.destroy_signing_key(&key)?;
        }
        keystore.record_destroyed(&ledger_name(signer), version as u32)?;
        let destroyed = SignerKeyRow {
            state: SignerState::Destroyed,
            token_id: None,
            kek_version: None,
            wrapped: None,
            updated_at: now_ms(),
            ..row.clone()
        };
        self.commit_signer_changes(
            &[(Some(row), &destroyed)],
            &actor,
            "signer.destroy",
            signer,
            format!("v{version} destroyed"),
        )?;
        self.signer_change(signer, version)
    }

    /// `POST …/versions/{v}/csr`: a PKCS#10 request signed by that key, subject from policy.
    pub fn signer_csr(&self, grant: &Grant, version: i32) -> Result<String, VaultError> {
        let signer = grant.signer(Role::Operator)?;
        let policy = self
            .policy()
            .signer(signer)
            .ok_or(VaultError::UnknownSigner)?;
        let actor = grant.actor_for("signer CSR");
        let _lock = self.key_lock()?;
        self.reconcile_signer_revocations(&actor)?;
        let (rows, _) = rows_of(self, signer)?;
        let row = version_in(&rows, version)?;
        require_published(row)?;
        let key = key_ref(row).ok_or(VaultError::Integrity)?;
        let key = KeystoreSigner::new(
            self.keyring().keystore().clone(),
            signer,
            version as u32,
            key,
            &row.kid,
        );
        let pem = certs::csr_pem(&row.public_key, &key, &policy.subject)?;
        self.store().append_audit(&actor.entry(
            "signer.csr",
            "",
            format!("signer {signer} v{version}"),
        ))?;
        Ok(pem)
    }

    /// `PUT …/versions/{v}/certificate`: attaches a PEM chain issued for that key (400 if its
    /// leaf certifies another key); the JWKS then carries it as `x5c`.
    pub fn attach_certificate(
        &self,
        grant: &Grant,
        version: i32,
        pem: &str,
    ) -> Result<SignerChange, VaultError> {
        let signer = grant.signer(Role::Operator)?;
        let actor = grant.actor_for("signer certificate");
        let _lock = self.key_lock()?;
        self.reconcile_signer_revocations(&actor)?;
        let (rows, _) = rows_of(self, signer)?;
        let row = version_in(&rows, version)?;
        require_published(row)?;
        let chain = certs::check_chain(pem, &row.public_key, now_ms())?;
        let attached = SignerKeyRow {
            certificate: Some(pem.trim().to_owned() + "\n"),
            ..row.clone()
        };
        self.commit_signer_changes(
            &[(Some(row), &attached)],
            &actor,
            "signer.certificate",
            signer,
            format!("v{version} certificate"),
        )?;
        let mut change = self.signer_change(signer, version)?;
        change.not_after = Some(chain.not_after_ms);
        Ok(change)
    }

    fn signer_change(&self, signer: &str, version: i32) -> Result<SignerChange, VaultError> {
        let (rows, _) = rows_of(self, signer)?;
        let row = version_in(&rows, version)?;
        Ok(SignerChange {
            signer: signer.to_owned(),
            version,
            state: row.state.to_string(),
            active: find(&rows, SignerState::Active).map(|r| r.version),
            activate_at: (row.state == SignerState::Pending).then_some(row.activate_at),
            not_after: None,
        })
    }

    /// `GET /v1/signers`: every signer's versions, states and signature counts.
    pub fn signer_overview(&self, grant: &Grant) -> Result<SignersOverview, VaultError> {
        grant.check(Role::Operator)?;
        let counts = self.store().signature_counts()?;
        let mut signers = Vec::new();
        for policy in self.policy().signers.values() {
            if !grant.covers(&policy.name) {
                continue;
            }
            let (rows, _) = rows_of(self, &policy.name)?;
            let versions = rows
                .iter()
                .map(|r| SignerVersionView {
                    version: r.version,
                    kid: r.kid.clone(),
                    state: r.state.to_string(),
                    created_at: r.created_at,
                    activate_at: r.activate_at,
                    retire_at: r.retire_at,
                    signatures: counts
                        .iter()
                        .find(|(s, v, _)| *s == r.signer && *v == r.version)
                        .map_or(0, |c| c.2),
                    certificate: r.certificate.is_some(),
                })
                .collect();
            signers.push(SignerView {
                name: policy.name.clone(),
                alg: policy.alg.clone(),
                versions,
            });
        }
        Ok(SignersOverview { signers })
    }

    /// The signer events the policy schedules up to `end` (for `zkvault policy plan`).
    pub(crate) fn signer_plan(&self, now: i64, end: i64) -> Result<Vec<PlannedEvent>, VaultError> {
        let mut events = Vec::new();
        let mut at = |at_ms: i64, what: String| {
            if at_ms <= end {
                events.push(PlannedEvent {
                    at_ms: at_ms.max(now),
                    what,
                });
            }
        };
        for policy in self.policy().signers.values() {
            let (rows, _) = rows_of(self, &policy.name)?;
            let name = &policy.name;
            let (rotation, ahead, window) = (
                ms(policy.rotation),
                ms(policy.publish_ahead),
                ms(policy.verify_window),
            );
            let pending = find(&rows, SignerState::Pending);
            if let Some(active) = find(&rows, SignerState::Active) {
                let next = pending.map_or(active.activate_at + rotation, |p| p.activate_at);
                if pending.is_none() {
                    at(
                        next - ahead,
                        format!("signer {name}: publish the next key (pending)"),
                    );
                }
                at(
                    next,
                    format!(
                        "signer {name}: promote the next key; demote v{}",
                        active.version
                    ),
                );
                at(
                    next + window,
                    format!(
                        "signer {name}: retire v{} (verify window ends)",
                        active.version
                    ),
                );
            }
            for row in rows.iter().filter(|r| r.state == SignerState::VerifyOnly) {
                if let Some(retire) = row.retire_at {
                    at(
                        retire,
                        format!(
                            "signer {name}: retire v{} (verify window ends)",
                            row.version
                        ),
                    );
                }
            }
        }
        Ok(events)
    }
}
