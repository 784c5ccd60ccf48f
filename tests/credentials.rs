//! Credential lifecycle over HTTP, on SQLite and PostgreSQL: rotation with an overlap window,
//! and expiry taking effect on a token that is already cached.

mod support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use support::app::{execute_sql, TestApp};
use support::db::TestDb;
use zkvault::vault::Role;

on_both_backends!(
    rotation_keeps_the_old_token_for_the_overlap_only,
    an_expired_token_is_refused_within_a_second
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
