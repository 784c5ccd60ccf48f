use thiserror::Error;

/// The one opaque failure of opening or rewrapping a record: wrong key, wrong context, a flipped
/// byte or a moved row all look the same, so a caller cannot learn which.
#[derive(Debug, Error, PartialEq, Eq, Clone, Copy)]
#[error("record failed authentication")]
pub struct IntegrityError;

/// Errors of the crypto core that are not authentication failures.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    #[error("unsupported record format version {0}")]
    UnsupportedFormat(u8),
    #[error("malformed stored record: {0}")]
    Malformed(&'static str),
    #[error("operating-system random number generator failed")]
    Rng,
}
