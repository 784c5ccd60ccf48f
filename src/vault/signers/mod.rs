//! Signing (DESIGN.md "Signing (v1)"): JWS and JWT under keys that rotate by policy, a JWKS
//! that publishes the next key ahead and keeps old ones for a window, verification, CSRs and
//! certificates.
//!
//! Every instance serves signing and verification from a [`Snapshot`] of the signer rows,
//! reloaded every [`super::SYNC_INTERVAL`] and after each change made here: a compromise or a
//! retirement made on any instance leaves every instance's JWKS and verification within a
//! second. Rows are MACed; a compromise or destruction is also recorded in the keystore, so
//! a database restored from before it cannot put the key back.

mod certs;
mod jose;
mod lifecycle;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{now_ms, EntryExt, Grant, Role, Vault, VaultError};
use crate::keystore::{Keystore, SigningKeyRef};
use crate::states::SignerState;
use crate::storage::{SignerKeyRow, Store};
use jose::KeystoreSigner;
pub use lifecycle::{SignerChange, SignerReport, SignersOverview};

/// Largest payload a JWS may carry, and largest JWT claims object, in bytes (decoded).
pub const MAX_SIGN_PAYLOAD: usize = 16 * 1024;
/// How long verifiers may cache the JWKS (`Cache-Control: max-age`), in seconds: the bound on
/// how long a removed key stays trusted by a verifier that caches it. The publish-ahead window
/// is days, so new keys are always known long before they sign.
pub const JWKS_MAX_AGE_SECS: u64 = 60;
/// The keystore ledger's namespace for signer `name`'s revoked versions. Namespace and signer
/// names cannot hold `/`, so it never names a namespace.
pub(super) fn ledger_name(signer: &str) -> String {
    format!("sign/{signer}")
}

/// One signer version as the service uses it.
struct KeyView {
    row: SignerKeyRow,
    jwk: Map<String, Value>,
    chain_der: Vec<Vec<u8>>,
}

/// The signer rows as last loaded, with the JWKS built from them.
#[derive(Default)]
struct Snapshot {
    keys: Vec<KeyView>,
    jwks: Arc<Jwks>,
}

/// `GET /.well-known/jwks.json`'s body and its ETag.
#[derive(Default)]
pub struct Jwks {
    pub body: String,
    pub etag: String,
}

impl Snapshot {
    fn active(&self, signer: &str) -> Option<&KeyView> {
        self.keys
            .iter()
            .rev()
            .find(|k| k.row.signer == signer && k.row.state == SignerState::Active)
    }

    fn by_kid(&self, signer: &str, kid: &str) -> Option<&KeyView> {
        self.keys
            .iter()
            .find(|k| k.row.signer == signer && k.row.kid == kid)
    }
}

/// The signing service of one vault.
pub struct Signers {
    store: Store,
    keystore: Arc<dyn Keystore>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Signatures made here and not yet added to the stored counts.
    unflushed: Mutex<BTreeMap<(String, i32), i64>>,
}

impl Signers {
    pub(super) fn new(store: Store, keystore: Arc<dyn Keystore>) -> Signers {
        Signers {
            store,
            keystore,
            snapshot: RwLock::default(),
            unflushed: Mutex::default(),
        }
    }

    /// `(signer, version, PEM chain)` of each published key with a certificate attached.
    pub(crate) fn published_certificates(&self) -> Vec<(String, i32, String)> {
        self.snapshot()
            .keys
            .iter()
            .filter(|k| k.row.state.is_published())
            .filter_map(|k| {
                let pem = k.row.certificate.clone()?;
                Some((k.row.signer.clone(), k.row.version, pem))
            })
            .collect()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads every signer row and the keystore's record of revoked versions, and flushes
    /// the signature counts. A forged row is left out (logged; `audit verify` reports it), and
    /// a version the keystore records as revoked is served as compromised whatever its row says.
    pub fn refresh(&self) -> Result<(), VaultError> {
        self.refresh_with(&self.keystore.destroyed_masters()?)
    }

    /// [`Signers::refresh`] with the keystore's ledger as just read (the cache sync reads it
    /// once for signers and trust: on an HSM each read is a search of the token).
    pub fn refresh_with(&self, revoked: &BTreeSet<(String, u32)>) -> Result<(), VaultError> {
        self.flush_counts()?;
        let now = now_ms();
        let mut keys = Vec::new();
        for row in self.store.signer_keys()? {
            let mut row = match row {
                Ok(row) => row,
                Err(what) => {
                    tracing::error!(row = %what, "a signer key row failed authentication: left out of signing, verification and the JWKS");
                    continue;
                }
            };
            let Some(jwk) = jose::public_jwk(&row.public_key) else {
                tracing::error!(signer = %row.signer, version = row.version, "a signer key row holds no P-256 point: left out");
                continue;
            };
            let in_ledger = revoked.contains(&(ledger_name(&row.signer), row.version as u32));
            if in_ledger && !matches!(row.state, SignerState::Compromised | SignerState::Destroyed)
            {
                tracing::error!(signer = %row.signer, version = row.version, state = %row.state, "the keystore records this signer key as revoked, the database does not (an older backup?): served as compromised");
                row.state = SignerState::Compromised;
            }
            // Past its window (a row restored from before the retirement, or a scheduler that
            // has not run yet): retired, whatever the row says.
            if row.state == SignerState::VerifyOnly && row.retire_at.is_some_and(|at| at <= now) {
                row.state = SignerState::Retired;
            }
            // Published while it is valid: an expired certificate leaves `x5c`.
            let chain_der = row
                .certificate
                .as_deref()
                .and_then(|pem| certs::check_chain(pem, &row.public_key, now).ok())
                .map(|chain| chain.der)
                .unwrap_or_default();
            keys.push(KeyView {
                row,
                jwk,
                chain_der,
            });
        }
        let jwks = Arc::new(build_jwks(&keys));
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(Snapshot { keys, jwks });
        Ok(())
    }

    /// Adds this instance's signature counts to the stored ones.
    fn flush_counts(&self) -> Result<(), VaultError> {
        let pending: Vec<(String, i32, i64)> = {
            let mut counts = self.unflushed.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *counts)
                .into_iter()
                .map(|((s, v), n)| (s, v, n))
                .collect()
        };
        if pending.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.store.add_signatures(&pending) {
            // Kept for the next flush: counts are late, not lost, while the database is down.
            let mut counts = self.unflushed.lock().unwrap_or_else(|e| e.into_inner());
            for (s, v, n) in pending {
                *counts.entry((s, v)).or_default() += n;
            }
            return Err(e.into());
        }
        Ok(())
    }

