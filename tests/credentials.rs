//! Credential lifecycle over HTTP, on SQLite and PostgreSQL: rotation with an overlap window,
//! expiry taking effect on a token that is already cached, and administration confined to the
//! administrator's own namespaces.

mod support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::app::{execute_sql, TestApp};
use support::db::TestDb;
use zkvault::vault::Role;

on_both_backends!(
    rotation_keeps_the_old_token_for_the_overlap_only,
    an_expired_token_is_refused_within_a_second,
    a_namespace_scoped_admin_cannot_reach_beyond_its_namespaces,
    namespace_scoped_operators_and_auditors_stay_in_their_namespaces,
    a_damaged_credential_row_is_listed_refused_and_revocable,
);

const ID: &str = "4930098371";

async fn status(app: &TestApp, token: &str) -> StatusCode {
    app.req(Method::GET, "/v1/ns/rp/records", token, Some(ID))
        .send()
        .await
        .unwrap()
        .status()
}

/// Polls until `token` is refused; fails if that takes a second or more.
async fn refused_within_a_second(app: &TestApp, token: &str) {
    let started = Instant::now();
    while status(app, token).await == StatusCode::OK {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "token still accepted after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status(app, token).await, StatusCode::UNAUTHORIZED);
}

async fn rotation_keeps_the_old_token_for_the_overlap_only(db: TestDb) {
    let app = TestApp::start(db).await;
    let old_id = app.tokens.reader.split('_').nth(1).unwrap().to_owned();
    assert_eq!(status(&app, &app.tokens.reader).await, StatusCode::OK);

    let v = app.vault.clone();
    let id = old_id.clone();
    let successor = tokio::task::spawn_blocking(move || {
        v.rotate_credential(
            &support::app::grant(&v, Role::Admin, None),
            &id,
            Duration::from_secs(3600),
        )
        .unwrap()
    })
    .await
    .unwrap();
    assert_ne!(successor.id, old_id);
    // Both work during the overlap; the successor has the same roles and namespaces.
    assert_eq!(status(&app, &app.tokens.reader).await, StatusCode::OK);
    assert_eq!(status(&app, successor.token.expose()).await, StatusCode::OK);
    let r = app
        .req(
            Method::PUT,
            "/v1/ns/rp/records/x",
            successor.token.expose(),
            Some(ID),
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "a reader's successor is a reader"
    );
    let r = app
        .req(
            Method::GET,
            "/v1/ns/uin/records",
            successor.token.expose(),
            Some(ID),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "and limited to the same namespaces"
    );

    // Rotating the successor again with no overlap retires it at once (within the second).
    let v = app.vault.clone();
    let id = successor.id.clone();
    let third = tokio::task::spawn_blocking(move || {
        v.rotate_credential(
            &support::app::grant(&v, Role::Admin, None),
            &id,
            Duration::ZERO,
        )
        .unwrap()
    })
    .await
    .unwrap();
    refused_within_a_second(&app, successor.token.expose()).await;
    assert_eq!(status(&app, third.token.expose()).await, StatusCode::OK);
    // Unknown, malformed and revoked ids cannot be rotated.
    let v = app.vault.clone();
    tokio::task::spawn_blocking(move || {
        assert!(v
            .rotate_credential(
                &support::app::grant(&v, Role::Admin, None),
                "ffffffffffffffff",
                Duration::ZERO
            )
            .is_err());
        assert!(v
            .rotate_credential(
                &support::app::grant(&v, Role::Admin, None),
                "../etc",
                Duration::ZERO
            )
            .is_err());
    })
    .await
    .unwrap();
    app.stop().await;
}

async fn an_expired_token_is_refused_within_a_second(db: TestDb) {
    let app = TestApp::start(db).await;
    assert_eq!(
        status(&app, &app.tokens.reader).await,
        StatusCode::OK,
        "verified and cached"
    );
    let id = app.tokens.reader.split('_').nth(1).unwrap().to_owned();
    let url = app.db.url().to_owned();
    tokio::task::spawn_blocking(move || {
        execute_sql(
            &url,
            &format!("UPDATE credentials SET expires_at = 1 WHERE id = '{id}'"),
        )
    })
    .await
    .unwrap();
    refused_within_a_second(&app, &app.tokens.reader).await;
    app.stop().await;
}

/// An admin restricted to `rp` used to mint an all-namespace writer, a `uin` writer or an
/// operator, and to list and revoke every credential of the deployment.
async fn a_namespace_scoped_admin_cannot_reach_beyond_its_namespaces(db: TestDb) {
    let app = TestApp::start(db).await;
    let admin = app.issue(&[Role::Admin], &["rp"]).await;
    for (roles, namespaces, what) in [
        (json!(["writer"]), json!([]), "an all-namespace writer"),
        (
            json!(["writer"]),
            json!(["uin"]),
            "a writer of another namespace",
        ),
        (
            json!(["writer"]),
            json!(["rp", "uin"]),
            "a writer of its and another namespace",
        ),
        (
            json!(["operator"]),
            json!(["rp"]),
            "an operator (a role it does not hold)",
        ),
        (
            json!(["auditor"]),
            json!(["rp"]),
            "an auditor (a role it does not hold)",
        ),
        (json!(["admin"]), json!([]), "an all-namespace admin"),
    ] {
        let (status, body) = create(&app, &admin, roles, namespaces).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "minted {what}: {body}");
    }
    let (status, issued) = create(&app, &admin, json!(["writer", "reader"]), json!(["rp"])).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let token = issued["token"].as_str().unwrap();
    assert_eq!(status_of(&app, token, "rp").await, StatusCode::NOT_FOUND); // allowed, no record
    assert_eq!(status_of(&app, token, "uin").await, StatusCode::FORBIDDEN);

    // It lists and revokes only credentials confined to its namespaces.
    let (status, list) = app.call(Method::GET, "/v1/credentials", &admin, None).await;
    assert_eq!(status, StatusCode::OK);
    let listed = list["credentials"].as_array().unwrap();
    assert!(!listed.is_empty());
    for c in listed {
        assert_eq!(
            c["namespaces"],
            json!(["rp"]),
            "listed a credential beyond rp: {c}"
        );
    }
    let unrestricted = app.tokens.admin.split('_').nth(1).unwrap();
    let uin_only = app.tokens.uin_writer.split('_').nth(1).unwrap();
    for id in [unrestricted, uin_only] {
        let (status, _) = app
            .call(
                Method::DELETE,
                &format!("/v1/credentials/{id}"),
                &admin,
                None,
            )
            .await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "revoked {id} beyond its namespaces"
        );
    }
    assert_eq!(
        status_of(&app, &app.tokens.uin_writer, "uin").await,
        StatusCode::NOT_FOUND
    );
    let own = issued["id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/credentials/{own}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // The unrestricted admin still administers everything.
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/credentials",
            &app.tokens.admin,
            Some(json!({"label": "x", "roles": ["writer"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

async fn create(
    app: &TestApp,
    token: &str,
    roles: Value,
    namespaces: Value,
) -> (StatusCode, Value) {
    let body = json!({"label": "x", "roles": roles, "namespaces": namespaces});
    app.call(Method::POST, "/v1/credentials", token, Some(body))
        .await
}

/// A read in `ns` of an absent record: 404 when allowed, else the refusal.
async fn status_of(app: &TestApp, token: &str, ns: &str) -> StatusCode {
    let uin = "234567890124"; // Verhoeff-valid, as `uin` requires
    app.req(
        Method::GET,
        &format!("/v1/ns/{ns}/records/none"),
        token,
        Some(uin),
    )
    .send()
    .await
    .unwrap()
    .status()
}

/// An operator or auditor restricted to `rp` used to rotate the KEK (every namespace's keys),
/// see every namespace's masters and read every namespace's audit entries.
async fn namespace_scoped_operators_and_auditors_stay_in_their_namespaces(db: TestDb) {
    let app = TestApp::start(db).await;
    let operator = app.issue(&[Role::Operator], &["rp"]).await;
    let auditor = app.issue(&[Role::Auditor], &["rp"]).await;
    let unrestricted_auditor = app.issue(&[Role::Auditor], &[]).await;
    assert!(app.put("rp", "a", ID, b"{}").await.status().is_success());
    let uin = app
        .req(
            Method::PUT,
            "/v1/ns/uin/records/a",
            &app.tokens.uin_writer,
            Some("234567890124"),
        )
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(uin.status().is_success(), "{}", uin.status());

    let kek = "/v1/keys/kek/rotate";
    assert_eq!(
        app.call(Method::POST, kek, &operator, None).await.0,
        StatusCode::FORBIDDEN
    );
    let master = |ns: &str| format!("/v1/ns/{ns}/masters/rotate");
    assert_eq!(
        app.call(Method::POST, &master("uin"), &operator, None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.call(Method::POST, &master("rp"), &operator, None)
            .await
            .0,
        StatusCode::OK
    );
    let (status, keys) = app.call(Method::GET, "/v1/keys", &operator, None).await;
    assert_eq!(status, StatusCode::OK);
    let seen: Vec<&str> = keys["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(seen, ["rp"]);
    // The unrestricted operator still rotates the KEK.
    assert_eq!(
        app.call(Method::POST, kek, &app.tokens.operator, None)
            .await
            .0,
        StatusCode::OK
    );

    let audit = "/v1/audit?limit=1000";
    let (status, page) = app.call(Method::GET, audit, &auditor, None).await;
    assert_eq!(status, StatusCode::OK);
    let entries = page["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["operation"] == "record.put"),
        "{page}"
    );
    for e in entries {
        assert_eq!(e["namespace"], "rp", "a scoped auditor read {e}");
    }
    let (_, all) = app
        .call(Method::GET, audit, &unrestricted_auditor, None)
        .await;
    let all = all["entries"].as_array().unwrap();
    assert!(all.iter().any(|e| e["namespace"] == "uin"));
    assert!(all.iter().any(|e| e["operation"] == "kek.rotate"));
}

/// A credential row whose roles text names no role (edited in the database) used to make
/// `GET /v1/credentials` answer 500 for every row, so an admin could not even find it. It is
/// listed with the text stored, its token is refused without echoing that text, and it can be
/// revoked.
async fn a_damaged_credential_row_is_listed_refused_and_revocable(db: TestDb) {
    let app = TestApp::start(db).await;
    let (status, issued) = create(&app, &app.tokens.admin, json!(["reader"]), json!(["rp"])).await;
    assert_eq!(status, StatusCode::CREATED);
    let (id, token) = (
        issued["id"].as_str().unwrap(),
        issued["token"].as_str().unwrap(),
    );
    for tampered in ["ADMIN", "admin ", "reader,,writer", "root"] {
        execute_sql(
            app.db.url(),
            &format!("UPDATE credentials SET roles = '{tampered}' WHERE id = '{id}'"),
        );
        let (status, list) = app
            .call(Method::GET, "/v1/credentials", &app.tokens.admin, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{tampered}: {list}");
        let row = list["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap();
        let roles: Vec<&str> = row["roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(roles.join(","), tampered);
        let r = app
            .req(Method::GET, "/v1/ns/rp/records", token, Some(ID))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(
            status == StatusCode::UNAUTHORIZED || status.is_server_error(),
            "{tampered}: {status}"
        );
        assert!(!body.contains(tampered.trim()), "{tampered}: {body}");
    }
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/credentials/{id}"),
            &app.tokens.admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}
