//! The audit trail's storage: every write of the store goes through [`Store::write`], which
//! appends its audit entry in the same transaction as the change.
//!
//! Entries form hash chains. A chain is used by one transaction at a time: the store keeps a
//! free list of its chains and opens a new one when all are busy, so concurrent writers never
//! wait on each other's audit appends (and a PostgreSQL cluster has no global audit lock). The
//! chain's head row is updated first in the transaction, so on SQLite the write lock is taken
//! before anything is read.

use diesel::prelude::*;
use zkvault_core::audit::{entry_hash, AuditFields};

use diesel::connection::SimpleConnection;

use super::conn::{on_backend, AnyConnection};
use super::group_commit::{Outcome, Write};
use super::schema::{audit, audit_checkpoints, audit_heads};
use super::{StorageError, Store};

/// What happened, by whom, to what. Never holds a resident ID or a blind index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit)]
pub struct AuditEntry {
    pub at: i64,
    /// Credential id, `cli:<user>`, `scheduler` or `system`.
    pub actor: String,
    pub request_id: String,
    /// e.g. `record.put`, `master.rotate`, `credential.revoke`.
    pub operation: String,
    pub namespace: String,
    /// Record name, master version, credential id...
    pub target: String,
    /// Short keyed tag of the resident concerned (empty if none).
    pub resident_tag: String,
    /// `ok`, or the error code the caller saw.
    pub outcome: String,
    pub detail: String,
}

/// A stored entry: the entry, where it stands in its chain, and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = audit)]
pub struct AuditRow {
    pub id: i64,
    pub chain: String,
    pub seq: i64,
    #[diesel(embed)]
    pub entry: AuditEntry,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

impl AuditRow {
    /// The hash this row's content and position call for.
    pub fn expected_hash(&self) -> Option<[u8; 32]> {
        let prev: [u8; 32] = self.prev_hash.as_slice().try_into().ok()?;
        Some(entry_hash(
            &prev,
            &self.chain,
            self.seq as u64,
            &self.entry.fields(),
        ))
    }
}

impl AuditEntry {
    /// What the entry's hash covers.
    fn fields(&self) -> AuditFields<'_> {
        AuditFields {
            at_ms: self.at,
            actor: &self.actor,
            request_id: &self.request_id,
            operation: &self.operation,
            namespace: &self.namespace,
            target: &self.target,
            resident_tag: &self.resident_tag,
            outcome: &self.outcome,
            detail: &self.detail,
        }
    }
}

/// A chain's head: its last entry's position and hash.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = audit_heads)]
pub struct AuditHead {
    pub chain: String,
    pub seq: i64,
    pub hash: Vec<u8>,
}

/// A first-format checkpoint: a chain head wrapped under a KEK.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_checkpoints)]
pub struct CheckpointRow {
    #[diesel(skip_insertion)]
    pub id: i64,
    pub chain: String,
    pub seq: i64,
    pub at: i64,
    pub kek_version: i32,
    pub mac: Vec<u8>,
}

/// Which entries `GET /v1/audit` wants.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub operation: Option<String>,
    pub actor: Option<String>,
    /// Entries with `id` greater than this (the previous page's last id).
    pub after_id: i64,
    pub limit: i64,
    /// Only entries of these namespaces (`None`: every entry, deployment-wide ones included).
    pub namespaces: Option<Vec<String>>,
}

impl Store {
    /// On PostgreSQL, `ForgedChainHead` unless `chain`'s head (if it has one) is one zkvault
    /// wrote and no entry lies beyond it; the head stays locked until the transaction ends,
    /// and is returned for [`Store::append`] (`None` for a new chain, and on SQLite).
    fn check_head(
        &self,
        c: &mut AnyConnection,
        chain: &str,
    ) -> Result<Option<AuditHead>, StorageError> {
        let AnyConnection::Pg(pg) = c else {
            return Ok(None);
        };
        let head: Option<(AuditHead, Option<Vec<u8>>)> = audit_heads::table
            .find(chain)
            .select((AuditHead::as_select(), audit_heads::mac))
            .for_update()
            .first(pg)
            .optional()?;
        let authentic = match &head {
            Some((head, mac)) => self.authentic(head, mac.as_deref())?,
            None => true,
        };
        // Entries beyond the head: the head was deleted, or put back older.
        let after = head.as_ref().map_or(0, |(head, _)| head.seq);
        let behind = diesel::select(diesel::dsl::exists(
            audit::table
                .filter(audit::chain.eq(chain))
                .filter(audit::seq.gt(after)),
        ))
        .get_result::<bool>(pg)?;
        if !authentic || behind {
            tracing::error!(chain, "an audit chain's head is not one zkvault wrote, or is behind its entries: the chain is set aside, never appended to; run `zkvault audit verify`");
            return Err(StorageError::ForgedChainHead);
        }
        Ok(head.map(|(head, _)| head))
    }

