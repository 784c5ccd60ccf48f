//! A fresh database per test, on SQLite (temp file) or PostgreSQL (a new database, dropped at
//! the end). Reuse from any integration test with `mod support;` and `support::db::TestDb`.
//!
//! PostgreSQL: base URL `postgres://postgres@127.0.0.1:5432` (trust auth), overridden by env
//! `ZKVAULT_TEST_PG_URL`. When it is unreachable, `TestDb::postgres()` prints a loud skip and
//! returns `None` — unless env `CI=true`, where it panics.
#![allow(dead_code)]

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use tempfile::TempDir;

/// The local test server speaks no TLS. `sslmode=disable` keeps libpq from starting a TLS
/// negotiation on r2d2's connection threads, which outlive the tests: when a test binary
/// exits, libcrypto's exit handler raced one of them and the binary died of SIGSEGV after
/// every test had passed (once in CI; the CLI leaves through `_exit` for the same reason).
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432?sslmode=disable";

pub enum TestDb {
    /// The directory (removed on drop) and the database URL inside it.
    Sqlite(TempDir, String),
    /// The database name (dropped on drop) and its URL.
    Postgres(String, String),
}

impl TestDb {
    /// A SQLite file in a fresh temporary directory.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::Builder::new()
            .prefix("zkv-test-")
            .tempdir()
            .expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("zkvault.db").display());
        TestDb::Sqlite(dir, url)
    }

    /// A fresh PostgreSQL database `zkv_test_<random hex>`, or `None` (after a loud message)
    /// when the server is unreachable and `CI` is not `true`.
    pub fn postgres() -> Option<TestDb> {
        let base = pg_base();
        let mut admin = match PgConnection::establish(&pg_url(&base, "postgres")) {
            Ok(c) => c,
            Err(e) => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!(
                        "PostgreSQL at {} is unreachable and CI=true: {e}",
                        redact(&base)
                    );
                }
                eprintln!(
                    "\n!!!! SKIPPING PostgreSQL test: {} unreachable ({e}). \
                     Set ZKVAULT_TEST_PG_URL or start PostgreSQL. !!!!\n",
                    redact(&base)
                );
                return None;
            }
        };
        let name = format!("zkv_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let url = pg_url(&base, &name);
        Some(TestDb::Postgres(name, url))
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite(_, url) | TestDb::Postgres(_, url) => url,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, TestDb::Postgres(..))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres(name, _) = self {
            match PgConnection::establish(&pg_url(&pg_base(), "postgres")) {
                Ok(mut admin) => {
                    if let Err(e) =
                        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    {
                        eprintln!("warning: DROP DATABASE {name}: {e}");
                    }
                }
                Err(e) => eprintln!("warning: cannot drop test database {name}: {e}"),
            }
        }
    }
}

/// The base URL without any path: `scheme://userinfo@host:port` plus an optional `?query`.
fn pg_base() -> String {
    std::env::var("ZKVAULT_TEST_PG_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_PG_URL.to_owned())
}

/// `base` with its database path replaced by `/db` (query string kept).
pub fn pg_url(base: &str, db: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    let scheme_end = head.find("://").map(|i| i + 3).unwrap_or(0);
    let authority_end = head[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(head.len());
    let mut url = format!("{}/{db}", &head[..authority_end]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if url[s + 3..at].contains(':') => {
            let colon = s + 3 + url[s + 3..at].find(':').unwrap();
            format!("{}:***{}", &url[..colon], &url[at..])
        }
        _ => url.to_owned(),
    }
}
