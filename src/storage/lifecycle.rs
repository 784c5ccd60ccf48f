//! Writes of the key lifecycle: master row operations, KEK rewrap, record moves, leader
//! election. Each is one transaction, so a crash leaves either the old state or the new, never
//! a mix. Which transition a use case makes is the vault's decision: storage applies it only if
//! the row is still in the state the vault read.

use std::path::Path;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::PooledConnection;
use diesel::sql_types::{BigInt, Bool};

use super::conn::{AnyConnection, Manager};
use super::records::{lock_residents, resident_lock_key};
use super::schema::{index_keys, integrity_key, masters, records};
use super::{
    Advisory, AuditEntry, IndexKeyRow, IntegrityKeyRow, MasterRow, RecordKeys, RecordRow,
    StorageError, Store,
};
use crate::lockfile::{FileLock, LockError};
use crate::states::{MasterState, MasterUse};

/// Blind indexes per `IN (...)` query.
const LOOKUP_CHUNK: usize = 500;

/// One record moved to another master: its DEK rewrapped, and for a re-key also a new body.
/// Applied only if the record is still at `revision` under `from_version`: a write or another
/// move since it was planned wins, and the planned bytes are dropped.
pub struct RecordMove {
    pub id: Vec<u8>,
    pub revision: i64,
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

/// Master row operations inside one transaction, opened by [`Store::unit_of_work`]: the vault
/// composes them into a use case (a rotation: the active master turns decrypt-only as its
/// successor is inserted), and they commit together with its audit entry or not at all.
pub struct UnitOfWork<'c> {
    store: &'c Store,
    conn: &'c mut AnyConnection,
}

impl UnitOfWork<'_> {
    /// `Conflict` if `(row.namespace, row.version)` exists.
    pub fn insert_master(&mut self, row: &MasterRow) -> Result<(), StorageError> {
        diesel::insert_into(masters::table)
            .values(row)
            .execute(self.conn)?;
        self.store
            .remac_master(self.conn, &row.namespace, row.version)
    }

    /// Moves master `(namespace, version)` from state `from` to `to` as of `at`. `Conflict` if
    /// it is not in `from` (changed since the caller read it).
    pub fn set_master_state(
        &mut self,
        namespace: &str,
        version: i32,
        from: MasterState,
        to: MasterState,
        at: i64,
    ) -> Result<(), StorageError> {
        // As in `update_master_if`: wait for in-flight record writes, which checked this
        // master's state before writing under it (see `Store::apply_changes`).
        if let AnyConnection::Pg(pg) = &mut *self.conn {
            pg.batch_execute("LOCK TABLE records IN SHARE MODE")?;
        }
        let current = self.store.master_in(self.conn, namespace, version)?;
        if current.is_none_or(|m| m.state != from) {
            return Err(StorageError::Conflict);
        }
        diesel::update(masters::table.find((namespace, version)))
            .set((masters::state.eq(to), masters::updated_at.eq(at)))
            .execute(self.conn)?;
        self.store.remac_master(self.conn, namespace, version)
    }
}

