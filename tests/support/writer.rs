//! What the database-writer attack tests share: raw SQL as the writer, sessions holding locks
//! to stage a race, and the service's own checkpoint and verification as an operator would run
//! them.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use zkvault::vault::{AuditVerification, VaultError};

use super::app::{execute_sql, query_strings, TestApp};

/// Runs `sql` against the app's database, as a database writer would.
pub async fn sql(app: &TestApp, sql: &str) {
    let (url, sql) = (app.db.url().to_owned(), sql.to_owned());
    tokio::task::spawn_blocking(move || execute_sql(&url, &sql))
        .await
        .unwrap();
}

/// A query whose one column is named `v` and is text.
pub async fn strings(app: &TestApp, sql: &str) -> Vec<String> {
    let (url, sql) = (app.db.url().to_owned(), sql.to_owned());
    tokio::task::spawn_blocking(move || query_strings(&url, &sql))
        .await
        .unwrap()
}

/// A token's credential id (`zkv_<id>_<secret>`).
pub fn id_of(token: &str) -> &str {
    token.split('_').nth(1).unwrap()
}

/// A byte string as an SQL literal of the app's backend.
pub fn blob(app: &TestApp, bytes: &[u8]) -> String {
    if app.db.is_postgres() {
        format!("decode('{}', 'hex')", hex::encode(bytes))
    } else {
        format!("X'{}'", hex::encode(bytes))
    }
}

/// `zkvault audit checkpoint`.
pub async fn checkpoint(app: &TestApp) -> Result<usize, VaultError> {
    let v = app.vault.clone();
    tokio::task::spawn_blocking(move || v.checkpoint_audit())
        .await
        .unwrap()
}

/// `zkvault audit verify`.
pub async fn verify(app: &TestApp) -> AuditVerification {
    let v = app.vault.clone();
    tokio::task::spawn_blocking(move || v.verify_audit().unwrap())
        .await
        .unwrap()
}

/// A database session holding `lock` in an open transaction until the returned sender is used.
pub fn hold(url: &str, lock: &str) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let (url, lock) = (url.to_owned(), lock.to_owned());
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut c = diesel::PgConnection::establish(&url).unwrap();
        c.batch_execute(&format!("BEGIN; {lock}")).unwrap();
        locked_tx.send(()).unwrap();
        let _ = done_rx.recv();
        c.batch_execute("ROLLBACK").unwrap();
    });
    locked_rx.recv().unwrap();
    (done_tx, holder)
}

/// How many sessions of the app's PostgreSQL database wait on a lock now.
pub async fn lock_waiters(app: &TestApp) -> usize {
    strings(
        app,
        "SELECT CAST(COUNT(*) AS TEXT) AS v FROM pg_stat_activity \
         WHERE wait_event_type = 'Lock' AND datname = current_database()",
    )
    .await[0]
        .parse()
        .unwrap()
}

/// Waits until at least `n` sessions wait on a lock (`what` is the one staged to), 10 s at most.
pub async fn wait_for_lock_waiters(app: &TestApp, n: usize, what: &str) {
    let started = Instant::now();
    while lock_waiters(app).await < n {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "setup: {what} never waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
