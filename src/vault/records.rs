//! The data plane: store, read, list, delete and erase a resident's records.
//!
//! Every method is blocking (database and, on a cache miss, keystore): the HTTP layer runs them
//! off the async executor. A resident ID enters as the raw header value and leaves nowhere: it
//! becomes a blind index and a resident key, both dropped when the call returns.

use zeroize::Zeroizing;
use zkvault_core::{open, seal, BlindIndex, RecordContext, ResidentId, ResidentKey, SealedRecord};

use super::record_history::with_revision;
use super::record_name::{audit_name, valid_record_name, RECORD_NAME_PATTERN};
use super::{now_ms, Actor, Grant, Role, Vault, VaultError};
use crate::storage::{AuditEntry, RecordMeta, RecordRow, StorageError};

/// `If-Match` / `If-None-Match: *` on a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    None,
    /// Replace only the revision with this ETag (no quotes).
    IfMatch(String),
    /// Create only: fail if the record exists.
    IfNoneMatch,
    /// `If-Match: *`: replace whatever is current; fail if the record does not exist.
    IfExists,
    /// `If-Match` and `If-None-Match: *` together: no state satisfies both (RFC 9110 evaluates
    /// both), so the write always fails its precondition.
    Never,
}

/// One record write: what to store under which name, and on which condition.
#[derive(Clone, Copy)]
pub struct RecordWrite<'a> {
    pub name: &'a str,
    pub content_type: &'a str,
    pub body: &'a [u8],
    pub precondition: &'a Precondition,
}

pub struct PutOutcome {
    pub created: bool,
    pub revision: i64,
    pub etag: String,
    pub master_version: u32,
}

pub struct Record {
    pub body: Zeroizing<Vec<u8>>,
    pub content_type: String,
    pub etag: String,
    pub revision: i64,
}

/// A resident's keys within one namespace, derived for the length of one call.
pub(super) struct ResidentKeys {
    pub(super) blind_index: BlindIndex,
    pub(super) id: ResidentId,
    /// The resident's audit tag (hex), see [`zkvault_core::IndexKey::audit_tag`].
    pub(super) tag: String,
}

/// Rounds a write goes when another writer commits between its read and its write. Writers of
/// one record on this instance take turns ([`Vault::record_lock`]), so only writers on other
/// instances can make it lose; after this many losses it answers 409.
const MAX_WRITE_ATTEMPTS: usize = 5;

/// Writers of one record on this instance take turns on one of these (chosen by a hash of
/// namespace, blind index and name), so their optimistic revision checks do not keep failing.
pub(super) const RECORD_LOCK_STRIPES: usize = 64;

/// The row storing `sealed` at `ctx`: revision 1, a fresh random ETag, created now.
pub(super) fn sealed_row(
    ctx: &RecordContext,
    sealed: SealedRecord,
    content_type: &str,
    plaintext_len: usize,
) -> Result<RecordRow, VaultError> {
    let now = now_ms();
    Ok(RecordRow {
        id: ctx.record_id.to_vec(),
        namespace: ctx.namespace.to_owned(),
        blind_index: ctx.blind_index.as_bytes().to_vec(),
        name: ctx.record_name.to_owned(),
        format: sealed.format().into(),
        master_version: sealed.dek.master_version as i32,
        dek_nonce: sealed.dek.nonce.to_vec(),
        wrapped_dek: sealed.dek.wrapped.to_vec(),
        body_nonce: sealed.body_nonce.to_vec(),
        body_ciphertext: sealed.body_ciphertext,
        content_type: content_type.to_owned(),
        plaintext_len: plaintext_len as i64,
        revision: 1,
        etag: hex::encode(zkvault_core::random::array::<8>()?),
        created_at: now,
        updated_at: now,
    })
}

/// A stored row as the crypto core sees it, with its record UUID. Takes the body ciphertext
/// out of the row rather than copying it.
pub(super) fn sealed_of(row: &mut RecordRow) -> Result<(SealedRecord, [u8; 16]), VaultError> {
    let sealed = SealedRecord::from_stored(
        u8::try_from(row.format).map_err(|_| VaultError::Integrity)?,
        row.master_version as u32,
        &row.dek_nonce,
        &row.wrapped_dek,
        &row.body_nonce,
        std::mem::take(&mut row.body_ciphertext),
    )?;
    let record_id = row
        .id
        .as_slice()
        .try_into()
        .map_err(|_| VaultError::Integrity)?;
    Ok((sealed, record_id))
}

