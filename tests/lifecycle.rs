//! Key lifecycle end to end, on SQLite and PostgreSQL: rotation without disruption, lazy and
//! bulk re-encryption, compromise response, destruction, KEK rotation and keystore migration.

mod support;

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::app::{execute_sql, query_strings, TestApp};
use support::db::TestDb;
use zkvault::keystore::soft::{SoftKeystore, SoftKeystoreOptions};
use zkvault::keystore::{
    AuditAnchor, KekInfo, Keystore, KeystoreError, NewSigningKey, SigningKeyRef,
};
use zkvault::vault::{Grant, Role, Vault};
use zkvault_core::{Secret32, WrapContext};

on_both_backends!(
    records_survive_dm_rotation_lazily_moving_with_body_untouched,
    bulk_reencrypt_moves_listed_residents_then_master_retires_and_is_destroyed,
    compromised_master_records_are_rekeyed_then_destroyable,
    shredding_answers_410,
    invalid_transitions_are_refused,
    kek_rotation_rewraps_masters_only_and_survives_a_crash,
    keystore_migration_keeps_records_readable,
    traffic_continues_through_rotations_and_revocation,
    a_kek_rotation_never_commits_a_wrap_the_keystore_cannot_open,
    bulk_rekeying_commits_large_records_in_bounded_chunks,
    the_served_app_runs_the_policy_scheduler,
    under_dual_control_a_shred_takes_two_different_operators,
    a_restored_backup_never_brings_a_shredded_master_back,
);

/// A keystore that returns a bad wrap (e.g. an HSM that generates the GCM IV and reports
/// another) used to have every master overwritten with it: all records lost at the next
/// restart. Each rewrap is now opened once before the commit.
async fn a_kek_rotation_never_commits_a_wrap_the_keystore_cannot_open(db: TestDb) {
    let app = TestApp::start(db).await;
    put_all(&app).await;
    let inner = app.vault.keyring().keystore().clone();
    let faulty = Arc::new(Failing {
        inner: inner.clone(),
        fail: false.into(),
        corrupt: true.into(),
    });
    let before = app.vault.store().all_masters().unwrap();
    let vault = reopen(&app, faulty); // opening only unwraps, which the faulty keystore does right
    let err = tokio::task::spawn_blocking(move || vault.rotate_kek(&operator(&vault)).err())
        .await
        .unwrap();
    assert!(
        matches!(
            err,
            Some(zkvault::vault::VaultError::KeystoreUnavailable(_))
        ),
        "{err:?}"
    );
    let after = app.vault.store().all_masters().unwrap();
    assert!(
        before
            .iter()
            .zip(&after)
            .all(|(b, a)| b.wrapped == a.wrapped && b.kek_version == a.kek_version),
        "a master was rewritten"
    );
    read_direct(&reopen(&app, inner));
    app.stop().await;
}

const IDS: [&str; 4] = ["4930098371", "4930098372", "4930098373", "4930098374"];

fn operator(vault: &Vault) -> Grant {
    support::app::grant(vault, Role::Operator, None)
}

async fn post(app: &TestApp, path: &str, token: &str) -> (StatusCode, Value) {
    app.call(Method::POST, path, token, None).await
}

/// `name → (master_version, hex(wrapped_dek), hex(body_ciphertext))` for every record.
async fn rows(app: &TestApp) -> Vec<(String, String, String, String)> {
    let url = app.db.url().to_owned();
    let hex = if app.db.is_postgres() {
        "encode({}, 'hex')"
    } else {
        "hex({})"
    };
    let q = format!(
        "SELECT name || '|' || master_version || '|' || {} || '|' || {} AS v FROM records ORDER BY name, blind_index",
        hex.replace("{}", "wrapped_dek"),
        hex.replace("{}", "body_ciphertext")
    );
    tokio::task::spawn_blocking(move || query_strings(&url, &q))
        .await
        .unwrap()
        .into_iter()
        .map(|v| {
            let p: Vec<&str> = v.split('|').collect();
            (
                p[0].to_owned(),
                p[1].to_owned(),
                p[2].to_owned(),
                p[3].to_owned(),
            )
        })
        .collect()
}

async fn put_all(app: &TestApp) {
    for (i, id) in IDS.iter().enumerate() {
        let r = app
            .put(
                "rp",
                "demographics",
                id,
                format!("{{\"n\":{i}}}").as_bytes(),
            )
            .await;
        assert!(r.status().is_success());
    }
}

async fn read_all(app: &TestApp) {
    for (i, id) in IDS.iter().enumerate() {
        let r = app.get("rp", "demographics", id).await;
        assert_eq!(r.status(), StatusCode::OK, "{id}");
        assert_eq!(r.text().await.unwrap(), format!("{{\"n\":{i}}}"));
    }
}

