//! ES256 signing keys as keystores hold them.
//!
//! A key pair lives either on a token (PKCS#11: generated there, private half sensitive and
//! never extractable) or sealed under a KEK (the soft keystore: the P-256 scalar wrapped like a
//! master, bound to its signer and version as associated data). Either way the database holds
//! only the public key and a [`SigningKeyRef`]; signing goes through the keystore, which takes
//! a SHA-256 digest and answers the raw `r || s` that JWS ES256 carries.

use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use zkvault_core::{Secret32, WrapContext};

use super::{Keystore, KeystoreError};

/// Length of an uncompressed SEC1 P-256 point: `0x04 || x || y`.
pub const EC_POINT_LEN: usize = 65;
/// Length of an ES256 signature: `r || s`.
pub const SIGNATURE_LEN: usize = 64;

/// Where a signing key's private half is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningKeyRef {
    /// On the token: its private key object's `CKA_ID`.
    Token { id: Vec<u8> },
    /// Sealed under KEK `kek_version` (what the soft keystore holds; any keystore whose KEKs
    /// unwrap it can sign with it, so a keystore migration keeps it).
    Sealed { kek_version: u32, wrapped: Vec<u8> },
}

/// A key pair just generated: its public key (uncompressed SEC1) and where the private half is.
pub struct NewSigningKey {
    pub public: Vec<u8>,
    pub key: SigningKeyRef,
}

/// Generates a P-256 scalar from the OS CSPRNG and seals it under `kek_version`.
pub(super) fn generate_sealed(
    keystore: &dyn Keystore,
    kek_version: u32,
    ctx: &WrapContext,
) -> Result<NewSigningKey, KeystoreError> {
    let (secret, key) = loop {
        let secret = Secret32::random()
            .map_err(|_| KeystoreError::Unavailable("OS random number generator failed".into()))?;
        // Zero or a value at or above the group order (odds ~2^-32): draw again.
        if let Ok(key) = SigningKey::from_slice(secret.expose()) {
            break (secret, key);
        }
    };
    let public = key.verifying_key().to_sec1_point(false).as_bytes().to_vec();
    let wrapped = keystore.wrap(kek_version, ctx, &secret)?;
    Ok(NewSigningKey {
        public,
        key: SigningKeyRef::Sealed {
            kek_version,
            wrapped,
        },
    })
}

/// Signs `digest` with a sealed key: unwrapped for this one signature, then dropped (zeroized).
pub(super) fn sign_sealed(
    keystore: &dyn Keystore,
    ctx: &WrapContext,
    kek_version: u32,
    wrapped: &[u8],
    digest: &[u8; 32],
) -> Result<[u8; SIGNATURE_LEN], KeystoreError> {
    let secret = keystore.unwrap(kek_version, ctx, wrapped)?;
    let key = SigningKey::from_slice(secret.expose()).map_err(|_| KeystoreError::Unwrap)?;
    let signature: Signature = key
        .sign_prehash(digest)
        .map_err(|_| KeystoreError::Unavailable("ECDSA signing failed".into()))?;
    Ok(signature.to_bytes().into())
}

/// The error for a token key handed to a keystore without a token.
pub(super) fn no_token() -> KeystoreError {
    KeystoreError::Config(
        "this signing key was generated on a PKCS#11 token: configure the PKCS#11 keystore".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use p256::ecdsa::VerifyingKey;
    use sha2::{Digest, Sha256};
    use zkvault_core::KeyKind;

    use crate::keystore::soft::{SoftKeystore, SoftKeystoreOptions};
    use crate::secret::SecretString;

    #[test]
    fn a_sealed_key_signs_for_its_public_key_and_only_in_its_context() {
        let dir = tempfile::tempdir().unwrap();
        let ks = SoftKeystore::create(
            &dir.path().join("keystore"),
            &SecretString::new("pw"),
            SoftKeystoreOptions::for_tests(),
        )
        .unwrap();
        let kek = ks.create_kek().unwrap();
        let ctx = WrapContext::new("credential", KeyKind::SigningKey, 1);
        let new = generate_sealed(&ks, kek, &ctx).unwrap();
        assert_eq!(new.public.len(), EC_POINT_LEN);
        let SigningKeyRef::Sealed { wrapped, .. } = &new.key else {
            panic!("the soft keystore seals")
        };
        let digest: [u8; 32] = Sha256::digest(b"header.payload").into();
        let sig = sign_sealed(&ks, &ctx, kek, wrapped, &digest).unwrap();
        let vk = VerifyingKey::from_sec1_bytes(&new.public).unwrap();
        vk.verify_prehash(&digest, &Signature::from_slice(&sig).unwrap())
            .unwrap();
        // Moved to another signer or version, the sealed key does not open.
        let other = WrapContext::new("credential", KeyKind::SigningKey, 2);
        assert!(matches!(
            sign_sealed(&ks, &other, kek, wrapped, &digest),
            Err(KeystoreError::Unwrap)
        ));
    }
}
