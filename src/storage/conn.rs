//! Connections: the backend is chosen from the URL scheme here (never by
//! `MultiConnection::establish`, which hides the real error and turns any unknown string into a
//! SQLite file), and SQLite connections get their pragmas on every checkout from the pool.

use std::path::Path;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{self, CustomizeConnection, ManageConnection, R2D2Connection};
use diesel::{Connection, PgConnection, SqliteConnection};

use super::{Backend, StorageError};

#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

/// Runs `$body` with `$c` bound to the inner connection, for backend-specific query builders
/// (e.g. `ON CONFLICT`, which the `MultiConnection` backend does not offer).
macro_rules! on_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::storage::conn::AnyConnection::Pg($c) => $body,
            $crate::storage::conn::AnyConnection::Sqlite($c) => $body,
        }
    };
}
pub(crate) use on_backend;

/// Where to connect, parsed from the URL given to `Store::open`.
#[derive(Clone)]
pub(crate) enum Target {
    Postgres {
        url: String,
        /// The URL without its password, for messages.
        redacted: String,
        /// Password spellings (raw and percent-decoded) to scrub from any message.
        secrets: Vec<String>,
    },
    Sqlite {
        path: String,
    },
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, StorageError> {
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            let (redacted, secrets) = redact_postgres_url(url);
            return Ok(Target::Postgres {
                url: url.to_owned(),
                redacted,
                secrets,
            });
        }
        let path = if lower.starts_with("sqlite://") {
            &url["sqlite://".len()..]
        } else if lower.starts_with("sqlite:") {
            &url["sqlite:".len()..]
        } else if let Some(i) = url.find("://") {
            let scheme = &url[..i];
            if scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
            {
                return Err(StorageError::Unavailable(format!(
                    "unsupported database URL scheme {scheme:?} (use postgres://, postgresql://, sqlite:// or a file path)"
                )));
            }
            url
        } else {
            url
        };
        if path.is_empty() {
            return Err(StorageError::Unavailable("empty SQLite path".into()));
        }
        Ok(Target::Sqlite {
            path: path.to_owned(),
        })
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            Target::Postgres { .. } => Backend::Postgres,
            Target::Sqlite { .. } => Backend::Sqlite,
        }
    }

    pub(crate) fn sqlite_path(&self) -> Option<&str> {
        match self {
            Target::Sqlite { path } => Some(path),
            Target::Postgres { .. } => None,
        }
    }

    pub(crate) fn is_memory(&self) -> bool {
        matches!(self, Target::Sqlite { path } if path == ":memory:")
    }

    /// A printable name for the target, without password.
    pub(crate) fn display(&self) -> &str {
        match self {
            Target::Postgres { redacted, .. } => redacted,
            Target::Sqlite { path } => path,
        }
    }

    /// Removes any spelling of the password from `msg`.
    pub(crate) fn scrub(&self, msg: &str) -> String {
        let mut out = msg.to_owned();
        if let Target::Postgres {
            url,
            redacted,
            secrets,
        } = self
        {
            out = out.replace(url.as_str(), redacted);
            for s in secrets {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }

    /// Creates the SQLite file's parent directory.
    pub(crate) fn prepare(&self) -> Result<(), StorageError> {
        if let Target::Sqlite { path } = self {
            if path == ":memory:" {
                return Ok(());
            }
            if let Some(parent) = Path::new(path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StorageError::Unavailable(format!(
                        "cannot create directory {}: {e}",
                        parent.display()
                    ))
                })?;
            }
        }
        Ok(())
    }
}