async fn records_survive_dm_rotation_lazily_moving_with_body_untouched(db: TestDb) {
    let app = TestApp::start(db).await;
    put_all(&app).await;
    let before = rows(&app).await;
    assert!(before.iter().all(|r| r.1 == "1"));

    let (status, body) = post(&app, "/v1/ns/rp/masters/rotate", &app.tokens.operator).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"namespace": "rp", "previous": 1, "active": 2}));
    // New writes go to v2 at once.
    let r = app.put("rp", "new", IDS[0], b"x").await;
    assert_eq!(r.json::<Value>().await.unwrap()["master_version"], 2);

    // Reading moves each record to v2 (policy lazy_reencrypt defaults to on): DEK rewrapped,
    // body ciphertext byte-for-byte the same.
    read_all(&app).await;
    let after = rows(&app).await;
    for (b, a) in before
        .iter()
        .zip(after.iter().filter(|r| r.0 == "demographics"))
    {
        assert_eq!(a.1, "2", "moved to the new master");
        assert_ne!(a.2, b.2, "DEK envelope rewrapped");
        assert_eq!(a.3, b.3, "body ciphertext untouched");
    }
    read_all(&app).await;

    let keys: Value = app
        .req(Method::GET, "/v1/keys", &app.tokens.operator, None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rp = keys["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["namespace"] == "rp")
        .unwrap()
        .clone();
    assert_eq!(rp["masters"][0]["state"], "decrypt_only");
    assert_eq!(rp["masters"][0]["records"], 0);
    assert_eq!(rp["masters"][1]["state"], "active");
    assert_eq!(rp["masters"][1]["records"], 5);
    app.stop().await;
}

async fn bulk_reencrypt_moves_listed_residents_then_master_retires_and_is_destroyed(db: TestDb) {
    let app = TestApp::start(db).await;
    put_all(&app).await;
    let before = rows(&app).await;
    post(&app, "/v1/ns/rp/masters/rotate", &app.tokens.operator).await;

    let reencrypt = |ids: Vec<&str>| {
        let token = app.tokens.reencrypt.clone();
        app.req(Method::POST, "/v1/ns/rp/reencrypt", &token, None)
            .json(&json!({ "resident_ids": ids }))
            .send()
    };
    let r = reencrypt(vec![IDS[0], IDS[1], IDS[2], IDS[3], "nobody"])
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"moved": 4, "rekeyed": 0, "already_current": 0, "not_found": 1})
    );
    // Idempotent.
    let r = reencrypt(IDS.to_vec()).await.unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"moved": 0, "rekeyed": 0, "already_current": 4, "not_found": 0})
    );
    let after = rows(&app).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!((a.1.as_str(), &a.3), ("2", &b.3), "on v2, body untouched");
    }
    // Bad input: a malformed ID or too many IDs is a 400 and moves nothing; wrong role is 403.
    let r = reencrypt(vec![IDS[0], "bad id"]).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("resident_ids[1]"));
    let r = reencrypt(vec!["1"; 1001]).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = app
        .req(
            Method::POST,
            "/v1/ns/rp/reencrypt",
            &app.tokens.writer,
            None,
        )
        .json(&json!({"resident_ids": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // The scheduler's pass retires v1 (no records left); destroying it then needs no shredding.
    let vault = app.vault.clone();
    let report = tokio::task::spawn_blocking(move || {
        vault.run_due_lifecycle(zkvault::vault::now_ms()).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(report.masters_retired, vec![("rp".to_string(), 1)]);
    let (status, body) = post(&app, "/v1/ns/rp/masters/1/destroy", &app.tokens.operator).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["shredded_records"], 0);
    read_all(&app).await;
    app.stop().await;
}

async fn compromised_master_records_are_rekeyed_then_destroyable(db: TestDb) {
    let app = TestApp::start(db).await;
    put_all(&app).await;
    let before = rows(&app).await;
    let (status, body) = post(&app, "/v1/ns/rp/masters/1/compromise", &app.tokens.operator).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"namespace": "rp", "version": 1, "rotated_to": 2, "records_at_risk": 4})
    );

    // A read re-keys: new DEK and new body ciphertext, same plaintext, same ETag and revision.
    let etag = app.get("rp", "demographics", IDS[0]).await.headers()["etag"].clone();
    let r = app.get("rp", "demographics", IDS[0]).await;
    assert_eq!(
        r.headers()["etag"],
        etag,
        "re-keying does not change the representation"
    );
    assert_eq!(r.headers()["record-revision"], "1");
    let after = rows(&app).await;
    let moved: Vec<_> = after.iter().filter(|a| a.1 == "2").collect();
    assert_eq!(moved.len(), 1);
    assert!(
        before.iter().all(|b| b.3 != moved[0].3),
        "body re-encrypted"
    );

    // The bulk job re-keys the rest.
    let r = app
        .req(
            Method::POST,
            "/v1/ns/rp/reencrypt",
            &app.tokens.reencrypt,
            None,
        )
        .json(&json!({ "resident_ids": IDS }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"moved": 0, "rekeyed": 3, "already_current": 1, "not_found": 0})
    );
    let after = rows(&app).await;
    for b in &before {
        assert!(
            after.iter().all(|a| a.3 != b.3),
            "no body ciphertext of the compromised era remains"
        );
    }
    read_all(&app).await;
    // Nothing is left under v1: it can be destroyed without shredding anything.
    let (status, body) = post(&app, "/v1/ns/rp/masters/1/destroy", &app.tokens.operator).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["shredded_records"], 0);
    read_all(&app).await;
    app.stop().await;
}

