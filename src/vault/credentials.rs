//! API credentials: random bearer tokens, stored only as Argon2id hashes, verified once and then
//! served from a cache keyed by the token's SHA-256 so the hot path never runs Argon2.
//!
//! Token format: `zkv_<id>_<secret>`: `id` is 16 hex characters (public, the row's key),
//! `secret` is 32 random bytes in unpadded base64url (256 bits).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use moka::sync::Cache;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{now_ms, Actor, EntryExt, Grant, Vault, VaultError};
use crate::secret::SecretString;
use crate::states::{Role, Roles};
use crate::storage::{CredentialRow, StorageError, Store};

/// Who is calling: a verified credential's id, roles and namespace scope.
#[derive(Debug, Clone)]
pub struct Principal {
    pub id: String,
    pub roles: BTreeSet<Role>,
    /// `None` = every namespace.
    pub namespaces: Option<BTreeSet<String>>,
    pub expires_at: Option<i64>,
}

impl Principal {
    /// Allows the call if the credential has `role` and, for a namespaced call, covers `ns`.
    pub fn require(&self, role: Role, ns: Option<&str>) -> Result<(), VaultError> {
        if !self.roles.contains(&role) {
            return Err(VaultError::Forbidden(
                "credential lacks the role this endpoint needs",
            ));
        }
        match (ns, &self.namespaces) {
            (Some(ns), Some(allowed)) if !allowed.contains(ns) => Err(VaultError::Forbidden(
                "credential is not valid for this namespace",
            )),
            _ => Ok(()),
        }
    }

    fn from_row(row: &CredentialRow) -> Principal {
        Principal {
            id: row.id.clone(),
            roles: row.roles.0.clone(),
            namespaces: scope_of(&row.namespaces),
            expires_at: row.expires_at,
        }
    }

    fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// The namespaces a credential's stored scope names; `None`: every namespace (`*`).
fn scope_of(namespaces: &str) -> Option<BTreeSet<String>> {
    (namespaces != "*").then(|| namespaces.split(',').map(str::to_owned).collect())
}

/// A freshly issued credential. The token is shown once and never stored.
pub struct IssuedCredential {
    pub id: String,
    pub token: SecretString,
    pub expires_at: Option<i64>,
}

/// A credential as listed (no secret, no hash).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CredentialInfo {
    pub id: String,
    pub label: String,
    pub roles: Vec<String>,
    pub namespaces: Vec<String>,
    #[serde(serialize_with = "crate::time::serialize")]
    pub created_at: i64,
    #[serde(serialize_with = "crate::time::serialize_opt")]
    pub expires_at: Option<i64>,
    #[serde(serialize_with = "crate::time::serialize_opt")]
    pub revoked_at: Option<i64>,
}

pub struct Credentials {
    store: Store,
    verified: Cache<[u8; 32], Arc<Principal>>,
    argon2: Argon2<'static>,
    /// The hash of a random secret nobody holds: an unknown, revoked or expired id is verified
    /// against it, so it costs the same Argon2 run as a known one (no timing oracle for ids).
    dummy_hash: String,
}

/// Argon2id at OWASP's recommended floor (m = 19 MiB, t = 2): tokens carry 256 random bits, so the
/// hash protects a stolen database against nothing weaker than the token itself.
fn argon2() -> Argon2<'static> {
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19 * 1024, 2, 1, None).expect("valid Argon2 parameters"),
    )
}

fn cache_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A public credential id: 16 hex digits.
/// What a credential's label must match: printable ASCII, at most 128 characters.
pub const LABEL_PATTERN: &str = "^[ -~]{0,128}$";

fn valid_label(label: &str) -> bool {
    label.len() <= 128 && label.bytes().all(|b| (b' '..=b'~').contains(&b))
}

fn valid_credential_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Splits `zkv_<id>_<secret>`; anything else is simply an unknown token.
fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("zkv_")?;
    let (id, secret) = rest.split_once('_')?;
    (valid_credential_id(id) && secret.len() == 43).then_some((id, secret))
}

impl Credentials {
    pub fn new(store: Store, ttl: Duration) -> Result<Self, VaultError> {
        let argon2 = argon2();
        let nobody = zkvault_core::random::array::<32>()?;
        let dummy_hash = argon2
            .hash_password(&nobody[..])
            .map_err(|e| VaultError::Internal(format!("argon2: {e}")))?
            .to_string();
        Ok(Credentials {
            store,
            verified: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .support_invalidation_closures()
                .build(),
            argon2,
            dummy_hash,
        })
    }