    /// Appends `entries` to `chain` inside the caller's transaction: the entries inserted in
    /// one statement, the head moved past them and MACed. `locked` is the head as
    /// [`Store::check_head`] locked and checked it, if it did.
    fn append(
        &self,
        c: &mut AnyConnection,
        chain: &str,
        entries: &[&AuditEntry],
        locked: Option<AuditHead>,
    ) -> Result<(), StorageError> {
        let count = entries.len() as i64;
        if count == 0 {
            return Ok(());
        }
        let before = match locked {
            Some(head) => head,
            None => self.claim(c, chain, count)?,
        };
        let mut prev: [u8; 32] = before
            .hash
            .try_into()
            .map_err(|_| StorageError::Corrupt("audit head hash is not 32 bytes".into()))?;
        // Timed when appended, inside the transaction (after the locks it waited for), not
        // when the request began: the trail orders changes to one record by this time.
        let at = chrono::Utc::now().timestamp_millis();
        let mut rows = Vec::with_capacity(entries.len());
        for (seq, entry) in (before.seq + 1..).zip(entries) {
            let entry = AuditEntry {
                at,
                ..(*entry).clone()
            };
            let hash = entry_hash(&prev, chain, seq as u64, &entry.fields());
            rows.push((seq, entry, prev, hash));
            prev = hash;
        }
        let values: Vec<_> = rows
            .iter()
            .map(|(seq, entry, prev, hash)| {
                (
                    audit::chain.eq(chain),
                    audit::seq.eq(*seq),
                    entry,
                    audit::prev_hash.eq(&prev[..]),
                    audit::hash.eq(&hash[..]),
                )
            })
            .collect();
        let inserted = on_backend!(c, |c| diesel::insert_into(audit::table)
            .values(values)
            .execute(c))
        .map_err(StorageError::from);
        // The chain already holds one of these positions: its head was deleted or put back
        // older. Set the chain aside, as for a forged head.
        if let Err(StorageError::Conflict) = inserted {
            tracing::error!(chain, "an audit chain's head is behind its entries (deleted or put back older): the chain is set aside; run `zkvault audit verify`");
            return Err(StorageError::ForgedChainHead);
        }
        inserted?;
        let head = AuditHead {
            chain: chain.to_owned(),
            seq: before.seq + count,
            hash: prev.to_vec(),
        };
        diesel::update(audit_heads::table.find(chain))
            .set((
                audit_heads::seq.eq(head.seq),
                audit_heads::hash.eq(&head.hash),
                audit_heads::mac.eq(self.mac_of(&head)?),
            ))
            .execute(c)?;
        Ok(())
    }

    /// Moves `chain`'s head `count` positions on, creating the chain if need be, and returns
    /// the head as it stood (checked: one zkvault wrote).
    fn claim(
        &self,
        c: &mut AnyConnection,
        chain: &str,
        count: i64,
    ) -> Result<AuditHead, StorageError> {
        let bumped = diesel::update(audit_heads::table.find(chain))
            .set(audit_heads::seq.eq(audit_heads::seq + count))
            .execute(c)?;
        let mut started_here = false;
        if bumped == 0 {
            // A new chain. Two processes may start the same fixed chain at once (the CLI's per-host
            // chain): the loser of the insert waits for the winner's commit and then moves its head.
            let head = (
                audit_heads::chain.eq(chain),
                audit_heads::seq.eq(count),
                audit_heads::hash.eq(vec![0u8; 32]),
            );
            let inserted = on_backend!(c, |c| diesel::insert_into(audit_heads::table)
                .values(head)
                .on_conflict_do_nothing()
                .execute(c))?;
            if inserted == 0 {
                diesel::update(audit_heads::table.find(chain))
                    .set(audit_heads::seq.eq(audit_heads::seq + count))
                    .execute(c)?;
            }
            started_here = inserted == 1;
        }
        // `get_result`, not `first`: a bound `LIMIT ?` makes SQLite re-prepare the statement on every run.
        let (last, prev, mac): (i64, Vec<u8>, Option<Vec<u8>>) = audit_heads::table
            .find(chain)
            .select((audit_heads::seq, audit_heads::hash, audit_heads::mac))
            .get_result(c)?;
        // The head these entries follow must be one zkvault wrote: appending to a head a writer
        // made (a chain cut short or rewritten) would MAC it, and launder the cut.
        let before = AuditHead {
            chain: chain.to_owned(),
            seq: last - count,
            hash: prev,
        };
        if !started_here && !self.authentic(&before, mac.as_deref())? {
            tracing::error!(chain, "an audit chain's head failed authentication: the chain is set aside, never appended to; run `zkvault audit verify`");
            return Err(StorageError::ForgedChainHead);
        }
        Ok(before)
    }
}

