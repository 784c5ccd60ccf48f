//! Group commit: the record changes and audit entries of many concurrent requests share one
//! transaction, so a busy server pays one commit (on PostgreSQL one WAL flush) per batch instead
//! of one per request.
//!
//! There is no appender thread and no timer. A caller queues its write and waits; whoever finds
//! fewer than [`GroupCommit::leaders`] batches in flight takes everything queued (up to
//! [`MAX_BATCH`]) and commits it for all of them. While one batch commits the next one fills,
//! so batches grow with the load and a lone request commits at once. A caller returns only when
//! the batch holding its write has committed: an acknowledged write, or an audited read, is
//! never one the database has not made durable.
//!
//! A write is data ([`Write`]), not a closure, so a batch can be run again: if a batch fails,
//! each of its writes is committed alone, and one bad write only ever fails itself.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::{AuditEntry, RecordRow, StorageError, Store};

/// The most writes one transaction takes.
pub(super) const MAX_BATCH: usize = 256;

/// One request's write: an audit entry, and the change to a resident's records it records.
pub(super) struct Write {
    pub(super) entry: AuditEntry,
    pub(super) change: Option<RecordChange>,
}

/// A change to one resident's records.
pub(super) enum RecordChange {
    /// `Conflict` if the record (or its id) exists.
    Insert(RecordRow),
    /// Every column but `id`, where `id` and the revision match.
    Replace {
        row: RecordRow,
        expected_revision: i64,
    },
    Delete {
        namespace: String,
        blind_index: Vec<u8>,
        name: String,
    },
    /// Every record of the resident in the namespace.
    Erase {
        namespace: String,
        blind_index: Vec<u8>,
    },
}

impl RecordChange {
    pub(super) fn resident(&self) -> (&str, &[u8]) {
        match self {
            RecordChange::Insert(row) | RecordChange::Replace { row, .. } => {
                (&row.namespace, &row.blind_index)
            }
            RecordChange::Delete {
                namespace,
                blind_index,
                ..
            }
            | RecordChange::Erase {
                namespace,
                blind_index,
            } => (namespace, blind_index),
        }
    }

    /// Whether a change that affected `rows` rows happened, and so is logged. A replacement or
    /// deletion that matched nothing did not: no entry claims it (an erasure of nothing is
    /// still an erasure the resident asked for).
    pub(super) fn logged(&self, rows: u64) -> bool {
        rows > 0 || matches!(self, RecordChange::Erase { .. })
    }
}

/// What happened to one write: the rows its change affected (0 for an entry alone).
pub(super) type Outcome = Result<u64, StorageError>;

pub(super) struct GroupCommit {
    queue: Mutex<Queue>,
    turn: Condvar,
    /// Batches in flight at once: one on SQLite, which has one writer anyway; more on
    /// PostgreSQL, so one batch's statements run while another waits for its WAL flush.
    leaders: usize,
}

#[derive(Default)]
struct Queue {
    next_ticket: u64,
    pending: VecDeque<(u64, Write)>,
    done: HashMap<u64, Outcome>,
    leading: usize,
}

impl GroupCommit {
    pub(super) fn new(leaders: usize) -> GroupCommit {
        GroupCommit {
            queue: Mutex::default(),
            turn: Condvar::new(),
            leaders: leaders.max(1),
        }
    }

