//! Credential administration (role `admin`) and the key overview (role `operator`).

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::{blocking, ApiError};
use super::AppState;
use crate::vault::{CredentialInfo, KeyOverview, Role};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCredential {
    /// Free text for operators, e.g. "id-repository prod".
    label: String,
    /// Any of admin, writer, reader, reencrypt, operator, auditor.
    roles: Vec<String>,
    /// Namespaces the credential may use; empty = all.
    #[serde(default)]
    namespaces: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct IssuedResponse {
    id: String,
    /// Shown once; only its Argon2id hash is stored.
    token: String,
    expires_at: Option<i64>,
}

/// Issue a credential; the token is in this response and nowhere else.
#[utoipa::path(post, path = "/v1/credentials", tag = "credentials", request_body = NewCredential,
    responses((status = 201, body = IssuedResponse), (status = 400), (status = 401), (status = 403)))]
pub async fn create_credential(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<NewCredential>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin, None)?;
    // The JSON extractor reads the first Content-Type; a proxy may read the last. Refuse both.
    if req.headers().get_all(CONTENT_TYPE).nth(1).is_some() {
        return Err(ApiError::bad_request("more than one Content-Type header"));
    }
    let body = body.into_inner();
    let roles = body
        .roles
        .iter()
        .map(|r| Role::parse(r).ok_or_else(|| ApiError::bad_request(format!("unknown role {r:?}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let vault = state.vault.clone();
    let issued = blocking(move || vault.create_credential(&body.label, &roles, &body.namespaces)).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(IssuedResponse { id: issued.id.clone(), token: issued.token.to_string(), expires_at: issued.expires_at }))
}

#[derive(Serialize)]
struct CredentialList {
    credentials: Vec<CredentialInfo>,
}

/// List credentials (never their secrets or hashes).
#[utoipa::path(get, path = "/v1/credentials", tag = "credentials", responses((status = 200), (status = 401), (status = 403)))]
pub async fn list_credentials(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin, None)?;
    let vault = state.vault.clone();
    let credentials = blocking(move || vault.credentials().list()).await?;
    Ok(HttpResponse::Ok().json(CredentialList { credentials }))
}

/// Revoke a credential: refused on every instance within one second.
#[utoipa::path(delete, path = "/v1/credentials/{id}", tag = "credentials", params(("id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
pub async fn revoke_credential(state: web::Data<AppState>, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin, None)?;
    let vault = state.vault.clone();
    blocking(move || vault.credentials().revoke(&id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// KEK versions and, per namespace, each master's state and how many records it protects.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", responses((status = 200, body = KeyOverview), (status = 401), (status = 403)))]
pub async fn keys(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator, None)?;
    let vault = state.vault.clone();
    Ok(HttpResponse::Ok().json(blocking(move || vault.key_overview()).await?))
}
