//! The embedded default's data directory: its files, its first-run passphrase and credentials.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use zeroize::Zeroizing;

use crate::app::StartupError;
use crate::config::{Config, KeystoreConfig, KEYSTORE_FILE};
use crate::vault::{Actor, Caller, Role, Vault, VaultError};

/// Files the embedded default keeps in its data directory.
pub struct EmbeddedLayout {
    pub dir: PathBuf,
}

impl EmbeddedLayout {
    pub fn passphrase(&self) -> PathBuf {
        self.dir.join("passphrase")
    }
    pub fn keystore(&self) -> PathBuf {
        self.dir.join(KEYSTORE_FILE)
    }
    pub fn admin_token(&self) -> PathBuf {
        self.dir.join("admin.token")
    }
    pub fn writer_token(&self) -> PathBuf {
        self.dir.join("writer.token")
    }

    /// The directory holds an embedded deployment (its sealed keystore).
    pub fn is_data_dir(&self) -> bool {
        self.keystore().is_file()
    }

    /// True if `config` reads the keystore passphrase from this directory's file (not from
    /// `ZKVAULT_PASSPHRASE` or a file of its own).
    pub fn keeps_passphrase(&self, config: &Config) -> bool {
        matches!(&config.keystore, KeystoreConfig::Soft { passphrase_file: Some(p), .. } if *p == self.passphrase())
    }

    /// Creates the directory (0700) and, if `config` reads the passphrase from it and there is no
    /// keystore yet, a random keystore passphrase file (0600).
    pub fn prepare(&self, config: &Config) -> Result<(), StartupError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e| StartupError::Io(p, e)
        };
        if !self.dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(io(&self.dir))?;
        }
        let pass = self.passphrase();
        // Only for a keystore still to be created: a missing passphrase for an existing one is
        // an error to report, not a new random passphrase that can never open it.
        let new_keystore = !self.keystore().exists();
        if self.keeps_passphrase(config) && new_keystore && !pass.exists() {
            let random = zkvault_core::random::array::<32>().map_err(VaultError::from)?;
            let text =
                Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random));
            write_private(&pass, text.as_bytes()).map_err(io(&pass))?;
        }
        Ok(())
    }

    /// On a database with no credentials yet, issues an admin credential and a writer/reader
    /// credential for every namespace, and writes their tokens to 0600 files.
    pub fn issue_first_credentials(
        &self,
        vault: &Vault,
    ) -> Result<Option<(PathBuf, PathBuf)>, StartupError> {
        let admin = Caller::local(Actor::new("system", "embedded first run"));
        let grant = vault.authorize(&admin, Role::Admin, None)?;
        if !vault.list_credentials(&grant)?.is_empty() {
            return Ok(None);
        }
        let admin = vault.create_credential(
            &grant,
            "embedded admin",
            &[Role::Admin, Role::Operator, Role::Auditor],
            &[],
        )?;
        let writer = vault.create_credential(
            &grant,
            "embedded writer",
            &[Role::Writer, Role::Reader, Role::Reencrypt],
            &[],
        )?;
        for (path, token) in [
            (self.admin_token(), &admin.token),
            (self.writer_token(), &writer.token),
        ] {
            write_private(&path, token.expose().as_bytes())
                .map_err(|e| StartupError::Io(path.clone(), e))?;
        }
        Ok(Some((self.admin_token(), self.writer_token())))
    }
}

/// Writes a new file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
