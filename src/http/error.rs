//! The one place a failure becomes an HTTP status and a JSON error body.
//!
//! 4xx bodies say what was wrong with the request; 5xx bodies are generic and the detail goes to
//! the log (vault errors never carry resident IDs, keys or plaintext, so logging them is safe).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::vault::VaultError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// One header the answer needs (`Allow` on a 405, `Retry-After` on a 503 busy).
    header: Option<(&'static str, &'static str)>,
    /// The check a refused certificate failed.
    reason: Option<&'static str>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// A stable machine-readable code, e.g. `bad_request`, `not_found`, `integrity`.
    pub error: &'a str,
    /// Human-readable detail; never contains resident IDs or secrets.
    pub message: &'a str,
    /// For `certificate_refused`: the check that failed (`expired`, `unknown_issuer`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            header: None,
            reason: None,
        }
    }

    /// A known path with a method it does not take.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this endpoint takes {allow}"),
        );
        ApiError {
            header: Some(("Allow", allow)),
            ..e
        }
    }

    /// Too many credential verifications already waiting: try again shortly.
    pub fn busy() -> Self {
        let e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many credential verifications at once; retry",
        );
        ApiError {
            header: Some(("Retry-After", "1")),
            ..e
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("body exceeds the limit of {limit} bytes"),
        )
    }

    /// The request body stalled or trickled past the limits of `limits.rs`; the connection is closed.
    pub fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "request body not received in time",
        )
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "missing, unknown, expired or revoked credential",
        )
    }

    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            resp.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if let Some(header) = self.header {
            resp.insert_header(header);
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still arrive: never read it as the next request.
            resp.force_close();
        }
        resp.insert_header(("Cache-Control", "no-store"))
            .json(ErrorBody {
                error: self.code,
                message: &self.message,
                reason: self.reason,
            })
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        use StatusCode as S;
        match e {
            VaultError::BadInput(m) => Self::bad_request(m),
            VaultError::Unauthenticated => Self::unauthenticated(),
            VaultError::Forbidden(m) => Self::new(S::FORBIDDEN, "forbidden", m),
            VaultError::NotFound => Self::new(S::NOT_FOUND, "not_found", "no such record"),
            VaultError::UnknownNamespace => {
                Self::new(S::NOT_FOUND, "unknown_namespace", "no such namespace")
            }
            VaultError::UnknownSigner => Self::new(
                S::NOT_FOUND,
                "unknown_signer",
                "no such signer or signer version",
            ),
            VaultError::UnknownDomain => {
                Self::new(S::NOT_FOUND, "unknown_domain", "no such trust domain")
            }
            VaultError::UnknownPartner => {
                Self::new(S::NOT_FOUND, "unknown_partner", "no such partner")
            }
            VaultError::PartnerUntrusted => Self::new(
                S::CONFLICT,
                "partner_untrusted",
                "the partner's current certificate is revoked, expired or no longer chains to an anchor",
            ),
            VaultError::CertificateRefused(r) => ApiError {
                reason: Some(r.reason),
                ..Self::new(S::BAD_REQUEST, "certificate_refused", r.message)
            },
            VaultError::Conflict(m) => Self::new(S::CONFLICT, "conflict", m),
            VaultError::PreconditionFailed => Self::new(
                S::PRECONDITION_FAILED,
                "precondition_failed",
                "If-Match or If-None-Match did not hold",
            ),
            VaultError::TooLarge { limit, .. } => Self::too_large(limit),
            VaultError::Shredded => {
                Self::new(S::GONE, "shredded", "the record's master key was destroyed")
            }
            VaultError::Integrity => {
                tracing::error!("stored data failed authentication");
                Self::new(
                    S::INTERNAL_SERVER_ERROR,
                    "integrity",
                    "stored data failed authentication",
                )
            }
            VaultError::StorageUnavailable(detail) | VaultError::KeystoreUnavailable(detail) => {
                tracing::error!(%detail, "backend unavailable");
                Self::new(
                    S::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "database or keystore unavailable",
                )
            }
            VaultError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Self::new(S::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}

/// Runs a blocking vault call on the blocking pool and flattens its errors.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, VaultError> + Send + 'static,
    T: Send + 'static,
{
    match actix_web::web::block(f).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => Err(VaultError::Internal("blocking task failed".into()).into()),
    }
}
