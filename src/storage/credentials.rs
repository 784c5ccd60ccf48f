//! API credentials (only the Argon2id hash of each secret is stored).

use diesel::prelude::*;

use super::schema::{credential_successors, credentials};
use super::{AuditEntry, CredentialListing, CredentialRow, StorageError, Store};

impl Store {
    /// `Conflict` if the id exists.
    pub fn insert_credential(
        &self,
        row: &CredentialRow,
        audit: &AuditEntry,
    ) -> Result<(), StorageError> {
        self.write(audit, |c| {
            diesel::insert_into(credentials::table)
                .values(row)
                .execute(c)?;
            self.remac_credential(c, &row.id)
        })
    }

    /// Credential `id`, if it exists; `Integrity` if its row is not one zkvault wrote. Not
    /// locked: authentication must never wait on a row another session holds.
    pub fn credential(&self, id: &str) -> Result<Option<CredentialRow>, StorageError> {
        let mut conn = self.conn()?;
        credentials::table
            .find(id)
            .select((CredentialRow::as_select(), credentials::mac))
            .first(&mut *conn)
            .optional()?
            .map(|r| self.checked(r))
            .transpose()
    }

    /// Credential `id`'s namespace scope as stored (`*`: all), if it exists.
    pub fn credential_scope(&self, id: &str) -> Result<Option<String>, StorageError> {
        let mut conn = self.conn()?;
        Ok(credentials::table
            .find(id)
            .select(credentials::namespaces)
            .first(&mut *conn)
            .optional()?)
    }

    /// Every credential (revoked ones included), oldest first, as stored: roles unparsed, so
    /// one damaged row neither hides the others nor stops the listing.
    pub fn credential_listing(&self) -> Result<Vec<CredentialListing>, StorageError> {
        let mut conn = self.conn()?;
        Ok(credentials::table
            .order((credentials::created_at.asc(), credentials::id.asc()))
            .select(CredentialListing::as_select())
            .load(&mut *conn)?)
    }

    /// The ids of credentials revoked or expired at `now`: all the revocation sync reads, so a
    /// row it could not parse cannot hold up every other revocation.
    pub fn lapsed_credentials(&self, now: i64) -> Result<Vec<String>, StorageError> {
        let mut conn = self.conn()?;
        Ok(credentials::table
            .filter(
                credentials::revoked_at
                    .is_not_null()
                    .or(credentials::expires_at.le(now)),
            )
            .select(credentials::id)
            .load(&mut *conn)?)
    }

    /// Records `successor` as the credential's successor and moves its expiry to `expires_at`
    /// (credential rotation's overlap window), together: `Ok(false)` if it is unknown or
    /// revoked, `Conflict` if it already has a successor.
    pub fn set_credential_successor(
        &self,
        id: &str,
        successor: &str,
        expires_at: i64,
        audit: &AuditEntry,
    ) -> Result<bool, StorageError> {
        self.write_if_any(audit, |c| {
            self.credential_in(c, id)?;
            diesel::insert_into(credential_successors::table)
                .values((
                    credential_successors::id.eq(id),
                    credential_successors::successor.eq(successor),
                ))
                .execute(c)?;
            let n = diesel::update(
                credentials::table
                    .filter(credentials::id.eq(id))
                    .filter(credentials::revoked_at.is_null()),
            )
            .set(credentials::expires_at.eq(Some(expires_at)))
            .execute(c)?;
            if n > 0 {
                self.remac_credential(c, id)?;
            }
            Ok(n)
        })
    }

    /// The successor a rotation issued for credential `id`, if any.
    pub fn credential_successor(&self, id: &str) -> Result<Option<String>, StorageError> {
        let mut conn = self.conn()?;
        Ok(credential_successors::table
            .find(id)
            .select(credential_successors::successor)
            .first(&mut *conn)
            .optional()?)
    }

    /// Sets `revoked_at`; `Ok(false)` if the id is unknown or already revoked.
    pub fn revoke_credential(
        &self,
        id: &str,
        at_ms: i64,
        audit: &AuditEntry,
    ) -> Result<bool, StorageError> {
        self.write_if_any(audit, |c| {
            // A damaged or forged row can still be revoked (that takes power away), but is not
            // re-MACed: it stays refused whatever else it says.
            let intact = matches!(self.credential_in(c, id), Ok(Some(_)));
            let n = diesel::update(
                credentials::table
                    .filter(credentials::id.eq(id))
                    .filter(credentials::revoked_at.is_null()),
            )
            .set(credentials::revoked_at.eq(Some(at_ms)))
            .execute(c)?;
            if n > 0 && intact {
                self.remac_credential(c, id)?;
            }
            Ok(n)
        })
    }
}
