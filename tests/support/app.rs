//! The real service on 127.0.0.1:0 over a fresh database, a fresh soft keystore and a test
//! policy, with credentials for every role. Shared by the HTTP integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::Connection;
use tempfile::TempDir;
use zkvault::http::{self, HttpSettings};
use zkvault::keystore::soft::{SoftKeystore, SoftKeystoreOptions};
use zkvault::storage::Store;
use zkvault::vault::{CacheTtls, Role, Vault};

use super::db::TestDb;

/// Two namespaces: `rp` (no checksum, 4 KiB records) and `uin` (Verhoeff IDs).
pub const POLICY: &str = r#"
[global]
kek_rotation_days = 365
credential_max_age_days = 90

[namespaces.rp]
max_record_bytes = 4096
dm_rotation_days = 90
decrypt_only_max_days = 365
destroy_after_retired_days = 30

[namespaces.uin]
max_record_bytes = 4096
id_checksum = "verhoeff"
dm_rotation_days = 90
decrypt_only_max_days = 365
destroy_after_retired_days = 30
"#;

pub struct Tokens {
    pub admin: String,
    pub writer: String,
    pub reader: String,
    pub operator: String,
    /// Writer and reader, but only for namespace `uin`.
    pub uin_writer: String,
    /// Bulk re-encryption of `rp`.
    pub reencrypt: String,
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub vault: Arc<Vault>,
    pub tokens: Tokens,
    pub client: reqwest::Client,
    pub db: TestDb,
    pub dir: TempDir,
    handle: actix_web::dev::ServerHandle,
}

impl TestApp {
    pub async fn start(db: TestDb) -> TestApp {
        Self::start_with_limit(db, 1024 * 1024).await
    }

    pub async fn start_with_limit(db: TestDb, body_limit: usize) -> TestApp {
        Self::start_with(db, body_limit, POLICY).await
    }