/// The bulk re-key used to hold every body of a batch in memory and commit them in one
/// transaction. Twelve 1 MB records under a compromised master now commit in two chunks (8 MiB
/// of bodies at most, plus one record), each with its audit entry, and all read back.
async fn bulk_rekeying_commits_large_records_in_bounded_chunks(db: TestDb) {
    let policy =
        support::app::POLICY.replacen("max_record_bytes = 4096", "max_record_bytes = 1048576", 1);
    let app = TestApp::start_with(db, 1024 * 1024, &policy).await;
    let ids: Vec<String> = (0..12u64).map(|i| format!("R{i}")).collect();
    let body = |i: usize| {
        format!(
            "\"{}\"",
            char::from(b'a' + i as u8).to_string().repeat(1_000_000 - 2)
        )
        .into_bytes()
    };
    for (i, id) in ids.iter().enumerate() {
        assert!(app
            .put("rp", "scan", id, &body(i))
            .await
            .status()
            .is_success());
    }
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/1/compromise", &app.tokens.operator)
            .await
            .0,
        StatusCode::OK
    );
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
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"moved": 0, "rekeyed": 12, "already_current": 0, "not_found": 0})
    );
    let url = app.db.url().to_owned();
    let chunks = tokio::task::spawn_blocking(move || {
        query_strings(
            &url,
            "SELECT target AS v FROM audit WHERE operation = 'record.rekey' ORDER BY id",
        )
    })
    .await
    .unwrap();
    assert_eq!(
        chunks,
        vec!["9 records", "3 records"],
        "re-keys committed in bounded chunks"
    );
    for (i, id) in ids.iter().enumerate() {
        let r = app.get("rp", "scan", id).await;
        assert_eq!(r.bytes().await.unwrap().as_ref(), body(i).as_slice());
    }
    app.stop().await;
}

async fn shredding_answers_410(db: TestDb) {
    let app = TestApp::start(db).await;
    put_all(&app).await;
    post(&app, "/v1/ns/rp/masters/rotate", &app.tokens.operator).await;
    let (status, body) = post(&app, "/v1/ns/rp/masters/1/destroy", &app.tokens.operator).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body["message"].as_str().unwrap().contains("4 records"));
    read_all(&app).await; // refused: nothing changed (and lazy reads moved them to v2)

    // Records still on v1 (written before rotation, never read since) are shredded.
    let r = app.put("rp", "late", IDS[0], b"on v2").await;
    assert_eq!(r.json::<Value>().await.unwrap()["master_version"], 2);
    post(&app, "/v1/ns/rp/masters/rotate", &app.tokens.operator).await; // v3 active; v2 decrypt-only
    let (status, body) = post(
        &app,
        "/v1/ns/rp/masters/2/destroy?shred=true",
        &app.tokens.operator,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["shredded_records"], 5);
    let r = app.get("rp", "demographics", IDS[0]).await;
    assert_eq!(r.status(), StatusCode::GONE);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "shredded");
    app.stop().await;
}

async fn invalid_transitions_are_refused(db: TestDb) {
    let app = TestApp::start(db).await;
    put_all(&app).await;
    let op = app.tokens.operator.clone();
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/1/destroy?shred=true", &op)
            .await
            .0,
        StatusCode::CONFLICT,
        "active is never destroyed"
    );
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/9/compromise", &op).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post(&app, "/v1/ns/nope/masters/rotate", &op).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/1/destroy?shred=maybe", &op)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/rotate", &app.tokens.writer)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    post(&app, "/v1/ns/rp/masters/rotate", &op).await;
    read_all(&app).await; // all on v2 now; v1 empty
    let vault = app.vault.clone();
    tokio::task::spawn_blocking(move || {
        vault
            .retire_empty_masters(&zkvault::vault::Actor::new("test", "test"))
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/1/compromise", &op).await.0,
        StatusCode::CONFLICT,
        "retired cannot be compromised"
    );
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/1/destroy", &op).await.0,
        StatusCode::OK
    );
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/1/destroy", &op).await.0,
        StatusCode::CONFLICT,
        "already destroyed"
    );
    read_all(&app).await;
    app.stop().await;
}

