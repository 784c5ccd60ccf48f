//! Writes of the key lifecycle: master rotation, KEK rewrap, record moves, leader election.
//! Each is one transaction, so a crash leaves either the old state or the new, never a mix.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::PooledConnection;
use diesel::sql_types::{BigInt, Bool};

use super::conn::{AnyConnection, Manager};
use super::schema::{index_keys, masters, records};
use super::{AuditEntry, IndexKeyRow, MasterRow, RecordKeys, RecordRow, StorageError, Store};

/// Blind indexes per `IN (...)` query.
const LOOKUP_CHUNK: usize = 500;

/// One record moved to another master: its DEK rewrapped, and for a re-key also a new body.
/// Applied only if the record is still under `from_version` (a concurrent write wins).
pub struct RecordMove {
    pub id: Vec<u8>,
    pub from_version: i32,
    pub to_version: i32,
    pub dek_nonce: Vec<u8>,
    pub wrapped_dek: Vec<u8>,
    /// `(body_nonce, body_ciphertext)` for a re-key; `None` leaves the body bytes untouched.
    pub new_body: Option<(Vec<u8>, Vec<u8>)>,
}

/// Holds a PostgreSQL session advisory lock until dropped (SQLite: a single-writer file, so
/// the guard holds nothing).
pub struct LeaderGuard {
    conn: Option<(PooledConnection<Manager>, i64)>,
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        if let Some((conn, key)) = &mut self.conn {
            if let AnyConnection::Pg(c) = &mut **conn {
                let _ = c.batch_execute(&format!("SELECT pg_advisory_unlock({key})"));
            }
        }
    }
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

impl Store {
    /// Makes `new` the namespace's active master: in one transaction, the current active one
    /// turns `decrypt_only` and `new` is inserted. `Conflict` if that version already exists
    /// (another instance rotated first).
    pub fn rotate_master(&self, new: &MasterRow, audit: &AuditEntry) -> Result<(), StorageError> {
        self.write(audit, |c| {
            diesel::update(masters::table.filter(masters::namespace.eq(&new.namespace)).filter(masters::state.eq("active")))
                .set((masters::state.eq("decrypt_only"), masters::updated_at.eq(new.created_at)))
                .execute(c)?;
            diesel::insert_into(masters::table).values(new).execute(c)?;
            Ok(())
        })
    }

    /// Overwrites the given masters and index keys (their new `kek_version` and `wrapped`) in
    /// one transaction: the commit point of a KEK rotation or keystore migration.
    pub fn rewrap_keys(&self, masters_rows: &[MasterRow], index_key_rows: &[IndexKeyRow], audit: &AuditEntry) -> Result<(), StorageError> {
        self.write(audit, |c| {
            for row in masters_rows {
                let n = diesel::update(masters::table.find((row.namespace.as_str(), row.version)))
                    .set((masters::kek_version.eq(row.kek_version), masters::wrapped.eq(&row.wrapped), masters::updated_at.eq(row.updated_at)))
                    .execute(c)?;
                if n == 0 {
                    return Err(StorageError::NotFound);
                }
            }
            for row in index_key_rows {
                let n = diesel::update(index_keys::table.find(row.namespace.as_str()))
                    .set((index_keys::kek_version.eq(row.kek_version), index_keys::wrapped.eq(&row.wrapped)))
                    .execute(c)?;
                if n == 0 {
                    return Err(StorageError::NotFound);
                }
            }
            Ok(())
        })
    }

    /// The position and DEK envelope of every record of the given residents (by blind index)
    /// in `namespace`.
    pub fn record_keys_of(&self, namespace: &str, blind_indexes: &[Vec<u8>]) -> Result<Vec<RecordKeys>, StorageError> {
        let mut conn = self.conn()?;
        let mut out = Vec::new();
        for chunk in blind_indexes.chunks(LOOKUP_CHUNK) {
            out.extend(
                records::table
                    .filter(records::namespace.eq(namespace))
                    .filter(records::blind_index.eq_any(chunk))
                    .select(RecordKeys::as_select())
                    .load(&mut *conn)?,
            );
        }
        Ok(out)
    }

    /// One whole record by its UUID.
    pub fn record_by_id(&self, id: &[u8]) -> Result<Option<RecordRow>, StorageError> {
        let mut conn = self.conn()?;
        Ok(records::table.find(id).select(RecordRow::as_select()).first(&mut *conn).optional()?)
    }

    /// Applies record moves in one transaction; returns how many applied (a record written or
    /// moved concurrently since it was read is skipped, and stays readable where it is).
    pub fn move_records(&self, namespace: &str, moves: &[RecordMove], audit: &AuditEntry) -> Result<usize, StorageError> {
        if moves.is_empty() {
            return Ok(0);
        }
        self.write(audit, |c| {
            let mut applied = 0;
            for m in moves {
                let target = records::table
                    .filter(records::id.eq(&m.id))
                    .filter(records::namespace.eq(namespace))
                    .filter(records::master_version.eq(m.from_version));
                let keys = (records::master_version.eq(m.to_version), records::dek_nonce.eq(&m.dek_nonce), records::wrapped_dek.eq(&m.wrapped_dek));
                applied += match &m.new_body {
                    None => diesel::update(target).set(keys).execute(c)?,
                    Some((nonce, body)) => diesel::update(target)
                        .set((keys, records::body_nonce.eq(nonce), records::body_ciphertext.eq(body)))
                        .execute(c)?,
                };
            }
            Ok(applied)
        })
    }

    /// Takes the cluster-wide lock `key` if free (PostgreSQL advisory lock), so only one of many
    /// instances runs scheduled lifecycle work. SQLite has one writer process: always granted.
    pub fn try_leader_lock(&self, key: i64) -> Result<Option<LeaderGuard>, StorageError> {
        let mut conn = self.conn()?;
        match &mut *conn {
            AnyConnection::Sqlite(_) => Ok(Some(LeaderGuard { conn: None })),
            AnyConnection::Pg(c) => {
                let got: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked").bind::<BigInt, _>(key).get_result(c)?;
                Ok(got.locked.then(|| LeaderGuard { conn: Some((conn, key)) }))
            }
        }
    }
}

impl Store {
    /// Overwrites master `(row.namespace, row.version)` only if it is still in `expected_state`:
    /// two operators racing on one transition cannot both win. `Ok(false)` if the state moved.
    pub fn update_master_if(&self, row: &MasterRow, expected_state: &str, audit: &AuditEntry) -> Result<bool, StorageError> {
        self.write_if_any(audit, |c| {
            Ok(diesel::update(masters::table.find((row.namespace.as_str(), row.version)).filter(masters::state.eq(expected_state)))
                .set(row)
                .execute(c)?)
        })
    }
}
