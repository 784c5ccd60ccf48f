//! A deployment as an operator has it: a config file, a policy directory and a soft keystore on
//! a test database, the `zkvault` binary run against it, and `zkvault serve` as a child process.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use super::app::POLICY;
use super::db::TestDb;
use zkvault::config::Config;
use zkvault::keystore::soft::{SoftKeystore, SoftKeystoreOptions};
use zkvault::vault::Vault;

pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub db: TestDb,
}

impl Deployment {
    /// A config file, a policy directory and a (cheap-Argon2) soft keystore on `db`.
    pub fn new(db: TestDb) -> Deployment {
        Self::with_policy(db, POLICY)
    }

    /// [`Deployment::new`] under another key policy.
    pub fn with_policy(db: TestDb, policy_text: &str) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy");
        std::fs::create_dir(&policy).unwrap();
        std::fs::write(policy.join("test.toml"), policy_text).unwrap();
        std::fs::write(dir.path().join("passphrase"), "cli test passphrase\n").unwrap();
        SoftKeystore::create(
            &dir.path().join("keys.zks"),
            &zkvault::secret::SecretString::new("cli test passphrase"),
            SoftKeystoreOptions::for_tests(),
        )
        .unwrap();
        let config = format!(
            "database_url = {:?}\npolicy_dir = {:?}\n[keystore]\nkind = \"soft\"\npath = {:?}\npassphrase_file = {:?}\n",
            db.url(),
            policy,
            dir.path().join("keys.zks"),
            dir.path().join("passphrase")
        );
        std::fs::write(dir.path().join("zkvault.toml"), config).unwrap();
        Deployment { dir, db }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--config")
            .arg(self.path("zkvault.toml"))
            .args(args)
            .env_remove("ZKVAULT_PASSPHRASE")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }

    /// The deployment's configuration, as the CLI reads it.
    pub fn config(&self) -> Config {
        Config::load(Some(&self.path("zkvault.toml")), self.dir.path()).unwrap()
    }

    /// The vault this deployment's configuration builds.
    pub fn vault(&self) -> Arc<Vault> {
        zkvault::app::open_vault(&self.config(), false).unwrap()
    }
}

/// The binary under test; `ZKVAULT_TEST_BIN` runs these tests against another build (e.g. an
/// older one, to see a test fail before its fix).
pub fn bin() -> String {
    std::env::var("ZKVAULT_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_zkvault").to_owned())
}

/// `zkvault` run in `cwd` with no `ZKVAULT_*` setting inherited: what an operator gets.
pub fn bare(cwd: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(cwd).env("RUST_LOG", "warn");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ZKVAULT_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// `zkvault serve` of a [`Deployment`] as a child process on a free loopback port.
pub struct Server {
    pub child: std::process::Child,
    pub url: String,
}

impl Server {
    pub fn start(d: &Deployment) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_zkvault"))
            .arg("--config")
            .arg(d.path("zkvault.toml"))
            .arg("serve")
            .env("ZKVAULT_BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(d.path(&format!("serve-{port}.log"))).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!(
                    "serve exited with {status}: {}",
                    std::fs::read_to_string(d.path(&format!("serve-{port}.log"))).unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("serve did not listen");
    }

    /// kill -9: no shutdown code runs.
    pub fn kill(self) {}
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a CLI command of the deployment, asserting success; its stdout.
pub fn cli_ok(d: &Deployment, args: &[&str]) -> String {
    let out = d.run(args);
    assert!(
        out.status.success(),
        "zkvault {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}
