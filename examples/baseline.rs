//! BENCH-ONLY no-encryption baseline for `loadtest/run.sh`. NEVER a mode of the product: it
//! stores resident IDs and record bodies IN CLEAR.
//!
//! It answers the data-plane paths of zkvault (`PUT|GET|DELETE /v1/ns/{ns}/records/{name}`,
//! `GET /v1/ns/{ns}/records`, `DELETE /v1/ns/{ns}/resident`, `/healthz`) with everything zkvault
//! does around the crypto kept the same: the same actix server settings and per-request
//! telemetry (Prometheus counters + one access-log line), the same bearer-token check (zkvault's
//! own `Credentials`: cached, Argon2id off the executor behind the same semaphore), the same
//! body deadline middleware, the same
//! header, name, ID and body-size validation, the same `Store` (diesel, same schema, same pool),
//! the same read-then-write optimistic PUT. What it leaves out is exactly the cost measured by
//! the ratio: blind index (HMAC), resident key (HKDF), DEK generation, wrapping and the body AEAD.
//! Rows are written to the same `records` table: `blind_index` holds the normalised resident ID,
//! `body_ciphertext` the body, nonces and wrapped DEK are zero bytes of the real lengths.
//!
//! ```text
//! cargo run --release --example baseline -- serve            # same ZKVAULT_* variables as zkvault
//! cargo run --release --example baseline -- seed --count N   # same UINs and bodies as `zkvault seed`
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, ETAG,
    IF_MATCH, IF_NONE_MATCH,
};
use actix_web::http::StatusCode;
use actix_web::middleware::{self, Next};
use actix_web::web::Bytes;
use actix_web::{web, App, Error, FromRequest, HttpMessage, HttpRequest, HttpResponse, HttpServer};
use clap::{Parser, Subcommand};
use futures_util::{Stream, StreamExt};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use zeroize::Zeroizing;
use zkvault::config::Config;
use zkvault::http::ApiError;
use zkvault::service::{self, EmbeddedLayout};
use zkvault::storage::{AuditEntry, RecordRow, StorageError, Store};
use zkvault::vault::{
    now_ms, seed_body, seed_uin, valid_record_name, Principal, Role, Vault, VaultError,
};
use zkvault_core::ResidentId;

