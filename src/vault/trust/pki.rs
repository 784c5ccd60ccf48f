//! Certificates of a trust domain: anchor bundles, CRLs and partner chains checked with
//! maintained X.509 code — RFC 5280 path validation (signatures, validity, basicConstraints,
//! path length, CRLs) by rustls-webpki, parsing and the checks webpki leaves to its caller
//! (key type and size, keyUsage, a CA's own signature) by x509-parser. Nothing is fetched
//! from the network. A refusal names the check that failed and never quotes the input.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};
use webpki::{
    EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter, OwnedCertRevocationList,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::policy::TrustDomainPolicy;

/// Most certificates one bundle or chain may hold.
const MAX_CERTS: usize = 16;

/// Why a certificate, bundle or CRL was refused: `reason` names the check (the API's
/// `reason`), `message` explains it without quoting the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub reason: &'static str,
    pub message: &'static str,
}

const fn refuse(reason: &'static str, message: &'static str) -> Refusal {
    Refusal { reason, message }
}

const MALFORMED: Refusal = refuse("malformed", "not a PEM sequence of X.509 certificates");

/// A partner key the service can encrypt to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartnerKey {
    /// `ECDH-ES+A256KW`.
    P256,
    /// `RSA-OAEP-256`, with the modulus size in bits.
    Rsa(u32),
}

impl PartnerKey {
    pub fn describe(self) -> String {
        match self {
            PartnerKey::P256 => "EC P-256".into(),
            PartnerKey::Rsa(bits) => format!("RSA {bits}"),
        }
    }
}

/// A domain's anchors, as checked at upload: self-issued roots, which webpki trusts, and
/// intermediates, offered to every path.
#[derive(Default)]
pub struct Anchors {
    pub roots: Vec<Vec<u8>>,
    pub intermediates: Vec<Vec<u8>>,
}

impl Anchors {
    fn all(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.roots.iter().chain(&self.intermediates)
    }

    /// The SHA-256 (hex) of each anchor's subject Name: how CRLs are named.
    pub fn name_hashes(&self) -> std::collections::BTreeSet<String> {
        self.all()
            .filter_map(|d| parse(d).ok())
            .map(|c| name_hash(c.subject().as_raw()))
            .collect()
    }
}

fn name_hash(raw: &[u8]) -> String {
    hex::encode(Sha256::digest(raw))
}

/// A partner certificate that chains to its domain's anchors.
pub struct Validated {
    pub key: PartnerKey,
    /// The leaf's SubjectPublicKeyInfo (DER), what the JWE is encrypted to.
    pub spki: Vec<u8>,
    pub thumbprint: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// The certificates of a PEM text, in order (DER); at least one.
pub fn certificates(pem: &str) -> Result<Vec<Vec<u8>>, Refusal> {
    use crate::vault::pem_chain::ChainError;
    let ders = crate::vault::pem_chain::certificates(pem, MAX_CERTS).map_err(|e| match e {
        ChainError::TooMany => refuse("too_many", "more than 16 certificates"),
        _ => MALFORMED,
    })?;
    for der in &ders {
        X509Certificate::from_der(der).map_err(|_| MALFORMED)?;
    }
    Ok(ders)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, Refusal> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|_| MALFORMED)
}

/// `x5t#S256`: base64url SHA-256 of the certificate's DER.
pub fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// A certificate's notAfter, in ms since the epoch.
pub fn not_after(der: &[u8]) -> Option<i64> {
    parse(der)
        .ok()
        .map(|c| c.validity().not_after.timestamp() * 1000)
}

/// SHA-256 of a certificate, hex: how anchors and CRL issuers are named.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn within_validity(cert: &X509Certificate<'_>, now_secs: i64) -> Result<(), Refusal> {
    let v = cert.validity();
    if now_secs < v.not_before.timestamp() {
        return Err(refuse("not_yet_valid", "a certificate is not valid yet"));
    }
    if now_secs > v.not_after.timestamp() {
        return Err(refuse("expired", "a certificate has expired"));
    }
    Ok(())
}

fn self_issued(cert: &X509Certificate<'_>) -> bool {
    cert.subject().as_raw() == cert.issuer().as_raw() && cert.verify_signature(None).is_ok()
}