    /// Queues `write`, and returns once the batch holding it has committed (or failed).
    pub(super) fn submit(&self, store: &Store, write: Write) -> Outcome {
        let mut q = self.lock();
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.pending.push_back((ticket, write));
        loop {
            if let Some(outcome) = q.done.remove(&ticket) {
                return outcome;
            }
            if q.leading < self.leaders && !q.pending.is_empty() {
                q.leading += 1;
                let take = q.pending.len().min(MAX_BATCH);
                let (tickets, writes): (Vec<u64>, Vec<Write>) = q.pending.drain(..take).unzip();
                drop(q);
                let mut lead = Lead {
                    group: self,
                    tickets,
                    outcomes: Vec::new(),
                };
                lead.outcomes = store.commit_writes(&writes);
                drop(lead);
                q = self.lock();
                continue;
            }
            q = self.turn.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A batch being committed. Dropping it hands every outcome to its waiter and wakes the queue,
/// also when committing panicked (its waiters then fail rather than wait forever).
struct Lead<'a> {
    group: &'a GroupCommit,
    tickets: Vec<u64>,
    outcomes: Vec<Outcome>,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let mut outcomes = std::mem::take(&mut self.outcomes).into_iter();
        let mut q = self.group.lock();
        for ticket in self.tickets.drain(..) {
            let outcome = outcomes.next().unwrap_or_else(|| {
                Err(StorageError::Unavailable(
                    "the batch holding this write failed".into(),
                ))
            });
            q.done.insert(ticket, outcome);
        }
        q.leading -= 1;
        self.group.turn.notify_all();
    }
}

impl Store {
    /// Commits `writes` in one transaction; if a write made it fail, each alone. When the
    /// database itself failed (down, connection lost) every write gets the error: a commit
    /// whose answer was lost may have happened, and committing its writes again would
    /// duplicate them.
    fn commit_writes(&self, writes: &[Write]) -> Vec<Outcome> {
        match self.commit_batch(writes) {
            Ok(outcomes) => outcomes,
            Err(e) if writes.len() == 1 => vec![Err(e)],
            Err(e @ StorageError::Unavailable(_)) => {
                writes.iter().map(|_| Err(e.clone())).collect()
            }
            Err(e) => {
                tracing::debug!(error = %e, writes = writes.len(), "a batch failed; committing its writes one by one");
                writes
                    .iter()
                    .map(|w| {
                        self.commit_batch(std::slice::from_ref(w))
                            .and_then(|mut o| o.pop().expect("one outcome per write"))
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(target: &str) -> Write {
        Write {
            entry: AuditEntry {
                operation: "test.append".into(),
                target: target.into(),
                outcome: "ok".into(),
                ..Default::default()
            },
            change: None,
        }
    }

    struct Key;
    impl super::super::RowKey for Key {
        fn mac(&self, _: &str, _: &[u8]) -> [u8; 32] {
            [7; 32]
        }
        fn verify(&self, _: &str, _: &[u8], mac: &[u8]) -> bool {
            mac == [7; 32]
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db.sqlite").to_str().unwrap(), 4).unwrap();
        store.migrate().unwrap();
        store.set_row_key(std::sync::Arc::new(Key));
        (dir, store)
    }

    #[test]
    fn every_concurrent_write_commits_once_and_in_fewer_transactions() {
        let (_dir, store) = store();
        let threads = 16;
        let per_thread = 50;
        std::thread::scope(|s| {
            for t in 0..threads {
                let store = &store;
                s.spawn(move || {
                    for i in 0..per_thread {
                        let w = entry(&format!("{t}-{i}"));
                        assert_eq!(store.group.submit(store, w).unwrap(), 0);
                    }
                });
            }
        });
        let entries = store
            .audit_page(&crate::storage::AuditFilter {
                limit: 10_000,
                ..Default::default()
            })
            .unwrap();
        let mut targets: Vec<_> = entries.iter().map(|r| r.entry.target.clone()).collect();
        targets.sort();
        targets.dedup();
        assert_eq!(targets.len(), threads * per_thread);
        assert_eq!(
            entries.len(),
            threads * per_thread,
            "an entry was written twice"
        );
    }

    #[test]
    fn a_panicking_batch_fails_its_waiters_and_frees_the_queue() {
        let (_dir, store) = store();
        let group = GroupCommit::new(1);
        {
            let mut q = group.lock();
            q.leading = 1;
            q.pending.push_back((0, entry("lost")));
            q.next_ticket = 1;
        }
        // A leader that dies with the ticket in hand.
        let lead = Lead {
            group: &group,
            tickets: vec![0],
            outcomes: Vec::new(),
        };
        group.lock().pending.clear();
        drop(lead);
        let q = group.lock();
        assert_eq!(q.leading, 0);
        assert!(matches!(
            q.done.get(&0),
            Some(Err(StorageError::Unavailable(_)))
        ));
        drop(q);
        assert!(group.submit(&store, entry("next")).is_ok());
    }
}
