//! Sealed records, addressed by `(namespace, blind_index, name)`.

use diesel::connection::SimpleConnection;
use diesel::dsl::count_star;
use diesel::prelude::*;
use sha2::{Digest, Sha256};

use super::conn::AnyConnection;
use super::schema::records;
use super::{AuditEntry, RecordMeta, RecordRow, StorageError, Store};
use crate::states::MasterUse;

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
        self.write(audit, |c| {
            lock_resident(c, &row.namespace, &row.blind_index)?;
            diesel::insert_into(records::table).values(row).execute(c)?;
            self.require_master(c, &row.namespace, row.master_version, MasterUse::WriteTo)
        })
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
        self.write_if_any(audit, |c| {
            lock_resident(c, &row.namespace, &row.blind_index)?;
            let n = diesel::update(
                records::table
                    .filter(records::id.eq(&row.id))
                    .filter(records::revision.eq(expected_revision)),
            )
            .set(row)
            .execute(c)?;
            if n > 0 {
                self.require_master(c, &row.namespace, row.master_version, MasterUse::WriteTo)?;
            }
            Ok(n)
        })
    }

    /// `Ok(false)` if there was no such record.
    pub fn delete_record(
        &self,
        namespace: &str,
        blind_index: &[u8],
        name: &str,
        audit: &AuditEntry,
    ) -> Result<bool, StorageError> {
        self.write_if_any(audit, |c| {
            lock_resident(c, namespace, blind_index)?;
            Ok(diesel::delete(
                records::table
                    .filter(records::namespace.eq(namespace))
                    .filter(records::blind_index.eq(blind_index))
                    .filter(records::name.eq(name)),
            )
            .execute(c)?)
        })
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
        self.write(audit, |c| {
            lock_resident(c, namespace, blind_index)?;
            let n = diesel::delete(
                records::table
                    .filter(records::namespace.eq(namespace))
                    .filter(records::blind_index.eq(blind_index)),
            )
            .execute(c)?;
            Ok(n as u64)
        })
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
    let mut h = Sha256::new();
    h.update((namespace.len() as u32).to_be_bytes());
    h.update(namespace.as_bytes());
    h.update(blind_index);
    let digest = h.finalize();
    let key = i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    pg.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({RESIDENT_LOCKS}, {key})"
    ))?;
    Ok(())
}

/// The class of [`lock_resident`]'s two-key advisory locks (the single-key ones in
/// [`super::Advisory`] are another space).
const RESIDENT_LOCKS: i32 = 0x7a6b_0001;