/// A keystore that fails every wrap once `fail` is set: a crash in the middle of a rotation;
/// or, once `corrupt` is set, returns wraps it cannot open again (a faulty HSM).
struct Failing {
    inner: Arc<dyn Keystore>,
    fail: std::sync::atomic::AtomicBool,
    corrupt: std::sync::atomic::AtomicBool,
}

impl Keystore for Failing {
    fn kind(&self) -> &'static str {
        "failing"
    }
    fn id(&self) -> String {
        self.inner.id()
    }
    fn create_kek_after(&self, floor: u32) -> Result<u32, KeystoreError> {
        self.inner.create_kek_after(floor)
    }
    fn list_keks(&self) -> Result<Vec<KekInfo>, KeystoreError> {
        self.inner.list_keks()
    }
    fn wrap(&self, v: u32, ctx: &WrapContext, s: &Secret32) -> Result<Vec<u8>, KeystoreError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(KeystoreError::Unavailable("injected failure".into()));
        }
        let mut wrapped = self.inner.wrap(v, ctx, s)?;
        if self.corrupt.load(std::sync::atomic::Ordering::SeqCst) {
            *wrapped.last_mut().unwrap() ^= 1;
        }
        Ok(wrapped)
    }
    fn unwrap(&self, v: u32, ctx: &WrapContext, w: &[u8]) -> Result<Secret32, KeystoreError> {
        self.inner.unwrap(v, ctx, w)
    }
    fn retire_kek(&self, v: u32) -> Result<(), KeystoreError> {
        self.inner.retire_kek(v)
    }
    fn destroy_kek(&self, v: u32) -> Result<(), KeystoreError> {
        self.inner.destroy_kek(v)
    }
    fn record_destroyed(&self, ns: &str, v: u32) -> Result<(), KeystoreError> {
        self.inner.record_destroyed(ns, v)
    }
    fn destroyed_masters(
        &self,
    ) -> Result<std::collections::BTreeSet<(String, u32)>, KeystoreError> {
        self.inner.destroyed_masters()
    }
    fn audit_anchor(&self) -> Result<Option<AuditAnchor>, KeystoreError> {
        self.inner.audit_anchor()
    }
    fn advance_audit_anchor(&self, anchor: &AuditAnchor) -> Result<(), KeystoreError> {
        self.inner.advance_audit_anchor(anchor)
    }
    fn check(&self) -> Result<(), KeystoreError> {
        self.inner.check()
    }
    fn generate_signing_key(
        &self,
        kek: u32,
        ctx: &WrapContext,
    ) -> Result<NewSigningKey, KeystoreError> {
        self.inner.generate_signing_key(kek, ctx)
    }
    fn sign_digest(
        &self,
        ctx: &WrapContext,
        key: &SigningKeyRef,
        digest: &[u8; 32],
    ) -> Result<[u8; 64], KeystoreError> {
        self.inner.sign_digest(ctx, key, digest)
    }
    fn destroy_signing_key(&self, key: &SigningKeyRef) -> Result<(), KeystoreError> {
        self.inner.destroy_signing_key(key)
    }
}

fn reopen(app: &TestApp, keystore: Arc<dyn Keystore>) -> Arc<Vault> {
    app.reopen_with(keystore).unwrap()
}

fn read_direct(vault: &Vault) {
    for (i, id) in IDS.iter().enumerate() {
        let r = vault
            .get_record(
                &support::app::grant(vault, Role::Reader, Some("rp")),
                id,
                "demographics",
            )
            .unwrap();
        assert_eq!(*r.body, format!("{{\"n\":{i}}}").into_bytes());
    }
}

