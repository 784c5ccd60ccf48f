//! Partner and device trust endpoints (DESIGN.md "Partner and device trust (v1)"): anchors,
//! CRLs, partner certificates and their revocation, the expiry watch, records shared with a
//! partner, and exposure reports.

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::Caller;
use super::error::{blocking, ApiError};
use super::records::resident_id;
use super::AppState;
use crate::vault::{
    AnchorsReport, CrlReport, Decision, Expiring, PartnerExposure, PartnerView, PendingApproval,
    Registered, ResidentExposure, Role,
};

/// Largest anchor bundle, partner chain or CRL accepted.
pub const TRUST_BODY_LIMIT: usize = crate::vault::MAX_PEM_BYTES;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The partner id, unique in the domain.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    id: String,
    /// PEM: the partner's certificate first, then any intermediates.
    #[schema(max_length = 65536)]
    certificate_chain: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    #[schema(pattern = "^(key_compromise|superseded|cessation)$")]
    reason: String,
    /// The version to revoke; the current one if absent.
    #[schema(value_type = Option<i32>, minimum = 1)]
    version: Option<f64>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    /// `DOMAIN/id`.
    #[schema(pattern = "^[A-Z][A-Z0-9_]{0,31}/[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    partner: String,
    /// The JWE's `exp - iat` in whole seconds; at most the domain's `max_share_ttl_secs` (its
    /// default). A JSON number such as `60.0` is a whole number too.
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 86400)]
    ttl_secs: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposureQuery {
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpiringQuery {
    within: Option<String>,
}

/// A JSON number that must be a whole number in `1..=max` (`60.0` is one, as JSON Schema's
/// `integer` says).
fn whole(value: Option<f64>, what: &str, max: u32) -> Result<Option<u32>, ApiError> {
    match value {
        Some(v) if v.fract() != 0.0 || !(1.0..=f64::from(max)).contains(&v) => Err(
            ApiError::bad_request(format!("{what} must be a whole number from 1 to {max}")),
        ),
        v => Ok(v.map(|v| v as u32)),
    }
}

fn text(body: &[u8], what: &str) -> Result<String, ApiError> {
    String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request(format!("{what} must be PEM text")))
}

/// Replaces the domain's anchors: a PEM bundle of root (self-signed) and intermediate CA
/// certificates, each currently valid with basicConstraints `cA=true`. Under dual control,
/// 202 with an approval for an operator.
#[utoipa::path(put, path = "/v1/trust/{domain}/anchors", tag = "trust",
    params(("domain" = String, Path)),
    request_body(content = String, content_type = "text/plain", description = "PEM CA certificates"),
    responses((status = 200, body = AnchorsReport),
        (status = 202, body = PendingApproval, description = "dual control: waiting for an operator"),
        (status = 400, description = "`certificate_refused` with the failed check as `reason`"),
        (status = 404)))]
pub async fn put_anchors(
    state: web::Data<AppState>,
    caller: Caller,
    domain: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.grant_global(&state.vault, Role::TrustAdmin)?;
    let pem = text(&body, "the anchor bundle")?;
    let vault = state.vault.clone();
    Ok(
        match blocking(move || vault.put_anchors(&grant, &domain, &pem)).await? {
            Decision::Done(report) => HttpResponse::Ok().json(report),
            Decision::Pending(pending) => HttpResponse::Accepted().json(pending),
        },
    )
}

/// Imports a CRL (PEM or DER) signed by one of the domain's CAs; honoured at registration and
/// at every share. Nothing is fetched from the network.
#[utoipa::path(put, path = "/v1/trust/{domain}/crl", tag = "trust",
    params(("domain" = String, Path)),
    request_body(content = String, content_type = "text/plain", description = "a CRL, PEM (`X509 CRL`); DER is accepted too"),
    responses((status = 200, body = CrlReport), (status = 400), (status = 404)))]
pub async fn put_crl(
    state: web::Data<AppState>,
    caller: Caller,
    domain: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.grant_global(&state.vault, Role::TrustAdmin)?;
    let vault = state.vault.clone();
    Ok(HttpResponse::Ok().json(blocking(move || vault.put_crl(&grant, &domain, &body)).await?))
}

/// Registers a partner certificate after RFC 5280 path validation to the domain's anchors; a
/// new certificate for a known id is its next version.
#[utoipa::path(post, path = "/v1/trust/{domain}/partners", tag = "trust",
    params(("domain" = String, Path)), request_body = RegisterRequest,
    responses((status = 201, body = Registered),
        (status = 400, description = "`certificate_refused` with the failed check as `reason`"),
        (status = 404), (status = 409)))]
pub async fn register(
    state: web::Data<AppState>,
    caller: Caller,
    domain: web::Path<String>,
    body: web::Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.grant_global(&state.vault, Role::TrustAdmin)?;
    let vault = state.vault.clone();
    let RegisterRequest {
        id,
        certificate_chain,
    } = body.into_inner();
    let registered =
        blocking(move || vault.register_partner(&grant, &domain, &id, &certificate_chain)).await?;
    Ok(HttpResponse::Created().json(registered))
}

