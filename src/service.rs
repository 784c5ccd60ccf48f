//! The composition root: turns a [`Config`] into a running vault (keystore + store + policy),
//! and prepares the embedded default on first run.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use zeroize::Zeroizing;

use crate::config::{Config, ConfigError, KeystoreConfig, KEYSTORE_FILE};
use crate::keystore::pkcs11::{Pkcs11Config, Pkcs11Keystore};
use crate::keystore::soft::{passphrase_from_env_or_file, SoftKeystore, SoftKeystoreOptions};
use crate::keystore::{Keystore, KeystoreError};
use crate::policy::{self, PolicyErrors};
use crate::storage::{StorageError, Store};
use crate::vault::{Actor, CacheTtls, Role, Vault, VaultError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Policy(#[from] PolicyErrors),
    #[error("database: {0}")]
    Storage(#[from] StorageError),
    #[error("keystore: {0}")]
    Keystore(#[from] KeystoreError),
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// Opens the configured keystore. The soft keystore file must exist unless `create` is set.
pub fn open_keystore(
    cfg: &KeystoreConfig,
    create: bool,
) -> Result<Arc<dyn Keystore>, StartupError> {
    Ok(match cfg {
        KeystoreConfig::Soft {
            path,
            passphrase_file,
        } => {
            let passphrase = passphrase_from_env_or_file(passphrase_file.as_deref())?;
            if create && !path.exists() {
                Arc::new(SoftKeystore::create(
                    path,
                    &passphrase,
                    SoftKeystoreOptions::default(),
                )?)
            } else {
                Arc::new(SoftKeystore::open(path, &passphrase)?)
            }
        }
        KeystoreConfig::Pkcs11 {
            module,
            token_label,
            pin_file,
        } => Arc::new(Pkcs11Keystore::open(&Pkcs11Config {
            module: module.clone(),
            token_label: token_label.clone(),
            pin: Pkcs11Config::pin_from_env_or_file(pin_file.as_deref())?,
        })?),
    })
}

/// Opens and migrates the database.
pub fn open_store(config: &Config) -> Result<Store, StartupError> {
    let mut store = Store::open(&config.database_url, config.db_max_connections)?;
    if let Some(chain) = &config.audit_chain {
        store = store.with_audit_chain(chain);
    }
    store.migrate()?;
    Ok(store)
}

/// Everything `serve` needs: policy validated, database migrated, keystore open, vault ready.
pub fn open_vault(config: &Config, create_keystore: bool) -> Result<Arc<Vault>, StartupError> {
    let policy = policy::load(&config.policy_source())?;
    // The keystore first: a wrong PIN or passphrase then fails before the store's pool has
    // started threads that connect to the database in the background.
    let keystore = open_keystore(&config.keystore, create_keystore)?;
    let store = open_store(config)?;
    let ttls = CacheTtls {
        masters: config.master_cache_ttl,
        credentials: config.credential_cache_ttl,
    };
    Ok(Arc::new(
        Vault::open(store, keystore, policy, ttls)?.with_audit_reads(config.audit_reads),
    ))
}

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
        if !vault.credentials().list()?.is_empty() {
            return Ok(None);
        }
        let actor = Actor::new("system", "embedded first run");
        let admin = vault.create_credential(
            &actor,
            "embedded admin",
            &[Role::Admin, Role::Operator, Role::Auditor],
            &[],
        )?;
        let writer = vault.create_credential(
            &actor,
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
