//! Helpers for the signing tests (tests/signing.rs, tests/review8_attacks.rs): a policy with
//! two signers, and the HTTP calls each makes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use zkvault::vault::now_ms;

use super::app::{TestApp, POLICY};
use super::db::TestDb;

/// The test policy with two signers: `idsign` (rotation 90 days, published 7 days ahead,
/// verify window 30 days, JWTs up to a day) and `other`.
pub fn policy() -> String {
    format!(
        r#"{POLICY}
[signers.idsign]
alg = "ES256"
rotation_days = 90
publish_ahead_days = 7
verify_window_days = 30
max_token_ttl_secs = 86400
subject = "CN=zkvault test signer, O=Tests, C=IN"

[signers.other]
alg = "ES256"
rotation_days = 30
publish_ahead_days = 1
verify_window_days = 7
max_token_ttl_secs = 3600
subject = "CN=other"
"#
    )
}

pub const DAY_MS: i64 = 24 * 60 * 60 * 1000;

pub async fn start(db: TestDb) -> TestApp {
    TestApp::start_with(db, 1024 * 1024, &policy()).await
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub async fn jwks(app: &TestApp) -> Value {
    app.client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

pub async fn sign_with(
    app: &TestApp,
    token: &str,
    signer: &str,
    payload: &[u8],
    typ: Option<&str>,
) -> (String, String) {
    let mut body = json!({"payload": b64(payload)});
    if let Some(typ) = typ {
        body["typ"] = typ.into();
    }
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/v1/signers/{signer}/jws"),
            token,
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    (
        body["jws"].as_str().unwrap().to_owned(),
        body["kid"].as_str().unwrap().to_owned(),
    )
}

pub async fn sign(app: &TestApp, token: &str, signer: &str, payload: &[u8]) -> (String, String) {
    sign_with(app, token, signer, payload, None).await
}

pub async fn verify_as(app: &TestApp, token: &str, signer: &str, jws: &str) -> Value {
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/v1/signers/{signer}/verify"),
            token,
            Some(json!({ "jws": jws })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

pub async fn verify(app: &TestApp, token: &str, jws: &str) -> Value {
    verify_as(app, token, "idsign", jws).await
}

pub async fn scheduler_at(app: &TestApp, days: i64) {
    let vault = app.vault.clone();
    tokio::task::spawn_blocking(move || vault.run_due_lifecycle(now_ms() + days * DAY_MS))
        .await
        .unwrap()
        .unwrap();
}
