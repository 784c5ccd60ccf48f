//! Hostile input over real TCP, on SQLite and on PostgreSQL. Every header and body the API takes,
//! sent missing, duplicated, oversized, non-UTF-8, with control characters, with path tricks,
//! with lying framing, slowly, truncated, and 10k connections opened and dropped.
//!
//! Each case must answer a clear 4xx or close the connection; meanwhile the service keeps
//! serving others, and the stored data is unchanged (row snapshot + a known record read back).
//! Requests go through `support::raw` so that no client library fixes them up first.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::app::TestApp;
use support::db::TestDb;
use support::raw::{bearer, chunked, read_reply, request, send, Reply};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use zkvault::vault::Role;

const ID: &str = "4930098371";
const ORIGINAL: &[u8] = br#"{"name":"Asha","dob":"1990-01-01"}"#;
const RECORD: &str = "/v1/ns/rp/records/demographics";

on_both_backends!(
    missing_headers_are_refused,
    duplicated_headers_are_refused,
    oversized_headers_are_refused,
    bodies_over_the_namespace_limit_are_refused,
    bodies_over_the_server_limit_are_refused,
    non_utf8_and_control_characters_are_refused,
    path_tricks_in_record_names_are_refused,
    credential_json_is_strictly_checked,
    reencrypt_json_is_strictly_checked_and_never_echoes_ids,
    audit_query_strings_are_strictly_checked,
    wrong_content_types_are_refused,
    malformed_framing_is_refused,
    slow_and_stalled_requests_time_out,
    truncated_bodies_change_nothing,
    ten_thousand_connections_opened_and_dropped,
    refused_requests_cost_bounded_audit_space,
    invalid_record_names_are_never_audited_verbatim,
    early_answers_close_the_connection,
    metrics_labels_are_bounded_and_wrong_methods_answer_405,
    argon2_waits_are_bounded_and_unknown_ids_cost_the_same,
    control_characters_in_paths_are_refused_before_audit,
    reencrypt_contract,
    path_errors_never_echo_the_value,
    unauthenticated_requests_are_audited_in_aggregate,
    unconditional_writes_under_contention_all_succeed,
    if_match_star_means_any_current_representation,
    the_auth_scheme_is_case_insensitive,
);

/// The test app with a client that opens a new connection per request: a pooled connection can
/// meet the server's keep-alive close mid-reuse, which is the client's race, not the server's.
async fn start(db: TestDb) -> TestApp {
    start_with_limit(db, 1024 * 1024).await
}

async fn start_with_limit(db: TestDb, limit: usize) -> TestApp {
    let mut app = TestApp::start_with_limit(db, limit).await;
    app.client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    app
}

/// Header lists: owned values, and borrowed ones.
type Headers<'a> = Vec<(&'a str, Vec<u8>)>;
type RawHeaders<'a> = Vec<(&'a str, &'a [u8])>;

/// Stores the known record and returns the row snapshot to compare against at the end.
async fn seed(app: &TestApp) -> Vec<String> {
    assert_eq!(
        app.put("rp", "demographics", ID, ORIGINAL).await.status(),
        201
    );
    app.snapshot().await
}

/// Nothing stored changed, and the known record still reads back exactly.
async fn assert_intact(app: &TestApp, before: &[String]) {
    assert_eq!(app.snapshot().await, before, "stored rows changed");
    assert_serving(app).await;
}

/// The service still answers a normal request — the known record, exactly — within 10 s:
/// generous, because the two cores are shared with parallel tests, one of which opens 10k
/// connections.
async fn assert_serving(app: &TestApp) {
    let r = tokio::time::timeout(Duration::from_secs(10), app.get("rp", "demographics", ID))
        .await
        .expect("a normal request was answered within 10 s");
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.unwrap()[..], ORIGINAL);
}

/// `reply` is a closed connection or one of `allowed` (all 4xx); API errors carry a JSON code.
#[track_caller]
fn refused(what: &str, reply: Option<Reply>, allowed: &[u16]) -> Option<Reply> {
    assert!(allowed.iter().all(|s| (400..500).contains(s)));
    let r = reply?;
    assert!(
        allowed.contains(&r.status),
        "{what}: got {} (allowed {allowed:?}, or a close)\n{}\n{}",
        r.status,
        r.head,
        String::from_utf8_lossy(&r.body)
    );
    Some(r)
}

