//! Signer key pairs on the token.
//!
//! Generated with `CKM_EC_KEY_PAIR_GEN` on P-256. The private key is a token object, private,
//! sensitive, never extractable, `CKA_SIGN` only, labelled `zkvault-sign` with a random 16-byte
//! `CKA_ID`; the public key is a session object, read once for its point and then gone (the
//! database keeps the point, MACed). Signing is `CKM_ECDSA` over a SHA-256 digest, which
//! answers the raw `r || s` of JWS ES256.

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use p256::pkcs8::der::asn1::OctetString;
use p256::pkcs8::der::{Decode, Encode};
use p256::pkcs8::AssociatedOid;
use p256::NistP256;

use super::session::require_login;
use crate::keystore::EC_POINT_LEN;

const LABEL: &str = "zkvault-sign";
/// Length of a signing key's random `CKA_ID`.
pub(super) const ID_LEN: usize = 16;

/// Generates a key pair whose private half has `CKA_ID` `id`; returns the public point
/// (uncompressed SEC1), or `None` if the token answered something that is not a P-256 point.
pub(super) fn generate(s: &Session, id: &[u8]) -> Result<Option<Vec<u8>>, CkError> {
    require_login(s)?;
    let params = NistP256::OID
        .to_der()
        .expect("a constant OID always encodes");
    let public = [
        Attribute::Token(false),
        Attribute::KeyType(KeyType::EC),
        Attribute::EcParams(params),
        Attribute::Verify(true),
    ];
    let private = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Derive(false),
        Attribute::Unwrap(false),
        Attribute::Label(LABEL.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    let (pub_handle, _) = s.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)?;
    let point = s
        .get_attributes(pub_handle, &[AttributeType::EcPoint])?
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        });
    s.destroy_object(pub_handle)?;
    Ok(point.and_then(|p| sec1_point(&p)))
}

/// `CKA_EC_POINT` as the SEC1 point: PKCS#11 says a DER OCTET STRING, and some tokens give
/// the bare point.
fn sec1_point(value: &[u8]) -> Option<Vec<u8>> {
    let point = match OctetString::from_der(value) {
        Ok(octets) => octets.as_bytes().to_vec(),
        Err(_) => value.to_vec(),
    };
    (point.len() == EC_POINT_LEN && point[0] == 0x04).then_some(point)
}

/// The private key object with `CKA_ID` `id`, if the token holds one.
pub(super) fn find(s: &Session, id: &[u8]) -> Result<Option<ObjectHandle>, CkError> {
    require_login(s)?;
    Ok(s.find_objects(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Token(true),
        Attribute::Label(LABEL.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ])?
    .into_iter()
    .next())
}

pub(super) fn sign(s: &Session, key: ObjectHandle, digest: &[u8; 32]) -> Result<Vec<u8>, CkError> {
    s.sign(&Mechanism::Ecdsa, key, digest)
}

/// Destroys every private key object with `CKA_ID` `id` (none left is success).
pub(super) fn destroy(s: &Session, id: &[u8]) -> Result<(), CkError> {
    while let Some(h) = find(s, id)? {
        s.destroy_object(h)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ec_point_is_read_wrapped_or_bare() {
        let mut point = vec![0x04];
        point.extend([7u8; 64]);
        let wrapped = OctetString::new(point.clone()).unwrap().to_der().unwrap();
        assert_eq!(sec1_point(&wrapped), Some(point.clone()));
        assert_eq!(sec1_point(&point), Some(point.clone()));
        assert_eq!(sec1_point(&point[..64]), None);
    }

    #[test]
    fn p256_params_are_the_named_curve_oid() {
        // The DER NOTES.md gives for CKA_EC_PARAMS, checked against the crate's encoding.
        assert_eq!(
            NistP256::OID.to_der().unwrap(),
            [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]
        );
    }
}
