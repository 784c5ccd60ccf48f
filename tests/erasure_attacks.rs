//! Attacks on the keystore's ledger of destroyed masters, from a review: masters made after a
//! restore, a restored active master, a stray database write of `destroyed`, and a ledger
//! entry forged on the HSM without the PIN.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::app::{backup, execute_sql, restore, TestApp};
use support::db::TestDb;

on_both_backends!(
    a_master_made_after_a_restore_never_takes_a_destroyed_version,
    a_restored_active_master_destroyed_again_is_replaced,
    a_database_write_of_destroyed_stays_recoverable,
);

const IDS: [&str; 4] = ["4930098371", "4930098372", "4930098373", "4930098374"];

async fn post(app: &TestApp, path: &str, token: &str) -> (StatusCode, Value) {
    app.call(Method::POST, path, token, None).await
}

fn policy() -> String {
    support::app::POLICY.replace(
        "[namespaces.rp]\n",
        "[namespaces.rp]\nlazy_reencrypt = false\n",
    )
}

async fn sql(app: &TestApp, sql: &str) {
    let (url, sql) = (app.db.url().to_owned(), sql.to_owned());
    tokio::task::spawn_blocking(move || execute_sql(&url, &sql))
        .await
        .unwrap();
}

/// The ledger names a master by `(namespace, version)`. A rotation used to number the new master
/// from the database alone: after a restore from before v2 existed (v2 destroyed since), it made
/// a new v2 the ledger already named, whose writes answered 410, and the next reconciliation
/// destroyed the namespace's active master. New masters are numbered above the ledger too.
async fn a_master_made_after_a_restore_never_takes_a_destroyed_version(db: TestDb) {
    let app = TestApp::start_with(db, 1024 * 1024, &policy()).await;
    let op = app.tokens.operator.clone();
    assert!(app
        .put("rp", "r1", IDS[0], b"\"one\"")
        .await
        .status()
        .is_success());
    // --- backup taken here: rp has v1 (active) only ---
    backup(app.db.url(), "b1", &["masters", "records"]);
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/rotate", &op).await.0,
        StatusCode::OK
    );
    assert!(app
        .put("rp", "r2", IDS[1], b"\"two\"")
        .await
        .status()
        .is_success());
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/rotate", &op).await.0,
        StatusCode::OK
    );
    let (s, body) = post(&app, "/v1/ns/rp/masters/2/destroy?shred=true", &op).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // --- the restore: the database as the backup held it ---
    restore(app.db.url(), "b1", &["masters", "records"]);
    tokio::time::sleep(Duration::from_millis(600)).await; // key sync + state cache
                                                          // The promise holds for v1: still readable.
    assert_eq!(app.get("rp", "r1", IDS[0]).await.status(), StatusCode::OK);
    // The operator rotates after the restore: v3, above the destroyed v2.
    let (s, body) = post(&app, "/v1/ns/rp/masters/rotate", &op).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["active"], 3, "{body}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let put = app.put("rp", "r3", IDS[2], b"\"three\"").await.status();
    assert!(put.is_success(), "{put}");
    assert_eq!(app.get("rp", "r3", IDS[2]).await.status(), StatusCode::OK);

    // A restart keeps the new active master.
    let restarted = tokio::task::spawn_blocking({
        let cfg = app.config.clone();
        move || zkvault::app::open_vault(&cfg, false).unwrap()
    })
    .await
    .unwrap();
    let rows = restarted.store().masters("rp").unwrap();
    let v3 = rows.iter().find(|r| r.version == 3).unwrap();
    assert_eq!(v3.state.as_str(), "active");
    assert!(v3.wrapped.is_some());
}

