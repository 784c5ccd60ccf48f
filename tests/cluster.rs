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
    let read_on_b = || a.client.get(b.url("/v1/ns/rp/records/demographics")).bearer_auth(&a.tokens.reader).header("Resident-Id", ID).send();
    assert_eq!(read_on_b().await.unwrap().status(), StatusCode::OK);

    let id = a.tokens.reader.split('_').nth(1).unwrap().to_owned();
    let r = a.req(Method::DELETE, &format!("/v1/credentials/{id}"), &a.tokens.admin, None).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let revoked_at = Instant::now();
    loop {
        let status = read_on_b().await.unwrap().status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(revoked_at.elapsed() < Duration::from_secs(1), "instance B still accepted the token after 1 s");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    println!("revocation reached instance B after {:?}", revoked_at.elapsed());
    b.handle.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_on_one_instance_directs_writes_on_the_other_within_a_second() {
    let Some(db) = pg() else { return };
    let a = TestApp::start(db).await;
    let b = a.start_peer().await;
    let put_on_b = |name: &'static str| {
        a.client.put(b.url(&format!("/v1/ns/rp/records/{name}"))).bearer_auth(&a.tokens.writer).header("Resident-Id", ID).body("x").send()
    };
    let first: serde_json::Value = put_on_b("one").await.unwrap().json().await.unwrap();
    assert_eq!(first["master_version"], 1);
    let r = a.req(Method::POST, "/v1/ns/rp/masters/rotate", &a.tokens.operator, None).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later: serde_json::Value = put_on_b("two").await.unwrap().json().await.unwrap();
    assert_eq!(later["master_version"], 2);
    // And B reads what A wrote under the new master, and vice versa.
    assert_eq!(a.get("rp", "two", ID).await.status(), StatusCode::OK);
    b.handle.stop(false).await;
}
