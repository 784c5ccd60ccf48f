//! Refused requests, counted in memory and appended to the audit trail in aggregate.
//!
//! A refusal (no credential, wrong role or namespace, a malformed path) costs the caller almost
//! nothing; one hash-chained row per refusal would let anyone fill the disk, and appending it
//! on the request path would let a flood slow valid traffic. So a refusal only bumps a counter,
//! keyed by bounded values ([`Refusal`]), and every [`REFUSAL_INTERVAL`] one entry per key is
//! appended with `detail = "count=N first_at=MS last_at=MS"`. A flood costs at most one row per
//! key per interval; the keys are bounded too ([`MAX_KEYS`]; beyond, refusals are counted under
//! one overflow key).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::{now_ms, Actor, Vault};
use crate::storage::Store;

/// How often counted refusals are appended.
pub const REFUSAL_INTERVAL: Duration = Duration::from_secs(1);

/// Distinct keys kept per interval; more are folded into one overflow key.
const MAX_KEYS: usize = 1024;

/// What a refusal is counted under. Every field must already be bounded and printable: a
/// verified credential id or `anonymous`, an operation and outcome code of ours, a route
/// *pattern* (the route table bounds them), a namespace of the policy or nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Refusal {
    pub actor: String,
    pub operation: String,
    pub route: String,
    pub namespace: String,
    pub outcome: &'static str,
}

impl Refusal {
    fn overflow(outcome: &'static str) -> Refusal {
        Refusal {
            actor: "*".into(),
            operation: "access.overflow".into(),
            route: "*".into(),
            namespace: String::new(),
            outcome,
        }
    }
}

struct Tally {
    count: u64,
    first_at: i64,
    last_at: i64,
    /// The first refused request's id, to find it in the access log.
    request_id: String,
}

pub(super) struct Refusals {
    store: Store,
    pending: Mutex<HashMap<Refusal, Tally>>,
}

impl Refusals {
    pub(super) fn new(store: Store) -> Self {
        Refusals {
            store,
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn count(&self, key: Refusal, request_id: &str) {
        let now = now_ms();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let key = if pending.len() >= MAX_KEYS && !pending.contains_key(&key) {
            Refusal::overflow(key.outcome)
        } else {
            key
        };
        let tally = pending.entry(key).or_insert_with(|| Tally {
            count: 0,
            first_at: now,
            last_at: now,
            request_id: request_id.to_owned(),
        });
        tally.count += 1;
        tally.last_at = now;
    }

    /// Appends one entry per key counted since the last flush. Counts that could not be
    /// appended (database down) are kept for the next flush.
    fn flush(&self) -> usize {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut written = 0;
        for (key, tally) in taken {
            let mut entry = Actor::request(key.actor.clone(), tally.request_id.clone()).entry(
                &key.operation,
                &key.namespace,
                key.route.clone(),
            );
            entry.outcome = key.outcome.to_owned();
            entry.detail = format!(
                "count={} first_at={} last_at={}",
                tally.count, tally.first_at, tally.last_at
            );
            match self.store.append_audit(&entry) {
                Ok(()) => written += 1,
                Err(e) => {
                    tracing::error!(error = %e, "could not record refused requests in the audit trail; kept for the next try");
                    let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                    let kept = pending.entry(key).or_insert(Tally { count: 0, ..tally });
                    kept.count += tally.count;
                }
            }
        }
        written
    }
}

impl Drop for Refusals {
    /// The last counts of a stopping service are not lost.
    fn drop(&mut self) {
        self.flush();
    }
}

impl Vault {
    /// Counts a refused request; never touches the database (see the module documentation).
    pub fn record_refusal(&self, key: Refusal, request_id: &str) {
        self.refusals.count(key, request_id);
    }

    /// Appends the counted refusals now; the service calls it every [`REFUSAL_INTERVAL`].
    /// Returns how many entries were appended.
    pub fn flush_refusals(&self) -> usize {
        self.refusals.flush()
    }
}
