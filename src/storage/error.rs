//! Typed storage errors. Messages never carry a password, a resident ID or key material.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The database cannot be reached or did not answer in time (down, pool timeout, busy,
    /// serialization failure). Worth retrying; the service answers 503.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A unique constraint rejected the write (the row already exists).
    #[error("conflict: the row already exists")]
    Conflict,
    /// A record write or move found its master no longer in a state that allows it (rotated,
    /// compromised or destroyed since the caller looked). Nothing was written; plan again.
    #[error("the master this change was planned on has changed state")]
    MasterChanged,
    /// The row to update does not exist.
    #[error("not found")]
    NotFound,
    /// A row could not be read back into its type, or a written row broke a CHECK /
    /// NOT NULL constraint (a malformed row, never a transient condition).
    #[error("unreadable or malformed row: {0}")]
    Corrupt(String),
    /// A MACed row (credential, master, KEK) failed authentication: written outside zkvault.
    /// Names the row, never its contents.
    #[error("row failed authentication: {0}")]
    Integrity(String),
    /// The head of the audit chain a write was to be appended to is not one zkvault wrote:
    /// that chain is set aside and the write goes to a new one.
    #[error("an audit chain's head failed authentication")]
    ForgedChainHead,
    /// Applying the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
}

impl From<DieselError> for StorageError {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => Self::Conflict,
            DieselError::DatabaseError(
                kind @ (DatabaseErrorKind::CheckViolation
                | DatabaseErrorKind::NotNullViolation
                | DatabaseErrorKind::ForeignKeyViolation),
                info,
            ) => Self::Corrupt(format!("{kind:?}: {}", info.message())),
            DieselError::DatabaseError(_, info) => Self::Unavailable(info.message().to_owned()),
            DieselError::NotFound => Self::NotFound,
            DieselError::DeserializationError(e) => Self::Corrupt(e.to_string()),
            DieselError::SerializationError(e) => Self::Corrupt(e.to_string()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}
