//! Chained audit checkpoints: what makes the trail hold against a database writer.
//!
//! Hash chains alone only show that a chain is consistent with itself: a writer who deletes
//! the last entries and rewinds the head, deletes a whole chain, or restores an older copy of
//! the database leaves consistent chains behind. So every scheduler pass (and `zkvault audit
//! checkpoint`) writes a checkpoint ("manifest") that holds
//! - a counter, one above the previous checkpoint's;
//! - the digest of the previous checkpoint;
//! - the digest of every chain's head at that moment (`heads_digest`), and the heads that
//!   moved since the previous checkpoint (`moved`);
//!
//! MACed with the integrity key, which the database never sees. The newest checkpoint's counter
//! and digest are also recorded in the keystore (the anchor), outside the database: a database
//! rolled back to an older state holds an older newest checkpoint than the keystore remembers.
//! Before MACing a head, the segment of its chain since the previous checkpoint is walked and
//! checked, so a checkpoint never vouches for entries it did not check.
//!
//! A rollback is detected, logged loudly at start and reported by `audit verify`; the service
//! still starts (a restored backup is how disaster recovery works) but writes no checkpoint
//! until an operator accepts the rollback (`zkvault audit accept-rollback`), which writes an
//! audit entry and a checkpoint that records from which checkpoint the database was rolled back.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::audit::{AuditBreak, ChainWalk};
use super::{now_ms, EntryExt, Grant, Role, Vault, VaultError};
use crate::keystore::{AuditAnchor, Keystore};
use crate::storage::{CheckpointRow, ManifestRow, MarkRow};

const MAC_KIND: &str = "audit:manifest";
const ZERO: [u8; 32] = [0; 32];

/// Every chain's head at a checkpoint: chain → (seq, hash).
pub(super) type Heads = BTreeMap<String, (i64, [u8; 32])>;

/// One checkpoint, its MAC checked.
pub(super) struct Manifest {
    pub counter: u64,
    at: i64,
    pub prev: [u8; 32],
    pub heads_digest: [u8; 32],
    pub moved: Vec<(String, i64, [u8; 32])>,
    pub rollback_from: Option<u64>,
}

impl Manifest {
    /// What the MAC and the digest cover: every field, length-prefixed where variable.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.counter.to_be_bytes());
        out.extend_from_slice(&self.at.to_be_bytes());
        out.extend_from_slice(&self.prev);
        out.extend_from_slice(&self.heads_digest);
        match self.rollback_from {
            Some(n) => {
                out.push(1);
                out.extend_from_slice(&n.to_be_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&encode_moved(&self.moved));
        out
    }

    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }

    fn anchor(&self) -> AuditAnchor {
        AuditAnchor {
            counter: self.counter,
            digest: self.digest(),
        }
    }
}

fn encode_moved(moved: &[(String, i64, [u8; 32])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(moved.len() as u32).to_be_bytes());
    for (chain, seq, hash) in moved {
        out.extend_from_slice(&(chain.len() as u32).to_be_bytes());
        out.extend_from_slice(chain.as_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(hash);
    }
    out
}

fn decode_moved(b: &[u8]) -> Option<Vec<(String, i64, [u8; 32])>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = b.split_at_checked(n)?;
        *b = rest;
        Some(head)
    }
    let mut b = b;
    let count = u32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?);
    let mut moved = Vec::new();
    for _ in 0..count {
        let len = u32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
        let chain = String::from_utf8(take(&mut b, len)?.to_vec()).ok()?;
        let seq = i64::from_be_bytes(take(&mut b, 8)?.try_into().ok()?);
        moved.push((chain, seq, take(&mut b, 32)?.try_into().ok()?));
    }
    b.is_empty().then_some(moved)
}

/// The digest of every chain's head, in chain order.
pub(super) fn heads_digest(heads: &Heads) -> [u8; 32] {
    let mut h = Sha256::new();
    for (chain, (seq, hash)) in heads {
        h.update((chain.len() as u32).to_be_bytes());
        h.update(chain.as_bytes());
        h.update(seq.to_be_bytes());
        h.update(hash);
    }
    h.finalize().into()
}

