//! Signing keys' rows (MACed) and their signature counts.

use std::fmt;

use diesel::prelude::*;

use super::conn::{on_backend, AnyConnection};
use super::row_macs::first_locked;
use super::schema::{signer_keys, signer_usage};
use super::{AuditEntry, StorageError, Store};
use crate::states::SignerState;

/// One version of a signer's key. The private half is on a token (`token_id`) or sealed under
/// a KEK (`kek_version`, `wrapped`); both are `None` once destroyed.
#[derive(Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = signer_keys, primary_key(signer, version), treat_none_as_null = true)]
pub struct SignerKeyRow {
    pub signer: String,
    pub version: i32,
    pub alg: String,
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// Uncompressed SEC1 point.
    pub public_key: Vec<u8>,
    pub token_id: Option<Vec<u8>>,
    pub kek_version: Option<i32>,
    pub wrapped: Option<Vec<u8>>,
    pub state: SignerState,
    pub created_at: i64,
    /// When a pending key becomes active by the schedule.
    pub activate_at: i64,
    /// The last state change.
    pub updated_at: i64,
    /// When a verify-only key leaves the JWKS (its verify window's end).
    pub retire_at: Option<i64>,
    /// The PEM chain issued for this key, once attached.
    pub certificate: Option<String>,
}

impl fmt::Debug for SignerKeyRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignerKeyRow")
            .field("signer", &self.signer)
            .field("version", &self.version)
            .field("kid", &self.kid)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// A signer row as read: authentic, or refused with what it claims to be (for logs).
pub type CheckedSignerRow = Result<SignerKeyRow, String>;

impl Store {
    /// Every signer key row, by signer and version, each checked on its own: a forged row is
    /// refused without hiding the others.
    pub fn signer_keys(&self) -> Result<Vec<CheckedSignerRow>, StorageError> {
        let mut conn = self.conn()?;
        let rows: Vec<(SignerKeyRow, Option<Vec<u8>>)> = signer_keys::table
            .order((signer_keys::signer.asc(), signer_keys::version.asc()))
            .select((SignerKeyRow::as_select(), signer_keys::mac))
            .load(&mut *conn)?;
        rows.into_iter()
            .map(|r| match self.checked(r) {
                Ok(row) => Ok(Ok(row)),
                Err(StorageError::Integrity(what)) => Ok(Err(what)),
                Err(e) => Err(e),
            })
            .collect()
    }

    /// Applies `changes` in one transaction with one audit entry: each `(from, to)` inserts
    /// `to` when `from` is `None` (`Conflict` if the version exists: another instance made it
    /// first), else replaces the row if it still is `from` (checked, and locked on PostgreSQL;
    /// `Conflict` if another change got there first).
    pub fn change_signer_keys(
        &self,
        changes: &[(Option<&SignerKeyRow>, &SignerKeyRow)],
        audit: &AuditEntry,
    ) -> Result<(), StorageError> {
        self.write(audit, |conn| {
            for (from, to) in changes {
                let stored = first_locked!(
                    conn,
                    signer_keys::table
                        .find((&to.signer, to.version))
                        .select((SignerKeyRow::as_select(), signer_keys::mac))
                )?
                .map(|r| self.checked(r))
                .transpose()?;
                if stored.as_ref() != *from {
                    return Err(StorageError::Conflict);
                }
                match from {
                    None => on_backend!(conn, |c| diesel::insert_into(signer_keys::table)
                        .values(*to)
                        .execute(c))?,
                    Some(_) => on_backend!(conn, |c| diesel::update(
                        signer_keys::table.find((&to.signer, to.version))
                    )
                    .set(*to)
                    .execute(c))?,
                };
                self.remac_signer_key(conn, &to.signer, to.version)?;
            }
            Ok(())
        })
    }

    fn remac_signer_key(
        &self,
        c: &mut AnyConnection,
        signer: &str,
        version: i32,
    ) -> Result<(), StorageError> {
        let row: SignerKeyRow = signer_keys::table
            .find((signer, version))
            .select(SignerKeyRow::as_select())
            .first(c)?;
        diesel::update(signer_keys::table.find((signer, version)))
            .set(signer_keys::mac.eq(self.mac_of(&row)?))
            .execute(c)?;
        Ok(())
    }

    /// Adds `counts` (`(signer, version, signatures)`) to the stored totals.
    pub fn add_signatures(&self, counts: &[(String, i32, i64)]) -> Result<(), StorageError> {
        let mut conn = self.conn()?;
        conn.transaction::<_, StorageError, _>(|c| {
            for (signer, version, n) in counts {
                on_backend!(&mut **c, |c| diesel::insert_into(signer_usage::table)
                    .values((
                        signer_usage::signer.eq(signer),
                        signer_usage::version.eq(version),
                        signer_usage::signatures.eq(n),
                    ))
                    .on_conflict((signer_usage::signer, signer_usage::version))
                    .do_update()
                    .set(signer_usage::signatures.eq(signer_usage::signatures + n))
                    .execute(c))?;
            }
            Ok(())
        })
    }

    /// Signatures made per `(signer, version)`, as flushed so far.
    pub fn signature_counts(&self) -> Result<Vec<(String, i32, i64)>, StorageError> {
        let mut conn = self.conn()?;
        Ok(signer_usage::table
            .select((
                signer_usage::signer,
                signer_usage::version,
                signer_usage::signatures,
            ))
            .load(&mut *conn)?)
    }
}
