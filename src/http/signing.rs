//! Signing endpoints (DESIGN.md "Signing (v1)"): JWS and JWT, verification, the public JWKS,
//! and the signer keys' lifecycle for operators.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::auth::Caller;
use super::error::{blocking, ApiError};
use super::AppState;
use crate::vault::{
    Role, Signed, SignerChange, SignersOverview, Verification, JWKS_MAX_AGE_SECS, MAX_SIGN_PAYLOAD,
};

/// Largest PEM chain accepted by `PUT …/certificate`.
pub const CERTIFICATE_LIMIT: usize = 64 * 1024;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwsRequest {
    /// The payload, base64url without padding, canonical (unused trailing bits zero), at most
    /// 16 KiB decoded.
    #[schema(
        pattern = "^([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2}[AEIMQUYcgkosw048]|[A-Za-z0-9_-][AQgw])?$",
        max_length = 21846
    )]
    payload: String,
    /// The protected header's `typ`: 1-64 printable ASCII characters.
    #[schema(pattern = "^[!-~]{1,64}$")]
    typ: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// A compact JWS (or JWT).
    jws: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtQuery {
    ttl_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateQuery {
    #[serde(default)]
    now: bool,
}

fn grant(
    state: &AppState,
    caller: &Caller,
    roles: &[Role],
    signer: &str,
) -> Result<crate::vault::Grant, ApiError> {
    caller.grant_signer(&state.vault, roles, signer)
}

/// Compact JWS of a payload with the signer's active key (role `signer`, limited to the
/// signers its credential lists). A JSON-object payload's `exp`, if any, must be a number at
/// most the signer's `max_token_ttl_secs` ahead; `typ` `JWT` or `…+jwt` is refused (use
/// `…/jwt`, which sets `iat` and `exp`).
#[utoipa::path(post, path = "/v1/signers/{signer}/jws", tag = "signing",
    params(("signer" = String, Path)), request_body = JwsRequest,
    responses((status = 200, description = "`{\"jws\", \"kid\"}`", body = Object), (status = 404)))]
pub async fn sign_jws(
    state: web::Data<AppState>,
    caller: Caller,
    signer: web::Path<String>,
    body: web::Json<JwsRequest>,
) -> Result<HttpResponse, ApiError> {
    let grant = grant(&state, &caller, &[Role::Signer], &signer)?;
    let body = body.into_inner();
    if body.payload.len() > (MAX_SIGN_PAYLOAD * 4).div_ceil(3) {
        return Err(ApiError::bad_request(format!(
            "payload is over {MAX_SIGN_PAYLOAD} bytes"
        )));
    }
    let payload = URL_SAFE_NO_PAD
        .decode(body.payload.as_bytes())
        .map_err(|_| ApiError::bad_request("payload must be base64url without padding"))?;
    let vault = state.vault.clone();
    let signed = blocking(move || vault.sign_jws(&grant, &payload, body.typ.as_deref())).await?;
    Ok(answer("jws", signed))
}

/// JWT of a JSON object of claims; `iat` and `exp` (`ttl_secs`, at most the signer's
/// `max_token_ttl_secs`, which is also the default) are added.
#[utoipa::path(post, path = "/v1/signers/{signer}/jwt", tag = "signing",
    params(("signer" = String, Path), ("ttl_secs" = Option<u64>, Query)), request_body = Object,
    responses((status = 200, description = "`{\"jwt\", \"kid\"}`", body = Object), (status = 404)))]
pub async fn sign_jwt(
    state: web::Data<AppState>,
    caller: Caller,
    signer: web::Path<String>,
    query: web::Query<JwtQuery>,
    claims: web::Json<Map<String, Value>>,
) -> Result<HttpResponse, ApiError> {
    let grant = grant(&state, &caller, &[Role::Signer], &signer)?;
    let vault = state.vault.clone();
    let ttl = query.ttl_secs;
    let signed = blocking(move || vault.sign_jwt(&grant, claims.into_inner(), ttl)).await?;
    Ok(answer("jwt", signed))
}

fn answer(field: &str, signed: Signed) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ field: signed.token, "kid": signed.kid }))
}

/// Whether a JWS is signed by a published key of this signer (unknown, retired, compromised
/// or destroyed keys, bad signatures and expired JWTs are `valid: false`).
#[utoipa::path(post, path = "/v1/signers/{signer}/verify", tag = "signing",
    params(("signer" = String, Path)), request_body = VerifyRequest,
    responses((status = 200, body = Verification), (status = 404)))]
pub async fn verify(
    state: web::Data<AppState>,
    caller: Caller,
    signer: web::Path<String>,
    body: web::Json<VerifyRequest>,
) -> Result<HttpResponse, ApiError> {
    let grant = grant(&state, &caller, &[Role::Signer, Role::Verifier], &signer)?;
    let vault = state.vault.clone();
    let jws = body.into_inner().jws;
    Ok(HttpResponse::Ok().json(blocking(move || vault.verify_jws(&grant, &jws)).await?))
}

