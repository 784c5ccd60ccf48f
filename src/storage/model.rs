//! Row types. None of them holds a resident ID or plaintext: records carry only the blind index
//! (a keyed pseudonym) and ciphertext, masters and index keys only wrapped material.
//!
//! `Debug` is written by hand: byte columns print as their length, so a stray `{:?}` never puts a
//! blind index, wrapped key, ciphertext or password hash into a log.

use std::fmt;

use diesel::prelude::*;

use super::schema::{credentials, index_keys, integrity_key, keks, masters, records};
use crate::states::{KekState, MasterState, Roles};

/// Prints `<N bytes>` instead of the bytes.
struct Len<'a>(&'a [u8]);

impl fmt::Debug for Len<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// A KEK version's metadata. The key itself never leaves the keystore.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = keks, primary_key(version), treat_none_as_null = true)]
pub struct KekRow {
    pub version: i32,
    pub state: KekState,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    pub destroyed_at: Option<i64>,
    /// The keystore holding this version ([`crate::keystore::Keystore::id`]).
    pub keystore: String,
}

/// A derivation master, stored only wrapped under a KEK.
#[derive(Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = masters, primary_key(namespace, version), treat_none_as_null = true)]
pub struct MasterRow {
    pub namespace: String,
    pub version: i32,
    pub state: MasterState,
    pub compromised_at: Option<i64>,
    pub kek_version: i32,
    /// `None` once destroyed (crypto-shredding).
    pub wrapped: Option<Vec<u8>>,
    pub salt: Vec<u8>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl fmt::Debug for MasterRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterRow")
            .field("namespace", &self.namespace)
            .field("version", &self.version)
            .field("state", &self.state)
            .field("compromised_at", &self.compromised_at)
            .field("kek_version", &self.kek_version)
            .field("wrapped", &self.wrapped.as_deref().map(Len))
            .field("salt", &Len(&self.salt))
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// A namespace's index key, stored only wrapped under a KEK.
#[derive(Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = index_keys, primary_key(namespace))]
pub struct IndexKeyRow {
    pub namespace: String,
    pub kek_version: i32,
    pub wrapped: Vec<u8>,
    pub created_at: i64,
}

impl fmt::Debug for IndexKeyRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexKeyRow")
            .field("namespace", &self.namespace)
            .field("kek_version", &self.kek_version)
            .field("wrapped", &Len(&self.wrapped))
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// The deployment's integrity key, wrapped under a KEK (one row, `id` 1).
#[derive(Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = integrity_key, primary_key(id))]
pub struct IntegrityKeyRow {
    pub id: i32,
    pub kek_version: i32,
    pub wrapped: Vec<u8>,
    pub created_at: i64,
}

impl fmt::Debug for IntegrityKeyRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntegrityKeyRow")
            .field("kek_version", &self.kek_version)
            .field("wrapped", &Len(&self.wrapped))
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// One sealed record. `id` is the record's 16-byte UUID, fixed for its life.
#[derive(Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = records, primary_key(id))]
pub struct RecordRow {
    pub id: Vec<u8>,
    pub namespace: String,
    pub blind_index: Vec<u8>,
    pub name: String,
    pub format: i32,
    pub master_version: i32,
    pub dek_nonce: Vec<u8>,
    pub wrapped_dek: Vec<u8>,
    pub body_nonce: Vec<u8>,
    pub body_ciphertext: Vec<u8>,
    pub content_type: String,
    pub plaintext_len: i64,
    pub revision: i64,
    pub etag: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl fmt::Debug for RecordRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordRow")
            .field("id", &Len(&self.id))
            .field("namespace", &self.namespace)
            .field("blind_index", &Len(&self.blind_index))
            .field("name", &self.name)
            .field("format", &self.format)
            .field("master_version", &self.master_version)
            .field("dek_nonce", &Len(&self.dek_nonce))
            .field("wrapped_dek", &Len(&self.wrapped_dek))
            .field("body_nonce", &Len(&self.body_nonce))
            .field("body_ciphertext", &Len(&self.body_ciphertext))
            .field("content_type", &self.content_type)
            .field("plaintext_len", &self.plaintext_len)
            .field("revision", &self.revision)
            .field("etag", &self.etag)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// What moving a record to another master needs: its position and DEK envelope, not its body
/// (on SQLite a ~2 KiB body lives in overflow pages that this projection never reads).
#[derive(Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = records)]
pub struct RecordKeys {
    pub id: Vec<u8>,
    pub blind_index: Vec<u8>,
    pub name: String,
    pub format: i32,
    pub master_version: i32,
    /// The revision a move is planned from: the move applies only while it is still current.
    pub revision: i64,
    pub dek_nonce: Vec<u8>,
    pub wrapped_dek: Vec<u8>,
}

/// A record's listing entry: no key or ciphertext column is loaded.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = records)]
pub struct RecordMeta {
    pub name: String,
    pub revision: i64,
    pub etag: String,
    pub content_type: String,
    pub plaintext_len: i64,
    pub updated_at: i64,
}

/// An API credential. Only the Argon2id hash of its secret is stored.
#[derive(Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = credentials, primary_key(id), treat_none_as_null = true)]
pub struct CredentialRow {
    /// Public token id (e.g. 16 hex chars).
    pub id: String,
    pub label: String,
    pub roles: Roles,
    /// Comma-separated namespaces, `*` = all.
    pub namespaces: String,
    /// Argon2id PHC string.
    pub secret_hash: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The credential this one replaced by rotation (the same holder's).
    pub rotated_from: Option<String>,
}

/// A credential row as listed: no hash, roles as stored.
#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = credentials)]
pub struct CredentialListing {
    pub id: String,
    pub label: String,
    /// Comma-separated roles.
    pub roles: String,
    /// Comma-separated namespaces, `*` = all.
    pub namespaces: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl fmt::Debug for CredentialRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialRow")
            .field("id", &self.id)
            .field("label", &self.label)
            .field("roles", &self.roles)
            .field("namespaces", &self.namespaces)
            .field("secret_hash", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .field("rotated_from", &self.rotated_from)
            .finish()
    }
}
