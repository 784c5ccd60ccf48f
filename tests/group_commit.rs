//! Group commit under a crash: many requests share one transaction, and each answers only once
//! its batch has committed. So `kill -9` under load may lose requests in flight, but never one
//! that was answered: every acknowledged write is there after a restart, every answered read is
//! in the audit trail, and the trail verifies.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::app::query_strings;
use support::db::TestDb;
use support::deployment::{cli_ok, Deployment, Server};

/// Concurrent clients: enough that batches hold many writes.
const CLIENTS: usize = 16;

/// A write the server acknowledged: resident, record name, the ETag it answered.
type Ack = (String, String, String);

on_both_backends!(nothing_answered_is_lost_when_the_server_is_killed_under_load);

async fn nothing_answered_is_lost_when_the_server_is_killed_under_load(db: TestDb) {
    let d = Deployment::new(db);
    let token = cli_ok(
        &d,
        &[
            "credentials",
            "create",
            "--label",
            "load",
            "--role",
            "writer",
            "--role",
            "reader",
        ],
    )
    .trim()
    .to_owned();
    let server = Server::start(&d);
    let http = reqwest::Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let writes: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let reads: Arc<Mutex<Vec<String>>> = Arc::default();

    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (http, token, url) = (http.clone(), token.clone(), server.url.clone());
            let (stop, writes, reads) = (stop.clone(), writes.clone(), reads.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    // Five residents per client, each with a growing set of records.
                    let (id, name) = (format!("resident-{client}-{}", i % 5), format!("r{i}"));
                    let record = format!("{url}/v1/ns/rp/records/{name}");
                    let put = http
                        .put(&record)
                        .bearer_auth(&token)
                        .header("Resident-Id", &id)
                        .header("Content-Type", "application/json")
                        .body(format!("{{\"client\":{client},\"i\":{i}}}"))
                        .send()
                        .await;
                    let Ok(put) = put else { return }; // the server is gone
                    if !put.status().is_success() {
                        continue;
                    }
                    let etag = put.headers()["etag"].to_str().unwrap().trim_matches('"');
                    writes
                        .lock()
                        .unwrap()
                        .push((id.clone(), name, etag.to_owned()));
                    let Ok(get) = http
                        .get(&record)
                        .bearer_auth(&token)
                        .header("Resident-Id", &id)
                        .send()
                        .await
                    else {
                        return;
                    };
                    if get.status() == StatusCode::OK {
                        let request = get.headers()["request-id"].to_str().unwrap().to_owned();
                        reads.lock().unwrap().push(request);
                    }
                }
            })
        })
        .collect();

    // Kill in the middle of the load, once a fair number of requests were answered.
    let started = Instant::now();
    while writes.lock().unwrap().len() < 300 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let writes = writes.lock().unwrap().clone();
    let reads = reads.lock().unwrap().clone();
    assert!(writes.len() >= 300, "the load never got going");

    let server = Server::start(&d);
    for (id, name, etag) in &writes {
        let r = http
            .get(format!("{}/v1/ns/rp/records/{name}", server.url))
            .bearer_auth(&token)
            .header("Resident-Id", id)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "an acknowledged write is lost");
        assert_eq!(
            r.headers()["etag"].to_str().unwrap().trim_matches('"'),
            etag,
            "an acknowledged write was rolled back"
        );
    }
    drop(server);

    let audited: HashSet<String> = query_strings(
        d.db.url(),
        "SELECT request_id AS v FROM audit WHERE operation = 'record.get'",
    )
    .into_iter()
    .collect();
    let unrecorded = reads.iter().filter(|r| !audited.contains(*r)).count();
    assert_eq!(unrecorded, 0, "reads answered without an audit entry");

    let verify = d.run(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "audit verify after the crash: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}
