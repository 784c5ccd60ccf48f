//! Two instances sharing one PostgreSQL database (and keystore), as a cluster runs: revocation
//! and master rotation made on one are in force on the other within one second.

mod support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use support::app::TestApp;
use support::db::TestDb;

const ID: &str = "4930098371";

fn pg() -> Option<TestDb> {
    TestDb::postgres()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_on_one_instance_is_enforced_by_the_other_within_a_second() {
    let Some(db) = pg() else { return };
    let a = TestApp::start(db).await;
    let b = a.start_peer().await;
    a.put("rp", "demographics", ID, b"x").await;

    // B has verified (and cached) the reader's token.
    let read_on_b = || {
        a.client
            .get(b.url("/v1/ns/rp/records/demographics"))
            .bearer_auth(&a.tokens.reader)
            .header("Resident-Id", ID)
            .send()
    };
    assert_eq!(read_on_b().await.unwrap().status(), StatusCode::OK);

    let id = a.tokens.reader.split('_').nth(1).unwrap().to_owned();
    let r = a
        .req(
            Method::DELETE,
            &format!("/v1/credentials/{id}"),
            &a.tokens.admin,
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let revoked_at = Instant::now();
    loop {
        let status = read_on_b().await.unwrap().status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "instance B still accepted the token after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    println!(
        "revocation reached instance B after {:?}",
        revoked_at.elapsed()
    );
    b.handle.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_on_one_instance_directs_writes_on_the_other_within_a_second() {
    let Some(db) = pg() else { return };
    let a = TestApp::start(db).await;
    let b = a.start_peer().await;
    let put_on_b = |name: &'static str| {
        a.client
            .put(b.url(&format!("/v1/ns/rp/records/{name}")))
            .bearer_auth(&a.tokens.writer)
            .header("Resident-Id", ID)
            .body("x")
            .send()
    };
    let first: serde_json::Value = put_on_b("one").await.unwrap().json().await.unwrap();
    assert_eq!(first["master_version"], 1);
    let r = a
        .req(
            Method::POST,
            "/v1/ns/rp/masters/rotate",
            &a.tokens.operator,
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later: serde_json::Value = put_on_b("two").await.unwrap().json().await.unwrap();
    assert_eq!(later["master_version"], 2);
    // And B reads what A wrote under the new master, and vice versa.
    assert_eq!(a.get("rp", "two", ID).await.status(), StatusCode::OK);
    b.handle.stop(false).await;
}

/// The test policy with lazy re-encryption on in `rp`: a read on an old master moves the record.
fn lazy_policy() -> String {
    support::app::POLICY.replace(
        "[namespaces.rp]\n",
        "[namespaces.rp]\nlazy_reencrypt = true\n",
    )
}

/// A shred on A used to be undone by B: B still had the destroyed master cached (up to the
/// cache TTL), served the records with 200, and its lazy move rewrapped them onto the active
/// master, so A served them again too. Now B answers 410 within a second, never 200 after its
/// first 410, and no record leaves the destroyed master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shred_on_one_instance_is_final_on_every_instance_within_a_second() {
    let Some(db) = pg() else { return };
    let a = TestApp::start_with(db, 1024 * 1024, &lazy_policy()).await;
    let b = a.start_peer().await;
    let names: Vec<String> = (0..5).map(|i| format!("r{i}")).collect();
    for n in &names {
        assert!(a.put("rp", n, ID, b"secret").await.status().is_success());
    }
    let get_on_b = |name: String| {
        a.client
            .get(b.url(&format!("/v1/ns/rp/records/{name}")))
            .bearer_auth(&a.tokens.reader)
            .header("Resident-Id", ID)
            .send()
    };
    for n in &names {
        assert_eq!(get_on_b(n.clone()).await.unwrap().status(), StatusCode::OK);
        // B caches master v1
    }
    let op = &a.tokens.operator;
    assert_eq!(
        a.req(Method::POST, "/v1/ns/rp/masters/rotate", op, None)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let r = a
        .req(
            Method::POST,
            "/v1/ns/rp/masters/1/destroy?shred=true",
            op,
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let destroyed_at = Instant::now();
    let mut gone = std::collections::BTreeSet::new();
    while gone.len() < names.len() || destroyed_at.elapsed() < Duration::from_millis(1500) {
        for n in &names {
            let status = get_on_b(n.clone()).await.unwrap().status();
            if status == StatusCode::GONE {
                gone.insert(n.clone());
            } else {
                assert_eq!(status, StatusCode::OK);
                assert!(
                    !gone.contains(n),
                    "{n}: B served it again after answering 410"
                );
                assert!(
                    destroyed_at.elapsed() < Duration::from_secs(1),
                    "{n}: B still served a shredded record after 1 s"
                );
            }
        }
    }
    for n in &names {
        assert_eq!(
            a.get("rp", n, ID).await.status(),
            StatusCode::GONE,
            "{n} un-shredded on A"
        );
    }
    let url = a.db.url().to_owned();
    let moved = tokio::task::spawn_blocking(move || {
        support::app::query_strings(
            &url,
            "SELECT count(*)::text AS v FROM records WHERE master_version <> 1",
        )
    })
    .await
    .unwrap();
    assert_eq!(
        moved,
        vec!["0"],
        "a shredded record was moved onto a live master"
    );
    b.handle.stop(false).await;
}

/// Compromise and KEK rotation on A reach B's cached keys within a second: B re-keys (never
/// merely rewraps) the records of the compromised master it reads, and unwraps under the new KEK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compromise_and_kek_rotation_on_one_instance_reach_the_other_within_a_second() {
    let Some(db) = pg() else { return };
    let a = TestApp::start_with(db, 1024 * 1024, &lazy_policy()).await;
    let b = a.start_peer().await;
    assert!(a
        .put("rp", "demographics", ID, b"secret")
        .await
        .status()
        .is_success());
    let get_on_b = || {
        a.client
            .get(b.url("/v1/ns/rp/records/demographics"))
            .bearer_auth(&a.tokens.reader)
            .header("Resident-Id", ID)
            .send()
    };
    assert_eq!(get_on_b().await.unwrap().status(), StatusCode::OK);
    let body_of = |url: String| async move {
        tokio::task::spawn_blocking(move || support::app::query_strings(&url, "SELECT master_version::text || ':' || encode(body_ciphertext, 'hex') AS v FROM records")).await.unwrap()
    };
    let before = body_of(a.db.url().to_owned()).await;
    let op = &a.tokens.operator;
    assert_eq!(
        a.req(Method::POST, "/v1/keys/kek/rotate", op, None)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        a.req(Method::POST, "/v1/ns/rp/masters/1/compromise", op, None)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(get_on_b().await.unwrap().status(), StatusCode::OK);
    let after = body_of(a.db.url().to_owned()).await;
    assert!(
        after[0].starts_with("2:"),
        "B moved the record to the new master: {after:?}"
    );
    assert_ne!(
        before[0].split(':').nth(1),
        after[0].split(':').nth(1),
        "B re-keyed (new body ciphertext), not just rewrapped"
    );
    b.handle.stop(false).await;
}

/// One damaged row elsewhere must not stop the syncs that keep a peer current. A credential
/// row whose roles text names no role, and a master row of another namespace whose state text
/// names no state, used to make the whole read fail on every tick (after the columns became
/// typed): a revoked token and a shredded master stayed usable on the peer until its caches
/// expired. Now the revocation and the shred are in force on the peer within a second, and the
/// damaged rows themselves are refused where they are used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_row_elsewhere_never_stops_revocation_or_shredding_on_a_peer() {
    let Some(db) = pg() else { return };
    let a = TestApp::start(db).await;
    let b = a.start_peer().await;
    assert!(a.put("rp", "r0", ID, b"secret").await.status().is_success());
    let get_on_b = |token: &str| {
        a.client
            .get(b.url("/v1/ns/rp/records/r0"))
            .bearer_auth(token)
            .header("Resident-Id", ID)
            .send()
    };
    // B has verified the reader's token and cached rp's master v1.
    assert_eq!(
        get_on_b(&a.tokens.reader).await.unwrap().status(),
        StatusCode::OK
    );
    let writer_id = a.tokens.uin_writer.split('_').nth(1).unwrap();
    support::app::execute_sql(
        a.db.url(),
        &format!(
            "UPDATE credentials SET roles = 'auditor,superuser' WHERE id = '{writer_id}'; \
             UPDATE masters SET state = 'Active' WHERE namespace = 'uin'"
        ),
    );

    let reader_id = a.tokens.reader.split('_').nth(1).unwrap();
    let revoke = a
        .req(
            Method::DELETE,
            &format!("/v1/credentials/{reader_id}"),
            &a.tokens.admin,
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    let op = &a.tokens.operator;
    for path in [
        "/v1/ns/rp/masters/rotate",
        "/v1/ns/rp/masters/1/destroy?shred=true",
    ] {
        let r = a.req(Method::POST, path, op, None).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let changed = Instant::now();
    let reader = a.tokens.reader.clone();
    let admin_writer = a.tokens.writer.clone();
    loop {
        let revoked = get_on_b(&reader).await.unwrap().status() == StatusCode::UNAUTHORIZED;
        let shredded = get_on_b(&admin_writer).await.unwrap().status() == StatusCode::GONE;
        if revoked && shredded {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "peer still current after 1 s: revoked={revoked} shredded={shredded}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The damaged rows are refused where they are used, on both instances.
    for base in [a.url(""), b.url("")] {
        let r = a
            .client
            .get(format!("{base}/v1/ns/uin/records"))
            .bearer_auth(&a.tokens.uin_writer)
            .header("Resident-Id", "234567890124")
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == StatusCode::UNAUTHORIZED || r.status().is_server_error(),
            "{}",
            r.status()
        );
        assert!(!r.text().await.unwrap().contains("superuser"));
    }
    b.handle.stop(false).await;
}