/// Checks an anchor bundle: every certificate a CA (basicConstraints `cA=true`), valid at
/// `now_secs` if given; self-issued ones are roots, every other one signed by a certificate
/// of the bundle.
pub fn anchors(pem: &str, now_secs: Option<i64>) -> Result<Anchors, Refusal> {
    let ders = certificates(pem)?;
    let certs = ders
        .iter()
        .map(|d| parse(d))
        .collect::<Result<Vec<_>, _>>()?;
    let mut set = Anchors::default();
    for (der, cert) in ders.iter().zip(&certs) {
        let is_ca = cert
            .basic_constraints()
            .map_err(|_| MALFORMED)?
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(refuse(
                "not_a_ca",
                "an anchor lacks basicConstraints cA=true",
            ));
        }
        if let Some(now) = now_secs {
            within_validity(cert, now)?;
        }
        if self_issued(cert) {
            webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
                .map_err(|_| MALFORMED)?;
            set.roots.push(der.clone());
        } else {
            let signed_here = certs.iter().any(|issuer| {
                issuer.subject().as_raw() == cert.issuer().as_raw()
                    && cert.verify_signature(Some(issuer.public_key())).is_ok()
            });
            if !signed_here {
                return Err(refuse(
                    "unknown_issuer",
                    "an intermediate is not signed by a certificate of the bundle",
                ));
            }
            set.intermediates.push(der.clone());
        }
    }
    if set.roots.is_empty() {
        return Err(refuse("no_root", "the bundle holds no self-signed root"));
    }
    // CRLs are matched to CAs by name (RFC 5280, and webpki): two CAs of one name with
    // different keys would share one CRL, and the other's partners would all be refused.
    for (i, a) in certs.iter().enumerate() {
        let twin = certs[i + 1..].iter().any(|b| {
            a.subject().as_raw() == b.subject().as_raw() && a.public_key().raw != b.public_key().raw
        });
        if twin {
            return Err(refuse(
                "duplicate_name",
                "two CAs of the bundle share a name but not a key; anchor one of them",
            ));
        }
    }
    Ok(set)
}

/// A CRL checked against a domain's anchors: `(SHA-256 of its issuer's Name, thisUpdate,
/// nextUpdate, revoked entries)`.
pub struct CheckedCrl {
    pub issuer: String,
    pub this_update: i64,
    pub next_update: Option<i64>,
    pub revoked: usize,
}

/// The DER of a CRL given as PEM (`X509 CRL`) or DER.
pub fn crl_der(body: &[u8]) -> Result<Vec<u8>, Refusal> {
    const BAD: Refusal = refuse("malformed", "not a PEM or DER X.509 CRL");
    if body.starts_with(b"-----") {
        let mut items = x509_parser::pem::Pem::iter_from_buffer(body);
        match items.next() {
            Some(Ok(pem)) if pem.label == "X509 CRL" => Ok(pem.contents),
            _ => Err(BAD),
        }
    } else {
        Ok(body.to_vec())
    }
}

/// Checks that `der` is a CRL that webpki can apply, signed by one of the anchors.
pub fn crl(der: &[u8], anchors: &Anchors, now_secs: i64) -> Result<CheckedCrl, Refusal> {
    const BAD: Refusal = refuse("malformed", "not a PEM or DER X.509 CRL");
    let (_, parsed) = CertificateRevocationList::from_der(der).map_err(|_| BAD)?;
    // A CRL webpki cannot apply (v1, delta, indirect, partitioned) would be ignored at use.
    OwnedCertRevocationList::from_der(der).map_err(|_| {
        refuse(
            "crl_unsupported",
            "a v1, delta, indirect or partitioned CRL, which cannot be applied",
        )
    })?;
    let signer = anchors.all().find_map(|ca| {
        parse(ca).ok().filter(|ca| {
            ca.subject().as_raw() == parsed.issuer().as_raw()
                && parsed.verify_signature(ca.public_key()).is_ok()
        })
    });
    let Some(signer) = signer else {
        return Err(refuse(
            "crl_signature",
            "the CRL is not signed by a CA of this domain",
        ));
    };
    // webpki refuses, at use, a CRL whose issuer may not sign CRLs: every partner under it
    // would then be refused.
    if let Ok(Some(ku)) = signer.key_usage() {
        if !ku.value.crl_sign() {
            return Err(refuse(
                "crl_signature",
                "the CA that signed the CRL lacks the cRLSign key usage",
            ));
        }
    }
    let this_update = parsed.last_update().timestamp();
    if !(0..=now_secs + 86_400).contains(&this_update) {
        return Err(refuse(
            "crl_time",
            "the CRL's thisUpdate is before 1970 or more than a day ahead",
        ));
    }
    // Named by its issuer's name, which is what webpki matches a certificate's issuer to: a
    // CA re-certified under the same name keeps one CRL, and an older one stays stale.
    Ok(CheckedCrl {
        issuer: name_hash(parsed.issuer().as_raw()),
        this_update,
        next_update: parsed.next_update().map(|t| t.timestamp()),
        revoked: parsed.iter_revoked_certificates().count(),
    })
}

/// Accepts any extended key usage: partner certificates carry whatever their CA's profile
/// sets, and the domain, not the EKU, says what a partner is trusted for.
struct AnyPurpose;

impl ExtendedKeyUsageValidator for AnyPurpose {
    fn validate(&self, mut iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        iter.try_for_each(|id| id.map(|_| ()))
    }
}

