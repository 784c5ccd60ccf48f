//! Sealed records, addressed by `(namespace, blind_index, name)`.

use diesel::connection::SimpleConnection;
use diesel::dsl::count_star;
use diesel::prelude::*;
use sha2::{Digest, Sha256};

use super::conn::{on_backend, AnyConnection};
use super::group_commit::{RecordChange, Write};
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

    /// Applies `change` inside a batch's transaction; the rows it affected. The caller has
    /// locked out master changes for the transaction (see [`Store::commit_batch`]), so the
    /// master is checked before the change and nothing needs undoing when it fails.
    pub(super) fn apply_change(
        &self,
        c: &mut AnyConnection,
        change: &RecordChange,
        masters: &mut MasterChecks,
    ) -> Result<u64, StorageError> {
        let (namespace, blind_index) = change.resident();
        lock_resident(c, namespace, blind_index)?;
        let rows = match change {
            RecordChange::Insert(row) => {
                masters.require(self, c, &row.namespace, row.master_version)?;
                let n = on_backend!(c, |c| diesel::insert_into(records::table)
                    .values(row)
                    .on_conflict_do_nothing()
                    .execute(c))?;
                if n == 0 {
                    return Err(StorageError::Conflict);
                }
                n
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
/// lock (a 32-bit hash): that only makes them wait for each other.
fn lock_resident(
    c: &mut AnyConnection,
    namespace: &str,
    blind_index: &[u8],
) -> Result<(), StorageError> {
    let AnyConnection::Pg(pg) = c else {
        return Ok(());
    };
    let key = resident_lock_key(namespace, blind_index);
    pg.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({RESIDENT_LOCKS}, {key})"
    ))?;
    Ok(())
}

/// The key of `lock_resident`'s lock for one resident. A batch takes its residents' locks in
/// the order of these keys, so two batches (two instances) never wait on each other in a cycle.
pub(super) fn resident_lock_key(namespace: &str, blind_index: &[u8]) -> i32 {
    let mut h = Sha256::new();
    h.update((namespace.len() as u32).to_be_bytes());
    h.update(namespace.as_bytes());
    h.update(blind_index);
    let digest = h.finalize();
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The class of [`lock_resident`]'s two-key advisory locks (the single-key ones in
/// [`super::Advisory`] are another space).
const RESIDENT_LOCKS: i32 = 0x7a6b_0001;
