//! The audit trail as the vault writes and checks it.
//!
//! Every change is recorded in the same transaction as the change (the store's write methods
//! take the entry); reads and refused requests are appended on their own. Entries name the
//! actor, the operation, the namespace, the target (record name, key version, credential id)
//! and the outcome — never a resident ID or blind index, only an 8-byte keyed tag that lets an
//! auditor see which accesses concern the same resident.

use serde::Serialize;
use subtle::ConstantTimeEq;
use zkvault_core::{KeyKind, WrapContext};

use super::{now_ms, Grant, Role, Vault, VaultError};
use std::collections::{HashMap, HashSet};

use crate::keystore::{Keystore, KeystoreError};
use crate::storage::{AuditEntry, AuditFilter, AuditRow, CheckpointRow};

/// What an auditor asks for, as given: checked by [`AuditQuery::filter`].
#[derive(Debug, Default)]
pub struct AuditQuery {
    /// Entries at or after this time (RFC 3339, or unix milliseconds).
    pub since: Option<String>,
    /// Entries before this time.
    pub until: Option<String>,
    pub operation: Option<String>,
    /// A credential id (or `cli:<user>`, `scheduler`, `system`).
    pub actor: Option<String>,
    /// The previous page's `next`.
    pub after: Option<i64>,
    /// Page size, 1-1000 (default 100).
    pub limit: Option<i64>,
}

impl AuditQuery {
    fn filter(&self) -> Result<AuditFilter, VaultError> {
        let bad = |why: &str| VaultError::BadInput(why.to_owned());
        let limit = self.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(bad("limit must be 1-1000"));
        }
        if self.after.is_some_and(|a| a < 0) {
            return Err(bad("after must be a `next` value (0 or more)"));
        }
        // Filters are compared with stored text: NUL and other control bytes cannot be stored
        // (PostgreSQL refuses them), so they are bad input, not a backend error.
        for (name, value) in [("operation", &self.operation), ("credential", &self.actor)] {
            if value.as_ref().is_some_and(|v| {
                v.is_empty() || v.len() > 128 || !v.bytes().all(|b| (0x20..0x7f).contains(&b))
            }) {
                return Err(bad(&format!(
                    "{name} must be 1-128 visible ASCII characters"
                )));
            }
        }
        let instant = |name: &str, v: &Option<String>| {
            v.as_deref()
                .map(|v| {
                    crate::time::parse_instant(v).ok_or_else(|| {
                        bad(&format!(
                            "{name} must be an RFC 3339 time or unix milliseconds"
                        ))
                    })
                })
                .transpose()
        };
        Ok(AuditFilter {
            since: instant("since", &self.since)?,
            until: instant("until", &self.until)?,
            operation: self.operation.clone(),
            actor: self.actor.clone(),
            after_id: self.after.unwrap_or(0),
            limit,
            namespaces: None,
        })
    }
}

/// Who asked, in which request, and why: the header of every audit entry.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// A credential id, `cli:<user>`, `scheduler` or `system`.
    pub who: String,
    pub request_id: String,
    pub why: String,
}

impl Actor {
    /// An operator tool or background job.
    pub fn new(who: impl Into<String>, why: impl Into<String>) -> Self {
        Actor {
            who: who.into(),
            request_id: String::new(),
            why: why.into(),
        }
    }

    /// An API request.
    pub fn request(who: impl Into<String>, request_id: impl Into<String>) -> Self {
        Actor {
            who: who.into(),
            request_id: request_id.into(),
            why: String::new(),
        }
    }

    /// An entry for `operation` on `target` in `namespace`, outcome `ok` until told otherwise.
    /// A namespace or target that is not short printable text is replaced by a marker (callers
    /// validate first; this is the last guard before an append-only row).
    pub fn entry(&self, operation: &str, namespace: &str, target: impl Into<String>) -> AuditEntry {
        AuditEntry {
            at: now_ms(),
            actor: self.who.clone(),
            request_id: self.request_id.clone(),
            operation: operation.to_owned(),
            namespace: bounded("namespace", namespace, MAX_NAMESPACE_BYTES),
            target: bounded("target", &target.into(), MAX_TARGET_BYTES),
            resident_tag: String::new(),
            outcome: "ok".into(),
            detail: self.why.clone(),
        }
    }
}

