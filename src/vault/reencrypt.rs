//! Moving records to the active master: lazily after a read, and in bulk for resident IDs a
//! caller supplies (the service cannot list residents: that is the zero-knowledge property).
//!
//! A record under a healthy old master is *rewrapped*: its 48-byte DEK envelope changes, the
//! body bytes do not. A record under a compromised master is *re-keyed*: a fresh DEK and the
//! body re-encrypted, because whoever holds that master may hold the old DEK.

use std::collections::HashMap;

use serde::Serialize;
use zkvault_core::{rekey, rewrap, DekEnvelope, RecordContext, SealedRecord};

use super::records::{sealed_of, ResidentKeys};
use super::{Actor, Grant, MasterState, Role, Vault, VaultError};
use crate::storage::{RecordMove, RecordRow, StorageError};

/// Most resident IDs one bulk call takes.
pub const MAX_REENCRYPT_IDS: usize = 1000;

/// How often a bulk batch is planned again after the masters changed under it.
const PLAN_ATTEMPTS: usize = 3;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReencryptReport {
    /// Records rewrapped to the active master (body untouched).
    pub moved: usize,
    /// Records re-keyed away from a compromised master (new DEK, new body ciphertext).
    pub rekeyed: usize,
    /// Records already under the active master.
    pub already_current: usize,
    /// Resident IDs with no record in the namespace.
    pub not_found: usize,
    /// Records whose master was destroyed (crypto-shredded): nothing left to move. Left out
    /// when zero, so the HTTP answer is unchanged for clients that compare it whole.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shredded: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A record's move: rewrap its DEK envelope, or re-key the whole sealed record.
enum How<'a> {
    Rewrap(&'a DekEnvelope),
    Rekey(&'a SealedRecord),
}

/// What should happen to a record under `version`, given the namespace's masters.
enum Action {
    Stay,
    Rewrap,
    Rekey,
    /// Its master was destroyed: nothing left to move.
    Lost,
}

impl Vault {
    fn action_for(&self, ns: &str, version: u32, active: u32) -> Result<Action, VaultError> {
        if version == active {
            return Ok(Action::Stay);
        }
        let states = self.keyring().master_states(ns)?;
        let meta = states
            .iter()
            .find(|m| m.version == version)
            .ok_or(VaultError::Integrity)?;
        Ok(match (meta.state, meta.compromised) {
            (MasterState::Destroyed, _) => Action::Lost,
            (_, true) => Action::Rekey,
            _ => Action::Rewrap,
        })
    }

    /// The update that moves one record (at `id`, named `name`, at `revision`) to master `active`.
    fn plan_move(
        &self,
        ns: &str,
        keys: &ResidentKeys,
        at: (&[u8], &str, i64),
        active: u32,
        how: How,
    ) -> Result<RecordMove, VaultError> {
        let (id, name, revision) = at;
        let record_id: [u8; 16] = id.try_into().map_err(|_| VaultError::Integrity)?;
        let ctx = RecordContext {
            namespace: ns,
            blind_index: &keys.blind_index,
            record_name: name,
            record_id: &record_id,
        };
        let from_version = match &how {
            How::Rewrap(dek) => dek.master_version,
            How::Rekey(sealed) => sealed.dek.master_version,
        };
        let from = self.resident_key(ns, keys, from_version)?;
        let to = self.resident_key(ns, keys, active)?;
        let (dek, new_body) = match how {
            How::Rewrap(dek) => (rewrap(&from, &to, active, &ctx, dek)?, None),
            How::Rekey(sealed) => {
                let fresh = rekey(&from, &to, active, &ctx, sealed)?;
                (
                    fresh.dek,
                    Some((fresh.body_nonce.to_vec(), fresh.body_ciphertext)),
                )
            }
        };
        Ok(RecordMove {
            id: id.to_vec(),
            revision,
            from_version: from_version as i32,
            to_version: active as i32,
            dek_nonce: dek.nonce.to_vec(),
            wrapped_dek: dek.wrapped.to_vec(),
            new_body,
        })
    }

    /// After a successful read: re-key a record of a compromised master, or (if the namespace's
    /// policy says so) rewrap one of an old master. A failure here never fails the read; the
    /// record stays readable where it is and moves on a later read or bulk pass.
    pub(super) fn move_after_read(
        &self,
        actor: &Actor,
        ns: &str,
        keys: &ResidentKeys,
        row: &RecordRow,
        sealed: &SealedRecord,
    ) {
        let result = (|| {
            let active = self.keyring().active_version(ns)?;
            let rekeying = match self.action_for(ns, row.master_version as u32, active)? {
                Action::Rekey => true,
                Action::Rewrap
                    if self
                        .policy()
                        .namespace(ns)
                        .is_some_and(|p| p.lazy_reencrypt) =>
                {
                    false
                }
                _ => return Ok(()),
            };
            let how = if rekeying {
                How::Rekey(sealed)
            } else {
                How::Rewrap(&sealed.dek)
            };
            let mv = self.plan_move(ns, keys, (&row.id, &row.name, row.revision), active, how)?;
            let mut entry = actor.entry(move_operation(rekeying), ns, row.name.clone());
            entry.resident_tag = keys.tag.clone();
            match self.store().move_records(ns, &[mv], &entry) {
                // Planned on a stale view of the masters: nothing moved; a later read moves it.
                Err(StorageError::MasterChanged) => self.keyring().forget_all(),
                other => drop(other?),
            }
            Ok::<_, VaultError>(())
        })();
        if let Err(e) = result {
            tracing::warn!(namespace = ns, error = %e, "lazy re-encryption skipped");
        }
    }

    /// Moves every record of the given residents to the active master (≤ 1000 IDs a call).
    /// Idempotent: a second call finds them `already_current`.
    pub fn reencrypt(
        &self,
        grant: &Grant,
        raw_ids: &[impl AsRef<str>],
    ) -> Result<ReencryptReport, VaultError> {
        let (ns, actor) = (grant.namespace(Role::Reencrypt)?, grant.actor());
        self.audited_read(
            actor.entry(
                "records.reencrypt",
                ns,
                format!("{} resident ids", raw_ids.len()),
            ),
            |entry| {
                let report = self.reencrypt_batch(actor, ns, raw_ids)?;
                entry.detail = format!(
                    "moved={} rekeyed={} already_current={} not_found={}",
                    report.moved, report.rekeyed, report.already_current, report.not_found
                );
                Ok(report)
            },
        )
    }

    /// Plans and applies one batch; planned on a view of the masters that changed before it
    /// committed (nothing of that step applied), it is planned again from the new one. Moves
    /// committed before the change stay counted, and are not counted again as current.
    fn reencrypt_batch(
        &self,
        actor: &Actor,
        ns: &str,
        raw_ids: &[impl AsRef<str>],
    ) -> Result<ReencryptReport, VaultError> {
        let mut done = Committed::default();
        for _ in 0..PLAN_ATTEMPTS {
            match self.reencrypt_planned(actor, ns, raw_ids, &mut done) {
                Err(VaultError::Conflict(_)) => self.keyring().forget_all(),
                other => return other,
            }
        }
        Err(VaultError::Conflict(
            "the namespace's masters kept changing during re-encryption; retry".into(),
        ))
    }

    fn reencrypt_planned(
        &self,
        actor: &Actor,
        ns: &str,
        raw_ids: &[impl AsRef<str>],
        done: &mut Committed,
    ) -> Result<ReencryptReport, VaultError> {
        if raw_ids.len() > MAX_REENCRYPT_IDS {
            return Err(VaultError::BadInput(format!(
                "at most {MAX_REENCRYPT_IDS} resident IDs per call, got {}",
                raw_ids.len()
            )));
        }
        let residents = raw_ids
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                self.resident(ns, raw.as_ref()).map_err(|e| match e {
                    VaultError::BadInput(m) => {
                        VaultError::BadInput(format!("resident_ids[{i}]: {m}"))
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let by_index: HashMap<&[u8; 32], &ResidentKeys> = residents
            .iter()
            .map(|k| (k.blind_index.as_bytes(), k))
            .collect();
        let blind_indexes: Vec<Vec<u8>> = by_index.keys().map(|b| b.to_vec()).collect();
        let rows = self.store().record_keys_of(ns, &blind_indexes)?;
        let active = self.keyring().active_version(ns)?;

        // Counts of this attempt's view; only moves are committed (and kept) as they happen.
        let mut seen = ReencryptReport::default();
        let mut rewraps = Vec::new();
        let mut rekeys = RekeyChunk::default();
        let mut found = std::collections::HashSet::new();
        for row in rows {
            let bi: [u8; 32] = row
                .blind_index
                .as_slice()
                .try_into()
                .map_err(|_| VaultError::Integrity)?;
            let keys = by_index.get(&bi).ok_or(VaultError::Integrity)?;
            found.insert(bi);
            match self.action_for(ns, row.master_version as u32, active)? {
                Action::Stay if done.ids.contains(&row.id) => {}
                Action::Stay => seen.already_current += 1,
                Action::Lost => seen.shredded += 1,
                Action::Rewrap => {
                    let dek = DekEnvelope::from_stored(
                        row.master_version as u32,
                        &row.dek_nonce,
                        &row.wrapped_dek,
                    )?;
                    rewraps.push(self.plan_move(
                        ns,
                        keys,
                        (&row.id, &row.name, row.revision),
                        active,
                        How::Rewrap(&dek),
                    )?);
                }
                Action::Rekey => {
                    // Re-keying needs the body: fetched for these records only, and committed
                    // every REKEY_CHUNK_BYTES so a batch of large records is bounded in memory
                    // and in transaction size.
                    let Some(mut full) = self.store().record_by_id(&row.id)? else {
                        continue;
                    };
                    let (sealed, _) = sealed_of(&mut full)?;
                    rekeys.bytes += sealed.body_ciphertext.len();
                    rekeys.moves.push(self.plan_move(
                        ns,
                        keys,
                        (&row.id, &row.name, full.revision),
                        active,
                        How::Rekey(&sealed),
                    )?);
                    if rekeys.bytes >= REKEY_CHUNK_BYTES {
                        self.commit_moves(
                            actor,
                            ns,
                            true,
                            &std::mem::take(&mut rekeys).moves,
                            done,
                        )?;
                    }
                }
            }
        }
        self.commit_moves(actor, ns, false, &rewraps, done)?;
        self.commit_moves(actor, ns, true, &rekeys.moves, done)?;
        seen.not_found = by_index.len() - found.len();
        Ok(ReencryptReport {
            moved: done.report.moved,
            rekeyed: done.report.rekeyed,
            already_current: done.report.already_current + seen.already_current,
            not_found: seen.not_found,
            shredded: seen.shredded,
        })
    }

    /// Applies `moves` (re-keys if `rekey`, else rewraps) in one transaction with one audit
    /// entry, and counts them in `done`.
    fn commit_moves(
        &self,
        actor: &Actor,
        ns: &str,
        rekey: bool,
        moves: &[RecordMove],
        done: &mut Committed,
    ) -> Result<(), VaultError> {
        if moves.is_empty() {
            return Ok(());
        }
        let applied = self.store().move_records(
            ns,
            moves,
            &actor.entry(
                move_operation(rekey),
                ns,
                format!("{} records", moves.len()),
            ),
        )?;
        if rekey {
            done.report.rekeyed += applied;
        } else {
            done.report.moved += applied;
        }
        // A move that found its record changed lost a race with a read (lazy move) or a write,
        // both of which leave the record under the active master.
        done.report.already_current += moves.len() - applied;
        done.ids.extend(moves.iter().map(|m| m.id.clone()));
        Ok(())
    }
}

/// The audit operation of a move: a re-key (new DEK and body) or a rewrap (new DEK envelope).
fn move_operation(rekey: bool) -> &'static str {
    if rekey {
        "record.rekey"
    } else {
        "record.rewrap"
    }
}

/// Body bytes of re-keyed records committed together at most (plus one record).
const REKEY_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// Re-keys planned and not yet committed.
#[derive(Default)]
struct RekeyChunk {
    moves: Vec<RecordMove>,
    bytes: usize,
}

/// What a bulk batch has committed so far, across planning attempts.
#[derive(Default)]
struct Committed {
    report: ReencryptReport,
    ids: std::collections::HashSet<Vec<u8>>,
}
