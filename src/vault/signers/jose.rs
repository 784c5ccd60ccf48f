//! JOSE through josekit: compact JWS and JWT serialization, JWKs and verification. The
//! signature itself comes from the keystore ([`KeystoreSigner`]), so josekit never holds a
//! private key; RFC 7638 thumbprints are computed here from the JWK's required members.

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use josekit::jwk::Jwk;
use josekit::jws::{JwsAlgorithm, JwsHeader, JwsSigner, JwsVerifier, ES256};
use josekit::JoseError;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use zkvault_core::{KeyKind, WrapContext};

use crate::keystore::{Keystore, KeystoreError, SigningKeyRef, EC_POINT_LEN, SIGNATURE_LEN};

/// Signs through the keystore: josekit hands over the signing input, the keystore signs its
/// SHA-256 digest. The error of a failed signature is kept for the caller.
#[derive(Clone)]
pub(super) struct KeystoreSigner {
    pub keystore: Arc<dyn Keystore>,
    pub ctx: WrapContext,
    pub key: SigningKeyRef,
    pub kid: String,
    pub failure: Arc<std::sync::Mutex<Option<KeystoreError>>>,
}

impl KeystoreSigner {
    pub fn new(
        keystore: Arc<dyn Keystore>,
        signer: &str,
        version: u32,
        key: SigningKeyRef,
        kid: &str,
    ) -> Self {
        KeystoreSigner {
            keystore,
            ctx: WrapContext::new(signer, KeyKind::SigningKey, version),
            key,
            kid: kid.to_owned(),
            failure: Arc::default(),
        }
    }

    /// The keystore's error, if signing failed there.
    pub fn take_failure(&self) -> Option<KeystoreError> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

impl fmt::Debug for KeystoreSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeystoreSigner({})", self.kid)
    }
}

impl JwsSigner for KeystoreSigner {
    fn algorithm(&self) -> &dyn JwsAlgorithm {
        &ES256
    }

    fn key_id(&self) -> Option<&str> {
        Some(&self.kid)
    }

    fn signature_len(&self) -> usize {
        SIGNATURE_LEN
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JoseError> {
        let digest: [u8; 32] = Sha256::digest(message).into();
        match self.keystore.sign_digest(&self.ctx, &self.key, &digest) {
            Ok(sig) => Ok(sig.to_vec()),
            Err(e) => {
                *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                Err(JoseError::InvalidSignature(anyhow::anyhow!(
                    "the keystore did not sign"
                )))
            }
        }
    }

    fn box_clone(&self) -> Box<dyn JwsSigner> {
        Box::new(self.clone())
    }
}

/// The public JWK of an uncompressed P-256 point: `kty`, `crv`, `x`, `y`; `None` if it is not
/// one.
pub(super) fn public_jwk(point: &[u8]) -> Option<Map<String, Value>> {
    if point.len() != EC_POINT_LEN || point[0] != 0x04 {
        return None;
    }
    let (x, y) = point[1..].split_at(32);
    let jwk = json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
    });
    jwk.as_object().cloned()
}

/// RFC 7638 thumbprint (SHA-256, base64url) of an EC public JWK: the digest of its required
/// members, in lexicographic order, as JSON without whitespace.
pub(super) fn thumbprint(jwk: &Map<String, Value>) -> String {
    let canonical = format!(
        r#"{{"crv":{},"kty":{},"x":{},"y":{}}}"#,
        jwk["crv"], jwk["kty"], jwk["x"], jwk["y"]
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The JWKS entry of a published key: the public JWK, `kid`, `alg`, `use`, and `x5c` (base64
/// DER, leaf first) once a certificate chain is attached.
pub(super) fn jwks_entry(jwk: &Map<String, Value>, kid: &str, chain_der: &[Vec<u8>]) -> Value {
    let mut entry = jwk.clone();
    entry.insert("kid".into(), kid.into());
    entry.insert("alg".into(), "ES256".into());
    entry.insert("use".into(), "sig".into());
    if !chain_der.is_empty() {
        let x5c: Vec<Value> = chain_der
            .iter()
            .map(|c| STANDARD.encode(c).into())
            .collect();
        entry.insert("x5c".into(), x5c.into());
    }
    Value::Object(entry)
}

/// A compact JWS of `payload` with header `{"alg":"ES256","kid",["typ"]}`.
pub(super) fn sign_compact(
    signer: &KeystoreSigner,
    payload: &[u8],
    typ: Option<&str>,
) -> Result<String, JoseError> {
    let mut header = JwsHeader::new();
    if let Some(typ) = typ {
        header.set_token_type(typ);
    }
    josekit::jws::serialize_compact(payload, &header, signer)
}

/// A JWT of `claims` (a JSON object) with header `{"alg":"ES256","kid","typ":"JWT"}`.
pub(super) fn sign_jwt(
    signer: &KeystoreSigner,
    claims: Map<String, Value>,
) -> Result<String, JoseError> {
    let payload = josekit::jwt::JwtPayload::from_map(claims)?;
    let mut header = JwsHeader::new();
    header.set_token_type("JWT");
    josekit::jwt::encode_with_signer(&payload, &header, signer)
}

/// The `kid` and `alg` a compact JWS's header names, without checking its signature.
pub(super) fn header_kid(jws: &str) -> Option<(String, String)> {
    let header = jws.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header).ok()?;
    let header: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    let kid = header.get("kid")?.as_str()?.to_owned();
    let alg = header.get("alg")?.as_str()?.to_owned();
    Some((kid, alg))
}

/// Checks a compact JWS's ES256 signature under public JWK `jwk`; answers its payload.
pub(super) fn verify_compact(jws: &str, jwk: &Map<String, Value>) -> Option<Vec<u8>> {
    let jwk = Jwk::from_map(jwk.clone()).ok()?;
    let verifier = ES256.verifier_from_jwk(&jwk).ok()?;
    let (payload, header) =
        josekit::jws::deserialize_compact(jws, &verifier as &dyn JwsVerifier).ok()?;
    // Only what we sign: no "crit" extensions, "b64" or embedded keys to honour.
    (header.critical().is_none() && header.claim("b64").is_none() && header.jwk().is_none())
        .then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc_7638_canonical_form() {
        // RFC 7638's method on an RFC 7517 appendix A.1 EC key, checked against the digest of
        // the canonical JSON written out by hand.
        let jwk = json!({
            "kty": "EC", "crv": "P-256",
            "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
            "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
        });
        let canonical = r#"{"crv":"P-256","kty":"EC","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}"#;
        assert_eq!(
            thumbprint(jwk.as_object().unwrap()),
            URL_SAFE_NO_PAD.encode(Sha256::digest(canonical))
        );
    }

    #[test]
    fn only_uncompressed_p256_points_make_a_jwk() {
        let mut point = vec![0x04];
        point.extend([1u8; 64]);
        assert!(public_jwk(&point).is_some());
        point[0] = 0x02;
        assert!(public_jwk(&point).is_none());
        assert!(public_jwk(&[0x04; 33]).is_none());
    }
}
