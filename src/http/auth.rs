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
use actix_web::{web, FromRequest, HttpRequest};

use super::error::{blocking, ApiError};
use super::AppState;
use crate::vault::{Principal, Role};

/// The authenticated caller of a request.
pub struct Caller(pub Arc<Principal>);

impl Caller {
    pub fn require(&self, role: Role, ns: Option<&str>) -> Result<(), ApiError> {
        Ok(self.0.require(role, ns)?)
    }
}

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
        let token = bearer(req);
        Box::pin(async move {
            let state = state.expect("AppState is registered");
            let token = token?;
            if let Some(p) = state.vault.credentials().cached(&token) {
                return Ok(Caller(p));
            }
            let _permit = state.argon2_permits.acquire().await.expect("semaphore is never closed");
            let vault = state.vault.clone();
            let principal = blocking(move || vault.credentials().verify(&token)).await?;
            Ok(Caller(principal))
        })
    }
}
