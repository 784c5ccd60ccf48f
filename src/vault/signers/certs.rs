//! PKCS#10 requests for a signing key (rcgen, signed through the keystore) and the certificate
//! chains issued for them (parsed with x509-parser). No DER is written here.

use rcgen::{CertificateParams, DistinguishedName, DnType, PublicKeyData, SignatureAlgorithm};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};

use super::jose::KeystoreSigner;
use crate::vault::VaultError;

/// Largest certificate chain accepted, in certificates.
pub(super) const MAX_CHAIN: usize = 8;

/// The key a CSR is for: its public point and the keystore that signs for it.
struct CsrKey<'a> {
    point: &'a [u8],
    signer: &'a KeystoreSigner,
}

impl PublicKeyData for CsrKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for CsrKey<'_> {
    /// X.509 carries ECDSA signatures DER-encoded; the keystore answers `r || s`, which the
    /// p256 crate re-encodes.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        use josekit::jws::JwsSigner;
        let raw = self
            .signer
            .sign(msg)
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        let sig =
            p256::ecdsa::Signature::from_slice(&raw).map_err(|_| rcgen::Error::RemoteKeyError)?;
        Ok(sig.to_der().as_bytes().to_vec())
    }
}

/// A PEM PKCS#10 request for `point`, signed by its private key through `signer`.
pub(super) fn csr_pem(
    point: &[u8],
    signer: &KeystoreSigner,
    subject: &[(String, String)],
) -> Result<String, VaultError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for (attr, value) in subject {
        let kind = match attr.as_str() {
            "CN" => DnType::CommonName,
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            "C" => DnType::CountryName,
            "ST" => DnType::StateOrProvinceName,
            "L" => DnType::LocalityName,
            _ => continue, // the policy admits no other
        };
        dn.push(kind, value.as_str());
    }
    params.distinguished_name = dn;
    let key = CsrKey { point, signer };
    let csr = params
        .serialize_request(&key)
        .map_err(|e| match signer.take_failure() {
            Some(e) => e.into(),
            None => VaultError::Internal(format!("CSR: {e}")),
        })?;
    csr.pem()
        .map_err(|e| VaultError::Internal(format!("CSR PEM: {e}")))
}

/// A chain checked for attachment: its DER certificates, leaf first, and the leaf's `notAfter`.
pub(super) struct CheckedChain {
    pub der: Vec<Vec<u8>>,
    pub not_after_ms: i64,
}

/// The DER certificates of a PEM chain, in order; only `CERTIFICATE` blocks, at most
/// [`MAX_CHAIN`].
fn parse_chain(pem: &str) -> Result<Vec<Vec<u8>>, VaultError> {
    use crate::vault::pem_chain::{certificates, ChainError};
    certificates(pem, MAX_CHAIN).map_err(|e| match e {
        ChainError::NotPem => bad("not PEM"),
        ChainError::NotCertificate => bad("only CERTIFICATE blocks are accepted"),
        ChainError::TooMany => bad(&format!("more than {MAX_CHAIN} certificates")),
        ChainError::Empty => bad("no certificate"),
    })
}

fn bad(why: &str) -> VaultError {
    VaultError::BadInput(format!("certificate chain: {why}"))
}

/// Parses a PEM chain (leaf first) and checks that the leaf certifies `point` on P-256, is
/// valid at `now_ms`, and that each certificate is named and signed by the next. Refusals never
/// quote the input.
pub(super) fn check_chain(
    pem: &str,
    point: &[u8],
    now_ms: i64,
) -> Result<CheckedChain, VaultError> {
    let der = parse_chain(pem)?;
    let certs = der
        .iter()
        .map(|d| {
            x509_parser::parse_x509_certificate(d)
                .ok()
                .filter(|(rest, _)| rest.is_empty())
                .map(|(_, c)| c)
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad("a block is not an X.509 certificate"))?;
    let leaf = &certs[0];
    let spki = leaf.public_key();
    let on_p256 = spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
        && spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|oid| oid == OID_EC_P256);
    if !on_p256 || spki.subject_public_key.data.as_ref() != point {
        return Err(bad(
            "the first certificate's public key is not this key version's",
        ));
    }
    let validity = leaf.validity();
    let (from, until) = (
        validity.not_before.timestamp() * 1000,
        validity.not_after.timestamp() * 1000,
    );
    if now_ms < from || now_ms > until {
        return Err(bad("the first certificate is not valid now"));
    }
    for pair in certs.windows(2) {
        let issued = pair[0].issuer().as_raw() == pair[1].subject().as_raw()
            && pair[0].verify_signature(Some(pair[1].public_key())).is_ok();
        if !issued {
            return Err(bad(
                "each certificate must be issued (named and signed) by the next one",
            ));
        }
    }
    drop(certs);
    Ok(CheckedChain {
        der,
        not_after_ms: until,
    })
}
