//! Signing (DESIGN.md "Signing (v1)") through the HTTP API, on both backends; the keystore
//! cases run on the soft keystore and on SoftHSM2. Tokens are checked with jwcrypto and
//! certificates made with Python's `cryptography` (tests/fixtures/jose_check.py), using only
//! what a relying party has: the published JWKS.

mod support;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use support::app::{backup, execute_sql, query_strings, restore, TestApp};
use support::db::TestDb;
use support::signing::{b64, jwks, kids, policy, scheduler_at, sign, start, verify, DAY_MS};
use zkvault::config::KeystoreConfig;
use zkvault::vault::{now_ms, Role};

/// The service on a fresh SoftHSM2 token instead of the soft keystore; `None` when SoftHSM
/// is missing outside CI.
async fn start_on_token(db: TestDb) -> Option<TestApp> {
    let token = support::softhsm::new_token()?;
    let pin = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    std::fs::write(&pin, support::softhsm::USER_PIN).unwrap();
    let pin = pin.keep().unwrap();
    Some(
        TestApp::start_configured(db, &policy(), |c| {
            c.keystore = KeystoreConfig::Pkcs11 {
                module: token.module.clone(),
                token_label: token.token_label.clone(),
                pin_file: Some(pin),
            }
        })
        .await,
    )
}

/// Runs tests/fixtures/jose_check.py with `request` (see [`support::python::run_json`]).
fn python(request: Value) -> Option<Value> {
    let script = support::python::fixture("jose_check.py");
    support::python::run_json("jose_check.py", &[&script], request.to_string().as_bytes())
}

/// Every stored signer key row, for "nothing changed" comparisons.
fn signer_rows(app: &TestApp) -> Vec<String> {
    query_strings(
        app.db.url(),
        "SELECT signer || ':' || version || ':' || state || ':' || kid || ':' || COALESCE(certificate, '-') AS v FROM signer_keys ORDER BY signer, version",
    )
}

/// A JWS and a JWT verify with jwcrypto using only the JWKS, and each `kid` is the RFC 7638
/// thumbprint jwcrypto computes for the key.
async fn tokens_verify_independently(app: &TestApp) {
    let signer = app.issue(&[Role::Signer], &["idsign"]).await;
    let (jws, kid) = sign(app, &signer, "idsign", b"{\"vc\":\"e-card\"}").await;
    let (status, jwt) = app
        .call(
            Method::POST,
            "/v1/signers/idsign/jwt?ttl_secs=600",
            &signer,
            Some(json!({"sub": "partner-17", "scope": "credential"})),
        )
        .await;
    assert_eq!(status, 200, "{jwt}");
    assert_eq!(jwt["kid"], kid);
    let set = jwks(app).await;
    let Some(checked) = python(json!({
        "op": "verify",
        "jwks": set,
        "tokens": [jws, jwt["jwt"], format!("{jws}x")],
    })) else {
        return;
    };
    let results = checked["results"].as_array().unwrap();
    for r in &results[..2] {
        assert_eq!(r["valid"], true, "{checked}");
        assert_eq!(r["kid"], kid.as_str());
        assert_eq!(
            r["thumbprint"],
            kid.as_str(),
            "kid is the RFC 7638 thumbprint"
        );
    }
    assert_eq!(results[0]["payload"], "{\"vc\":\"e-card\"}");
    let claims: Value = serde_json::from_str(results[1]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(claims["sub"], "partner-17");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );
    assert_eq!(results[2]["valid"], false, "a tampered signature");
}

