//! Second review of the database-writer guarantees (DESIGN.md, "What a database writer must not
//! be able to do"; docs/threat-model.md §1 "With write access as well"). Each test is an attack
//! by a hostile DBA or a careless operator that got through when the review was written (each
//! failed then), written as what should happen.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use support::app::{backup, grant, TestApp};
use support::db::TestDb;
use support::writer::{checkpoint, hold, id_of, sql, strings, verify, wait_for_lock_waiters};
use zkvault::vault::{Precondition, RecordWrite, Role};

on_both_backends!(
    // The audit trail.
    a_chain_cut_short_is_not_laundered_by_the_next_append,
    edited_checkpoint_marks_that_stop_checkpoints_are_reported_by_verify,
    // Older authentic rows put back.
    an_erased_record_swapped_in_for_its_re_created_successor_is_reported,
    a_rotated_credential_row_put_back_from_before_its_rotation_is_reported,
    // Forged rows and availability.
    a_forged_master_in_one_namespace_does_not_stop_reconciling_another,
    // Dual control.
    deleting_a_middle_rotated_credential_does_not_split_one_holder_in_two,
    // Legitimate flows (PostgreSQL: they need a second session to order them).
    a_write_that_commits_after_an_erasure_is_not_reported_as_restored,
    authentication_does_not_wait_for_a_row_lock_on_the_credential,
);

const ID: &str = "4930098371";

async fn put_ok(app: &TestApp, name: &str, body: &[u8]) {
    let r = app.put("rp", name, ID, body).await;
    assert!(r.status().is_success(), "{}", r.status());
}