#[derive(Parser)]
#[command(
    about = "BENCH-ONLY no-encryption baseline of zkvault's data plane (stores IDs and bodies in clear)"
)]
struct Cli {
    #[arg(
        long,
        global = true,
        default_value = "zkvault-baseline-data",
        env = "ZKVAULT_DATA_DIR"
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Serve,
    Seed {
        #[arg(long, default_value = "resident-portal")]
        ns: String,
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        #[arg(long, default_value_t = 0)]
        start: u64,
        #[arg(long, default_value = "demographics")]
        name: String,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Config::load(None, &cli.data_dir)?;
    // The real vault is opened only for its credentials, policy and store; no key is used.
    let layout = EmbeddedLayout {
        dir: cli.data_dir.clone(),
    };
    layout.prepare(&config)?;
    let vault = service::open_vault(&config, true)?;
    match cli.command {
        Command::Serve => {
            eprintln!(
                "\n  !! BASELINE (bench only): resident IDs and bodies are stored IN CLEAR.\n"
            );
            layout.issue_first_credentials(&vault)?;
            serve(vault, &config)
        }
        Command::Seed {
            ns,
            count,
            start,
            name,
            batch,
        } => seed(&vault, &ns, start, count, &name, batch),
    }
}

fn seed(
    vault: &Vault,
    ns: &str,
    start: u64,
    count: u64,
    name: &str,
    batch: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut inserted = 0;
    let mut i = start;
    while i < start + count {
        let hi = (i + batch.max(1) as u64).min(start + count);
        let rows: Vec<RecordRow> = (i..hi)
            .map(|k| {
                let uin = seed_uin(k);
                let body = seed_body(k, &uin);
                clear_row(
                    *uuid::Uuid::new_v4().as_bytes(),
                    ns,
                    uin.into_bytes(),
                    name,
                    "application/json",
                    body,
                    1,
                    now_ms(),
                )
            })
            .collect();
        inserted += vault.store().insert_records(&rows)?;
        i = hi;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"namespace": ns, "count": count, "inserted": inserted, "seconds": seconds})
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn clear_row(
    id: [u8; 16],
    ns: &str,
    resident: Vec<u8>,
    name: &str,
    content_type: &str,
    body: Vec<u8>,
    revision: i64,
    created_at: i64,
) -> RecordRow {
    let now = now_ms();
    RecordRow {
        id: id.to_vec(),
        namespace: ns.to_owned(),
        blind_index: resident,
        name: name.to_owned(),
        format: 0,
        master_version: 0,
        dek_nonce: vec![0; 24],
        wrapped_dek: vec![0; 48],
        body_nonce: vec![0; 24],
        plaintext_len: body.len() as i64,
        body_ciphertext: body,
        content_type: content_type.to_owned(),
        revision,
        etag: hex::encode(zkvault_core::random::array::<8>().expect("OS randomness")),
        created_at,
        updated_at: now,
    }
}

struct State {
    vault: Arc<Vault>,
    store: Store,
    body_limit: usize,
    audit_reads: bool,
    argon2_permits: tokio::sync::Semaphore,
    requests: IntCounterVec,
    latency: HistogramVec,
}

fn serve(vault: Arc<Vault>, config: &Config) -> anyhow::Result<()> {
    let registry = Registry::new_custom(Some("baseline".into()), None)?;
    let labels = ["route", "method", "status"];
    let requests = IntCounterVec::new(
        Opts::new("http_requests_total", "HTTP requests answered"),
        &labels,
    )?;
    let latency = HistogramVec::new(
        HistogramOpts::new(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
        )
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ]),
        &labels,
    )?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(latency.clone()))?;
    let state = web::Data::new(State {
        store: vault.store().clone(),
        vault: vault.clone(),
        body_limit: config.body_limit,
        audit_reads: config.audit_reads,
        argon2_permits: tokio::sync::Semaphore::new(config.argon2_concurrency),
        requests,
        latency,
    });
    // Same revocation sync as zkvault's server (a credentials query every 500 ms).
    let weak = Arc::downgrade(&vault);
    drop(vault);
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(500));
        let Some(v) = weak.upgrade() else { return };
        let _ = v.credentials().sync_revocations();
    });
    let bind = config.bind;
    let workers = config.workers;
    actix_web::rt::System::new().block_on(async move {
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(middleware::from_fn(body_deadline))
                .wrap(middleware::from_fn(observe))
                .route(
                    "/healthz",
                    web::get().to(|| async {
                        HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
                    }),
                )
                .route("/v1/ns/{ns}/records", web::get().to(list_records))
                .route("/v1/ns/{ns}/resident", web::delete().to(erase_resident))
                .service(
                    web::resource("/v1/ns/{ns}/records/{name:.+}")
                        .route(web::put().to(put_record))
                        .route(web::get().to(get_record))
                        .route(web::delete().to(delete_record)),
                )
                .default_service(web::to(|| async {
                    Err::<HttpResponse, _>(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        "no such endpoint",
                    ))
                }))
        })
        .client_request_timeout(Duration::from_secs(10))
        .shutdown_timeout(10);
        if let Some(w) = workers {
            server = server.workers(w);
        }
        let server = server
            .bind(bind)
            .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?
            .run();
        tracing::info!(addr = %bind, "baseline listening");
        server
            .await
            .map_err(|e| anyhow::anyhow!("server failed: {e}"))
    })
}