    pub fn jwks(&self) -> Arc<Jwks> {
        self.snapshot().jwks.clone()
    }

    /// A signer for the active key of `signer`.
    fn active_signer(&self, signer: &str) -> Result<(KeystoreSigner, i32), VaultError> {
        let snapshot = self.snapshot();
        let key = snapshot.active(signer).ok_or_else(|| {
            VaultError::KeystoreUnavailable(format!("signer {signer} has no active key yet"))
        })?;
        let key_ref = key_ref(&key.row).ok_or(VaultError::Integrity)?;
        Ok((
            KeystoreSigner::new(
                self.keystore.clone(),
                signer,
                key.row.version as u32,
                key_ref,
                &key.row.kid,
            ),
            key.row.version,
        ))
    }

    fn count(&self, signer: &str, version: i32) {
        *self
            .unflushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((signer.to_owned(), version))
            .or_default() += 1;
    }
}

/// Where a row's private key is; `None` for a destroyed key (or a row that says neither).
fn key_ref(row: &SignerKeyRow) -> Option<SigningKeyRef> {
    match (&row.token_id, row.kek_version, &row.wrapped) {
        (Some(id), _, _) => Some(SigningKeyRef::Token { id: id.clone() }),
        (None, Some(kek), Some(wrapped)) => Some(SigningKeyRef::Sealed {
            kek_version: kek as u32,
            wrapped: wrapped.clone(),
        }),
        _ => None,
    }
}

fn build_jwks(keys: &[KeyView]) -> Jwks {
    let entries: Vec<Value> = keys
        .iter()
        .filter(|k| k.row.state.is_published())
        .map(|k| jose::jwks_entry(&k.jwk, &k.row.kid, &k.chain_der))
        .collect();
    let body = serde_json::json!({ "keys": entries }).to_string();
    let etag = format!(
        "\"{}\"",
        hex::encode(&Sha256::digest(body.as_bytes())[..16])
    );
    Jwks { body, etag }
}

/// `POST …/jws` and `…/jwt`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Signed {
    /// The compact serialization (`jws` for `…/jws`, `jwt` for `…/jwt`).
    #[serde(skip)]
    pub token: String,
    pub kid: String,
}

/// `POST …/verify`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Verification {
    pub valid: bool,
    /// The `kid` the token's header names, if it names one.
    pub kid: Option<String>,
    /// That key's state; `unknown` when this signer has no such key.
    pub state: String,
}