/// A partner's certificate versions and their states (roles `trust_admin`, `auditor`).
#[utoipa::path(get, path = "/v1/trust/{domain}/partners/{partner}", tag = "trust",
    params(("domain" = String, Path), ("partner" = String, Path)),
    responses((status = 200, body = PartnerView), (status = 404)))]
pub async fn partner(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.grant_global_any(&state.vault, &[Role::TrustAdmin, Role::Auditor])?;
    let (domain, id) = path.into_inner();
    let vault = state.vault.clone();
    Ok(HttpResponse::Ok().json(blocking(move || vault.partner(&grant, &domain, &id)).await?))
}

/// Revokes a partner certificate (the current one unless `version` is given): every instance
/// refuses shares to it within a second, and no database restore lifts it.
#[utoipa::path(post, path = "/v1/trust/{domain}/partners/{partner}/revoke", tag = "trust",
    params(("domain" = String, Path), ("partner" = String, Path)), request_body = RevokeRequest,
    responses((status = 200, body = PartnerView), (status = 404), (status = 409)))]
pub async fn revoke(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    body: web::Json<RevokeRequest>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.grant_global(&state.vault, Role::TrustAdmin)?;
    let (domain, id) = path.into_inner();
    let RevokeRequest { reason, version } = body.into_inner();
    let version = whole(version, "version", i32::MAX as u32)?.map(|v| v as i32);
    let vault = state.vault.clone();
    Ok(HttpResponse::Ok().json(
        blocking(move || vault.revoke_partner(&grant, &domain, &id, &reason, version)).await?,
    ))
}

/// What was shared with a partner, per certificate version, from receipts that hold no
/// resident ID (role `auditor`); `reason` keeps the versions revoked for it.
#[utoipa::path(get, path = "/v1/trust/{domain}/partners/{partner}/exposure", tag = "trust",
    params(("domain" = String, Path), ("partner" = String, Path),
        ("reason" = Option<String>, Query, description = "key_compromise, superseded or cessation")),
    responses((status = 200, body = PartnerExposure), (status = 404)))]
pub async fn exposure(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    query: web::Query<ExposureQuery>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.grant_global(&state.vault, Role::Auditor)?;
    let (domain, id) = path.into_inner();
    let reason = query.into_inner().reason;
    let vault = state.vault.clone();
    Ok(HttpResponse::Ok().json(
        blocking(move || vault.partner_exposure(&grant, &domain, &id, reason.as_deref())).await?,
    ))
}

/// Partner and signer certificates expiring within `within` (default 30d; expired ones too).
#[utoipa::path(get, path = "/v1/trust/expiring", tag = "trust",
    params(("within" = Option<String>, Query, description = "a duration: 30d, 12h, 3600s")),
    responses((status = 200, body = Expiring)))]
pub async fn expiring(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ExpiringQuery>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.grant_global_any(&state.vault, &[Role::Operator, Role::Auditor])?;
    let within =
        crate::duration::parse(query.within.as_deref().unwrap_or("30d")).map_err(|_| {
            ApiError::bad_request("within must be a duration such as 30d, 12h or 3600s")
        })?;
    let vault = state.vault.clone();
    Ok(HttpResponse::Ok().json(blocking(move || vault.expiring(&grant, within)).await?))
}

/// A record's exact bytes as a compact JWE to the partner's current certificate (role
/// `sharer`); 409 `partner_untrusted` if that certificate is revoked, expired or no longer
/// chains.
#[utoipa::path(post, path = "/v1/ns/{ns}/records/{name}/share", tag = "trust",
    params(("ns" = String, Path), ("name" = String, Path), ("Resident-Id" = String, Header)),
    request_body = ShareRequest,
    responses((status = 200, content_type = "application/jose", body = String, description = "a compact JWE"),
        (status = 404), (status = 409, description = "`partner_untrusted`")))]
pub async fn share(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Json<ShareRequest>,
) -> Result<HttpResponse, ApiError> {
    let (ns, name) = path.into_inner();
    let grant = caller.grant(&state.vault, Role::Sharer, Some(&ns))?;
    let id = resident_id(&req)?;
    let ShareRequest { partner, ttl_secs } = body.into_inner();
    let ttl_secs = whole(ttl_secs, "ttl_secs", u32::MAX)?.map(u64::from);
    let vault = state.vault.clone();
    let shared =
        blocking(move || vault.share_record(&grant, &id, &name, &partner, ttl_secs)).await?;
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "application/jose"))
        .insert_header(("Cache-Control", "no-store"))
        .body(shared.jwe))
}

/// The partners that received this resident's records (role `reader`).
#[utoipa::path(get, path = "/v1/ns/{ns}/exposure", tag = "trust",
    params(("ns" = String, Path), ("Resident-Id" = String, Header)),
    responses((status = 200, body = ResidentExposure)))]
pub async fn resident_exposure(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    ns: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.grant(&state.vault, Role::Reader, Some(&ns))?;
    let id = resident_id(&req)?;
    let vault = state.vault.clone();
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(blocking(move || vault.resident_exposure(&grant, &id)).await?))
}