/// How the database's newest checkpoint stands against the keystore's anchor.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AnchorCheck {
    Matches,
    /// The checkpoint after the anchored one: the service stopped between committing a
    /// checkpoint and anchoring it.
    Lags,
    /// The keystore remembers a newer checkpoint than the database holds.
    RolledBack {
        remembered: u64,
        newest: u64,
    },
    /// The database has checkpoints, the keystore no anchor: another keystore.
    NoAnchor,
    /// The keystore remembers another checkpoint under this counter.
    Differs,
}

impl AnchorCheck {
    pub fn of(anchor: Option<AuditAnchor>, newest: Option<&Manifest>) -> AnchorCheck {
        match (anchor, newest) {
            (None, None) => AnchorCheck::Matches,
            (None, Some(_)) => AnchorCheck::NoAnchor,
            (Some(a), None) => AnchorCheck::RolledBack {
                remembered: a.counter,
                newest: 0,
            },
            (Some(a), Some(m)) if m.counter == a.counter => {
                match bool::from(m.digest().ct_eq(&a.digest)) {
                    true => AnchorCheck::Matches,
                    false => AnchorCheck::Differs,
                }
            }
            (Some(a), Some(m)) if m.counter == a.counter + 1 => {
                match m.prev == a.digest || m.rollback_from == Some(a.counter) {
                    true => AnchorCheck::Lags,
                    false => AnchorCheck::Differs,
                }
            }
            (Some(a), Some(m)) if m.counter < a.counter => AnchorCheck::RolledBack {
                remembered: a.counter,
                newest: m.counter,
            },
            (Some(_), Some(_)) => AnchorCheck::Differs,
        }
    }

    /// What an auditor reads when the check fails.
    pub fn problem(&self) -> Option<String> {
        match self {
            AnchorCheck::Matches | AnchorCheck::Lags => None,
            AnchorCheck::RolledBack { remembered, newest } => Some(format!(
                "the database was rolled back: the keystore remembers checkpoint {remembered}, the database's newest is {newest}"
            )),
            AnchorCheck::NoAnchor => Some(
                "the database has checkpoints but the keystore anchors none: another keystore?"
                    .into(),
            ),
            AnchorCheck::Differs => Some(
                "the database's newest checkpoint is not the one the keystore anchors".into(),
            ),
        }
    }
}

impl Vault {
    /// A stored checkpoint, if its MAC holds and it decodes.
    pub(super) fn open_manifest(&self, row: &ManifestRow) -> Option<Manifest> {
        let manifest = Manifest {
            counter: u64::try_from(row.counter).ok()?,
            at: row.at,
            prev: row.prev.as_slice().try_into().ok()?,
            heads_digest: row.heads_digest.as_slice().try_into().ok()?,
            moved: decode_moved(&row.moved)?,
            rollback_from: row.rollback_from.map(u64::try_from).transpose().ok()?,
        };
        self.integrity
            .verify(MAC_KIND, &manifest.encode(), &row.mac)
            .then_some(manifest)
    }

    /// How the database's newest checkpoint stands against the keystore's anchor, and that
    /// checkpoint. `Integrity` if the newest checkpoint itself is not authentic.
    pub(super) fn anchor_check(&self) -> Result<(AnchorCheck, Option<Manifest>), VaultError> {
        let anchor = self.keyring().keystore().audit_anchor()?;
        let newest = match self.store().newest_manifest()? {
            Some(row) => Some(self.open_manifest(&row).ok_or_else(|| {
                tracing::error!(counter = row.counter, "the newest audit checkpoint is not authentic: the database was written outside zkvault");
                VaultError::Integrity
            })?),
            None => None,
        };
        Ok((AnchorCheck::of(anchor, newest.as_ref()), newest))
    }

