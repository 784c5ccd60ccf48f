//! Exit codes, mapped in one place from the typed errors, and how a failure is reported.
//! The table is documented in README.md ("Exit codes"); scripts rely on it, so codes are never
//! renumbered.

use zkvault::app::StartupError;
use zkvault::config::ConfigError;
use zkvault::keystore::KeystoreError;
use zkvault::policy::PolicyErrors;
use zkvault::storage::StorageError;
use zkvault::vault::VaultError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// A bug or an unexpected failure.
    Internal = 1,
    /// Invalid arguments (clap's own code for its errors).
    Usage = 2,
    /// The deployment as configured cannot be opened: config, policy, keystore (wrong PIN or
    /// passphrase, missing pin_file, a keystore that does not hold this database's keys).
    Config = 3,
    NotFound = 4,
    /// The current state does not allow it (already done, changed concurrently).
    Conflict = 5,
    /// Refused: an irreversible action without confirmation, or one the policy forbids.
    Refused = 6,
    /// The database or keystore cannot be reached now: retrying later may succeed.
    Unavailable = 7,
    /// Stored data or the audit trail failed verification (edited, deleted, wrong key).
    Integrity = 8,
    /// Stopped by SIGINT after a whole batch (reencrypt), checkpoint kept: rerun to resume.
    Interrupted = 130,
}

impl Exit {
    /// Stable name, used in `--json` error output.
    pub fn name(self) -> &'static str {
        match self {
            Exit::Internal => "internal",
            Exit::Usage => "usage",
            Exit::Config => "config",
            Exit::NotFound => "not_found",
            Exit::Conflict => "conflict",
            Exit::Refused => "refused",
            Exit::Unavailable => "unavailable",
            Exit::Integrity => "integrity",
            Exit::Interrupted => "interrupted",
        }
    }
}

/// A failure the CLI itself detects, with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
}

pub fn fail(exit: Exit, message: impl Into<String>) -> anyhow::Error {
    CliError {
        exit,
        message: message.into(),
    }
    .into()
}

/// The exit code of `e`: the first typed error in its chain decides.
pub fn code_of(e: &anyhow::Error) -> Exit {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<CliError>() {
            return c.exit;
        }
        if let Some(s) = cause.downcast_ref::<StartupError>() {
            return startup(s);
        }
        if let Some(v) = cause.downcast_ref::<VaultError>() {
            return vault(v);
        }
        if cause.is::<ConfigError>() || cause.is::<PolicyErrors>() {
            return Exit::Config;
        }
        if let Some(s) = cause.downcast_ref::<StorageError>() {
            return storage(s);
        }
        if let Some(k) = cause.downcast_ref::<KeystoreError>() {
            return match k {
                KeystoreError::Unavailable(_) => Exit::Unavailable,
                KeystoreError::AnchorRegression { .. } => Exit::Integrity,
                _ => Exit::Internal,
            };
        }
    }
    Exit::Internal
}

fn startup(e: &StartupError) -> Exit {
    match e {
        StartupError::Storage(StorageError::Unavailable(_)) => Exit::Unavailable,
        StartupError::Vault(VaultError::StorageUnavailable(_)) => Exit::Unavailable,
        // Opening waits for a key change in progress elsewhere (the key lock), then gives up.
        StartupError::Vault(VaultError::Conflict(_)) => Exit::Conflict,
        // A MACed row or the audit anchor says the database was written outside zkvault.
        StartupError::Vault(VaultError::Integrity) => Exit::Integrity,
        StartupError::Config(_)
        | StartupError::Policy(_)
        | StartupError::Keystore(_)
        | StartupError::Storage(_)
        | StartupError::Vault(_)
        | StartupError::Io(..) => Exit::Config,
    }
}

fn vault(e: &VaultError) -> Exit {
    match e {
        VaultError::BadInput(_)
        | VaultError::TooLarge { .. }
        | VaultError::CertificateRefused(_) => Exit::Usage,
        VaultError::NotFound
        | VaultError::UnknownNamespace
        | VaultError::UnknownSigner
        | VaultError::UnknownDomain
        | VaultError::UnknownPartner
        | VaultError::Shredded => Exit::NotFound,
        VaultError::Conflict(_) | VaultError::PreconditionFailed | VaultError::PartnerUntrusted => {
            Exit::Conflict
        }
        VaultError::Unauthenticated | VaultError::Forbidden(_) => Exit::Refused,
        VaultError::StorageUnavailable(_) | VaultError::KeystoreUnavailable(_) => Exit::Unavailable,
        VaultError::Integrity => Exit::Integrity,
        VaultError::Internal(_) => Exit::Internal,
    }
}

fn storage(e: &StorageError) -> Exit {
    match e {
        StorageError::Unavailable(_) => Exit::Unavailable,
        StorageError::NotFound => Exit::NotFound,
        StorageError::Conflict | StorageError::MasterChanged => Exit::Conflict,
        StorageError::Integrity(_) | StorageError::ForgedChainHead => Exit::Integrity,
        StorageError::Corrupt(_) | StorageError::Migration(_) => Exit::Internal,
    }
}

/// The error's message: each cause once (typed errors often repeat their source's text).
pub fn message(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}
