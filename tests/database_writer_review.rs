//! A review of the database-writer guarantees (DESIGN.md, "What a database writer must not be
//! able to do"): each test is an attack by a hostile DBA or a careless operator that got
//! through when the review was written (each failed then), written as what should happen.

mod support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::app::{backup, grant, restore, TestApp};
use support::db::TestDb;
use support::writer::{blob, checkpoint, id_of, sql, strings, verify};
use zkvault::storage::AuditFilter;
use zkvault::vault::{now_ms, Role};

on_both_backends!(
    // The audit trail and the single-record rollback check.
    a_forged_entry_appended_after_the_last_checkpoint_is_reported,
    renumbering_an_audit_entry_does_not_hide_a_record_rollback,
    an_erasure_through_the_api_passes_audit_verify,
    records_restored_after_an_erasure_are_reported,
    // Older authentic rows put back.
    a_revoked_credential_restored_from_a_backup_is_reported,
    a_compromised_master_restored_from_a_backup_is_reported,
    // Laundering through a change racing the writer's own transaction (PostgreSQL).
    a_kek_rotation_never_re_macs_a_row_edited_while_it_waited,
    a_credential_rotation_never_re_macs_a_row_edited_while_it_waited,
    // Availability.
    a_forged_master_in_one_namespace_does_not_stop_audit_checkpoints,
    a_forged_master_row_does_not_stop_audit_verify_from_running,
    a_junk_record_row_is_reported_by_audit_verify_not_an_error,
    a_deleted_integrity_key_row_does_not_let_its_kek_be_destroyed,
);

const ID: &str = "4930098371";

async fn put_ok(app: &TestApp, name: &str, body: &[u8]) {
    let r = app.put("rp", name, ID, body).await;
    assert!(r.status().is_success(), "{}", r.status());
}

/// `r1` written twice, `records` backed up as `name` in between: the old row still opens.
async fn two_revisions_of_r1(app: &TestApp, name: &str) {
    put_ok(app, "r1", b"\"old\"").await;
    backup(app.db.url(), name, &["records"]);
    put_ok(app, "r1", b"\"new\"").await;
}

/// `r1` put back as the backup `name` held it (revision 1).
async fn roll_back_r1(app: &TestApp, name: &str) {
    sql(
        app,
        &format!("DELETE FROM records WHERE name = 'r1'; INSERT INTO records SELECT * FROM records_backup_{name} WHERE name = 'r1'"),
    )
    .await;
    assert_eq!(
        &app.get("rp", "r1", ID).await.bytes().await.unwrap()[..],
        b"\"old\""
    );
}

/// Audit entries are hashed, not MACed: anyone can compute the hash of an entry of their own.
/// After rolling r1 back, the writer appends (in a new chain, with its head row) a copy of r1's
/// `record.put` entry that names revision 1. `audit verify` passes, and the next checkpoint
/// vouches for the forged entry.
async fn a_forged_entry_appended_after_the_last_checkpoint_is_reported(db: TestDb) {
    let app = TestApp::start(db).await;
    two_revisions_of_r1(&app, "old").await;
    assert_eq!(checkpoint(&app).await.unwrap(), 1);
    roll_back_r1(&app, "old").await;
    assert!(
        verify(&app).await.first_break.is_some(),
        "the rollback alone is reported"
    );

    let store = app.vault.store().clone();
    let rows = tokio::task::spawn_blocking(move || {
        store
            .audit_page(&AuditFilter {
                operation: Some("record.put".into()),
                limit: 1000,
                ..AuditFilter::default()
            })
            .unwrap()
    })
    .await
    .unwrap();
    let original = rows
        .iter()
        .find(|r| r.entry.target == "r1" && r.entry.detail.starts_with("revision 1 "))
        .expect("r1's first write")
        .entry
        .clone();
    let chain = "00f0f0f0f0f0f0f0";
    let at = now_ms();
    let hash = zkvault_core::audit::entry_hash(
        &[0; 32],
        chain,
        1,
        &zkvault_core::audit::AuditFields {
            at_ms: at,
            actor: &original.actor,
            request_id: &original.request_id,
            operation: &original.operation,
            namespace: &original.namespace,
            target: &original.target,
            resident_tag: &original.resident_tag,
            outcome: &original.outcome,
            detail: &original.detail,
        },
    );
    sql(
        &app,
        &format!(
            "INSERT INTO audit (chain, seq, at, actor, request_id, operation, namespace, target, resident_tag, outcome, detail, prev_hash, hash) \
             VALUES ('{chain}', 1, {at}, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', {}, {}); \
             INSERT INTO audit_heads (chain, seq, hash) VALUES ('{chain}', 1, {})",
            original.actor,
            original.request_id,
            original.operation,
            original.namespace,
            original.target,
            original.resident_tag,
            original.outcome,
            original.detail,
            blob(&app, &[0; 32]),
            blob(&app, &hash),
            blob(&app, &hash),
        ),
    )
    .await;
    let report = verify(&app).await;
    assert!(
        report.first_break.is_some(),
        "an entry the service never wrote, inserted after the last checkpoint, hides the rollback of r1"
    );
    assert!(
        checkpoint(&app).await.is_err(),
        "the next checkpoint vouches for an entry the service never wrote"
    );
}

