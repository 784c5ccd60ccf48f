//! KEK metadata, derivation masters, index keys and the integrity key.

use diesel::prelude::*;
use sha2::{Digest, Sha256};

use super::conn::on_backend;
use super::schema::{index_keys, integrity_key, keks, masters};
use super::{AuditEntry, IndexKeyRow, IntegrityKeyRow, KekRow, MasterRow, StorageError, Store};

impl Store {
    /// A digest of every key row (KEKs, masters, index keys) as stored, for noticing that any
    /// changed. Read as text, not typed: a row whose state does not parse (a tampered one)
    /// changes the digest like any other change, and cannot stop the check for every other row.
    pub fn key_rows_digest(&self) -> Result<[u8; 32], StorageError> {
        let mut conn = self.conn()?;
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        let keks: Vec<(i32, String, String)> = keks::table
            .order(keks::version.asc())
            .select((keks::version, keks::state, keks::keystore))
            .load(&mut *conn)?;
        for (version, state, keystore) in keks {
            field(format!("kek {version} {state} {keystore}").as_bytes());
        }
        type Master = (
            String,
            i32,
            String,
            Option<i64>,
            i32,
            i64,
            Option<Vec<u8>>,
            Vec<u8>,
        );
        let masters: Vec<Master> = masters::table
            .order((masters::namespace.asc(), masters::version.asc()))
            .select((
                masters::namespace,
                masters::version,
                masters::state,
                masters::compromised_at,
                masters::kek_version,
                masters::updated_at,
                masters::wrapped,
                masters::salt,
            ))
            .load(&mut *conn)?;
        for (ns, version, state, compromised_at, kek, updated_at, wrapped, salt) in masters {
            field(
                format!("dm {ns} {version} {state} {compromised_at:?} {kek} {updated_at}")
                    .as_bytes(),
            );
            field(wrapped.as_deref().unwrap_or_default());
            field(&salt);
        }
        let index_keys: Vec<(String, i32, Vec<u8>)> = index_keys::table
            .order(index_keys::namespace.asc())
            .select((
                index_keys::namespace,
                index_keys::kek_version,
                index_keys::wrapped,
            ))
            .load(&mut *conn)?;
        for (ns, kek, wrapped) in index_keys {
            field(format!("ik {ns} {kek}").as_bytes());
            field(&wrapped);
        }
        Ok(h.finalize().into())
    }

    /// Inserts the KEK version or overwrites its metadata.
    pub fn upsert_kek(&self, row: &KekRow, audit: &AuditEntry) -> Result<(), StorageError> {
        self.write(audit, |conn| {
            self.kek_in(conn, row.version)?;
            on_backend!(conn, |c| diesel::insert_into(keks::table)
                .values(row)
                .on_conflict(keks::version)
                .do_update()
                .set(row)
                .execute(c))?;
            self.remac_kek(conn, row.version)
        })
    }

    /// All KEK versions, ascending.
    pub fn keks(&self) -> Result<Vec<KekRow>, StorageError> {
        let mut conn = self.conn()?;
        keks::table
            .order(keks::version.asc())
            .select((KekRow::as_select(), keks::mac))
            .load(&mut *conn)?
            .into_iter()
            .map(|r| self.checked(r))
            .collect()
    }

    /// The highest KEK version recorded, read without checking the rows' MACs: a number to
    /// stay above, which a forged row can only raise (versions are then skipped, never reused).
    pub fn highest_kek_version(&self) -> Result<i32, StorageError> {
        let mut conn = self.conn()?;
        Ok(keks::table
            .select(diesel::dsl::max(keks::version))
            .first::<Option<i32>>(&mut *conn)?
            .unwrap_or(0))
    }

    /// `Conflict` if `(namespace, version)` exists.
    pub fn insert_master(&self, row: &MasterRow, audit: &AuditEntry) -> Result<(), StorageError> {
        self.unit_of_work(audit, |u| u.insert_master(row))
    }

    /// The namespace's masters, ascending version.
    pub fn masters(&self, namespace: &str) -> Result<Vec<MasterRow>, StorageError> {
        let mut conn = self.conn()?;
        masters::table
            .filter(masters::namespace.eq(namespace))
            .order(masters::version.asc())
            .select((MasterRow::as_select(), masters::mac))
            .load(&mut *conn)?
            .into_iter()
            .map(|r| self.checked(r))
            .collect()
    }

