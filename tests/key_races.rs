//! Key changes racing each other and the data plane, on SQLite and PostgreSQL. Each test
//! reproduces an attack that once lost, corrupted or un-shredded data (issue 9), and shows
//! it now fails.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::app::grant;
use support::app::{query_strings, TestApp};
use support::db::TestDb;
use zkvault::keystore::soft::{SoftKeystore, SoftKeystoreOptions};
use zkvault::keystore::Keystore;
use zkvault::vault::{Actor, Role, VaultError};

on_both_backends!(
    kek_rotation_racing_destruction_never_resurrects_a_master,
    concurrent_kek_and_master_rotations_never_fail_or_leak_keks,
    moves_racing_writes_never_overwrite_them,
    a_move_planned_before_a_write_never_applies_over_it,
    keystore_migration_never_reuses_a_kek_version,
);

const ID: &str = "4930098371";

async fn post(app: &TestApp, path: &str, token: &str) -> (StatusCode, Value) {
    let r = app
        .req(Method::POST, path, token, None)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn count(app: &TestApp, sql: &str) -> usize {
    let (url, sql) = (app.db.url().to_owned(), sql.to_owned());
    tokio::task::spawn_blocking(move || query_strings(&url, &sql))
        .await
        .unwrap()[0]
        .parse()
        .unwrap()
}

/// `POST /v1/keys/kek/rotate` in a loop beside `destroy?shred=true` of many masters used to
/// write the destroyed masters' material back (the rotation read them before the destruction
/// and committed after): "shredded" records then read back in clear, even after a restart.
async fn kek_rotation_racing_destruction_never_resurrects_a_master(db: TestDb) {
    const MASTERS: usize = 20;
    let app = Arc::new(TestApp::start(db).await);
    // Master v(i+1) protects record r{i}; then one more rotation makes them all decrypt-only.
    for i in 0..MASTERS {
        assert!(app
            .put("rp", &format!("r{i}"), ID, b"{}")
            .await
            .status()
            .is_success());
        assert_eq!(
            post(&app, "/v1/ns/rp/masters/rotate", &app.tokens.operator)
                .await
                .0,
            StatusCode::OK
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let rotations = tokio::spawn({
        let (app, stop) = (app.clone(), stop.clone());
        async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let (status, body) = post(&app, "/v1/keys/kek/rotate", &app.tokens.operator).await;
                assert!(
                    status == StatusCode::OK || status == StatusCode::CONFLICT,
                    "{status} {body}"
                );
                n += 1;
            }
            n
        }
    });
    for v in 1..=MASTERS {
        let (status, body) = post(
            &app,
            &format!("/v1/ns/rp/masters/{v}/destroy?shred=true"),
            &app.tokens.operator,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["shredded_records"], 1);
    }
    stop.store(true, Ordering::SeqCst);
    println!(
        "{} KEK rotations ran beside the destructions",
        rotations.await.unwrap()
    );

    let resurrected = count(&app, "SELECT CAST(count(*) AS TEXT) AS v FROM masters WHERE state = 'destroyed' AND wrapped IS NOT NULL").await;
    assert_eq!(resurrected, 0, "a destroyed master got its material back");
    for i in 0..MASTERS {
        assert_eq!(
            app.get("rp", &format!("r{i}"), ID).await.status(),
            StatusCode::GONE,
            "r{i} readable after its master was shredded"
        );
    }
    let vault = tokio::task::spawn_blocking({
        let app = app.clone();
        move || app.reopen()
    })
    .await
    .unwrap();
    for i in 0..MASTERS {
        let got = vault.get_record(
            &grant(&vault, Role::Reader, Some("rp")),
            ID,
            &format!("r{i}"),
        );
        assert!(
            matches!(got, Err(VaultError::Shredded)),
            "r{i} readable after a restart"
        );
    }
}

/// Two loops of KEK rotations beside two loops of master rotations used to answer hundreds of
/// 500s ("KEK version N is Retired") and leave a new, unused KEK behind each failure.
async fn concurrent_kek_and_master_rotations_never_fail_or_leak_keks(db: TestDb) {
    const EACH: usize = 12;
    let app = Arc::new(TestApp::start(db).await);
    assert!(app
        .put("rp", "demographics", ID, b"{\"v\":1}")
        .await
        .status()
        .is_success());
    let keks_before = app.vault.keyring().keystore().list_keks().unwrap().len();
    let mut tasks = Vec::new();
    for path in [
        "/v1/keys/kek/rotate",
        "/v1/keys/kek/rotate",
        "/v1/ns/rp/masters/rotate",
        "/v1/ns/rp/masters/rotate",
    ] {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..EACH {
                let (status, body) = post(&app, path, &app.tokens.operator).await;
                assert!(
                    status == StatusCode::OK || status == StatusCode::CONFLICT,
                    "{path}: {status} {body}"
                );
                ok += usize::from(status == StatusCode::OK);
            }
            (path, ok)
        }));
    }
    let mut kek_rotations = 0;
    for t in tasks {
        let (path, ok) = t.await.unwrap();
        if path.contains("kek") {
            kek_rotations += ok;
        }
    }
    let keks = app.vault.keyring().keystore().list_keks().unwrap();
    assert_eq!(
        keks.len(),
        keks_before + kek_rotations,
        "every KEK in the keystore came from a rotation that answered 200"
    );
    assert_eq!(
        keks.iter()
            .filter(|k| k.state == zkvault::keystore::KekState::Active)
            .count(),
        1
    );
    let stale = count(&app, &format!("SELECT CAST(count(*) AS TEXT) AS v FROM masters WHERE wrapped IS NOT NULL AND kek_version <> {}", keks.last().unwrap().version)).await;
    assert_eq!(stale, 0, "every master is wrapped under the active KEK");
    let r = app.get("rp", "demographics", ID).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"{\"v\":1}");
}