    /// At start: a deployment's first checkpoint is written at once (its anchor then guards the
    /// database); a database that does not match the keystore's anchor is reported loudly and
    /// in the trail, and the service starts anyway (a restored backup is how disaster recovery
    /// works; see [`Vault::accept_audit_rollback`]).
    pub(super) fn check_audit_anchor(&self, actor: &super::Actor) -> Result<(), VaultError> {
        let problem = match self.anchor_check() {
            Ok((AnchorCheck::Matches, None)) => {
                let _lock = self.key_lock()?;
                self.checkpoint_locked(false)?;
                return Ok(());
            }
            Ok((check, _)) => check.problem(),
            Err(VaultError::Integrity) => {
                Some("the newest audit checkpoint is not authentic".to_owned())
            }
            Err(e) => return Err(e),
        };
        if let Some(problem) = problem {
            tracing::error!(%problem, "AUDIT TRAIL DOES NOT MATCH THE KEYSTORE: no checkpoint is written until this is resolved. If a database backup was restored on purpose, run `zkvault audit accept-rollback --reason ...`; otherwise the database was tampered with: run `zkvault audit verify`");
            let mut entry = actor.entry("audit.anchor", "", "").with_detail(problem);
            entry.outcome = VaultError::Integrity.code().to_owned();
            self.store().append_audit(&entry)?;
        }
        Ok(())
    }

    /// Writes a checkpoint over every chain head that moved since the last one, after checking
    /// each moved chain's new entries, and anchors it in the keystore. Returns how many
    /// checkpoints were written (0 when nothing moved). `Integrity` (logged) if the database
    /// was rolled back or the trail since the last checkpoint was tampered with.
    pub fn checkpoint_audit(&self) -> Result<usize, VaultError> {
        let _lock = self.key_lock()?;
        self.checkpoint_locked(false)
    }

    /// After a database restore the keystore remembers a newer checkpoint than the database
    /// holds, and no checkpoint is written until an operator accepts that. Records who accepted
    /// it, then writes the next checkpoint, which names the checkpoint rolled back from.
    pub fn accept_audit_rollback(&self, grant: &Grant) -> Result<u64, VaultError> {
        grant.check_global(Role::Operator)?;
        let _lock = self.key_lock()?;
        let (check, _) = self.anchor_check()?;
        let AnchorCheck::RolledBack { remembered, newest } = check else {
            return Err(VaultError::Conflict(
                "the database is not rolled back: nothing to accept".into(),
            ));
        };
        let actor = grant.actor_for("database restored from a backup");
        self.store().append_audit(
            &actor
                .entry(
                    "audit.rollback.accept",
                    "",
                    format!("checkpoint {remembered}"),
                )
                .with_detail(format!("database's newest checkpoint: {newest}")),
        )?;
        self.checkpoint_locked(true)?;
        tracing::warn!(remembered, newest, who = %actor.who, "audit rollback accepted");
        Ok(remembered)
    }