/// Like [`refused`], and the answer (if any) is a JSON error with `code`.
#[track_caller]
fn refused_with(what: &str, reply: Option<Reply>, allowed: &[u16], code: &str) {
    if let Some(r) = refused(what, reply, allowed) {
        assert_eq!(
            r.error_code().as_deref(),
            Some(code),
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
}

/// Every data-plane endpoint that takes a Resident-Id, with a body where it takes one.
fn data_endpoints() -> Vec<(&'static str, &'static str)> {
    vec![
        ("PUT", RECORD),
        ("GET", RECORD),
        ("DELETE", RECORD),
        ("GET", "/v1/ns/rp/records"),
        ("DELETE", "/v1/ns/rp/resident"),
    ]
}

async fn credential_count(app: &TestApp) -> usize {
    let v: Value = app
        .req(
            reqwest::Method::GET,
            "/v1/credentials",
            &app.tokens.admin,
            None,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["credentials"].as_array().unwrap().len()
}

async fn missing_headers_are_refused(db: TestDb) {
    let app = start(db).await;
    // Neither Content-Length nor Transfer-Encoding: an empty body, answered at once (no hang).
    let w = bearer(&app.tokens.writer);
    let r = send(
        app.addr,
        &request(
            "PUT",
            b"/v1/ns/rp/records/no-length",
            &[("Authorization", &w), ("Resident-Id", ID.as_bytes())],
            b"",
        ),
    )
    .await;
    assert_eq!(r.expect("answered").status, 201);
    assert!(app
        .get("rp", "no-length", ID)
        .await
        .bytes()
        .await
        .unwrap()
        .is_empty());
    let before = seed(&app).await;

    let id = ID.as_bytes();
    for (method, path) in data_endpoints() {
        let what = format!("{method} {path}");
        let cl: (&str, &[u8]) = ("Content-Length", b"1");
        // No Resident-Id, or one that is empty or blank.
        let r = send(
            app.addr,
            &request(method, path.as_bytes(), &[("Authorization", &w), cl], b"x"),
        )
        .await;
        refused_with(
            &format!("{what} without Resident-Id"),
            r,
            &[400],
            "bad_request",
        );
        for blank in [&b""[..], b"   ", b"\t"] {
            let r = send(
                app.addr,
                &request(
                    method,
                    path.as_bytes(),
                    &[("Authorization", &w), ("Resident-Id", blank), cl],
                    b"x",
                ),
            )
            .await;
            refused_with(
                &format!("{what} with blank Resident-Id {blank:?}"),
                r,
                &[400],
                "bad_request",
            );
        }
        // No credential, or no usable one: 401 with a Bearer challenge.
        let r = send(
            app.addr,
            &request(method, path.as_bytes(), &[("Resident-Id", id), cl], b"x"),
        )
        .await;
        let r =
            refused(&format!("{what} without Authorization"), r, &[401]).expect("401 is an answer");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let basic = b"Basic dXNlcjpwYXNz";
        for auth in [
            &basic[..],
            b"",
            b"Bearer",
            b"Bearer ",
            b"Bearer   ",
            b"Token abc",
            b"Bearerabc",
        ] {
            let r = send(
                app.addr,
                &request(
                    method,
                    path.as_bytes(),
                    &[("Authorization", auth), ("Resident-Id", id), cl],
                    b"x",
                ),
            )
            .await;
            refused_with(
                &format!("{what} with Authorization {auth:?}"),
                r,
                &[401],
                "unauthenticated",
            );
        }
    }
    // The JSON endpoint without a body or without a Content-Type.
    let a = bearer(&app.tokens.admin);
    let count = credential_count(&app).await;
    let json = br#"{"label":"x","roles":["reader"]}"#;
    let r = send(
        app.addr,
        &request(
            "POST",
            b"/v1/credentials",
            &[("Authorization", &a), ("Content-Type", b"application/json")],
            b"",
        ),
    )
    .await;
    refused_with("credentials without a body", r, &[400], "bad_request");
    let r = send(
        app.addr,
        &request(
            "POST",
            b"/v1/credentials",
            &[
                ("Authorization", &a),
                ("Content-Length", json.len().to_string().as_bytes()),
            ],
            json,
        ),
    )
    .await;
    refused_with("credentials without Content-Type", r, &[400], "bad_request");
    assert_eq!(credential_count(&app).await, count);

    assert_intact(&app, &before).await;
    app.stop().await;
}

async fn duplicated_headers_are_refused(db: TestDb) {
    let app = start(db).await;
    let before = seed(&app).await;
    let w = bearer(&app.tokens.writer);
    let id = ID.as_bytes();
    let cl: (&str, &[u8]) = ("Content-Length", b"1");
    for (method, path) in data_endpoints() {
        let what = format!("{method} {path}");
        for second in [id, b"4930098372"] {
            let r = send(
                app.addr,
                &request(
                    method,
                    path.as_bytes(),
                    &[
                        ("Authorization", &w),
                        ("Resident-Id", id),
                        ("Resident-Id", second),
                        cl,
                    ],
                    b"x",
                ),
            )
            .await;
            refused_with(
                &format!("{what}: two Resident-Id"),
                r,
                &[400],
                "bad_request",
            );
        }
        let r = send(
            app.addr,
            &request(
                method,
                path.as_bytes(),
                &[
                    ("Authorization", &w),
                    ("Authorization", &w),
                    ("Resident-Id", id),
                    cl,
                ],
                b"x",
            ),
        )
        .await;
        refused_with(
            &format!("{what}: two Authorization"),
            r,
            &[400],
            "bad_request",
        );
        // Two IDs folded into one header value are not an ID either.
        let r = send(
            app.addr,
            &request(
                method,
                path.as_bytes(),
                &[
                    ("Authorization", &w),
                    ("Resident-Id", b"4930098371, 4930098372"),
                    cl,
                ],
                b"x",
            ),
        )
        .await;
        refused_with(
            &format!("{what}: comma-joined Resident-Id"),
            r,
            &[400],
            "bad_request",
        );
    }
    let etag = {
        let r = app.get("rp", "demographics", ID).await;
        r.headers()["etag"].as_bytes().to_vec()
    };
    let put = |extra: Headers<'static>| {
        let mut headers: Vec<(&str, Vec<u8>)> = vec![
            ("Authorization", w.clone()),
            ("Resident-Id", id.to_vec()),
            ("Content-Length", b"1".to_vec()),
        ];
        headers.extend(extra);
        let refs: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        request("PUT", RECORD.as_bytes(), &refs, b"x")
    };
    let cases: Vec<(&str, Headers<'static>)> = vec![
        (
            "two Content-Type",
            vec![
                ("Content-Type", b"text/plain".to_vec()),
                ("Content-Type", b"application/json".to_vec()),
            ],
        ),
        (
            "two If-Match",
            vec![("If-Match", etag.clone()), ("If-Match", etag.clone())],
        ),
        (
            "two If-None-Match",
            vec![
                ("If-None-Match", b"*".to_vec()),
                ("If-None-Match", b"*".to_vec()),
            ],
        ),
        (
            "If-Match list",
            vec![("If-Match", [&etag[..], b", ", &etag[..]].concat())],
        ),
    ];
    for (what, extra) in cases {
        refused_with(
            what,
            send(app.addr, &put(extra)).await,
            &[400],
            "bad_request",
        );
    }
    // Framing headers twice: the parser refuses them before any handler runs (request smuggling).
    let framing: Vec<(&str, RawHeaders, Vec<u8>)> = vec![
        (
            "two different Content-Length",
            vec![("Content-Length", b"1"), ("Content-Length", b"2")],
            b"xy".to_vec(),
        ),
        (
            "two equal Content-Length",
            vec![("Content-Length", b"1"), ("Content-Length", b"1")],
            b"x".to_vec(),
        ),
        (
            "Content-Length list",
            vec![("Content-Length", b"1, 1")],
            b"x".to_vec(),
        ),
        (
            "Content-Length and chunked",
            vec![("Content-Length", b"1"), ("Transfer-Encoding", b"chunked")],
            chunked(b"x", 1),
        ),
        (
            "chunked twice",
            vec![
                ("Transfer-Encoding", b"chunked"),
                ("Transfer-Encoding", b"chunked"),
            ],
            chunked(b"x", 1),
        ),
    ];
    for (what, extra, body) in framing {
        let mut headers = vec![("Authorization", &w[..]), ("Resident-Id", id)];
        headers.extend(extra);
        let r = send(
            app.addr,
            &request("PUT", b"/v1/ns/rp/records/framing-probe", &headers, &body),
        )
        .await;
        refused(what, r, &[400]);
    }
    // The JSON endpoint: two Content-Types, two Authorizations.
    let a = bearer(&app.tokens.admin);
    let count = credential_count(&app).await;
    let json = br#"{"label":"x","roles":["reader"]}"#;
    let len = json.len().to_string();
    for (what, extra) in [
        (
            "credentials: two Content-Type",
            vec![
                ("Content-Type", &b"application/json"[..]),
                ("Content-Type", b"application/json"),
            ],
        ),
        (
            "credentials: two Authorization",
            vec![
                ("Content-Type", &b"application/json"[..]),
                ("Authorization", &a[..]),
            ],
        ),
    ] {
        let mut headers = vec![
            ("Authorization", &a[..]),
            ("Content-Length", len.as_bytes()),
        ];
        headers.extend(extra);
        refused_with(
            what,
            send(
                app.addr,
                &request("POST", b"/v1/credentials", &headers, json),
            )
            .await,
            &[400],
            "bad_request",
        );
    }
    assert_eq!(credential_count(&app).await, count);
    assert_eq!(app.get("rp", "framing-probe", ID).await.status(), 404);
    assert_intact(&app, &before).await;
    app.stop().await;
}

async fn oversized_headers_are_refused(db: TestDb) {
    let app = start(db).await;
    let before = seed(&app).await;
    let w = bearer(&app.tokens.writer);
    let id = ID.as_bytes();
    let base = |extra: &[(&str, &[u8])]| {
        let mut headers = vec![
            ("Authorization", &w[..]),
            ("Resident-Id", id),
            ("Content-Length", &b"1"[..]),
        ];
        headers.extend_from_slice(extra);
        request("PUT", RECORD.as_bytes(), &headers, b"x")
    };
    // Many headers: more than the parser's table (96) holds.
    let names: Vec<String> = (0..200).map(|i| format!("X-Pad-{i}")).collect();
    let many: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"y"[..])).collect();
    refused(
        "200 headers",
        send(app.addr, &base(&many)).await,
        &[400, 431],
    );
    // Huge headers: one of 200 KiB, and 40 of 4 KiB (the head buffer holds 128 KiB).
    let huge = vec![b'a'; 200 * 1024];
    refused(
        "a 200 KiB header",
        send(app.addr, &base(&[("X-Huge", &huge)])).await,
        &[400, 431],
    );
    let four_k = vec![b'a'; 4096];
    let twenty: Vec<(&str, &[u8])> = names
        .iter()
        .take(20)
        .map(|n| (n.as_str(), &four_k[..]))
        .collect();
    let mut headers = vec![("Authorization", &w[..]), ("Resident-Id", id)];
    headers.extend_from_slice(&twenty);
    let r = send(app.addr, &request("GET", RECORD.as_bytes(), &headers, b"")).await;
    assert_eq!(
        r.expect("an 80 KiB head within 96 headers is still a head")
            .status,
        200,
        "unknown headers are ignored"
    );
    let forty: Vec<(&str, &[u8])> = names
        .iter()
        .take(40)
        .map(|n| (n.as_str(), &huge[..4 * 1024 * 4]))
        .collect();
    refused(
        "40 headers of 16 KiB",
        send(app.addr, &base(&forty)).await,
        &[400, 431],
    );
    // Oversized values of the headers the API reads.
    let long_id = vec![b'1'; 65];
    let huge_id = vec![b'1'; 64 * 1024];
    for (what, value) in [
        ("65-char Resident-Id", &long_id),
        ("64 KiB Resident-Id", &huge_id),
    ] {
        let r = send(
            app.addr,
            &request(
                "GET",
                RECORD.as_bytes(),
                &[("Authorization", &w), ("Resident-Id", value)],
                b"",
            ),
        )
        .await;
        refused_with(what, r, &[400], "bad_request");
    }
    let huge_token = format!("Bearer zkv_0123456789abcdef_{}", "A".repeat(64 * 1024));
    let r = send(
        app.addr,
        &request(
            "GET",
            RECORD.as_bytes(),
            &[
                ("Authorization", huge_token.as_bytes()),
                ("Resident-Id", id),
            ],
            b"",
        ),
    )
    .await;
    refused_with("64 KiB token", r, &[401], "unauthenticated");
    let long_ct = vec![b'a'; 256];
    let huge_ct = vec![b'a'; 64 * 1024];
    for (what, value) in [
        ("256-char Content-Type", &long_ct),
        ("64 KiB Content-Type", &huge_ct),
    ] {
        refused_with(
            what,
            send(app.addr, &base(&[("Content-Type", value)])).await,
            &[400],
            "bad_request",
        );
    }
    let huge_etag = [&b"\""[..], &vec![b'a'; 64 * 1024], b"\""].concat();
    let r = send(app.addr, &base(&[("If-Match", &huge_etag)])).await;
    refused("64 KiB If-Match", r, &[400, 412]);
    let huge_inm = vec![b'*'; 64 * 1024];
    refused_with(
        "64 KiB If-None-Match",
        send(app.addr, &base(&[("If-None-Match", &huge_inm)])).await,
        &[400],
        "bad_request",
    );
    assert_serving(&app).await;
    assert_intact(&app, &before).await;
    app.stop().await;
}