/// Every pending, active and verify-only key of every signer. Public; `ETag` and
/// `Cache-Control: max-age` let verifiers cache it.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "signing",
    responses((status = 200, description = "a JWK Set", content_type = "application/jwk-set+json", body = Object),
        (status = 304, description = "not modified")))]
pub async fn jwks(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let jwks = state.vault.signers().jwks();
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        // Weak comparison (RFC 9110 §13.1.2): `W/"x"` matches `"x"`.
        .is_some_and(|v| {
            v.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == jwks.etag || t == "*")
        });
    let mut resp = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    resp.insert_header((header::ETAG, jwks.etag.clone()))
        .insert_header((
            header::CACHE_CONTROL,
            format!("public, max-age={JWKS_MAX_AGE_SECS}"),
        ));
    if fresh {
        resp.finish()
    } else {
        resp.content_type("application/jwk-set+json")
            .body(jwks.body.clone())
    }
}

/// Every signer's versions, states and signature counts (role `operator`).
#[utoipa::path(get, path = "/v1/signers", tag = "signing",
    responses((status = 200, body = SignersOverview)))]
pub async fn overview(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.grant(&state.vault, Role::Operator, None)?;
    let vault = state.vault.clone();
    Ok(HttpResponse::Ok().json(blocking(move || vault.signer_overview(&grant)).await?))
}

/// A new pending key now, promoted after the policy's `publish_ahead_days`; with `now=true`,
/// the pending key (or a new one) becomes active at once.
#[utoipa::path(post, path = "/v1/signers/{signer}/rotate", tag = "signing",
    params(("signer" = String, Path), ("now" = Option<bool>, Query)),
    responses((status = 200, body = SignerChange), (status = 404), (status = 409)))]
pub async fn rotate(
    state: web::Data<AppState>,
    caller: Caller,
    signer: web::Path<String>,
    query: web::Query<RotateQuery>,
) -> Result<HttpResponse, ApiError> {
    let grant = grant(&state, &caller, &[Role::Operator], &signer)?;
    let vault = state.vault.clone();
    let now = query.now;
    Ok(HttpResponse::Ok().json(blocking(move || vault.rotate_signer(&grant, now)).await?))
}

/// Marks version v compromised: out of the JWKS and invalid on every instance within a
/// second; an active key is replaced at once.
#[utoipa::path(post, path = "/v1/signers/{signer}/versions/{v}/compromise", tag = "signing",
    params(("signer" = String, Path), ("v" = i32, Path)),
    responses((status = 200, body = SignerChange), (status = 404), (status = 409)))]
pub async fn compromise(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, i32)>,
) -> Result<HttpResponse, ApiError> {
    let (signer, version) = path.into_inner();
    let grant = grant(&state, &caller, &[Role::Operator], &signer)?;
    let vault = state.vault.clone();
    Ok(HttpResponse::Ok().json(blocking(move || vault.compromise_signer(&grant, version)).await?))
}

/// Destroys version v's private key: only a retired or compromised key (409 otherwise).
#[utoipa::path(post, path = "/v1/signers/{signer}/versions/{v}/destroy", tag = "signing",
    params(("signer" = String, Path), ("v" = i32, Path)),
    responses((status = 200, body = SignerChange), (status = 404), (status = 409)))]
pub async fn destroy(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, i32)>,
) -> Result<HttpResponse, ApiError> {
    let (signer, version) = path.into_inner();
    let grant = grant(&state, &caller, &[Role::Operator], &signer)?;
    let vault = state.vault.clone();
    Ok(HttpResponse::Ok().json(blocking(move || vault.destroy_signer(&grant, version)).await?))
}

/// A PKCS#10 request (PEM) signed by version v's key, with the policy's subject.
#[utoipa::path(post, path = "/v1/signers/{signer}/versions/{v}/csr", tag = "signing",
    params(("signer" = String, Path), ("v" = i32, Path)),
    responses((status = 200, description = "PEM CERTIFICATE REQUEST", content_type = "application/pkcs10", body = String),
        (status = 404), (status = 409)))]
pub async fn csr(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, i32)>,
) -> Result<HttpResponse, ApiError> {
    let (signer, version) = path.into_inner();
    let grant = grant(&state, &caller, &[Role::Operator], &signer)?;
    let vault = state.vault.clone();
    let pem = blocking(move || vault.signer_csr(&grant, version)).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/pkcs10")
        .body(pem))
}

/// Attaches the PEM chain (leaf first) issued for version v's key; 400 when the leaf's public
/// key is another. The JWKS then carries it as `x5c`.
#[utoipa::path(put, path = "/v1/signers/{signer}/versions/{v}/certificate", tag = "signing",
    params(("signer" = String, Path), ("v" = i32, Path)),
    request_body(content = String, content_type = "text/plain", description = "PEM certificates, leaf first"),
    responses((status = 200, body = SignerChange), (status = 404), (status = 409)))]
pub async fn certificate(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, i32)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (signer, version) = path.into_inner();
    let grant = grant(&state, &caller, &[Role::Operator], &signer)?;
    let pem = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("the certificate chain must be PEM text"))?;
    let vault = state.vault.clone();
    Ok(HttpResponse::Ok()
        .json(blocking(move || vault.attach_certificate(&grant, version, &pem)).await?))
}
