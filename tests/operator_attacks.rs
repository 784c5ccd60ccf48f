//! Attacks by privileged callers, from a review of scoped administration, dual control and
//! checkpoint re-MACing: one holder posing as two operators, requests for masters that cannot
//! be destroyed, approvals that fail, racing approvals, scoped admins reaching out, and
//! checkpoints racing a keystore migration or left under a destroyed KEK.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::app::{query_strings, TestApp};
use support::db::TestDb;
use zkvault::keystore::soft::{SoftKeystore, SoftKeystoreOptions};
use zkvault::keystore::{
    AuditAnchor, KekInfo, Keystore, KeystoreError, NewSigningKey, SigningKeyRef,
};
use zkvault::vault::{Actor, Caller, Role, VaultError};
use zkvault_core::{Secret32, WrapContext};

on_both_backends!(
    a_forged_approval_is_refused_not_carried_out,
    one_holder_cannot_be_both_operators_of_a_shred,
    a_shred_request_is_checked_when_made,
    an_approval_that_fails_stays_usable_and_is_recorded_as_failed,
    two_racing_approvals_carry_out_a_shred_once,
    scoped_admin_escalation_attempts_are_refused,
    scoped_operator_and_auditor_stay_in_their_namespaces,
    a_checkpoint_racing_a_migration_waits_and_is_never_left_under_the_source_kek,
    a_checkpoint_under_a_destroyed_kek_never_blocks_a_keystore_migration,
);

const IDS: [&str; 2] = ["4930098371", "4930098372"];

fn dual_control_policy() -> String {
    support::app::POLICY
        .replace(
            "credential_max_age_days = 90",
            "credential_max_age_days = 90\ndual_control = true\napproval_minutes = 5",
        )
        .replace(
            "[namespaces.rp]\n",
            "[namespaces.rp]\nlazy_reencrypt = false\n",
        )
}

async fn dual_control_app(db: TestDb) -> TestApp {
    TestApp::start_with(db, 1024 * 1024, &dual_control_policy()).await
}

async fn post(app: &TestApp, path: &str, token: &str) -> (StatusCode, Value) {
    app.call(Method::POST, path, token, None).await
}

async fn put_ok(app: &TestApp, name: &str, id: &str) {
    let s = app.put("rp", name, id, b"{\"n\":1}").await.status();
    assert!(s.is_success(), "{s}");
}

async fn audit_ops(app: &TestApp) -> Vec<String> {
    let url = app.db.url().to_owned();
    tokio::task::spawn_blocking(move || {
        query_strings(
            &url,
            "SELECT operation || ' ' || outcome || ' ' || actor AS v FROM audit ORDER BY id",
        )
    })
    .await
    .unwrap()
}