/// Bodies over `limit` bytes for PUT, with Content-Length, chunked, and lying about it.
async fn assert_bodies_over_limit_refused(app: &TestApp, limit: usize) {
    let w = bearer(&app.tokens.writer);
    let id = ID.as_bytes();
    let path = b"/v1/ns/rp/records/big";
    let over = vec![b'x'; limit + 1];
    let with_len = |len: &str, body: &[u8]| {
        request(
            "PUT",
            path,
            &[
                ("Authorization", &w),
                ("Resident-Id", id),
                ("Content-Length", len.as_bytes()),
            ],
            body,
        )
    };
    // The limit itself is fine.
    let at = vec![b'x'; limit];
    assert_eq!(
        send(app.addr, &with_len(&limit.to_string(), &at))
            .await
            .expect("answered")
            .status,
        201
    );
    let r = app
        .req(
            reqwest::Method::DELETE,
            "/v1/ns/rp/records/big",
            &app.tokens.writer,
            Some(ID),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    refused_with(
        "one byte over, with Content-Length",
        send(app.addr, &with_len(&over.len().to_string(), &over)).await,
        &[413],
        "payload_too_large",
    );
    let chunked_req = |body: &[u8]| {
        request(
            "PUT",
            path,
            &[
                ("Authorization", &w),
                ("Resident-Id", id),
                ("Transfer-Encoding", b"chunked"),
            ],
            &chunked(body, 1000),
        )
    };
    refused_with(
        "one byte over, chunked",
        send(app.addr, &chunked_req(&over)).await,
        &[413],
        "payload_too_large",
    );
    // Much larger, chunked: refused once the limit is passed, not after reading it all.
    let ten_mib = vec![b'x'; 10 * 1024 * 1024];
    refused_with(
        "10 MiB chunked",
        send(app.addr, &chunked_req(&ten_mib)).await,
        &[413],
        "payload_too_large",
    );
    // A huge announced length: 413 at once, without waiting for bytes that never come.
    let started = Instant::now();
    refused_with(
        "a 1 TB Content-Length, no body",
        send(app.addr, &with_len("1000000000000", b"")).await,
        &[413],
        "payload_too_large",
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered without waiting for the body"
    );
    // Expect: 100-continue over the limit: actix answers `100 Continue` before any handler runs,
    // then the handler's 413 follows at once (the client need not send the body).
    let r = send(
        app.addr,
        &request(
            "PUT",
            path,
            &[
                ("Authorization", &w),
                ("Resident-Id", id),
                ("Content-Length", over.len().to_string().as_bytes()),
                ("Expect", b"100-continue"),
            ],
            b"",
        ),
    )
    .await;
    refused_with(
        "Expect: 100-continue over the limit",
        r,
        &[413],
        "payload_too_large",
    );
    // Lengths that are not lengths.
    for bad in [
        "18446744073709551616",
        "-1",
        "+5",
        "0x10",
        "1 1",
        "",
        "five",
    ] {
        refused(
            &format!("Content-Length {bad:?}"),
            send(app.addr, &with_len(bad, b"x")).await,
            &[400],
        );
    }
    // An announced length under the limit, then more bytes than announced: the extra bytes are
    // never a second request.
    let smuggle = [
        &b"x"[..],
        b"GET /v1/ns/rp/records/demographics HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    .concat();
    let r = send(app.addr, &with_len("1", &smuggle))
        .await
        .expect("answered");
    assert_eq!(r.status, 201, "the one-byte record");
    let r = app
        .req(
            reqwest::Method::DELETE,
            "/v1/ns/rp/records/big",
            &app.tokens.writer,
            Some(ID),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(app.get("rp", "big", ID).await.status(), 404);
}

async fn bodies_over_the_namespace_limit_are_refused(db: TestDb) {
    // Server limit 1 MiB, namespace `rp` 4 KiB: the namespace's limit applies.
    let app = start(db).await;
    let before = seed(&app).await;
    assert_bodies_over_limit_refused(&app, 4096).await;
    // The JSON endpoint has its own 64 KiB limit.
    let a = bearer(&app.tokens.admin);
    let count = credential_count(&app).await;
    let big = format!(
        r#"{{"label":"{}","roles":["reader"]}}"#,
        "x".repeat(70 * 1024)
    );
    let r = send(
        app.addr,
        &request(
            "POST",
            b"/v1/credentials",
            &[
                ("Authorization", &a),
                ("Content-Type", b"application/json"),
                ("Content-Length", big.len().to_string().as_bytes()),
            ],
            big.as_bytes(),
        ),
    )
    .await;
    refused_with("70 KiB of JSON", r, &[413], "payload_too_large");
    let r = send(
        app.addr,
        &request(
            "POST",
            b"/v1/credentials",
            &[
                ("Authorization", &a),
                ("Content-Type", b"application/json"),
                ("Transfer-Encoding", b"chunked"),
            ],
            &chunked(big.as_bytes(), 4096),
        ),
    )
    .await;
    refused_with("70 KiB of chunked JSON", r, &[413], "payload_too_large");
    assert_eq!(credential_count(&app).await, count);
    assert_serving(&app).await;
    assert_intact(&app, &before).await;
    app.stop().await;
}

async fn bodies_over_the_server_limit_are_refused(db: TestDb) {
    // Server limit 1 KiB, under the namespace's 4 KiB: the server's limit applies.
    let app = start_with_limit(db, 1024).await;
    let before = seed(&app).await;
    assert_bodies_over_limit_refused(&app, 1024).await;
    assert_serving(&app).await;
    assert_intact(&app, &before).await;
    app.stop().await;
}

async fn non_utf8_and_control_characters_are_refused(db: TestDb) {
    let app = start(db).await;
    let before = seed(&app).await;
    let w = bearer(&app.tokens.writer);
    let id = ID.as_bytes();
    let bad_values: [(&str, &[u8]); 9] = [
        ("invalid UTF-8", b"49300\xff\xfe98371"),
        ("valid UTF-8, not ASCII", "4930098371\u{e9}".as_bytes()),
        ("a lone continuation byte", b"\x80"),
        ("NUL", b"49300\x0098371"),
        ("SOH", b"49300\x0198371"),
        ("ESC", b"\x1b[31m4930098371"),
        ("DEL", b"4930098371\x7f"),
        ("bare CR", b"4930098371\rX-Injected: 1"),
        ("a tab inside", b"49300\t98371"),
    ];
    for (what, bad) in bad_values {
        // In each header the API reads; the other headers are valid.
        let quoted = [&b"\""[..], bad, b"\""].concat();
        let token = [
            &b"Bearer "[..],
            &app.tokens.writer.as_bytes()[..10],
            bad,
            &app.tokens.writer.as_bytes()[10..],
        ]
        .concat();
        let cases: Vec<(&str, RawHeaders, &[u16])> = vec![
            (
                "Resident-Id",
                vec![("Authorization", &w[..]), ("Resident-Id", bad)],
                &[400],
            ),
            (
                "Authorization",
                vec![("Authorization", &token[..]), ("Resident-Id", id)],
                &[400, 401],
            ),
            (
                "Content-Type",
                vec![
                    ("Authorization", &w[..]),
                    ("Resident-Id", id),
                    ("Content-Type", bad),
                ],
                &[400],
            ),
            (
                "If-Match",
                vec![
                    ("Authorization", &w[..]),
                    ("Resident-Id", id),
                    ("If-Match", &quoted[..]),
                ],
                &[400],
            ),
            (
                "If-None-Match",
                vec![
                    ("Authorization", &w[..]),
                    ("Resident-Id", id),
                    ("If-None-Match", bad),
                ],
                &[400],
            ),
        ];
        for (header, mut headers, allowed) in cases {
            headers.push(("Content-Length", b"1"));
            let r = send(app.addr, &request("PUT", RECORD.as_bytes(), &headers, b"x")).await;
            if let Some(r) = refused(&format!("{what} in {header}"), r, allowed) {
                let body = String::from_utf8_lossy(&r.body);
                assert!(
                    !body.contains("98371"),
                    "{what} in {header}: the value must not be echoed: {body}"
                );
            }
        }
        // In the header name, the request line and the path.
        let mut name = b"Resident-Id".to_vec();
        name.extend_from_slice(bad);
        let mut raw = request(
            "GET",
            RECORD.as_bytes(),
            &[("Authorization", &w), ("Resident-Id", id)],
            b"",
        );
        let at = raw.windows(11).position(|x| x == b"Resident-Id").unwrap();
        raw.splice(at..at + 11, name);
        refused(
            &format!("{what} in a header name"),
            send(app.addr, &raw).await,
            &[400],
        );
        let path = [&b"/v1/ns/rp/records/demo"[..], bad].concat();
        for method in ["PUT", "GET", "DELETE"] {
            let r = send(
                app.addr,
                &request(
                    method,
                    &path,
                    &[
                        ("Authorization", &w),
                        ("Resident-Id", id),
                        ("Content-Length", b"1"),
                    ],
                    b"x",
                ),
            )
            .await;
            refused(&format!("{what} in a {method} path"), r, &[400, 404]);
        }
    }
    // Obsolete line folding would splice a continuation into the Resident-Id.
    let folded = b"GET /v1/ns/rp/records/demographics HTTP/1.1\r\nHost: x\r\nResident-Id: 49300\r\n 98371\r\n";
    let mut raw = folded.to_vec();
    raw.extend_from_slice(
        format!(
            "Authorization: Bearer {}\r\nConnection: close\r\n\r\n",
            app.tokens.writer
        )
        .as_bytes(),
    );
    refused("obs-fold", send(app.addr, &raw).await, &[400]);
    assert_serving(&app).await;
    assert_intact(&app, &before).await;
    app.stop().await;
}

async fn path_tricks_in_record_names_are_refused(db: TestDb) {
    let app = start(db).await;
    let before = seed(&app).await;
    let w = bearer(&app.tokens.writer);
    let id = ID.as_bytes();
    let long = |n: usize| "a".repeat(n).into_bytes();
    let names: Vec<Vec<u8>> = vec![
        b"..".to_vec(),
        b".".to_vec(),
        b"a/../demographics".to_vec(),
        b"../demographics".to_vec(),
        b"../../uin/records/demographics".to_vec(),
        b"./demographics".to_vec(),
        b"a/./b".to_vec(),
        b"a//b".to_vec(),
        b"/demographics".to_vec(),
        b"demographics/".to_vec(),
        b"demographics//".to_vec(),
        b"a%2Fb".to_vec(),
        b"a%2fb".to_vec(),
        b"%2e%2e".to_vec(),
        b"%2E%2E/demographics".to_vec(),
        b"..%2Fdemographics".to_vec(),
        b"%64emographics".to_vec(),
        b"demographics%00".to_vec(),
        b"demo%00graphics".to_vec(),
        b"demographics%20".to_vec(),
        b"demographics%".to_vec(),
        b"demographics%zz".to_vec(),
        b"demo\x00graphics".to_vec(),
        b"a\\b".to_vec(),
        b"..\\demographics".to_vec(),
        b"demographics;v=1".to_vec(),
        b"Demographics".to_vec(),
        b"-x".to_vec(),
        b"_x".to_vec(),
        b"a b".to_vec(),
        long(129),
        long(8 * 1024),
        long(100 * 1024),
        long(200 * 1024),
    ];
    for name in &names {
        let what = String::from_utf8_lossy(&name[..name.len().min(40)]).into_owned();
        let path = [&b"/v1/ns/rp/records/"[..], name].concat();
        for method in ["PUT", "GET", "DELETE"] {
            let r = send(
                app.addr,
                &request(
                    method,
                    &path,
                    &[
                        ("Authorization", &w),
                        ("Resident-Id", id),
                        ("Content-Length", b"1"),
                    ],
                    b"x",
                ),
            )
            .await;
            // 404 only where the path matches no route at all; 431/414 for a path past the head buffer.
            refused(&format!("{method} {what:?}"), r, &[400, 404, 414, 431]);
        }
    }
    // A fragment is no part of a request target: the HTTP parser drops it, so `a#b` names `a`
    // and can never become a stored name of its own.
    let r = send(
        app.addr,
        &request(
            "GET",
            b"/v1/ns/rp/records/demographics#x",
            &[("Authorization", &w), ("Resident-Id", id)],
            b"",
        ),
    )
    .await;
    assert_eq!(r.expect("answered").body, ORIGINAL);
    // The same spelling rule for the namespace segment: one spelling per namespace.
    let namespaces: [(&str, &[u8]); 6] = [
        ("GET", b"/v1/ns/r%70/records"),
        ("DELETE", b"/v1/ns/r%70/resident"),
        ("GET", b"/v1/ns/r%70/records/demographics"),
        ("GET", b"/v1/ns/rp/../uin/records/demographics"),
        ("DELETE", b"/v1/ns/%2e%2e/resident"),
        ("PUT", b"/v1/ns//records/demographics"),
    ];
    for (method, path) in namespaces {
        let r = send(
            app.addr,
            &request(
                method,
                path,
                &[
                    ("Authorization", &w),
                    ("Resident-Id", id),
                    ("Content-Length", b"1"),
                ],
                b"x",
            ),
        )
        .await;
        refused(
            &format!("{method} {}", String::from_utf8_lossy(path)),
            r,
            &[400, 403, 404],
        );
    }
    // Credential ids in the revocation path.
    let a = bearer(&app.tokens.admin);
    let count = credential_count(&app).await;
    let ids: [&[u8]; 6] = [
        b"..",
        b"..%2F..",
        b"%00",
        b"%27%20OR%20%271%27%3D%271",
        b"*",
        &long(10 * 1024),
    ];
    for cid in ids {
        let path = [&b"/v1/credentials/"[..], cid].concat();
        refused(
            &format!(
                "revoke {:?}",
                String::from_utf8_lossy(&cid[..cid.len().min(40)])
            ),
            send(
                app.addr,
                &request("DELETE", &path, &[("Authorization", &a)], b""),
            )
            .await,
            &[400, 404],
        );
    }
    assert_eq!(credential_count(&app).await, count);
    assert_serving(&app).await;
    assert_intact(&app, &before).await;
    app.stop().await;
}

async fn credential_json_is_strictly_checked(db: TestDb) {
    let app = start(db).await;
    let before = seed(&app).await;
    let count = credential_count(&app).await;
    let a = bearer(&app.tokens.admin);
    let deep = format!(
        r#"{{"label":"x","roles":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let long_label = format!(r#"{{"label":"{}","roles":["reader"]}}"#, "x".repeat(129));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "unknown field",
            br#"{"label":"x","roles":["reader"],"admin":true}"#.to_vec(),
        ),
        ("missing label", br#"{"roles":["reader"]}"#.to_vec()),
        ("missing roles", br#"{"label":"x"}"#.to_vec()),
        (
            "roles as a string",
            br#"{"label":"x","roles":"reader"}"#.to_vec(),
        ),
        (
            "label as a number",
            br#"{"label":5,"roles":["reader"]}"#.to_vec(),
        ),
        (
            "label null",
            br#"{"label":null,"roles":["reader"]}"#.to_vec(),
        ),
        ("a role null", br#"{"label":"x","roles":[null]}"#.to_vec()),
        (
            "a role a number",
            br#"{"label":"x","roles":["reader",1]}"#.to_vec(),
        ),
        (
            "namespaces as an object",
            br#"{"label":"x","roles":["reader"],"namespaces":{"rp":true}}"#.to_vec(),
        ),
        (
            "unknown role",
            br#"{"label":"x","roles":["superuser"]}"#.to_vec(),
        ),
        (
            "role in capitals",
            br#"{"label":"x","roles":["Admin"]}"#.to_vec(),
        ),
        ("no role", br#"{"label":"x","roles":[]}"#.to_vec()),
        (
            "unknown namespace",
            br#"{"label":"x","roles":["reader"],"namespaces":["nope"]}"#.to_vec(),
        ),
        (
            "namespace path trick",
            br#"{"label":"x","roles":["reader"],"namespaces":["../rp"]}"#.to_vec(),
        ),
        ("label too long", long_label.into_bytes()),
        (
            "control character in label",
            br#"{"label":"a\u0007b","roles":["reader"]}"#.to_vec(),
        ),
        (
            "NUL in label",
            br#"{"label":"a\u0000b","roles":["reader"]}"#.to_vec(),
        ),
        (
            "duplicate key",
            br#"{"label":"x","label":"y","roles":["reader"]}"#.to_vec(),
        ),
        (
            "invalid UTF-8",
            b"{\"label\":\"\xff\xfe\",\"roles\":[\"reader\"]}".to_vec(),
        ),
        (
            "lone surrogate",
            br#"{"label":"\ud800","roles":["reader"]}"#.to_vec(),
        ),
        (
            "UTF-8 BOM",
            [&b"\xef\xbb\xbf"[..], br#"{"label":"x","roles":["reader"]}"#].concat(),
        ),
        ("truncated", br#"{"label":"x","roles":["reader"]"#.to_vec()),
        (
            "trailing garbage",
            br#"{"label":"x","roles":["reader"]} {}"#.to_vec(),
        ),
        ("null", b"null".to_vec()),
        ("array", br#"[{"label":"x","roles":["reader"]}]"#.to_vec()),
        ("string", br#""x""#.to_vec()),
        ("empty object", b"{}".to_vec()),
        ("empty body", b"".to_vec()),
        ("10k-deep nesting", deep.into_bytes()),
    ];
    for (what, body) in &bodies {
        let r = send(
            app.addr,
            &request(
                "POST",
                b"/v1/credentials",
                &[
                    ("Authorization", &a),
                    ("Content-Type", b"application/json"),
                    ("Content-Length", body.len().to_string().as_bytes()),
                ],
                body,
            ),
        )
        .await;
        refused_with(what, r, &[400], "bad_request");
    }
    // A valid body from a caller who is not an admin.
    let json = br#"{"label":"x","roles":["admin"]}"#;
    let w = bearer(&app.tokens.writer);
    let r = send(
        app.addr,
        &request(
            "POST",
            b"/v1/credentials",
            &[
                ("Authorization", &w),
                ("Content-Type", b"application/json"),
                ("Content-Length", json.len().to_string().as_bytes()),
            ],
            json,
        ),
    )
    .await;
    refused_with("writer creating an admin", r, &[403], "forbidden");
    assert_eq!(
        credential_count(&app).await,
        count,
        "no credential was created"
    );
    assert_intact(&app, &before).await;
    app.stop().await;
}

async fn reencrypt_json_is_strictly_checked_and_never_echoes_ids(db: TestDb) {
    let app = start(db).await;
    let before = seed(&app).await;
    let t = bearer(&app.tokens.reencrypt);
    let too_many = format!(
        r#"{{"resident_ids":[{}]}}"#,
        vec!["\"4930098371\""; 1001].join(",")
    );
    let huge = format!(r#"{{"resident_ids":["{}"]}}"#, "4".repeat(200 * 1024));
    // Each body carries the resident ID 4930098371 somewhere a parser might quote it back.
    let bodies: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "ID as a number",
            br#"{"resident_ids":[4930098371]}"#.to_vec(),
            400,
        ),
        (
            "ID as an object key",
            br#"{"resident_ids":[],"4930098371":1}"#.to_vec(),
            400,
        ),
        (
            "IDs as a string",
            br#"{"resident_ids":"4930098371"}"#.to_vec(),
            400,
        ),
        (
            "IDs as an object",
            br#"{"resident_ids":{"4930098371":true}}"#.to_vec(),
            400,
        ),
        (
            "ID nested",
            br#"{"resident_ids":[["4930098371"]]}"#.to_vec(),
            400,
        ),
        (
            "ID that is no ID",
            br#"{"resident_ids":["4930098371 x"]}"#.to_vec(),
            400,
        ),
        (
            "ID with a control character",
            br#"{"resident_ids":["4930098371\u0000"]}"#.to_vec(),
            400,
        ),
        (
            "ID as an enum-like value",
            br#"{"resident_ids":[true,"4930098371"]}"#.to_vec(),
            400,
        ),
        (
            "unknown field",
            br#"{"resident_ids":["4930098371"],"force":true}"#.to_vec(),
            400,
        ),
        ("missing field", br#"{"ids":["4930098371"]}"#.to_vec(), 400),
        (
            "broken JSON after the ID",
            br#"{"resident_ids":["4930098371"]"#.to_vec(),
            400,
        ),
        (
            "bad escape in the ID",
            br#"{"resident_ids":["4930098371\q"]}"#.to_vec(),
            400,
        ),
        ("1001 IDs", too_many.into_bytes(), 400),
        ("200 KiB", huge.into_bytes(), 413),
    ];
    for (what, body, status) in &bodies {
        let len = body.len().to_string();
        let r = send(
            app.addr,
            &request(
                "POST",
                b"/v1/ns/rp/reencrypt",
                &[
                    ("Authorization", &t),
                    ("Content-Type", b"application/json"),
                    ("Content-Length", len.as_bytes()),
                ],
                body,
            ),
        )
        .await;
        let code = if *status == 413 {
            "payload_too_large"
        } else {
            "bad_request"
        };
        let r = refused(what, r, &[*status]).expect("an answer");
        assert_eq!(r.error_code().as_deref(), Some(code), "{what}");
        let text = String::from_utf8_lossy(&r.body);
        assert!(
            !text.contains("4930098371"),
            "{what}: the resident ID is echoed: {text}"
        );
    }
    // Wrong and duplicated content types; another namespace; another role.
    let json = br#"{"resident_ids":["4930098371"]}"#;
    let len = json.len().to_string();
    for (what, headers, status) in [
        (
            "text/plain",
            vec![
                ("Authorization", &t[..]),
                ("Content-Type", &b"text/plain"[..]),
            ],
            400,
        ),
        ("no Content-Type", vec![("Authorization", &t[..])], 400),
        (
            "two Content-Type",
            vec![
                ("Authorization", &t[..]),
                ("Content-Type", &b"application/json"[..]),
                ("Content-Type", b"application/json"),
            ],
            400,
        ),
        (
            "a writer",
            vec![
                ("Authorization", &bearer(&app.tokens.writer)[..]),
                ("Content-Type", &b"application/json"[..]),
            ],
            403,
        ),
    ] {
        let mut headers = headers.clone();
        headers.push(("Content-Length", len.as_bytes()));
        let r = send(
            app.addr,
            &request("POST", b"/v1/ns/rp/reencrypt", &headers, json),
        )
        .await;
        refused(what, r, &[status]);
    }
    let r = send(
        app.addr,
        &request(
            "POST",
            b"/v1/ns/uin/reencrypt",
            &[
                ("Authorization", &t),
                ("Content-Type", b"application/json"),
                ("Content-Length", len.as_bytes()),
            ],
            json,
        ),
    )
    .await;
    refused("another namespace", r, &[403]);
    assert_intact(&app, &before).await;
    app.stop().await;
}

async fn audit_query_strings_are_strictly_checked(db: TestDb) {
    let app = start(db).await;
    let before = seed(&app).await;
    let auditor = tokio::task::spawn_blocking({
        let v = app.vault.clone();
        move || {
            v.create_credential(
                &support::app::grant(&v, Role::Admin, None),
                "auditor",
                &[zkvault::vault::Role::Auditor],
                &[],
            )
            .unwrap()
            .token
            .expose()
            .to_owned()
        }
    })
    .await
    .unwrap();
    let a = bearer(&auditor);
    let ok = send(
        app.addr,
        &request("GET", b"/v1/audit?limit=5", &[("Authorization", &a)], b""),
    )
    .await;
    assert_eq!(ok.expect("answered").status, 200);
    let queries: [&[u8]; 12] = [
        b"limit=0",
        b"limit=1001",
        b"limit=-1",
        b"limit=abc",
        b"limit=99999999999999999999999",
        b"since=yesterday",
        b"after=1e3",
        b"limit=1&limit=2",
        b"limit=%FF",
        b"limit=%",
        b"operation=%00",
        b"since=1&until=%ZZ",
    ];
    for q in queries {
        let path = [&b"/v1/audit?"[..], q].concat();
        let r = send(
            app.addr,
            &request("GET", &path, &[("Authorization", &a)], b""),
        )
        .await;
        refused_with(
            &format!("audit ?{}", String::from_utf8_lossy(q)),
            r,
            &[400],
            "bad_request",
        );
    }
    // Unknown parameters and a writer.
    let r = send(
        app.addr,
        &request(
            "GET",
            b"/v1/audit?resident=4930098371",
            &[("Authorization", &a)],
            b"",
        ),
    )
    .await;
    if let Some(r) = refused("unknown parameter", r, &[400]) {
        assert!(!String::from_utf8_lossy(&r.body).contains("4930098371"));
    }
    let r = send(
        app.addr,
        &request(
            "GET",
            b"/v1/audit",
            &[("Authorization", &bearer(&app.tokens.writer))],
            b"",
        ),
    )
    .await;
    refused_with("a writer reading the audit", r, &[403], "forbidden");
    assert_intact(&app, &before).await;
    app.stop().await;
}

async fn wrong_content_types_are_refused(db: TestDb) {
    let app = start(db).await;
    let before = seed(&app).await;
    let count = credential_count(&app).await;
    let a = bearer(&app.tokens.admin);
    let json = br#"{"label":"x","roles":["reader"]}"#;
    let len = json.len().to_string();
    let wrong: [&[u8]; 8] = [
        b"text/plain",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data; boundary=x",
        b"application/octet-stream",
        b"application/jsonp",
        b"json",
        b"",
        b";;;",
    ];
    for ct in wrong {
        let r = send(
            app.addr,
            &request(
                "POST",
                b"/v1/credentials",
                &[
                    ("Authorization", &a),
                    ("Content-Type", ct),
                    ("Content-Length", len.as_bytes()),
                ],
                json,
            ),
        )
        .await;
        refused_with(
            &format!("credentials as {:?}", String::from_utf8_lossy(ct)),
            r,
            &[400],
            "bad_request",
        );
    }
    assert_eq!(credential_count(&app).await, count);
    // Record bodies are opaque bytes with any well-formed Content-Type; malformed ones are refused.
    let w = bearer(&app.tokens.writer);
    let bad_ct: [&[u8]; 3] = [b"", &[b'a'; 256], b"text/plain\x7f"];
    for ct in bad_ct {
        let r = send(
            app.addr,
            &request(
                "PUT",
                RECORD.as_bytes(),
                &[
                    ("Authorization", &w),
                    ("Resident-Id", ID.as_bytes()),
                    ("Content-Type", ct),
                    ("Content-Length", b"1"),
                ],
                b"x",
            ),
        )
        .await;
        refused(
            &format!(
                "record as {:?}",
                String::from_utf8_lossy(&ct[..ct.len().min(20)])
            ),
            r,
            &[400],
        );
    }
    assert_intact(&app, &before).await;
    app.stop().await;
}

async fn malformed_framing_is_refused(db: TestDb) {
    let app = start(db).await;
    let before = seed(&app).await;
    let auth = format!(
        "Authorization: Bearer {}\r\nResident-Id: {ID}\r\n",
        app.tokens.writer
    );
    let put_head = |extra: &str| {
        format!("PUT /v1/ns/rp/records/framing-probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}{extra}\r\n")
    };
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("garbage", b"GARBAGE\r\n\r\n".to_vec(), &[400]),
        ("binary noise", (0..=255u8).cycle().take(4096).collect(), &[400]),
        ("HTTP/2 preface on HTTP/1", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), &[400, 404, 405]),
        ("unknown version", b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(), &[400]),
        ("no version", b"GET /healthz\r\n\r\n".to_vec(), &[400]),
        ("LF-only line ends, bad request line", b"GET  /healthz  HTTP/1.1\n\n".to_vec(), &[400]),
        ("bad chunk size", [put_head("Transfer-Encoding: chunked\r\n").as_bytes(), b"zz\r\nx\r\n0\r\n\r\n"].concat(), &[400]),
        ("chunk size overflow", [put_head("Transfer-Encoding: chunked\r\n").as_bytes(), b"ffffffffffffffffffff\r\nx\r\n0\r\n\r\n"].concat(), &[400, 413]),
        ("chunk longer than announced", [put_head("Transfer-Encoding: chunked\r\n").as_bytes(), b"1\r\nxyz\r\n0\r\n\r\n"].concat(), &[400]),
        ("unsupported transfer coding", [put_head("Transfer-Encoding: gzip\r\n").as_bytes(), b"x"].concat(), &[400]),
        ("chunked not last", [put_head("Transfer-Encoding: chunked, gzip\r\n").as_bytes(), b"1\r\nx\r\n0\r\n\r\n"].concat(), &[400]),
        ("unknown method", format!("BREW {RECORD} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n").into_bytes(), &[404, 405]),
        ("lower-case method", format!("put {RECORD} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Length: 1\r\n\r\nx").into_bytes(), &[400, 404, 405]),
        ("absolute-form elsewhere", format!("GET http://evil.example/v1/ns/rp/records/framing-probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n").into_bytes(), &[400, 404]),
    ];
    for (what, raw, allowed) in cases {
        refused(what, send(app.addr, &raw).await, allowed);
    }
    assert_serving(&app).await;
    assert_eq!(app.get("rp", "framing-probe", ID).await.status(), 404);
    assert_intact(&app, &before).await;
    app.stop().await;
}

/// Opens a connection, writes `bytes` and then neither writes nor closes.
async fn stall(app: &TestApp, bytes: Vec<u8>) -> TcpStream {
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(&bytes).await.unwrap();
    s
}

async fn slow_and_stalled_requests_time_out(db: TestDb) {
    let app = Arc::new(start(db).await);
    let before = seed(&app).await;
    let auth = format!(
        "Authorization: Bearer {}\r\nResident-Id: {ID}\r\n",
        app.tokens.writer
    );
    let admin = format!("Authorization: Bearer {}\r\n", app.tokens.admin);
    let stalls: Vec<(&str, String)> = vec![
        ("an unfinished head", "PUT /v1/ns/rp/records/slow HTTP/1.1\r\nHost: x\r\nResident-Id: 49".into()),
        ("10 of 100 body bytes", format!("PUT /v1/ns/rp/records/slow HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 100\r\n\r\n0123456789")),
        ("one chunk, then nothing", format!("PUT /v1/ns/rp/records/slow HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")),
        ("half a JSON body", format!("POST /v1/credentials HTTP/1.1\r\nHost: x\r\n{admin}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"label\":")),
        ("a body over an existing record", format!("PUT {RECORD} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 100\r\n\r\n{{\"name\":")),
    ];
    let started = Instant::now();
    let mut waiting = Vec::new();
    for (what, bytes) in stalls {
        let mut s = stall(&app, bytes.into_bytes()).await;
        waiting.push(tokio::spawn(async move {
            // actix's head timeout and zkvault's body idle timeout are both 10 s.
            let reply = read_reply(&mut s, Duration::from_secs(14)).await;
            let reply = reply.unwrap_or_else(|| panic!("{what}: still open after 14 s"));
            if let Some(r) = &reply {
                assert_eq!(r.status, 408, "{what}: {}", r.head);
                assert_eq!(
                    r.header("connection"),
                    Some("close"),
                    "{what}: closes after a timeout"
                );
            }
            (what, started.elapsed())
        }));
    }
    // While they stall, others are served as usual, more than once.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_serving(&app).await;
    }
    for w in waiting {
        let (what, took) = w.await.unwrap();
        assert!(
            took >= Duration::from_secs(5),
            "{what}: answered after {took:?}, before any timeout"
        );
    }
    assert_eq!(app.get("rp", "slow", ID).await.status(), 404);
    assert_intact(&app, &before).await;
}

async fn truncated_bodies_change_nothing(db: TestDb) {
    let app = start(db).await;
    let before = seed(&app).await;
    let count = credential_count(&app).await;
    let auth = format!(
        "Authorization: Bearer {}\r\nResident-Id: {ID}\r\n",
        app.tokens.writer
    );
    let admin = format!("Authorization: Bearer {}\r\n", app.tokens.admin);
    let cases: Vec<(&str, String)> = vec![
        ("Content-Length 100, 10 sent", format!("PUT /v1/ns/rp/records/partial HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 100\r\n\r\n0123456789")),
        ("replacing a record, cut short", format!("PUT {RECORD} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 100\r\n\r\n{{\"name\":\"Mallory\"")),
        ("chunked, no last chunk", format!("PUT /v1/ns/rp/records/partial HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")),
        ("chunked, cut inside a chunk", format!("PUT /v1/ns/rp/records/partial HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\na\r\nhel")),
        ("JSON cut short", format!("POST /v1/credentials HTTP/1.1\r\nHost: x\r\n{admin}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"label\":\"x\",\"roles\":[\"admin\"]}}")),
    ];
    for (what, bytes) in &cases {
        // Half-close: the server sees the end of the body early and may still answer.
        let mut s = stall(&app, bytes.clone().into_bytes()).await;
        s.shutdown().await.unwrap();
        let reply = read_reply(&mut s, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("{what}: no answer or close within 5 s of EOF"));
        refused(what, reply, &[400]);
        // Full close: nobody is left to answer.
        drop(stall(&app, bytes.clone().into_bytes()).await);
    }
    // Give the server a moment to finish with the dropped ones, then check nothing was written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_serving(&app).await;
    assert_eq!(app.get("rp", "partial", ID).await.status(), 404);
    assert_eq!(credential_count(&app).await, count);
    assert_intact(&app, &before).await;
    app.stop().await;
}

/// Open file descriptors of this process (the server runs in it).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn ten_thousand_connections_opened_and_dropped(db: TestDb) {
    const TOTAL: usize = 10_000;
    const AT_ONCE: usize = 200;
    let app = start(db).await;
    let before = seed(&app).await;
    let fds_before = open_fds();
    let addr = app.addr;
    let auth = format!(
        "Authorization: Bearer {}\r\nResident-Id: {ID}\r\n",
        app.tokens.writer
    );
    let kinds: Arc<Vec<Vec<u8>>> = Arc::new(vec![
        Vec::new(),
        b"GET /v1/ns/rp/records/demographics HTTP/1.1\r\nHost: x\r\n".to_vec(),
        format!("PUT /v1/ns/rp/records/storm HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 100\r\n\r\n0123456789").into_bytes(),
        format!("GET {RECORD} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").into_bytes(),
    ]);
    let permits = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for i in 0..TOTAL {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let kinds = kinds.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let bytes = &kinds[i % kinds.len()];
            if !bytes.is_empty() {
                s.write_all(bytes).await.unwrap();
            }
            // Half are reset (RST), half closed normally (FIN).
            if i % 2 == 0 {
                s.set_zero_linger().unwrap();
            }
        });
        while let Some(done) = tasks.try_join_next() {
            done.unwrap();
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "{TOTAL} connections took {took:?}"
    );

    assert_serving(&app).await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Writes still work, and the server let go of the dropped connections.
    assert_eq!(app.put("rp", "after-storm", ID, b"ok").await.status(), 201);
    assert_eq!(
        &app.get("rp", "after-storm", ID)
            .await
            .bytes()
            .await
            .unwrap()[..],
        b"ok"
    );
    let r = app
        .req(
            reqwest::Method::DELETE,
            "/v1/ns/rp/records/after-storm",
            &app.tokens.writer,
            Some(ID),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds() > fds_before + 100 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        open_fds() <= fds_before + 100,
        "descriptors still open: {} before, {} after",
        fds_before,
        open_fds()
    );
    assert_eq!(app.get("rp", "storm", ID).await.status(), 404);
    assert_intact(&app, &before).await;
    app.stop().await;
}

// ---- Issue 10: unauthenticated or low-privilege exhaustion, and contract defects ----

/// `(rows, bytes)` of the audit entries of refusals (`access.*`): bytes of their text columns.
async fn refusal_audit_size(app: &TestApp) -> (u64, u64) {
    let url = app.db.url().to_owned();
    let v = tokio::task::spawn_blocking(move || {
        support::app::query_strings(
            &url,
            "SELECT CAST(COUNT(*) AS TEXT) || ' ' || CAST(COALESCE(SUM(LENGTH(actor) + LENGTH(request_id) + LENGTH(operation) + LENGTH(namespace) \
             + LENGTH(target) + LENGTH(resident_tag) + LENGTH(outcome) + LENGTH(detail)), 0) AS TEXT) AS v FROM audit WHERE operation LIKE 'access.%'",
        )
    })
    .await
    .unwrap();
    let (rows, bytes) = v[0].split_once(' ').unwrap();
    (rows.parse().unwrap(), bytes.parse().unwrap())
}

/// Every audit row as `operation|outcome|namespace|target|detail`.
async fn audit_rows(app: &TestApp) -> Vec<String> {
    let url = app.db.url().to_owned();
    tokio::task::spawn_blocking(move || {
        support::app::query_strings(&url, "SELECT operation || '|' || outcome || '|' || namespace || '|' || target || '|' || detail AS v FROM audit ORDER BY id")
    })
    .await
    .unwrap()
}

/// Refusals recorded with `outcome` on `access.*` operations: `(rows, refused requests)`. An
/// aggregated entry's detail starts `count=N`; any other entry stands for one request.
async fn refusals(app: &TestApp, outcomes: &[&str]) -> (usize, u64) {
    let rows: Vec<String> = audit_rows(app)
        .await
        .into_iter()
        .filter(|r| {
            let mut f = r.split('|');
            f.next().is_some_and(|op| op.starts_with("access."))
                && f.next().is_some_and(|o| outcomes.contains(&o))
        })
        .collect();
    let count = |r: &String| {
        r.rsplit('|')
            .next()
            .and_then(|d| d.strip_prefix("count="))
            .and_then(|d| d.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(1u64)
    };
    (rows.len(), rows.iter().map(count).sum())
}

/// Waits (up to 20 s) until at least `expected` refusals with one of `outcomes` are recorded.
async fn await_refusals(app: &TestApp, outcomes: &[&str], expected: u64) -> (usize, u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = refusals(app, outcomes).await;
        if got.1 >= expected || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn refused_requests_cost_bounded_audit_space(db: TestDb) {
    const FLOOD: usize = 2_000;
    let app = Arc::new(start(db).await);
    seed(&app).await;
    // The reader's token verified (and cached) before the flood: Argon2 is item 5's subject.
    assert_serving(&app).await;
    let (rows_before, bytes_before) = refusal_audit_size(&app).await;
    let huge = format!("/v1/ns/{}/records", "N".repeat(60_000));
    let r = bearer(&app.tokens.reader);
    let flood = {
        let (app, r, huge) = (app.clone(), r.clone(), huge.clone());
        tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(8));
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..FLOOD {
                let permit = permits.clone().acquire_owned().await.unwrap();
                let (addr, raw) = (
                    app.addr,
                    request(
                        "GET",
                        huge.as_bytes(),
                        &[("Authorization", &r), ("Resident-Id", ID.as_bytes())],
                        b"",
                    ),
                );
                tasks.spawn(async move {
                    let _permit = permit;
                    send(addr, &raw).await.map(|r| r.status)
                });
            }
            let mut statuses = Vec::new();
            while let Some(s) = tasks.join_next().await {
                statuses.push(s.unwrap());
            }
            statuses
        })
    };
    // Valid traffic meanwhile: answered, and how long it took is reported (not asserted).
    let mut latencies = Vec::new();
    while !flood.is_finished() {
        let started = Instant::now();
        assert_serving(&app).await;
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let statuses = flood.await.unwrap();
    assert!(
        statuses.iter().all(|s| matches!(s, Some(400 | 403 | 404))),
        "every flood request refused: {:?}",
        &statuses[..10]
    );
    let (rows, refused) = await_refusals(
        &app,
        &["forbidden", "bad_request", "unknown_namespace"],
        FLOOD as u64,
    )
    .await;
    let (rows_after, bytes_after) = refusal_audit_size(&app).await;
    latencies.sort();
    eprintln!(
        "flood of {FLOOD}: refusal audit entries +{} rows, +{} bytes ({rows} entries for {refused} requests); valid GET latency over {} samples: median {:?}, max {:?}",
        rows_after - rows_before,
        bytes_after - bytes_before,
        latencies.len(),
        latencies.get(latencies.len() / 2),
        latencies.last()
    );
    assert_eq!(refused, FLOOD as u64, "every refusal is counted");
    // One entry per key per second at most, each a few hundred bytes: the flood lasts seconds.
    assert!(
        rows_after - rows_before <= 100,
        "{} audit rows for {FLOOD} refusals",
        rows_after - rows_before
    );
    assert!(
        bytes_after - bytes_before <= 64 * 1024,
        "{} audit bytes for {FLOOD} refusals",
        bytes_after - bytes_before
    );
    assert!(!latencies.is_empty());
}

async fn invalid_record_names_are_never_audited_verbatim(db: TestDb) {
    let app = start(db).await;
    let w = bearer(&app.tokens.writer);
    let long = "a".repeat(5 * 1024);
    for name in ["UIN-4930098371-SECRET", long.as_str()] {
        let path = format!("/v1/ns/rp/records/{name}");
        for method in ["PUT", "GET", "DELETE"] {
            let r = send(
                app.addr,
                &request(
                    method,
                    path.as_bytes(),
                    &[
                        ("Authorization", &w),
                        ("Resident-Id", ID.as_bytes()),
                        ("Content-Length", b"1"),
                    ],
                    b"x",
                ),
            )
            .await;
            refused_with(
                &format!("{method} {}", &name[..name.len().min(30)]),
                r,
                &[400],
                "bad_request",
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rows = audit_rows(&app).await.join("\n");
    assert!(
        !rows.contains("4930098371") && !rows.contains("SECRET"),
        "the name is audited verbatim:\n{rows}"
    );
    assert!(
        !rows.contains(&long[..200]),
        "the 5 KB name is audited verbatim"
    );
    assert!(
        rows.contains("<invalid name, 21 bytes>") && rows.contains("<invalid name, 5120 bytes>"),
        "a fixed marker stands for the name:\n{rows}"
    );
    app.stop().await;
}

/// True if the server closes `s` within `wait` while we drip a chunk every 200 ms.
async fn closes_while_dripping(s: &mut TcpStream, wait: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if s.write_all(b"1\r\nx\r\n").await.is_err() {
            return true;
        }
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            _ => {}
        }
    }
    false
}

async fn early_answers_close_the_connection(db: TestDb) {
    let app = start(db).await;
    let before = seed(&app).await;
    let head = |auth: &str| {
        format!("PUT /v1/ns/rp/records/x HTTP/1.1\r\nHost: x\r\n{auth}Resident-Id: {ID}\r\nTransfer-Encoding: chunked\r\n\r\n")
    };
    let writer = format!("Authorization: Bearer {}\r\n", app.tokens.writer);
    // No token: 401 while the body is still coming; over the limit: 413 after 4 KiB of it.
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "401, chunked",
            [head("").as_bytes(), b"5\r\nhello\r\n"].concat(),
            401,
        ),
        (
            "403, chunked",
            [
                head(&format!("Authorization: Bearer {}\r\n", app.tokens.reader)).as_bytes(),
                b"5\r\nhello\r\n",
            ]
            .concat(),
            403,
        ),
        (
            "413, chunked",
            [
                head(&writer).as_bytes(),
                format!("1001\r\n{}\r\n", "x".repeat(4097)).as_bytes(),
            ]
            .concat(),
            413,
        ),
    ];
    for (what, bytes, status) in cases {
        let mut s = stall(&app, bytes).await;
        let reply = read_reply(&mut s, Duration::from_secs(10))
            .await
            .flatten()
            .unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(reply.status, status, "{what}");
        assert!(
            closes_while_dripping(&mut s, Duration::from_secs(10)).await,
            "{what}: connection still open 10 s after the answer, reading the body"
        );
    }
    // A fast sender after the 413: how much the server still takes (reported, not asserted).
    let mut s = stall(
        &app,
        [
            head(&writer).as_bytes(),
            format!("1001\r\n{}\r\n", "x".repeat(4097)).as_bytes(),
        ]
        .concat(),
    )
    .await;
    let _ = read_reply(&mut s, Duration::from_secs(10)).await;
    let chunk = [
        format!("{:x}\r\n", 64 * 1024).as_bytes(),
        &vec![b'x'; 64 * 1024],
        b"\r\n",
    ]
    .concat();
    let (mut sent, started) = (0usize, Instant::now());
    while sent < 256 * 1024 * 1024 && started.elapsed() < Duration::from_secs(10) {
        match tokio::time::timeout(Duration::from_secs(2), s.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            _ => break,
        }
    }
    eprintln!(
        "after a chunked 413 the server took {} KiB more in {:?}",
        sent / 1024,
        started.elapsed()
    );
    assert_intact(&app, &before).await;
    app.stop().await;
}

async fn metrics_labels_are_bounded_and_wrong_methods_answer_405(db: TestDb) {
    let app = start(db).await;
    for i in 0..300 {
        let method = format!("INVENTED{i}");
        let r = send(app.addr, &request(&method, b"/healthz", &[], b"")).await;
        refused(&method, r, &[400, 404, 405]);
    }
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("INVENTED"),
        "caller-chosen methods became labels ({} bytes of metrics)",
        metrics.len()
    );
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    // A known path with a method it does not take.
    for (method, path, allow) in [
        ("POST", "/healthz", "GET"),
        ("DELETE", "/v1/keys", "GET"),
        (
            "PATCH",
            "/v1/ns/rp/records/demographics",
            "PUT, GET, DELETE",
        ),
        ("GET", "/v1/ns/rp/reencrypt", "POST"),
        ("PUT", "/v1/credentials", "POST, GET"),
        ("INVENTED", "/v1/audit", "GET"),
    ] {
        let r = send(
            app.addr,
            &request(
                method,
                path.as_bytes(),
                &[("Authorization", &bearer(&app.tokens.admin))],
                b"",
            ),
        )
        .await;
        let r = refused(&format!("{method} {path}"), r, &[405]).expect("an answer");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
        assert_eq!(r.error_code().as_deref(), Some("method_not_allowed"));
    }
    app.stop().await;
}

async fn argon2_waits_are_bounded_and_unknown_ids_cost_the_same(db: TestDb) {
    let app = Arc::new(start(db).await);
    let before = seed(&app).await;
    let known_id = app.tokens.reader.split('_').nth(1).unwrap().to_owned();
    let secret = "A".repeat(43);
    // Well-shaped tokens: a known id with a wrong secret, and unknown ids. Both must queue for
    // Argon2 (so the queue bound shows), and neither may wait without limit. 600 at once keep
    // two verifiers busy well past the 5 s bound even with an optimised Argon2.
    const FLOOD: usize = 600;
    for (what, ids) in [
        ("known id", vec![known_id.clone(); FLOOD]),
        (
            "unknown ids",
            (0..FLOOD).map(|i| format!("{i:016x}")).collect::<Vec<_>>(),
        ),
    ] {
        let mut tasks = tokio::task::JoinSet::new();
        for id in ids {
            let token = bearer(&format!("zkv_{id}_{secret}"));
            let addr = app.addr;
            tasks.spawn(async move {
                send(
                    addr,
                    &request(
                        "GET",
                        RECORD.as_bytes(),
                        &[("Authorization", &token), ("Resident-Id", ID.as_bytes())],
                        b"",
                    ),
                )
                .await
            });
        }
        let (mut unauthorized, mut busy) = (0, 0);
        while let Some(r) = tasks.join_next().await {
            let r = r.unwrap().expect("answered");
            match r.status {
                401 => unauthorized += 1,
                503 => {
                    assert!(r.header("retry-after").is_some(), "503 without Retry-After");
                    assert_eq!(r.error_code().as_deref(), Some("busy"));
                    busy += 1;
                }
                other => panic!("{what}: {other}"),
            }
        }
        eprintln!("{what}: {unauthorized} × 401, {busy} × 503");
        assert!(
            busy > 0,
            "{what}: {FLOOD} concurrent verifications all waited for their turn ({unauthorized} × 401)"
        );
    }
    assert_intact(&app, &before).await;
}

async fn control_characters_in_paths_are_refused_before_audit(db: TestDb) {
    let app = start(db).await;
    let op = bearer(&app.tokens.operator);
    let all_ns = tokio::task::spawn_blocking({
        let v = app.vault.clone();
        move || {
            v.create_credential(
                &support::app::grant(&v, Role::Admin, None),
                "t",
                &[
                    zkvault::vault::Role::Reencrypt,
                    zkvault::vault::Role::Writer,
                    zkvault::vault::Role::Reader,
                ],
                &[],
            )
            .unwrap()
            .token
            .expose()
            .to_owned()
        }
    })
    .await
    .unwrap();
    let all_ns = bearer(&all_ns);
    let json = br#"{"resident_ids":[]}"#;
    let len = json.len().to_string();
    let mut sent = 0;
    for ns in [
        "%00",
        "rp%00",
        "a%0Ab",
        "r%0Dp",
        "%E2%80%AErp",
        "rp%E2%80%8B",
        "%1B%5B31m",
    ] {
        let cases: Vec<(&str, String, &Vec<u8>)> = vec![
            ("POST", format!("/v1/ns/{ns}/masters/rotate"), &op),
            ("POST", format!("/v1/ns/{ns}/masters/1/compromise"), &op),
            ("POST", format!("/v1/ns/{ns}/masters/1/destroy"), &op),
            ("POST", format!("/v1/ns/{ns}/reencrypt"), &all_ns),
            ("GET", format!("/v1/ns/{ns}/records"), &all_ns),
            ("GET", format!("/v1/ns/{ns}/records/demographics"), &all_ns),
            ("DELETE", format!("/v1/ns/{ns}/resident"), &all_ns),
        ];
        for (method, path, token) in cases {
            let headers: RawHeaders = vec![
                ("Authorization", token),
                ("Resident-Id", ID.as_bytes()),
                ("Content-Type", b"application/json"),
                ("Content-Length", len.as_bytes()),
            ];
            let r = send(app.addr, &request(method, path.as_bytes(), &headers, json)).await;
            refused_with(&format!("{method} {path}"), r, &[400], "bad_request");
            sent += 1;
        }
    }
    let (_, recorded) = await_refusals(&app, &["bad_request"], sent).await;
    assert_eq!(
        recorded, sent,
        "every refusal is recorded (PostgreSQL refuses NUL in text)"
    );
    for row in audit_rows(&app).await {
        assert!(
            !row.chars().any(|c| c.is_control()
                || ('\u{200b}'..='\u{206f}').contains(&c)
                || c == '\u{feff}'),
            "control or format character in the audit trail: {row:?}"
        );
    }
    let v = app.vault.clone();
    assert_eq!(
        tokio::task::spawn_blocking(move || v.verify_audit().unwrap())
            .await
            .unwrap()
            .first_break,
        None
    );
    app.stop().await;
}

async fn an_unscoped_token(app: &TestApp, roles: &'static [zkvault::vault::Role]) -> String {
    let v = app.vault.clone();
    tokio::task::spawn_blocking(move || {
        v.create_credential(&support::app::grant(&v, Role::Admin, None), "t", roles, &[])
            .unwrap()
            .token
            .expose()
            .to_owned()
    })
    .await
    .unwrap()
}

async fn reencrypt_contract(db: TestDb) {
    let app = start(db).await;
    let t = bearer(&an_unscoped_token(&app, &[zkvault::vault::Role::Reencrypt]).await);
    let post = |ns: &str, body: &[u8]| {
        let len = body.len().to_string();
        request(
            "POST",
            format!("/v1/ns/{ns}/reencrypt").as_bytes(),
            &[
                ("Authorization", &t),
                ("Content-Type", b"application/json"),
                ("Content-Length", len.as_bytes()),
            ],
            body,
        )
    };
    let r = send(app.addr, &post("nope", br#"{"resident_ids": []}"#))
        .await
        .expect("answered");
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (404, Some("unknown_namespace")),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // The largest valid batch: 1,000 IDs of 64 characters.
    let ids: Vec<String> = (0..1000).map(|i| format!("\"{i:064}\"")).collect();
    let body = format!(r#"{{"resident_ids":[{}]}}"#, ids.join(","));
    let r = send(app.addr, &post("rp", body.as_bytes()))
        .await
        .expect("answered");
    assert_eq!(
        r.status,
        200,
        "{} bytes: {}",
        body.len(),
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap()["not_found"],
        1000
    );
    app.stop().await;
}

async fn path_errors_never_echo_the_value(db: TestDb) {
    let app = start(db).await;
    let op = bearer(&app.tokens.operator);
    for path in [
        "/v1/ns/rp/masters/4930098371/compromise",
        "/v1/ns/rp/masters/x4930098371/destroy",
        "/v1/ns/rp/masters/-4930098371/destroy",
    ] {
        let r = send(
            app.addr,
            &request("POST", path.as_bytes(), &[("Authorization", &op)], b""),
        )
        .await
        .expect("answered");
        assert_eq!(r.status, 400, "{path}");
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            !body.contains("4930098371"),
            "{path}: the value is echoed: {body}"
        );
    }
    app.stop().await;
}

async fn unauthenticated_requests_are_audited_in_aggregate(db: TestDb) {
    let app = start(db).await;
    let started = Instant::now();
    for i in 0..50 {
        // One in ten is shaped like a real token and costs an Argon2 run (slow in a debug build).
        let auth: &[u8] = match i % 10 {
            0 => b"Bearer zkv_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            1..=5 => b"Basic x",
            _ => b"Bearer not-a-token",
        };
        let r = send(
            app.addr,
            &request(
                "GET",
                RECORD.as_bytes(),
                &[("Authorization", auth), ("Resident-Id", ID.as_bytes())],
                b"",
            ),
        )
        .await;
        refused_with("no credential", r, &[401], "unauthenticated");
    }
    let (rows, refused) = await_refusals(&app, &["unauthenticated"], 50).await;
    assert_eq!(refused, 50, "every 401 is recorded");
    // They share one key: at most one row per flush interval they spanned, never one each.
    let intervals = (started.elapsed().as_secs_f64()
        / zkvault::vault::REFUSAL_INTERVAL.as_secs_f64())
    .ceil() as usize
        + 1;
    assert!(
        rows <= intervals.min(10),
        "{rows} rows for 50 refusals over {intervals} intervals"
    );
    app.stop().await;
}

async fn unconditional_writes_under_contention_all_succeed(db: TestDb) {
    let app = Arc::new(start(db).await);
    app.put("rp", "contended", ID, b"0").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let app = app.clone();
        tasks.spawn(async move {
            app.put("rp", "contended", ID, i.to_string().as_bytes())
                .await
                .status()
                .as_u16()
        });
    }
    let mut statuses = Vec::new();
    while let Some(s) = tasks.join_next().await {
        statuses.push(s.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == 200),
        "32 parallel PUTs without If-Match: {statuses:?}"
    );
    let r = app.get("rp", "contended", ID).await;
    assert_eq!(r.headers()["record-revision"], "33");
}

async fn if_match_star_means_any_current_representation(db: TestDb) {
    let app = start(db).await;
    seed(&app).await;
    let put = |name: &str| {
        app.req(
            reqwest::Method::PUT,
            &format!("/v1/ns/rp/records/{name}"),
            &app.tokens.writer,
            Some(ID),
        )
        .header("If-Match", "*")
        .body("new")
        .send()
    };
    assert_eq!(
        put("absent").await.unwrap().status(),
        412,
        "no current representation"
    );
    assert_eq!(
        put("demographics").await.unwrap().status(),
        200,
        "any current representation"
    );
    assert_eq!(
        &app.get("rp", "demographics", ID)
            .await
            .bytes()
            .await
            .unwrap()[..],
        b"new"
    );
    assert_eq!(app.get("rp", "absent", ID).await.status(), 404);
    app.stop().await;
}

async fn the_auth_scheme_is_case_insensitive(db: TestDb) {
    let app = start(db).await;
    let before = seed(&app).await;
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let auth = format!("{scheme} {}", app.tokens.reader);
        let r = send(
            app.addr,
            &request(
                "GET",
                RECORD.as_bytes(),
                &[
                    ("Authorization", auth.as_bytes()),
                    ("Resident-Id", ID.as_bytes()),
                ],
                b"",
            ),
        )
        .await;
        assert_eq!(r.expect("answered").status, 200, "{scheme}");
    }
    assert_intact(&app, &before).await;
    app.stop().await;
}
