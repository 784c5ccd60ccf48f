//! Sealed records, addressed by `(namespace, blind_index, name)`.

use diesel::dsl::count_star;
use diesel::prelude::*;
use sha2::{Digest, Sha256};

use super::conn::{on_backend, AnyConnection};
use super::group_commit::{Outcome, RecordChange, Write};
use super::schema::records;
use super::{AuditEntry, RecordMeta, RecordRow, StorageError, Store};
use crate::states::MasterUse;

/// The masters a batch has found open for writing (they cannot change before it commits).
#[derive(Default)]
pub(super) struct MasterChecks(std::collections::HashSet<(String, i32)>);

impl MasterChecks {
    fn require(
        &mut self,
        store: &Store,
        c: &mut AnyConnection,
        namespace: &str,
        version: i32,
    ) -> Result<(), StorageError> {
        let key = (namespace.to_owned(), version);
        if !self.0.contains(&key) {
            store.require_master(c, namespace, version, MasterUse::WriteTo)?;
            self.0.insert(key);
        }
        Ok(())
    }
}

impl Store {
    pub fn record(
        &self,
        namespace: &str,
        blind_index: &[u8],
        name: &str,
    ) -> Result<Option<RecordRow>, StorageError> {
        let mut conn = self.conn()?;
        // `get_result`, not `first`: `first` binds `LIMIT ?`, and SQLite re-parses and re-plans a
        // statement whose LIMIT is a bound parameter on every execution (about a third of the
        // server's CPU on a GET). The unique (namespace, blind_index, name) key gives ≤ 1 row.
        Ok(records::table
            .filter(records::namespace.eq(namespace))
            .filter(records::blind_index.eq(blind_index))
            .filter(records::name.eq(name))
            .select(RecordRow::as_select())
            .get_result(&mut *conn)
            .optional()?)
    }

    /// `Conflict` if `(namespace, blind_index, name)` (or the id) exists; `MasterChanged` if
    /// the row's master is no longer the active one (a caller with a stale view of the masters
    /// must not write under one that is being destroyed).
    pub fn insert_record(&self, row: &RecordRow, audit: &AuditEntry) -> Result<(), StorageError> {
        self.commit_change(RecordChange::Insert(row.clone()), audit)
            .map(drop)
    }

    /// Optimistic replace: overwrites every column but `id` where `id = row.id AND revision =
    /// expected_revision`; `Ok(false)` if nothing matched. The caller carries `created_at`
    /// forward and bumps `revision`. Changing `blind_index`/`name` onto an existing record's
    /// key is a `Conflict`; `MasterChanged` as for [`Store::insert_record`].
    pub fn replace_record(
        &self,
        row: &RecordRow,
        expected_revision: i64,
        audit: &AuditEntry,
    ) -> Result<bool, StorageError> {
        let change = RecordChange::Replace {
            row: row.clone(),
            expected_revision,
        };
        Ok(self.commit_change(change, audit)? > 0)
    }

    /// `Ok(false)` if there was no such record.
    pub fn delete_record(
        &self,
        namespace: &str,
        blind_index: &[u8],
        name: &str,
        audit: &AuditEntry,
    ) -> Result<bool, StorageError> {
        let change = RecordChange::Delete {
            namespace: namespace.to_owned(),
            blind_index: blind_index.to_vec(),
            name: name.to_owned(),
        };
        Ok(self.commit_change(change, audit)? > 0)
    }

    /// The resident's records ordered by name (bytewise on both backends); no key or
    /// ciphertext column is read.
    pub fn list_records(
        &self,
        namespace: &str,
        blind_index: &[u8],
    ) -> Result<Vec<RecordMeta>, StorageError> {
        let mut conn = self.conn()?;
        Ok(records::table
            .filter(records::namespace.eq(namespace))
            .filter(records::blind_index.eq(blind_index))
            .order(records::name.asc())
            .select(RecordMeta::as_select())
            .load(&mut *conn)?)
    }

    /// Deletes all of the resident's records in the namespace; returns how many.
    pub fn erase_resident(
        &self,
        namespace: &str,
        blind_index: &[u8],
        audit: &AuditEntry,
    ) -> Result<u64, StorageError> {
        let change = RecordChange::Erase {
            namespace: namespace.to_owned(),
            blind_index: blind_index.to_vec(),
        };
        self.commit_change(change, audit)
    }

