//! The audit trail as the vault writes and checks it.
//!
//! Every change is recorded in the same transaction as the change (the store's write methods
//! take the entry); reads and refused requests are appended on their own. Entries name the
//! actor, the operation, the namespace, the target (record name, key version, credential id)
//! and the outcome — never a resident ID or blind index, only an 8-byte keyed tag that lets an
//! auditor see which accesses concern the same resident.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use subtle::ConstantTimeEq;

use super::checkpoints::{first_format_holds, heads_digest, AnchorCheck, Heads, Manifest};
use super::record_history::RecordHistory;
use super::state_history::StateHistory;
use super::{now_ms, Grant, Role, Vault, VaultError};
use crate::storage::{AuditEntry, AuditFilter, AuditHead, AuditRow};

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
    /// Records checked against their last logged change.
    pub records: u64,
    /// Checkpoints a database was rolled back from, each accepted by an operator.
    pub rollbacks_accepted: Vec<u64>,
    /// `None` when every chain and checkpoint holds.
    pub first_break: Option<AuditBreak>,
}

const VERIFY_PAGE: i64 = 5_000;

/// How far before a verification's start an entry still counts as appended during it.
const VERIFY_MARGIN_MS: i64 = 5_000;

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

    pub(super) fn record_failure(&self, mut entry: AuditEntry, e: &VaultError) {
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

    /// Walks every chain and checks every checkpoint and the keystore's anchor; names the first
    /// entry that was edited, deleted, inserted or moved, the first checkpoint deleted or
    /// forged, a rollback of the whole database, a forged or replayed key or credential row,
    /// and a record rolled back. Linear in entries plus checkpoints plus records.
    pub fn verify_audit(&self) -> Result<AuditVerification, VaultError> {
        // The service keeps writing meanwhile: entries appended from here on are read again
        // before a record is called wrong. The margin covers a SQLite transaction, timed when
        // it began, that commits after this.
        let started = now_ms() - VERIFY_MARGIN_MS;
        let chains = self.store().audit_chains()?;
        let heads = self.store().audit_heads()?;
        let folded = self.fold_checkpoints()?;
        let legacy = self.store().checkpoints()?;
        let mut first_break = folded.first_break.clone();
        let wanted: HashSet<(&str, i64)> = folded
            .heads
            .iter()
            .map(|(c, (seq, _))| (c.as_str(), *seq))
            .chain(legacy.iter().map(|c| (c.chain.as_str(), c.seq)))
            .collect();
        let mut seen: HashMap<(String, i64), [u8; 32]> = HashMap::new();
        let mut history = RecordHistory::default();
        let mut states = StateHistory::default();
        let mut entries = 0u64;
        'chains: for chain in &chains {
            let mut walk = ChainWalk::new(chain);
            loop {
                let page = self
                    .store()
                    .audit_chain_page(chain, walk.last_seq(), VERIFY_PAGE)?;
                if page.is_empty() {
                    break;
                }
                for row in &page {
                    entries += 1;
                    if let Err(b) = walk.step(row) {
                        first_break = first_break.or(Some(b));
                        break 'chains;
                    }
                    history.observe(row);
                    states.observe(row);
                    if wanted.contains(&(chain.as_str(), row.seq)) {
                        seen.insert((chain.clone(), row.seq), walk.last_hash());
                    }
                }
            }
            if let Some(b) = self.tail_break(chain, walk.last_seq(), &heads)? {
                first_break = first_break.or(Some(b));
                break;
            }
        }
        // A head not written by zkvault: a forged chain, or one rewritten or cut short after the
        // newest checkpoint (its entries may all be consistent with that head).
        if let (None, Some((head, _))) = (&first_break, heads.iter().find(|(_, ok)| !ok)) {
            first_break = Some(AuditBreak {
                chain: head.chain.clone(),
                seq: head.seq,
                reason: "the chain's head is not authentic: the chain was forged, or rewritten or cut short".into(),
            });
        }
        for (chain, (seq, hash)) in &folded.heads {
            if first_break.is_none() && seen.get(&(chain.clone(), *seq)) != Some(hash) {
                first_break = Some(AuditBreak {
                    chain: chain.clone(),
                    seq: *seq,
                    reason: "a checkpointed entry is missing or changed: the chain was truncated, deleted or rewritten".into(),
                });
            }
        }
        let keystore = self.keyring().keystore();
        for c in &legacy {
            let holds = seen
                .get(&(c.chain.clone(), c.seq))
                .is_some_and(|h| first_format_holds(keystore.as_ref(), c, h));
            if first_break.is_none() && !holds {
                first_break = Some(AuditBreak {
                    chain: c.chain.clone(),
                    seq: c.seq,
                    reason: "a first-format checkpoint does not hold: its entry is missing or changed, or its MAC is not authentic".into(),
                });
            }
        }
        let anchor = AnchorCheck::of(keystore.audit_anchor()?, folded.newest.as_ref());
        if let (None, Some(problem)) = (&first_break, anchor.problem()) {
            first_break = Some(AuditBreak {
                chain: CHECKPOINTS.into(),
                seq: folded.newest.as_ref().map_or(0, |m| m.counter as i64),
                reason: problem,
            });
        }
        // The marks checkpointing resumes from: edited, they stop every checkpoint from then on.
        if let (None, Some(newest)) = (&first_break, &folded.newest) {
            if self.marks_of(Some(newest))?.is_none() {
                first_break = Some(AuditBreak {
                    chain: CHECKPOINTS.into(),
                    seq: newest.counter as i64,
                    reason: "the chain heads recorded at the newest checkpoint were edited: no checkpoint can be written".into(),
                });
            }
        }
        // Keys, credentials and records are checked against a trail that holds.
        if first_break.is_none() {
            first_break = self.check_states(&states)?;
        }
        let (records, record_break) = match first_break {
            None => self.check_records(history, started)?,
            Some(_) => (0, None),
        };
        Ok(AuditVerification {
            chains: chains.len(),
            entries,
            records,
            checkpoints: folded.count + legacy.len(),
            rollbacks_accepted: folded.rollbacks,
            first_break: first_break.or(record_break),
        })
    }

    /// The break, if any, between what a walk of `chain` found (`last` entries) and its head.
    /// The head counts every entry appended (the insert and the head move commit together).
    fn tail_break(
        &self,
        chain: &str,
        last: i64,
        heads: &[(AuditHead, bool)],
    ) -> Result<Option<AuditBreak>, VaultError> {
        let head_of = |heads: &[(AuditHead, bool)]| {
            heads
                .iter()
                .find(|(h, _)| h.chain == chain)
                .map_or(0, |(h, _)| h.seq)
        };
        let head_before = head_of(heads);
        // Fewer entries than the head read before the walk: deleted from the end.
        if last < head_before {
            return Ok(Some(AuditBreak {
                chain: chain.to_owned(),
                seq: last + 1,
                reason: format!(
                    "entries {}..={head_before} are missing: deleted from the end",
                    last + 1
                ),
            }));
        }
        // More: appended since (the head has moved on too) or inserted (it has not).
        let head_now = head_of(&self.store().audit_heads()?);
        Ok((last > head_before && last > head_now).then(|| AuditBreak {
            chain: chain.to_owned(),
            seq: head_now + 1,
            reason: format!("entries after {head_now} were appended outside the service: inserted"),
        }))
    }

    /// Every checkpoint in order, each checked (MAC, counter, link to the previous one), and
    /// the chain heads they add up to.
    fn fold_checkpoints(&self) -> Result<Folded, VaultError> {
        let mut folded = Folded::default();
        let mut after = 0;
        loop {
            let page = self.store().manifests_after(after, VERIFY_PAGE)?;
            let Some(last) = page.last() else { break };
            after = last.counter;
            for row in &page {
                folded.count += 1;
                if let Err(reason) = folded.add(self.open_manifest(row), row.counter) {
                    folded.first_break = Some(AuditBreak {
                        chain: CHECKPOINTS.into(),
                        seq: row.counter,
                        reason,
                    });
                    return Ok(folded);
                }
            }
        }
        if let Some(newest) = &folded.newest {
            if heads_digest(&folded.heads) != newest.heads_digest {
                folded.first_break = Some(AuditBreak {
                    chain: CHECKPOINTS.into(),
                    seq: newest.counter as i64,
                    reason: "the checkpoints do not add up to the heads the newest one MACs".into(),
                });
            }
        }
        Ok(folded)
    }
}