async fn kek_rotation_rewraps_masters_only_and_survives_a_crash(db: TestDb) {
    let app = TestApp::start(db).await;
    put_all(&app).await;
    // Bulk synthetic rows (undecryptable, but real rows): KEK rotation must not touch any row.
    let url = app.db.url().to_owned();
    let fill = if app.db.is_postgres() {
        "INSERT INTO records SELECT decode(lpad(to_hex(i), 32, '0'), 'hex'), 'rp', decode(lpad(to_hex(i), 64, '0'), 'hex'), 'bulk', 1, 1, \
         decode(repeat('00', 24), 'hex'), decode(repeat('00', 48), 'hex'), decode(repeat('00', 24), 'hex'), decode(repeat('00', 64), 'hex'), \
         'application/json', 48, 1, 'e', 0, 0 FROM generate_series(1, 100000) AS i"
            .to_string()
    } else {
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 100000) \
         INSERT INTO records SELECT randomblob(16), 'rp', randomblob(32), 'bulk', 1, 1, zeroblob(24), zeroblob(48), zeroblob(24), zeroblob(64), \
         'application/json', 48, 1, 'e', 0, 0 FROM s"
            .to_string()
    };
    tokio::task::spawn_blocking(move || {
        execute_sql(&url, &fill);
        execute_sql(&url, "CREATE TABLE records_before AS SELECT * FROM records");
    })
    .await
    .unwrap();

    let inner = app.vault.keyring().keystore().clone();
    let failing = Arc::new(Failing {
        inner: inner.clone(),
        fail: false.into(),
        corrupt: false.into(),
    });
    let vault = reopen(&app, failing.clone());

    // Crash between "new KEK created" and "rewrap committed": every record stays readable.
    failing
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let v = vault.clone();
    let crashed = tokio::task::spawn_blocking(move || v.rotate_kek(&operator(&v)))
        .await
        .unwrap();
    failing
        .fail
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(crashed.is_err(), "injected failure surfaces");
    let fresh = reopen(&app, inner.clone());
    read_direct(&fresh);

    // Rerun: completes, and only masters and index keys were rewritten.
    let v = vault.clone();
    let rotation = tokio::task::spawn_blocking(move || v.rotate_kek(&operator(&v)).unwrap())
        .await
        .unwrap();
    assert_eq!(rotation.active, 3);
    assert_eq!(rotation.rewrapped_masters, 2);
    assert_eq!(rotation.rewrapped_index_keys, 2);
    println!(
        "KEK rotation with 100,004 records: {:.1} ms",
        rotation.elapsed_ms
    );
    let url = app.db.url().to_owned();
    let unchanged = tokio::task::spawn_blocking(move || {
        query_strings(
            &url,
            "SELECT CAST(COUNT(*) AS TEXT) AS v FROM records r JOIN records_before b ON r.id = b.id \
             WHERE r.wrapped_dek = b.wrapped_dek AND r.dek_nonce = b.dek_nonce AND r.body_ciphertext = b.body_ciphertext \
             AND r.master_version = b.master_version AND r.revision = b.revision AND r.updated_at = b.updated_at",
        )
    })
    .await
    .unwrap();
    assert_eq!(
        unchanged,
        vec!["100004".to_string()],
        "no record row was written"
    );
    let masters = app.vault.store().all_masters().unwrap();
    assert!(masters.iter().all(|m| m.kek_version == 3));
    read_direct(&reopen(&app, inner.clone()));

    // The old KEKs can now be destroyed; the active one cannot.
    let v = vault.clone();
    tokio::task::spawn_blocking(move || {
        v.destroy_kek(&operator(&v), 1).unwrap();
        assert!(v.destroy_kek(&operator(&v), 3).is_err());
    })
    .await
    .unwrap();
    read_direct(&reopen(&app, inner));
    app.stop().await;
}

