//! Resident IDs: normalised once, then used as bytes by every formula; never printable.

use thiserror::Error;
use zeroize::Zeroizing;

use crate::verhoeff;

const MAX_LEN: usize = 64;

/// Why a resident ID was refused. Carries no part of the ID, so it is safe to log or return.
#[derive(Debug, Error, PartialEq, Eq, Clone, Copy)]
pub enum ResidentIdError {
    #[error(
        "resident id must be 1-64 characters of [0-9A-Za-z._-], starting with a letter or digit"
    )]
    Malformed,
    #[error("resident id fails the namespace's checksum")]
    Checksum,
}

/// An extra check a namespace may require of its IDs, on top of the v1 pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChecksumScheme {
    #[default]
    None,
    /// The last character is the Verhoeff check digit of the others (MOSIP's UIN).
    Verhoeff,
}

/// What a resident ID must match once trimmed of ASCII whitespace (a regular expression).
pub const RESIDENT_ID_PATTERN: &str = "^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$";

/// A normalised resident ID: trimmed of ASCII whitespace and matching [`RESIDENT_ID_PATTERN`].
///
/// Treated as a secret: zeroized on drop, with no `Debug`, `Display`, `Clone` or `Serialize`, so
/// it cannot reach a log line or a response body by accident.
pub struct ResidentId(Zeroizing<String>);

impl ResidentId {
    pub fn parse(raw: &str) -> Result<Self, ResidentIdError> {
        let trimmed = raw.trim_matches(|c: char| c.is_ascii_whitespace());
        let bytes = trimmed.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= MAX_LEN
            && bytes[0].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(ResidentIdError::Malformed);
        }
        Ok(ResidentId(Zeroizing::new(trimmed.to_owned())))
    }

    /// Parses, then applies a namespace's checksum scheme.
    pub fn parse_with(raw: &str, scheme: ChecksumScheme) -> Result<Self, ResidentIdError> {
        let id = Self::parse(raw)?;
        match scheme {
            ChecksumScheme::None => Ok(id),
            ChecksumScheme::Verhoeff if verhoeff::validate(id.as_str()) => Ok(id),
            ChecksumScheme::Verhoeff => Err(ResidentIdError::Checksum),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_ascii_whitespace_only() {
        assert_eq!(ResidentId::parse(" \t12\r\n").unwrap().as_str(), "12");
        // U+00A0 (no-break space) is not ASCII whitespace: it stays and is then rejected.
        assert!(ResidentId::parse("\u{a0}12").is_err());
    }

    #[test]
    fn verhoeff_scheme_is_enforced() {
        assert!(ResidentId::parse_with("2363", ChecksumScheme::Verhoeff).is_ok());
        assert_eq!(
            ResidentId::parse_with("2364", ChecksumScheme::Verhoeff).err(),
            Some(ResidentIdError::Checksum)
        );
        assert!(ResidentId::parse_with("2364", ChecksumScheme::None).is_ok());
    }
}