impl Vault {
    /// Compact JWS of `payload` with the signer's active key.
    pub fn sign_jws(
        &self,
        grant: &Grant,
        payload: &[u8],
        typ: Option<&str>,
    ) -> Result<Signed, VaultError> {
        let signer = grant.signer(Role::Signer)?;
        if payload.len() > MAX_SIGN_PAYLOAD {
            return Err(VaultError::BadInput(format!(
                "payload is over {MAX_SIGN_PAYLOAD} bytes"
            )));
        }
        if let Some(typ) = typ {
            if typ.is_empty() || typ.len() > 64 || !typ.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(VaultError::BadInput(
                    "typ must be 1-64 printable ASCII characters".into(),
                ));
            }
            let typ = typ.to_ascii_lowercase();
            if typ == "jwt" || typ.ends_with("+jwt") {
                return Err(VaultError::BadInput(
                    "a JWT is signed through /jwt, which bounds its lifetime".into(),
                ));
            }
        }
        let max_ttl = self
            .policy()
            .signer(signer)
            .ok_or(VaultError::UnknownSigner)?
            .max_token_ttl
            .as_secs();
        if !exp_within(payload, now_ms() / 1000 + max_ttl as i64) {
            return Err(VaultError::BadInput(format!(
                "a JSON payload's exp must be a number at most {max_ttl} s ahead (the signer's max_token_ttl_secs)"
            )));
        }
        let (key, version) = self.signers().active_signer(signer)?;
        let token = jose::sign_compact(&key, payload, typ).map_err(|e| signing_failed(&key, e))?;
        self.signed(grant, signer, version, token, key.kid, "sign.jws")
    }

    /// JWT of `claims` with `iat` and `exp` (`ttl`, or the policy's longest token lifetime).
    pub fn sign_jwt(
        &self,
        grant: &Grant,
        mut claims: Map<String, Value>,
        ttl_secs: Option<u64>,
    ) -> Result<Signed, VaultError> {
        let signer = grant.signer(Role::Signer)?;
        let policy = self
            .policy()
            .signer(signer)
            .ok_or(VaultError::UnknownSigner)?;
        let max = policy.max_token_ttl.as_secs();
        let ttl = ttl_secs.unwrap_or(max);
        if ttl == 0 || ttl > max {
            return Err(VaultError::BadInput(format!(
                "ttl_secs must be 1-{max} (the signer's max_token_ttl_secs)"
            )));
        }
        for reserved in ["iat", "exp"] {
            if claims.contains_key(reserved) {
                return Err(VaultError::BadInput(format!(
                    "claim {reserved} is set by the signer"
                )));
            }
        }
        if serde_json::to_vec(&claims).map_or(usize::MAX, |b| b.len()) > MAX_SIGN_PAYLOAD {
            return Err(VaultError::BadInput(format!(
                "claims are over {MAX_SIGN_PAYLOAD} bytes"
            )));
        }
        let iat = now_ms() / 1000;
        claims.insert("iat".into(), iat.into());
        claims.insert("exp".into(), (iat + ttl as i64).into());
        let (key, version) = self.signers().active_signer(signer)?;
        let token = jose::sign_jwt(&key, claims).map_err(|e| signing_failed(&key, e))?;
        self.signed(grant, signer, version, token, key.kid, "sign.jwt")
    }

    /// Counts and audits a signature (the entry names the version and a digest of the token,
    /// never its payload, which may name a resident).
    fn signed(
        &self,
        grant: &Grant,
        signer: &str,
        version: i32,
        token: String,
        kid: String,
        operation: &str,
    ) -> Result<Signed, VaultError> {
        let digest = hex::encode(&Sha256::digest(token.as_bytes())[..16]);
        let entry = grant
            .actor()
            .entry(operation, "", format!("signer {signer} v{version}"))
            .with_detail(format!("token sha256/128={digest}"));
        self.store().append_audit(&entry)?;
        self.signers().count(signer, version);
        Ok(Signed { token, kid })
    }

    /// Whether `jws` is a valid signature by a published key of the signer (and, for a JWT,
    /// not expired).
    pub fn verify_jws(&self, grant: &Grant, jws: &str) -> Result<Verification, VaultError> {
        let signer = grant.signer_of(&[Role::Signer, Role::Verifier])?;
        let Some((kid, alg)) = jose::header_kid(jws) else {
            return Ok(Verification {
                valid: false,
                kid: None,
                state: "unknown".into(),
            });
        };
        let snapshot = self.signers().snapshot();
        let Some(key) = snapshot.by_kid(signer, &kid) else {
            return Ok(Verification {
                valid: false,
                kid: Some(kid),
                state: "unknown".into(),
            });
        };
        let valid = alg == "ES256"
            && key.row.state.is_published()
            && jose::verify_compact(jws, &key.jwk).is_some_and(|payload| !expired(&payload));
        Ok(Verification {
            valid,
            kid: Some(kid),
            state: key.row.state.to_string(),
        })
    }
}

/// A JSON-object payload's claims, if it is one.
fn claims(payload: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(claims)) => Some(claims),
        _ => None,
    }
}

/// A JWT payload whose `exp` has passed or whose `nbf` has not come; a present `exp` or `nbf`
/// that is not a number (RFC 7519 NumericDate, fractions allowed) counts as both.
fn expired(payload: &[u8]) -> bool {
    let Some(claims) = claims(payload) else {
        return false;
    };
    let now = (now_ms() / 1000) as f64;
    let at = |c: &str| claims.get(c).map(|v| v.as_f64().unwrap_or(f64::NAN));
    at("exp").is_some_and(|exp| exp.is_nan() || exp <= now)
        || at("nbf").is_some_and(|nbf| nbf.is_nan() || nbf > now)
}

/// Whether a payload's `exp`, if it is a JSON object with one, is a number at most `latest`.
fn exp_within(payload: &[u8], latest: i64) -> bool {
    match claims(payload).as_ref().and_then(|c| c.get("exp")) {
        None => true,
        Some(exp) => exp.as_f64().is_some_and(|exp| exp <= latest as f64),
    }
}

fn signing_failed(key: &KeystoreSigner, e: josekit::JoseError) -> VaultError {
    match key.take_failure() {
        Some(e) => e.into(),
        None => VaultError::Internal(format!("JWS serialization: {e}")),
    }
}
