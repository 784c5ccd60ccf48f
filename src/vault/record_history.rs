//! Rollback of a single record: a database writer puts back an older authentic row of one
//! record (from a backup), or deletes one, or restores one deleted since. Every row it could
//! put back decrypts, so the row alone cannot tell. The audit trail can: every write of a
//! record is logged with the revision it wrote (`revision N` in the entry's detail), and
//! every deletion, in the same transaction as the change. `audit verify` folds the trail into
//! each record's last logged state and compares it with the records table.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::audit::AuditBreak;
use super::{Vault, VaultError};
use crate::storage::{AuditEntry, AuditRow, RecordPosition};

/// The detail of a record write's audit entry names the revision and the ETag it wrote (a
/// fresh random ETag per write, so a record deleted and made again, whose revisions start over,
/// is still told from its older copies).
pub(super) fn with_revision(entry: &AuditEntry, revision: i64, etag: &str) -> AuditEntry {
    let mut logged = entry.clone();
    logged.detail = match entry.detail.as_str() {
        "" => format!("revision {revision} etag {etag}"),
        why => format!("{why}; revision {revision} etag {etag}"),
    };
    logged
}

/// The revision and, if logged, the ETag a write's detail names (16 hex digits, kept as the
/// 8 bytes they spell: a verification holds one per record ever written).
fn logged_write(detail: &str) -> Option<(i64, Option<u64>)> {
    let logged = detail.rsplit("; ").next()?.strip_prefix("revision ")?;
    match logged.split_once(" etag ") {
        Some((revision, etag)) => Some((revision.parse().ok()?, etag_bits(etag))),
        None => Some((logged.parse().ok()?, None)),
    }
}

fn etag_bits(etag: &str) -> Option<u64> {
    (etag.len() == 16).then(|| u64::from_str_radix(etag, 16).ok())?
}

/// A record, as both the trail and the table name it: namespace, resident tag, record name
/// (or a resident: namespace and tag).
type Key = [u8; 16];

fn key(parts: &[&str]) -> Key {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize()[..16].try_into().expect("16 of 32 bytes")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    /// Revision, and ETag where logged.
    Wrote(i64, Option<u64>),
    /// Written before revisions were logged.
    WroteUnknown,
    Deleted,
}

/// When an entry was appended: its time (covered by its hash), then its row id (which is not,
/// so it only breaks ties within a millisecond).
type When = (i64, i64);

/// Each record's last logged change, and each resident's last erasure.
#[derive(Default)]
pub(super) struct RecordHistory {
    /// Record → (when, change, its resident).
    last: HashMap<Key, (When, Last, Key)>,
    erased: HashMap<Key, When>,
}

impl RecordHistory {
    pub fn observe(&mut self, row: &AuditRow) {
        let e = &row.entry;
        let when = (e.at, row.id);
        if (e.operation.as_str(), e.outcome.as_str()) == ("resident.erase", "ok") {
            let at = self
                .erased
                .entry(key(&[&e.namespace, &e.resident_tag]))
                .or_insert(when);
            *at = when.max(*at);
            return;
        }
        let change = match (e.operation.as_str(), e.outcome.as_str()) {
            ("record.put", "ok") => logged_write(&e.detail)
                .map_or(Last::WroteUnknown, |(revision, etag)| {
                    Last::Wrote(revision, etag)
                }),
            ("record.delete", "ok") => Last::Deleted,
            _ => return,
        };
        let resident = key(&[&e.namespace, &e.resident_tag]);
        let slot = self
            .last
            .entry(key(&[&e.namespace, &e.resident_tag, &e.target]))
            .or_insert((when, change, resident));
        if when >= slot.0 {
            *slot = (when, change, resident);
        }
    }

    fn erased_after(&self, resident: &Key, at: When) -> bool {
        self.erased.get(resident).is_some_and(|e| *e > at)
    }

    /// The record's last change, a resident's erasure after its last write counting as a
    /// deletion.
    fn last_of(&self, namespace: &str, tag: &str, name: &str) -> Option<Last> {
        let (at, last, resident) = self.last.get(&key(&[namespace, tag, name]))?;
        Some(match self.erased_after(resident, *at) {
            true => Last::Deleted,
            false => *last,
        })
    }
}

const PAGE: i64 = 5_000;

/// How often a record that seems wrong is read again before it is reported.
const RECHECKS: usize = 5;