/// Same work per request as zkvault's telemetry middleware.
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let state = req.app_data::<web::Data<State>>().cloned();
    let request_id = hex::encode(zkvault_core::random::array::<8>().unwrap_or_default());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let mut res = next.call(req).await?;
    let status = res.status();
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(state) = state {
        let labels = [route.as_str(), method.as_str(), status.as_str()];
        state.requests.with_label_values(&labels).inc();
        state.latency.with_label_values(&labels).observe(elapsed);
    }
    tracing::info!(
        request_id,
        method,
        route,
        status = status.as_u16(),
        ms = elapsed * 1000.0,
        "request"
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(HeaderName::from_static("request-id"), v);
    }
    Ok(res)
}

/// Same as zkvault's `http::limits::body_deadline`: every body read through an idle timeout and a
/// deadline (two timers per request).
async fn body_deadline(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let payload = Box::pin(req.take_payload());
    let timed: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(Deadlined {
        inner: payload,
        idle: Box::pin(tokio::time::sleep(BODY_IDLE_TIMEOUT)),
        deadline: Box::pin(tokio::time::sleep(BODY_DEADLINE)),
        finished: false,
    });
    req.set_payload(Payload::from(timed));
    next.call(req).await
}

const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_DEADLINE: Duration = Duration::from_secs(60);

struct Deadlined<S> {
    inner: S,
    idle: Pin<Box<tokio::time::Sleep>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    finished: bool,
}

impl<S: Stream<Item = Result<Bytes, PayloadError>> + Unpin> Stream for Deadlined<S> {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.idle
                    .as_mut()
                    .reset(tokio::time::Instant::now() + BODY_IDLE_TIMEOUT);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(other) => {
                this.finished = true;
                Poll::Ready(other)
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready()
                    || this.idle.as_mut().poll(cx).is_ready()
                {
                    this.finished = true;
                    return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request body not received in time",
                    )))));
                }
                Poll::Pending
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VaultError> + Send + 'static,
) -> Result<T, ApiError> {
    match web::block(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(_) => Err(VaultError::Internal("blocking task failed".into()).into()),
    }
}

#[derive(Clone)]
struct RequestId(String);

/// The same bearer check as zkvault's `Caller` extractor.
struct Caller(Arc<Principal>, String);

impl Caller {
    /// An audit entry like the vault's `Actor::entry`.
    fn entry(&self, operation: &str, ns: &str, target: &str, resident: &[u8]) -> AuditEntry {
        AuditEntry {
            at: now_ms(),
            actor: self.0.id.clone(),
            request_id: self.1.clone(),
            operation: operation.to_owned(),
            namespace: ns.to_owned(),
            target: target.to_owned(),
            // zkvault writes an 8-byte keyed tag in hex; same length here (not keyed: bench only).
            resident_tag: format!(
                "{:0>16}",
                String::from_utf8_lossy(&resident[..resident.len().min(16)])
            ),
            outcome: "ok".into(),
            detail: String::new(),
        }
    }
}

/// Like the vault's `audited`/`audited_read`: changes carry their entry into their own
/// transaction, reads append it after success when `append` (the `audit_reads` setting),
/// failures always append it with the error code.
fn audited<T>(
    store: &Store,
    entry: AuditEntry,
    append: bool,
    f: impl FnOnce(&AuditEntry) -> Result<T, VaultError>,
) -> Result<T, VaultError> {
    match f(&entry) {
        Ok(v) => {
            if append {
                store.append_audit(&entry)?;
            }
            Ok(v)
        }
        Err(e) => {
            let mut failed = entry;
            failed.outcome = e.code().to_owned();
            let _ = store.append_audit(&failed);
            Err(e)
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<State>>().cloned();
        let token = bearer(req);
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        Box::pin(async move {
            let state = state.expect("State is registered");
            let token = token?;
            if let Some(p) = state.vault.credentials().cached(&token) {
                return Ok(Caller(p, request_id));
            }
            let _permit = state
                .argon2_permits
                .acquire()
                .await
                .expect("semaphore is never closed");
            let vault = state.vault.clone();
            Ok(Caller(
                blocking(move || vault.credentials().verify(&token)).await?,
                request_id,
            ))
        })
    }
}

fn bearer(req: &HttpRequest) -> Result<String, ApiError> {
    let mut values = req.headers().get_all(AUTHORIZATION);
    let value = values.next().ok_or_else(ApiError::unauthenticated)?;
    if values.next().is_some() {
        return Err(ApiError::bad_request("more than one Authorization header"));
    }
    let value = value.to_str().map_err(|_| ApiError::unauthenticated())?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or_else(ApiError::unauthenticated)?
        .trim();
    if token.is_empty() || token.len() > 256 {
        return Err(ApiError::unauthenticated());
    }
    Ok(token.to_owned())
}

fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    let mut values = headers.get_all(name);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad_request(format!(
            "more than one {name} header"
        )));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| ApiError::bad_request(format!("{name} header must be visible ASCII")))
}