impl Store {
    /// Runs `work` and appends `audit` in one transaction (see [`Store::write`]).
    pub fn unit_of_work<T>(
        &self,
        audit: &AuditEntry,
        work: impl FnOnce(&mut UnitOfWork<'_>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.write(audit, |conn| work(&mut UnitOfWork { store: self, conn }))
    }

    /// Overwrites the given masters, index keys and integrity key (their new `kek_version` and
    /// `wrapped`) in one transaction: the commit point of a KEK rotation or a keystore
    /// migration. Each pair
    /// carries the KEK version the row was read under; a row whose state, KEK or material
    /// changed since (destroyed meanwhile, rewrapped by another rotation) fails the whole
    /// transaction with `Conflict`, so a destroyed master's material is never written back.
    pub fn rewrap_keys(
        &self,
        masters_rows: &[(MasterRow, i32)],
        index_key_rows: &[(IndexKeyRow, i32)],
        (integrity_key_row, integrity_read_under): &(IntegrityKeyRow, i32),
        audit: &AuditEntry,
    ) -> Result<(), StorageError> {
        self.write(audit, |c| {
            for (row, read_under) in masters_rows {
                self.master_in(c, &row.namespace, row.version)?;
                let n = diesel::update(
                    masters::table
                        .find((row.namespace.as_str(), row.version))
                        .filter(masters::state.eq(row.state))
                        .filter(masters::kek_version.eq(read_under))
                        .filter(masters::wrapped.is_not_null()),
                )
                .set((
                    masters::kek_version.eq(row.kek_version),
                    masters::wrapped.eq(&row.wrapped),
                    masters::updated_at.eq(row.updated_at),
                ))
                .execute(c)?;
                if n == 0 {
                    return Err(StorageError::Conflict);
                }
                self.remac_master(c, &row.namespace, row.version)?;
            }
            for (row, read_under) in index_key_rows {
                let n = diesel::update(
                    index_keys::table
                        .find(row.namespace.as_str())
                        .filter(index_keys::kek_version.eq(read_under)),
                )
                .set((
                    index_keys::kek_version.eq(row.kek_version),
                    index_keys::wrapped.eq(&row.wrapped),
                ))
                .execute(c)?;
                if n == 0 {
                    return Err(StorageError::Conflict);
                }
            }
            let n = diesel::update(
                integrity_key::table
                    .find(integrity_key_row.id)
                    .filter(integrity_key::kek_version.eq(integrity_read_under)),
            )
            .set((
                integrity_key::kek_version.eq(integrity_key_row.kek_version),
                integrity_key::wrapped.eq(&integrity_key_row.wrapped),
            ))
            .execute(c)?;
            match n {
                0 => Err(StorageError::Conflict),
                _ => Ok(()),
            }
        })
    }

    /// The position and DEK envelope of every record of the given residents (by blind index)
    /// in `namespace`.
    pub fn record_keys_of(
        &self,
        namespace: &str,
        blind_indexes: &[Vec<u8>],
    ) -> Result<Vec<RecordKeys>, StorageError> {
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
        Ok(records::table
            .find(id)
            .select(RecordRow::as_select())
            .first(&mut *conn)
            .optional()?)
    }

    /// Applies record moves in one transaction; returns how many applied (a record written or
    /// moved concurrently since it was planned is skipped, and stays readable where it is).
    /// `MasterChanged`, with nothing applied, if a move's target is no longer the active master
    /// or its source no longer live (for a rewrap: also no longer uncompromised).
    pub fn move_records(
        &self,
        namespace: &str,
        moves: &[RecordMove],
        audit: &AuditEntry,
    ) -> Result<usize, StorageError> {
        if moves.is_empty() {
            return Ok(0);
        }
        self.write(audit, |c| {
            let applied = match c {
                AnyConnection::Pg(pg) => move_on_postgres(pg, namespace, moves)?,
                AnyConnection::Sqlite(_) => {
                    let mut applied = 0;
                    for m in moves {
                        applied += move_one(c, namespace, m)?;
                    }
                    applied
                }
            };
            // Checked after the updates, as for writes: on PostgreSQL a master change waits for
            // this transaction once it holds row locks on `records`, so a check made now is not
            // overtaken by a destruction that commits before us.
            let mut checked = std::collections::BTreeSet::new();
            for m in moves {
                if checked.insert((m.from_version, m.to_version, m.new_body.is_some())) {
                    let from = if m.new_body.is_some() {
                        MasterUse::RekeyFrom
                    } else {
                        MasterUse::RewrapFrom
                    };
                    self.require_master(c, namespace, m.from_version, from)?;
                    self.require_master(c, namespace, m.to_version, MasterUse::WriteTo)?;
                }
            }
            Ok(applied)
        })
    }

    /// Takes the cluster-wide lock `lock` if free (PostgreSQL advisory lock), e.g. so only one of
    /// many instances runs scheduled lifecycle work. SQLite has one writer process: always granted.
    pub fn try_leader_lock(&self, lock: Advisory) -> Result<Option<LeaderGuard>, StorageError> {
        let key = lock as i64;
        let mut conn = self.conn()?;
        match &mut *conn {
            AnyConnection::Sqlite(_) => Ok(Some(LeaderGuard { conn: None })),
            AnyConnection::Pg(c) => {
                let got: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
                    .bind::<BigInt, _>(key)
                    .get_result(c)?;
                Ok(got.locked.then(|| LeaderGuard {
                    conn: Some((conn, key)),
                }))
            }
        }
    }
}

impl Store {
    /// Overwrites master `(row.namespace, row.version)` only if it is still in `expected_state`
    /// with the compromise mark it was read with: two operators racing on one transition cannot
    /// both win. `Ok(false)` if the state moved.
    ///
    /// On PostgreSQL the transaction first waits for every in-flight record write (`SHARE` on
    /// `records` conflicts with their row locks), so a write or move that checked this master
    /// before the change has committed, and one that checks after sees it. SQLite serialises
    /// write transactions, which gives the same order.
    pub fn update_master_if(
        &self,
        row: &MasterRow,
        expected_state: MasterState,
        expected_compromised: Option<i64>,
        audit: &AuditEntry,
    ) -> Result<bool, StorageError> {
        self.write_if_any(audit, |c| {
            if let AnyConnection::Pg(pg) = c {
                pg.batch_execute("LOCK TABLE records IN SHARE MODE")?;
            }
            // The whole row is written back, so it must still hold the material it was read with:
            // a KEK rotation that rewrapped it meanwhile is never undone (the caller retries).
            self.master_in(c, &row.namespace, row.version)?;
            let target = masters::table
                .find((row.namespace.as_str(), row.version))
                .filter(masters::state.eq(expected_state))
                .filter(masters::kek_version.eq(row.kek_version));
            let n = match expected_compromised {
                Some(at) => diesel::update(target.filter(masters::compromised_at.eq(at)))
                    .set(row)
                    .execute(c)?,
                None => diesel::update(target.filter(masters::compromised_at.is_null()))
                    .set(row)
                    .execute(c)?,
            };
            if n > 0 {
                self.remac_master(c, &row.namespace, row.version)?;
            }
            Ok(n)
        })
    }