    /// Whether `token` has the shape of a credential at all (else it is refused without Argon2).
    pub fn well_formed(token: &str) -> bool {
        parse_token(token).is_some()
    }

    /// The fast path: a token verified recently, unless revoked or expired since.
    pub fn cached(&self, token: &str) -> Option<Arc<Principal>> {
        let key = cache_key(token);
        let principal = self.verified.get(&key)?;
        if principal.expired(now_ms()) {
            self.verified.invalidate(&key);
            return None;
        }
        Some(principal)
    }

    /// The slow path (database + Argon2id); caches the result on success.
    pub fn verify(&self, token: &str) -> Result<Arc<Principal>, VaultError> {
        let (id, secret) = parse_token(token).ok_or(VaultError::Unauthenticated)?;
        let now = now_ms();
        let row = match self.store.credential(id) {
            // Edited or inserted in the database: refused like an unknown token, and recorded.
            Err(StorageError::Integrity(_)) => {
                let mut entry = Actor::new(id, "").entry("access.authenticate", "", id);
                entry.outcome = VaultError::Integrity.code().to_owned();
                self.store.append_audit(&entry)?;
                return Err(VaultError::Unauthenticated);
            }
            row => row?,
        }
        .filter(|r| r.revoked_at.is_none() && r.expires_at.is_none_or(|t| t > now));
        let stored = row
            .as_ref()
            .map_or(self.dummy_hash.as_str(), |r| r.secret_hash.as_str());
        let hash = argon2::password_hash::phc::PasswordHash::new(stored)
            .map_err(|_| VaultError::Internal("stored credential hash is malformed".into()))?;
        let matches = self
            .argon2
            .verify_password(secret.as_bytes(), &hash)
            .is_ok();
        let row = row.filter(|_| matches).ok_or(VaultError::Unauthenticated)?;
        let principal = Arc::new(Principal::from_row(&row));
        self.verified.insert(cache_key(token), principal.clone());
        Ok(principal)
    }

    fn issue(
        &self,
        actor: &Actor,
        label: &str,
        roles: &[Role],
        namespaces: &[String],
        expires_at: Option<i64>,
        rotated_from: Option<&str>,
    ) -> Result<IssuedCredential, VaultError> {
        if roles.is_empty() {
            return Err(VaultError::BadInput(
                "a credential needs at least one role".into(),
            ));
        }
        if !valid_label(label) {
            return Err(VaultError::BadInput(format!(
                "label must match {LABEL_PATTERN}"
            )));
        }
        let id = hex::encode(zkvault_core::random::array::<8>()?);
        let secret = Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(zkvault_core::random::array::<32>()?),
        );
        let hash = self
            .argon2
            .hash_password(secret.as_bytes())
            .map_err(|e| VaultError::Internal(format!("argon2: {e}")))?
            .to_string();
        let row = CredentialRow {
            id: id.clone(),
            label: label.to_owned(),
            roles: Roles(roles.iter().copied().collect()),
            namespaces: if namespaces.is_empty() {
                "*".into()
            } else {
                namespaces.join(",")
            },
            secret_hash: hash,
            created_at: now_ms(),
            expires_at,
            revoked_at: None,
            rotated_from: rotated_from.map(str::to_owned),
        };
        let entry = actor
            .entry("credential.create", "", id.clone())
            .with_detail(format!("roles={} namespaces={}", row.roles, row.namespaces));
        self.store.insert_credential(&row, &entry)?;
        Ok(IssuedCredential {
            token: SecretString::new(format!("zkv_{id}_{}", secret.as_str())),
            id,
            expires_at,
        })
    }

    /// Every credential `visible` keeps (by its namespace scope).
    pub(super) fn list(
        &self,
        visible: impl Fn(Option<&BTreeSet<String>>) -> bool,
    ) -> Result<Vec<CredentialInfo>, VaultError> {
        Ok(self
            .store
            .credential_listing()?
            .into_iter()
            .filter(|r| visible(scope_of(&r.namespaces).as_ref()))
            .map(|r| CredentialInfo {
                roles: r.roles.split(',').map(str::to_owned).collect(),
                namespaces: r.namespaces.split(',').map(str::to_owned).collect(),
                id: r.id,
                label: r.label,
                created_at: r.created_at,
                expires_at: r.expires_at,
                revoked_at: r.revoked_at,
            })
            .collect())
    }

    /// Revokes a credential and evicts it from this instance's cache at once.
    fn revoke(&self, actor: &Actor, id: &str) -> Result<(), VaultError> {
        if !valid_credential_id(id) {
            return Err(VaultError::NotFound);
        }
        let revoked = self.store.revoke_credential(
            id,
            now_ms(),
            &actor.entry("credential.revoke", "", id),
        )?;
        self.evict(id);
        if revoked {
            Ok(())
        } else {
            Err(VaultError::NotFound)
        }
    }

    fn evict(&self, id: &str) {
        let id = id.to_owned();
        self.verified
            .invalidate_entries_if(move |_, p| p.id == id)
            .expect("closure invalidation is enabled");
    }

    /// Evicts every credential revoked or expired in the database, including by other instances.
    /// The service runs this every 500 ms, which bounds cross-instance revocation to under a second.
    pub fn sync_revocations(&self) -> Result<(), VaultError> {
        for id in self.store.lapsed_credentials(now_ms())? {
            self.evict(&id);
        }
        Ok(())
    }
}