/// Checks role and namespace, validates name and ID like the vault does; returns the
/// normalised ID bytes (stored in clear in place of the blind index).
fn prepare(
    state: &State,
    caller: &Caller,
    req: &HttpRequest,
    role: Role,
    ns: &str,
    name: Option<&str>,
) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    if req.uri().path().contains('%') {
        return Err(ApiError::bad_request(
            "percent-encoding is not allowed in record paths",
        ));
    }
    caller.0.require(role, Some(ns))?;
    let raw = single_header(req.headers(), "Resident-Id")?
        .ok_or_else(|| ApiError::bad_request("the Resident-Id header is required"))?;
    let policy = state
        .vault
        .policy()
        .namespace(ns)
        .ok_or(VaultError::UnknownNamespace)?;
    if let Some(name) = name {
        if !valid_record_name(name) {
            return Err(ApiError::bad_request("bad record name"));
        }
    }
    let id = ResidentId::parse_with(raw, policy.id_checksum)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Zeroizing::new(id.as_bytes().to_vec()))
}

enum Pre {
    None,
    IfMatch(String),
    IfNoneMatch,
}

fn precondition(req: &HttpRequest) -> Result<Pre, ApiError> {
    let if_match = single_header(req.headers(), IF_MATCH.as_str())?;
    let if_none_match = single_header(req.headers(), IF_NONE_MATCH.as_str())?;
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "use either If-Match or If-None-Match, not both",
        )),
        (None, Some("*")) => Ok(Pre::IfNoneMatch),
        (None, Some(_)) => Err(ApiError::bad_request("If-None-Match supports only *")),
        (Some(tag), None) => Ok(Pre::IfMatch(tag.trim().trim_matches('"').to_owned())),
        (None, None) => Ok(Pre::None),
    }
}

async fn put_record(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (ns, name) = path.into_inner();
    let resident = prepare(&state, &caller, &req, Role::Writer, &ns, Some(&name))?;
    let pre = precondition(&req)?;
    let content_type = match single_header(req.headers(), CONTENT_TYPE.as_str())? {
        None => "application/octet-stream".to_owned(),
        Some(ct)
            if !ct.is_empty()
                && ct.len() <= 255
                && ct.bytes().all(|b| (0x20..0x7f).contains(&b)) =>
        {
            ct.to_owned()
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "Content-Type must be 1-255 visible ASCII characters",
            ))
        }
    };
    let limit = state
        .vault
        .policy()
        .namespace(&ns)
        .ok_or(VaultError::UnknownNamespace)?
        .max_record_bytes
        .min(state.body_limit);
    if let Some(len) = single_header(req.headers(), CONTENT_LENGTH.as_str())? {
        if len
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request("Content-Length is not a number"))?
            > limit
        {
            return Err(ApiError::too_large(limit));
        }
    }
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("request body could not be read: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    let store = state.store.clone();
    let name2 = name.clone();
    let entry = caller.entry("record.put", &ns, &name, &resident);
    let (created, row) = blocking(move || {
        audited(&store, entry, false, |entry| {
            for _ in 0..5 {
                let existing = store.record(&ns, &resident, &name2)?;
                match (&pre, &existing) {
                    (Pre::IfNoneMatch, Some(_)) | (Pre::IfMatch(_), None) => {
                        return Err(VaultError::PreconditionFailed)
                    }
                    (Pre::IfMatch(tag), Some(row)) if *tag != row.etag => {
                        return Err(VaultError::PreconditionFailed)
                    }
                    _ => {}
                }
                let now = now_ms();
                let id: [u8; 16] = match &existing {
                    Some(r) => {
                        r.id.as_slice()
                            .try_into()
                            .map_err(|_| VaultError::Integrity)?
                    }
                    None => *uuid::Uuid::new_v4().as_bytes(),
                };
                let revision = existing.as_ref().map_or(1, |r| r.revision + 1);
                let created_at = existing.as_ref().map_or(now, |r| r.created_at);
                let row = clear_row(
                    id,
                    &ns,
                    resident.to_vec(),
                    &name2,
                    &content_type,
                    body.to_vec(),
                    revision,
                    created_at,
                );
                let written = match &existing {
                    None => match store.insert_record(&row, entry) {
                        Ok(()) => true,
                        Err(StorageError::Conflict) => false,
                        Err(e) => return Err(e.into()),
                    },
                    Some(old) => store.replace_record(&row, old.revision, entry)?,
                };
                if written {
                    return Ok((existing.is_none(), row));
                }
            }
            Err(VaultError::Conflict(
                "record is being written concurrently; retry".into(),
            ))
        })
    })
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status)
        .insert_header((ETAG, format!("\"{}\"", row.etag)))
        .json(serde_json::json!({"name": name, "revision": row.revision, "etag": row.etag, "master_version": 0})))
}

