//! Data-plane endpoints. Transport only: headers and bodies in, a vault call, a response out.
//! The resident ID is read from the `Resident-Id` header and handed straight to the vault.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header::{
    HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH,
};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Serialize;
use zeroize::Zeroizing;

use super::auth::Caller;
use super::error::{blocking, ApiError};
use super::{AppState, DataPlane};
use crate::vault::{Grant, Precondition, RecordWrite, ReencryptReport, Role, VaultError};

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
pub(super) fn resident_id(req: &HttpRequest) -> Result<Zeroizing<String>, ApiError> {
    let raw = single_header(req.headers(), RESIDENT_ID)?
        .ok_or_else(|| ApiError::bad_request("the Resident-Id header is required"))?;
    Ok(Zeroizing::new(raw.to_owned()))
}

/// The role a resident data-plane route needs.
pub trait RouteRole {
    const ROLE: Role;
}
/// `GET`s: role `reader`.
pub struct Read;
/// `PUT`s and `DELETE`s: role `writer`.
pub struct Write;
impl RouteRole for Read {
    const ROLE: Role = Role::Reader;
}
impl RouteRole for Write {
    const ROLE: Role = Role::Writer;
}

/// What every call about one resident shares: the vault's grant for the route's role in the
/// path's namespace, then the `Resident-Id` header (authorization first, so a caller without
/// access learns nothing from the header checks).
pub struct ResidentCall<R> {
    grant: Grant,
    id: Zeroizing<String>,
    data_plane: Arc<dyn DataPlane>,
    role: PhantomData<R>,
}

impl<R: RouteRole + 'static> FromRequest for ResidentCall<R> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = Caller::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move {
            let caller = caller.await?;
            let state = req
                .app_data::<web::Data<AppState>>()
                .expect("AppState is registered");
            let grant = caller.grant(&state.vault, R::ROLE, req.match_info().get("ns"))?;
            Ok(ResidentCall {
                grant,
                id: resident_id(&req)?,
                data_plane: state.data_plane.clone(),
                role: PhantomData,
            })
        })
    }
}

impl<R> ResidentCall<R> {
    /// Runs the use case off the executor with the grant and the raw resident ID.
    async fn run<T: Send + 'static>(
        self,
        f: impl FnOnce(&dyn DataPlane, &Grant, &str) -> Result<T, VaultError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let ResidentCall {
            grant,
            id,
            data_plane,
            ..
        } = self;
        blocking(move || f(data_plane.as_ref(), &grant, &id)).await
    }
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
    call: ResidentCall<Write>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (_, name) = path.into_inner();
    let precondition = precondition(&req)?;
    let content_type = content_type(&req)?;
    let limit = state
        .vault
        .max_record_bytes(&call.grant)?
        .min(state.body_limit);
    let body = read_body(&req, payload, limit).await?;
    let name2 = name.clone();
    let out = call
        .run(move |vault, grant, id| {
            let write = RecordWrite {
                name: &name2,
                content_type: &content_type,
                body: &body,
                precondition: &precondition,
            };
            vault.put_record(grant, id, &write)
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
    call: ResidentCall<Read>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, name) = path.into_inner();
    let mut record = call
        .run(move |vault, grant, id| vault.get_record(grant, id, &name))
        .await?;
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
    call: ResidentCall<Write>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (_, name) = path.into_inner();
    // A DELETE is unconditional. A precondition is refused rather than ignored: a client that
    // sent one expects a record changed meanwhile to survive.
    if !matches!(precondition(&req)?, Precondition::None) {
        return Err(ApiError::bad_request(
            "DELETE takes no If-Match or If-None-Match",
        ));
    }
    call.run(move |vault, grant, id| vault.delete_record(grant, id, &name))
        .await?;
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
pub async fn list_records(call: ResidentCall<Read>) -> Result<HttpResponse, ApiError> {
    let metas = call
        .run(|vault, grant, id| vault.list_records(grant, id))
        .await?;
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
pub async fn erase_resident(call: ResidentCall<Write>) -> Result<HttpResponse, ApiError> {
    let erased = call
        .run(|vault, grant, id| vault.erase_resident(grant, id))
        .await?;
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
    let grant = caller.grant(&state.vault, Role::Reencrypt, Some(&path))?;
    let vault = state.vault.clone();
    let request = body.into_inner();
    Ok(HttpResponse::Ok()
        .json(blocking(move || vault.reencrypt(&grant, &request.resident_ids)).await?))
}
