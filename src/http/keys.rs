//! Key plane (role `operator`): rotate, mark compromised, destroy. Never returns key material.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::auth::Caller;
use super::error::{blocking, ApiError};
use super::AppState;
use crate::vault::{
    Approved, CompromiseReport, Decision, DestroyReport, KekRotation, MasterRotation,
    PendingApproval, Role,
};

/// New KEK version in the keystore; every master and index key rewrapped; the old KEK retired.
#[utoipa::path(post, path = "/v1/keys/kek/rotate", tag = "keys",
    responses((status = 200, body = KekRotation), (status = 401), (status = 403), (status = 503)))]
pub async fn rotate_kek(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.grant_global(&state.vault, Role::Operator)?;
    let vault = state.vault.clone();
    Ok(HttpResponse::Ok().json(blocking(move || vault.rotate_kek(&grant)).await?))
}

/// New active derivation master; the previous one becomes decrypt-only.
#[utoipa::path(post, path = "/v1/ns/{ns}/masters/rotate", tag = "keys", params(("ns" = String, Path)),
    responses((status = 200, body = MasterRotation), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn rotate_master(
    state: web::Data<AppState>,
    caller: Caller,
    ns: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.grant(&state.vault, Role::Operator, Some(&ns))?;
    let vault = state.vault.clone();
    Ok(HttpResponse::Ok().json(blocking(move || vault.rotate_master(&grant)).await?))
}

/// Mark master v compromised: rotate if active, report records at risk, re-key them first.
#[utoipa::path(post, path = "/v1/ns/{ns}/masters/{v}/compromise", tag = "keys", params(("ns" = String, Path), ("v" = u32, Path)),
    responses((status = 200, body = CompromiseReport), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn compromise_master(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, u32)>,
) -> Result<HttpResponse, ApiError> {
    let (ns, version) = path.into_inner();
    let grant = caller.grant(&state.vault, Role::Operator, Some(&ns))?;
    let vault = state.vault.clone();
    Ok(HttpResponse::Ok().json(blocking(move || vault.compromise_master(&grant, version)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestroyQuery {
    #[serde(default)]
    shred: bool,
}

/// Destroy master v's material: 409 while records remain unless `?shred=true`. Under the
/// policy's dual control a shred answers 202 with an approval for a second operator.
#[utoipa::path(post, path = "/v1/ns/{ns}/masters/{v}/destroy", tag = "keys",
    params(("ns" = String, Path), ("v" = u32, Path), ("shred" = Option<bool>, Query)),
    responses((status = 200, body = DestroyReport),
        (status = 202, body = PendingApproval, description = "dual control: waiting for a second operator"),
        (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn destroy_master(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, u32)>,
    query: web::Query<DestroyQuery>,
) -> Result<HttpResponse, ApiError> {
    let (ns, version) = path.into_inner();
    let grant = caller.grant(&state.vault, Role::Operator, Some(&ns))?;
    let vault = state.vault.clone();
    let shred = query.shred;
    Ok(
        match blocking(move || vault.destroy_master(&grant, version, shred)).await? {
            Decision::Done(report) => HttpResponse::Ok().json(report),
            Decision::Pending(pending) => HttpResponse::Accepted().json(pending),
        },
    )
}

/// Carry out another operator's dual-control request: 409 for one's own request, an expired
/// or a used approval, or a target whose state no longer allows it.
#[utoipa::path(post, path = "/v1/approvals/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 200, body = Approved), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn approve(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.grant(&state.vault, Role::Operator, None)?;
    let vault = state.vault.clone();
    Ok(HttpResponse::Ok().json(blocking(move || vault.approve(&grant, &id)).await?))
}