/// A backup taken while the master later destroyed was the active one: the start on it destroys
/// that master again, and used to leave the namespace without an active master (every write a
/// 500). The reconciliation now makes a new active master.
async fn a_restored_active_master_destroyed_again_is_replaced(db: TestDb) {
    let app = TestApp::start_with(db, 1024 * 1024, &policy()).await;
    let op = app.tokens.operator.clone();
    assert!(app
        .put("rp", "r1", IDS[0], b"\"one\"")
        .await
        .status()
        .is_success());
    // --- backup: v1 active ---
    backup(app.db.url(), "b2", &["masters"]);
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/rotate", &op).await.0,
        StatusCode::OK
    );
    let (s, body) = post(&app, "/v1/ns/rp/masters/1/destroy?shred=true", &op).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let wrapped_before = app.vault.store().masters("rp").unwrap();
    assert!(wrapped_before
        .iter()
        .any(|r| r.version == 1 && r.wrapped.is_none()));
    // --- restore: v2 never existed, v1 active with its material ---
    restore(app.db.url(), "b2", &["masters"]);
    let restarted = tokio::task::spawn_blocking({
        let cfg = app.config.clone();
        move || zkvault::app::open_vault(&cfg, false)
    })
    .await
    .unwrap();
    let restarted = match restarted {
        Ok(v) => v,
        Err(e) => panic!("start on the restored database failed: {e}"),
    };
    let rows = restarted.store().masters("rp").unwrap();
    let states: Vec<(i32, &str)> = rows.iter().map(|r| (r.version, r.state.as_str())).collect();
    assert_eq!(states, [(1, "destroyed"), (2, "active")]);
    let writer = support::app::grant(&restarted, zkvault::vault::Role::Writer, Some("rp"));
    let w = zkvault::vault::RecordWrite {
        name: "r9",
        content_type: "application/json",
        body: b"{}",
        precondition: &zkvault::vault::Precondition::None,
    };
    let put = restarted.put_record(&writer, IDS[3], &w).unwrap();
    assert_eq!(put.master_version, 2);
}

/// A database writer (or a stray `UPDATE`) marking a live master `destroyed` costs availability
/// only: the row fails its MAC, so nothing acts on it (the reconciliation used to record such a
/// row in the keystore's ledger, making the loss permanent). Only a destruction through zkvault
/// writes the ledger.
async fn a_database_write_of_destroyed_stays_recoverable(db: TestDb) {
    let app = TestApp::start_with(db, 1024 * 1024, &policy()).await;
    let op = app.tokens.operator.clone();
    assert!(app
        .put("rp", "r1", IDS[0], b"\"one\"")
        .await
        .status()
        .is_success());
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/rotate", &op).await.0,
        StatusCode::OK
    );
    // The DB writer: state only, material left in place.
    sql(
        &app,
        "UPDATE masters SET state = 'destroyed' WHERE namespace = 'rp' AND version = 1",
    )
    .await;
    // Next scheduler pass: refused, not acted on.
    let vault = app.vault.clone();
    let pass = tokio::task::spawn_blocking(move || vault.reconcile_destructions())
        .await
        .unwrap();
    assert!(
        matches!(pass, Err(zkvault::vault::VaultError::Integrity)),
        "{pass:?}"
    );
    // The "fix": the state put back (as a restore of the previous night's backup would).
    sql(
        &app,
        "UPDATE masters SET state = 'decrypt_only' WHERE namespace = 'rp' AND version = 1",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(app.get("rp", "r1", IDS[0]).await.status(), StatusCode::OK);
    assert!(app
        .vault
        .keyring()
        .keystore()
        .destroyed_masters()
        .unwrap()
        .is_empty());
}

/// A ledger entry on the HSM made without the PIN (a public object, by anything sharing the
/// token) used to count as a destruction. Only private objects, which need the PIN, count.
#[test]
fn a_public_pkcs11_object_made_without_the_pin_destroys_nothing() {
    use cryptoki::object::{Attribute, ObjectClass};
    use zkvault::keystore::pkcs11::{module_context, Pkcs11Keystore};
    use zkvault::keystore::Keystore;
    let Some(config) = support::softhsm::new_token() else {
        return;
    };
    {
        // No login: a public session.
        let ctx = module_context(&config.module).unwrap();
        let slot = ctx
            .get_slots_with_initialized_token()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).unwrap().label() == config.token_label)
            .unwrap();
        let session = ctx.open_rw_session(slot).unwrap();
        let mut value = b"rp".to_vec();
        value.push(0);
        value.extend_from_slice(&1u32.to_be_bytes());
        session
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Label(b"zkvault-master-destroyed".to_vec()),
                Attribute::Value(value),
            ])
            .expect("a public token object needs no PIN");
    }
    let ks = Pkcs11Keystore::open(&config).unwrap();
    assert!(ks.destroyed_masters().unwrap().is_empty());
}
