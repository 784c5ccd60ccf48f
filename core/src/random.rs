//! Randomness, always from the operating system's CSPRNG.

use crate::CryptoError;

/// Fills `buf` from the OS CSPRNG (getrandom(2) on Linux).
pub fn fill(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|_| CryptoError::Rng)
}

/// Returns `N` random bytes.
pub fn array<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    fill(&mut out)?;
    Ok(out)
}
