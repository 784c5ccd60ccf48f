//! Data-plane endpoints. Transport only: headers and bodies in, a vault call, a response out.
//! The resident ID is read from the `Resident-Id` header and handed straight to the vault.

use actix_web::http::header::{
    HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH,
};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Serialize;
use zeroize::Zeroizing;

use super::auth::Caller;
use super::error::{blocking, ApiError};
use super::AppState;
use crate::vault::{Precondition, RecordWrite, ReencryptReport, Role, VaultError};

pub const RESIDENT_ID: &str = "Resident-Id";
/// `reencrypt`'s JSON limit: 1,000 resident IDs of 64 characters, quoted and comma-separated,
/// take ~67 KB; twice that leaves room for whitespace and still bounds the body.
pub const REENCRYPT_JSON_LIMIT: usize = 128 * 1024;
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Exactly one header named `name`, as visible ASCII.
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

/// The raw resident ID; the vault normalises and validates it. Copied into a zeroizing buffer.
fn resident_id(req: &HttpRequest) -> Result<Zeroizing<String>, ApiError> {
    let raw = single_header(req.headers(), RESIDENT_ID)?
        .ok_or_else(|| ApiError::bad_request("the Resident-Id header is required"))?;
    Ok(Zeroizing::new(raw.to_owned()))
}

fn precondition(req: &HttpRequest) -> Result<Precondition, ApiError> {
    // An empty field is an empty list of entity tags: no condition (RFC 9110 §5.6.1).
    let if_match =
        single_header(req.headers(), IF_MATCH.as_str())?.filter(|v| !v.trim().is_empty());
    let if_none_match =
        single_header(req.headers(), IF_NONE_MATCH.as_str())?.filter(|v| !v.trim().is_empty());
    if if_none_match.is_some_and(|v| v != "*") {
        return Err(ApiError::bad_request("If-None-Match supports only *"));
    }
    match (if_match, if_none_match) {
        (Some(tag), Some(_)) => if_match_tag(tag).map(|_| Precondition::Never),
        (None, Some(_)) => Ok(Precondition::IfNoneMatch),
        (Some(tag), None) => if_match_tag(tag),
        (None, None) => Ok(Precondition::None),
    }
}

/// `If-Match: *` or one quoted ETag of ours.
fn if_match_tag(tag: &str) -> Result<Precondition, ApiError> {
    match tag {
        "*" => Ok(Precondition::IfExists),
        tag => {
            let tag = tag.trim();
            let inner = tag
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric()))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "If-Match must be * or one quoted ETag as returned by the service",
                    )
                })?;
            Ok(Precondition::IfMatch(inner.to_owned()))
        }
    }
}

fn content_type(req: &HttpRequest) -> Result<String, ApiError> {
    match single_header(req.headers(), CONTENT_TYPE.as_str())? {
        None => Ok(DEFAULT_CONTENT_TYPE.to_owned()),
        Some(ct)
            if !ct.is_empty()
                && ct.len() <= 255
                && ct.bytes().all(|b| (0x20..0x7f).contains(&b)) =>
        {
            Ok(ct.to_owned())
        }
        Some(_) => Err(ApiError::bad_request(
            "Content-Type must be 1-255 visible ASCII characters",
        )),
    }
}

/// Reads the body up to `limit` bytes; more is a 413 before the rest is read.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    if let Some(len) = single_header(req.headers(), CONTENT_LENGTH.as_str())? {
        let len: usize = len
            .parse()
            .map_err(|_| ApiError::bad_request("Content-Length is not a number"))?;
        if len > limit {
            return Err(ApiError::too_large(limit));
        }
    }
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            if super::limits::is_timeout(&e) {
                ApiError::body_timeout()
            } else {
                ApiError::bad_request(format!("request body could not be read: {e}"))
            }
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The namespace's record size limit, capped by the server's body limit.
fn body_limit(state: &AppState, ns: &str) -> Result<usize, ApiError> {
    let ns_limit = state
        .vault
        .policy()
        .namespace(ns)
        .ok_or(VaultError::UnknownNamespace)?
        .max_record_bytes;
    Ok(ns_limit.min(state.body_limit))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PutResponse {
    name: String,
    revision: i64,
    etag: String,
    master_version: u32,
}

/// Store or replace a record.
#[utoipa::path(put, path = "/v1/ns/{ns}/records/{name}", tag = "records",
    params(("ns" = String, Path), ("name" = String, Path), ("Resident-Id" = String, Header),
        ("If-Match" = Option<String>, Header, description = "`*`, or the quoted ETag the record must still have"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: only if the record does not exist")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 201, body = PutResponse, description = "stored", headers(("ETag" = String))),
        (status = 200, body = PutResponse, description = "replaced", headers(("ETag" = String))),
        (status = 409, description = "written concurrently by others too often; retry"),
        (status = 412)))]
pub async fn put_record(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (ns, name) = path.into_inner();
    caller.require(Role::Writer, Some(&ns))?;
    let id = resident_id(&req)?;
    let precondition = precondition(&req)?;
    let content_type = content_type(&req)?;
    let body = read_body(&req, payload, body_limit(&state, &ns)?).await?;
    let vault = state.vault.clone();
    let name2 = name.clone();
    let actor = caller.actor();
    let out = blocking(move || {
        let write = RecordWrite {
            name: &name2,
            content_type: &content_type,
            body: &body,
            precondition: &precondition,
        };
        vault.put_record(&actor, &ns, &id, &write)
    })
    .await?;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status)
        .insert_header((ETAG, format!("\"{}\"", out.etag)))
        .json(PutResponse {
            name,
            revision: out.revision,
            etag: out.etag,
            master_version: out.master_version,
        }))
}

