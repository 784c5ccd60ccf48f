//! Secrets hygiene: a known resident ID and a known body go through every data endpoint with
//! trace-level logging captured, through signing (a JWT naming the resident) and through
//! sharing with a partner (the share, its receipt, both exposure reports); neither
//! they nor the unwrapped keys (index key, derivation master, resident key, integrity key, a
//! signer's sealed scalar) may appear in a log line, a response, metrics or the database
//! files.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use reqwest::Method;
use support::app::{TestApp, POLICY};
use support::db::TestDb;
use zkvault::vault::Role;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const ID: &str = "HYGIENEid7731";
const BODY: &str = "BODYmarker-5521";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_ids_and_bodies_never_reach_logs_errors_or_metrics() {
    let logs = Captured::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .init();

    let policy = format!(
        "{POLICY}\n[signers.cred]\nalg = \"ES256\"\nrotation_days = 90\npublish_ahead_days = 7\nverify_window_days = 30\nmax_token_ttl_secs = 3600\nsubject = \"CN=cred\"\n\n[trust.AUTH]\n"
    );
    let app = TestApp::start_with(TestDb::sqlite(), 1024 * 1024, &policy).await;
    let mut bodies = String::new();
    let ns = "/v1/ns/rp";
    let calls: Vec<(Method, String, &str)> = vec![
        (Method::PUT, format!("{ns}/records/demographics"), BODY),
        (Method::PUT, format!("{ns}/records/demographics"), BODY),
        (Method::GET, format!("{ns}/records/demographics"), ""),
        (Method::GET, format!("{ns}/records/absent"), ""),
        (Method::GET, format!("{ns}/records"), ""),
        (Method::PUT, format!("{ns}/records/BadName"), BODY),
        (Method::PUT, "/v1/ns/uin/records/x".to_string(), BODY),
        (Method::DELETE, format!("{ns}/records/demographics"), ""),
        (Method::DELETE, format!("{ns}/resident"), ""),
    ];
    for (method, path, body) in calls {
        for token in [
            &app.tokens.writer,
            "zkv_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let r = app
                .req(method.clone(), &path, token, Some(ID))
                .body(body.to_owned())
                .send()
                .await
                .unwrap();
            bodies.push_str(&format!("{:?}", r.headers()));
            let ok_read =
                method == Method::GET && r.status().is_success() && !path.ends_with("/records");
            let text = r.text().await.unwrap();
            if ok_read {
                assert_eq!(
                    text, BODY,
                    "the one place the body may appear: its own read"
                );
            } else {
                bodies.push_str(&text);
            }
        }
    }
    // Signing: a credential JWT and a JWS commonly name the resident; the audit entry, logs
    // and metrics of a signature never do (the answer carries the token itself, encoded).
    let signer = app.issue(&[Role::Signer], &["cred"]).await;
    let claims = serde_json::json!({ "uin": ID, "name": BODY });
    let payload = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        claims.to_string(),
    );
    for (path, body) in [
        ("/v1/signers/cred/jwt", claims.clone()),
        (
            "/v1/signers/cred/jws",
            serde_json::json!({ "payload": payload }),
        ),
        ("/v1/signers/cred/jws", serde_json::json!({ "payload": ID })),
        (
            "/v1/signers/cred/verify",
            serde_json::json!({ "jws": format!("{ID}.{BODY}.x") }),
        ),
    ] {
        let (_, answer) = app.call(Method::POST, path, &signer, Some(body)).await;
        bodies.push_str(&answer.to_string());
    }
    // Sharing: the share, its receipt and audit entry, and both exposure reports name the
    // resident only by its keyed tag (the JWE carries the body, encrypted).
    if let Some(pki) = support::trust::scenario() {
        let admin = app.issue(&[Role::TrustAdmin], &[]).await;
        let sharer = app.issue(&[Role::Sharer], &["rp"]).await;
        let auditor = app.issue(&[Role::Auditor], &[]).await;
        let r = app
            .req(Method::PUT, "/v1/trust/AUTH/anchors", &admin, None)
            .body(pki["anchors"].as_str().unwrap().to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let chain = &pki["partners"]["ec"]["chain"];
        let registration = serde_json::json!({ "id": "ida-1", "certificate_chain": chain });
        let (status, answer) = app
            .call(
                Method::POST,
                "/v1/trust/AUTH/partners",
                &admin,
                Some(registration),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
        assert!(app
            .put("rp", "shared", ID, BODY.as_bytes())
            .await
            .status()
            .is_success());
        for partner in ["AUTH/ida-1", "AUTH/absent"] {
            let r = app
                .req(
                    Method::POST,
                    &format!("{ns}/records/shared/share"),
                    &sharer,
                    Some(ID),
                )
                .json(&serde_json::json!({ "partner": partner }))
                .send()
                .await
                .unwrap();
            bodies.push_str(&format!("{:?}", r.headers()));
            let text = r.text().await.unwrap();
            if partner == "AUTH/ida-1" {
                assert_eq!(text.split('.').count(), 5, "a compact JWE");
            } else {
                bodies.push_str(&text);
            }
        }
        let r = app
            .req(
                Method::GET,
                &format!("{ns}/exposure"),
                &app.tokens.reader,
                Some(ID),
            )
            .send()
            .await
            .unwrap();
        let exposure = r.text().await.unwrap();
        assert!(exposure.contains("ida-1"), "{exposure}");
        bodies.push_str(&exposure);
        let (_, answer) = app
            .call(
                Method::GET,
                "/v1/trust/AUTH/partners/ida-1/exposure",
                &auditor,
                None,
            )
            .await;
        assert_eq!(answer["residents"], 1, "{answer}");
        bodies.push_str(&answer.to_string());
    }
    // An ID that fails validation must not be echoed either.
    let r = app
        .req(
            Method::GET,
            &format!("{ns}/records/x"),
            &app.tokens.writer,
            Some("bad id HYGIENE"),
        )
        .send()
        .await
        .unwrap();
    bodies.push_str(&r.text().await.unwrap());
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Key material the service holds unwrapped: index key, derivation master, a resident key.
    let vault = app.vault.clone();
    let secrets: Vec<Vec<u8>> = tokio::task::spawn_blocking(move || {
        let ik = vault.keyring().index_key("rp").unwrap();
        let dm = vault.keyring().master("rp", 1).unwrap();
        let rk = dm.resident_key("rp", &zkvault_core::ResidentId::parse(ID).unwrap());
        vec![
            ik.secret().expose().to_vec(),
            dm.secret().expose().to_vec(),
            rk.secret().expose().to_vec(),
        ]
    })
    .await
    .unwrap();
    // The audit's own tools: a checkpoint, the verification report, and the integrity key.
    let vault = app.vault.clone();
    let (report, integrity_key) = tokio::task::spawn_blocking(move || {
        vault.checkpoint_audit().unwrap();
        let report = serde_json::to_string(&vault.verify_audit().unwrap()).unwrap();
        let row = vault.store().integrity_key().unwrap().unwrap();
        let ctx = zkvault_core::WrapContext::new("", zkvault_core::KeyKind::IntegrityKey, 1);
        let key = vault
            .keyring()
            .keystore()
            .unwrap(row.kek_version as u32, &ctx, &row.wrapped)
            .unwrap();
        (report, key.expose().to_vec())
    })
    .await
    .unwrap();
    bodies.push_str(&report);
    // The signer's private scalar, sealed under the KEK in the soft keystore.
    let vault = app.vault.clone();
    let scalar = tokio::task::spawn_blocking(move || {
        let row = vault.store().signer_keys().unwrap().remove(0).unwrap();
        let ctx = zkvault_core::WrapContext::new("cred", zkvault_core::KeyKind::SigningKey, 1);
        vault
            .keyring()
            .keystore()
            .unwrap(
                row.kek_version.unwrap() as u32,
                &ctx,
                row.wrapped.as_deref().unwrap(),
            )
            .unwrap()
            .expose()
            .to_vec()
    })
    .await
    .unwrap();
    let secrets = [secrets, vec![integrity_key, scalar]].concat();
    let db_path = app.db.url().strip_prefix("sqlite://").unwrap().to_owned();
    let mut db_bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        db_bytes.extend(std::fs::read(format!("{db_path}{suffix}")).unwrap_or_default());
    }
    app.stop().await;

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("route=\"/v1/ns/{ns}/records/{name:.+}\""),
        "access log lines were captured:\n{}",
        logs.lines()
            .filter(|l| l.contains("zkvault"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        logs.lines().count() > 20,
        "trace logging produced output: {} lines",
        logs.lines().count()
    );
    for (what, text) in [
        ("logs", &logs),
        ("responses", &bodies),
        ("metrics", &metrics),
    ] {
        assert!(!text.contains(ID), "resident ID leaked into {what}");
        assert!(
            !text.contains("HYGIENE"),
            "invalid resident ID leaked into {what}"
        );
        assert!(!text.contains(BODY), "record body leaked into {what}");
    }
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(db_bytes.len() > 4096, "the database files were read");
    for key in &secrets {
        for (what, hay) in [
            ("logs", logs.as_bytes()),
            ("responses", bodies.as_bytes()),
            ("metrics", metrics.as_bytes()),
            ("database files", &db_bytes[..]),
        ] {
            assert!(!contains(hay, key), "key bytes leaked into {what}");
            assert!(
                !contains(hay, hex::encode(key).as_bytes()),
                "hex key leaked into {what}"
            );
        }
    }
    assert!(
        !contains(&db_bytes, ID.as_bytes()) && !contains(&db_bytes, BODY.as_bytes()),
        "ID or body in the database files"
    );
}