/// `postgres://user:pw@host/db?password=pw` → (`postgres://user:***@host/db?password=***`,
/// the password spellings found).
fn redact_postgres_url(url: &str) -> (String, Vec<String>) {
    let mut secrets = Vec::new();
    let mut out = url.to_owned();
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if let Some(at) = authority.rfind('@') {
        let userinfo = &authority[..at];
        if let Some(colon) = userinfo.find(':') {
            let pw = &userinfo[colon + 1..];
            if !pw.is_empty() {
                secrets.push(pw.to_owned());
            }
            out = format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &userinfo[..colon],
                &url[scheme_end + at..]
            );
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let parts: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if k.eq_ignore_ascii_case("password") => {
                    if !v.is_empty() {
                        secrets.push(v.to_owned());
                    }
                    format!("{k}=***")
                }
                _ => kv.to_owned(),
            })
            .collect();
        out = format!("{head}{}", parts.join("&"));
    }
    let decoded: Vec<String> = secrets.iter().map(|s| percent_decode(s)).collect();
    secrets.extend(decoded);
    secrets.retain(|s| !s.is_empty());
    secrets.sort();
    secrets.dedup();
    // Longest first, so a password that contains another spelling is removed whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    (out, secrets)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// r2d2 manager that establishes exactly the backend the URL names.
pub(crate) struct Manager {
    pub(crate) target: Target,
}

impl ManageConnection for Manager {
    type Connection = AnyConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<AnyConnection, r2d2::Error> {
        match &self.target {
            Target::Postgres { url, .. } => PgConnection::establish(url)
                .map(AnyConnection::Pg)
                .map_err(r2d2::Error::ConnectionError),
            Target::Sqlite { path } => SqliteConnection::establish(path)
                .map(AnyConnection::Sqlite)
                .map_err(r2d2::Error::ConnectionError),
        }
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), r2d2::Error> {
        conn.ping().map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut AnyConnection) -> bool {
        std::thread::panicking() || conn.is_broken()
    }
}

/// Pragmas for every pooled SQLite connection. `busy_timeout` comes first so that switching to
/// WAL waits for a concurrent connection instead of failing with "database is locked". Records
/// are found by random keys (UUID, blind index), so the default 2 MiB page cache would re-read
/// index pages often on a large table. 8 MiB per connection keeps the hot index pages in while
/// bounding the server's memory: the page caches of the pool (8 connections by default) can
/// never take more than 64 MiB, and pages beyond them come from the OS's file cache.
pub(crate) const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 5000; \
     PRAGMA journal_mode = WAL; \
     PRAGMA foreign_keys = ON; \
     PRAGMA synchronous = NORMAL; \
     PRAGMA cache_size = -8192;";

#[derive(Debug, Clone, Copy)]
pub(crate) struct SqlitePragmas;

impl CustomizeConnection<AnyConnection, r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut AnyConnection) -> Result<(), r2d2::Error> {
        if let AnyConnection::Sqlite(c) = conn {
            c.batch_execute(SQLITE_PRAGMAS)
                .map_err(r2d2::Error::QueryError)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_picks_backend() {
        for (url, backend) in [
            ("postgres://u@h/db", Backend::Postgres),
            ("POSTGRESQL://u@h/db", Backend::Postgres),
            ("sqlite:///var/lib/zkv/db.sqlite", Backend::Sqlite),
            ("sqlite://rel/db.sqlite", Backend::Sqlite),
            ("./data/zkv.db", Backend::Sqlite),
        ] {
            assert_eq!(Target::parse(url).unwrap().backend(), backend, "{url}");
        }
        match Target::parse("sqlite:///var/lib/zkv/db.sqlite").unwrap() {
            Target::Sqlite { path } => assert_eq!(path, "/var/lib/zkv/db.sqlite"),
            _ => unreachable!(),
        }
        assert!(Target::parse("mysql://u@h/db").is_err());
        assert!(Target::parse("sqlite://").is_err());
    }

    #[test]
    fn password_is_redacted() {
        let t = Target::parse("postgres://zk:p%40ss@db:5432/zkv?sslmode=require&password=other")
            .unwrap();
        assert_eq!(
            t.display(),
            "postgres://zk:***@db:5432/zkv?sslmode=require&password=***"
        );
        let msg = t.scrub("failed for p@ss / p%40ss / other at postgres://zk:p%40ss@db:5432/zkv?sslmode=require&password=other");
        assert!(
            !msg.contains("p@ss") && !msg.contains("p%40ss") && !msg.contains("other"),
            "{msg}"
        );
        let t = Target::parse("postgresql://postgres@127.0.0.1/x").unwrap();
        assert_eq!(t.display(), "postgresql://postgres@127.0.0.1/x");
    }
}