async fn erase(app: &TestApp) {
    let r = app
        .req(
            Method::DELETE,
            "/v1/ns/rp/resident",
            &app.tokens.writer,
            Some(ID),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// `Store::append` bumps a chain's head and MACs the new head without checking the MAC of the
/// head it starts from. A writer cuts a chain short after the newest checkpoint — here the
/// `credential.revoke` entry of a leaked token, whose older row it puts back — and rewinds the
/// head to the entry before (the head's MAC no longer holds: reported, as documented). The very
/// next append to that chain (any audited request; the chain pool hands out the chain last
/// given back) MACs a head on top of the writer's: `audit verify` passes, the next checkpoint
/// vouches for the cut trail, and the revoked token works for good. The same laundering lets a
/// writer rewrite (not only cut) every entry since the newest checkpoint, without needing an
/// older authentic head row.
async fn a_chain_cut_short_is_not_laundered_by_the_next_append(db: TestDb) {
    let app = TestApp::start(db).await;
    put_ok(&app, "r1", b"1").await;
    checkpoint(&app).await.unwrap();
    let leaked = app.issue(&[Role::Writer, Role::Reader], &["rp"]).await;
    let id = id_of(&leaked).to_owned();
    backup(app.db.url(), "before", &["credentials"]);
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/credentials/{id}"),
            &app.tokens.admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let revoke = format!("operation = 'credential.revoke' AND target = '{id}'");
    let chain = strings(
        &app,
        &format!("SELECT chain AS v FROM audit WHERE {revoke}"),
    )
    .await;
    let chain = chain[0].clone();
    let seq: i64 = strings(
        &app,
        &format!("SELECT CAST(seq AS TEXT) AS v FROM audit WHERE {revoke}"),
    )
    .await[0]
        .parse()
        .unwrap();
    sql(
        &app,
        &format!(
            "UPDATE audit_heads SET seq = {prev}, hash = (SELECT prev_hash FROM audit WHERE chain = '{chain}' AND seq = {seq}) WHERE chain = '{chain}'; \
             DELETE FROM audit WHERE chain = '{chain}' AND seq >= {seq}; \
             DELETE FROM credentials WHERE id = '{id}'; \
             INSERT INTO credentials SELECT * FROM credentials_backup_before WHERE id = '{id}'",
            prev = seq - 1
        ),
    )
    .await;
    assert!(
        verify(&app).await.first_break.is_some(),
        "the cut chain is reported while its head is the writer's"
    );

    // Ordinary traffic: the leaked token lists the resident's records (an audited read).
    let r = app
        .req(Method::GET, "/v1/ns/rp/records", &leaked, Some(ID))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the replayed row is honoured until verify"
    );
    let head: i64 = strings(
        &app,
        &format!("SELECT CAST(seq AS TEXT) AS v FROM audit_heads WHERE chain = '{chain}'"),
    )
    .await[0]
        .parse()
        .unwrap();
    assert_eq!(
        head,
        seq - 1,
        "the service appended to the cut chain (it must set it aside and write on a new one)"
    );

    let report = verify(&app).await;
    assert!(
        report.first_break.is_some(),
        "the cut chain's forged head was re-MACed by the service's next append: the revocation of {id} is gone and audit verify passes"
    );
    assert!(
        checkpoint(&app).await.is_err(),
        "a checkpoint vouches for the laundered chain"
    );
}

/// A checkpoint refuses to run when `audit_marks` (the heads the newest checkpoint saw) does
/// not add up to the newest checkpoint's `heads_digest`, but `audit verify` never looks at
/// `audit_marks`. One edited mark row stops every checkpoint while verify stays clean, so the
/// documented window of "at most one scheduler tick" in which a writer can cut chains back to
/// an older authentic head (or delete chains never checkpointed) lasts as long as the writer
/// wants; putting the mark back afterwards resumes checkpoints over whatever the trail then
/// holds. The scheduler's one `scheduler.pass` integrity entry lies in the unprotected window
/// too.
async fn edited_checkpoint_marks_that_stop_checkpoints_are_reported_by_verify(db: TestDb) {
    let app = TestApp::start(db).await;
    put_ok(&app, "r1", b"1").await;
    checkpoint(&app).await.unwrap();
    sql(
        &app,
        "DELETE FROM audit_marks WHERE chain = (SELECT MIN(chain) FROM audit_marks)",
    )
    .await;
    put_ok(&app, "r2", b"2").await;
    assert!(
        checkpoint(&app).await.is_err(),
        "setup: the edited marks stop checkpoints"
    );
    let report = verify(&app).await;
    assert!(
        report.first_break.is_some(),
        "checkpoints are refused for good, yet audit verify reports nothing: {report:?}"
    );
}

/// Revisions restart at 1 when a record is created again (after a delete or an erasure), and
/// the record history compares revisions only. The writer swaps the resident's pre-erasure row
/// (revision 1, authentic, still decrypts: the AAD binds the record id the row carries) in for
/// the re-created record (also revision 1): the erased data is served again and `audit verify`
/// passes. Erasure undone by a database writer, undetected.
async fn an_erased_record_swapped_in_for_its_re_created_successor_is_reported(db: TestDb) {
    let app = TestApp::start(db).await;
    put_ok(&app, "r1", b"\"erased data\"").await;
    backup(app.db.url(), "before", &["records"]);
    erase(&app).await;
    put_ok(&app, "r1", b"\"new data\"").await;
    sql(
        &app,
        "DELETE FROM records WHERE name = 'r1'; \
         INSERT INTO records SELECT * FROM records_backup_before WHERE name = 'r1'",
    )
    .await;
    assert_eq!(
        &app.get("rp", "r1", ID).await.bytes().await.unwrap()[..],
        b"\"erased data\"",
        "setup: the pre-erasure row opens"
    );
    let report = verify(&app).await;
    assert!(
        report.first_break.is_some(),
        "the resident's erased record was swapped back in for the re-created one: not reported"
    );
}

/// A credential rotation cuts the old token's life to the overlap (`credential.rotate`, detail
/// `old expires_at=…`). The old row from before the rotation is authentic; put back, the
/// rotated-away token works until its original expiry (90 days here instead of the overlap),
/// and `audit verify` — which remembers revocations and compromise marks only — passes.
async fn a_rotated_credential_row_put_back_from_before_its_rotation_is_reported(db: TestDb) {
    let app = TestApp::start(db).await;
    let leaked = app.issue(&[Role::Writer, Role::Reader], &["rp"]).await;
    let id = id_of(&leaked).to_owned();
    backup(app.db.url(), "before", &["credentials"]);
    let v = app.vault.clone();
    let rotated = id.clone();
    tokio::task::spawn_blocking(move || {
        let admin = grant(&v, Role::Admin, None);
        v.rotate_credential(&admin, &rotated, Duration::from_millis(1))
            .unwrap()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let list = |token: String| {
        let app = &app;
        async move {
            app.req(Method::GET, "/v1/ns/rp/records", &token, Some(ID))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(list(leaked.clone()).await, StatusCode::UNAUTHORIZED);
    sql(
        &app,
        &format!(
            "DELETE FROM credentials WHERE id = '{id}'; \
             INSERT INTO credentials SELECT * FROM credentials_backup_before WHERE id = '{id}'"
        ),
    )
    .await;
    assert_eq!(
        list(leaked.clone()).await,
        StatusCode::OK,
        "setup: the pre-rotation row is honoured"
    );
    let report = verify(&app).await;
    assert!(
        report.first_break.is_some(),
        "credential {id}, rotated with a 1 ms overlap, is live again for 90 days: not reported"
    );
}

/// `Vault::open` skips the destruction reconciliation as a whole when any master row fails its
/// MAC (`past_forged_rows`), and so does every scheduler pass (`reconcile_destructions` reads
/// `all_masters`). A restored backup brings back rp's destroyed master v2 as rp's active one; a
/// start would destroy it again and give rp a new active master — but one forged row in
/// namespace uin stops that, so rp (whose rows are all authentic) cannot write until uin's row
/// is put back. The threat model promises a forged row stops "what needs that row".
async fn a_forged_master_in_one_namespace_does_not_stop_reconciling_another(db: TestDb) {
    let app = TestApp::start(db).await;
    put_ok(&app, "r1", b"1").await;
    let op = app.tokens.operator.clone();
    let (s, body) = app
        .call(Method::POST, "/v1/ns/rp/masters/rotate", &op, None)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    backup(app.db.url(), "v2active", &["masters"]);
    let (s, body) = app
        .call(Method::POST, "/v1/ns/rp/masters/rotate", &op, None)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = app
        .call(
            Method::POST,
            "/v1/ns/rp/masters/2/destroy?shred=true",
            &op,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // A backup of the masters from before v2's destruction, and one forged row in uin.
    sql(
        &app,
        "DELETE FROM masters WHERE namespace = 'rp'; \
         INSERT INTO masters SELECT * FROM masters_backup_v2active WHERE namespace = 'rp'; \
         UPDATE masters SET compromised_at = 1 WHERE namespace = 'uin'",
    )
    .await;
    let vault = tokio::task::spawn_blocking({
        let config = app.config.clone();
        let keystore = app.vault.keyring().keystore().clone();
        move || zkvault::app::open_vault_with(&config, keystore).unwrap()
    })
    .await
    .unwrap();
    let written = tokio::task::spawn_blocking(move || {
        let _ = vault.run_scheduled_pass(zkvault::vault::now_ms());
        let writer = grant(&vault, Role::Writer, Some("rp"));
        vault
            .put_record(
                &writer,
                ID,
                &RecordWrite {
                    name: "r2",
                    content_type: "application/json",
                    body: b"2",
                    precondition: &Precondition::None,
                },
            )
            .map(|o| o.master_version)
    })
    .await
    .unwrap();
    assert!(
        written.is_ok(),
        "rp cannot write after a restart and a scheduler pass: its destroyed master v2 is back as active and never reconciled, because of a forged row in uin: {:?}",
        written.err()
    );
}

fn dual_control_policy() -> String {
    support::app::POLICY.replace(
        "credential_max_age_days = 90",
        "credential_max_age_days = 90\ndual_control = true\napproval_minutes = 5",
    )
}

/// `same_holder` follows `rotated_from` through each credential's MACed row, but a missing row
/// ends the walk with "not the same holder". One operator's credential rotated twice (c0 → c1
/// → c2, routine rotations with an overlap): the writer deletes c1's row (already rotated away,
/// nothing uses it); c0 requests a shred and c2 approves it. The threat model says deleting a
/// link row does not turn one holder into two operators.
async fn deleting_a_middle_rotated_credential_does_not_split_one_holder_in_two(db: TestDb) {
    let app = TestApp::start_with(db, 1024 * 1024, &dual_control_policy()).await;
    put_ok(&app, "r1", b"1").await;
    let (s, _) = app
        .call(
            Method::POST,
            "/v1/ns/rp/masters/rotate",
            &app.tokens.operator,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let c0 = app.issue(&[Role::Operator], &[]).await;
    let v = app.vault.clone();
    let c0_id = id_of(&c0).to_owned();
    let (c1_id, c2) = tokio::task::spawn_blocking(move || {
        let admin = grant(&v, Role::Admin, None);
        let hour = Duration::from_secs(3600);
        let c1 = v.rotate_credential(&admin, &c0_id, hour).unwrap();
        let c2 = v.rotate_credential(&admin, &c1.id, hour).unwrap();
        (c1.id, c2.token.expose().to_owned())
    })
    .await
    .unwrap();
    let (s, pending) = app
        .call(
            Method::POST,
            "/v1/ns/rp/masters/1/destroy?shred=true",
            &c0,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{pending}");
    let approve = format!("/v1/approvals/{}", pending["approval"].as_str().unwrap());
    assert_eq!(
        app.call(Method::POST, &approve, &c2, None).await.0,
        StatusCode::CONFLICT,
        "setup: c2 is c0's holder"
    );
    sql(
        &app,
        &format!("DELETE FROM credentials WHERE id = '{c1_id}'"),
    )
    .await;
    let (s, body) = app.call(Method::POST, &approve, &c2, None).await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "one holder (c0 → c1 → c2) shredded alone once c1's row was deleted: {body}"
    );
}

/// The record history orders a record's changes by the time in their audit entries, and that
/// time is taken when the request builds its entry, not when it commits. A PUT that waits (here
/// on the audit head row, as it would behind any lock, a busy pool, or on an instance whose
/// clock is a few ms behind another's) commits after a concurrent erasure of its resident: the
/// record exists, legitimately, yet `audit verify` reports it "restored from a backup" — for
/// good, and as the first break, hiding any real one behind it.
async fn a_write_that_commits_after_an_erasure_is_not_reported_as_restored(db: TestDb) {
    if !db.is_postgres() {
        return;
    }
    let app = TestApp::start(db).await;
    put_ok(&app, "r1", b"1").await;
    let (release, holder) = hold(app.db.url(), "SELECT chain FROM audit_heads FOR UPDATE");
    let v = app.vault.clone();
    let put = tokio::task::spawn_blocking(move || {
        let writer = grant(&v, Role::Writer, Some("rp"));
        v.put_record(
            &writer,
            ID,
            &RecordWrite {
                name: "r2",
                content_type: "application/json",
                body: b"2",
                precondition: &Precondition::None,
            },
        )
        .map(drop)
    });
    wait_for_lock_waiters(&app, 1, "the PUT").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Another instance erases the resident meanwhile (on its own, new audit chain).
    let other = tokio::task::spawn_blocking({
        let config = app.config.clone();
        let keystore = app.vault.keyring().keystore().clone();
        move || zkvault::app::open_vault_with(&config, keystore).unwrap()
    })
    .await
    .unwrap();
    let erased = tokio::task::spawn_blocking(move || {
        let writer = grant(&other, Role::Writer, Some("rp"));
        other.erase_resident(&writer, ID)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(erased, 1);
    release.send(()).unwrap();
    tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();
    put.await.unwrap().unwrap();
    assert_eq!(app.get("rp", "r2", ID).await.status(), StatusCode::OK);
    let report = verify(&app).await;
    assert!(
        report.first_break.is_none(),
        "a write that committed after the erasure is reported as tampering: {:?}",
        report.first_break
    );
}

/// `Store::credential` — the authentication path on every credential-cache miss — reads the
/// row with `first_locked!`, i.e. `SELECT … FOR UPDATE` on PostgreSQL, outside any write. Any
/// session holding a lock on that row (here a DBA's read-only `SELECT … FOR SHARE` left open;
/// likewise any row update not yet committed) makes every request with that token hang with no
/// timeout, each holding one of the pool's few connections, so a handful of such requests
/// stall the whole instance. A plain read would not wait.
async fn authentication_does_not_wait_for_a_row_lock_on_the_credential(db: TestDb) {
    if !db.is_postgres() {
        return;
    }
    let app = TestApp::start(db).await;
    let reader = app.issue(&[Role::Reader], &["rp"]).await;
    let id = id_of(&reader).to_owned();
    let (release, holder) = hold(
        app.db.url(),
        &format!("SELECT id FROM credentials WHERE id = '{id}' FOR SHARE"),
    );
    let answered = tokio::time::timeout(
        Duration::from_secs(5),
        app.req(Method::GET, "/v1/ns/rp/records", &reader, Some(ID))
            .send(),
    )
    .await;
    release.send(()).unwrap();
    tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();
    assert!(
        answered.is_ok(),
        "a request with a valid token hangs while a session holds a share lock on its credential row"
    );
}