    /// The service under another key policy than [`POLICY`].
    pub async fn start_with(db: TestDb, body_limit: usize, policy: &str) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policy")).unwrap();
        std::fs::write(dir.path().join("policy/test.toml"), policy).unwrap();
        let url = db.url().to_owned();
        let dir_path = dir.path().to_path_buf();
        let vault = tokio::task::spawn_blocking(move || open_vault(&url, &dir_path))
            .await
            .unwrap();
        let tokens = tokio::task::spawn_blocking({
            let vault = vault.clone();
            move || Tokens {
                admin: issue(&vault, &[Role::Admin], &[]),
                writer: issue(&vault, &[Role::Writer, Role::Reader], &["rp"]),
                reader: issue(&vault, &[Role::Reader], &["rp"]),
                operator: issue(&vault, &[Role::Operator], &[]),
                uin_writer: issue(&vault, &[Role::Writer, Role::Reader], &["uin"]),
                reencrypt: issue(&vault, &[Role::Reencrypt], &["rp"]),
            }
        })
        .await
        .unwrap();
        let settings = HttpSettings {
            body_limit,
            argon2_concurrency: 2,
            workers: Some(2),
            max_connections: 4096,
        };
        let running = http::bind(vault.clone(), "127.0.0.1:0".parse().unwrap(), &settings).unwrap();
        let handle = running.handle.clone();
        tokio::spawn(running.server);
        TestApp {
            addr: running.addr,
            vault,
            tokens,
            client: reqwest::Client::new(),
            db,
            dir,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A request with a bearer token and, if given, a resident ID.
    pub fn req(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        resident: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut r = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(id) = resident {
            r = r.header("Resident-Id", id);
        }
        r
    }

    pub async fn put(&self, ns: &str, name: &str, id: &str, body: &[u8]) -> reqwest::Response {
        self.req(
            reqwest::Method::PUT,
            &format!("/v1/ns/{ns}/records/{name}"),
            &self.tokens.writer,
            Some(id),
        )
        .header("Content-Type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
    }

    pub async fn get(&self, ns: &str, name: &str, id: &str) -> reqwest::Response {
        self.req(
            reqwest::Method::GET,
            &format!("/v1/ns/{ns}/records/{name}"),
            &self.tokens.reader,
            Some(id),
        )
        .send()
        .await
        .unwrap()
    }

    /// Every stored record column of every row, for "nothing changed" comparisons.
    pub async fn snapshot(&self) -> Vec<String> {
        let url = self.db.url().to_owned();
        tokio::task::spawn_blocking(move || {
            query_strings(
                &url,
                "SELECT name || ':' || revision || ':' || etag || ':' || master_version || ':' || plaintext_len || ':' || content_type AS v FROM records ORDER BY name",
            )
        })
        .await
        .unwrap()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }

    /// A second instance on the same database and keystore, as in a cluster.
    pub async fn start_peer(&self) -> Peer {
        let (url, dir) = (self.db.url().to_owned(), self.dir.path().to_path_buf());
        let vault = tokio::task::spawn_blocking(move || {
            let store = Store::open(&url, 8).unwrap();
            let keystore = SoftKeystore::open(
                &dir.join("keystore.zks"),
                &zkvault::secret::SecretString::new("test passphrase"),
            )
            .unwrap();
            let policy = zkvault::policy::load_dir(&dir.join("policy")).unwrap();
            let ttls = CacheTtls {
                masters: Duration::from_secs(60),
                credentials: Duration::from_secs(60),
            };
            Arc::new(Vault::open(store, Arc::new(keystore), policy, ttls).unwrap())
        })
        .await
        .unwrap();
        let settings = HttpSettings {
            body_limit: 1024 * 1024,
            argon2_concurrency: 2,
            workers: Some(2),
            max_connections: 4096,
        };
        let running = http::bind(vault.clone(), "127.0.0.1:0".parse().unwrap(), &settings).unwrap();
        let handle = running.handle.clone();
        tokio::spawn(running.server);
        Peer {
            addr: running.addr,
            vault,
            handle,
        }
    }
}

/// Another instance of the service sharing a [`TestApp`]'s database and keystore.
pub struct Peer {
    pub addr: SocketAddr,
    pub vault: Arc<Vault>,
    pub handle: actix_web::dev::ServerHandle,
}

impl Peer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

fn open_vault(url: &str, dir: &Path) -> Arc<Vault> {
    let store = Store::open(url, 8).unwrap();
    store.migrate().unwrap();
    let pass = zkvault::secret::SecretString::new("test passphrase");
    let keystore = SoftKeystore::create(
        &dir.join("keystore.zks"),
        &pass,
        SoftKeystoreOptions::for_tests(),
    )
    .unwrap();
    let policy = zkvault::policy::load_dir(&dir.join("policy")).unwrap();
    let ttls = CacheTtls {
        masters: Duration::from_secs(60),
        credentials: Duration::from_secs(60),
    };
    Arc::new(Vault::open(store, Arc::new(keystore), policy, ttls).unwrap())
}

fn issue(vault: &Vault, roles: &[Role], namespaces: &[&str]) -> String {
    let ns: Vec<String> = namespaces.iter().map(|s| s.to_string()).collect();
    vault
        .create_credential(
            &zkvault::vault::Actor::new("test", "test"),
            "test",
            roles,
            &ns,
        )
        .unwrap()
        .token
        .expose()
        .to_owned()
}

/// A direct SQLite connection that waits for the service's writers instead of failing with
/// "database is locked" (background audit appends may be committing).
fn sqlite(path: &str) -> diesel::SqliteConnection {
    let mut c = diesel::SqliteConnection::establish(path).unwrap();
    c.batch_execute("PRAGMA busy_timeout = 10000").unwrap();
    c
}

/// Runs raw SQL against the test database (to tamper with rows as an attacker with database access would).
pub fn execute_sql(url: &str, sql: &str) {
    if let Some(path) = url.strip_prefix("sqlite://") {
        sqlite(path).batch_execute(sql).unwrap();
    } else {
        diesel::PgConnection::establish(url)
            .unwrap()
            .batch_execute(sql)
            .unwrap();
    }
}

#[derive(diesel::QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    v: String,
}

/// Runs a query whose one column is named `v` and is text.
pub fn query_strings(url: &str, sql: &str) -> Vec<String> {
    use diesel::RunQueryDsl;
    let rows: Vec<Text> = if let Some(path) = url.strip_prefix("sqlite://") {
        diesel::sql_query(sql).load(&mut sqlite(path)).unwrap()
    } else {
        diesel::sql_query(sql)
            .load(&mut diesel::PgConnection::establish(url).unwrap())
            .unwrap()
    };
    rows.into_iter().map(|t| t.v).collect()
}

/// Generates one `#[tokio::test]` per backend for each async test fn taking a [`TestDb`].
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::db::TestDb::sqlite()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = $crate::support::db::TestDb::postgres() {
                        super::$name(db).await
                    }
                }
            )*
        }
    };
}

/// Sends `request` verbatim over TCP (no client-side URL normalisation) and returns the
/// response's status code, or `None` if the server closed the connection without one.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.ok()?;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let head = std::str::from_utf8(&buf[..n]).ok()?;
    head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}
