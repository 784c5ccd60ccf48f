//! A database writer (a DBA, a restored backup, SQL injection elsewhere) tries to grant itself
//! power: DESIGN.md, "What a database writer must not be able to do". Credential, master and
//! KEK rows carry a MAC under the integrity key, which only the keystore can unwrap.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::app::{backup, restore, TestApp};
use support::db::TestDb;
use support::writer::{checkpoint, id_of, sql, strings, verify};
use zkvault::keystore::{
    AuditAnchor, KekInfo, Keystore, KeystoreError, NewSigningKey, SigningKeyRef,
};
use zkvault::vault::Role;
use zkvault_core::{KeyKind, Secret32, WrapContext};

on_both_backends!(
    an_edited_credential_row_is_refused_and_audited,
    an_inserted_credential_row_is_refused_even_with_a_copied_mac,
    a_flipped_master_state_is_refused_and_not_laundered,
    a_cleared_compromise_mark_is_refused,
    a_removed_row_mac_is_not_restored_by_a_restart,
    a_truncated_tail_with_its_head_rewound_is_reported,
    a_deleted_chain_is_reported,
    deleted_checkpoints_are_reported,
    a_restored_older_database_is_reported_until_accepted,
    a_database_without_its_integrity_key_is_refused,
    a_single_record_put_back_from_a_backup_is_reported,
    rows_written_before_row_macs_are_maced_once_at_the_upgrade,
    a_forged_key_row_neither_stops_checkpoints_nor_goes_unrecorded,
);

/// Every table of the audit trail.
const TRAIL: [&str; 4] = ["audit", "audit_heads", "audit_manifests", "audit_marks"];

const ID: &str = "4930098371";

/// Audit entries with `outcome` for `operation`, as the auditor reads them.
async fn outcomes(app: &TestApp, operation: &str, outcome: &str) -> usize {
    let auditor = app.issue(&[Role::Auditor], &[]).await;
    let (status, page) = app
        .call(
            Method::GET,
            &format!("/v1/audit?operation={operation}&limit=1000"),
            &auditor,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == outcome)
        .count()
}