/// The audit row's `id` is not covered by its hash, yet the record history takes the entry
/// with the highest id as a record's last change. Renumbering r1's second write below its first
/// makes the rolled-back row the "last logged" one, under a checkpoint too.
async fn renumbering_an_audit_entry_does_not_hide_a_record_rollback(db: TestDb) {
    let app = TestApp::start(db).await;
    two_revisions_of_r1(&app, "old").await;
    assert_eq!(checkpoint(&app).await.unwrap(), 1);
    roll_back_r1(&app, "old").await;
    assert!(verify(&app).await.first_break.is_some());
    let lowest = strings(&app, "SELECT CAST(MIN(id) AS TEXT) AS v FROM audit").await;
    let lowest: i64 = lowest[0].parse().unwrap();
    sql(
        &app,
        &format!(
            "UPDATE audit SET id = {} WHERE operation = 'record.put' AND target = 'r1' AND detail LIKE '%revision 2'",
            lowest - 1
        ),
    )
    .await;
    let report = verify(&app).await;
    assert!(
        report.first_break.is_some(),
        "r1 rolled back to revision 1 and its audit entry renumbered: not reported"
    );
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
    assert_eq!(r.json::<Value>().await.unwrap()["erased"], 2);
}

/// The right to erasure (`DELETE /v1/ns/{ns}/resident`) deletes records with one
/// `resident.erase` entry, which the record history ignores: every erased record then counts
/// as "deleted outside zkvault", and `audit verify` fails for good after a lawful erasure (and,
/// naming only its first break, hides any later one behind it).
async fn an_erasure_through_the_api_passes_audit_verify(db: TestDb) {
    let app = TestApp::start(db).await;
    put_ok(&app, "r1", b"1").await;
    put_ok(&app, "r2", b"2").await;
    assert!(verify(&app).await.first_break.is_none());
    erase(&app).await;
    let report = verify(&app).await;
    assert!(
        report.first_break.is_none(),
        "a lawful erasure breaks audit verify: {:?}",
        report.first_break
    );
}

/// ...and the records of an erased resident put back from a backup are not reported at all:
/// undoing an erasure passes `audit verify`.
async fn records_restored_after_an_erasure_are_reported(db: TestDb) {
    let app = TestApp::start(db).await;
    put_ok(&app, "r1", b"1").await;
    put_ok(&app, "r2", b"2").await;
    backup(app.db.url(), "before", &["records"]);
    erase(&app).await;
    sql(
        &app,
        "INSERT INTO records SELECT * FROM records_backup_before",
    )
    .await;
    assert_eq!(app.get("rp", "r1", ID).await.status(), StatusCode::OK);
    let report = verify(&app).await;
    let b = report
        .first_break
        .expect("an erased resident's records restored from a backup: not reported");
    assert!(b.reason.contains("restored"), "{b:?}");
}

