//! HTTP transport (actix-web): routes, authentication, error mapping, telemetry.
//! Handlers parse requests and call the vault; they hold no business rules.

mod admin;
mod auth;
mod contract;
mod data_plane;
mod error;
mod keys;
mod limits;
mod ops;
mod records;
mod signing;
mod telemetry;
mod trust;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{middleware, web, App, HttpServer};

pub use data_plane::DataPlane;
pub use error::ApiError;
pub use ops::ApiDoc;
pub use records::RESIDENT_ID;
use telemetry::Metrics;

use crate::vault::Vault;

/// Shared by every worker.
pub struct AppState {
    pub vault: Arc<Vault>,
    /// The record use cases: the vault, or a benchmark's stand-in for it.
    data_plane: Arc<dyn DataPlane>,
    pub body_limit: usize,
    argon2_permits: tokio::sync::Semaphore,
    metrics: Metrics,
    /// `GET /openapi.json`, for this deployment's namespaces.
    openapi: serde_json::Value,
}

/// What the server needs besides the vault.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub body_limit: usize,
    pub argon2_concurrency: usize,
    pub workers: Option<usize>,
    /// Open connections at most, all workers together; more wait in the listen backlog.
    pub max_connections: usize,
}

/// A resource whose other methods answer 405 with `Allow` (not the 404 of an unknown path).
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<actix_web::HttpResponse, _>(ApiError::method_not_allowed(allow))
    }))
}

fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|e, _| json_error(e).into())
}

/// The largest JSON body but for `reencrypt`'s.
const JSON_LIMIT: usize = 64 * 1024;

fn routes(cfg: &mut web::ServiceConfig) {
    // The parser's message quotes the offending value (an ID pasted into a URL): never echoed.
    let path = web::PathConfig::default().error_handler(|_, _| {
        ApiError::bad_request("invalid path; /openapi.json lists the endpoints").into()
    });
    let query = web::QueryConfig::default().error_handler(|_, _| {
        ApiError::bad_request("invalid query string; /openapi.json lists the parameters").into()
    });
    cfg.app_data(json_config(JSON_LIMIT))
        .app_data(path)
        .app_data(query)
        .service(resource("/healthz", "GET").route(web::get().to(ops::healthz)))
        .service(resource("/readyz", "GET").route(web::get().to(ops::readyz)))
        .service(resource("/metrics", "GET").route(web::get().to(ops::metrics)))
        .service(resource("/openapi.json", "GET").route(web::get().to(ops::openapi)))
        .service(resource("/v1/keys", "GET").route(web::get().to(admin::keys)))
        .service(resource("/v1/audit", "GET").route(web::get().to(admin::audit)))
        .service(
            resource("/v1/credentials", "POST, GET")
                .route(web::post().to(admin::create_credential))
                .route(web::get().to(admin::list_credentials)),
        )
        .service(
            resource("/v1/credentials/{id}", "DELETE")
                .route(web::delete().to(admin::revoke_credential)),
        )
        .service(resource("/v1/ns/{ns}/records", "GET").route(web::get().to(records::list_records)))
        .service(
            resource("/v1/ns/{ns}/resident", "DELETE")
                .route(web::delete().to(records::erase_resident)),
        )
        .service(
            resource("/v1/ns/{ns}/reencrypt", "POST")
                .app_data(json_config(records::REENCRYPT_JSON_LIMIT))
                .route(web::post().to(records::reencrypt)),
        )
        .service(resource("/v1/keys/kek/rotate", "POST").route(web::post().to(keys::rotate_kek)))
        .service(
            resource("/v1/ns/{ns}/masters/rotate", "POST")
                .route(web::post().to(keys::rotate_master)),
        )
        .service(
            resource("/v1/ns/{ns}/masters/{v}/compromise", "POST")
                .route(web::post().to(keys::compromise_master)),
        )
        .service(
            resource("/v1/ns/{ns}/masters/{v}/destroy", "POST")
                .route(web::post().to(keys::destroy_master)),
        )
        .service(resource("/v1/approvals/{id}", "POST").route(web::post().to(keys::approve)))
        .service(resource("/.well-known/jwks.json", "GET").route(web::get().to(signing::jwks)))
        .service(resource("/v1/signers", "GET").route(web::get().to(signing::overview)))
        .service(
            resource("/v1/signers/{signer}/jws", "POST").route(web::post().to(signing::sign_jws)),
        )
        .service(
            resource("/v1/signers/{signer}/jwt", "POST").route(web::post().to(signing::sign_jwt)),
        )
        .service(
            resource("/v1/signers/{signer}/verify", "POST").route(web::post().to(signing::verify)),
        )
        .service(
            resource("/v1/signers/{signer}/rotate", "POST").route(web::post().to(signing::rotate)),
        )
        .service(
            resource("/v1/signers/{signer}/versions/{v}/compromise", "POST")
                .route(web::post().to(signing::compromise)),
        )
        .service(
            resource("/v1/signers/{signer}/versions/{v}/destroy", "POST")
                .route(web::post().to(signing::destroy)),
        )
        .service(
            resource("/v1/signers/{signer}/versions/{v}/csr", "POST")
                .route(web::post().to(signing::csr)),
        )
        .service(
            resource("/v1/signers/{signer}/versions/{v}/certificate", "PUT")
                .app_data(web::PayloadConfig::new(signing::CERTIFICATE_LIMIT))
                .route(web::put().to(signing::certificate)),
        )
        .service(resource("/v1/trust/expiring", "GET").route(web::get().to(trust::expiring)))
        .service(
            resource("/v1/trust/{domain}/anchors", "PUT")
                .app_data(web::PayloadConfig::new(trust::TRUST_BODY_LIMIT))
                .route(web::put().to(trust::put_anchors)),
        )
        .service(
            resource("/v1/trust/{domain}/crl", "PUT")
                .app_data(web::PayloadConfig::new(trust::TRUST_BODY_LIMIT))
                .route(web::put().to(trust::put_crl)),
        )
        .service(
            resource("/v1/trust/{domain}/partners", "POST")
                .app_data(json_config(trust::TRUST_BODY_LIMIT + 1024))
                .route(web::post().to(trust::register)),
        )
        .service(
            resource("/v1/trust/{domain}/partners/{partner}", "GET")
                .route(web::get().to(trust::partner)),
        )
        .service(
            resource("/v1/trust/{domain}/partners/{partner}/revoke", "POST")
                .route(web::post().to(trust::revoke)),
        )
        .service(
            resource("/v1/trust/{domain}/partners/{partner}/exposure", "GET")
                .route(web::get().to(trust::exposure)),
        )
        .service(
            resource("/v1/ns/{ns}/exposure", "GET").route(web::get().to(trust::resident_exposure)),
        )
        // Before the records' resource, which would take the path too; only for POST, so a
        // record named `…/share` is still read, written and deleted as any other.
        .service(
            web::resource("/v1/ns/{ns}/records/{name:.+}/share")
                .guard(actix_web::guard::Post())
                .route(web::post().to(trust::share)),
        )
        .service(
            resource("/v1/ns/{ns}/records/{name:.+}", "PUT, GET, DELETE")
                .route(web::put().to(records::put_record))
                .route(web::get().to(records::get_record))
                .route(web::delete().to(records::delete_record)),
        )
        .default_service(web::to(|| async {
            Err::<actix_web::HttpResponse, _>(ApiError::new(
                actix_web::http::StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint",
            ))
        }));
}