/// The issue's reproduction: a reader's row edited to hold every role made it an admin.
async fn an_edited_credential_row_is_refused_and_audited(db: TestDb) {
    let app = TestApp::start(db).await;
    let reader = app.issue(&[Role::Reader], &["rp"]).await;
    let id = id_of(&reader).to_owned();
    sql(
        &app,
        &format!(
            "UPDATE credentials SET roles = 'reader,writer,admin,operator,auditor', namespaces = '*' WHERE id = '{id}'"
        ),
    )
    .await;
    let (status, body) = app
        .call(Method::GET, "/v1/credentials", &reader, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!body.to_string().contains("admin"), "{body}");
    assert_eq!(
        outcomes(&app, "access.authenticate", "integrity").await,
        1,
        "the refusal is an audit entry"
    );
    // Putting the row back as zkvault wrote it makes the credential work again: the MAC, not
    // a flag, is what refused it.
    sql(
        &app,
        &format!("UPDATE credentials SET roles = 'reader', namespaces = 'rp' WHERE id = '{id}'"),
    )
    .await;
    let (status, _) = app
        .call(Method::GET, "/v1/credentials", &reader, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a reader again");
    // A damaged row can still be revoked, and is not made authentic by the revocation.
    sql(
        &app,
        &format!("UPDATE credentials SET roles = 'admin' WHERE id = '{id}'"),
    )
    .await;
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/credentials/{id}"),
            &app.tokens.admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    sql(
        &app,
        &format!("UPDATE credentials SET revoked_at = NULL WHERE id = '{id}'"),
    )
    .await;
    let (status, _) = app
        .call(Method::GET, "/v1/credentials", &reader, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// The attacker holds a reader token (so knows a secret and its stored hash) and inserts a row
/// for a new id with every role, copying the reader row's hash and MAC.
async fn an_inserted_credential_row_is_refused_even_with_a_copied_mac(db: TestDb) {
    let app = TestApp::start(db).await;
    let reader = app.issue(&[Role::Reader], &["rp"]).await;
    let id = id_of(&reader);
    // The secret is base64url, so it may hold `_` itself: it is everything after the id.
    let secret = &reader[format!("zkv_{id}_").len()..];
    let forged = "00000000deadbeef";
    sql(
        &app,
        &format!(
            "INSERT INTO credentials (id, label, roles, namespaces, secret_hash, created_at, expires_at, revoked_at, mac) \
             SELECT '{forged}', label, 'admin,operator,auditor,reader,writer', '*', secret_hash, created_at, expires_at, revoked_at, mac \
             FROM credentials WHERE id = '{id}'"
        ),
    )
    .await;
    let token = format!("zkv_{forged}_{secret}");
    for (method, path) in [
        (Method::GET, "/v1/credentials"),
        (Method::GET, "/v1/keys"),
        (Method::POST, "/v1/ns/rp/masters/rotate"),
    ] {
        let (status, body) = app.call(method, path, &token, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
    }
    // Without a MAC at all, the same.
    sql(
        &app,
        &format!("UPDATE credentials SET mac = NULL WHERE id = '{forged}'"),
    )
    .await;
    let (status, _) = app.call(Method::GET, "/v1/credentials", &token, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let n = outcomes(&app, "access.authenticate", "integrity").await;
    assert!(n >= 2, "{n} integrity refusals recorded");
}

/// After a rotation, the writer makes the old master active again and the new one decrypt-only
/// (so writes would go under the old, perhaps exposed, master).
async fn a_flipped_master_state_is_refused_and_not_laundered(db: TestDb) {
    let app = TestApp::start(db).await;
    assert!(app
        .put("rp", "r1", ID, b"\"one\"")
        .await
        .status()
        .is_success());
    let op = app.tokens.operator.clone();
    let (status, body) = app
        .call(Method::POST, "/v1/ns/rp/masters/rotate", &op, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before = strings(
        &app,
        "SELECT state || ' ' || version AS v FROM masters WHERE namespace = 'rp' ORDER BY version",
    )
    .await;
    sql(
        &app,
        "UPDATE masters SET state = 'active' WHERE namespace = 'rp' AND version = 1; \
         UPDATE masters SET state = 'decrypt_only' WHERE namespace = 'rp' AND version = 2",
    )
    .await;
    app.vault.keyring().forget_all();
    let put = app.put("rp", "r2", ID, b"\"two\"").await;
    assert_eq!(put.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = put.json().await.unwrap();
    assert_eq!(body["error"], "integrity", "{body}");
    assert_eq!(
        app.get("rp", "r1", ID).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // An operator's change to the forged row is refused: a change never re-MACs a forgery.
    for path in ["/v1/ns/rp/masters/rotate", "/v1/ns/rp/masters/1/compromise"] {
        let (status, body) = app.call(Method::POST, path, &op, None).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}: {body}");
    }
    assert!(outcomes(&app, "record.put", "integrity").await >= 1);
    // Restored as zkvault wrote them, the rows are authentic again: nothing was re-MACed over
    // the forged states.
    sql(
        &app,
        "UPDATE masters SET state = 'decrypt_only' WHERE namespace = 'rp' AND version = 1; \
         UPDATE masters SET state = 'active' WHERE namespace = 'rp' AND version = 2",
    )
    .await;
    app.vault.keyring().forget_all();
    assert_eq!(
        strings(
            &app,
            "SELECT state || ' ' || version AS v FROM masters WHERE namespace = 'rp' ORDER BY version",
        )
        .await,
        before
    );
    assert_eq!(app.get("rp", "r1", ID).await.status(), StatusCode::OK);
    assert!(app
        .put("rp", "r2", ID, b"\"two\"")
        .await
        .status()
        .is_success());
}

async fn a_cleared_compromise_mark_is_refused(db: TestDb) {
    let app = TestApp::start(db).await;
    assert!(app
        .put("rp", "r1", ID, b"\"one\"")
        .await
        .status()
        .is_success());
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
        "UPDATE masters SET compromised_at = NULL WHERE namespace = 'rp' AND version = 1",
    )
    .await;
    app.vault.keyring().forget_all();
    assert_eq!(
        app.get("rp", "r1", ID).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let (status, _) = app
        .call(Method::GET, "/v1/keys", &app.tokens.operator, None)
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
}

/// Rows are MACed once, when the integrity key is made; a row whose MAC was removed later is
/// not taken for a row from before that, by this start or the next.
async fn a_removed_row_mac_is_not_restored_by_a_restart(db: TestDb) {
    let app = TestApp::start(db).await;
    let reader = app.issue(&[Role::Reader], &["rp"]).await;
    let id = id_of(&reader).to_owned();
    sql(
        &app,
        &format!("UPDATE credentials SET mac = NULL, roles = 'admin' WHERE id = '{id}'"),
    )
    .await;
    let restarted = app.reopen();
    assert!(restarted.credentials().verify(&reader).is_err());
    assert_eq!(
        strings(
            &app,
            &format!("SELECT COALESCE(CAST(LENGTH(mac) AS TEXT), 'none') AS v FROM credentials WHERE id = '{id}'"),
        )
        .await,
        ["none"]
    );
}

async fn traffic(app: &TestApp, n: usize) {
    for i in 0..n {
        let put = app.put("rp", &format!("t{i}"), ID, b"\"x\"").await;
        assert!(put.status().is_success());
    }
}

/// The reason `audit verify` gives, which must exist.
async fn broken(app: &TestApp) -> String {
    let report = verify(app).await;
    let b = report.first_break.expect("the tampering was not reported");
    format!("{} {}: {}", b.chain, b.seq, b.reason)
}

/// The chain the service's own writes go to, with its head.
async fn busiest_chain(app: &TestApp) -> (String, i64) {
    let rows = strings(
        app,
        "SELECT chain || ' ' || CAST(seq AS TEXT) AS v FROM audit_heads ORDER BY seq DESC",
    )
    .await;
    let (chain, seq) = rows[0].split_once(' ').unwrap();
    (chain.to_owned(), seq.parse().unwrap())
}

/// The issue's reproduction: the last entries deleted and the head rewound to the last kept
/// entry, so the chain is consistent with itself. The checkpoint remembers the old head.
async fn a_truncated_tail_with_its_head_rewound_is_reported(db: TestDb) {
    let app = TestApp::start(db).await;
    traffic(&app, 1).await;
    // The writer keeps the head row as it stood here (authentic: zkvault wrote it).
    backup(app.db.url(), "early", &["audit_heads"]);
    let (chain, keep) = busiest_chain(&app).await;
    traffic(&app, 3).await;
    assert_eq!(checkpoint(&app).await.unwrap(), 1);
    // A hand-made head for the cut: not authentic.
    sql(
        &app,
        &format!("DELETE FROM audit WHERE chain = '{chain}' AND seq > {keep}"),
    )
    .await;
    sql(&app, &format!(
        "UPDATE audit_heads SET seq = {keep}, hash = (SELECT hash FROM audit WHERE chain = '{chain}' AND seq = {keep}) WHERE chain = '{chain}'"
    ))
    .await;
    let reason = broken(&app).await;
    assert!(
        reason.contains(&chain) && reason.contains("head is not authentic"),
        "{reason}"
    );
    assert!(
        checkpoint(&app).await.is_err(),
        "a checkpoint over a forged head"
    );
    // The old authentic head put back: the checkpoint remembers the later one.
    restore(app.db.url(), "early", &["audit_heads"]);
    let reason = broken(&app).await;
    assert!(
        reason.contains(&chain) && reason.contains("checkpointed"),
        "{reason}"
    );
    // The service never checkpoints over it.
    assert!(checkpoint(&app).await.is_err());
    // Rewinding the checkpoint's marks too (and deleting the checkpoints that saw the old
    // head) leaves the newest checkpoint older than the keystore's anchor.
    sql(&app, "DELETE FROM audit_manifests; DELETE FROM audit_marks").await;
    let reason = broken(&app).await;
    assert!(reason.contains("rolled back"), "{reason}");
}

async fn a_deleted_chain_is_reported(db: TestDb) {
    let app = TestApp::start(db).await;
    traffic(&app, 2).await;
    assert_eq!(checkpoint(&app).await.unwrap(), 1);
    let (chain, _) = busiest_chain(&app).await;
    sql(
        &app,
        &format!(
        "DELETE FROM audit WHERE chain = '{chain}'; DELETE FROM audit_heads WHERE chain = '{chain}'"
    ),
    )
    .await;
    let reason = broken(&app).await;
    assert!(reason.contains(&chain), "{reason}");
    assert!(
        checkpoint(&app).await.is_err(),
        "a checkpoint over a deleted chain"
    );
    sql(
        &app,
        &format!("DELETE FROM audit_marks WHERE chain = '{chain}'"),
    )
    .await;
    let reason = broken(&app).await;
    assert!(reason.contains(&chain), "{reason}");
    assert!(checkpoint(&app).await.is_err(), "marks no longer add up");
}

async fn deleted_checkpoints_are_reported(db: TestDb) {
    let app = TestApp::start(db).await;
    for _ in 0..3 {
        traffic(&app, 1).await;
        assert_eq!(checkpoint(&app).await.unwrap(), 1);
    }
    assert!(verify(&app).await.first_break.is_none());
    let counters = strings(
        &app,
        "SELECT CAST(counter AS TEXT) AS v FROM audit_manifests ORDER BY counter",
    )
    .await;
    assert!(counters.len() >= 3, "{counters:?}");
    backup(app.db.url(), "intact", &["audit_manifests"]);
    // One in the middle.
    sql(
        &app,
        &format!(
            "DELETE FROM audit_manifests WHERE counter = {}",
            counters[1]
        ),
    )
    .await;
    let reason = broken(&app).await;
    assert!(reason.contains("missing: deleted"), "{reason}");
    // A forged one in its place (another checkpoint's MAC copied).
    sql(&app, &format!(
        "INSERT INTO audit_manifests SELECT {}, at, prev, heads_digest, moved, rollback_from, mac FROM audit_manifests WHERE counter = {}",
        counters[1], counters[0]
    ))
    .await;
    let reason = broken(&app).await;
    assert!(
        reason.contains("moved to another counter") || reason.contains("not authentic"),
        "{reason}"
    );
    // The newest deleted (the others put back as they were): the keystore's anchor
    // remembers it.
    restore(app.db.url(), "intact", &["audit_manifests"]);
    assert!(verify(&app).await.first_break.is_none());
    sql(
        &app,
        &format!(
            "DELETE FROM audit_manifests WHERE counter = {}",
            counters.last().unwrap()
        ),
    )
    .await;
    let reason = broken(&app).await;
    assert!(reason.contains("rolled back"), "{reason}");
}

/// A copy of the whole database from before some traffic and checkpoints, restored: every
/// chain is consistent, every remaining checkpoint authentic. Only the keystore's anchor shows
/// it. The service starts on it (disaster recovery), says so loudly and in the trail, and
/// writes no checkpoint until an operator accepts the rollback.
async fn a_restored_older_database_is_reported_until_accepted(db: TestDb) {
    let app = TestApp::start(db).await;
    traffic(&app, 2).await;
    assert_eq!(checkpoint(&app).await.unwrap(), 1);
    // The whole database as the records and the trail stood (the key tables did not change).
    let database = [&TRAIL[..], &["records"]].concat();
    backup(app.db.url(), "old", &database);
    traffic(&app, 2).await;
    assert_eq!(checkpoint(&app).await.unwrap(), 1);
    restore(app.db.url(), "old", &database);
    let reason = broken(&app).await;
    assert!(reason.contains("rolled back"), "{reason}");
    assert!(
        checkpoint(&app).await.is_err(),
        "a checkpoint on a rolled-back database"
    );

    // A restart starts, and records what it found.
    let restarted = app.reopen();
    assert_eq!(outcomes(&app, "audit.anchor", "integrity").await, 1);
    // Accepting needs an unrestricted operator; then checkpoints resume and verify passes,
    // naming the rollback.
    let rp_operator = support::app::grant(&restarted, Role::Operator, Some("rp"));
    assert!(restarted.accept_audit_rollback(&rp_operator).is_err());
    let operator = support::app::grant(&restarted, Role::Operator, None);
    let from = tokio::task::spawn_blocking({
        let v = restarted.clone();
        move || v.accept_audit_rollback(&operator).unwrap()
    })
    .await
    .unwrap();
    let report = tokio::task::spawn_blocking({
        let v = restarted.clone();
        move || v.verify_audit().unwrap()
    })
    .await
    .unwrap();
    assert!(report.first_break.is_none(), "{:?}", report.first_break);
    assert_eq!(report.rollbacks_accepted, [from]);
    traffic(&app, 1).await;
    assert_eq!(checkpoint(&app).await.unwrap(), 1);
    assert_eq!(outcomes(&app, "audit.rollback.accept", "ok").await, 1);
}

/// Emptying the database (or restoring one from before row MACs) beside a keystore that
/// anchors checkpoints: a start would make a new integrity key and MAC whatever rows it found.
async fn a_database_without_its_integrity_key_is_refused(db: TestDb) {
    let app = TestApp::start(db).await;
    sql(&app, "DELETE FROM integrity_key").await;
    let start = app.reopen_with(app.vault.keyring().keystore().clone());
    assert!(start.is_err(), "a start without the integrity key");
}

/// One record rolled back to an older authentic row (it decrypts: the keys did not change),
/// a deleted record restored, a record deleted outside zkvault: the trail logged every write's
/// revision and every deletion, so `audit verify` tells each.
async fn a_single_record_put_back_from_a_backup_is_reported(db: TestDb) {
    let app = TestApp::start(db).await;
    for name in ["r1", "r2", "r3"] {
        assert!(app
            .put("rp", name, ID, b"\"old\"")
            .await
            .status()
            .is_success());
    }
    backup(app.db.url(), "old", &["records"]);
    assert!(app
        .put("rp", "r1", ID, b"\"new\"")
        .await
        .status()
        .is_success());
    let report = verify(&app).await;
    assert!(report.first_break.is_none(), "{:?}", report.first_break);
    assert_eq!(report.records, 3);

    // r1 put back as it was: it still decrypts, to the old value.
    sql(&app, "DELETE FROM records WHERE name = 'r1'; INSERT INTO records SELECT * FROM records_backup_old WHERE name = 'r1'").await;
    assert_eq!(
        &app.get("rp", "r1", ID).await.bytes().await.unwrap()[..],
        b"\"old\""
    );
    let reason = broken(&app).await;
    assert!(
        reason.contains("r1") && reason.contains("older copy"),
        "{reason}"
    );
    assert!(!reason.contains(ID));
    sql(&app, "DELETE FROM records WHERE name = 'r1'").await;
    assert!(app
        .put("rp", "r1", ID, b"\"new\"")
        .await
        .status()
        .is_success());
    assert!(verify(&app).await.first_break.is_none());

    // r2 deleted through the API, then restored.
    let del = app
        .req(
            Method::DELETE,
            "/v1/ns/rp/records/r2",
            &app.tokens.writer,
            Some(ID),
        )
        .send()
        .await
        .unwrap();
    assert!(del.status().is_success());
    sql(
        &app,
        "INSERT INTO records SELECT * FROM records_backup_old WHERE name = 'r2'",
    )
    .await;
    let reason = broken(&app).await;
    assert!(
        reason.contains("r2") && reason.contains("restored"),
        "{reason}"
    );
    sql(&app, "DELETE FROM records WHERE name = 'r2'").await;

    // Another resident erased through the API: no break; one of their rows put back: one.
    let other = "4930098372";
    assert!(app
        .put("rp", "e1", other, b"\"x\"")
        .await
        .status()
        .is_success());
    backup(app.db.url(), "erased", &["records"]);
    let erase = app
        .req(
            Method::DELETE,
            "/v1/ns/rp/resident",
            &app.tokens.writer,
            Some(other),
        )
        .send()
        .await
        .unwrap();
    assert!(erase.status().is_success());
    assert!(verify(&app).await.first_break.is_none());
    sql(
        &app,
        "INSERT INTO records SELECT * FROM records_backup_erased WHERE name = 'e1'",
    )
    .await;
    let reason = broken(&app).await;
    assert!(
        reason.contains("e1") && reason.contains("restored"),
        "{reason}"
    );
    sql(&app, "DELETE FROM records WHERE name = 'e1'").await;

    // r3 deleted in the database.
    sql(&app, "DELETE FROM records WHERE name = 'r3'").await;
    let reason = broken(&app).await;
    assert!(reason.contains("deleted outside zkvault"), "{reason}");
}

/// A keystore as a version before audit anchors left it: the inner keystore's keys, an anchor
/// of its own that starts empty.
struct BeforeAnchors {
    inner: Arc<dyn Keystore>,
    anchor: Mutex<Option<AuditAnchor>>,
}

impl Keystore for BeforeAnchors {
    fn kind(&self) -> &'static str {
        self.inner.kind()
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
        self.inner.wrap(v, ctx, s)
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
    fn check(&self) -> Result<(), KeystoreError> {
        self.inner.check()
    }
    fn record_destroyed(&self, ns: &str, v: u32) -> Result<(), KeystoreError> {
        self.inner.record_destroyed(ns, v)
    }
    fn destroyed_masters(&self) -> Result<BTreeSet<(String, u32)>, KeystoreError> {
        self.inner.destroyed_masters()
    }
    fn audit_anchor(&self) -> Result<Option<AuditAnchor>, KeystoreError> {
        Ok(*self.anchor.lock().unwrap())
    }
    fn advance_audit_anchor(&self, anchor: &AuditAnchor) -> Result<(), KeystoreError> {
        *self.anchor.lock().unwrap() = Some(*anchor);
        Ok(())
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

/// The database as the previous version left it — no row MACs, no integrity key, checkpoints
/// of the first format (a chain head wrapped under the KEK) — beside a keystore without an
/// anchor: the first start MACs every row once, replaces the checkpoint with a chained one and
/// anchors it; every credential and record works as before.
async fn rows_written_before_row_macs_are_maced_once_at_the_upgrade(db: TestDb) {
    let app = TestApp::start(db).await;
    assert!(app
        .put("rp", "r1", ID, b"\"one\"")
        .await
        .status()
        .is_success());
    let keystore = app.vault.keyring().keystore().clone();
    let head = app.vault.store().audit_heads().unwrap().remove(0).0;
    let (chain, seq, hash) = (head.chain, head.seq, head.hash);
    let kek = keystore.active_kek().unwrap().unwrap();
    let ctx = WrapContext::new(&chain, KeyKind::AuditCheckpoint, seq as u32);
    let legacy = keystore
        .wrap(kek, &ctx, &Secret32::from_slice(&hash).unwrap())
        .unwrap();
    let blob = if app.db.is_postgres() {
        format!("decode('{}', 'hex')", hex::encode(&legacy))
    } else {
        format!("X'{}'", hex::encode(&legacy))
    };
    sql(
        &app,
        &format!(
            "UPDATE credentials SET mac = NULL; UPDATE masters SET mac = NULL; UPDATE keks SET mac = NULL; \
             DELETE FROM integrity_key; DELETE FROM audit_manifests; DELETE FROM audit_marks; \
             INSERT INTO audit_checkpoints (chain, seq, at, kek_version, mac) VALUES ('{chain}', {seq}, 1, {kek}, {blob})"
        ),
    )
    .await;
    let old = Arc::new(BeforeAnchors {
        inner: keystore,
        anchor: Mutex::new(None),
    });
    let upgraded = app.reopen_with(old.clone()).unwrap();
    let unmaced = strings(
        &app,
        "SELECT id AS v FROM credentials WHERE mac IS NULL UNION ALL SELECT namespace AS v FROM masters WHERE mac IS NULL",
    )
    .await;
    assert!(unmaced.is_empty(), "{unmaced:?}");
    assert!(upgraded.credentials().verify(&app.tokens.reader).is_ok());
    assert!(
        old.audit_anchor().unwrap().is_some(),
        "the first checkpoint was anchored"
    );
    assert!(
        upgraded.store().checkpoints().unwrap().is_empty(),
        "first-format checkpoint replaced"
    );
    let report = upgraded.verify_audit().unwrap();
    assert!(report.first_break.is_none(), "{:?}", report.first_break);
    let reader = support::app::grant(&upgraded, Role::Reader, Some("rp"));
    let record = upgraded.get_record(&reader, ID, "r1").unwrap();
    assert_eq!(record.body.as_slice(), b"\"one\"");
}

/// The scheduler meets a forged master row on every tick: the lifecycle work fails (the row is
/// refused), the audit checkpoints go on, and the failure is one audit entry, not one per tick.
async fn a_forged_key_row_neither_stops_checkpoints_nor_goes_unrecorded(db: TestDb) {
    let app = TestApp::start_configured(db, support::app::POLICY, |c| {
        c.scheduler_tick = std::time::Duration::from_millis(100)
    })
    .await;
    sql(
        &app,
        "UPDATE masters SET state = 'decrypt_only' WHERE namespace = 'uin'",
    )
    .await;
    let counter = || async {
        strings(
            &app,
            "SELECT CAST(MAX(counter) AS TEXT) AS v FROM audit_manifests",
        )
        .await
        .remove(0)
        .parse::<u64>()
        .unwrap()
    };
    let before = counter().await;
    traffic(&app, 1).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while counter().await == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint while a key row is forged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(outcomes(&app, "scheduler.pass", "integrity").await, 1);
}