const MAX_NAMESPACE_BYTES: usize = 63;
const MAX_TARGET_BYTES: usize = 256;

/// Control characters and invisible format characters (bidi overrides, zero-width): they can
/// hide or reorder what an auditor reads, and PostgreSQL cannot store NUL at all.
pub fn is_control_or_format(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{ad}' | '\u{61c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

/// `value` if it is at most `max` bytes without control or format characters, else the fixed
/// marker `<invalid KIND, N bytes>`: a caller-chosen value never reaches the trail unchecked.
pub fn bounded(kind: &str, value: &str, max: usize) -> String {
    if value.len() <= max && !value.chars().any(is_control_or_format) {
        value.to_owned()
    } else {
        format!("<invalid {kind}, {} bytes>", value.len())
    }
}

/// Builder-style setters used while an operation learns more about itself.
pub trait EntryExt {
    fn with_detail(self, detail: String) -> Self;
}

impl EntryExt for AuditEntry {
    fn with_detail(mut self, detail: String) -> Self {
        self.detail = detail;
        self
    }
}

/// The first place `zkvault audit verify` found the trail broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditBreak {
    pub chain: String,
    pub seq: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditVerification {
    pub chains: usize,
    pub entries: u64,
    pub checkpoints: usize,
    /// `None` when every chain and checkpoint holds.
    pub first_break: Option<AuditBreak>,
}

const VERIFY_PAGE: i64 = 5_000;

impl Vault {
    /// Runs `f` (a change that records `entry` in its own transaction); if it fails, the failure
    /// is recorded instead, with the error code the caller sees.
    pub(super) fn audited<T>(
        &self,
        entry: AuditEntry,
        f: impl FnOnce(&AuditEntry) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let result = f(&entry);
        if let Err(e) = &result {
            self.record_failure(entry, e);
        }
        result
    }

    /// Runs `f` (a read: nothing to commit) and records its outcome. A read whose audit entry
    /// cannot be written fails: an unrecorded access is not allowed.
    pub(super) fn audited_read<T>(
        &self,
        entry: AuditEntry,
        f: impl FnOnce(&mut AuditEntry) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let mut entry = entry;
        match f(&mut entry) {
            Ok(v) => {
                if self.audit_reads {
                    self.store().append_audit(&entry)?;
                }
                Ok(v)
            }
            Err(e) => {
                self.record_failure(entry, &e);
                Err(e)
            }
        }
    }

    fn record_failure(&self, mut entry: AuditEntry, e: &VaultError) {
        entry.outcome = e.code().to_owned();
        if let Err(audit_error) = self.store().append_audit(&entry) {
            tracing::error!(error = %audit_error, operation = %entry.operation, "could not record a failed operation in the audit trail");
        }
    }

    /// A page of the trail, oldest first, and where the next page starts (none after the last).
    pub fn audit_page(
        &self,
        grant: &Grant,
        query: &AuditQuery,
    ) -> Result<(Vec<AuditRow>, Option<i64>), VaultError> {
        grant.check(Role::Auditor)?;
        let mut filter = query.filter()?;
        // An auditor restricted to some namespaces reads their entries only, not the
        // deployment-wide ones (key plane, credentials, service starts).
        if !grant.covers_all(None) {
            let policy = self.policy().namespaces.keys();
            filter.namespaces = Some(policy.filter(|ns| grant.covers(ns)).cloned().collect());
        }
        let rows = self.store().audit_page(&filter)?;
        let next = (rows.len() as i64 == filter.limit)
            .then(|| rows.last().map(|r| r.id))
            .flatten();
        Ok((rows, next))
    }

    /// MACs every chain head with the active KEK and stores it as a checkpoint, so a rewrite of
    /// the chain up to there (hashes recomputed) is detected. Returns how many were written.
    pub fn checkpoint_audit(&self) -> Result<usize, VaultError> {
        // Under the key lock: a checkpoint MACed while a migration or KEK destruction re-MACs
        // the others would be left under a KEK the deployment no longer holds.
        let _lock = self.key_lock()?;
        let keystore = self.keyring().keystore();
        let kek = keystore
            .active_kek()?
            .ok_or_else(|| VaultError::Internal("keystore has no active KEK".into()))?;
        let done: Vec<(String, i64)> = self
            .store()
            .checkpoints()?
            .into_iter()
            .map(|c| (c.chain, c.seq))
            .collect();
        let mut written = 0;
        for (chain, seq, hash) in self.store().audit_heads()? {
            if done.contains(&(chain.clone(), seq)) {
                continue;
            }
            let secret = zkvault_core::Secret32::from_slice(&hash).ok_or(VaultError::Integrity)?;
            let mac = keystore.wrap(kek, &checkpoint_context(&chain, seq), &secret)?;
            self.store().insert_checkpoint(&CheckpointRow {
                id: 0,
                chain,
                seq,
                at: now_ms(),
                kek_version: kek as i32,
                mac,
            })?;
            written += 1;
        }
        Ok(written)
    }

    /// Walks every chain and checks every checkpoint; names the first entry that was edited,
    /// deleted, inserted or moved. Linear in entries plus checkpoints.
    pub fn verify_audit(&self) -> Result<AuditVerification, VaultError> {
        let chains = self.store().audit_chains()?;
        let heads = self.store().audit_heads()?;
        let mut entries = 0u64;
        let mut first_break = None;
        let checkpoints = self.store().checkpoints()?;
        let checkpointed: HashSet<(&str, i64)> = checkpoints
            .iter()
            .map(|c| (c.chain.as_str(), c.seq))
            .collect();
        let mut hashes_at_checkpoints = HashMap::new();
        'chains: for chain in &chains {
            let (mut expected_seq, mut prev) = (1i64, [0u8; 32]);
            loop {
                let page = self
                    .store()
                    .audit_chain_page(chain, expected_seq - 1, VERIFY_PAGE)?;
                if page.is_empty() {
                    break;
                }
                for row in &page {
                    entries += 1;
                    let broken = |reason: String| {
                        Some(AuditBreak {
                            chain: chain.clone(),
                            seq: row.seq,
                            reason,
                        })
                    };
                    if row.seq != expected_seq {
                        first_break = broken(format!(
                            "entry {expected_seq} is missing: deleted (the chain jumps to {})",
                            row.seq
                        ));
                    } else if row
                        .expected_hash()
                        .is_none_or(|h| !bool::from(h.ct_eq(&row.hash[..])))
                    {
                        first_break = broken(format!("entry {} does not match its hash: edited, or moved from another position", row.seq));
                    } else if row.prev_hash != prev {
                        first_break = broken(format!(
                            "entry {} does not follow entry {}: inserted or reordered",
                            row.seq,
                            row.seq - 1
                        ));
                    }
                    if first_break.is_some() {
                        break 'chains;
                    }
                    prev.copy_from_slice(&row.hash);
                    if checkpointed.contains(&(chain.as_str(), row.seq)) {
                        hashes_at_checkpoints.insert((chain.clone(), row.seq), prev);
                    }
                    expected_seq += 1;
                }
            }
            // The head counts every entry appended (the insert and the head move commit
            // together). Fewer entries than the head read before the walk: deleted from the end.
            // More: appended since (the head has moved on too) or inserted (it has not).
            let last = expected_seq - 1;
            let head_before = heads.iter().find(|(c, _, _)| c == chain).map_or(0, |h| h.1);
            if last < head_before {
                first_break = Some(AuditBreak {
                    chain: chain.clone(),
                    seq: expected_seq,
                    reason: format!(
                        "entries {expected_seq}..={head_before} are missing: deleted from the end"
                    ),
                });
                break;
            }
            if last > head_before {
                let head_now = self
                    .store()
                    .audit_heads()?
                    .into_iter()
                    .find(|(c, _, _)| c == chain)
                    .map_or(0, |h| h.1);
                if last > head_now {
                    first_break = Some(AuditBreak {
                        chain: chain.clone(),
                        seq: head_now + 1,
                        reason: format!(
                            "entries after {head_now} were appended outside the service: inserted"
                        ),
                    });
                    break;
                }
            }
        }
        if first_break.is_none() {
            first_break = self.check_checkpoints(&checkpoints, &hashes_at_checkpoints)?;
        }
        Ok(AuditVerification {
            chains: chains.len(),
            entries,
            checkpoints: checkpoints.len(),
            first_break,
        })
    }

    fn check_checkpoints(
        &self,
        checkpoints: &[CheckpointRow],
        seen: &HashMap<(String, i64), [u8; 32]>,
    ) -> Result<Option<AuditBreak>, VaultError> {
        let keystore = self.keyring().keystore();
        for c in checkpoints {
            let broken = |reason: &str| {
                Ok(Some(AuditBreak {
                    chain: c.chain.clone(),
                    seq: c.seq,
                    reason: reason.to_owned(),
                }))
            };
            let Some(hash) = seen.get(&(c.chain.clone(), c.seq)) else {
                return broken(
                    "a checkpointed entry is missing: the chain was truncated or deleted",
                );
            };
            match keystore.unwrap(c.kek_version as u32, &checkpoint_context(&c.chain, c.seq), &c.mac) {
                Ok(mac) if bool::from(mac.expose().ct_eq(hash)) => {}
                Ok(_) => return broken("the chain up to this checkpoint was rewritten (its hash differs from the MACed one)"),
                Err(KeystoreError::Unwrap) => return broken("the checkpoint's MAC is not authentic"),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}

impl Vault {
    /// The checkpoints `which` selects, their MACs checked with `from` and made anew under
    /// `to`'s KEK `to_kek`, for the caller to commit. A checkpoint whose MAC is not authentic is
    /// refused (`Integrity`), never re-MACed: that would launder a forged one.
    pub(super) fn remac_checkpoints(
        &self,
        from: &dyn Keystore,
        to: &dyn Keystore,
        to_kek: u32,
        which: impl Fn(&CheckpointRow) -> bool,
    ) -> Result<Vec<CheckpointRow>, VaultError> {
        self.store()
            .checkpoints()?
            .into_iter()
            .filter(|c| which(c))
            .map(|c| {
                let ctx = checkpoint_context(&c.chain, c.seq);
                let head = match from.unwrap(c.kek_version as u32, &ctx, &c.mac) {
                    Ok(head) => head,
                    Err(KeystoreError::Unwrap) => {
                        tracing::error!(chain = %c.chain, seq = c.seq, "audit checkpoint MAC is not authentic; run `zkvault audit verify`");
                        return Err(VaultError::Integrity);
                    }
                    // Under a KEK already gone (destroyed before checkpoints were re-MACed on
                    // destruction, or a version no keystore has): unverifiable before, and left
                    // as it is, so `audit verify` keeps reporting it.
                    Err(KeystoreError::UnknownVersion(_) | KeystoreError::State { .. }) => {
                        tracing::warn!(chain = %c.chain, seq = c.seq, kek = c.kek_version, "audit checkpoint under a KEK that no longer exists: left as it is");
                        return Ok(None);
                    }
                    Err(e) => return Err(e.into()),
                };
                Ok(Some(CheckpointRow {
                    kek_version: to_kek as i32,
                    mac: to.wrap(to_kek, &ctx, &head)?,
                    ..c
                }))
            })
            .filter_map(Result::transpose)
            .collect()
    }
}

fn checkpoint_context(chain: &str, seq: i64) -> WrapContext {
    // Sequence numbers beyond u32 are folded: the chain name and position are also in the MACed
    // hash itself, so the context only has to keep checkpoints of different positions apart.
    WrapContext::new(chain, KeyKind::AuditCheckpoint, seq as u32)
}
