use crate::keystore::KeystoreError;
use crate::storage::StorageError;

/// What a vault use case can answer. The HTTP layer maps each variant to one status code;
/// no variant carries a resident ID, key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{0}")]
    BadInput(String),
    #[error("missing or unknown credential")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("unknown namespace")]
    UnknownNamespace,
    /// A signer the policy does not declare, or a version it does not have.
    #[error("unknown signer or signer version")]
    UnknownSigner,
    /// A trust domain the policy does not declare.
    #[error("unknown trust domain")]
    UnknownDomain,
    /// A partner not registered in the domain.
    #[error("unknown partner")]
    UnknownPartner,
    /// The partner's current certificate is revoked, expired or no longer chains.
    #[error("partner certificate not trusted")]
    PartnerUntrusted,
    /// A certificate, anchor bundle or CRL failed a check (the check is named).
    #[error("{0}")]
    CertificateRefused(super::trust::Refusal),
    #[error("{0}")]
    Conflict(String),
    #[error("precondition failed")]
    PreconditionFailed,
    #[error("record body of {size} bytes exceeds the namespace limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// The record's master was destroyed: its content is gone for good.
    #[error("record was crypto-shredded")]
    Shredded,
    /// A stored record or wrapped key failed authentication.
    #[error("stored data failed authentication")]
    Integrity,
    #[error("storage unavailable: {0}")]
    StorageUnavailable(String),
    #[error("keystore unavailable: {0}")]
    KeystoreUnavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl VaultError {
    /// The stable code clients see in `{"error": ...}` and the audit trail records as outcome.
    pub fn code(&self) -> &'static str {
        match self {
            VaultError::BadInput(_) => "bad_request",
            VaultError::Unauthenticated => "unauthenticated",
            VaultError::Forbidden(_) => "forbidden",
            VaultError::NotFound => "not_found",
            VaultError::UnknownNamespace => "unknown_namespace",
            VaultError::UnknownSigner => "unknown_signer",
            VaultError::UnknownDomain => "unknown_domain",
            VaultError::UnknownPartner => "unknown_partner",
            VaultError::PartnerUntrusted => "partner_untrusted",
            VaultError::CertificateRefused(_) => "certificate_refused",
            VaultError::Conflict(_) => "conflict",
            VaultError::PreconditionFailed => "precondition_failed",
            VaultError::TooLarge { .. } => "payload_too_large",
            VaultError::Shredded => "shredded",
            VaultError::Integrity => "integrity",
            VaultError::StorageUnavailable(_) | VaultError::KeystoreUnavailable(_) => "unavailable",
            VaultError::Internal(_) => "internal",
        }
    }
}

impl From<StorageError> for VaultError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Unavailable(m) => VaultError::StorageUnavailable(m),
            StorageError::NotFound => VaultError::NotFound,
            StorageError::Integrity(_) => VaultError::Integrity,
            StorageError::Conflict => VaultError::Conflict("concurrent change".into()),
            StorageError::MasterChanged => {
                VaultError::Conflict("the namespace's masters changed concurrently; retry".into())
            }
            other => VaultError::Internal(other.to_string()),
        }
    }
}

impl From<KeystoreError> for VaultError {
    fn from(e: KeystoreError) -> Self {
        match e {
            KeystoreError::Unwrap => VaultError::Integrity,
            // The database was rolled back behind the keystore's anchor, or two writers raced.
            KeystoreError::AnchorRegression { .. } => VaultError::Integrity,
            KeystoreError::Unavailable(m) => VaultError::KeystoreUnavailable(m),
            // The stored keys name a KEK this keystore does not hold: an instance left on the
            // old keystore after a migration. Unavailable until it is restarted on the new one.
            e @ KeystoreError::UnknownVersion(_) => VaultError::KeystoreUnavailable(e.to_string()),
            // Lost a race with another process's KEK change: retrying sees the new state.
            e @ KeystoreError::State { .. } => VaultError::Conflict(e.to_string()),
            other => VaultError::Internal(other.to_string()),
        }
    }
}

impl From<zkvault_core::CryptoError> for VaultError {
    fn from(e: zkvault_core::CryptoError) -> Self {
        match e {
            zkvault_core::CryptoError::Rng => {
                VaultError::Internal("random number generator failed".into())
            }
            _ => VaultError::Integrity,
        }
    }
}

impl From<zkvault_core::IntegrityError> for VaultError {
    fn from(_: zkvault_core::IntegrityError) -> Self {
        VaultError::Integrity
    }
}