    /// Commits `change` and its entry in the next batch (see [`super::group_commit`]).
    fn commit_change(&self, change: RecordChange, audit: &AuditEntry) -> Result<u64, StorageError> {
        let write = Write {
            entry: audit.clone(),
            change: Some(change),
        };
        self.group.submit(self, write)
    }

    /// Applies a batch's record changes inside its transaction: each write's outcome, in order
    /// (`Ok(0)` for an entry alone). `Err` only for a failure that spoils the transaction.
    ///
    /// The caller has locked out master changes for the transaction (see
    /// [`Store::commit_batch`]), so each master is checked once, before the changes, and a
    /// refused change leaves nothing to undo. On PostgreSQL the residents' locks are taken
    /// together, in key order, and the new records of residents with no other change in the
    /// batch go in one `INSERT` (one round trip instead of one each); should one of them
    /// already exist, the batch fails and each write is retried alone, which names the one
    /// that conflicts. SQLite runs in-process: there every change is applied on its own.
    pub(super) fn apply_changes(
        &self,
        c: &mut AnyConnection,
        writes: &[Write],
    ) -> Result<Vec<Outcome>, StorageError> {
        let key_of: Vec<Option<i32>> = writes
            .iter()
            .map(|w| {
                let (namespace, blind_index) = w.change.as_ref()?.resident();
                Some(resident_lock_key(namespace, blind_index))
            })
            .collect();
        let mut keys: Vec<i32> = key_of.iter().flatten().copied().collect();
        keys.sort_unstable();
        let alone = |key: i32| {
            keys.partition_point(|k| *k < key) + 1 == keys.partition_point(|k| *k <= key)
        };
        let in_one_insert = matches!(c, AnyConnection::Pg(_));
        let mut masters = MasterChecks::default();
        let mut outcomes: Vec<Option<Outcome>> = writes.iter().map(|_| None).collect();
        let mut new_rows = Vec::new();
        for (i, (w, key)) in writes.iter().zip(&key_of).enumerate() {
            match (&w.change, key) {
                (None, _) => outcomes[i] = Some(Ok(0)),
                (Some(RecordChange::Insert(row)), Some(key)) if in_one_insert && alone(*key) => {
                    match masters.require(self, c, &row.namespace, row.master_version) {
                        Ok(()) => {
                            new_rows.push(row);
                            outcomes[i] = Some(Ok(1));
                        }
                        Err(e) => outcomes[i] = Some(Err(e)),
                    }
                }
                _ => {}
            }
        }
        keys.dedup();
        if let AnyConnection::Pg(pg) = c {
            lock_residents(pg, &keys)?;
            if !new_rows.is_empty() {
                let asked = new_rows.len();
                let inserted = diesel::insert_into(records::table)
                    .values(new_rows)
                    .on_conflict_do_nothing()
                    .execute(pg)?;
                if inserted != asked {
                    return Err(StorageError::Conflict);
                }
            }
        }
        for (i, w) in writes.iter().enumerate() {
            if let (None, Some(change)) = (&outcomes[i], &w.change) {
                outcomes[i] = Some(match self.apply_change(c, change, &mut masters) {
                    Ok(0) if matches!(change, RecordChange::Insert(_)) => {
                        Err(StorageError::Conflict)
                    }
                    Ok(rows) => Ok(rows),
                    // A refusal that leaves the transaction usable: the write fails alone.
                    Err(e @ StorageError::MasterChanged) => Err(e),
                    Err(e) => return Err(e),
                });
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.expect("every write applied"))
            .collect())
    }