/// The name [`AuditBreak::chain`] gives the checkpoints themselves.
const CHECKPOINTS: &str = "checkpoints";

/// The checkpoints folded, oldest first, into the chain heads they vouch for.
#[derive(Default)]
struct Folded {
    heads: Heads,
    newest: Option<Manifest>,
    count: usize,
    rollbacks: Vec<u64>,
    first_break: Option<AuditBreak>,
}

impl Folded {
    /// Adds the next checkpoint (`None`: it is not authentic), stored under `counter`.
    fn add(&mut self, manifest: Option<Manifest>, counter: i64) -> Result<(), String> {
        let m = manifest.ok_or("the checkpoint is not authentic: forged or edited")?;
        let expected = self.newest.as_ref().map_or(1, |n| n.counter + 1);
        if m.counter != counter as u64 {
            return Err("the checkpoint was moved to another counter".into());
        }
        if m.counter != expected {
            // Only a checkpoint that records an accepted rollback may skip counters: the
            // checkpoints the restored backup did not hold.
            if m.rollback_from != Some(m.counter - 1) || m.counter < expected {
                return Err(format!(
                    "checkpoints {expected}..={} are missing: deleted",
                    m.counter - 1
                ));
            }
            self.rollbacks.push(m.counter - 1);
        }
        if m.prev != self.newest.as_ref().map_or([0; 32], Manifest::digest) {
            return Err("the checkpoint does not follow the one before it".into());
        }
        for (chain, seq, hash) in &m.moved {
            self.heads.insert(chain.clone(), (*seq, *hash));
        }
        self.newest = Some(m);
        Ok(())
    }
}