impl Vault {
    /// Every credential the caller administers, revoked and expired ones included (never a
    /// secret or hash): an admin restricted to some namespaces sees the credentials restricted
    /// to those, not the others nor the unrestricted ones.
    pub fn list_credentials(&self, grant: &Grant) -> Result<Vec<CredentialInfo>, VaultError> {
        grant.check(Role::Admin)?;
        self.credentials().list(|scope| grant.covers_all(scope))
    }

    /// Revokes credential `id`: refused on every instance within a second. A credential outside
    /// the caller's namespaces is not found, as if it did not exist.
    pub fn revoke_credential(&self, grant: &Grant, id: &str) -> Result<(), VaultError> {
        grant.check(Role::Admin)?;
        self.administered(grant, id)?;
        self.credentials().revoke(grant.actor(), id)
    }

    /// `NotFound` unless credential `id` exists within the caller's namespaces. Reads only the
    /// scope, so a credential whose other columns were damaged can still be revoked.
    fn administered(&self, grant: &Grant, id: &str) -> Result<(), VaultError> {
        if !valid_credential_id(id) {
            return Err(VaultError::NotFound);
        }
        match self.store().credential_scope(id)? {
            Some(scope) if grant.covers_all(scope_of(&scope).as_ref()) => Ok(()),
            _ => Err(VaultError::NotFound),
        }
    }

    /// What a caller may put in a credential it issues: namespaces within its own (an
    /// unrestricted credential only from an unrestricted caller), and roles it holds — an admin
    /// also the data roles and `admin`, since it administers its namespaces' clients; never
    /// `operator` or `auditor` unless it holds them, so no one mints key-plane or audit power.
    fn check_issuable(
        grant: &Grant,
        roles: &[Role],
        namespaces: &[String],
        dual_control: bool,
    ) -> Result<(), VaultError> {
        let scope: Option<BTreeSet<String>> =
            (!namespaces.is_empty()).then(|| namespaces.iter().cloned().collect());
        if !grant.covers_all(scope.as_ref()) {
            return Err(VaultError::Forbidden(
                "a credential can only issue credentials within its own namespaces",
            ));
        }
        let mine = grant.roles();
        if dual_control && roles.contains(&Role::Operator) && !grant.is_local() {
            // Else one holder of admin and operator would mint a second operator and approve
            // its own requests.
            return Err(VaultError::Forbidden(
                "under dual control, operator credentials are issued with the CLI (zkvault credentials create)",
            ));
        }
        let admin_grants = [
            Role::Admin,
            Role::Writer,
            Role::Reader,
            Role::Reencrypt,
            Role::Signer,
            Role::Verifier,
            Role::Sharer,
            Role::TrustAdmin,
        ];
        let may_issue = |r: &Role| {
            mine.contains(r) || (mine.contains(&Role::Admin) && admin_grants.contains(r))
        };
        if !roles.iter().all(may_issue) {
            return Err(VaultError::Forbidden(
                "a credential can only issue roles it holds (an admin: also admin and the data roles)",
            ));
        }
        Ok(())
    }