    /// Every master, ordered by namespace then version.
    pub fn all_masters(&self) -> Result<Vec<MasterRow>, StorageError> {
        self.each_master()?.into_iter().collect()
    }

    /// [`Store::all_masters`], each row checked on its own: a forged row is its own
    /// `Integrity` error and does not hide the others from work that can go on without it.
    pub fn each_master(&self) -> Result<Vec<Result<MasterRow, StorageError>>, StorageError> {
        let mut conn = self.conn()?;
        Ok(masters::table
            .order((masters::namespace.asc(), masters::version.asc()))
            .select((MasterRow::as_select(), masters::mac))
            .load(&mut *conn)?
            .into_iter()
            .map(|r| self.checked(r))
            .collect())
    }

    /// Overwrites every column of the master `(row.namespace, row.version)` (a `None` writes
    /// NULL, so destroying clears `wrapped`). `NotFound` if it does not exist.
    pub fn update_master(&self, row: &MasterRow, audit: &AuditEntry) -> Result<(), StorageError> {
        self.write(audit, |c| {
            if self.master_in(c, &row.namespace, row.version)?.is_none() {
                return Err(StorageError::NotFound);
            }
            diesel::update(masters::table.find((row.namespace.as_str(), row.version)))
                .set(row)
                .execute(c)?;
            self.remac_master(c, &row.namespace, row.version)
        })
    }

    /// `Conflict` if the namespace already has an index key.
    pub fn insert_index_key(
        &self,
        row: &IndexKeyRow,
        audit: &AuditEntry,
    ) -> Result<(), StorageError> {
        self.write(audit, |c| {
            diesel::insert_into(index_keys::table)
                .values(row)
                .execute(c)?;
            Ok(())
        })
    }

    pub fn index_key(&self, namespace: &str) -> Result<Option<IndexKeyRow>, StorageError> {
        let mut conn = self.conn()?;
        Ok(index_keys::table
            .find(namespace)
            .select(IndexKeyRow::as_select())
            .first(&mut *conn)
            .optional()?)
    }

    /// Every index key, ordered by namespace.
    pub fn all_index_keys(&self) -> Result<Vec<IndexKeyRow>, StorageError> {
        let mut conn = self.conn()?;
        Ok(index_keys::table
            .order(index_keys::namespace.asc())
            .select(IndexKeyRow::as_select())
            .load(&mut *conn)?)
    }

    /// Bootstraps a namespace atomically: inserts DM v1 and the IK in one transaction.
    /// `Ok(false)` if either already existed (another instance won the race); nothing is
    /// written then.
    pub fn init_namespace(
        &self,
        dm: &MasterRow,
        ik: &IndexKeyRow,
        audit: &AuditEntry,
    ) -> Result<bool, StorageError> {
        let result = self.write(audit, |c| {
            diesel::insert_into(masters::table).values(dm).execute(c)?;
            diesel::insert_into(index_keys::table)
                .values(ik)
                .execute(c)?;
            self.remac_master(c, &dm.namespace, dm.version)
        });
        match result {
            Ok(()) => Ok(true),
            Err(StorageError::Conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The deployment's integrity key, wrapped, if it was made.
    pub fn integrity_key(&self) -> Result<Option<IntegrityKeyRow>, StorageError> {
        let mut conn = self.conn()?;
        Ok(integrity_key::table
            .find(1)
            .select(IntegrityKeyRow::as_select())
            .first(&mut *conn)
            .optional()?)
    }

    /// Stores the integrity key and MACs every credential, master and KEK row under it (the row
    /// key must already be set to it), in one transaction. `Conflict` if one exists: another
    /// instance made it first.
    pub fn create_integrity_key(
        &self,
        row: &IntegrityKeyRow,
        audit: &AuditEntry,
    ) -> Result<usize, StorageError> {
        self.write(audit, |c| {
            diesel::insert_into(integrity_key::table)
                .values(row)
                .execute(c)?;
            self.mac_all_in(c)
        })
    }
}
