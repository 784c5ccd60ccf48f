//! A sixth review: the group commit (src/storage/group_commit.rs) and the PostgreSQL bulk move
//! (`move_on_postgres`). Tests marked FIXED failed when the review was written (each names the
//! fix); the others are regression tests for promises that held.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::app::TestApp;
use support::db::TestDb;
use support::writer::{hold, strings, verify, wait_for_lock_waiters};
use zkvault::vault::Actor;

on_both_backends!(
    bulk_reencrypt_racing_multi_resident_batches_never_fails,
    same_resident_put_delete_erase_across_two_instances_verifies,
    conditional_writes_in_one_batch_keep_their_semantics,
);

const RESIDENTS: usize = 40;

fn resident(i: usize) -> String {
    format!("{}", 7_000_000_000u64 + i as u64 * 7919)
}

async fn post(app: &TestApp, path: &str, token: &str) -> (StatusCode, Value) {
    let r = app
        .req(Method::POST, path, token, None)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// FIXED (PostgreSQL). A batch applies the record changes of many residents in the order of
/// their resident-lock keys (a hash), taking each record's row lock as it goes; a bulk move
/// (`move_on_postgres`) locks all its rows up front in id order. The two orders differ, so a
/// batch holding record A's row and wanting B's meets a bulk move holding B and wanting A: a
/// deadlock. PostgreSQL breaks it after `deadlock_timeout` (every write in the batch stalls a
/// second) by aborting one side — usually the bulk move, which waited first — and
/// `POST /reencrypt` answers 503 "deadlock detected". Before the group commit a write touched
/// one resident per transaction, so this cycle could not form with PUTs. FIXED: a bulk move
/// takes its residents' advisory locks in key order before any row, as a batch does.
async fn bulk_reencrypt_racing_multi_resident_batches_never_fails(db: TestDb) {
    let app = Arc::new(TestApp::start(db).await);
    let ids: Vec<String> = (0..RESIDENTS).map(resident).collect();
    for id in &ids {
        assert!(app.put("rp", "r", id, b"{}").await.status().is_success());
    }
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(6) && failures.lock().unwrap().is_empty() {
        round += 1;
        let (status, _) = post(&app, "/v1/ns/rp/masters/rotate", &app.tokens.operator).await;
        assert_eq!(status, StatusCode::OK, "rotate");
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..12 {
            let (app, stop, ids, failures) =
                (app.clone(), stop.clone(), ids.clone(), failures.clone());
            writers.push(tokio::spawn(async move {
                let mut i = w * 7;
                while !stop.load(Ordering::SeqCst) {
                    i = (i + 13) % RESIDENTS;
                    let r = app
                        .put("rp", "r", &ids[i], format!("{{\"w\":{w}}}").as_bytes())
                        .await;
                    let s = r.status();
                    if !(s.is_success() || s == StatusCode::CONFLICT) {
                        let text = r.text().await.unwrap_or_default();
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("PUT answered {s}: {text}"));
                    }
                }
            }));
        }
        for _ in 0..3 {
            let r = app
                .req(
                    Method::POST,
                    "/v1/ns/rp/reencrypt",
                    &app.tokens.reencrypt,
                    None,
                )
                .json(&json!({ "resident_ids": ids }))
                .send()
                .await
                .unwrap();
            let s = r.status();
            if !(s == StatusCode::OK || s == StatusCode::CONFLICT) {
                let text = r.text().await.unwrap_or_default();
                failures
                    .lock()
                    .unwrap()
                    .push(format!("round {round}: reencrypt answered {s}: {text}"));
            }
        }
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.await.unwrap();
        }
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "after {round} rounds: {}",
        failures.join("\n")
    );
}