async fn get_record(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (ns, name) = path.into_inner();
    let resident = prepare(&state, &caller, &req, Role::Reader, &ns, Some(&name))?;
    let store = state.store.clone();
    let entry = caller.entry("record.get", &ns, &name, &resident);
    let audit_reads = state.audit_reads;
    let row = blocking(move || {
        audited(&store, entry, audit_reads, |_| {
            store
                .record(&ns, &resident, &name)?
                .ok_or(VaultError::NotFound)
        })
    })
    .await?;
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, row.content_type))
        .insert_header((ETAG, format!("\"{}\"", row.etag)))
        .insert_header(("Record-Revision", row.revision.to_string()))
        .insert_header(("Cache-Control", "no-store"))
        .body(row.body_ciphertext))
}

async fn delete_record(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (ns, name) = path.into_inner();
    let resident = prepare(&state, &caller, &req, Role::Writer, &ns, Some(&name))?;
    let store = state.store.clone();
    let entry = caller.entry("record.delete", &ns, &name, &resident);
    blocking(move || {
        audited(&store, entry, false, |entry| {
            if store.delete_record(&ns, &resident, &name, entry)? {
                Ok(())
            } else {
                Err(VaultError::NotFound)
            }
        })
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn list_records(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let ns = path.into_inner();
    let resident = prepare(&state, &caller, &req, Role::Reader, &ns, None)?;
    let store = state.store.clone();
    let entry = caller.entry("record.list", &ns, "", &resident);
    let audit_reads = state.audit_reads;
    let metas = blocking(move || {
        audited(&store, entry, audit_reads, |_| {
            Ok(store.list_records(&ns, &resident)?)
        })
    })
    .await?;
    let records: Vec<_> = metas
        .into_iter()
        .map(|m| {
            let updated = chrono::DateTime::from_timestamp_millis(m.updated_at)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default();
            serde_json::json!({"name": m.name, "revision": m.revision, "etag": m.etag, "content_type": m.content_type, "bytes": m.plaintext_len, "updated_at": updated})
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({"records": records})))
}

async fn erase_resident(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let ns = path.into_inner();
    let resident = prepare(&state, &caller, &req, Role::Writer, &ns, None)?;
    let store = state.store.clone();
    let entry = caller.entry("resident.erase", &ns, "", &resident);
    let erased = blocking(move || {
        audited(&store, entry, false, |entry| {
            Ok(store.erase_resident(&ns, &resident, entry)?)
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"erased": erased})))
}