/// A move (lazy re-key on read, or bulk) planned from a record used to overwrite a write that
/// replaced it meanwhile under the same master: a rewrap put the old DEK over the new body (500
/// `integrity` for ever), a re-key put the old body back under the new ETag. A second instance,
/// whose view of the masters lags, replaces the record in a loop while readers and a bulk job on
/// the first re-key it away from a master just marked compromised; the last acknowledged write
/// must be what reads back.
async fn moves_racing_writes_never_overwrite_them(db: TestDb) {
    let app = Arc::new(TestApp::start(db).await);
    let peer = app.start_peer().await;
    for round in 0..3 {
        assert!(app
            .put("rp", "demographics", ID, b"{\"w\":-1}")
            .await
            .status()
            .is_success());
        // Its master is compromised: every read and bulk pass re-keys it, and each write
        // seals it under the new master.
        let active: Value = app
            .req(Method::GET, "/v1/keys", &app.tokens.operator, None)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let v = active["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["namespace"] == "rp")
            .unwrap()["masters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["state"] == "active")
            .unwrap()["version"]
            .clone();
        assert_eq!(
            post(
                &app,
                &format!("/v1/ns/rp/masters/{v}/compromise"),
                &app.tokens.operator
            )
            .await
            .0,
            StatusCode::OK
        );
        let stop = Arc::new(AtomicBool::new(false));
        let mut movers = Vec::new();
        for k in 0..3 {
            let (app, stop) = (app.clone(), stop.clone());
            movers.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let status = if k == 0 {
                        app.req(
                            Method::POST,
                            "/v1/ns/rp/reencrypt",
                            &app.tokens.reencrypt,
                            None,
                        )
                        .json(&serde_json::json!({ "resident_ids": [ID] }))
                        .send()
                        .await
                        .unwrap()
                        .status()
                    } else {
                        app.get("rp", "demographics", ID).await.status()
                    };
                    assert!(
                        status == StatusCode::OK || status == StatusCode::CONFLICT,
                        "mover answered {status}"
                    );
                }
            }));
        }
        let mut last = Vec::new();
        let started = std::time::Instant::now();
        for w in 0.. {
            let body = format!("{{\"round\":{round},\"w\":{w}}}").into_bytes();
            let r = app
                .client
                .put(peer.url("/v1/ns/rp/records/demographics"))
                .bearer_auth(&app.tokens.writer)
                .header("Resident-Id", ID)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            match r.status() {
                s if s.is_success() => last = body,
                s => assert_eq!(s, StatusCode::CONFLICT, "write answered {s}"),
            }
            if started.elapsed() > Duration::from_millis(1500) && w >= 20 {
                break;
            }
        }
        stop.store(true, Ordering::SeqCst);
        for m in movers {
            m.await.unwrap();
        }
        let r = app.get("rp", "demographics", ID).await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "round {round}: the record no longer opens"
        );
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            &last[..],
            "round {round}: a move overwrote the last acknowledged write"
        );
    }
    peer.handle.stop(false).await;
}

