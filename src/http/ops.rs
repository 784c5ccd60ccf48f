//! Operations endpoints: liveness, readiness, metrics, OpenAPI.

use actix_web::{web, HttpResponse};
use utoipa::OpenApi;

use super::error::{blocking, ApiError};
use super::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// The database and the keystore both answer.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200), (status = 503)))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let vault = state.vault.clone();
    blocking(move || vault.check_ready()).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
}

/// Prometheus text: request counts and latency histograms by route pattern and status, and
/// seconds to the nearest partner certificate expiry per trust domain.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200)))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // From the in-memory trust snapshot: no database read on a scrape.
    state
        .metrics
        .set_trust_expiry(&state.vault.trust_expiry_seconds());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "zkvault",
        description = "Zero-knowledge identity vault. Resident IDs travel only in the Resident-Id header."
    ),
    paths(
        super::records::put_record,
        super::records::get_record,
        super::records::delete_record,
        super::records::list_records,
        super::records::erase_resident,
        super::records::reencrypt,
        super::keys::rotate_kek,
        super::keys::rotate_master,
        super::keys::compromise_master,
        super::keys::destroy_master,
        super::keys::approve,
        super::admin::create_credential,
        super::admin::list_credentials,
        super::admin::revoke_credential,
        super::admin::keys,
        super::admin::audit,
        super::signing::sign_jws,
        super::signing::sign_jwt,
        super::signing::verify,
        super::signing::jwks,
        super::signing::overview,
        super::signing::rotate,
        super::signing::compromise,
        super::signing::destroy,
        super::signing::csr,
        super::signing::certificate,
        super::trust::put_anchors,
        super::trust::put_crl,
        super::trust::register,
        super::trust::partner,
        super::trust::revoke,
        super::trust::exposure,
        super::trust::expiring,
        super::trust::share,
        super::trust::resident_exposure,
        healthz,
        readyz,
        metrics,
        openapi
    ),
    components(schemas(
        super::error::ErrorBody,
        super::signing::JwsRequest,
        super::signing::VerifyRequest,
        super::trust::RegisterRequest,
        super::trust::RevokeRequest,
        super::trust::ShareRequest
    ))
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200)))]
pub async fn openapi(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(&state.openapi)
}