impl Vault {
    /// Every record row against its last logged change: the first record rolled back,
    /// deleted or restored outside zkvault, and how many records were checked.
    ///
    /// The service keeps writing meanwhile. A record that seems wrong is read again, and the
    /// entries appended since the verification began (`since`, less a margin) are folded in
    /// first: only if it is still wrong is it reported. A record missing is looked for again
    /// if it was written while this ran (the scan may have passed its place).
    pub(super) fn check_records(
        &self,
        mut history: RecordHistory,
        since: i64,
    ) -> Result<(u64, Option<AuditBreak>), VaultError> {
        let mut checked = 0u64;
        let problem = self.each_record(|row| {
            checked += 1;
            let (mut problem, record) = self.judge(&history, row)?;
            // Changed while this ran? The trail as it is now, then the row as it is now, a few
            // times over (a write may commit between the two reads): a rollback stays wrong, a
            // busy record settles.
            for _ in 0..RECHECKS {
                if problem.is_none() {
                    break;
                }
                self.fold_since(&mut history, since)?;
                problem = match self.store().record_position(&row.id)? {
                    Some(now) => self.judge(&history, &now)?.0,
                    None => None, // deleted meanwhile: judged with the missing ones below
                };
            }
            // Found: never counted missing (a later entry folded in is recent, see below).
            history.last.remove(&record);
            Ok(problem)
        })?;
        if problem.is_some() {
            return Ok((checked, problem));
        }
        self.fold_since(&mut history, since)?;
        let mut missing: HashMap<Key, When> = history
            .last
            .iter()
            .filter(|(_, (when, last, resident))| {
                matches!(last, Last::Wrote(..) | Last::WroteUnknown)
                    && !history.erased_after(resident, *when)
            })
            .map(|(record, (when, _, _))| (*record, *when))
            .collect();
        // One written while this ran may have been made behind the scan: look again.
        if missing.values().any(|when| when.0 >= since) {
            self.each_record(|row| {
                missing.remove(&self.judge(&history, row)?.1);
                Ok(None)
            })?;
        }
        let problem = (!missing.is_empty()).then(|| AuditBreak {
            chain: "records".into(),
            seq: 0,
            reason: "a record written through zkvault and never deleted through it is missing: deleted outside zkvault".into(),
        });
        Ok((checked, problem))
    }

    /// Runs `each` over every record, in id order, until it finds something wrong.
    fn each_record(
        &self,
        mut each: impl FnMut(&RecordPosition) -> Result<Option<AuditBreak>, VaultError>,
    ) -> Result<Option<AuditBreak>, VaultError> {
        let mut after = Vec::new();
        loop {
            let page = self.store().record_positions(&after, PAGE)?;
            let Some(last) = page.last() else {
                return Ok(None);
            };
            after = last.id.clone();
            for row in &page {
                if let Some(problem) = each(row)? {
                    return Ok(Some(problem));
                }
            }
        }
    }

    /// What is wrong with `row` against its last logged change, if anything, and the record's
    /// key in the history.
    fn judge(
        &self,
        history: &RecordHistory,
        row: &RecordPosition,
    ) -> Result<(Option<AuditBreak>, Key), VaultError> {
        let broken = |reason: String| {
            Some(AuditBreak {
                chain: "records".into(),
                seq: 0,
                reason: format!("record {} in {}: {reason}", row.name, row.namespace),
            })
        };
        let unkeyed = key(&[&row.namespace, "", &row.name]);
        let ik = match self.keyring().index_key(&row.namespace) {
            Err(VaultError::NotFound) => {
                let reason = "in a namespace without keys: written outside zkvault";
                return Ok((broken(reason.into()), unkeyed));
            }
            other => other?,
        };
        let Some(bi) = zkvault_core::BlindIndex::from_slice(&row.blind_index) else {
            let reason = "its blind index is malformed: written outside zkvault";
            return Ok((broken(reason.into()), unkeyed));
        };
        let tag = hex::encode(ik.audit_tag(&bi));
        let record = key(&[&row.namespace, &tag, &row.name]);
        let problem = match history.last_of(&row.namespace, &tag, &row.name) {
            Some(Last::Wrote(_, Some(etag))) if etag_bits(&row.etag) != Some(etag) => broken(format!(
                "holds ETag {}, but the last write made {etag:016x}: an older copy was put back, or it was written outside zkvault",
                row.etag
            )),
            Some(Last::Wrote(r, _)) if r > row.revision => broken(format!(
                "at revision {}, but revision {r} was written: an older copy was put back",
                row.revision
            )),
            Some(Last::Wrote(r, _)) if r < row.revision => broken(format!(
                "at revision {}, but only revision {r} was written: written outside zkvault",
                row.revision
            )),
            Some(Last::Deleted) => broken("deleted, but the row is back: restored from a backup".into()),
            _ => None,
        };
        Ok((problem, record))
    }

    /// Folds in the entries appended since `since` (some the walk may have missed).
    fn fold_since(&self, history: &mut RecordHistory, since: i64) -> Result<(), VaultError> {
        let mut after = 0;
        loop {
            let filter = crate::storage::AuditFilter {
                since: Some(since),
                after_id: after,
                limit: PAGE,
                ..Default::default()
            };
            let recent = self.store().audit_page(&filter)?;
            let Some(last) = recent.last() else {
                return Ok(());
            };
            after = last.id;
            recent.iter().for_each(|row| history.observe(row));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_revision_and_etag_are_read_back_from_the_detail() {
        let entry = AuditEntry::default();
        let logged = with_revision(&entry, 7, "00000000000000ab");
        assert_eq!(logged_write(&logged.detail), Some((7, Some(0xab))));
        let why = AuditEntry {
            detail: "ticket 12; revision 3 etag 99".into(),
            ..AuditEntry::default()
        };
        let logged = with_revision(&why, 4, "00000000000000cd");
        assert_eq!(logged_write(&logged.detail), Some((4, Some(0xcd))));
        assert_eq!(logged_write("revision 4 etag xyz"), Some((4, None)));
        assert_eq!(logged_write("revision 5"), Some((5, None)));
        assert_eq!(logged_write("ticket 12"), None);
        assert_eq!(logged_write(""), None);
    }
}