impl Vault {
    pub(super) fn resident(&self, ns: &str, raw_id: &str) -> Result<ResidentKeys, VaultError> {
        let policy = self
            .policy()
            .namespace(ns)
            .ok_or(VaultError::UnknownNamespace)?;
        let id = ResidentId::parse_with(raw_id, policy.id_checksum)
            .map_err(|e| VaultError::BadInput(e.to_string()))?;
        let ik = self.keyring().index_key(ns)?;
        let blind_index = ik.blind_index(ns, &id);
        let tag = hex::encode(ik.audit_tag(&blind_index));
        Ok(ResidentKeys {
            blind_index,
            id,
            tag,
        })
    }

    pub(super) fn resident_key(
        &self,
        ns: &str,
        keys: &ResidentKeys,
        version: u32,
    ) -> Result<ResidentKey, VaultError> {
        Ok(self
            .keyring()
            .master(ns, version)?
            .resident_key(ns, &keys.id))
    }

    /// This instance's turn to write one record (see [`RECORD_LOCK_STRIPES`]).
    fn record_lock(
        &self,
        ns: &str,
        keys: &ResidentKeys,
        name: &str,
    ) -> std::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (ns, keys.blind_index.as_bytes(), name).hash(&mut h);
        let stripe = &self.record_locks[h.finish() as usize % RECORD_LOCK_STRIPES];
        stripe.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_name(&self, name: &str) -> Result<(), VaultError> {
        if valid_record_name(name) {
            Ok(())
        } else {
            Err(VaultError::BadInput(format!(
                "record name must match {RECORD_NAME_PATTERN} (128 bytes at most)"
            )))
        }
    }

    /// The largest record body the grant's namespace takes (its policy's `max_record_bytes`).
    pub fn max_record_bytes(&self, grant: &Grant) -> Result<usize, VaultError> {
        let ns = grant.namespace(Role::Writer)?;
        Ok(self
            .policy()
            .namespace(ns)
            .ok_or(VaultError::UnknownNamespace)?
            .max_record_bytes)
    }

    /// Stores or replaces a record. The body is sealed under a fresh DEK with the active master;
    /// a replacement keeps the record's UUID. Concurrent writers are serialised by an optimistic
    /// revision check, so no update is lost.
    pub fn put_record(
        &self,
        grant: &Grant,
        raw_id: &str,
        write: &RecordWrite,
    ) -> Result<PutOutcome, VaultError> {
        let ns = grant.namespace(Role::Writer)?;
        let RecordWrite { name, body, .. } = *write;
        let mut entry = grant.actor().entry("record.put", ns, audit_name(name));
        let resident = self.check_name(name).and_then(|()| {
            let limit = self
                .policy()
                .namespace(ns)
                .ok_or(VaultError::UnknownNamespace)?
                .max_record_bytes;
            if body.len() > limit {
                return Err(VaultError::TooLarge {
                    size: body.len(),
                    limit,
                });
            }
            self.resident(ns, raw_id)
        });
        if let Ok(keys) = &resident {
            entry.resident_tag = keys.tag.clone();
        }
        self.audited(entry, |entry| self.put_sealed(entry, &resident?, ns, write))
    }