/// `keystore migrate` used to number the target's KEK v1, overwriting the row of the source's
/// long-destroyed v1, and left the source's active KEK `active` for ever.
async fn keystore_migration_never_reuses_a_kek_version(db: TestDb) {
    let app = TestApp::start(db).await;
    assert!(app
        .put("rp", "demographics", ID, b"{}")
        .await
        .status()
        .is_success());
    for _ in 0..3 {
        assert_eq!(
            post(&app, "/v1/keys/kek/rotate", &app.tokens.operator)
                .await
                .0,
            StatusCode::OK
        ); // v2..v4
    }
    let vault = app.vault.clone();
    let target_path = app.dir.path().join("target.zks");
    let report = tokio::task::spawn_blocking(move || {
        vault
            .destroy_kek(&grant(&vault, Role::Operator, None), 1)
            .unwrap();
        // The operator ran `keystore init` on the target first: it has a KEK v1 of its own.
        let target = SoftKeystore::create(
            &target_path,
            &zkvault::secret::SecretString::new("target"),
            SoftKeystoreOptions::for_tests(),
        )
        .unwrap();
        assert_eq!(target.create_kek().unwrap(), 1);
        vault
            .migrate_keystore(&grant(&vault, Role::Operator, None), &target)
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        report.active, 5,
        "numbered above every version the deployment used"
    );
    let keks: Value = app
        .req(Method::GET, "/v1/keys", &app.tokens.operator, None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keks = keks["keks"].as_array().unwrap();
    let state = |v: i64| {
        keks.iter().find(|k| k["version"] == v).map(|k| {
            (
                k["state"].as_str().unwrap().to_owned(),
                k["keystore"].as_str().unwrap().to_owned(),
            )
        })
    };
    let (s1, ks1) = state(1).unwrap();
    let (s4, ks4) = state(4).unwrap();
    let (s5, ks5) = state(5).unwrap();
    assert_eq!(
        (s1.as_str(), s4.as_str(), s5.as_str()),
        ("destroyed", "retired", "active"),
        "{keks:?}"
    );
    assert_eq!(ks1, ks4);
    assert_ne!(ks4, ks5, "each version names its keystore");
    assert!(ks5.starts_with("soft:"));
    assert_eq!(
        keks.iter().filter(|k| k["state"] == "active").count(),
        1,
        "one active KEK in the deployment: {keks:?}"
    );
}

/// The same race, made deterministic at the storage boundary: a re-key is planned from the
/// record at revision 1, a write replaces the record under the same master (as an instance
/// with a lagging view could, before writes re-checked their master), then the planned move is
/// applied. It must apply to nothing and leave the write's bytes in place.
async fn a_move_planned_before_a_write_never_applies_over_it(db: TestDb) {
    let app = TestApp::start(db).await;
    assert!(app
        .put("rp", "demographics", ID, b"{}")
        .await
        .status()
        .is_success());
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/1/compromise", &app.tokens.operator)
            .await
            .0,
        StatusCode::OK
    );
    let hex = if app.db.is_postgres() {
        "encode(id, 'hex')"
    } else {
        "hex(id)"
    };
    let (url, q) = (
        app.db.url().to_owned(),
        format!("SELECT {hex} AS v FROM records"),
    );
    let id = hex::decode(
        tokio::task::spawn_blocking(move || query_strings(&url, &q))
            .await
            .unwrap()[0]
            .to_lowercase(),
    )
    .unwrap();
    let store = app.vault.store().clone();
    let (url, pg) = (app.db.url().to_owned(), app.db.is_postgres());
    let (applied, body) = tokio::task::spawn_blocking(move || {
        // Plan: the move as a reader would compute it from revision 1.
        let row = store.record_by_id(&id).unwrap().unwrap();
        assert_eq!((row.revision, row.master_version), (1, 1));
        let planned = zkvault::storage::RecordMove {
            id: id.clone(),
            revision: row.revision,
            from_version: 1,
            to_version: 2,
            dek_nonce: row.dek_nonce.clone(),
            wrapped_dek: row.wrapped_dek.clone(),
            new_body: Some((row.body_nonce.clone(), b"planned from revision 1".to_vec())),
        };
        // Replace: a write lands meanwhile, still under master 1 (written here as raw SQL: the
        // service itself no longer seals under a master that is not active).
        let newer = hex::encode(b"the newer write");
        let blob = if pg {
            format!("decode('{newer}', 'hex')")
        } else {
            format!("X'{newer}'")
        };
        support::app::execute_sql(
            &url,
            &format!("UPDATE records SET revision = 2, body_ciphertext = {blob}"),
        );
        // Apply.
        let applied = store
            .move_records(
                "rp",
                &[planned],
                &Actor::new("test", "test").entry("record.rekey", "rp", "demographics"),
            )
            .unwrap();
        (
            applied,
            store.record_by_id(&id).unwrap().unwrap().body_ciphertext,
        )
    })
    .await
    .unwrap();
    assert_eq!(
        applied, 0,
        "the move planned from revision 1 applied over revision 2"
    );
    assert_eq!(body, b"the newer write");
}