async fn keystore_migration_keeps_records_readable(db: TestDb) {
    let app = TestApp::start(db).await;
    put_all(&app).await;
    let before = rows(&app).await;
    // soft → another soft keystore (HSM A → HSM B is the same code path), then → PKCS#11.
    let target_path = app.dir.path().join("target.zks");
    let target: Arc<dyn Keystore> = Arc::new(
        SoftKeystore::create(
            &target_path,
            &zkvault::secret::SecretString::new("other"),
            SoftKeystoreOptions::for_tests(),
        )
        .unwrap(),
    );
    assert!(app.vault.checkpoint_audit().unwrap() >= 1);
    // The audit anchor moves with the deployment, so the target still refuses a rollback.
    let anchor = app.vault.keyring().keystore().audit_anchor().unwrap();
    assert!(anchor.is_some());
    let vault = app.vault.clone();
    let t = target.clone();
    let report = tokio::task::spawn_blocking(move || {
        vault
            .migrate_keystore(&operator(&vault), t.as_ref())
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(report.rewrapped_masters, 2);
    assert_eq!(target.audit_anchor().unwrap(), anchor);
    let migrated = reopen(&app, target.clone());
    read_direct(&migrated);
    // The audit checkpoints moved with the deployment: the target keystore checks them (they
    // used to stay MACed under the source's KEK, which the target does not hold).
    let checked = migrated.verify_audit().unwrap();
    assert!(
        checked.first_break.is_none() && checked.checkpoints > 0,
        "{checked:?}"
    );
    assert_eq!(rows(&app).await, before, "records untouched");
    // The running instance still holds the old keystore: it answers, but can unwrap nothing
    // stored, so it must not say it is ready (it used to answer 200).
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Nor may it change keys: a KEK rotation used to create a KEK in the old keystore, and a
    // master rotation then wrapped a new master under it, where no instance could open it.
    let old_keks = app.vault.keyring().keystore().list_keks().unwrap();
    let url = app.db.url().to_owned();
    let masters = move || query_strings(&url, "SELECT CAST(count(*) AS TEXT) AS v FROM masters");
    let masters_before = tokio::task::spawn_blocking(masters.clone()).await.unwrap();
    for path in ["/v1/keys/kek/rotate", "/v1/ns/rp/masters/rotate"] {
        let (status, body) = post(&app, path, &app.tokens.operator).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
    }
    assert_eq!(
        app.vault.keyring().keystore().list_keks().unwrap(),
        old_keks,
        "a KEK was created in the old keystore"
    );
    assert_eq!(
        tokio::task::spawn_blocking(masters).await.unwrap(),
        masters_before,
        "a master was created"
    );
    read_direct(&reopen(&app, target.clone()));
    // The old keystore no longer opens this database's masters: the service refuses to start with
    // it, and changes nothing first. (It used to create a KEK in the old keystore — its KEK was
    // retired by the migration — and record it as the deployment's active KEK, the target's
    // marked retired, before refusing.)
    let store = app.vault.store().clone();
    let old = app.vault.keyring().keystore().clone();
    let (keks_before, old_keks_before) = (store.keks().unwrap(), old.list_keks().unwrap());
    assert!(app.reopen_with(old.clone()).is_err());
    assert_eq!(
        store.keks().unwrap(),
        keks_before,
        "the refused start changed the KEK table"
    );
    assert_eq!(
        old.list_keks().unwrap(),
        old_keks_before,
        "the refused start created a KEK in the old keystore"
    );

    if let Some(cfg) = support::softhsm::new_token() {
        let hsm: Arc<dyn Keystore> =
            Arc::new(zkvault::keystore::pkcs11::Pkcs11Keystore::open(&cfg).unwrap());
        let h = hsm.clone();
        tokio::task::spawn_blocking(move || {
            migrated
                .migrate_keystore(&operator(&migrated), h.as_ref())
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(hsm.audit_anchor().unwrap(), anchor);
        let on_hsm = reopen(&app, hsm);
        read_direct(&on_hsm);
        let v = Arc::new(on_hsm);
        let v2 = v.clone();
        tokio::task::spawn_blocking(move || v2.rotate_kek(&operator(&v2)).unwrap())
            .await
            .unwrap();
        read_direct(&v);
        assert_eq!(
            rows(&app).await,
            before,
            "records untouched through HSM migration and rotation"
        );
    }
    app.stop().await;
}

async fn traffic_continues_through_rotations_and_revocation(db: TestDb) {
    let app = Arc::new(TestApp::start(db).await);
    put_all(&app).await;
    let victim = tokio::task::spawn_blocking({
        let v = app.vault.clone();
        move || {
            v.create_credential(
                &support::app::grant(&v, Role::Admin, None),
                "victim",
                &[zkvault::vault::Role::Reader],
                &["rp".into()],
            )
            .unwrap()
        }
    })
    .await
    .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (app, stop) = (app.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = IDS[(c + n as usize) % IDS.len()];
                let r = if n.is_multiple_of(4) {
                    app.put("rp", &format!("load-{c}"), id, b"x").await
                } else {
                    app.get("rp", "demographics", id).await
                };
                assert!(
                    r.status().is_success(),
                    "client {c} request {n}: {}",
                    r.status()
                );
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _) = post(&app, "/v1/keys/kek/rotate", &app.tokens.operator).await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, _) = post(&app, "/v1/ns/rp/masters/rotate", &app.tokens.operator).await;
    assert_eq!(s, StatusCode::OK);
    // The victim works, is revoked, and is refused from the next request on.
    assert_eq!(
        app.req(
            Method::GET,
            "/v1/ns/rp/records",
            victim.token.expose(),
            Some(IDS[0])
        )
        .send()
        .await
        .unwrap()
        .status(),
        StatusCode::OK
    );
    let r = app
        .req(
            Method::DELETE,
            &format!("/v1/credentials/{}", victim.id),
            &app.tokens.admin,
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.req(
            Method::GET,
            "/v1/ns/rp/records",
            victim.token.expose(),
            Some(IDS[0])
        )
        .send()
        .await
        .unwrap()
        .status(),
        StatusCode::UNAUTHORIZED
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        total += c.await.unwrap();
    }
    assert!(total > 20, "clients made {total} requests");
    read_all(&app).await;
}

/// The app the tests serve is the one `serve` builds, scheduler included (it used to be built
/// without one): a master whose rotation is due (created 100 days ago under a 90-day policy) is
/// rotated by the scheduler within a few ticks, with no request asking for it.
async fn the_served_app_runs_the_policy_scheduler(db: TestDb) {
    let app = TestApp::start_configured(db, support::app::POLICY, |c| {
        c.scheduler_tick = Duration::from_millis(200)
    })
    .await;
    // Backdated through the store, which MACs the row (an SQL edit would be refused).
    let vault = app.vault.clone();
    tokio::task::spawn_blocking(move || {
        let row = zkvault::storage::MasterRow {
            created_at: zkvault::vault::now_ms() - 100 * 86_400_000,
            ..vault.store().masters("rp").unwrap().remove(0)
        };
        let entry = zkvault::vault::Actor::new("test", "").entry("test", "rp", "");
        vault.store().update_master(&row, &entry).unwrap();
    })
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let keys: Value = app
            .req(Method::GET, "/v1/keys", &app.tokens.operator, None)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rp = keys["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["namespace"] == "rp")
            .unwrap();
        let states: Vec<(i64, String)> = rp["masters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["version"].as_i64().unwrap(),
                    m["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        if states.contains(&(2, "active".into())) {
            // v1 protects no record: the same passes retire it as soon as it is decrypt-only.
            assert!(
                states.contains(&(1, "decrypt_only".into()))
                    || states.contains(&(1, "retired".into())),
                "{states:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduler never rotated the due master: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With `dual_control = true`, `destroy?shred=true` only records a request (202); the records
/// stay readable until a second, different operator approves it within its lifetime. The
/// requester, a data-role token, an operator of another namespace, an expired or a used
/// approval are all refused, and both steps are audit entries.
async fn under_dual_control_a_shred_takes_two_different_operators(db: TestDb) {
    // Records stay under the master they were written with (no move on read), so a read while
    // the request waits leaves them where the shred will find them.
    let policy = support::app::POLICY
        .replace(
            "credential_max_age_days = 90",
            "credential_max_age_days = 90\ndual_control = true\napproval_minutes = 5",
        )
        .replace(
            "[namespaces.rp]\n",
            "[namespaces.rp]\nlazy_reencrypt = false\n",
        );
    let app = TestApp::start_with(db, 1024 * 1024, &policy).await;
    let second = app.issue(&[Role::Operator], &[]).await;
    let uin_operator = app.issue(&[Role::Operator], &["uin"]).await;
    let op = app.tokens.operator.clone();
    assert!(app
        .put("rp", "r1", IDS[0], b"one")
        .await
        .status()
        .is_success());
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/rotate", &op).await.0,
        StatusCode::OK
    );

    // Without shredding nothing needs a second operator: still the plain 409.
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/1/destroy", &op).await.0,
        StatusCode::CONFLICT
    );
    let (status, pending) = post(&app, "/v1/ns/rp/masters/1/destroy?shred=true", &op).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{pending}");
    assert_eq!(pending["operation"], "master.shred");
    let id = pending["approval"].as_str().unwrap().to_owned();
    let approve = format!("/v1/approvals/{id}");
    assert_eq!(app.get("rp", "r1", IDS[0]).await.status(), StatusCode::OK);

    for (token, expected, who) in [
        (&op, StatusCode::CONFLICT, "the requester"),
        (&app.tokens.writer, StatusCode::FORBIDDEN, "a writer"),
        (&app.tokens.admin, StatusCode::FORBIDDEN, "an admin"),
        (
            &uin_operator,
            StatusCode::NOT_FOUND,
            "an operator of another namespace",
        ),
    ] {
        let (status, body) = post(&app, &approve, token).await;
        assert_eq!(status, expected, "{who}: {body}");
        assert_eq!(
            app.get("rp", "r1", IDS[0]).await.status(),
            StatusCode::OK,
            "{who}"
        );
    }
    for bad in [
        "/v1/approvals/0123456789abcdef",
        "/v1/approvals/..%2Fx",
        "/v1/approvals/X",
    ] {
        assert_eq!(
            post(&app, bad, &second).await.0,
            StatusCode::NOT_FOUND,
            "{bad}"
        );
    }

    let (status, done) = post(&app, &approve, &second).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["shredded_records"], 1);
    assert_eq!(app.get("rp", "r1", IDS[0]).await.status(), StatusCode::GONE);
    assert_eq!(
        post(&app, &approve, &second).await.0,
        StatusCode::CONFLICT,
        "used twice"
    );

    // An expired request is refused and changes nothing.
    assert!(app
        .put("rp", "r2", IDS[1], b"two")
        .await
        .status()
        .is_success());
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/rotate", &op).await.0,
        StatusCode::OK
    );
    let (status, pending) = post(&app, "/v1/ns/rp/masters/2/destroy?shred=true", &op).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let pending = pending["approval"].as_str().unwrap().to_owned();
    // The same request as it stands once `approval_minutes` have passed, written through the
    // store (an SQL edit of the row would be refused as forged).
    let expired = "e0e0e0e0e0e0e0e0";
    let v = app.vault.clone();
    tokio::task::spawn_blocking(move || {
        let row = v.store().approval(&pending).unwrap().unwrap();
        let row = zkvault::storage::ApprovalRow {
            id: expired.into(),
            expires_at: 1,
            ..row
        };
        let entry = zkvault::vault::Actor::new("test", "").entry("test", "rp", "");
        v.store().insert_approval(&row, &entry).unwrap();
    })
    .await
    .unwrap();
    let (status, _) = post(&app, &format!("/v1/approvals/{expired}"), &second).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(app.get("rp", "r2", IDS[1]).await.status(), StatusCode::OK);

    let url = app.db.url().to_owned();
    let ops = tokio::task::spawn_blocking(move || {
        support::app::query_strings(
            &url,
            "SELECT operation || ' ' || outcome AS v FROM audit ORDER BY id",
        )
    })
    .await
    .unwrap();
    for expected in [
        "approval.request ok",
        "approval.grant ok",
        "master.destroy ok",
    ] {
        assert!(
            ops.iter().any(|o| o == expected),
            "no {expected} in {ops:?}"
        );
    }
}

/// After `destroy?shred=true`, a database restored from a backup taken before it (here: the
/// master's row put back as the backup held it, material included) used to make the shredded
/// records readable again. The keystore remembers the destruction: the running instance answers
/// 410 at once, a restart destroys the row again with an audit entry, and records under the
/// master that was not destroyed still read (disaster recovery keeps working).
async fn a_restored_backup_never_brings_a_shredded_master_back(db: TestDb) {
    let policy = support::app::POLICY.replace(
        "[namespaces.rp]\n",
        "[namespaces.rp]\nlazy_reencrypt = false\n",
    );
    let app = TestApp::start_with(db, 1024 * 1024, &policy).await;
    let op = app.tokens.operator.clone();
    assert!(app
        .put("rp", "r1", IDS[0], b"one")
        .await
        .status()
        .is_success());
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/rotate", &op).await.0,
        StatusCode::OK
    );
    assert!(app
        .put("rp", "r2", IDS[1], b"two")
        .await
        .status()
        .is_success());
    let url = app.db.url().to_owned();
    support::app::backup(&url, "before_shred", &["masters"]);
    let (status, report) = post(&app, "/v1/ns/rp/masters/1/destroy?shred=true", &op).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["shredded_records"], 1);
    assert_eq!(app.get("rp", "r1", IDS[0]).await.status(), StatusCode::GONE);

    // The restore: v1 back as the backup held it, material and MAC included.
    support::app::restore(&url, "before_shred", &["masters"]);
    for _ in 0..8 {
        assert_eq!(
            app.get("rp", "r1", IDS[0]).await.status(),
            StatusCode::GONE,
            "the restored master served a shredded record"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(
        &app.get("rp", "r2", IDS[1]).await.bytes().await.unwrap()[..],
        b"two"
    );

    // A KEK rotation before anything else noticed never carries the restored material over to
    // the new KEK: it destroys the row again first.
    assert_eq!(
        post(&app, "/v1/keys/kek/rotate", &op).await.0,
        StatusCode::OK
    );
    let state_of_v1 = "SELECT state || ' ' || (CASE WHEN wrapped IS NULL THEN 'gone' ELSE 'kept' END) AS v FROM masters WHERE namespace = 'rp' AND version = 1";
    let row = tokio::task::spawn_blocking({
        let url = url.clone();
        move || support::app::query_strings(&url, state_of_v1)
    })
    .await
    .unwrap();
    assert_eq!(row, ["destroyed gone"]);
    // Restored once more, for the restart.
    support::app::restore(&url, "before_shred", &["masters"]);

    // A restart on the restored database starts, and destroys the row again.
    let restarted = tokio::task::spawn_blocking({
        let app_config = app.config.clone();
        move || zkvault::app::open_vault(&app_config, false).unwrap()
    })
    .await
    .unwrap();
    let row = tokio::task::spawn_blocking({
        let url = url.clone();
        move || support::app::query_strings(&url, state_of_v1)
    })
    .await
    .unwrap();
    assert_eq!(row, ["destroyed gone"]);
    let reader = support::app::grant(&restarted, Role::Reader, Some("rp"));
    assert!(matches!(
        restarted.get_record(&reader, IDS[0], "r1"),
        Err(zkvault::vault::VaultError::Shredded)
    ));
    assert_eq!(
        &*restarted.get_record(&reader, IDS[1], "r2").unwrap().body,
        b"two"
    );
    let entries = tokio::task::spawn_blocking(move || {
        support::app::query_strings(&url, "SELECT actor || ' ' || operation || ' ' || detail AS v FROM audit WHERE operation = 'master.destroy'")
    })
    .await
    .unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.starts_with("system master.destroy") && e.contains("restored")),
        "{entries:?}"
    );
}
