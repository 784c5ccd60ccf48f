//! Credential administration (role `admin`) and the key overview (role `operator`).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::{blocking, ApiError};
use super::AppState;
use crate::vault::{AuditQuery, CredentialInfo, KeyOverview, Role};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCredential {
    /// Free text for operators, e.g. "id-repository prod": printable ASCII.
    #[schema(max_length = 128, pattern = "^[ -~]{0,128}$")]
    label: String,
    #[schema(min_items = 1)]
    roles: Vec<Role>,
    /// Namespaces of the policy the credential may use; empty = all.
    #[serde(default)]
    namespaces: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct IssuedResponse {
    id: String,
    /// Shown once; only its Argon2id hash is stored.
    token: String,
    #[serde(serialize_with = "crate::time::serialize_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<i64>,
}

/// Issue a credential; the token is in this response and nowhere else.
#[utoipa::path(post, path = "/v1/credentials", tag = "credentials", request_body = NewCredential,
    responses((status = 201, body = IssuedResponse), (status = 400), (status = 401), (status = 403)))]
pub async fn create_credential(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<NewCredential>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.grant(&state.vault, Role::Admin, None)?;
    let body = body.into_inner();
    let vault = state.vault.clone();
    let issued = blocking(move || {
        vault.create_credential(&grant, &body.label, &body.roles, &body.namespaces)
    })
    .await?;
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(IssuedResponse {
            id: issued.id.clone(),
            token: issued.token.expose().to_owned(),
            expires_at: issued.expires_at,
        }))
}

#[derive(Serialize)]
struct CredentialList {
    credentials: Vec<CredentialInfo>,
}

/// List credentials (never their secrets or hashes).
#[utoipa::path(get, path = "/v1/credentials", tag = "credentials", responses((status = 200), (status = 401), (status = 403)))]
pub async fn list_credentials(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.grant(&state.vault, Role::Admin, None)?;
    let vault = state.vault.clone();
    let credentials = blocking(move || vault.list_credentials(&grant)).await?;
    Ok(HttpResponse::Ok().json(CredentialList { credentials }))
}

/// Revoke a credential: refused on every instance within one second.
#[utoipa::path(delete, path = "/v1/credentials/{id}", tag = "credentials", params(("id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
pub async fn revoke_credential(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.grant(&state.vault, Role::Admin, None)?;
    let vault = state.vault.clone();
    blocking(move || vault.revoke_credential(&grant, &id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// KEK versions and, per namespace, each master's state and how many records it protects.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", responses((status = 200, body = KeyOverview), (status = 401), (status = 403)))]
pub async fn keys(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let grant = caller.grant(&state.vault, Role::Operator, None)?;
    let vault = state.vault.clone();
    Ok(HttpResponse::Ok().json(blocking(move || vault.key_overview(&grant)).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Entries at or after this time (RFC 3339, or unix milliseconds).
    since: Option<String>,
    /// Entries before this time (RFC 3339, or unix milliseconds).
    until: Option<String>,
    /// Only this operation, e.g. `record.get`, `master.rotate`.
    #[param(min_length = 1, max_length = 128, pattern = "^[ -~]+$")]
    operation: Option<String>,
    /// Only entries of this credential id (or `cli:<user>`, `scheduler`, `system`).
    #[param(min_length = 1, max_length = 128, pattern = "^[ -~]+$")]
    credential: Option<String>,
    /// The `next` value of the previous page.
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditEntryView {
    id: i64,
    #[schema(format = DateTime)]
    at: String,
    actor: String,
    request_id: String,
    operation: String,
    namespace: String,
    target: String,
    /// 8-byte keyed tag of the resident: equal tags, same resident; never the ID.
    resident_tag: String,
    outcome: String,
    detail: String,
    chain: String,
    seq: i64,
    hash: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    entries: Vec<AuditEntryView>,
    /// Pass as `after` for the next page; absent on the last page.
    next: Option<i64>,
}

/// Page through the audit trail, oldest first.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, body = AuditPage), (status = 400), (status = 401), (status = 403)))]
pub async fn audit(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<AuditParams>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.grant(&state.vault, Role::Auditor, None)?;
    let q = query.into_inner();
    let query = AuditQuery {
        since: q.since,
        until: q.until,
        operation: q.operation,
        actor: q.credential,
        after: q.after,
        limit: q.limit,
    };
    let vault = state.vault.clone();
    let (rows, next) = blocking(move || vault.audit_page(&grant, &query)).await?;
    let entries = rows
        .into_iter()
        .map(|r| AuditEntryView {
            id: r.id,
            at: crate::time::rfc3339(r.entry.at),
            actor: r.entry.actor,
            request_id: r.entry.request_id,
            operation: r.entry.operation,
            namespace: r.entry.namespace,
            target: r.entry.target,
            resident_tag: r.entry.resident_tag,
            outcome: r.entry.outcome,
            detail: r.entry.detail,
            chain: r.chain,
            seq: r.seq,
            hash: hex::encode(r.hash),
        })
        .collect();
    Ok(HttpResponse::Ok().json(AuditPage { entries, next }))
}
