//! Third review of the database-writer guarantees (docs/threat-model.md §1 "With write access
//! as well"), on the second review's fixes. Each test is an attack or a legitimate flow that
//! went wrong when the review was written (each failed then), written as what should happen.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use support::app::{grant, TestApp};
use support::db::TestDb;
use support::writer::{hold, sql, strings, verify, wait_for_lock_waiters};
use zkvault::vault::{now_ms, Role};

on_both_backends!(
    // Forged rows and availability.
    a_forged_master_row_does_not_make_every_scheduler_pass_create_a_kek,
    a_forged_master_row_does_not_stop_other_namespaces_work_once_the_kek_is_due,
    a_forged_master_in_one_namespace_does_not_stop_destructions_in_another,
    // The audit trail.
    a_deleted_head_of_the_cli_chain_does_not_stop_the_cli_from_starting,
    // Legitimate flows (PostgreSQL: they need a second session to order them).
    an_update_racing_an_erasure_is_never_reported_as_missing,
);

const ID: &str = "4930098371";
const DAY: i64 = 24 * 3600 * 1000;

async fn put_ok(app: &TestApp, name: &str, body: &[u8]) {
    let r = app.put("rp", name, ID, body).await;
    assert!(r.status().is_success(), "{}", r.status());
}

async fn rotate(app: &TestApp, ns: &str) {
    let (s, body) = app
        .call(
            Method::POST,
            &format!("/v1/ns/{ns}/masters/rotate"),
            &app.tokens.operator,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

async fn master_state(app: &TestApp, ns: &str, version: i32) -> String {
    strings(
        app,
        &format!("SELECT state AS v FROM masters WHERE namespace = '{ns}' AND version = {version}"),
    )
    .await
    .remove(0)
}

/// `run_due_lifecycle` starts with the KEK rotation. Once the KEK is due, one forged master row
/// (here in `uin`) makes `rotate_kek` fail — after `create_kek_after` has made a new active KEK
/// in the keystore, and before `mirror_keks` records it in the database. The scheduler decides
/// "due" from the database's active KEK row (`active_kek_row`), which is still the old one:
/// the next pass (60 s later) finds it due again and makes another keystore KEK, and so on every
/// tick for as long as the row stays forged (on an HSM, a new key object a minute). The threat
/// model says a forged row *stops* a KEK rotation. (Shown by the state one failed pass leaves:
/// the keystore's active KEK is one the database does not know as active; the test cannot age
/// the old KEK's row, which is MACed, to run the ticks themselves.)
async fn a_forged_master_row_does_not_make_every_scheduler_pass_create_a_kek(db: TestDb) {
    let app = TestApp::start(db).await;
    sql(
        &app,
        "UPDATE masters SET compromised_at = 1 WHERE namespace = 'uin'",
    )
    .await;
    let v = app.vault.clone();
    let (before, after, keystore_active) = tokio::task::spawn_blocking(move || {
        let keks = || v.keyring().keystore().list_keks().unwrap().len();
        let before = keks();
        assert!(
            v.run_due_lifecycle(now_ms() + 366 * DAY).is_err(),
            "setup: the pass fails"
        );
        let active = v.keyring().keystore().active_kek().unwrap().unwrap();
        (before, keks(), active.to_string())
    })
    .await
    .unwrap();
    let db_active = strings(
        &app,
        "SELECT CAST(version AS TEXT) AS v FROM keks WHERE state = 'active'",
    )
    .await;
    assert_eq!(
        vec![keystore_active.clone()],
        db_active,
        "a failed scheduled KEK rotation made {} keystore KEK(s) and left v{keystore_active} active while the database's active KEK (what the scheduler dates the rotation from) is still {db_active:?}: every later pass rotates again and makes one more",
        after - before
    );
}

/// The same `?` on the KEK rotation: once the KEK is due, a forged master row in `uin` stops
/// every other namespace's scheduled work too (here rp's overdue master rotation; likewise
/// retirements and destructions), pass after pass — although the second review made the
/// per-namespace loop skip forged rows, and the threat model says scheduled work "goes on for
/// every other row".
async fn a_forged_master_row_does_not_stop_other_namespaces_work_once_the_kek_is_due(db: TestDb) {
    let app = TestApp::start(db).await;
    sql(
        &app,
        "UPDATE masters SET compromised_at = 1 WHERE namespace = 'uin'",
    )
    .await;
    let v = app.vault.clone();
    let result = tokio::task::spawn_blocking(move || v.run_due_lifecycle(now_ms() + 366 * DAY))
        .await
        .unwrap();
    assert!(result.is_err(), "setup: the forged row is answered");
    assert_ne!(
        master_state(&app, "rp", 1).await,
        "active",
        "rp's master, 366 days old with a 90-day rotation, was not rotated: a forged row in uin stopped it"
    );
}

/// The destruction loop of `run_due_lifecycle` skips forged rows (`each_master`), but calls
/// `destroy_master_as(..)?` for each retired master due, and that reads every master of the
/// namespace (`master_row` → `masters(ns)?`). A forged row in `rp` (its active v2) makes the
/// destruction of rp's retired v1 fail, and the `?` ends the pass: uin's retired v1, due
/// for destruction (policy `destroy_after_retired_days`), is not destroyed while rp's row
/// stays forged.
async fn a_forged_master_in_one_namespace_does_not_stop_destructions_in_another(db: TestDb) {
    let app = TestApp::start(db).await;
    rotate(&app, "rp").await;
    rotate(&app, "uin").await;
    sql(
        &app,
        "UPDATE masters SET compromised_at = 1 WHERE namespace = 'rp' AND version = 2",
    )
    .await;
    let v = app.vault.clone();
    let result = tokio::task::spawn_blocking(move || v.run_due_lifecycle(now_ms() + 31 * DAY))
        .await
        .unwrap();
    assert!(result.is_err(), "setup: the forged row is answered");
    assert_eq!(
        master_state(&app, "uin", 1).await,
        "destroyed",
        "uin's retired master, due for destruction, was left alone because of a forged row in rp"
    );
}

/// A chain's head row that is missing is taken for a new chain: the append starts it again at
/// seq 1 and collides with the chain's existing entries (`UNIQUE (chain, seq)`), a `Conflict`
/// that `Store::write` does not treat like a forged head (set aside, write on a new chain): the
/// chain is given back and used again. The CLI writes on its fixed chain `cli:<host>`, and
/// every start appends `policy.load` on it: with that one head row deleted, every CLI command
/// fails at start — `zkvault audit verify` included, which would name the deletion — on every
/// run, until the row is rebuilt (putting back an older authentic head collides the same way).
/// A forged head in its place would be set aside and the CLI would start.
async fn a_deleted_head_of_the_cli_chain_does_not_stop_the_cli_from_starting(db: TestDb) {
    let app = TestApp::start(db).await;
    let mut cli = app.config.clone();
    cli.audit_chain = Some("cli:review3".into());
    let open = |config: zkvault::config::Config| {
        let keystore = app.vault.keyring().keystore().clone();
        tokio::task::spawn_blocking(move || {
            zkvault::app::open_vault_with(&config, keystore).map(drop)
        })
    };
    open(cli.clone()).await.unwrap().unwrap();
    assert_eq!(
        strings(
            &app,
            "SELECT chain AS v FROM audit_heads WHERE chain = 'cli:review3'"
        )
        .await
        .len(),
        1,
        "setup: the CLI wrote on its chain"
    );
    sql(&app, "DELETE FROM audit_heads WHERE chain = 'cli:review3'").await;
    let started = open(cli).await.unwrap();
    assert!(
        started.is_ok(),
        "the CLI (audit verify included) no longer starts once its chain's head row is deleted: {:?}",
        started.err()
    );
}

/// The second review's fix times an entry when it is appended, inside its transaction, "after
/// the locks it waited for" — but the locks a change waits for are the rows it changes, taken
/// after the append. An erasure (instance B) appends its entry, then its DELETE waits on one of
/// the resident's records, r0 (held here by a session standing in for another instance's
/// write of r0 in progress). Meanwhile instance A replaces r1 (entry timed after the erasure's)
/// and commits; the erasure then goes on and deletes r1 as A left it (PostgreSQL re-checks the
/// updated row under READ COMMITTED), and commits. Every step is a legitimate zkvault change on
/// a common row, yet the record history orders A's write after the erasure and `audit verify`
/// reports r1 "deleted outside zkvault" — for good, as the first break, hiding any real one.
/// Since the fixes, the replacement waits for the erasure and is written after it: the trail
/// and the table agree.
async fn an_update_racing_an_erasure_is_never_reported_as_missing(db: TestDb) {
    if !db.is_postgres() {
        return;
    }
    let app = TestApp::start(db).await;
    put_ok(&app, "r0", b"0").await;
    put_ok(&app, "r1", b"1").await;
    assert!(verify(&app).await.first_break.is_none(), "setup: clean");
    let (release, holder) = hold(
        app.db.url(),
        "SELECT id FROM records WHERE name = 'r0' FOR UPDATE",
    );
    let other = tokio::task::spawn_blocking({
        let config = app.config.clone();
        let keystore = app.vault.keyring().keystore().clone();
        move || zkvault::app::open_vault_with(&config, keystore).unwrap()
    })
    .await
    .unwrap();
    let erase = tokio::task::spawn_blocking(move || {
        let writer = grant(&other, Role::Writer, Some("rp"));
        other.erase_resident(&writer, ID)
    });
    wait_for_lock_waiters(&app, 1, "the erasure").await;
    // The replacement of r1 now waits for the erasure (one resident's changes are serialised),
    // so it is started alongside and the held row released after.
    let replaced = tokio::spawn({
        let req = app
            .req(
                Method::PUT,
                "/v1/ns/rp/records/r1",
                &app.tokens.writer,
                Some(ID),
            )
            .header("Content-Type", "application/json")
            .body("2");
        async move { req.send().await.unwrap().status() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    release.send(()).unwrap();
    tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();
    assert_eq!(
        erase.await.unwrap().unwrap(),
        2,
        "setup: both records erased"
    );
    let replaced = replaced.await.unwrap();
    assert!(replaced.is_success(), "{replaced}");
    // Written after the erasure: present, and the trail says so.
    assert_eq!(app.get("rp", "r1", ID).await.status(), StatusCode::OK);
    let report = verify(&app).await;
    assert!(
        report.first_break.is_none(),
        "an erasure that deleted a record after its last write is reported as tampering: {:?}",
        report.first_break
    );
}
