//! The one reader of PEM certificate chains, for signer certificates and partner chains:
//! `CERTIFICATE` blocks only, in order, at least one and at most a bound.

use x509_parser::pem::Pem;

/// Why a PEM text is not a certificate chain; each caller words it its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChainError {
    NotPem,
    NotCertificate,
    TooMany,
    Empty,
}

/// The DER of each `CERTIFICATE` block of `pem`, in order; at most `max`.
pub(super) fn certificates(pem: &str, max: usize) -> Result<Vec<Vec<u8>>, ChainError> {
    let mut der = Vec::new();
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|_| ChainError::NotPem)?;
        if block.label != "CERTIFICATE" {
            return Err(ChainError::NotCertificate);
        }
        der.push(block.contents);
        if der.len() > max {
            return Err(ChainError::TooMany);
        }
    }
    if der.is_empty() {
        return Err(ChainError::Empty);
    }
    Ok(der)
}