impl Store {
    /// Runs `change` and appends `entry` in one transaction: the change and its audit entry
    /// commit together or not at all.
    pub(super) fn write<T>(
        &self,
        entry: &AuditEntry,
        change: impl FnOnce(&mut AnyConnection) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut conn = self.conn()?;
        let mut change = Some(change);
        loop {
            let chain = self.chains.take();
            let result = conn.transaction::<_, StorageError, _>(|c| match &**c {
                // SQLite: the head first, so the write lock is taken before anything is read.
                AnyConnection::Sqlite(_) => {
                    self.append(c, &chain, &[entry], None)?;
                    change.take().expect("run once")(c)
                }
                // PostgreSQL: the head checked (and locked) first, the entry appended last, so
                // it is timed after every row lock the change waited for: the trail orders two
                // changes to one record as they committed.
                AnyConnection::Pg(_) => {
                    let head = self.check_head(c, &chain)?;
                    let done = change.take().expect("run once")(c)?;
                    self.append(c, &chain, &[entry], head)?;
                    Ok(done)
                }
            });
            match result {
                // Rolled back before the change ran: write on a new chain instead. The forged
                // one stays in the database for `audit verify` to report.
                Err(StorageError::ForgedChainHead) if change.is_some() => continue,
                result => {
                    self.chains.give_back(chain);
                    return result;
                }
            }
        }
    }