async fn signed_tokens_verify_with_jwcrypto_from_the_jwks(db: TestDb) {
    let app = start(db).await;
    tokens_verify_independently(&app).await;
    // The JWKS is cacheable and revalidates with its ETag.
    let r = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert!(r.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age="));
    let set: Value = r.json().await.unwrap();
    assert_eq!(
        set["keys"].as_array().unwrap().len(),
        2,
        "one key per signer"
    );
    for key in set["keys"].as_array().unwrap() {
        assert_eq!(
            (&key["kty"], &key["crv"], &key["alg"], &key["use"]),
            (
                &json!("EC"),
                &json!("P-256"),
                &json!("ES256"),
                &json!("sig")
            )
        );
        assert!(key.get("d").is_none(), "never a private member");
    }
    let again = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
}

async fn signed_tokens_verify_on_the_hsm(db: TestDb) {
    let Some(app) = start_on_token(db).await else {
        return;
    };
    tokens_verify_independently(&app).await;
    // The row holds a token reference, never sealed key bytes.
    let rows = query_strings(
        app.db.url(),
        "SELECT CASE WHEN token_id IS NOT NULL AND wrapped IS NULL THEN 'token' ELSE 'sealed' END AS v FROM signer_keys",
    );
    assert!(rows.iter().all(|r| r == "token"), "{rows:?}");
    compromise_and_destroy_on(&app).await;
}

async fn compromise_and_destroy_on(app: &TestApp) {
    let signer = app.issue(&[Role::Signer], &["idsign"]).await;
    let op = &app.tokens.operator;
    let (jws, _) = sign(app, &signer, "idsign", b"before").await;
    let (status, change) = app
        .call(
            Method::POST,
            "/v1/signers/idsign/versions/1/compromise",
            op,
            None,
        )
        .await;
    assert_eq!(status, 200, "{change}");
    assert_eq!(change["state"], "compromised");
    assert_eq!(change["active"], 2, "a new key signs at once");
    assert_eq!(verify(app, &signer, &jws).await["valid"], false);
    let (after, kid) = sign(app, &signer, "idsign", b"after").await;
    assert_eq!(verify(app, &signer, &after).await["valid"], true);
    assert!(kids(&jwks(app).await).contains(&kid));
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/signers/idsign/versions/1/destroy",
            op,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/signers/idsign/versions/2/destroy",
            op,
            None,
        )
        .await;
    assert_eq!(status, 409, "the active key is not destroyed");
}

/// After a rotation, tokens of the old key verify for the verify window and not after; the
/// next key is in the JWKS before it signs.
async fn rotation_keeps_old_tokens_verifiable_for_the_window(db: TestDb) {
    rotation_windows_on(start(db).await).await;
}

async fn rotation_keeps_old_tokens_verifiable_on_the_hsm(db: TestDb) {
    if let Some(app) = start_on_token(db).await {
        rotation_windows_on(app).await;
    }
}

async fn rotation_windows_on(app: TestApp) {
    let signer = app.issue(&[Role::Signer], &["idsign"]).await;
    let op = &app.tokens.operator;
    let (old, kid1) = sign(&app, &signer, "idsign", b"old").await;
    let (status, change) = app
        .call(Method::POST, "/v1/signers/idsign/rotate", op, None)
        .await;
    assert_eq!(status, 200, "{change}");
    assert_eq!(
        (&change["version"], &change["state"], &change["active"]),
        (&json!(2), &json!("pending"), &json!(1))
    );
    let published = kids(&jwks(&app).await);
    assert_eq!(
        published.len(),
        3,
        "v1, pending v2 and the other signer's key"
    );
    assert_eq!(
        sign(&app, &signer, "idsign", b"x").await.1,
        kid1,
        "v1 signs until v2 is due"
    );
    // Due after publish_ahead_days: v2 signs, v1 verifies only.
    scheduler_at(&app, 8).await;
    let (new, kid2) = sign(&app, &signer, "idsign", b"new").await;
    assert_ne!(kid1, kid2);
    assert!(
        published.contains(&kid2),
        "v2 was published before it signed"
    );
    let v = verify(&app, &signer, &old).await;
    assert_eq!(
        (&v["valid"], &v["state"]),
        (&json!(true), &json!("verify_only"))
    );
    assert_eq!(verify(&app, &signer, &new).await["valid"], true);
    // Past the verify window v1 is retired: out of the JWKS, its tokens invalid.
    scheduler_at(&app, 31).await;
    let v = verify(&app, &signer, &old).await;
    assert_eq!(
        (&v["valid"], &v["state"]),
        (&json!(false), &json!("retired"))
    );
    assert!(!kids(&jwks(&app).await).contains(&kid1));
    assert_eq!(verify(&app, &signer, &new).await["valid"], true);
    // Each transition is in the audit trail.
    let ops = query_strings(
        app.db.url(),
        "SELECT operation || ' ' || target AS v FROM audit WHERE operation LIKE 'signer.%' ORDER BY seq",
    );
    for expected in [
        "signer.create signer idsign v2 pending",
        "signer.promote signer idsign v2 active, v1 verify_only",
        "signer.retire signer idsign v1 retired",
    ] {
        assert!(ops.iter().any(|o| o == expected), "{expected} in {ops:?}");
    }
    // The overview counts signatures per version (flushed by the reload).
    app.vault.signers().refresh().unwrap();
    let (_, overview) = app.call(Method::GET, "/v1/signers", op, None).await;
    let idsign = &overview["signers"][0];
    assert_eq!(idsign["name"], "idsign");
    assert_eq!(idsign["versions"][0]["signatures"], 2);
    assert_eq!(idsign["versions"][1]["signatures"], 1);
}