    /// Applies one change; the rows it affected.
    fn apply_change(
        &self,
        c: &mut AnyConnection,
        change: &RecordChange,
        masters: &mut MasterChecks,
    ) -> Result<u64, StorageError> {
        let rows = match change {
            RecordChange::Insert(row) => {
                masters.require(self, c, &row.namespace, row.master_version)?;
                // 0 if the record (or its id) exists: nothing to undo.
                on_backend!(c, |c| diesel::insert_into(records::table)
                    .values(row)
                    .on_conflict_do_nothing()
                    .execute(c))?
            }
            RecordChange::Replace {
                row,
                expected_revision,
            } => {
                masters.require(self, c, &row.namespace, row.master_version)?;
                diesel::update(
                    records::table
                        .filter(records::id.eq(&row.id))
                        .filter(records::revision.eq(expected_revision)),
                )
                .set(row)
                .execute(c)?
            }
            RecordChange::Delete {
                namespace,
                blind_index,
                name,
            } => diesel::delete(
                records::table
                    .filter(records::namespace.eq(namespace))
                    .filter(records::blind_index.eq(blind_index))
                    .filter(records::name.eq(name)),
            )
            .execute(c)?,
            RecordChange::Erase {
                namespace,
                blind_index,
            } => diesel::delete(
                records::table
                    .filter(records::namespace.eq(namespace))
                    .filter(records::blind_index.eq(blind_index)),
            )
            .execute(c)?,
        };
        Ok(rows as u64)
    }

    /// `(namespace, master_version, records)` for every pair with at least one record,
    /// ordered by namespace then version.
    pub fn count_records_by_master(&self) -> Result<Vec<(String, i32, i64)>, StorageError> {
        let mut conn = self.conn()?;
        Ok(records::table
            .group_by((records::namespace, records::master_version))
            .select((records::namespace, records::master_version, count_star()))
            .order((records::namespace.asc(), records::master_version.asc()))
            .load(&mut *conn)?)
    }
}

/// Where a record stands, for checking it against the audit trail: no key or body column.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = records)]
pub struct RecordPosition {
    pub id: Vec<u8>,
    pub namespace: String,
    pub blind_index: Vec<u8>,
    pub name: String,
    pub revision: i64,
    pub etag: String,
}

impl Store {
    /// Up to `limit` records with `id > after`, in id order.
    pub fn record_positions(
        &self,
        after: &[u8],
        limit: i64,
    ) -> Result<Vec<RecordPosition>, StorageError> {
        let mut conn = self.conn()?;
        Ok(records::table
            .filter(records::id.gt(after))
            .order(records::id.asc())
            .limit(limit)
            .select(RecordPosition::as_select())
            .load(&mut *conn)?)
    }

    /// Record `id` where it stands now, if it exists.
    pub fn record_position(&self, id: &[u8]) -> Result<Option<RecordPosition>, StorageError> {
        let mut conn = self.conn()?;
        Ok(records::table
            .find(id)
            .select(RecordPosition::as_select())
            .first(&mut *conn)
            .optional()?)
    }
}

/// On PostgreSQL, serialises the changes to one resident's records (writes, deletions, an
/// erasure) across instances until the transaction ends: an erasure then deletes every record
/// written before it, and the trail (appended last in each transaction) orders them as they
/// committed. SQLite serialises every write transaction already. Two residents may share a
/// lock (a 32-bit hash): that only makes them wait for each other. `keys` are sorted, and
/// `unnest` takes them in that order, so two batches (two instances) never wait on each other
/// in a cycle.
pub(super) fn lock_residents(
    pg: &mut diesel::PgConnection,
    keys: &[i32],
) -> Result<(), StorageError> {
    if keys.is_empty() {
        return Ok(());
    }
    diesel::sql_query(format!(
        "SELECT pg_advisory_xact_lock({RESIDENT_LOCKS}, k) FROM unnest($1::int4[]) AS k"
    ))
    .bind::<diesel::sql_types::Array<diesel::sql_types::Integer>, _>(keys)
    .execute(pg)?;
    Ok(())
}

/// The key of [`lock_residents`]'s lock for one resident.
pub(super) fn resident_lock_key(namespace: &str, blind_index: &[u8]) -> i32 {
    let mut h = Sha256::new();
    h.update((namespace.len() as u32).to_be_bytes());
    h.update(namespace.as_bytes());
    h.update(blind_index);
    let digest = h.finalize();
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The class of [`lock_residents`]'s two-key advisory locks (the single-key ones in
/// [`super::Advisory`] are another space).
const RESIDENT_LOCKS: i32 = 0x7a6b_0001;
