//! `Authorization: Bearer <token>` → a verified credential, the [`Caller`] the vault authorizes.
//!
//! A recently verified token is answered from memory; otherwise the token is verified against
//! the database with Argon2id on the blocking pool, at most `argon2_concurrency` at a time so a
//! flood of bad tokens cannot starve the CPU. A request waits at most [`ARGON2_QUEUE_WAIT`] for
//! its turn, then answers 503 with `Retry-After`: a flood cannot build a queue without bound.
//!
//! A refused authentication is counted for the audit trail under bounded values only (see
//! `vault::refusals`), as the vault counts the refusals of its authorization.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};

use super::error::{blocking, ApiError};
use super::AppState;
use crate::secret::SecretString;
use crate::vault::{self, Credentials, Grant, Refusal, Role, Vault};

/// Longest wait for an Argon2 verification slot before answering 503. Long enough for a burst
/// of first uses of fresh tokens on a loaded host (each run takes ~50-300 ms), short enough that
/// a flood cannot build a queue of minutes.
pub const ARGON2_QUEUE_WAIT: Duration = Duration::from_secs(5);

/// Who refused requests are counted under when no credential was verified: the id inside an
/// unverified token is the caller's invention and must not become a key.
const ANONYMOUS: &str = "anonymous";

/// The authenticated caller of a request. What it may do is the vault's decision
/// ([`Caller::grant`] asks it).
pub struct Caller(vault::Caller);

/// What the request is, for counting its refusal: its id, route pattern and raw path shape.
struct RequestFacts {
    request_id: String,
    route: String,
    escaped_path: bool,
    namespace: Option<String>,
}

impl RequestFacts {
    fn of(req: &HttpRequest) -> Self {
        RequestFacts {
            request_id: req
                .extensions()
                .get::<RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default(),
            route: req.match_pattern().unwrap_or_else(|| "unmatched".into()),
            escaped_path: req.uri().path().contains('%'),
            namespace: req.match_info().get("ns").map(str::to_owned),
        }
    }
}

impl Caller {
    /// The vault's permission to act as `role` in `ns` (or deployment-wide), or its refusal.
    pub fn grant(&self, vault: &Vault, role: Role, ns: Option<&str>) -> Result<Grant, ApiError> {
        Ok(vault.authorize(&self.0, role, ns)?)
    }

    /// The vault's permission to act on signer `signer` in the first of `roles` held.
    pub fn grant_signer(
        &self,
        vault: &Vault,
        roles: &[Role],
        signer: &str,
    ) -> Result<Grant, ApiError> {
        Ok(vault.authorize_signer(&self.0, roles, signer)?)
    }

    /// [`Caller::grant_global`] in the first of `roles` the caller holds.
    pub fn grant_global_any(&self, vault: &Vault, roles: &[Role]) -> Result<Grant, ApiError> {
        Ok(vault.authorize_global_any(&self.0, roles)?)
    }

    /// The vault's permission to act as `role` on every namespace at once.
    pub fn grant_global(&self, vault: &Vault, role: Role) -> Result<Grant, ApiError> {
        Ok(vault.authorize_global(&self.0, role)?)
    }
}

/// The id the telemetry middleware gave the request.
#[derive(Clone)]
pub struct RequestId(pub String);

/// The token of `Authorization: <scheme> <token>`; the scheme is case-insensitive (RFC 9110).
fn bearer(req: &HttpRequest) -> Result<SecretString, ApiError> {
    let mut values = req.headers().get_all(AUTHORIZATION);
    let value = values.next().ok_or_else(ApiError::unauthenticated)?;
    if values.next().is_some() {
        return Err(ApiError::bad_request("more than one Authorization header"));
    }
    let value = value.to_str().map_err(|_| ApiError::unauthenticated())?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(ApiError::unauthenticated)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.len() > 256 {
        return Err(ApiError::unauthenticated());
    }
    Ok(SecretString::new(token))
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req
            .app_data::<web::Data<AppState>>()
            .cloned()
            .expect("AppState is registered");
        let facts = RequestFacts::of(req);
        let token = bearer(req);
        Box::pin(async move {
            let vault = state.vault.clone();
            let verified = async {
                let token = token?;
                if let Some(principal) = vault.credentials().cached(token.expose()) {
                    return Ok(principal);
                }
                // A token that cannot be a credential is refused without queueing for Argon2.
                if !Credentials::well_formed(token.expose()) {
                    return Err(ApiError::unauthenticated());
                }
                let _permit =
                    tokio::time::timeout(ARGON2_QUEUE_WAIT, state.argon2_permits.acquire())
                        .await
                        .map_err(|_| ApiError::busy())?
                        .expect("semaphore is never closed");
                // Concurrent first uses of one token: the one before us may have verified it.
                if let Some(principal) = vault.credentials().cached(token.expose()) {
                    return Ok(principal);
                }
                let v = vault.clone();
                blocking(move || v.credentials().verify(token.expose())).await
            };
            match verified.await {
                Ok(principal) => Ok(Caller(vault::Caller::credential(
                    principal,
                    facts.request_id,
                    facts.route,
                    facts.escaped_path,
                ))),
                Err(e) => {
                    let key = Refusal {
                        actor: ANONYMOUS.into(),
                        operation: "access.authenticate".into(),
                        route: facts.route,
                        namespace: vault.known_namespace(facts.namespace.as_deref()),
                        outcome: e.code(),
                    };
                    vault.record_refusal(key, &facts.request_id);
                    Err(e)
                }
            }
        })
    }
}