/// The partner key of `cert`, if the domain accepts it.
fn partner_key(
    cert: &X509Certificate<'_>,
    policy: &TrustDomainPolicy,
) -> Result<PartnerKey, Refusal> {
    let spki = cert.public_key();
    let alg = &spki.algorithm.algorithm;
    let key = if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        if curve != Some(OID_EC_P256) {
            return Err(refuse("unsupported_key", "EC partner keys must be P-256"));
        }
        PartnerKey::P256
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        let bits = spki.parsed().map_err(|_| MALFORMED)?.key_size() as u32;
        if bits < policy.min_rsa_bits {
            return Err(refuse(
                "key_too_small",
                "the RSA key is smaller than the domain's min_rsa_bits",
            ));
        }
        PartnerKey::Rsa(bits)
    } else {
        return Err(refuse(
            "unsupported_key",
            "partner keys must be EC P-256 or RSA",
        ));
    };
    // keyUsage, where present, must allow what the share does with the key.
    if let Some(ku) = cert.key_usage().map_err(|_| MALFORMED)? {
        let allowed = match key {
            PartnerKey::P256 => ku.value.key_agreement(),
            PartnerKey::Rsa(_) => ku.value.key_encipherment(),
        };
        if !allowed {
            return Err(refuse(
                "key_usage",
                "keyUsage does not allow keyAgreement (EC) or keyEncipherment (RSA)",
            ));
        }
    }
    Ok(key)
}

fn path_refusal(e: webpki::Error, leaf: &X509Certificate<'_>) -> Refusal {
    use webpki::Error as E;
    match e {
        E::CertExpired { .. } => refuse("expired", "a certificate of the path has expired"),
        E::CertNotValidYet { .. } => refuse(
            "not_yet_valid",
            "a certificate of the path is not valid yet",
        ),
        E::CertRevoked => refuse(
            "revoked",
            "a certificate of the path is revoked by an imported CRL",
        ),
        E::UnknownIssuer if self_issued(leaf) => refuse(
            "self_signed",
            "the certificate is self-signed, and not an anchor of this domain",
        ),
        E::UnknownIssuer => refuse(
            "unknown_issuer",
            "no path from the certificate to an anchor of this domain",
        ),
        E::InvalidSignatureForPublicKey => {
            refuse("bad_signature", "a signature of the path does not verify")
        }
        E::EndEntityUsedAsCa => refuse(
            "not_a_ca",
            "an issuer of the path lacks basicConstraints cA=true",
        ),
        E::CaUsedAsEndEntity => refuse("ca_as_partner", "the certificate is a CA's"),
        E::PathLenConstraintViolated => refuse("path_length", "a pathLenConstraint is exceeded"),
        E::NameConstraintViolation => refuse("name_constraints", "a name constraint is violated"),
        E::UnsupportedCertVersion => refuse("malformed", "only X.509 v3 certificates are accepted"),
        _ => refuse("untrusted", "the certificate path does not validate"),
    }
}

/// Validates a partner chain (leaf first, then any intermediates) against a domain's
/// anchors and CRLs at `now_secs`, and the leaf's key against the domain's policy.
pub fn validate(
    chain: &[Vec<u8>],
    anchors: &Anchors,
    crls: &[OwnedCertRevocationList],
    policy: &TrustDomainPolicy,
    now_secs: i64,
) -> Result<Validated, Refusal> {
    let leaf_der = chain.first().ok_or(MALFORMED)?;
    let leaf = parse(leaf_der)?;
    if leaf.is_ca() {
        return Err(refuse("ca_as_partner", "the certificate is a CA's"));
    }
    let key = partner_key(&leaf, policy)?;
    if anchors.roots.is_empty() {
        return Err(refuse("no_anchors", "the domain has no anchors yet"));
    }
    // webpki does not check a trust anchor's validity (RFC 5280 leaves it to the relying
    // party); an expired root trusts nothing here.
    let roots: Vec<CertificateDer<'_>> = anchors
        .roots
        .iter()
        .filter(|d| parse(d).is_ok_and(|c| within_validity(&c, now_secs).is_ok()))
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let trust_anchors = roots
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| MALFORMED)?;
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .chain(&anchors.intermediates)
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let leaf_cert = CertificateDer::from(leaf_der.as_slice());
    let ee = EndEntityCert::try_from(&leaf_cert).map_err(|e| path_refusal(e, &leaf))?;
    let crl_refs: Vec<webpki::CertRevocationList<'_>> =
        crls.iter().map(|c| c.clone().into()).collect();
    let crl_refs: Vec<&webpki::CertRevocationList<'_>> = crl_refs.iter().collect();
    let revocation = RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
        b.with_depth(RevocationCheckDepth::Chain)
            .with_status_policy(UnknownStatusPolicy::Allow)
            .build()
    });
    let time = UnixTime::since_unix_epoch(Duration::from_secs(now_secs.max(0) as u64));
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &trust_anchors,
        &intermediates,
        time,
        AnyPurpose,
        revocation,
        None,
    )
    .map_err(|e| path_refusal(e, &leaf))?;
    Ok(Validated {
        key,
        spki: leaf.public_key().raw.to_vec(),
        thumbprint: thumbprint(leaf_der),
        not_before: leaf.validity().not_before.timestamp(),
        not_after: leaf.validity().not_after.timestamp(),
    })
}