/// A JSON body error as the API answers it: 413 over the limit, 408 when the body stalls, else 400.
///
/// serde's messages quote the offending value or key (`invalid type: integer `4930098371``), and a
/// body may carry resident IDs (`POST .../reencrypt`): the answer names only the kind of error and
/// where it is.
fn json_error(e: actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as J;
    use serde_json::error::Category;
    match e {
        J::Overflow { limit } | J::OverflowKnownLength { limit, .. } => ApiError::too_large(limit),
        J::Payload(p) if limits::is_timeout(&p) => ApiError::body_timeout(),
        J::ContentType => ApiError::bad_request("Content-Type must be application/json"),
        J::Deserialize(e) => {
            let kind = match e.classify() {
                Category::Syntax => "not valid JSON",
                Category::Eof => "JSON cut short",
                Category::Data => "a missing, unknown or mistyped field",
                Category::Io => "unreadable",
            };
            ApiError::bad_request(format!(
                "invalid JSON body: {kind} at line {} column {}; /openapi.json has the schema",
                e.line(),
                e.column()
            ))
        }
        _ => ApiError::bad_request("invalid JSON body: the body could not be read"),
    }
}

/// A server bound and running on its own threads.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub handle: actix_web::dev::ServerHandle,
    pub server: actix_web::dev::Server,
}

/// Binds `addr` (port 0 picks a free one) and builds the server; the caller awaits or spawns
/// `server`. The background work beside it is the composition root's (`app::serve`).
pub fn bind(
    vault: Arc<Vault>,
    data_plane: Arc<dyn DataPlane>,
    addr: SocketAddr,
    settings: &HttpSettings,
) -> std::io::Result<RunningServer> {
    let state = web::Data::new(AppState {
        openapi: contract::document(vault.policy()),
        vault,
        data_plane,
        body_limit: settings.body_limit,
        argon2_permits: tokio::sync::Semaphore::new(settings.argon2_concurrency),
        metrics: Metrics::new(),
    });
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(middleware::from_fn(limits::guard_body))
            .wrap(middleware::from_fn(telemetry::observe))
            .configure(routes)
    })
    .client_request_timeout(Duration::from_secs(10))
    .shutdown_timeout(10);
    // actix counts connections per worker.
    let workers = settings
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    server = server
        .workers(workers)
        .max_connections(settings.max_connections.div_ceil(workers).max(1));
    let server = server.listen(listener)?.run();
    let handle = server.handle();
    Ok(RunningServer {
        addr,
        handle,
        server,
    })
}
