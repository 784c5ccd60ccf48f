//! What the database-writer attack tests share: raw SQL as the writer, and the service's own
//! checkpoint and verification as an operator would run them.
#![allow(dead_code)]

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