    fn put_sealed(
        &self,
        entry: &AuditEntry,
        keys: &ResidentKeys,
        ns: &str,
        write: &RecordWrite,
    ) -> Result<PutOutcome, VaultError> {
        let RecordWrite {
            name,
            content_type,
            body,
            precondition,
        } = *write;
        let _turn = self.record_lock(ns, keys, name);
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let existing = self.store().record(ns, keys.blind_index.as_bytes(), name)?;
            match (precondition, &existing) {
                (Precondition::Never, _) | (Precondition::IfNoneMatch, Some(_)) => {
                    return Err(VaultError::PreconditionFailed)
                }
                (Precondition::IfMatch(_) | Precondition::IfExists, None) => {
                    return Err(VaultError::PreconditionFailed)
                }
                (Precondition::IfMatch(tag), Some(row)) if *tag != row.etag => {
                    return Err(VaultError::PreconditionFailed)
                }
                _ => {}
            }
            let version = self.keyring().active_version(ns)?;
            let rk = self.resident_key(ns, keys, version)?;
            let record_id: [u8; 16] = match &existing {
                Some(row) => row
                    .id
                    .as_slice()
                    .try_into()
                    .map_err(|_| VaultError::Integrity)?,
                None => *uuid::Uuid::new_v4().as_bytes(),
            };
            let ctx = RecordContext {
                namespace: ns,
                blind_index: &keys.blind_index,
                record_name: name,
                record_id: &record_id,
            };
            let sealed = seal(&rk, version, &ctx, body)?;
            let fresh = sealed_row(&ctx, sealed, content_type, body.len())?;
            let (revision, etag) = (
                existing.as_ref().map_or(1, |r| r.revision + 1),
                fresh.etag.clone(),
            );
            let row = RecordRow {
                revision,
                created_at: existing.as_ref().map_or(fresh.created_at, |r| r.created_at),
                ..fresh
            };
            let logged = with_revision(entry, revision, &etag);
            let written = match &existing {
                None => self.store().insert_record(&row, &logged).map(|()| true),
                Some(old) => self.store().replace_record(&row, old.revision, &logged),
            };
            let written = match written {
                Ok(w) => w,
                Err(StorageError::Conflict) => false, // a concurrent create won; go round again
                Err(StorageError::MasterChanged) => {
                    // Sealed under a master that stopped being active (this instance's view was
                    // stale): nothing was written; seal again under the current one.
                    self.keyring().forget_all();
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if written {
                return Ok(PutOutcome {
                    created: existing.is_none(),
                    revision,
                    etag,
                    master_version: version,
                });
            }
            if matches!(
                precondition,
                Precondition::IfMatch(_) | Precondition::IfNoneMatch
            ) {
                // The state the precondition was checked against is gone.
                return Err(VaultError::PreconditionFailed);
            }
            // Another instance won: back off a random 1-20 ms so the losers do not collide again.
            let jitter = zkvault_core::random::array::<1>().map_or(0, |b| b[0] % 20);
            std::thread::sleep(std::time::Duration::from_millis(1 + u64::from(jitter)));
        }
        Err(VaultError::Conflict(
            "record is being written concurrently; retry".into(),
        ))
    }

    /// Reads and opens a record. A wrong resident ID looks exactly like an absent record.
    pub fn get_record(
        &self,
        grant: &Grant,
        raw_id: &str,
        name: &str,
    ) -> Result<Record, VaultError> {
        let (ns, actor) = (grant.namespace(Role::Reader)?, grant.actor());
        self.audited_read(actor.entry("record.get", ns, audit_name(name)), |entry| {
            self.read_record(actor, ns, raw_id, name, entry)
        })
    }

    /// Opens a record for a use case that has authorized the caller; sets `entry`'s
    /// resident tag.
    pub(super) fn read_record(
        &self,
        actor: &Actor,
        ns: &str,
        raw_id: &str,
        name: &str,
        entry: &mut AuditEntry,
    ) -> Result<Record, VaultError> {
        self.check_name(name)?;
        let keys = self.resident(ns, raw_id)?;
        entry.resident_tag = keys.tag.clone();
        let mut row = self
            .store()
            .record(ns, keys.blind_index.as_bytes(), name)?
            .ok_or(VaultError::NotFound)?;
        let (sealed, record_id) = sealed_of(&mut row)?;
        let ctx = RecordContext {
            namespace: ns,
            blind_index: &keys.blind_index,
            record_name: name,
            record_id: &record_id,
        };
        let rk = self.resident_key(ns, &keys, sealed.dek.master_version)?;
        let body = open(&rk, &ctx, &sealed)?;
        self.move_after_read(actor, ns, &keys, &row, &sealed);
        Ok(Record {
            body,
            content_type: row.content_type,
            etag: row.etag,
            revision: row.revision,
        })
    }

    pub fn delete_record(&self, grant: &Grant, raw_id: &str, name: &str) -> Result<(), VaultError> {
        let ns = grant.namespace(Role::Writer)?;
        let mut entry = grant.actor().entry("record.delete", ns, audit_name(name));
        let resident = self
            .check_name(name)
            .and_then(|()| self.resident(ns, raw_id));
        if let Ok(keys) = &resident {
            entry.resident_tag = keys.tag.clone();
        }
        self.audited(entry, |entry| {
            if self
                .store()
                .delete_record(ns, resident?.blind_index.as_bytes(), name, entry)?
            {
                Ok(())
            } else {
                Err(VaultError::NotFound)
            }
        })
    }

    /// The resident's records (metadata only), ordered by name; empty for an unknown resident.
    pub fn list_records(&self, grant: &Grant, raw_id: &str) -> Result<Vec<RecordMeta>, VaultError> {
        let ns = grant.namespace(Role::Reader)?;
        self.audited_read(grant.actor().entry("record.list", ns, ""), |entry| {
            let keys = self.resident(ns, raw_id)?;
            entry.resident_tag = keys.tag.clone();
            Ok(self.store().list_records(ns, keys.blind_index.as_bytes())?)
        })
    }

    /// Right to erasure: deletes every record of the resident in `ns`.
    pub fn erase_resident(&self, grant: &Grant, raw_id: &str) -> Result<u64, VaultError> {
        let ns = grant.namespace(Role::Writer)?;
        let mut entry = grant.actor().entry("resident.erase", ns, "");
        let resident = self.resident(ns, raw_id);
        if let Ok(keys) = &resident {
            entry.resident_tag = keys.tag.clone();
        }
        self.audited(entry, |entry| {
            Ok(self
                .store()
                .erase_resident(ns, resident?.blind_index.as_bytes(), entry)?)
        })
    }
}
