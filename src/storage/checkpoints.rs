//! Chained audit checkpoints ("manifests") and the chain heads the newest one saw ("marks").
//! Storage keeps the bytes; what they mean and whether they are authentic is the vault's.

use diesel::prelude::*;

use super::schema::{audit_checkpoints, audit_manifests, audit_marks};
use super::{StorageError, Store};

/// One checkpoint as stored (see `vault::checkpoints` for its fields' meaning).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_manifests)]
pub struct ManifestRow {
    pub counter: i64,
    pub at: i64,
    pub prev: Vec<u8>,
    pub heads_digest: Vec<u8>,
    pub moved: Vec<u8>,
    pub rollback_from: Option<i64>,
    pub mac: Vec<u8>,
}

/// A chain's head as the newest checkpoint saw it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_marks)]
pub struct MarkRow {
    pub chain: String,
    pub seq: i64,
    pub hash: Vec<u8>,
}

impl Store {
    pub fn newest_manifest(&self) -> Result<Option<ManifestRow>, StorageError> {
        let mut conn = self.conn()?;
        Ok(audit_manifests::table
            .order(audit_manifests::counter.desc())
            .select(ManifestRow::as_select())
            .first(&mut *conn)
            .optional()?)
    }

    /// Up to `limit` checkpoints with `counter > after`, oldest first.
    pub fn manifests_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ManifestRow>, StorageError> {
        let mut conn = self.conn()?;
        Ok(audit_manifests::table
            .filter(audit_manifests::counter.gt(after))
            .order(audit_manifests::counter.asc())
            .limit(limit)
            .select(ManifestRow::as_select())
            .load(&mut *conn)?)
    }

    pub fn audit_marks(&self) -> Result<Vec<MarkRow>, StorageError> {
        let mut conn = self.conn()?;
        Ok(audit_marks::table
            .order(audit_marks::chain.asc())
            .select(MarkRow::as_select())
            .load(&mut *conn)?)
    }

    /// Stores a checkpoint, the marks of the chains it saw move, and deletes the first-format
    /// checkpoints `retired` (checked by this one), in one transaction. `Conflict` if the
    /// counter is taken.
    pub fn commit_manifest(
        &self,
        manifest: &ManifestRow,
        moved: &[MarkRow],
        retired: &[i64],
    ) -> Result<(), StorageError> {
        let mut conn = self.conn()?;
        conn.transaction(|c| {
            diesel::insert_into(audit_manifests::table)
                .values(manifest)
                .execute(c)?;
            for mark in moved {
                diesel::delete(audit_marks::table.find(&mark.chain)).execute(c)?;
                diesel::insert_into(audit_marks::table)
                    .values(mark)
                    .execute(c)?;
            }
            diesel::delete(audit_checkpoints::table.filter(audit_checkpoints::id.eq_any(retired)))
                .execute(c)?;
            Ok(())
        })
    }
}