/// Read a record: the exact stored bytes and Content-Type.
#[utoipa::path(get, path = "/v1/ns/{ns}/records/{name}", tag = "records",
    params(("ns" = String, Path), ("name" = String, Path), ("Resident-Id" = String, Header)),
    responses(
        (status = 200, description = "the record's exact bytes, with the Content-Type it was stored with",
            content_type = "application/octet-stream", body = Vec<u8>,
            headers(("ETag" = String), ("Record-Revision" = i64, description = "1 for a new record, +1 per replace"))),
        (status = 410)))]
pub async fn get_record(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (ns, name) = path.into_inner();
    caller.require(Role::Reader, Some(&ns))?;
    let id = resident_id(&req)?;
    let vault = state.vault.clone();
    let actor = caller.actor();
    let mut record = blocking(move || vault.get_record(&actor, &ns, &id, &name)).await?;
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, record.content_type))
        .insert_header((ETAG, format!("\"{}\"", record.etag)))
        .insert_header(("Record-Revision", record.revision.to_string()))
        .insert_header(("Cache-Control", "no-store"))
        .body(std::mem::take(&mut *record.body)))
}

/// Delete one record.
#[utoipa::path(delete, path = "/v1/ns/{ns}/records/{name}", tag = "records",
    params(("ns" = String, Path), ("name" = String, Path), ("Resident-Id" = String, Header)),
    responses((status = 204)))]
pub async fn delete_record(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (ns, name) = path.into_inner();
    caller.require(Role::Writer, Some(&ns))?;
    // A DELETE is unconditional. A precondition is refused rather than ignored: a client that
    // sent one expects a record changed meanwhile to survive.
    if !matches!(precondition(&req)?, Precondition::None) {
        return Err(ApiError::bad_request(
            "DELETE takes no If-Match or If-None-Match",
        ));
    }
    let id = resident_id(&req)?;
    let vault = state.vault.clone();
    let actor = caller.actor();
    blocking(move || vault.delete_record(&actor, &ns, &id, &name)).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RecordEntry {
    name: String,
    revision: i64,
    etag: String,
    content_type: String,
    bytes: i64,
    #[schema(format = DateTime)]
    updated_at: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RecordList {
    records: Vec<RecordEntry>,
}

/// The resident's records (an unknown resident has none).
#[utoipa::path(get, path = "/v1/ns/{ns}/records", tag = "records",
    params(("ns" = String, Path), ("Resident-Id" = String, Header)),
    responses((status = 200, body = RecordList)))]
pub async fn list_records(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let ns = path.into_inner();
    caller.require(Role::Reader, Some(&ns))?;
    let id = resident_id(&req)?;
    let vault = state.vault.clone();
    let actor = caller.actor();
    let metas = blocking(move || vault.list_records(&actor, &ns, &id)).await?;
    let records = metas
        .into_iter()
        .map(|m| RecordEntry {
            name: m.name,
            revision: m.revision,
            etag: m.etag,
            content_type: m.content_type,
            bytes: m.plaintext_len,
            updated_at: crate::time::rfc3339(m.updated_at),
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(RecordList { records }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Erased {
    erased: u64,
}

/// Erase every record of the resident in this namespace (right to erasure).
#[utoipa::path(delete, path = "/v1/ns/{ns}/resident", tag = "records",
    params(("ns" = String, Path), ("Resident-Id" = String, Header)),
    responses((status = 200, body = Erased)))]
pub async fn erase_resident(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let ns = path.into_inner();
    caller.require(Role::Writer, Some(&ns))?;
    let id = resident_id(&req)?;
    let vault = state.vault.clone();
    let actor = caller.actor();
    let erased = blocking(move || vault.erase_resident(&actor, &ns, &id)).await?;
    Ok(HttpResponse::Ok().json(Erased { erased }))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReencryptRequest {
    /// At most 1000 resident IDs (each as the `Resident-Id` header takes it).
    #[schema(max_items = 1000)]
    resident_ids: Vec<String>,
}

impl Drop for ReencryptRequest {
    fn drop(&mut self) {
        self.resident_ids
            .iter_mut()
            .for_each(zeroize::Zeroize::zeroize);
    }
}

/// Move these residents' records to the active master (rewrap; re-key where compromised).
#[utoipa::path(post, path = "/v1/ns/{ns}/reencrypt", tag = "records", params(("ns" = String, Path)),
    request_body = ReencryptRequest,
    responses((status = 200, body = ReencryptReport), (status = 409, description = "the masters kept changing; retry")))]
pub async fn reencrypt(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<ReencryptRequest>,
) -> Result<HttpResponse, ApiError> {
    let ns = path.into_inner();
    caller.require(Role::Reencrypt, Some(&ns))?;
    let vault = state.vault.clone();
    let request = body.into_inner();
    let actor = caller.actor();
    Ok(HttpResponse::Ok()
        .json(blocking(move || vault.reencrypt(&actor, &ns, &request.resident_ids)).await?))
}
