//! The audit trail on SQLite and PostgreSQL: what is recorded, that it is atomic with the
//! change, that `GET /v1/audit` pages and filters it, and that verification names the first
//! edited, deleted, inserted or reordered entry — including a rewrite of the whole chain.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::app::{execute_sql, query_strings, TestApp};
use support::db::TestDb;
use zkvault::storage::AuditRow;

on_both_backends!(
    every_access_and_change_is_recorded_without_resident_ids,
    the_audit_api_pages_and_filters_for_auditors_only,
    verify_detects_an_edited_entry,
    verify_detects_a_deleted_entry,
    verify_detects_entries_deleted_from_the_end,
    verify_detects_an_inserted_entry,
    verify_detects_swapped_entries,
    a_recomputed_chain_is_caught_by_the_checkpoint,
    destroying_an_old_kek_leaves_every_checkpoint_verifiable,
);

const ID: &str = "AUDITid4711";

async fn entries(app: &TestApp) -> Vec<Value> {
    let token = tokio::task::spawn_blocking({
        let v = app.vault.clone();
        move || {
            v.create_credential(
                &support::app::grant(&v, zkvault::vault::Role::Admin, None),
                "auditor",
                &[zkvault::vault::Role::Auditor],
                &[],
            )
            .unwrap()
            .token
            .expose()
            .to_owned()
        }
    })
    .await
    .unwrap();
    let page: Value = app
        .req(Method::GET, "/v1/audit?limit=1000", &token, None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["entries"].as_array().unwrap().clone()
}

async fn traffic(app: &TestApp) {
    app.put("rp", "demographics", ID, b"{}").await;
    app.get("rp", "demographics", ID).await;
    app.get("rp", "demographics", "AUDITother1").await;
    app.req(
        Method::PUT,
        "/v1/ns/rp/records/demographics",
        &app.tokens.reader,
        Some(ID),
    )
    .body("x")
    .send()
    .await
    .unwrap();
    // The refused request's entry is appended in the background: let it land before anyone
    // tampers with or checkpoints the trail.
    let v = app.vault.clone();
    tokio::task::spawn_blocking(move || {
        let filter = zkvault::vault::AuditQuery {
            operation: Some("access.writer".into()),
            limit: Some(1),
            ..Default::default()
        };
        let auditor = support::app::grant(&v, zkvault::vault::Role::Auditor, None);
        for _ in 0..200 {
            if !v.audit_page(&auditor, &filter).unwrap().0.is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("the refused request was never recorded");
    })
    .await
    .unwrap();
}

async fn verify(app: &TestApp) -> zkvault::vault::AuditVerification {
    let v = app.vault.clone();
    tokio::task::spawn_blocking(move || v.verify_audit().unwrap())
        .await
        .unwrap()
}

async fn sql(app: &TestApp, statement: String) {
    let url = app.db.url().to_owned();
    tokio::task::spawn_blocking(move || execute_sql(&url, &statement))
        .await
        .unwrap();
}

/// The chain with the most entries, and its rows.
async fn longest_chain(app: &TestApp) -> (String, Vec<AuditRow>) {
    let v = app.vault.clone();
    tokio::task::spawn_blocking(move || {
        v.store()
            .audit_chains()
            .unwrap()
            .into_iter()
            .map(|c| {
                let rows = v.store().audit_chain_page(&c, 0, 100_000).unwrap();
                (c, rows)
            })
            .max_by_key(|(_, rows)| rows.len())
            .unwrap()
    })
    .await
    .unwrap()
}

fn bytes_literal(app: &TestApp, b: &[u8]) -> String {
    if app.db.is_postgres() {
        format!("decode('{}', 'hex')", hex::encode(b))
    } else {
        format!("X'{}'", hex::encode(b))
    }
}

async fn every_access_and_change_is_recorded_without_resident_ids(db: TestDb) {
    let app = TestApp::start(db).await;
    traffic(&app).await;
    let all = entries(&app).await;
    let ops: Vec<(&str, &str)> = all
        .iter()
        .map(|e| {
            (
                e["operation"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    for expected in [
        ("policy.load", "ok"),
        ("namespace.init", "ok"),
        ("credential.create", "ok"),
        ("record.put", "ok"),
        ("record.get", "ok"),
        ("record.get", "not_found"),
        ("access.writer", "forbidden"),
    ] {
        assert!(ops.contains(&expected), "missing {expected:?} in {ops:?}");
    }
    let put = all.iter().find(|e| e["operation"] == "record.put").unwrap();
    let get = all
        .iter()
        .find(|e| e["operation"] == "record.get" && e["outcome"] == "ok")
        .unwrap();
    let miss = all
        .iter()
        .find(|e| e["operation"] == "record.get" && e["outcome"] == "not_found")
        .unwrap();
    let writer_id = app.tokens.writer.split('_').nth(1).unwrap();
    assert_eq!(put["actor"], writer_id);
    assert_eq!(put["namespace"], "rp");
    assert_eq!(put["target"], "demographics");
    assert_eq!(put["request_id"].as_str().unwrap().len(), 16);
    assert_eq!(put["resident_tag"].as_str().unwrap().len(), 16);
    assert_eq!(
        put["resident_tag"], get["resident_tag"],
        "same resident, same tag"
    );
    assert_ne!(
        put["resident_tag"], miss["resident_tag"],
        "another resident, another tag"
    );
    let dump = serde_json::to_string(&all).unwrap();
    assert!(
        !dump.contains(ID) && !dump.contains("AUDITother1"),
        "no resident ID in the audit trail"
    );
    let url = app.db.url().to_owned();
    let raw = tokio::task::spawn_blocking(move || query_strings(&url, "SELECT actor || operation || namespace || target || resident_tag || detail AS v FROM audit")).await.unwrap();
    assert!(!raw.concat().contains(ID));

    // A failed write records its failure and nothing else (the change and its entry commit together).
    let r = app
        .req(
            Method::PUT,
            "/v1/ns/rp/records/demographics",
            &app.tokens.writer,
            Some(ID),
        )
        .header("If-None-Match", "*")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let after = entries(&app).await;
    let puts: Vec<&str> = after
        .iter()
        .filter(|e| e["operation"] == "record.put")
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(puts, ["ok", "precondition_failed"]);
    assert_eq!(verify(&app).await.first_break, None);
    app.stop().await;
}

async fn the_audit_api_pages_and_filters_for_auditors_only(db: TestDb) {
    let app = TestApp::start(db).await;
    traffic(&app).await;
    let all = entries(&app).await;
    let auditor = tokio::task::spawn_blocking({
        let v = app.vault.clone();
        move || {
            v.create_credential(
                &support::app::grant(&v, zkvault::vault::Role::Admin, None),
                "auditor",
                &[zkvault::vault::Role::Auditor],
                &[],
            )
            .unwrap()
            .token
            .expose()
            .to_owned()
        }
    })
    .await
    .unwrap();
    let get = |q: String| {
        app.req(Method::GET, &format!("/v1/audit?{q}"), &auditor, None)
            .send()
    };
    // Paging: pages of 3 concatenate to the whole.
    let (mut seen, mut after) = (Vec::new(), 0i64);
    loop {
        let page: Value = get(format!("limit=3&after={after}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let entries = page["entries"].as_array().unwrap();
        seen.extend(entries.iter().map(|e| e["id"].as_i64().unwrap()));
        match page["next"].as_i64() {
            Some(n) => after = n,
            None => break,
        }
    }
    // (Issuing the second auditor appended one more entry after `all` was read.)
    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(seen.len(), ids.len() + 1);
    assert_eq!(seen[..ids.len()], ids[..]);
    let page: Value = get("operation=record.get".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["operation"] == "record.get"));
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    let writer_id = app.tokens.writer.split('_').nth(1).unwrap();
    let page: Value = get(format!("credential={writer_id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor"] == writer_id));
    let page: Value = get("since=4102444800000".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        page["entries"].as_array().unwrap().is_empty(),
        "nothing after 2100"
    );
    // RFC 3339 too, as every time in an answer is written.
    let page: Value = get("since=2100-01-01T00:00:00Z".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        page["entries"].as_array().unwrap().is_empty(),
        "nothing after 2100"
    );
    let page: Value = get("since=2000-01-01T00:00:00Z&until=2100-01-01T01:00:00%2B01:00".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let all = page["entries"].as_array().unwrap();
    assert!(
        !all.is_empty() && all.iter().all(|e| e["at"].as_str().unwrap().ends_with('Z')),
        "{page}"
    );
    assert_eq!(
        get("since=2026-12-06".into()).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get("limit=0".into()).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get("bogus=1".into()).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    let r = app
        .req(Method::GET, "/v1/audit", &app.tokens.operator, None)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    app.stop().await;
}

async fn tampered(app: &TestApp) -> zkvault::vault::AuditBreak {
    verify(app)
        .await
        .first_break
        .expect("tampering was detected")
}

async fn verify_detects_an_edited_entry(db: TestDb) {
    let app = TestApp::start(db).await;
    traffic(&app).await;
    assert_eq!(verify(&app).await.first_break, None);
    let (chain, rows) = longest_chain(&app).await;
    let victim = &rows[rows.len() / 2];
    sql(&app, format!("UPDATE audit SET outcome = 'ok', actor = 'someone-else' WHERE chain = '{chain}' AND seq = {}", victim.seq)).await;
    let b = tampered(&app).await;
    assert_eq!((b.chain.as_str(), b.seq), (chain.as_str(), victim.seq));
    assert!(b.reason.contains("edited"), "{}", b.reason);
}

async fn verify_detects_a_deleted_entry(db: TestDb) {
    let app = TestApp::start(db).await;
    traffic(&app).await;
    let (chain, rows) = longest_chain(&app).await;
    let victim = rows[1].seq;
    sql(
        &app,
        format!("DELETE FROM audit WHERE chain = '{chain}' AND seq = {victim}"),
    )
    .await;
    let b = tampered(&app).await;
    assert_eq!((b.chain.as_str(), b.seq), (chain.as_str(), victim + 1));
    assert!(
        b.reason.contains(&format!("entry {victim} is missing")),
        "{}",
        b.reason
    );
}

async fn verify_detects_entries_deleted_from_the_end(db: TestDb) {
    let app = TestApp::start(db).await;
    traffic(&app).await;
    let (chain, rows) = longest_chain(&app).await;
    let last = rows.last().unwrap().seq;
    sql(
        &app,
        format!(
            "DELETE FROM audit WHERE chain = '{chain}' AND seq >= {}",
            last - 1
        ),
    )
    .await;
    let b = tampered(&app).await;
    assert_eq!((b.chain.as_str(), b.seq), (chain.as_str(), last - 1));
    assert!(b.reason.contains("deleted from the end"), "{}", b.reason);
}

async fn verify_detects_an_inserted_entry(db: TestDb) {
    let app = TestApp::start(db).await;
    traffic(&app).await;
    let (chain, rows) = longest_chain(&app).await;
    // A forged entry slipped in after entry 2: later entries renumbered to make room.
    let at = rows[1].seq;
    sql(
        &app,
        format!("UPDATE audit SET seq = -seq WHERE chain = '{chain}' AND seq > {at}"),
    )
    .await;
    sql(
        &app,
        format!("UPDATE audit SET seq = 1 - seq WHERE chain = '{chain}' AND seq < 0"),
    )
    .await;
    let forged = bytes_literal(&app, &[7u8; 32]);
    let prev = bytes_literal(&app, &rows[1].hash);
    sql(&app, format!(
        "INSERT INTO audit (chain, seq, at, actor, request_id, operation, namespace, target, resident_tag, outcome, detail, prev_hash, hash) \
         VALUES ('{chain}', {}, 0, 'ghost', '', 'record.get', 'rp', 'x', '', 'ok', '', {prev}, {forged})",
        at + 1
    ))
    .await;
    let b = tampered(&app).await;
    assert_eq!(
        (b.chain.as_str(), b.seq),
        (chain.as_str(), at + 1),
        "{}",
        b.reason
    );
}

async fn verify_detects_swapped_entries(db: TestDb) {
    let app = TestApp::start(db).await;
    traffic(&app).await;
    let (chain, rows) = longest_chain(&app).await;
    let (a, b) = (rows[1].seq, rows[2].seq);
    sql(
        &app,
        format!("UPDATE audit SET seq = -1 WHERE chain = '{chain}' AND seq = {a}"),
    )
    .await;
    sql(
        &app,
        format!("UPDATE audit SET seq = {a} WHERE chain = '{chain}' AND seq = {b}"),
    )
    .await;
    sql(
        &app,
        format!("UPDATE audit SET seq = {b} WHERE chain = '{chain}' AND seq = -1"),
    )
    .await;
    let br = tampered(&app).await;
    assert_eq!(
        (br.chain.as_str(), br.seq),
        (chain.as_str(), a),
        "{}",
        br.reason
    );
}

async fn a_recomputed_chain_is_caught_by_the_checkpoint(db: TestDb) {
    let app = TestApp::start(db).await;
    traffic(&app).await;
    let v = app.vault.clone();
    let (chain, mut rows) = tokio::task::spawn_blocking(move || {
        assert!(v.checkpoint_audit().unwrap() >= 1);
        // A chain whose checkpointed head is entry 2 or later.
        let mark = v
            .store()
            .audit_marks()
            .unwrap()
            .into_iter()
            .max_by_key(|m| m.seq)
            .unwrap();
        assert!(mark.seq >= 2);
        let rows = v
            .store()
            .audit_chain_page(&mark.chain, 0, mark.seq)
            .unwrap();
        (mark.chain, rows)
    })
    .await
    .unwrap();
    // The attacker edits entry 2 and recomputes every later hash and the head: the chain itself
    // is consistent again, only the keystore-MACed checkpoint can tell.
    rows[1].entry.outcome = "forbidden".into();
    let mut prev = rows[0].hash.clone();
    for row in rows.iter_mut().skip(1) {
        row.prev_hash = prev.clone();
        row.hash = row.expected_hash().unwrap().to_vec();
        prev = row.hash.clone();
    }
    for row in &rows[1..] {
        sql(&app, format!(
            "UPDATE audit SET outcome = '{}', prev_hash = {}, hash = {} WHERE chain = '{chain}' AND seq = {}",
            row.entry.outcome,
            bytes_literal(&app, &row.prev_hash),
            bytes_literal(&app, &row.hash),
            row.seq
        ))
        .await;
    }
    sql(
        &app,
        format!(
            "UPDATE audit_heads SET hash = {} WHERE chain = '{chain}'",
            bytes_literal(&app, &prev)
        ),
    )
    .await;
    let b = tampered(&app).await;
    assert_eq!(b.chain, chain);
    assert!(b.reason.contains("rewritten"), "{}", b.reason);
    // The service itself refuses to checkpoint over the rewritten chain.
    let v = app.vault.clone();
    let refused = tokio::task::spawn_blocking(move || v.checkpoint_audit())
        .await
        .unwrap();
    assert!(
        matches!(refused, Err(zkvault::vault::VaultError::Integrity)),
        "{refused:?}"
    );
}

/// The rotation runbook ends by destroying the old KEK; checkpoints MACed under it used to make
/// `audit verify` fail for good from then on. Checkpoints are MACed with the integrity key,
/// which moves to every new KEK with the masters.
async fn destroying_an_old_kek_leaves_every_checkpoint_verifiable(db: TestDb) {
    let app = TestApp::start(db).await;
    traffic(&app).await;
    let v = app.vault.clone();
    tokio::task::spawn_blocking({
        let v = v.clone();
        move || {
            assert!(v.checkpoint_audit().unwrap() >= 1);
            let operator = support::app::grant(&v, zkvault::vault::Role::Operator, None);
            let old = v.rotate_kek(&operator).unwrap().previous.unwrap();
            match v.destroy_kek(&operator, old).unwrap() {
                zkvault::vault::Decision::Done(()) => {}
                other => panic!("{other:?}"),
            }
        }
    })
    .await
    .unwrap();
    traffic(&app).await;
    let again = v.clone();
    tokio::task::spawn_blocking(move || assert!(again.checkpoint_audit().unwrap() >= 1))
        .await
        .unwrap();
    let checked = verify(&app).await;
    assert!(checked.first_break.is_none(), "{:?}", checked.first_break);
    assert!(checked.checkpoints >= 2);
    // A restart (the integrity key unwrapped under the new KEK) still verifies.
    let restarted = app.reopen();
    let report = tokio::task::spawn_blocking(move || restarted.verify_audit().unwrap())
        .await
        .unwrap();
    assert!(report.first_break.is_none(), "{:?}", report.first_break);
}
