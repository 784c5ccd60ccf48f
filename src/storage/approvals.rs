//! Dual control's pending approvals, MACed like the other rows that grant power.

use diesel::prelude::*;

use super::schema::approvals;
use super::{AuditEntry, StorageError, Store};

/// An irreversible operation one operator asked for.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = approvals)]
pub struct ApprovalRow {
    /// Random, 16 hex characters.
    pub id: String,
    /// `master.shred` or `kek.destroy`.
    pub operation: String,
    /// The master's namespace; empty for a KEK.
    pub namespace: String,
    pub version: i64,
    pub requested_by: String,
    pub requested_at: i64,
    pub expires_at: i64,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
}

impl Store {
    pub fn insert_approval(
        &self,
        row: &ApprovalRow,
        audit: &AuditEntry,
    ) -> Result<(), StorageError> {
        self.write(audit, |c| {
            diesel::insert_into(approvals::table)
                .values(row)
                .execute(c)?;
            self.remac_approval(c, &row.id)
        })
    }

    /// Approval `id`, if it exists; `Integrity` if its row is not one zkvault wrote.
    pub fn approval(&self, id: &str) -> Result<Option<ApprovalRow>, StorageError> {
        let mut conn = self.conn()?;
        approvals::table
            .find(id)
            .select((ApprovalRow::as_select(), approvals::mac))
            .first(&mut *conn)
            .optional()?
            .map(|r| self.checked(r))
            .transpose()
    }

    /// Makes approval `id`, decided by `by`, undecided again: what it carried out failed.
    pub fn release_approval(
        &self,
        id: &str,
        by: &str,
        audit: &AuditEntry,
    ) -> Result<bool, StorageError> {
        self.write_if_any(audit, |c| {
            self.approval_in(c, id)?;
            let n = diesel::update(
                approvals::table
                    .filter(approvals::id.eq(id))
                    .filter(approvals::decided_by.eq(by)),
            )
            .set((
                approvals::decided_by.eq(None::<String>),
                approvals::decided_at.eq(None::<i64>),
            ))
            .execute(c)?;
            if n > 0 {
                self.remac_approval(c, id)?;
            }
            Ok(n)
        })
    }

    /// Marks approval `id` decided by `by` at `now`, if it is still undecided, unexpired and
    /// was not requested by `by`; `false` otherwise. One statement, so two approvers racing
    /// cannot both carry it out.
    pub fn decide_approval(
        &self,
        id: &str,
        by: &str,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<bool, StorageError> {
        self.write_if_any(audit, |c| {
            // A forged approval (another requester written in, say) is refused, not carried out.
            self.approval_in(c, id)?;
            let n = diesel::update(
                approvals::table
                    .filter(approvals::id.eq(id))
                    .filter(approvals::decided_by.is_null())
                    .filter(approvals::expires_at.gt(now))
                    .filter(approvals::requested_by.ne(by)),
            )
            .set((approvals::decided_by.eq(by), approvals::decided_at.eq(now)))
            .execute(c)?;
            if n > 0 {
                self.remac_approval(c, id)?;
            }
            Ok(n)
        })
    }
}
