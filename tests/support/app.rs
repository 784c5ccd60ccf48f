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
use zkvault::app::{self, StartupError};
use zkvault::config::{Config, KeystoreConfig};
use zkvault::keystore::soft::{SoftKeystore, SoftKeystoreOptions};
use zkvault::keystore::Keystore;
use zkvault::secret::SecretString;
use zkvault::vault::{Actor, Caller, Grant, Role, Vault};

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
    /// What the app was built from; a peer or a restart builds from it again.
    pub config: Config,
    handle: actix_web::dev::ServerHandle,
}

/// The passphrase of the test keystore (in `<dir>/passphrase`).
pub const PASSPHRASE: &str = "test passphrase";

/// A deployment's configuration in `dir`: the test database, the soft keystore file and the
/// `policy` directory under `dir`, 127.0.0.1:0.
pub fn test_config(db: &TestDb, dir: &Path) -> Config {
    let mut config = Config::embedded(dir);
    config.embedded = false;
    config.bind = "127.0.0.1:0".parse().unwrap();
    config.database_url = db.url().to_owned();
    config.policy_dir = Some(dir.join("policy"));
    config.keystore = KeystoreConfig::Soft {
        path: dir.join("keystore.zks"),
        passphrase_file: Some(dir.join("passphrase")),
    };
    config.workers = Some(2);
    config.master_cache_ttl = Duration::from_secs(60);
    config
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
        Self::start_configured(db, policy, |c| c.body_limit = body_limit).await
    }

    /// The service under `policy`, its [`test_config`] changed by `tweak` first.
    pub async fn start_configured(
        db: TestDb,
        policy: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policy")).unwrap();
        std::fs::write(dir.path().join("policy/test.toml"), policy).unwrap();
        std::fs::write(dir.path().join("passphrase"), PASSPHRASE).unwrap();
        SoftKeystore::create(
            &dir.path().join("keystore.zks"),
            &SecretString::new(PASSPHRASE),
            SoftKeystoreOptions::for_tests(),
        )
        .unwrap();
        let mut config = test_config(&db, dir.path());
        tweak(&mut config);
        let vault = tokio::task::spawn_blocking({
            let config = config.clone();
            move || app::open_vault(&config, false).unwrap()
        })
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
        let service = app::serve(vault, &config).unwrap();
        tokio::spawn(service.server);
        TestApp {
            addr: service.addr,
            vault: service.vault,
            tokens,
            client: reqwest::Client::new(),
            db,
            dir,
            config,
            handle: service.handle,
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

    /// The token of a new credential for `roles` in `namespaces` (none: every namespace),
    /// issued by the local operator.
    pub async fn issue(&self, roles: &'static [Role], namespaces: &'static [&str]) -> String {
        let vault = self.vault.clone();
        tokio::task::spawn_blocking(move || issue(&vault, roles, namespaces))
            .await
            .unwrap()
    }

    /// `method path` with `token` and, if given, a JSON body: the status and the JSON answer
    /// (`Null` when the body is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut r = self.req(method, path, token, None);
        if let Some(body) = body {
            r = r.json(&body);
        }
        let r = r.send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// A fresh vault over the same database and keystore: what a restart (or the CLI) sees.
    pub fn reopen(&self) -> Arc<Vault> {
        app::open_vault(&self.config, false).unwrap()
    }

    /// [`TestApp::reopen`] over another keystore (a migration target, a failing wrapper).
    pub fn reopen_with(&self, keystore: Arc<dyn Keystore>) -> Result<Arc<Vault>, StartupError> {
        app::open_vault_with(&self.config, keystore)
    }

    /// A second instance on the same database and keystore, as in a cluster: a second build
    /// of the same configuration.
    pub async fn start_peer(&self) -> Peer {
        let config = self.config.clone();
        let vault = tokio::task::spawn_blocking({
            let config = config.clone();
            move || app::open_vault(&config, false).unwrap()
        })
        .await
        .unwrap();
        let service = app::serve(vault, &config).unwrap();
        tokio::spawn(service.server);
        Peer {
            addr: service.addr,
            vault: service.vault,
            handle: service.handle,
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

/// The vault's grant to a local operator (as the CLI acts) for `role` in `ns`.
pub fn grant(vault: &Vault, role: Role, ns: Option<&str>) -> Grant {
    vault
        .authorize(&Caller::local(Actor::new("test", "test")), role, ns)
        .unwrap()
}

fn issue(vault: &Vault, roles: &[Role], namespaces: &[&str]) -> String {
    let ns: Vec<String> = namespaces.iter().map(|s| s.to_string()).collect();
    vault
        .create_credential(&grant(vault, Role::Admin, None), "test", roles, &ns)
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

/// Copies `tables` as they stand into `<table>_backup_<name>`: a backup, taken by a database
/// administrator (rows and their MACs exactly as zkvault wrote them).
pub fn backup(url: &str, name: &str, tables: &[&str]) {
    for t in tables {
        execute_sql(
            url,
            &format!("CREATE TABLE {t}_backup_{name} AS SELECT * FROM {t}"),
        );
    }
}

/// Puts `tables` back as [`backup`] `name` held them: a restore of an older backup.
pub fn restore(url: &str, name: &str, tables: &[&str]) {
    for t in tables {
        execute_sql(
            url,
            &format!("DELETE FROM {t}; INSERT INTO {t} SELECT * FROM {t}_backup_{name}"),
        );
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