/// "Two different operators" compared credential ids, and an admin holding `operator` could
/// issue `operator`: one holder of an admin+operator credential requested a shred, minted a
/// second operator credential and approved it alone. Under dual control only the local operator
/// (the CLI) issues `operator` credentials, and a rotated credential (a new id for the same
/// holder) is the same operator.
async fn one_holder_cannot_be_both_operators_of_a_shred(db: TestDb) {
    let app = dual_control_app(db).await;
    for (i, scope) in [&[] as &'static [&str], &["rp"]].into_iter().enumerate() {
        let boss = app.issue(&[Role::Admin, Role::Operator], scope).await;
        put_ok(&app, &format!("r{i}"), IDS[i]).await;
        let (s, _) = post(&app, "/v1/ns/rp/masters/rotate", &boss).await;
        assert_eq!(s, StatusCode::OK);
        let version = 1 + i; // v1, then v2
        let (s, pending) = post(
            &app,
            &format!("/v1/ns/rp/masters/{version}/destroy?shred=true"),
            &boss,
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{pending}");
        let approve = format!("/v1/approvals/{}", pending["approval"].as_str().unwrap());
        assert_eq!(post(&app, &approve, &boss).await.0, StatusCode::CONFLICT);

        // No sock-puppet operator...
        let (s, sock) = app
            .call(
                Method::POST,
                "/v1/credentials",
                &boss,
                Some(json!({"label": "sock puppet", "roles": ["operator"], "namespaces": scope})),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "scope {scope:?}: {sock}");
        // ...and its own rotated successor is still the requester.
        let v = app.vault.clone();
        let boss_id = boss.split('_').nth(1).unwrap().to_owned();
        let successor = tokio::task::spawn_blocking(move || {
            let admin = support::app::grant(&v, Role::Admin, None);
            v.rotate_credential(&admin, &boss_id, std::time::Duration::from_secs(60))
                .unwrap()
                .token
                .expose()
                .to_owned()
        })
        .await
        .unwrap();
        let (s, body) = post(&app, &approve, &successor).await;
        assert_eq!(s, StatusCode::CONFLICT, "scope {scope:?}: {body}");
        // ...even once a database writer deletes the rotation's link: the successor's own
        // MACed row names what it replaced.
        support::app::execute_sql(app.db.url(), "DELETE FROM credential_successors");
        let (s, body) = post(&app, &approve, &successor).await;
        assert_eq!(
            s,
            StatusCode::CONFLICT,
            "link deleted, scope {scope:?}: {body}"
        );
        assert_eq!(
            app.get("rp", &format!("r{i}"), IDS[i]).await.status(),
            StatusCode::OK
        );
    }
}

/// A request used to be recorded without looking at the master: one for the active master, or
/// for a version that did not exist yet (later created, given records and rotated away, then
/// shredded by an approval its requester never saw). It is refused now as without dual control.
async fn a_shred_request_is_checked_when_made(db: TestDb) {
    let app = dual_control_app(db).await;
    let op = app.tokens.operator.clone();
    put_ok(&app, "r1", IDS[0]).await; // rp v1, active
    for (path, expected) in [
        (
            "/v1/ns/rp/masters/1/destroy?shred=true",
            StatusCode::CONFLICT,
        ),
        (
            "/v1/ns/rp/masters/2/destroy?shred=true",
            StatusCode::NOT_FOUND,
        ),
        (
            "/v1/ns/rp/masters/4000000000/destroy?shred=true",
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (s, body) = post(&app, path, &op).await;
        assert_eq!(s, expected, "{path}: {body}");
    }
    let pending = audit_ops(&app).await;
    assert!(
        !pending.iter().any(|o| o.starts_with("approval.request ok")),
        "{pending:?}"
    );
}

/// An approval used to be spent (and audited as granted) before its operation was checked: a
/// refused execution left it used up. Now a failed execution releases it, the trail records the
/// failure, and nothing was destroyed by it. Two requests for one master: the first approval
/// shreds it, the second fails (already destroyed) and stays usable (and fails again).
async fn an_approval_that_fails_stays_usable_and_is_recorded_as_failed(db: TestDb) {
    let app = dual_control_app(db).await;
    let op = app.tokens.operator.clone();
    let second = app.issue(&[Role::Operator], &[]).await;
    put_ok(&app, "r1", IDS[0]).await;
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/rotate", &op).await.0,
        StatusCode::OK
    );
    let mut approvals = Vec::new();
    for _ in 0..2 {
        let (s, pending) = post(&app, "/v1/ns/rp/masters/1/destroy?shred=true", &op).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{pending}");
        approvals.push(format!(
            "/v1/approvals/{}",
            pending["approval"].as_str().unwrap()
        ));
    }
    assert_eq!(post(&app, &approvals[0], &second).await.0, StatusCode::OK);
    for _ in 0..2 {
        let (s, body) = post(&app, &approvals[1], &second).await;
        assert_eq!(s, StatusCode::CONFLICT, "{body}");
        assert!(
            body.to_string().contains("already destroyed"),
            "not spent: {body}"
        );
    }
    let ops = audit_ops(&app).await;
    assert_eq!(
        ops.iter()
            .filter(|o| o.starts_with("master.destroy ok"))
            .count(),
        1,
        "{ops:?}"
    );
    assert_eq!(
        ops.iter()
            .filter(|o| o.starts_with("approval.grant conflict"))
            .count(),
        2,
        "{ops:?}"
    );
    assert_eq!(app.get("rp", "r1", IDS[0]).await.status(), StatusCode::GONE);
}

/// HELD: two different operators racing the same approval: exactly one carries it out.
async fn two_racing_approvals_carry_out_a_shred_once(db: TestDb) {
    let app = dual_control_app(db).await;
    let op = app.tokens.operator.clone();
    let a = app.issue(&[Role::Operator], &[]).await;
    let b = app.issue(&[Role::Operator], &["rp"]).await;
    put_ok(&app, "r1", IDS[0]).await;
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/rotate", &op).await.0,
        StatusCode::OK
    );
    let (s, pending) = post(&app, "/v1/ns/rp/masters/1/destroy?shred=true", &op).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let approve = format!("/v1/approvals/{}", pending["approval"].as_str().unwrap());
    let (ra, rb) = tokio::join!(post(&app, &approve, &a), post(&app, &approve, &b));
    let ok = [&ra, &rb].iter().filter(|r| r.0 == StatusCode::OK).count();
    assert_eq!(ok, 1, "{ra:?} {rb:?}");
    for r in [&ra, &rb] {
        assert!(
            matches!(r.0, StatusCode::OK | StatusCode::CONFLICT),
            "{r:?}"
        );
    }
    // Once destroyed, a new request for it is refused at once.
    let (s, _) = post(&app, "/v1/ns/rp/masters/1/destroy?shred=true", &op).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let destroys = audit_ops(&app)
        .await
        .into_iter()
        .filter(|o| o.starts_with("master.destroy ok"))
        .count();
    assert_eq!(destroys, 1);
}

