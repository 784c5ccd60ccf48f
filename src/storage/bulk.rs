//! Batched inserts for bulk loading (the `seed` command): one transaction per call (many rows
//! per INSERT on PostgreSQL), rows whose key already exists skipped.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::conn::AnyConnection;
use super::schema::records;
use super::{RecordRow, StorageError, Store};

/// Rows per INSERT: 16 columns × 500 rows = 8,000 bound parameters, well under SQLite's 32,766
/// and PostgreSQL's 65,535.
const ROWS_PER_STATEMENT: usize = 500;

/// Page cache of a SQLite connection that bulk-loads (per connection; the default is 2 MiB).
const SQLITE_BULK_CACHE: &str = "PRAGMA cache_size = -262144"; // 256 MiB

impl Store {
    /// Inserts `rows` in one transaction. A row whose `(namespace, blind_index, name)` or `id`
    /// already exists is skipped (`ON CONFLICT DO NOTHING`); returns how many were inserted.
    pub fn insert_records(&self, rows: &[RecordRow]) -> Result<usize, StorageError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn()?;
        let inserted = match &mut *conn {
            // Multi-row VALUES: one round trip per chunk.
            AnyConnection::Pg(c) => c.transaction(|c| {
                let mut n = 0;
                for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                    n += diesel::insert_into(records::table)
                        .values(chunk)
                        .on_conflict_do_nothing()
                        .execute(c)?;
                }
                Ok::<usize, diesel::result::Error>(n)
            }),
            // diesel has no multi-row INSERT .. ON CONFLICT for SQLite; in-process, one prepared
            // statement per row inside the transaction costs about the same.
            AnyConnection::Sqlite(c) => {
                // Random keys (UUID, blind index) scatter inserts over the index b-trees; with
                // the default 2 MiB page cache a large load spends its time re-reading them.
                c.batch_execute(SQLITE_BULK_CACHE)?;
                c.transaction(|c| {
                    let mut n = 0;
                    for row in rows {
                        n += diesel::insert_into(records::table)
                            .values(row)
                            .on_conflict_do_nothing()
                            .execute(c)?;
                    }
                    Ok::<usize, diesel::result::Error>(n)
                })
            }
        };
        inserted.map_err(StorageError::from)
    }
}
