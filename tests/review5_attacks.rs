//! A fifth review of the database-writer guarantees (docs/threat-model.md §1). Each test failed
//! when the review was written, and is written as what should happen.

mod support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use support::app::TestApp;
use support::db::TestDb;
use support::writer::{hold, verify, wait_for_lock_waiters};

on_both_backends!(
    a_record_written_during_an_erasure_is_erased_or_ordered_after_it,
    audit_verify_beside_writes_of_one_record_reports_no_break,
);

const ID: &str = "4930098371";

async fn put_ok(app: &TestApp, name: &str, body: &[u8]) {
    let r = app.put("rp", name, ID, body).await;
    assert!(r.status().is_success(), "{}", r.status());
}

/// `Store::erase_resident` is one `DELETE … WHERE namespace AND blind_index`: nothing stops a
/// PUT of a *new* record of the resident from committing while the DELETE runs. In PostgreSQL
/// (READ COMMITTED) a DELETE that waits on a row lock of one of the resident's records — here a
/// session holding it, as any concurrent PUT of that record does until it commits — keeps the
/// snapshot it began with, so a record inserted and committed meanwhile is not deleted. That
/// PUT answered 201 before the erasure answered, and its audit entry is timed before the
/// erasure's: the trail says the record was erased, the erasure answered 200, yet the
/// resident's record is still there and readable. `audit verify` then reports it "restored from
/// a backup" — tampering, with no writer — for good, and as the first break.
async fn a_record_written_during_an_erasure_is_erased_or_ordered_after_it(db: TestDb) {
    if !db.is_postgres() {
        return;
    }
    let app = TestApp::start(db).await;
    put_ok(&app, "r1", b"1").await;
    // A concurrent write of r1 holds its row lock (here: a session standing in for it).
    let (release, holder) = hold(
        app.db.url(),
        "SELECT name FROM records WHERE name = 'r1' FOR UPDATE",
    );
    let erase = tokio::spawn({
        let req = app.req(
            Method::DELETE,
            "/v1/ns/rp/resident",
            &app.tokens.writer,
            Some(ID),
        );
        async move { req.send().await.unwrap().status() }
    });
    wait_for_lock_waiters(&app, 1, "the erasure").await;
    // The erasure has begun (its DELETE waits on r1). A new record of the resident is written
    // meanwhile: it waits for the erasure (one resident's changes are serialised), or the
    // erasure deletes it; either way the trail and the table agree.
    let put = tokio::spawn({
        let req = app
            .req(
                Method::PUT,
                "/v1/ns/rp/records/r2",
                &app.tokens.writer,
                Some(ID),
            )
            .header("Content-Type", "application/json")
            .body("2");
        async move {
            let status = req.send().await.unwrap().status();
            (status, Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    release.send(()).unwrap();
    tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();
    assert_eq!(erase.await.unwrap(), StatusCode::OK);
    let erased_at = Instant::now();
    let (put_status, put_at) = put.await.unwrap();
    assert!(put_status.is_success(), "{put_status}");
    let after = app.get("rp", "r2", ID).await.status();
    let report = verify(&app).await;
    assert!(report.first_break.is_none(), "{:?}", report.first_break);
    if after == StatusCode::OK {
        assert!(
            put_at >= erased_at - Duration::from_millis(50),
            "r2 survives the erasure, yet its write was answered before the erasure was"
        );
    } else {
        assert_eq!(after, StatusCode::NOT_FOUND);
    }
}

/// `check_records` reads a record that seems wrong again (`record_position`) and only then
/// folds in the entries appended since the verification began (`fold_since`): a write of that
/// record committing between the two makes the trail newer than the row read, and an ordinary
/// write under live traffic is reported as "an older copy was put back". Ordinary traffic on
/// one record, no writer.
async fn audit_verify_beside_writes_of_one_record_reports_no_break(db: TestDb) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let app = Arc::new(TestApp::start(db).await);
    put_ok(&app, "hot", b"\"v\"").await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = app.put("rp", "hot", ID, b"\"w\"").await;
                    assert!(r.status().is_success(), "{}", r.status());
                }
            })
        })
        .collect();
    let mut breaks = Vec::new();
    for _ in 0..100 {
        if let Some(b) = verify(&app).await.first_break {
            breaks.push(b);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(verify(&app).await.first_break, None);
    assert!(
        breaks.is_empty(),
        "{} of 100 verifications beside writes of one record reported a break, e.g. {:?}",
        breaks.len(),
        breaks[0]
    );
}
