//! Storage: diesel over SQLite (embedded default) or PostgreSQL (many instances, one database),
//! chosen by URL scheme at [`Store::open`]. The API is blocking; the service calls it from
//! `spawn_blocking`. No column ever holds a resident ID or plaintext.
//!
//! Transactions that write always write first (no read-then-write), so SQLite's busy timeout
//! applies instead of an immediate "database is locked" on lock upgrade.

mod approvals;
mod audit;
mod bulk;
mod checkpoints;
mod columns;
mod conn;
mod credentials;
mod error;
mod group_commit;
mod keys;
mod lifecycle;
pub mod model;
mod records;
mod row_macs;
pub mod schema;
mod signers;
mod trust;

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{CustomizeConnection, ManageConnection, Pool, PooledConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub use approvals::ApprovalRow;
pub use audit::{AuditEntry, AuditFilter, AuditHead, AuditRow, CheckpointRow};
pub use checkpoints::{ManifestRow, MarkRow};
use conn::{AnyConnection, Manager, SqlitePragmas, Target};
pub use error::StorageError;
pub use lifecycle::{KeyLock, LeaderGuard, RecordMove, UnitOfWork};
pub use model::{
    CredentialListing, CredentialRow, IndexKeyRow, IntegrityKeyRow, KekRow, MasterRow, RecordKeys,
    RecordMeta, RecordRow,
};
pub use records::RecordPosition;
pub use row_macs::RowKey;
pub use signers::{CheckedSignerRow, SignerKeyRow};
pub use trust::{AnchorProposal, AnchorRow, Checked, CrlRow, PartnerRow, ShareCount, ShareReceipt};

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// The PostgreSQL session advisory locks zkvault takes, each under its own key. They live in
/// one enum so that no two can share a key (the compiler refuses duplicate discriminants): the
/// scheduler once took the key-change lock's key as its leader lock, and then waited on itself
/// for every key change it made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub enum Advisory {
    /// Migrations, across instances starting together.
    Migration = 0x7a6b_7661_756c_7401,
    /// Key changes, across instances and the CLI ([`Store::key_lock`]).
    KeyChange = 0x7a6b_7661_756c_7402,
    /// The one instance that runs scheduled lifecycle work.
    Scheduler = 0x7a6b_7661_756c_7403,
}

/// Group-commit batches one process commits at once on PostgreSQL (see
/// [`group_commit::GroupCommit`]).
const PG_BATCHES_IN_FLIGHT: usize = 2;

/// How long a caller waits for a pooled connection before `Unavailable`.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A pool of connections to one database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool<Manager>,
    target: std::sync::Arc<Target>,
    chains: std::sync::Arc<audit::ChainPool>,
    group: std::sync::Arc<group_commit::GroupCommit>,
    row_key: row_macs::RowKeySlot,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .field("target", &self.target.display())
            .finish()
    }
}

impl Store {
    /// Opens a pool of at most `max_connections` (≥ 1). `postgres://` / `postgresql://` URLs
    /// select PostgreSQL; `sqlite://PATH` or a plain path selects SQLite (the parent directory
    /// is created; `:memory:` gives one private in-memory database on a single connection).
    /// One connection is made up front so a wrong host, port or password fails here with the
    /// server's own message (password removed).
    pub fn open(url: &str, max_connections: u32) -> Result<Store, StorageError> {
        let target = Target::parse(url)?;
        target.prepare()?;
        let memory = target.is_memory();
        let manager = Manager {
            target: target.clone(),
        };
        let unavailable = |e: &dyn std::fmt::Display| {
            StorageError::Unavailable(
                target.scrub(&format!("cannot connect to {}: {e}", target.display())),
            )
        };

        let mut probe = manager.connect().map_err(|e| unavailable(&e))?;
        SqlitePragmas
            .on_acquire(&mut probe)
            .map_err(|e| unavailable(&e))?;
        drop(probe);

        let max = if memory { 1 } else { max_connections.max(1) };
        let mut builder = Pool::builder()
            .max_size(max)
            .min_idle(Some(1))
            .connection_timeout(CONNECTION_TIMEOUT)
            .connection_customizer(Box::new(SqlitePragmas));
        if memory {
            // The database lives and dies with its only connection.
            builder = builder.idle_timeout(None).max_lifetime(None);
        }
        let pool = builder.build_unchecked(manager);
        Ok(Store {
            pool,
            group: std::sync::Arc::new(group_commit::GroupCommit::new(match target.backend() {
                Backend::Sqlite => 1,
                Backend::Postgres => PG_BATCHES_IN_FLIGHT,
            })),
            target: std::sync::Arc::new(target),
            chains: Default::default(),
            row_key: Default::default(),
        })
    }

    /// Appends this store's audit entries to the chain `name` (while no other transaction of
    /// this store uses it) instead of new random chains: a short-lived process (the CLI) then
    /// does not open a new chain every run.
    pub fn with_audit_chain(mut self, name: &str) -> Store {
        self.chains = std::sync::Arc::new(audit::ChainPool::starting_with(name.to_owned()));
        self
    }

    pub fn backend(&self) -> Backend {
        self.target.backend()
    }

    /// Applies the embedded migrations of this backend (idempotent). On PostgreSQL, instances
    /// starting together serialise on an advisory lock.
    pub fn migrate(&self) -> Result<(), StorageError> {
        let mut conn = self.conn()?;
        let migration = |e: &dyn std::fmt::Display| StorageError::Migration(e.to_string());
        match &mut *conn {
            AnyConnection::Pg(c) => {
                c.batch_execute(&format!(
                    "SELECT pg_advisory_lock({})",
                    Advisory::Migration as i64
                ))?;
                let result = c
                    .run_pending_migrations(PG_MIGRATIONS)
                    .map(drop)
                    .map_err(|e| migration(&e));
                let unlock = c.batch_execute(&format!(
                    "SELECT pg_advisory_unlock({})",
                    Advisory::Migration as i64
                ));
                result?;
                unlock?;
            }
            AnyConnection::Sqlite(c) => {
                c.run_pending_migrations(SQLITE_MIGRATIONS)
                    .map(drop)
                    .map_err(|e| migration(&e))?;
            }
        }
        Ok(())
    }

    /// `SELECT 1` on a pooled connection (for `/readyz`).
    pub fn ping(&self) -> Result<(), StorageError> {
        self.conn()?.batch_execute("SELECT 1")?;
        Ok(())
    }

    fn conn(&self) -> Result<PooledConnection<Manager>, StorageError> {
        self.pool.get().map_err(|e| {
            StorageError::Unavailable(
                self.target
                    .scrub(&format!("no connection to {}: {e}", self.target.display())),
            )
        })
    }
}
