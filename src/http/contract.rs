//! Completes the OpenAPI document utoipa derives from the handlers with what every route has in
//! common, so that each operation lists every status it can answer, with the error body, and
//! every parameter with its pattern. The rules live here once instead of on twenty handlers:
//!
//! - a route with a credential (all but the operations endpoints) can answer 401, 403 and 503
//!   (database, keystore, or the bounded Argon2 queue: `Retry-After`);
//! - a route with `{ns}` answers 404 for a namespace the policy lacks;
//! - a route that reads a body answers 408 (the body stalls) and 413;
//! - every route can answer 400 (a malformed header, e.g. two `Content-Type`s) and 500
//!   `internal` (the detail goes to the log only);
//! - a key change can answer 409: another one held the key lock for 15 s.
//!
//! The document describes this deployment: a namespace is one of its policy's, so a client
//! (or a fuzzer) generated from it sends names the service knows.

use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use super::ops::ApiDoc;
use crate::policy::{Policy, DOMAIN_PATTERN, NAMESPACE_PATTERN};
use crate::vault::{PARTNER_ID_PATTERN, RECORD_NAME_PATTERN, REVOCATION_REASONS};
use zkvault_core::{ChecksumScheme, RESIDENT_ID_PATTERN};

/// The namespaces of the deployment the document describes.
struct Deployment<'a> {
    namespaces: Vec<&'a str>,
    signers: Vec<&'a str>,
    domains: Vec<&'a str>,
    /// The longest `ttl_secs` any signer allows.
    max_token_ttl: u64,
    /// Those whose resident IDs end in a Verhoeff check digit.
    verhoeff: Vec<&'a str>,
}

/// The document `GET /openapi.json` serves for a deployment under `policy`.
pub fn document(policy: &Policy) -> Value {
    let deployment = Deployment {
        namespaces: policy.namespaces.keys().map(String::as_str).collect(),
        signers: policy.signers.keys().map(String::as_str).collect(),
        domains: policy.trust.keys().map(String::as_str).collect(),
        max_token_ttl: policy
            .signers
            .values()
            .map(|s| s.max_token_ttl.as_secs())
            .max()
            .unwrap_or(1),
        verhoeff: policy
            .namespaces
            .values()
            .filter(|ns| ns.id_checksum == ChecksumScheme::Verhoeff)
            .map(|ns| ns.name.as_str())
            .collect(),
    };
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serialises");
    complete(&mut doc, &deployment);
    doc
}

/// Routes anyone may call: no credential, so no 401/403.
const OPEN: [&str; 5] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/.well-known/jwks.json",
];

fn complete(doc: &mut Value, deployment: &Deployment) {
    doc["components"]["securitySchemes"] = json!({"bearer": {"type": "http", "scheme": "bearer"}});
    let schemas = &mut doc["components"]["schemas"];
    // A credential's scope lists namespaces and signers.
    let scope: Vec<&str> = deployment
        .namespaces
        .iter()
        .chain(&deployment.signers)
        .copied()
        .collect();
    schemas["NewCredential"]["properties"]["namespaces"]["items"] =
        json!({"type": "string", "enum": scope});
    // IDs in a JSON body may carry any ASCII white space around them; it is trimmed too.
    schemas["ReencryptRequest"]["properties"]["resident_ids"]["items"] = json!({
        "type": "string",
        "pattern": padded(RESIDENT_ID_PATTERN, "[\\t\\n\\f\\r ]"),
    });
    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        let open = OPEN.contains(&path.as_str());
        for (_, op) in item.as_object_mut().expect("path item").iter_mut() {
            let has_body = op.get("requestBody").is_some();
            let params = op["parameters"]
                .as_array_mut()
                .map(std::mem::take)
                .unwrap_or_default();
            op["parameters"] = Value::Array(
                params
                    .into_iter()
                    .map(|p| parameter(p, deployment))
                    .collect(),
            );
            if op["parameters"].as_array().is_some_and(Vec::is_empty) {
                op.as_object_mut().expect("operation").remove("parameters");
            }
            if let Some(body) = op.get_mut("requestBody") {
                if bytes(&mut body["content"], "application/octet-stream") {
                    // Raw bytes may be none: an empty record is a record.
                    body["required"] = json!(false);
                    body["description"] = json!(
                        "the record's bytes, stored as sent; any Content-Type of 1-255 visible \
                         ASCII characters is kept and served back (default application/octet-stream)"
                    );
                }
            }
            let responses = op["responses"].as_object_mut().expect("responses");
            let mut add = |status: u16| {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| json!({}));
            };
            [400, 500].into_iter().for_each(&mut add);
            if !open {
                [401, 403, 503].into_iter().for_each(&mut add);
            }
            if ["{ns}", "{signer}", "{domain}"]
                .iter()
                .any(|p| path.contains(p))
            {
                add(404);
            }
            if has_body {
                [408, 413].into_iter().for_each(&mut add);
            }
            let signer_change = path.contains("/versions/") || path.ends_with("/rotate");
            if path.starts_with("/v1/trust/") || path.ends_with("/share") {
                add(409);
            }
            if path.starts_with("/v1/keys/") || path.contains("/masters/") || signer_change {
                add(409);
            }
            for (status, response) in responses.iter_mut() {
                if let Some(content) = response.get_mut("content") {
                    bytes(content, "*/*");
                }
                describe(status, response.as_object_mut().expect("response"));
            }
            if !open {
                op["security"] = json!([{"bearer": []}]);
            }
        }
    }
}