    /// [`Vault::checkpoint_audit`] under the key lock; `accepting` a rollback.
    pub(super) fn checkpoint_locked(&self, accepting: bool) -> Result<usize, VaultError> {
        let keystore = self.keyring().keystore();
        let (check, newest) = self.anchor_check()?;
        let refuse = |why: String| {
            tracing::error!(problem = %why, "audit checkpoint refused; run `zkvault audit verify`");
            VaultError::Integrity
        };
        let (counter, rollback_from) = match (&check, accepting) {
            (AnchorCheck::Matches, false) => (newest.as_ref().map_or(0, |m| m.counter) + 1, None),
            (AnchorCheck::Lags, false) => {
                let newest = newest.as_ref().expect("a lagging anchor has a checkpoint");
                keystore.advance_audit_anchor(&newest.anchor())?;
                (newest.counter + 1, None)
            }
            (AnchorCheck::RolledBack { remembered, .. }, true) => {
                (remembered + 1, Some(*remembered))
            }
            _ => return Err(refuse(check.problem().unwrap_or_default())),
        };
        let Some(marks) = self.marks_of(newest.as_ref())? else {
            return Err(refuse(
                "the chain heads recorded at the last checkpoint were edited".into(),
            ));
        };
        let mut heads = marks.clone();
        let mut moved = Vec::new();
        let current = self.store().audit_heads()?;
        for (head, authentic) in &current {
            let (chain, seq) = (&head.chain, &head.seq);
            if !authentic {
                return Err(refuse(format!(
                    "chain {chain}'s head is not authentic: the chain was forged, or rewritten or cut short since the last checkpoint"
                )));
            }
            let hash: [u8; 32] = head
                .hash
                .as_slice()
                .try_into()
                .map_err(|_| refuse(format!("chain {chain}'s head is not 32 bytes")))?;
            let from = marks.get(chain).copied().unwrap_or((0, ZERO));
            if (*seq, hash) == from {
                continue;
            }
            self.check_segment(chain, from, (*seq, hash))
                .map_err(|b| refuse(format!("chain {} at {}: {}", b.chain, b.seq, b.reason)))?;
            heads.insert(chain.clone(), (*seq, hash));
            moved.push((chain.clone(), *seq, hash));
        }
        if let Some(gone) = marks
            .keys()
            .find(|c| !current.iter().any(|(h, _)| &&h.chain == c))
        {
            return Err(refuse(format!("chain {gone} was deleted")));
        }
        let retired = match newest {
            None => self.checked_first_format_checkpoints()?,
            Some(_) => Vec::new(),
        };
        if moved.is_empty() && rollback_from.is_none() && retired.is_empty() {
            return Ok(0);
        }
        let manifest = Manifest {
            counter,
            at: now_ms(),
            prev: newest.as_ref().map_or(ZERO, Manifest::digest),
            heads_digest: heads_digest(&heads),
            moved,
            rollback_from,
        };
        let row = ManifestRow {
            counter: counter as i64,
            at: manifest.at,
            prev: manifest.prev.to_vec(),
            heads_digest: manifest.heads_digest.to_vec(),
            moved: encode_moved(&manifest.moved),
            rollback_from: rollback_from.map(|n| n as i64),
            mac: self.integrity.mac(MAC_KIND, &manifest.encode()).to_vec(),
        };
        let marks: Vec<MarkRow> = manifest
            .moved
            .iter()
            .map(|(chain, seq, hash)| MarkRow {
                chain: chain.clone(),
                seq: *seq,
                hash: hash.to_vec(),
            })
            .collect();
        self.store().commit_manifest(&row, &marks, &retired)?;
        keystore.advance_audit_anchor(&manifest.anchor())?;
        Ok(1)
    }

    /// The chain heads the newest checkpoint saw, as `audit_marks` holds them, if they add up
    /// to its `heads_digest` (to no heads at all before the first checkpoint).
    pub(super) fn marks_of(&self, newest: Option<&Manifest>) -> Result<Option<Heads>, VaultError> {
        let mut marks = Heads::new();
        for m in self.store().audit_marks()? {
            let Ok(hash) = m.hash.as_slice().try_into() else {
                return Ok(None);
            };
            marks.insert(m.chain, (m.seq, hash));
        }
        let expected = newest.map_or(heads_digest(&Heads::new()), |m| m.heads_digest);
        Ok((heads_digest(&marks) == expected).then_some(marks))
    }

    /// Checks `chain`'s entries after `from` up to `to` (each `(seq, hash)`): the entry at
    /// `from` still has its hash, and every later one follows its predecessor.
    fn check_segment(
        &self,
        chain: &str,
        from: (i64, [u8; 32]),
        to: (i64, [u8; 32]),
    ) -> Result<(), AuditBreak> {
        let broken = |seq: i64, reason: String| AuditBreak {
            chain: chain.to_owned(),
            seq,
            reason,
        };
        if to.0 < from.0 {
            return Err(broken(
                to.0 + 1,
                format!(
                    "entries {}..={} were deleted and the head moved back",
                    to.0 + 1,
                    from.0
                ),
            ));
        }
        let unavailable = |e: crate::storage::StorageError| broken(from.0, e.to_string());
        let mut walk = ChainWalk::new(chain);
        if from.0 > 0 {
            let at = self
                .store()
                .audit_chain_page(chain, from.0 - 1, 1)
                .map_err(unavailable)?;
            match at.first() {
                Some(row) if row.seq == from.0 && row.hash == from.1 => {
                    walk = ChainWalk::after(chain, from.0, from.1)
                }
                _ => {
                    return Err(broken(
                        from.0,
                        "a checkpointed entry was edited or deleted".into(),
                    ))
                }
            }
        }
        while walk.last_seq() < to.0 {
            let page = self
                .store()
                .audit_chain_page(chain, walk.last_seq(), (to.0 - walk.last_seq()).min(5_000))
                .map_err(unavailable)?;
            if page.is_empty() {
                return Err(broken(
                    walk.last_seq() + 1,
                    format!("entries {}..={} are missing", walk.last_seq() + 1, to.0),
                ));
            }
            for row in &page {
                walk.step(row)?;
            }
        }
        match walk.last_hash() == to.1 {
            true => Ok(()),
            false => Err(broken(to.0, "the head does not match its entry".into())),
        }
    }