    /// Issues a credential expiring after the policy's credential maximum age.
    pub fn create_credential(
        &self,
        grant: &Grant,
        label: &str,
        roles: &[Role],
        namespaces: &[String],
    ) -> Result<IssuedCredential, VaultError> {
        self.issue_credential(grant, label, roles, namespaces, None)
    }

    /// [`Vault::create_credential`], naming the credential it replaces (a rotation).
    fn issue_credential(
        &self,
        grant: &Grant,
        label: &str,
        roles: &[Role],
        namespaces: &[String],
        rotated_from: Option<&str>,
    ) -> Result<IssuedCredential, VaultError> {
        grant.check(Role::Admin)?;
        // The answer names the position, never the value (no error body quotes input). A
        // credential's scope lists namespaces and signers (their names never collide).
        for (i, ns) in namespaces.iter().enumerate() {
            if self.policy().namespace(ns).is_none() && self.policy().signer(ns).is_none() {
                return Err(VaultError::BadInput(format!(
                    "namespaces[{i}] is neither a namespace nor a signer of the policy"
                )));
            }
        }
        Self::check_issuable(grant, roles, namespaces, self.policy().dual_control)?;
        let max_age = self.policy().credential_max_age.as_millis() as i64;
        self.credentials().issue(
            grant.actor(),
            label,
            roles,
            namespaces,
            Some(now_ms() + max_age),
            rotated_from,
        )
    }

    /// Issues a successor of credential `id` (same label, roles and namespaces) and makes the
    /// old one expire after `overlap`, so clients can switch tokens without an outage.
    pub fn rotate_credential(
        &self,
        grant: &Grant,
        id: &str,
        overlap: std::time::Duration,
    ) -> Result<IssuedCredential, VaultError> {
        grant.check(Role::Admin)?;
        let actor = grant.actor();
        self.administered(grant, id)?;
        let old = self
            .store()
            .credential(id)?
            .filter(|c| c.revoked_at.is_none())
            .ok_or(VaultError::NotFound)?;
        if let Some(successor) = self.store().credential_successor(id)? {
            return Err(VaultError::Conflict(format!(
                "credential {id} was already rotated: its successor is {successor}"
            )));
        }
        let roles: Vec<Role> = old.roles.0.iter().copied().collect();
        let namespaces: Vec<String> = if old.namespaces == "*" {
            Vec::new()
        } else {
            old.namespaces.split(',').map(str::to_owned).collect()
        };
        let successor = self.issue_credential(grant, &old.label, &roles, &namespaces, Some(id))?;
        let until = now_ms() + overlap.as_millis() as i64;
        let until = old.expires_at.map_or(until, |t| t.min(until));
        let entry = actor
            .entry("credential.rotate", "", id)
            .with_detail(format!("successor={} old expires_at={until}", successor.id));
        match self
            .store()
            .set_credential_successor(id, &successor.id, until, &entry)
        {
            Ok(true) => Ok(successor),
            Ok(false) => Err(VaultError::Conflict(
                "credential was revoked while rotating".into(),
            )),
            Err(e) => {
                // Rotated concurrently: this successor's token is never shown; do not leave it live.
                self.credentials().revoke(actor, &successor.id)?;
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape_is_checked_before_any_lookup() {
        assert!(
            parse_token("zkv_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
                .is_some()
        );
        for bad in [
            "",
            "Bearer x",
            "zkv_short_x",
            "zkv_0123456789abcdeg_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "zkv_0123456789abcdef_AAA",
        ] {
            assert!(parse_token(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn roles_and_namespaces_are_enforced() {
        let p = Principal {
            id: "x".into(),
            roles: [Role::Reader].into(),
            namespaces: Some(["a".to_string()].into()),
            expires_at: None,
        };
        assert!(p.require(Role::Reader, Some("a")).is_ok());
        assert!(matches!(
            p.require(Role::Writer, Some("a")),
            Err(VaultError::Forbidden(_))
        ));
        assert!(matches!(
            p.require(Role::Reader, Some("b")),
            Err(VaultError::Forbidden(_))
        ));
        assert!(
            !p.expired(i64::MIN)
                && Principal {
                    expires_at: Some(5),
                    ..p
                }
                .expired(5)
        );
    }
}