/// Raw bytes (a record's body) under `media_type` instead of utoipa's array of integers for
/// `Vec<u8>`: a response is served with the media type it was stored with (`*/*`); a request
/// is documented as `application/octet-stream`, so a generated client does not label
/// arbitrary bytes as JSON and then try to parse them back. True if it was bytes.
fn bytes(content: &mut Value, media_type: &str) -> bool {
    let Some(map) = content.as_object_mut() else {
        return false;
    };
    let bytes = map.remove("application/octet-stream").is_some();
    if bytes {
        map.insert(
            media_type.into(),
            json!({"schema": {"type": "string", "format": "binary"}}),
        );
    }
    bytes
}

/// A path, header or query parameter with the pattern the service enforces.
fn parameter(mut p: Value, deployment: &Deployment) -> Value {
    let resident_id = padded(RESIDENT_ID_PATTERN, "[ \\t]");
    let pattern = match (p["in"].as_str(), p["name"].as_str()) {
        (Some("path"), Some("ns" | "signer")) => Some(NAMESPACE_PATTERN),
        (Some("path"), Some("name")) => Some(RECORD_NAME_PATTERN),
        (Some("path"), Some("id")) => Some("^[0-9a-fA-F]+$"),
        (Some("path"), Some("domain")) => Some(DOMAIN_PATTERN),
        (Some("path"), Some("partner")) => Some(PARTNER_ID_PATTERN),
        (Some("query"), Some("within")) => Some("^[0-9]{1,9}[ydhms]$"),
        // The service trims white space around an ID before it checks it.
        (Some("header"), Some("Resident-Id")) => Some(resident_id.as_str()),
        // An empty (or blank) precondition is no condition.
        (Some("header"), Some("If-Match")) => {
            Some("^([ \\t]*|\\*|[ \\t]*\"[0-9A-Za-z]+\"[ \\t]*)$")
        }
        (Some("header"), Some("If-None-Match")) => Some("^([ \\t]*|\\*)$"),
        _ => None,
    };
    if let Some(pattern) = pattern {
        p["schema"] = json!({"type": "string", "pattern": pattern});
    }
    match (p["in"].as_str(), p["name"].as_str()) {
        (Some("path"), Some("ns")) if !deployment.namespaces.is_empty() => {
            p["schema"]["enum"] = json!(deployment.namespaces)
        }
        // A policy may declare no signer: then the name is only its pattern (and answers 404).
        (Some("path"), Some("signer")) if !deployment.signers.is_empty() => {
            p["schema"]["enum"] = json!(deployment.signers)
        }
        (Some("path"), Some("domain")) if !deployment.domains.is_empty() => {
            p["schema"]["enum"] = json!(deployment.domains)
        }
        (Some("query"), Some("reason")) => {
            p["schema"] = json!({"type": "string", "enum": REVOCATION_REASONS});
        }
        (Some("path"), Some("name")) => {
            p["schema"]["maxLength"] = json!(128);
            p["description"] = json!(
                "A `/` inside a name is sent as it is: percent-encoding (`%2F`) is refused, so a \
                 generated client must not escape it."
            );
        }
        (Some("path"), Some("id")) => {
            (p["schema"]["minLength"], p["schema"]["maxLength"]) = (json!(16), json!(16));
        }
        (Some("path"), Some("v")) => {
            p["schema"] =
                json!({"type": "integer", "format": "int32", "minimum": 1, "maximum": i32::MAX});
        }
        (Some("header"), Some("Resident-Id")) if !deployment.verhoeff.is_empty() => {
            p["description"] = json!(format!(
                "In namespace(s) {} the last character must also be the Verhoeff check digit of \
                 the others, a rule no pattern can state; other IDs there answer 400.",
                deployment.verhoeff.join(", ")
            ));
        }
        (Some("query"), Some("ttl_secs")) => {
            p["schema"] =
                json!({"type": "integer", "minimum": 1, "maximum": deployment.max_token_ttl});
        }
        (Some("query"), Some("since" | "until")) => {
            p["schema"] = json!({"anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "pattern": "^[0-9]{1,15}$", "description": "unix milliseconds"},
            ]});
        }
        _ => {}
    }
    p
}

/// Fills a response's description and, for an error, the error body.
fn describe(status: &str, r: &mut Map<String, Value>) {
    let code: u16 = status.parse().unwrap_or(0);
    let text = match code {
        200 | 201 => "success",
        204 => "done; no body",
        400 => "bad input: malformed ID, name, namespace, header, query or JSON",
        401 => "no credential, or an unknown, revoked or expired one",
        403 => "the credential lacks the role or the namespace",
        404 => "no such record, resident, namespace, credential, signer or signer version",
        408 => "the request body stalled",
        409 => "the key's state does not allow this",
        410 => "shredded: the record's master was destroyed",
        412 => "an If-Match or If-None-Match precondition failed",
        413 => "the body is over the namespace's or the server's limit",
        500 => "internal error, or `integrity`: a stored record failed authentication",
        503 => "the database or keystore is unavailable, or the service is busy (Retry-After)",
        _ => "see the error body",
    };
    let described = r
        .get("description")
        .and_then(Value::as_str)
        .is_some_and(|d| !d.is_empty());
    if !described {
        r.insert("description".into(), text.into());
    }
    if code >= 400 && !r.contains_key("content") {
        r.insert(
            "content".into(),
            json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}),
        );
    }
}

/// `pattern` (anchored by `^…$`) with any run of `space` allowed around the match.
fn padded(pattern: &str, space: &str) -> String {
    let inner = pattern.trim_start_matches('^').trim_end_matches('$');
    format!("^{space}*{inner}{space}*$")
}