    /// The first-format checkpoints (one chain head each, wrapped under a KEK), each checked
    /// against its entry: all their ids if every one holds, so the first chained checkpoint
    /// replaces them; none otherwise (they stay, and `audit verify` keeps reporting them).
    fn checked_first_format_checkpoints(&self) -> Result<Vec<i64>, VaultError> {
        let rows = self.store().checkpoints()?;
        let keystore = self.keyring().keystore();
        for c in &rows {
            let entry = self.store().audit_chain_page(&c.chain, c.seq - 1, 1)?;
            let hash = entry
                .first()
                .filter(|e| e.seq == c.seq)
                .map(|e| e.hash.clone());
            if !hash.is_some_and(|h| first_format_holds(keystore.as_ref(), c, &h)) {
                tracing::error!(chain = %c.chain, seq = c.seq, "a first-format audit checkpoint does not hold: kept for `audit verify`");
                return Ok(Vec::new());
            }
        }
        Ok(rows.iter().map(|c| c.id).collect())
    }
}

/// Whether first-format checkpoint `c` MACs `hash`, the hash of the entry it names.
pub(super) fn first_format_holds(keystore: &dyn Keystore, c: &CheckpointRow, hash: &[u8]) -> bool {
    let ctx = zkvault_core::WrapContext::new(
        &c.chain,
        zkvault_core::KeyKind::AuditCheckpoint,
        c.seq as u32,
    );
    match keystore.unwrap(c.kek_version as u32, &ctx, &c.mac) {
        Ok(mac) => bool::from(mac.expose()[..].ct_eq(hash)),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_heads_round_trip_and_reject_trailing_bytes() {
        let moved = vec![
            ("a".to_string(), 3, [1; 32]),
            ("bb".to_string(), 9, [2; 32]),
        ];
        let bytes = encode_moved(&moved);
        assert_eq!(decode_moved(&bytes), Some(moved));
        assert_eq!(decode_moved(&[bytes.as_slice(), &[0]].concat()), None);
        assert_eq!(decode_moved(&bytes[..bytes.len() - 1]), None);
    }

    fn manifest(counter: u64, prev: [u8; 32]) -> Manifest {
        Manifest {
            counter,
            at: 1,
            prev,
            heads_digest: [0; 32],
            moved: Vec::new(),
            rollback_from: None,
        }
    }

    #[test]
    fn the_anchor_tells_a_rollback_from_a_crash() {
        let m3 = manifest(3, [7; 32]);
        let anchor = |m: &Manifest| Some(m.anchor());
        assert_eq!(
            AnchorCheck::of(anchor(&m3), Some(&m3)),
            AnchorCheck::Matches
        );
        let m4 = manifest(4, m3.digest());
        assert_eq!(AnchorCheck::of(anchor(&m3), Some(&m4)), AnchorCheck::Lags);
        assert_eq!(
            AnchorCheck::of(anchor(&m4), Some(&m3)),
            AnchorCheck::RolledBack {
                remembered: 4,
                newest: 3
            }
        );
        assert_eq!(
            AnchorCheck::of(anchor(&m3), None),
            AnchorCheck::RolledBack {
                remembered: 3,
                newest: 0
            }
        );
        assert_eq!(AnchorCheck::of(None, Some(&m3)), AnchorCheck::NoAnchor);
        // Same counter, other checkpoint; or two ahead of the anchor.
        assert_eq!(
            AnchorCheck::of(anchor(&m3), Some(&manifest(3, [8; 32]))),
            AnchorCheck::Differs
        );
        assert_eq!(
            AnchorCheck::of(anchor(&m3), Some(&manifest(5, m4.digest()))),
            AnchorCheck::Differs
        );
    }
}