/// A compromise made on one instance removes the key from another instance's JWKS and
/// verification within a second.
async fn compromise_reaches_a_second_instance_within_a_second(db: TestDb) {
    compromise_reaches_a_peer_on(start(db).await).await;
}

async fn compromise_reaches_a_second_instance_on_the_hsm(db: TestDb) {
    if let Some(app) = start_on_token(db).await {
        compromise_reaches_a_peer_on(app).await;
    }
}

async fn compromise_reaches_a_peer_on(app: TestApp) {
    let peer = app.start_peer().await;
    let signer = app
        .issue(&[Role::Signer, Role::Verifier], &["idsign"])
        .await;
    let (jws, kid) = sign(&app, &signer, "idsign", b"t").await;
    let peer_verifies = || async {
        let body: Value = app
            .client
            .post(peer.url("/v1/signers/idsign/verify"))
            .bearer_auth(&signer)
            .json(&json!({ "jws": jws }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["valid"] == true
    };
    let peer_publishes = || async {
        let set: Value = app
            .client
            .get(peer.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        kids(&set).contains(&kid)
    };
    assert!(peer_verifies().await && peer_publishes().await);
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/signers/idsign/versions/1/compromise",
            &app.tokens.operator,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let start = Instant::now();
    while peer_verifies().await || peer_publishes().await {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "the peer still trusts a compromised key after a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peer.handle.stop(false).await;
}

/// Altered tokens, unknown kids, other algorithms and garbage are `valid: false`.
async fn tampered_tokens_and_unknown_kids_are_invalid(db: TestDb) {
    let app = start(db).await;
    let verifier = app.issue(&[Role::Verifier], &["idsign"]).await;
    let signer = app.issue(&[Role::Signer], &["idsign", "other"]).await;
    let (jws, _) = sign(&app, &signer, "idsign", b"{\"n\":1}").await;
    let (foreign, _) = sign(&app, &signer, "other", b"{\"n\":1}").await;
    let parts: Vec<&str> = jws.split('.').collect();
    let header = |h: Value| b64(h.to_string().as_bytes());
    let cases = [
        format!("{}.{}.{}", parts[0], b64(b"{\"n\":2}"), parts[2]),
        format!("{}.{}.{}", parts[0], parts[1], b64(&[0u8; 64])),
        format!(
            "{}.{}.{}",
            header(json!({"alg": "ES256", "kid": "not-a-key"})),
            parts[1],
            parts[2]
        ),
        format!(
            "{}.{}.",
            header(json!({"alg": "none", "kid": jws_kid(&jws)})),
            parts[1]
        ),
        format!(
            "{}.{}.{}",
            header(json!({"alg": "HS256", "kid": jws_kid(&jws)})),
            parts[1],
            parts[2]
        ),
        foreign, // another signer's key: not this signer's
        "not.a.jws".into(),
        String::new(),
    ];
    for (i, case) in cases.iter().enumerate() {
        assert_eq!(
            verify(&app, &verifier, case).await["valid"],
            false,
            "case {i}"
        );
    }
    assert_eq!(verify(&app, &verifier, &jws).await["valid"], true);
    assert_eq!(verify(&app, &verifier, &cases[2]).await["state"], "unknown");
    // An expired JWT is invalid too (exp is checked when present).
    let expired = sign(&app, &signer, "idsign", b"{\"exp\":1000}").await.0;
    assert_eq!(verify(&app, &verifier, &expired).await["valid"], false);
}

fn jws_kid(jws: &str) -> String {
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jws.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

/// Roles and signer scopes: 401 without a credential, 403 for a wrong role or a signer the
/// credential does not list, 404 for a signer the policy lacks.
async fn roles_and_signer_scoping_are_enforced(db: TestDb) {
    let app = start(db).await;
    let body = json!({"payload": b64(b"x")});
    let only_other = app.issue(&[Role::Signer], &["other"]).await;
    let verifier = app.issue(&[Role::Verifier], &["idsign"]).await;
    let ns_scoped = app.issue(&[Role::Signer], &["rp"]).await;
    let everything = app.issue(&[Role::Signer], &[]).await;
    let cases: [(&str, &str, u16); 8] = [
        ("/v1/signers/idsign/jws", &only_other, 403),
        ("/v1/signers/other/jws", &only_other, 200),
        ("/v1/signers/idsign/jws", &verifier, 403),
        ("/v1/signers/idsign/jws", &ns_scoped, 403),
        ("/v1/signers/idsign/jws", &app.tokens.writer, 403),
        ("/v1/signers/idsign/jws", &app.tokens.operator, 403),
        ("/v1/signers/idsign/jws", &everything, 200),
        ("/v1/signers/nosuch/jws", &everything, 404),
    ];
    for (path, token, expected) in cases {
        let (status, answer) = app
            .call(Method::POST, path, token, Some(body.clone()))
            .await;
        assert_eq!(status.as_u16(), expected, "{path}: {answer}");
    }
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/signers/BAD!/jws",
            &everything,
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, 400);
    let r = app
        .client
        .post(app.url("/v1/signers/idsign/jws"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Operator endpoints need the operator role.
    for (method, path) in [
        (Method::GET, "/v1/signers"),
        (Method::POST, "/v1/signers/idsign/rotate"),
        (Method::POST, "/v1/signers/idsign/versions/1/compromise"),
        (Method::POST, "/v1/signers/idsign/versions/1/csr"),
    ] {
        let (status, _) = app.call(method, path, &everything, None).await;
        assert_eq!(status, 403, "{path}");
    }
    // Refusals are audited (counted per actor, route and outcome).
    app.vault.flush_refusals();
    let refused = query_strings(
        app.db.url(),
        "SELECT outcome AS v FROM audit WHERE operation = 'access.signer'",
    );
    assert!(!refused.is_empty());
}

/// Bad input gets a clear 4xx and changes no key, no certificate and no JWKS.
async fn bad_input_is_refused_and_changes_nothing(db: TestDb) {
    let app = start(db).await;
    let signer = app.issue(&[Role::Signer], &["idsign"]).await;
    let op = app.tokens.operator.clone();
    let before = (signer_rows(&app), jwks(&app).await);
    let big = b64(&vec![b'a'; 16 * 1024 + 1]);
    let bad: Vec<(Method, String, &str, Option<Value>, u16)> = vec![
        (
            Method::POST,
            "/v1/signers/idsign/jws".into(),
            &signer,
            Some(json!({"payload": "a+b/"})),
            400,
        ),
        (
            Method::POST,
            "/v1/signers/idsign/jws".into(),
            &signer,
            Some(json!({"payload": "YQ=="})),
            400,
        ),
        (
            Method::POST,
            "/v1/signers/idsign/jws".into(),
            &signer,
            Some(json!({"payload": big})),
            400,
        ),
        (
            Method::POST,
            "/v1/signers/idsign/jws".into(),
            &signer,
            Some(json!({"payload": "YQ", "typ": "a\nb"})),
            400,
        ),
        (
            Method::POST,
            "/v1/signers/idsign/jws".into(),
            &signer,
            Some(json!({"payload": "YQ", "extra": 1})),
            400,
        ),
        (
            Method::POST,
            "/v1/signers/idsign/jwt?ttl_secs=86401".into(),
            &signer,
            Some(json!({"sub": "a"})),
            400,
        ),
        (
            Method::POST,
            "/v1/signers/idsign/jwt?ttl_secs=0".into(),
            &signer,
            Some(json!({"sub": "a"})),
            400,
        ),
        (
            Method::POST,
            "/v1/signers/idsign/jwt".into(),
            &signer,
            Some(json!({"exp": 1})),
            400,
        ),
        (
            Method::POST,
            "/v1/signers/idsign/jwt".into(),
            &signer,
            Some(json!(["not", "an", "object"])),
            400,
        ),
        (
            Method::POST,
            "/v1/signers/idsign/versions/9/compromise".into(),
            &op,
            None,
            404,
        ),
        (
            Method::POST,
            "/v1/signers/idsign/versions/1/destroy".into(),
            &op,
            None,
            409,
        ),
        (
            Method::POST,
            "/v1/signers/idsign/versions/x/destroy".into(),
            &op,
            None,
            400,
        ),
        (
            Method::POST,
            "/v1/signers/idsign/rotate?now=maybe".into(),
            &op,
            None,
            400,
        ),
    ];
    for (method, path, token, body, expected) in bad {
        let (status, answer) = app.call(method, &path, token, body).await;
        assert_eq!(status.as_u16(), expected, "{path}: {answer}");
        assert!(answer["error"].is_string(), "{path}: {answer}");
        assert!(!answer.to_string().contains("aaaa"), "never quotes input");
    }
    // A certificate for another key, and text that is no certificate.
    let (_, csr) = (
        (),
        app.req(Method::POST, "/v1/signers/idsign/versions/1/csr", &op, None)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    if let Some(issued) = python(json!({"op": "issue", "csr": csr})) {
        for pem in [
            issued["other"].as_str().unwrap(),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "hello",
        ] {
            let r = app
                .req(
                    Method::PUT,
                    "/v1/signers/idsign/versions/1/certificate",
                    &op,
                    None,
                )
                .body(pem.to_owned())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400);
        }
    }
    assert_eq!((signer_rows(&app), jwks(&app).await), before);
}

/// A CSR signed by the key verifies with `cryptography` and carries the policy's subject; a
/// chain issued for it is attached and published as `x5c`.
async fn csr_and_certificate_round_trip(db: TestDb) {
    let app = start(db).await;
    let op = &app.tokens.operator;
    let r = app
        .req(Method::POST, "/v1/signers/idsign/versions/1/csr", op, None)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/pkcs10");
    let csr = r.text().await.unwrap();
    assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    let Some(issued) = python(json!({"op": "issue", "csr": csr})) else {
        return;
    };
    assert_eq!(issued["csr_valid"], true);
    assert_eq!(issued["subject"], "C=IN,O=Tests,CN=zkvault test signer");
    let r = app
        .req(
            Method::PUT,
            "/v1/signers/idsign/versions/1/certificate",
            op,
            None,
        )
        .body(issued["chain"].as_str().unwrap().to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let change: Value = r.json().await.unwrap();
    assert!(change["not_after"].is_string(), "{change}");
    let set = jwks(&app).await;
    let key = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k.get("x5c").is_some())
        .expect("x5c published");
    assert_eq!(key["x5c"].as_array().unwrap().len(), 2, "leaf and CA");
}

/// A database restored from before a compromise, or a row edited to revive the key, does not
/// bring it back: the keystore remembers the compromise, and the row's MAC fails.
async fn a_restored_or_forged_row_cannot_revive_a_compromised_key(db: TestDb) {
    let app = start(db).await;
    let signer = app.issue(&[Role::Signer], &["idsign"]).await;
    let (jws, kid) = sign(&app, &signer, "idsign", b"t").await;
    backup(app.db.url(), "before", &["signer_keys"]);
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/signers/idsign/versions/1/compromise",
            &app.tokens.operator,
            None,
        )
        .await;
    assert_eq!(status, 200);
    restore(app.db.url(), "before", &["signer_keys"]);
    app.vault.signers().refresh().unwrap();
    assert!(!kids(&jwks(&app).await).contains(&kid), "restored row");
    assert_eq!(verify(&app, &signer, &jws).await["valid"], false);
    // A restart over the restored database serves it as compromised too, and the next
    // scheduler pass writes the compromise back and gives the signer a new key.
    let reopened = app.reopen();
    assert!(!reopened.signers().jwks().body.contains(&kid));
    scheduler_at(&app, 0).await;
    // (The reopened vault, another instance, made the new key: this one sees it at its next
    // reload, within 250 ms.)
    app.vault.signers().refresh().unwrap();
    let (after, new_kid) = sign(&app, &signer, "idsign", b"t").await;
    assert_ne!(new_kid, kid);
    assert_eq!(verify(&app, &signer, &after).await["valid"], true);
    let states = query_strings(
        app.db.url(),
        "SELECT state AS v FROM signer_keys WHERE signer = 'idsign' AND version = 1",
    );
    assert_eq!(states, ["compromised"]);

    // A row edited to publish another key fails its MAC and is left out.
    execute_sql(
        app.db.url(),
        "UPDATE signer_keys SET public_key = (SELECT public_key FROM signer_keys WHERE signer = 'idsign' AND version = 1) WHERE signer = 'other'",
    );
    app.vault.signers().refresh().unwrap();
    let set = jwks(&app).await;
    assert_eq!(kids(&set), [new_kid], "an edited row is left out");
}

/// A KEK rotation rewraps sealed signing keys: after it, and after the old KEK is destroyed,
/// the same key still signs and its earlier tokens still verify.
async fn kek_rotation_and_destruction_keep_sealed_keys_signing(db: TestDb) {
    let app = start(db).await;
    let signer = app.issue(&[Role::Signer], &["idsign"]).await;
    let (before, kid) = sign(&app, &signer, "idsign", b"before").await;
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/keys/kek/rotate",
            &app.tokens.operator,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let kek_of = |app: &TestApp| {
        query_strings(
            app.db.url(),
            "SELECT CAST(kek_version AS TEXT) AS v FROM signer_keys ORDER BY signer, version",
        )
    };
    assert_eq!(kek_of(&app), ["2", "2"], "both signers' keys rewrapped");
    let vault = app.vault.clone();
    tokio::task::spawn_blocking(move || {
        vault.destroy_kek(&support::app::grant(&vault, Role::Operator, None), 1)
    })
    .await
    .unwrap()
    .unwrap();
    let (after, kid_after) = sign(&app, &signer, "idsign", b"after").await;
    assert_eq!(kid_after, kid, "the same key signs");
    assert_eq!(verify(&app, &signer, &before).await["valid"], true);
    assert_eq!(verify(&app, &signer, &after).await["valid"], true);
    // A restart unwraps them under the new KEK too.
    let reopened = app.reopen();
    assert!(reopened.signers().jwks().body.contains(&kid));
}

/// `policy plan` dates the next publication, promotion and retirement.
async fn the_plan_dates_signer_events(db: TestDb) {
    let app = start(db).await;
    let vault = app.vault.clone();
    let plan = tokio::task::spawn_blocking(move || {
        vault.plan(now_ms(), Duration::from_secs(200 * 86_400))
    })
    .await
    .unwrap()
    .unwrap();
    let text: Vec<&str> = plan.iter().map(|e| e.what.as_str()).collect();
    for expected in [
        "signer idsign: publish the next key (pending)",
        "signer idsign: promote the next key; demote v1",
        "signer idsign: retire v1 (verify window ends)",
    ] {
        assert!(text.contains(&expected), "{expected} in {text:?}");
    }
    let at = |what: &str| plan.iter().find(|e| e.what == what).unwrap().at_ms;
    let promote = at("signer idsign: promote the next key; demote v1");
    assert_eq!(
        promote - at("signer idsign: publish the next key (pending)"),
        7 * DAY_MS
    );
    assert_eq!(
        at("signer idsign: retire v1 (verify window ends)") - promote,
        30 * DAY_MS
    );
}

on_both_backends!(
    signed_tokens_verify_with_jwcrypto_from_the_jwks,
    signed_tokens_verify_on_the_hsm,
    rotation_keeps_old_tokens_verifiable_for_the_window,
    rotation_keeps_old_tokens_verifiable_on_the_hsm,
    compromise_reaches_a_second_instance_within_a_second,
    compromise_reaches_a_second_instance_on_the_hsm,
    tampered_tokens_and_unknown_kids_are_invalid,
    roles_and_signer_scoping_are_enforced,
    bad_input_is_refused_and_changes_nothing,
    csr_and_certificate_round_trip,
    a_restored_or_forged_row_cannot_revive_a_compromised_key,
    the_plan_dates_signer_events,
    kek_rotation_and_destruction_keep_sealed_keys_signing,
);