/// Row MACs bind a row's content, not its freshness: the credential's row from before its
/// revocation, MAC included, is authentic, and putting it back makes a revoked token work
/// again. The trail remembers the revocation: `audit verify` reports it.
async fn a_revoked_credential_restored_from_a_backup_is_reported(db: TestDb) {
    let app = TestApp::start(db).await;
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
    let (status, _) = app
        .call(Method::GET, "/v1/ns/rp/records", &leaked, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    sql(
        &app,
        &format!(
            "DELETE FROM credentials WHERE id = '{id}'; \
             INSERT INTO credentials SELECT * FROM credentials_backup_before WHERE id = '{id}'"
        ),
    )
    .await;
    // Authentic, so served until `audit verify` (which the trail's revocation contradicts).
    let reason = verify(&app)
        .await
        .first_break
        .expect("a revoked credential's older row put back: not reported")
        .reason;
    assert!(
        reason.contains(&id) && reason.contains("revoked"),
        "{reason}"
    );
}

/// The same for a master: the masters table from before a compromise response, put back,
/// makes the compromised master active and unmarked again; `audit verify` reports it.
async fn a_compromised_master_restored_from_a_backup_is_reported(db: TestDb) {
    let app = TestApp::start(db).await;
    put_ok(&app, "r1", b"1").await;
    backup(app.db.url(), "before", &["masters"]);
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/ns/rp/masters/1/compromise",
            &app.tokens.operator,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    sql(
        &app,
        "DELETE FROM masters WHERE namespace = 'rp'; \
         INSERT INTO masters SELECT * FROM masters_backup_before WHERE namespace = 'rp'",
    )
    .await;
    let reason = verify(&app)
        .await
        .first_break
        .expect("a compromised master's older row put back: not reported")
        .reason;
    assert!(reason.contains("compromised"), "{reason}");
}

/// On PostgreSQL a pre-image check is a plain SELECT: it reads the committed row without
/// waiting for a writer that holds the row locked. The writer edits master v1 (clears its
/// compromise mark) in an open transaction; a KEK rotation checks the old, authentic row, its
/// UPDATE waits for the writer's lock, then applies on top of the edited row, and
/// `remac_master` MACs the result: the cleared mark becomes authentic.
async fn a_kek_rotation_never_re_macs_a_row_edited_while_it_waited(db: TestDb) {
    if !db.is_postgres() {
        return; // SQLite: the writer's lock blocks the whole transaction, checks included.
    }
    let app = TestApp::start(db).await;
    put_ok(&app, "r1", b"1").await;
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/ns/rp/masters/1/compromise",
            &app.tokens.operator,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let vault = app.vault.clone();
    let _ = race_the_writer(
        &app,
        "UPDATE masters SET compromised_at = NULL WHERE namespace = 'rp' AND version = 1",
        move || {
            let g = grant(&vault, Role::Operator, None);
            vault.rotate_kek(&g).map(drop).map_err(|e| e.to_string())
        },
    )
    .await;
    app.vault.keyring().forget_all();
    let store = app.vault.store().clone();
    let masters = tokio::task::spawn_blocking(move || store.masters("rp"))
        .await
        .unwrap();
    if let Ok(masters) = masters {
        let v1 = masters.iter().find(|m| m.version == 1).unwrap();
        assert!(
            v1.compromised_at.is_some(),
            "the writer's cleared compromise mark was re-MACed by the KEK rotation"
        );
    }
}

/// The same race on a credential: the writer makes a reader row an unrestricted admin while an
/// admin rotates that credential (`zkvault credentials rotate`); `set_credential_successor`
/// checked the old row, sets the overlap expiry on the edited one and MACs it. The old token is
/// an admin until the overlap ends.
async fn a_credential_rotation_never_re_macs_a_row_edited_while_it_waited(db: TestDb) {
    if !db.is_postgres() {
        return;
    }
    let app = TestApp::start(db).await;
    let reader = app.issue(&[Role::Reader], &["rp"]).await;
    let id = id_of(&reader).to_owned();
    let vault = app.vault.clone();
    let rotated = id.clone();
    let _ = race_the_writer(
        &app,
        &format!("UPDATE credentials SET roles = 'admin,writer,reader,operator,auditor', namespaces = '*' WHERE id = '{id}'"),
        move || {
            let g = grant(&vault, Role::Admin, None);
            vault
                .rotate_credential(&g, &rotated, Duration::from_secs(3600))
                .map(drop)
                .map_err(|e| e.to_string())
        },
    )
    .await;
    let (status, body) = app
        .call(Method::GET, "/v1/credentials", &reader, None)
        .await;
    assert_ne!(
        status,
        StatusCode::OK,
        "a reader's token lists credentials as an admin: {body}"
    );
}

/// Runs `change` while a database writer holds `edit` uncommitted, commits the edit once
/// `change` waits on its lock, and returns `change`'s result.
async fn race_the_writer(
    app: &TestApp,
    edit: &str,
    change: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> Result<(), String> {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let url = app.db.url().to_owned();
    let edit = edit.to_owned();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (commit_tx, commit_rx) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        let mut c = diesel::PgConnection::establish(&url).unwrap();
        c.batch_execute(&format!("BEGIN; {edit}")).unwrap();
        locked_tx.send(()).unwrap();
        commit_rx.recv().unwrap();
        c.batch_execute("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let change = tokio::task::spawn_blocking(change);
    let started = Instant::now();
    loop {
        let waiting = strings(
            app,
            "SELECT CAST(COUNT(*) AS TEXT) AS v FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        .await;
        if waiting != ["0"] || started.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    commit_tx.send(()).unwrap();
    writer.join().unwrap();
    change.await.unwrap()
}

async fn newest_checkpoint(app: &TestApp) -> i64 {
    strings(
        app,
        "SELECT CAST(COALESCE(MAX(counter), 0) AS TEXT) AS v FROM audit_manifests",
    )
    .await[0]
        .parse()
        .unwrap()
}

/// One forged master row in namespace `uin` makes every scheduler pass fail before it
/// checkpoints: the whole deployment's trail goes unanchored from then on (only a warning in the
/// log), and whatever the writer does to it afterwards is never caught by a checkpoint.
async fn a_forged_master_in_one_namespace_does_not_stop_audit_checkpoints(db: TestDb) {
    let app = TestApp::start(db).await;
    let before = newest_checkpoint(&app).await;
    sql(
        &app,
        "UPDATE masters SET compromised_at = 1 WHERE namespace = 'uin'",
    )
    .await;
    put_ok(&app, "r1", b"1").await;
    let vault = app.vault.clone();
    let pass = tokio::task::spawn_blocking(move || vault.run_scheduled_pass(now_ms()))
        .await
        .unwrap();
    assert!(
        newest_checkpoint(&app).await > before,
        "no checkpoint over namespace rp's traffic: the scheduler pass stopped at uin's forged master ({:?})",
        pass.err()
    );
}

/// The same forged row used to stop every start: the service, and every CLI command — `audit
/// verify` (which would name what is wrong), `credentials revoke`, `keys` — since they all open
/// the vault, which reads every master row. A start goes on past it; `audit verify` names it.
async fn a_forged_master_row_does_not_stop_audit_verify_from_running(db: TestDb) {
    let app = TestApp::start(db).await;
    sql(
        &app,
        "UPDATE masters SET compromised_at = 1 WHERE namespace = 'uin'",
    )
    .await;
    let keystore = app.vault.keyring().keystore().clone();
    let opened = tokio::task::spawn_blocking({
        let config = app.config.clone();
        move || zkvault::app::open_vault_with(&config, keystore)
    })
    .await
    .unwrap();
    let vault = match opened {
        Ok(v) => v,
        Err(e) => panic!("one forged master row in one namespace: nothing starts, not even `zkvault audit verify`: {e}"),
    };
    let report = tokio::task::spawn_blocking(move || vault.verify_audit().unwrap())
        .await
        .unwrap();
    let reason = report
        .first_break
        .expect("the forged row is not reported")
        .reason;
    assert!(reason.contains("master uin"), "{reason}");
}

/// A record row moved into a namespace that has no index key (or with a malformed blind
/// index) makes `audit verify` fail with an error instead of reporting the record.
async fn a_junk_record_row_is_reported_by_audit_verify_not_an_error(db: TestDb) {
    let app = TestApp::start(db).await;
    put_ok(&app, "r1", b"1").await;
    sql(
        &app,
        "UPDATE records SET namespace = 'ghost' WHERE name = 'r1'",
    )
    .await;
    let v = app.vault.clone();
    let result = tokio::task::spawn_blocking(move || v.verify_audit())
        .await
        .unwrap();
    match result {
        Ok(report) => assert!(
            report.first_break.is_some(),
            "the moved record is not reported"
        ),
        Err(e) => panic!("audit verify fails instead of reporting the record: {e}"),
    }
}

/// `destroy_kek` refuses a KEK that still wraps the integrity key, but learns that only from
/// the `integrity_key` row. The writer deletes the row; a KEK rotation skips it (nothing to
/// rewrap) and the old KEK's destruction is allowed. Every backup of the row is wrapped under
/// the destroyed KEK, so the deployment never starts again: no credential, master, KEK row or
/// checkpoint can be checked. A delete that no backup repairs.
async fn a_deleted_integrity_key_row_does_not_let_its_kek_be_destroyed(db: TestDb) {
    let app = TestApp::start(db).await;
    backup(app.db.url(), "ik", &["integrity_key"]);
    sql(&app, "DELETE FROM integrity_key").await;
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/keys/kek/rotate",
            &app.tokens.operator,
            None,
        )
        .await;
    let vault = app.vault.clone();
    let destroyed = tokio::task::spawn_blocking(move || {
        let g = grant(&vault, Role::Operator, None);
        vault.destroy_kek(&g, 1).map(drop)
    })
    .await
    .unwrap();
    restore(app.db.url(), "ik", &["integrity_key"]);
    let keystore = app.vault.keyring().keystore().clone();
    let opened = tokio::task::spawn_blocking({
        let config = app.config.clone();
        move || zkvault::app::open_vault_with(&config, keystore)
    })
    .await
    .unwrap();
    assert!(
        opened.is_ok(),
        "rotation: {status} {body}; destroying KEK v1: {:?}; the integrity key restored from a backup no longer unwraps: {:?}",
        destroyed.err(),
        opened.err().map(|e| e.to_string())
    );
}
