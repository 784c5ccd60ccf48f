//! Per-request metrics and access logs, labelled by route *pattern* (never the concrete path),
//! method (one of a fixed set) and status, so no resident data, record name or invented method
//! can become a label.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::AppState;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    /// Seconds to the nearest partner certificate expiry, per trust domain of the policy.
    trust_expiry: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("zkvault".into()), None).expect("valid registry prefix");
        let labels = ["route", "method", "status"];
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered"),
            &labels,
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer an HTTP request",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &labels,
        )
        .expect("valid metric");
        let trust_expiry = IntGaugeVec::new(
            Opts::new(
                "trust_expiry_seconds",
                "Seconds until the nearest expiry of a partner's current certificate, per trust domain (negative once expired)",
            ),
            &["domain"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(trust_expiry.clone()))
            .expect("registered once");
        registry
            .register(Box::new(requests.clone()))
            .expect("registered once");
        registry
            .register(Box::new(latency.clone()))
            .expect("registered once");
        Metrics {
            registry,
            requests,
            latency,
            trust_expiry,
        }
    }

    fn observe(&self, route: &str, method: &str, status: &str, seconds: f64) {
        let labels = [route, method, status];
        self.requests.with_label_values(&labels).inc();
        self.latency.with_label_values(&labels).observe(seconds);
    }

    /// Sets the expiry gauge: one series per domain (a policy name, never a partner id).
    pub fn set_trust_expiry(&self, domains: &[(String, i64)]) {
        self.trust_expiry.reset();
        for (domain, secs) in domains {
            self.trust_expiry.with_label_values(&[domain]).set(*secs);
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

/// The method as a label: the method is the caller's free choice (`BREW`, `X1`...), so any
/// other than ours counts as `other` and the label set stays fixed.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware: times the request, counts it, logs one line, and tags it with a `Request-Id`.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let request_id = hex::encode(zkvault_core::random::array::<8>().unwrap_or_default());
    req.extensions_mut()
        .insert(super::auth::RequestId(request_id.clone()));
    let mut res = next.call(req).await?;
    let status = res.status();
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(state) = state {
        state
            .metrics
            .observe(&route, method, status.as_str(), elapsed);
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