/// PUT, DELETE and erase of the same few residents race on two instances (so in one batch and
/// across two batches of two `Store`s), beside audited reads; afterwards `audit verify` finds
/// no break: every record's last logged write matches the table, erasures hold.
async fn same_resident_put_delete_erase_across_two_instances_verifies(db: TestDb) {
    let app = Arc::new(TestApp::start(db).await);
    let peer = Arc::new(app.start_peer().await);
    let stop = Arc::new(AtomicBool::new(false));
    let bad: Arc<Mutex<Vec<String>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..12usize {
        let (app, peer, stop, bad, done) = (
            app.clone(),
            peer.clone(),
            stop.clone(),
            bad.clone(),
            done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let id = resident(i % 3);
                let name = format!("r{}", i % 4);
                let base = if t % 2 == 0 {
                    app.url("")
                } else {
                    peer.url("")
                };
                let rec = format!("{base}/v1/ns/rp/records/{name}");
                let (req, ok): (_, &[StatusCode]) = match (t + i) % 5 {
                    0 | 1 => (
                        app.client
                            .put(&rec)
                            .bearer_auth(&app.tokens.writer)
                            .header("Content-Type", "application/json")
                            .body(format!("{{\"t\":{t},\"i\":{i}}}")),
                        &[StatusCode::OK, StatusCode::CREATED, StatusCode::CONFLICT],
                    ),
                    2 => (
                        app.client.delete(&rec).bearer_auth(&app.tokens.writer),
                        &[
                            StatusCode::OK,
                            StatusCode::NO_CONTENT,
                            StatusCode::NOT_FOUND,
                        ],
                    ),
                    3 => (
                        app.client.get(&rec).bearer_auth(&app.tokens.reader),
                        &[StatusCode::OK, StatusCode::NOT_FOUND],
                    ),
                    _ => (
                        app.client
                            .delete(format!("{base}/v1/ns/rp/resident"))
                            .bearer_auth(&app.tokens.writer),
                        &[StatusCode::OK, StatusCode::NO_CONTENT],
                    ),
                };
                let r = req.header("Resident-Id", &id).send().await.unwrap();
                let s = r.status();
                if !ok.contains(&s) {
                    let text = r.text().await.unwrap_or_default();
                    bad.lock().unwrap().push(format!("{s}: {text}"));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let bad = bad.lock().unwrap().clone();
    assert!(
        bad.is_empty(),
        "{} unexpected answers, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert!(
        done.load(Ordering::Relaxed) > 100,
        "too little traffic to mean anything"
    );
    let v = verify(&app).await;
    assert_eq!(
        v.first_break,
        None,
        "after {} requests",
        done.load(Ordering::Relaxed)
    );
    peer.handle.stop(false).await;
}

/// Many `If-None-Match: *` creates of one record, then many `If-Match` replaces carrying the
/// same ETag, on two instances at once: exactly one of each wins, the others answer 412.
async fn conditional_writes_in_one_batch_keep_their_semantics(db: TestDb) {
    let app = Arc::new(TestApp::start(db).await);
    let peer = Arc::new(app.start_peer().await);
    for round in 0..5 {
        let id = resident(100 + round);
        let send = |tag: Option<String>, n: usize| {
            let (app, peer, id) = (app.clone(), peer.clone(), id.clone());
            async move {
                let base = if n.is_multiple_of(2) {
                    app.url("")
                } else {
                    peer.url("")
                };
                let mut r = app
                    .client
                    .put(format!("{base}/v1/ns/rp/records/c"))
                    .bearer_auth(&app.tokens.writer)
                    .header("Resident-Id", &id)
                    .header("Content-Type", "application/json")
                    .body(format!("{{\"n\":{n}}}"));
                r = match tag {
                    None => r.header("If-None-Match", "*"),
                    Some(t) => r.header("If-Match", t),
                };
                let r = r.send().await.unwrap();
                let etag = r
                    .headers()
                    .get("etag")
                    .map(|v| v.to_str().unwrap().to_owned());
                (r.status(), etag, n)
            }
        };
        let creates: Vec<_> = (0..16).map(|n| tokio::spawn(send(None, n))).collect();
        let mut won = Vec::new();
        for c in creates {
            let (s, etag, n) = c.await.unwrap();
            match s {
                StatusCode::CREATED => won.push((etag.unwrap(), n)),
                s => assert_eq!(s, StatusCode::PRECONDITION_FAILED, "create answered {s}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: creates that won: {won:?}");
        let tag = won[0].0.clone();
        let replaces: Vec<_> = (0..16)
            .map(|n| tokio::spawn(send(Some(tag.clone()), 100 + n)))
            .collect();
        let mut replaced = Vec::new();
        for r in replaces {
            let (s, _, n) = r.await.unwrap();
            match s {
                s if s.is_success() => replaced.push(n),
                s => assert_eq!(s, StatusCode::PRECONDITION_FAILED, "replace answered {s}"),
            }
        }
        assert_eq!(
            replaced.len(),
            1,
            "round {round}: replaces that won: {replaced:?}"
        );
        let body = app.get("rp", "c", &id).await.text().await.unwrap();
        assert_eq!(body, format!("{{\"n\":{}}}", replaced[0]));
    }
    assert_eq!(verify(&app).await.first_break, None);
    peer.handle.stop(false).await;
}

/// FIXED (PostgreSQL). `commit_batch` checks a write's master BEFORE the change, trusting
/// `LOCK TABLE records IN ROW EXCLUSIVE MODE` to hold every master change off until the batch
/// commits. But a master rotation (`rotate_master` → `unit_of_work` → `set_master_state`)
/// takes no `SHARE` lock on `records`: it turns the checked master decrypt-only while the
/// batch is still running, and the write then lands under it. (Before, the check came after
/// the change, so a rotation committed meanwhile was seen and the write resealed.) The
/// scheduler's retirement counts the master's records outside its transaction, finds none
/// (the write is not committed yet), waits for the batch on `SHARE` and retires the master:
/// an acknowledged record ends up under a retired master, which can no longer be re-encrypted
/// away from it (not live) and which is destroyed after `destroy_after_retired_days`.
/// FIXED: `set_master_state` takes `SHARE` on `records` too, so a rotation waits for the batch.
///
/// The batch is held between its master check and its change by a session holding the
/// record's row lock, as any concurrent bulk move or lazy re-key of that record does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_rotated_during_a_batch_never_receives_its_write() {
    let Some(db) = TestDb::postgres() else { return };
    let app = TestApp::start(db).await;
    assert!(app.put("rp", "r", ID6, b"1").await.status().is_success());
    // r stays on the old master; the new active one protects nothing yet.
    let (status, _) = post(&app, "/v1/ns/rp/masters/rotate", &app.tokens.operator).await;
    assert_eq!(status, StatusCode::OK);
    let target = strings(
        &app,
        "SELECT CAST(MAX(version) AS TEXT) AS v FROM masters WHERE namespace = 'rp'",
    )
    .await[0]
        .clone();
    let (release, holder) = hold(app.db.url(), "SELECT id FROM records FOR UPDATE");
    let put = tokio::spawn({
        let req = app
            .req(
                Method::PUT,
                "/v1/ns/rp/records/r",
                &app.tokens.writer,
                Some(ID6),
            )
            .header("Content-Type", "application/json")
            .body("2");
        async move { req.send().await.unwrap().status() }
    });
    // The batch has checked master `target` (active) and waits on r's row.
    wait_for_lock_waiters(&app, 1, "the PUT").await;
    // The rotation must wait for the batch (it writes under the master being rotated away),
    // and the scheduler's retirement, running meanwhile, must not retire that master.
    let rotate = tokio::spawn({
        let req = app.req(
            Method::POST,
            "/v1/ns/rp/masters/rotate",
            &app.tokens.operator,
            None,
        );
        async move { req.send().await.unwrap().status() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let vault = app.vault.clone();
    let retire = tokio::task::spawn_blocking(move || {
        vault
            .retire_empty_masters(&Actor::new("scheduler", "review6"))
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    release.send(()).unwrap();
    tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();
    let put_status = put.await.unwrap();
    assert_eq!(rotate.await.unwrap(), StatusCode::OK);
    let retired = retire.await.unwrap();
    assert!(put_status.is_success(), "PUT answered {put_status}");
    // Written under `target` before the rotation committed: `target` now only decrypts, and
    // must not be retired while it protects the record.
    let under = strings(
        &app,
        "SELECT CAST(r.master_version AS TEXT) || ' ' || m.state AS v FROM records r \
         JOIN masters m ON m.namespace = r.namespace AND m.version = r.master_version",
    )
    .await;
    assert!(
        under
            .iter()
            .all(|u| u.ends_with(" active") || u.ends_with(" decrypt_only")),
        "the PUT answered {put_status} after master v{target} was rotated away; the record is \
         under {under:?}; retired meanwhile: {retired:?}"
    );
}

const ID6: &str = "6120098371";

/// FIXED (PostgreSQL, processes sharing a fixed audit chain: the CLI's `cli:<host>`). A batch
/// takes `ROW EXCLUSIVE` on `records` and THEN locks its chain's head (`check_head`, `FOR
/// UPDATE`); a master change (`update_master_if`: compromise, retire, destroy) locks its
/// chain's head first (`Store::write`) and THEN asks for `SHARE` on `records`. Two processes
/// appending to the same chain take the two locks in opposite orders: a deadlock, which
/// PostgreSQL breaks after a second by failing one side — the batch (retried, so every writer
/// stalls) or the operator's master change (503). FIXED: a batch locks its head first too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_changes_and_batches_on_one_shared_chain_never_deadlock() {
    let Some(db) = TestDb::postgres() else { return };
    let app = Arc::new(
        TestApp::start_configured(db, support::app::POLICY, |c| {
            c.audit_chain = Some("cli:review6".into())
        })
        .await,
    );
    let peer = Arc::new(app.start_peer().await);
    let stop = Arc::new(AtomicBool::new(false));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..8usize {
        let (app, peer, stop, failures) =
            (app.clone(), peer.clone(), stop.clone(), failures.clone());
        writers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::SeqCst) {
                i += 8;
                let r = app
                    .client
                    .put(peer.url("/v1/ns/rp/records/r"))
                    .bearer_auth(&app.tokens.writer)
                    .header("Resident-Id", resident(i % RESIDENTS))
                    .header("Content-Type", "application/json")
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
                let s = r.status();
                if !(s.is_success() || s == StatusCode::CONFLICT) {
                    failures.lock().unwrap().push(format!("PUT answered {s}"));
                }
            }
        }));
    }
    let started = Instant::now();
    let mut slow = Vec::new();
    let mut changes = 0;
    while started.elapsed() < Duration::from_secs(6) && failures.lock().unwrap().is_empty() {
        let active = strings(
            &app,
            "SELECT CAST(version AS TEXT) AS v FROM masters WHERE namespace = 'rp' AND state = 'active'",
        )
        .await;
        let t = Instant::now();
        let (s, body) = post(
            &app,
            &format!("/v1/ns/rp/masters/{}/compromise", active[0]),
            &app.tokens.operator,
        )
        .await;
        changes += 1;
        if t.elapsed() > Duration::from_millis(900) {
            slow.push(t.elapsed());
        }
        if !(s == StatusCode::OK || s == StatusCode::CONFLICT) {
            failures
                .lock()
                .unwrap()
                .push(format!("compromise answered {s}: {body}"));
        }
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty() && slow.is_empty(),
        "after {changes} master changes: failures {failures:?}; master changes that stalled \
         on a deadlock: {slow:?}"
    );
    peer.handle.stop(false).await;
}