/// HELD: scoped admin escalation: empty scope, duplicates, spellings, foreign/unrestricted
/// targets, rotating an unrestricted credential through the vault API.
async fn scoped_admin_escalation_attempts_are_refused(db: TestDb) {
    let app = TestApp::start(db).await;
    let admin = app.issue(&[Role::Admin], &["rp"]).await;
    let create = |roles: Value, ns: Value| {
        app.call(
            Method::POST,
            "/v1/credentials",
            &admin,
            Some(json!({"label": "x", "roles": roles, "namespaces": ns})),
        )
    };
    // Omitted namespaces = all.
    let (s, b) = app
        .call(
            Method::POST,
            "/v1/credentials",
            &admin,
            Some(json!({"label": "x", "roles": ["reader"]})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    for (ns, expected) in [
        (json!(["RP"]), StatusCode::BAD_REQUEST),
        (json!(["rp "]), StatusCode::BAD_REQUEST),
        (json!(["*"]), StatusCode::BAD_REQUEST),
        (json!([""]), StatusCode::BAD_REQUEST),
        (json!(["rp,uin"]), StatusCode::BAD_REQUEST),
        (json!(["uin", "rp"]), StatusCode::FORBIDDEN),
    ] {
        let (s, b) = create(json!(["reader"]), ns.clone()).await;
        assert_eq!(s, expected, "{ns}: {b}");
        assert!(
            !b.to_string().contains("RP") && !b.to_string().contains("rp,uin"),
            "{b}"
        );
    }
    for roles in [
        json!(["operator"]),
        json!(["auditor"]),
        json!(["reader", "operator"]),
    ] {
        assert_eq!(create(roles, json!(["rp"])).await.0, StatusCode::FORBIDDEN);
    }
    // Duplicates collapse to its own scope.
    let (s, dup) = create(json!(["admin", "writer"]), json!(["rp", "rp"])).await;
    assert_eq!(s, StatusCode::CREATED, "{dup}");
    let dup_token = dup["token"].as_str().unwrap().to_owned();
    assert_eq!(
        create(json!(["reader"]), json!(["uin"])).await.0,
        StatusCode::FORBIDDEN
    );
    let (s, b) = app
        .call(
            Method::POST,
            "/v1/credentials",
            &dup_token,
            Some(json!({"label": "x", "roles": ["reader"], "namespaces": ["uin"]})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");

    // Unrestricted and foreign credentials are invisible: 404 on revoke, absent from the list.
    let unrestricted = app.issue(&[Role::Reader], &[]).await;
    let foreign = app.issue(&[Role::Reader], &["uin"]).await;
    let mixed = app.issue(&[Role::Reader], &["rp", "uin"]).await;
    for t in [&unrestricted, &foreign, &mixed, &app.tokens.admin] {
        let id = &t[4..20];
        let (s, _) = app
            .call(
                Method::DELETE,
                &format!("/v1/credentials/{id}"),
                &admin,
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{id}");
    }
    let (_, list) = app.call(Method::GET, "/v1/credentials", &admin, None).await;
    for c in list["credentials"].as_array().unwrap() {
        assert!(
            c["namespaces"] == json!(["rp"]) || c["namespaces"] == json!(["rp", "rp"]),
            "{c}"
        );
    }

    // Rotating an unrestricted credential through the vault API as the scoped admin: 404.
    let v = app.vault.clone();
    let (admin2, unrestricted2) = (admin.clone(), unrestricted.clone());
    tokio::task::spawn_blocking(move || {
        let principal = v.credentials().verify(&admin2).unwrap();
        let caller = Caller::credential(principal, "r".into(), "test".into(), false);
        let grant = v.authorize(&caller, Role::Admin, None).unwrap();
        let r = v.rotate_credential(&grant, &unrestricted2[4..20], std::time::Duration::ZERO);
        assert!(matches!(r, Err(VaultError::NotFound)), "{:?}", r.err());
        let r = v.rotate_credential(
            &grant,
            &app_admin_id(&admin2),
            std::time::Duration::from_secs(3600),
        );
        assert!(r.is_ok(), "it may rotate itself: {:?}", r.err());
    })
    .await
    .unwrap();
    // It may revoke itself; then it is refused.
    let id = admin[4..20].to_owned();
    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/credentials/{id}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.call(Method::GET, "/v1/credentials", &admin, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

fn app_admin_id(token: &str) -> String {
    token[4..20].to_owned()
}

/// HELD (with a low note): a restricted operator and auditor. The operator sees only `rp` in
/// /v1/keys and cannot rotate the KEK; approving a KEK destruction answers 403 while an unknown
/// id answers 404 (an existence oracle for pending KEK destructions — informational). The
/// auditor cannot read deployment-wide entries through `operation=`/`credential=` filters.
async fn scoped_operator_and_auditor_stay_in_their_namespaces(db: TestDb) {
    let app = dual_control_app(db).await;
    let op = app.issue(&[Role::Operator], &["rp"]).await;
    let auditor = app.issue(&[Role::Auditor], &["rp"]).await;
    put_ok(&app, "r1", IDS[0]).await;
    let (s, keys) = app.call(Method::GET, "/v1/keys", &op, None).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = keys["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rp"]);
    assert_eq!(
        post(&app, "/v1/keys/kek/rotate", &op).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(&app, "/v1/ns/uin/masters/rotate", &op).await.0,
        StatusCode::FORBIDDEN
    );

    // A pending KEK destruction (CLI), approved by the restricted operator.
    let v = app.vault.clone();
    let pending = tokio::task::spawn_blocking(move || {
        let g = support::app::grant(&v, Role::Operator, None);
        v.rotate_kek(&g).unwrap();
        serde_json::to_value(v.destroy_kek(&g, 1).unwrap()).unwrap()
    })
    .await
    .unwrap();
    let id = pending["approval"].as_str().unwrap();
    let (s, body) = post(&app, &format!("/v1/approvals/{id}"), &op).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        post(&app, "/v1/approvals/0123456789abcdef", &op).await.0,
        StatusCode::NOT_FOUND
    );
    // It stays approvable by an unrestricted operator.
    let (s, body) = post(&app, &format!("/v1/approvals/{id}"), &app.tokens.operator).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    for q in [
        "/v1/audit?operation=kek.rotate",
        "/v1/audit?operation=credential.create",
        "/v1/audit?operation=approval.grant",
        "/v1/audit?operation=kek.destroy",
        "/v1/audit?limit=1000",
    ] {
        let (s, page) = app.call(Method::GET, q, &auditor, None).await;
        assert_eq!(s, StatusCode::OK, "{q}");
        for e in page["entries"].as_array().into_iter().flatten() {
            assert_eq!(e["namespace"], "rp", "{q}: {e}");
        }
    }
}

/// A keystore that runs `hook` once, at its `at`-th wrap.
struct Hooked {
    inner: Arc<dyn Keystore>,
    wraps: AtomicUsize,
    at: usize,
    hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Keystore for Hooked {
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
        if self.wraps.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            if let Some(hook) = self.hook.lock().unwrap().take() {
                hook();
            }
        }
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

fn soft_target(app: &TestApp, name: &str) -> Arc<dyn Keystore> {
    Arc::new(
        SoftKeystore::create(
            &app.dir.path().join(name),
            &zkvault::secret::SecretString::new("other"),
            SoftKeystoreOptions::for_tests(),
        )
        .unwrap(),
    )
}

/// A checkpoint tick (the scheduler's, or `zkvault audit checkpoint`) in the middle of a
/// migration used to MAC its checkpoint under the source's KEK after the migration had read the
/// checkpoints to re-MAC: the target could never verify it. Checkpointing takes the key lock:
/// the tick waits for the migration, and then refuses to checkpoint from the old keystore.
async fn a_checkpoint_racing_a_migration_waits_and_is_never_left_under_the_source_kek(db: TestDb) {
    let app = TestApp::start(db).await;
    put_ok(&app, "r1", IDS[0]).await;
    assert!(app.vault.checkpoint_audit().unwrap() >= 1);
    let live_keys = app
        .vault
        .store()
        .all_masters()
        .unwrap()
        .iter()
        .filter(|m| m.wrapped.is_some())
        .count()
        + app.vault.store().all_index_keys().unwrap().len();
    let target = soft_target(&app, "target.zks");
    let source_vault = app.vault.clone();
    type Tick = std::thread::JoinHandle<Result<usize, VaultError>>;
    let tick: Arc<Mutex<Option<Tick>>> = Arc::new(Mutex::new(None));
    let tick_result = tick.clone();
    let hooked: Arc<dyn Keystore> = Arc::new(Hooked {
        inner: target.clone(),
        wraps: AtomicUsize::new(0),
        // After every master and index key is rewrapped: the first checkpoint's re-MAC, i.e.
        // after the checkpoint list was read.
        at: live_keys + 1,
        hook: Mutex::new(Some(Box::new(move || {
            // Meanwhile, the scheduler's checkpoint tick on this instance (source keystore).
            source_vault
                .store()
                .append_audit(&Actor::new("scheduler", "tick").entry("test.tick", "", "x"))
                .unwrap();
            *tick_result.lock().unwrap() =
                Some(std::thread::spawn(move || source_vault.checkpoint_audit()));
        }))),
    });
    let v = app.vault.clone();
    let h = hooked.clone();
    tokio::task::spawn_blocking(move || {
        v.migrate_keystore(&support::app::grant(&v, Role::Operator, None), h.as_ref())
            .unwrap()
    })
    .await
    .unwrap();
    let ticked = tick
        .lock()
        .unwrap()
        .take()
        .expect("the hook ran")
        .join()
        .unwrap();
    assert!(
        matches!(ticked, Err(VaultError::KeystoreUnavailable(_))),
        "a checkpoint from the old keystore: {ticked:?}"
    );
    let migrated = app.reopen_with(target).unwrap();
    let verified = tokio::task::spawn_blocking(move || migrated.verify_audit())
        .await
        .unwrap()
        .unwrap();
    assert!(verified.first_break.is_none(), "{verified:?}");
}

/// A deployment that destroyed an old KEK before checkpoints were re-MACed on destruction has
/// checkpoints under a KEK that is gone; a migration used to stop at the first of them, for
/// good. They are carried over as they are (they were unverifiable already, and `audit verify`
/// keeps saying so), and the migration goes through — also when a database writer points a
/// checkpoint at a KEK version no keystore has.
async fn a_checkpoint_under_a_destroyed_kek_never_blocks_a_keystore_migration(db: TestDb) {
    let app = TestApp::start(db).await;
    put_ok(&app, "r1", IDS[0]).await;
    let v = app.vault.clone();
    let target = soft_target(&app, "target.zks");
    let t = target.clone();
    let err = tokio::task::spawn_blocking(move || {
        assert!(v.checkpoint_audit().unwrap() >= 1);
        let g = support::app::grant(&v, Role::Operator, None);
        v.rotate_kek(&g).unwrap();
        // What the pre-release destroy_kek did: the keystore's KEK goes, its checkpoints stay.
        v.keyring().keystore().destroy_kek(1).unwrap();
        v.migrate_keystore(&g, t.as_ref()).err()
    })
    .await
    .unwrap();
    assert!(err.is_none(), "{err:?}");

    // A database writer's checkpoint claiming KEK v999, on the migrated deployment.
    support::app::execute_sql(
        app.db.url(),
        "UPDATE audit_checkpoints SET kek_version = 999",
    );
    let migrated = app.reopen_with(target.clone()).unwrap();
    let next = soft_target(&app, "target2.zks");
    let err = tokio::task::spawn_blocking(move || {
        migrated
            .migrate_keystore(
                &support::app::grant(&migrated, Role::Operator, None),
                next.as_ref(),
            )
            .err()
    })
    .await
    .unwrap();
    assert!(err.is_none(), "{err:?}");
}

/// A database writer turns one operator's own shred request into one "from" somebody else (or
/// inserts an approval outright), so that operator alone can carry it out. Approval rows are
/// MACed: the forged one is refused and nothing is destroyed.
async fn a_forged_approval_is_refused_not_carried_out(db: TestDb) {
    let app = dual_control_app(db).await;
    let op = app.tokens.operator.clone();
    put_ok(&app, "r1", IDS[0]).await;
    assert_eq!(
        post(&app, "/v1/ns/rp/masters/rotate", &op).await.0,
        StatusCode::OK
    );
    let (s, pending) = post(&app, "/v1/ns/rp/masters/1/destroy?shred=true", &op).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{pending}");
    let id = pending["approval"].as_str().unwrap().to_owned();
    support::app::execute_sql(
        app.db.url(),
        &format!("UPDATE approvals SET requested_by = 'cli:someone-else' WHERE id = '{id}'"),
    );
    let (s, body) = post(&app, &format!("/v1/approvals/{id}"), &op).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"], "integrity", "{body}");
    // An approval inserted outright (another's MAC copied) fares no better.
    support::app::execute_sql(
        app.db.url(),
        &format!(
            "INSERT INTO approvals SELECT 'f0f0f0f0f0f0f0f0', operation, namespace, version, 'cli:someone-else', requested_at, expires_at, decided_by, decided_at, mac FROM approvals WHERE id = '{id}'"
        ),
    );
    let (s, _) = post(&app, "/v1/approvals/f0f0f0f0f0f0f0f0", &op).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        app.get("rp", "r1", IDS[0]).await.status(),
        StatusCode::OK,
        "the master was destroyed on one operator's word"
    );
}