    /// Like [`Store::write`] for a change that affects rows: if it affects none, everything
    /// rolls back, so no entry claims a change that did not happen, and the answer is `false`.
    pub(super) fn write_if_any(
        &self,
        entry: &AuditEntry,
        change: impl FnOnce(&mut AnyConnection) -> Result<usize, StorageError>,
    ) -> Result<bool, StorageError> {
        let result = self.write(entry, |c| match change(c)? {
            0 => Err(StorageError::NotFound),
            _ => Ok(()),
        });
        match result {
            Ok(()) => Ok(true),
            Err(StorageError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Appends an entry on its own (an access that changed nothing, a refused request), in the
    /// next batch (see [`super::group_commit`]).
    pub fn append_audit(&self, entry: &AuditEntry) -> Result<(), StorageError> {
        let write = Write {
            entry: entry.clone(),
            change: None,
        };
        self.group.submit(self, write).map(drop)
    }

    /// Commits a batch of writes in one transaction, as [`Store::write`] commits one: on
    /// SQLite the write lock is taken first; on PostgreSQL the chain's head is checked and
    /// locked first and the entries appended last. Each write's outcome, in order; an error
    /// only if the transaction as a whole failed.
    pub(super) fn commit_batch(&self, writes: &[Write]) -> Result<Vec<Outcome>, StorageError> {
        let mut conn = self.conn()?;
        let changes = writes.iter().any(|w| w.change.is_some());
        loop {
            let chain = self.chains.take();
            let result = conn.transaction::<_, StorageError, _>(|c| {
                let head = match &mut **c {
                    // A write that changes no row still takes the write lock, before anything
                    // is read.
                    AnyConnection::Sqlite(_) => {
                        diesel::update(audit_heads::table.find(&chain))
                            .set(audit_heads::seq.eq(audit_heads::seq))
                            .execute(c)?;
                        None
                    }
                    // The head first, as in `Store::write`, so the two never wait on each
                    // other in a cycle. Master changes take SHARE on `records`: the table lock
                    // makes them wait for the batch, so a master checked open below stays open
                    // until it commits.
                    AnyConnection::Pg(_) => {
                        let head = self.check_head(c, &chain)?;
                        if changes {
                            c.batch_execute("LOCK TABLE records IN ROW EXCLUSIVE MODE")?;
                        }
                        head
                    }
                };
                let outcomes = self.apply_changes(c, writes)?;
                let logged: Vec<&AuditEntry> = writes
                    .iter()
                    .zip(&outcomes)
                    .filter(|(w, o)| match (&w.change, o) {
                        (None, _) => true,
                        (Some(change), Ok(rows)) => change.logged(*rows),
                        (Some(_), Err(_)) => false,
                    })
                    .map(|(w, _)| &w.entry)
                    .collect();
                self.append(c, &chain, &logged, head)?;
                Ok(outcomes)
            });
            match result {
                // Nothing was committed: go again on a new chain. The forged one stays in the
                // database for `audit verify` to report.
                Err(StorageError::ForgedChainHead) => continue,
                result => {
                    self.chains.give_back(chain);
                    return result;
                }
            }
        }
    }

    /// A page of entries in append order.
    pub fn audit_page(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, StorageError> {
        let mut conn = self.conn()?;
        let mut q = audit::table
            .filter(audit::id.gt(filter.after_id))
            .into_boxed();
        if let Some(t) = filter.since {
            q = q.filter(audit::at.ge(t));
        }
        if let Some(t) = filter.until {
            q = q.filter(audit::at.lt(t));
        }
        if let Some(op) = &filter.operation {
            q = q.filter(audit::operation.eq(op.clone()));
        }
        if let Some(actor) = &filter.actor {
            q = q.filter(audit::actor.eq(actor.clone()));
        }
        if let Some(namespaces) = &filter.namespaces {
            q = q.filter(audit::namespace.eq_any(namespaces.clone()));
        }
        Ok(q.order(audit::id.asc())
            .limit(filter.limit)
            .select(AuditRow::as_select())
            .load(&mut *conn)?)
    }

    /// Every chain's name.
    pub fn audit_chains(&self) -> Result<Vec<String>, StorageError> {
        let mut conn = self.conn()?;
        let mut chains: Vec<String> = audit::table
            .select(audit::chain)
            .distinct()
            .load(&mut *conn)?;
        chains.extend(
            audit_heads::table
                .select(audit_heads::chain)
                .load::<String>(&mut *conn)?,
        );
        chains.sort();
        chains.dedup();
        Ok(chains)
    }

    /// Up to `limit` entries of `chain` with `seq > after`, in chain order.
    pub fn audit_chain_page(
        &self,
        chain: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StorageError> {
        let mut conn = self.conn()?;
        Ok(audit::table
            .filter(audit::chain.eq(chain))
            .filter(audit::seq.gt(after))
            .order(audit::seq.asc())
            .limit(limit)
            .select(AuditRow::as_select())
            .load(&mut *conn)?)
    }

    /// Every chain's head, and whether its MAC holds (a head written outside zkvault, or one
    /// left from before heads were MACed, does not).
    pub fn audit_heads(&self) -> Result<Vec<(AuditHead, bool)>, StorageError> {
        let mut conn = self.conn()?;
        let rows: Vec<(AuditHead, Option<Vec<u8>>)> = audit_heads::table
            .order(audit_heads::chain.asc())
            .select((AuditHead::as_select(), audit_heads::mac))
            .load(&mut *conn)?;
        rows.into_iter()
            .map(|(head, mac)| {
                let authentic = self.authentic(&head, mac.as_deref())?;
                Ok((head, authentic))
            })
            .collect()
    }

    /// Checkpoints of the first format (one chain head each, wrapped under a KEK): no longer
    /// written; kept until the first chained checkpoint has checked them.
    pub fn checkpoints(&self) -> Result<Vec<CheckpointRow>, StorageError> {
        let mut conn = self.conn()?;
        Ok(audit_checkpoints::table
            .order(audit_checkpoints::id.asc())
            .select(CheckpointRow::as_select())
            .load(&mut *conn)?)
    }
}

/// The store's audit chains not in use by a transaction right now.
#[derive(Default)]
pub(super) struct ChainPool {
    free: std::sync::Mutex<Vec<String>>,
}

impl ChainPool {
    /// A pool whose first chain is `name`, shared by every process that uses that name: their
    /// appends take turns on its head row (the row lock on PostgreSQL, the write lock on
    /// SQLite), so the chain never forks. Concurrent writers within this process beyond the
    /// first still get chains of their own.
    pub(super) fn starting_with(name: String) -> ChainPool {
        ChainPool {
            free: std::sync::Mutex::new(vec![name]),
        }
    }

    /// A free chain, or a new one (random name) if every chain is busy.
    fn take(&self) -> String {
        let free = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        free.unwrap_or_else(|| {
            hex::encode(zkvault_core::random::array::<8>().expect("OS random number generator"))
        })
    }

    fn give_back(&self, chain: String) {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(chain);
    }
}
