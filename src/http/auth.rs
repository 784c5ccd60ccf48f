//! `Authorization: Bearer <token>` → a verified [`Principal`].
//!
//! A recently verified token is answered from memory; otherwise the token is verified against
//! the database with Argon2id on the blocking pool, at most `argon2_concurrency` at a time so a
//! flood of bad tokens cannot starve the CPU.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};

use super::error::{blocking, ApiError};
use super::AppState;
use crate::vault::{Actor, Principal, Role, Vault};

/// The authenticated caller of a request, and the request's id (for the audit trail).
pub struct Caller {
    pub principal: Arc<Principal>,
    request_id: String,
    vault: Arc<Vault>,
}

impl Caller {
    /// Allows the call, or answers 403 and records the refusal in the audit trail.
    pub fn require(&self, role: Role, ns: Option<&str>) -> Result<(), ApiError> {
        self.principal.require(role, ns).map_err(|e| {
            let (vault, actor, ns) = (self.vault.clone(), self.actor(), ns.unwrap_or_default().to_owned());
            let operation = format!("access.{}", role.as_str());
            actix_web::rt::spawn(async move { web::block(move || vault.record_denied(&actor, &operation, &ns)).await });
            e.into()
        })
    }

    /// Who is asking, for the vault's audit entries.
    pub fn actor(&self) -> Actor {
        Actor::request(self.principal.id.clone(), self.request_id.clone())
    }
}

/// The id the telemetry middleware gave the request.
#[derive(Clone)]
pub struct RequestId(pub String);

fn bearer(req: &HttpRequest) -> Result<String, ApiError> {
    let mut values = req.headers().get_all(AUTHORIZATION);
    let value = values.next().ok_or_else(ApiError::unauthenticated)?;
    if values.next().is_some() {
        return Err(ApiError::bad_request("more than one Authorization header"));
    }
    let value = value.to_str().map_err(|_| ApiError::unauthenticated())?;
    let token = value.strip_prefix("Bearer ").ok_or_else(ApiError::unauthenticated)?.trim();
    if token.is_empty() || token.len() > 256 {
        return Err(ApiError::unauthenticated());
    }
    Ok(token.to_owned())
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
        let token = bearer(req);
        Box::pin(async move {
            let state = state.expect("AppState is registered");
            let token = token?;
            let vault = state.vault.clone();
            if let Some(principal) = vault.credentials().cached(&token) {
                return Ok(Caller { principal, request_id, vault });
            }
            let _permit = state.argon2_permits.acquire().await.expect("semaphore is never closed");
            let v = vault.clone();
            let principal = blocking(move || v.credentials().verify(&token)).await?;
            Ok(Caller { principal, request_id, vault })
        })
    }
}