/// One chain read in order: each entry must be the next, match its hash and follow the one
/// before it.
pub(super) struct ChainWalk {
    chain: String,
    last_seq: i64,
    last_hash: [u8; 32],
}

impl ChainWalk {
    pub fn new(chain: &str) -> Self {
        Self::after(chain, 0, [0; 32])
    }

    /// A walk that resumes after entry `seq`, whose hash is `hash`.
    pub fn after(chain: &str, seq: i64, hash: [u8; 32]) -> Self {
        ChainWalk {
            chain: chain.to_owned(),
            last_seq: seq,
            last_hash: hash,
        }
    }

    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    pub fn last_hash(&self) -> [u8; 32] {
        self.last_hash
    }

    pub fn step(&mut self, row: &AuditRow) -> Result<(), AuditBreak> {
        let expected = self.last_seq + 1;
        let reason = if row.seq != expected {
            Some(format!(
                "entry {expected} is missing: deleted (the chain jumps to {})",
                row.seq
            ))
        } else if row
            .expected_hash()
            .is_none_or(|h| !bool::from(h.ct_eq(&row.hash[..])))
        {
            Some(format!(
                "entry {} does not match its hash: edited, or moved from another position",
                row.seq
            ))
        } else if row.prev_hash != self.last_hash {
            Some(format!(
                "entry {} does not follow entry {}: inserted or reordered",
                row.seq,
                row.seq - 1
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(AuditBreak {
                chain: self.chain.clone(),
                seq: row.seq,
                reason,
            });
        }
        self.last_seq = row.seq;
        self.last_hash.copy_from_slice(&row.hash);
        Ok(())
    }
}