    /// Serialises key changes (KEK rotation, master rotation, keystore migration, KEK
    /// destruction) across every instance and the CLI until the guard drops: PostgreSQL holds
    /// an advisory lock, SQLite a lock file beside the database. `Conflict` after `wait`.
    pub fn key_lock(&self, wait: Duration) -> Result<KeyLock, StorageError> {
        if let Some(path) = self.target.sqlite_path() {
            if path == ":memory:" {
                return Ok(KeyLock::holding(
                    MEMORY_KEY_LOCK.lock().unwrap_or_else(|e| e.into_inner()),
                ));
            }
            return match FileLock::acquire(Path::new(&format!("{path}.keylock")), wait) {
                Ok(lock) => Ok(KeyLock::holding(lock)),
                Err(LockError::Timeout(..)) => Err(StorageError::Conflict),
                Err(e) => Err(StorageError::Unavailable(e.to_string())),
            };
        }
        let started = Instant::now();
        loop {
            if let Some(guard) = self.try_leader_lock(Advisory::KeyChange)? {
                return Ok(KeyLock::holding(guard));
            }
            if started.elapsed() >= wait {
                return Err(StorageError::Conflict);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// An in-memory SQLite database lives in one process: a mutex is its lock.
static MEMORY_KEY_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Held while a key change runs; see [`Store::key_lock`]. Dropping it releases the lock.
pub struct KeyLock {
    _held: Box<dyn std::any::Any>,
}

impl KeyLock {
    fn holding(guard: impl std::any::Any) -> KeyLock {
        KeyLock {
            _held: Box::new(guard),
        }
    }
}

impl Store {
    /// `MasterChanged` unless master `(namespace, version)` allows `use_` right now (its MAC
    /// checked: a state edited in the database allows nothing). Which use an operation makes
    /// is fixed by the operation (an insert writes under its master), not passed in by the
    /// caller, so no caller can ask for a weaker check.
    pub(super) fn require_master(
        &self,
        c: &mut AnyConnection,
        namespace: &str,
        version: i32,
        use_: MasterUse,
    ) -> Result<(), StorageError> {
        // Not locked: record writes must not queue on their master's row (a master change
        // waits for them on the `records` table instead; see `update_master_if`).
        let ok = masters::table
            .find((namespace, version))
            .select((MasterRow::as_select(), masters::mac))
            .first(c)
            .optional()?
            .map(|r| self.checked(r))
            .transpose()?
            .is_some_and(|m| use_.allows(m.state, m.compromised_at.is_some()));
        if ok {
            Ok(())
        } else {
            Err(StorageError::MasterChanged)
        }
    }
}

/// One record move, guarded by its master version and revision; the rows it changed (0 or 1).
fn move_one(c: &mut AnyConnection, namespace: &str, m: &RecordMove) -> Result<usize, StorageError> {
    let target = records::table
        .filter(records::id.eq(&m.id))
        .filter(records::namespace.eq(namespace))
        .filter(records::master_version.eq(m.from_version))
        .filter(records::revision.eq(m.revision));
    let keys = (
        records::master_version.eq(m.to_version),
        records::dek_nonce.eq(&m.dek_nonce),
        records::wrapped_dek.eq(&m.wrapped_dek),
    );
    Ok(match &m.new_body {
        None => diesel::update(target).set(keys).execute(c)?,
        Some((nonce, body)) => diesel::update(target)
            .set((
                keys,
                records::body_nonce.eq(nonce),
                records::body_ciphertext.eq(body),
            ))
            .execute(c)?,
    })
}

/// Every move of a batch in a few statements instead of one round trip per record: the table
/// lock and the residents' locks (in key order) taken as a batch of record writes takes them,
/// so a bulk job, a batch and a master change never wait on each other in a cycle, then one
/// `UPDATE … FROM unnest(…)` guarded per row exactly as [`move_one`] is.
fn move_on_postgres(
    pg: &mut diesel::PgConnection,
    namespace: &str,
    moves: &[RecordMove],
) -> Result<usize, StorageError> {
    use diesel::sql_types::{Array, Bytea, Integer, Nullable, Text};
    let ids: Vec<&[u8]> = moves.iter().map(|m| m.id.as_slice()).collect();
    pg.batch_execute("LOCK TABLE records IN ROW EXCLUSIVE MODE")?;
    let residents: Vec<Vec<u8>> = records::table
        .filter(records::namespace.eq(namespace))
        .filter(records::id.eq_any(&ids))
        .select(records::blind_index)
        .load(pg)?;
    let mut keys: Vec<i32> = residents
        .iter()
        .map(|bi| resident_lock_key(namespace, bi))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    lock_residents(pg, &keys)?;
    let column = |f: fn(&RecordMove) -> Option<&[u8]>| -> Vec<Option<&[u8]>> {
        moves.iter().map(f).collect()
    };
    Ok(diesel::sql_query(
        "UPDATE records AS r SET master_version = m.to_version, dek_nonce = m.dek_nonce, \
           wrapped_dek = m.wrapped_dek, \
           body_nonce = COALESCE(m.body_nonce, r.body_nonce), \
           body_ciphertext = COALESCE(m.body_ciphertext, r.body_ciphertext) \
         FROM unnest($1, $2, $3, $4, $5, $6, $7, $8) \
           AS m(id, revision, from_version, to_version, dek_nonce, wrapped_dek, body_nonce, body_ciphertext) \
         WHERE r.id = m.id AND r.namespace = $9 AND r.master_version = m.from_version \
           AND r.revision = m.revision",
    )
    .bind::<Array<Bytea>, _>(&ids)
    .bind::<Array<BigInt>, _>(moves.iter().map(|m| m.revision).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(moves.iter().map(|m| m.from_version).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(moves.iter().map(|m| m.to_version).collect::<Vec<_>>())
    .bind::<Array<Bytea>, _>(moves.iter().map(|m| m.dek_nonce.as_slice()).collect::<Vec<_>>())
    .bind::<Array<Bytea>, _>(moves.iter().map(|m| m.wrapped_dek.as_slice()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Bytea>>, _>(column(|m| m.new_body.as_ref().map(|(n, _)| n.as_slice())))
    .bind::<Array<Nullable<Bytea>>, _>(column(|m| m.new_body.as_ref().map(|(_, b)| b.as_slice())))
    .bind::<Text, _>(namespace)
    .execute(pg)?)
}
