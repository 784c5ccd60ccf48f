//! API credentials (only the Argon2id hash of each secret is stored).

use diesel::prelude::*;

use super::schema::credentials;
use super::{AuditEntry, CredentialRow, StorageError, Store};

impl Store {
    /// `Conflict` if the id exists.
    pub fn insert_credential(&self, row: &CredentialRow, audit: &AuditEntry) -> Result<(), StorageError> {
        self.write(audit, |c| {
            diesel::insert_into(credentials::table).values(row).execute(c)?;
            Ok(())
        })
    }

    pub fn credential(&self, id: &str) -> Result<Option<CredentialRow>, StorageError> {
        let mut conn = self.conn()?;
        Ok(credentials::table
            .find(id)
            .select(CredentialRow::as_select())
            .first(&mut *conn)
            .optional()?)
    }

    /// Every credential (revoked ones included), oldest first.
    pub fn credentials(&self) -> Result<Vec<CredentialRow>, StorageError> {
        let mut conn = self.conn()?;
        Ok(credentials::table
            .order((credentials::created_at.asc(), credentials::id.asc()))
            .select(CredentialRow::as_select())
            .load(&mut *conn)?)
    }

    /// Sets `revoked_at`; `Ok(false)` if the id is unknown or already revoked.
    /// Moves a live credential's expiry (credential rotation's overlap window); `Ok(false)` if
    /// it is unknown or revoked.
    pub fn set_credential_expiry(&self, id: &str, expires_at: i64, audit: &AuditEntry) -> Result<bool, StorageError> {
        self.write_if_any(audit, |c| {
            Ok(diesel::update(credentials::table.filter(credentials::id.eq(id)).filter(credentials::revoked_at.is_null()))
                .set(credentials::expires_at.eq(Some(expires_at)))
                .execute(c)?)
        })
    }

    pub fn revoke_credential(&self, id: &str, at_ms: i64, audit: &AuditEntry) -> Result<bool, StorageError> {
        self.write_if_any(audit, |c| {
            Ok(diesel::update(
                credentials::table
                    .filter(credentials::id.eq(id))
                    .filter(credentials::revoked_at.is_null()),
            )
            .set(credentials::revoked_at.eq(Some(at_ms)))
            .execute(c)?)
        })
    }
}
