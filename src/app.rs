//! The composition root: the one place that turns a [`Config`] into the application. `serve`,
//! every CLI command and every integration test build through it, so what runs in tests is
//! what runs in production: the same store, keystore, policy and vault, and for a server the
//! same HTTP stack and the same background work (scheduler, cache sync, refusal flush).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, ConfigError, KeystoreConfig};
use crate::http::{self, DataPlane, HttpSettings};
use crate::keystore::pkcs11::{Pkcs11Config, Pkcs11Keystore};
use crate::keystore::soft::{passphrase_from_env_or_file, SoftKeystore, SoftKeystoreOptions};
use crate::keystore::{Keystore, KeystoreError};
use crate::policy::{self, PolicyErrors};
use crate::storage::{StorageError, Store};
use crate::vault::{CacheTtls, Vault, VaultError, REFUSAL_INTERVAL, SYNC_INTERVAL};

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

/// The vault of `config`: policy validated, keystore open, database migrated.
pub fn open_vault(config: &Config, create_keystore: bool) -> Result<Arc<Vault>, StartupError> {
    // The policy and the keystore first: a bad policy or a wrong PIN or passphrase then fails
    // before the store's pool has started threads that connect to the database.
    policy::load(&config.policy_source())?;
    let keystore = open_keystore(&config.keystore, create_keystore)?;
    open_vault_with(config, keystore)
}

/// [`open_vault`] over a keystore opened elsewhere: a migration's target, or a test's
/// fault-injecting wrapper.
pub fn open_vault_with(
    config: &Config,
    keystore: Arc<dyn Keystore>,
) -> Result<Arc<Vault>, StartupError> {
    let policy = policy::load(&config.policy_source())?;
    let store = open_store(config)?;
    let ttls = CacheTtls {
        masters: config.master_cache_ttl,
        credentials: config.credential_cache_ttl,
    };
    Ok(Arc::new(
        Vault::open(store, keystore, policy, ttls)?.with_audit_reads(config.audit_reads),
    ))
}

/// A server bound and running its background work; the caller awaits or spawns `server`.
pub struct Service {
    pub addr: SocketAddr,
    pub vault: Arc<Vault>,
    pub handle: actix_web::dev::ServerHandle,
    pub server: actix_web::dev::Server,
}

/// Binds `config.bind` (port 0 picks a free one) and starts what every server runs beside its
/// requests: the lifecycle scheduler, the cache sync that bounds cross-instance staleness to
/// under a second, and the refusal flush. The threads end when the vault is dropped.
pub fn serve(vault: Arc<Vault>, config: &Config) -> std::io::Result<Service> {
    serve_with(vault.clone(), vault, config)
}

/// [`serve`] with the record use cases answered by `data_plane` instead of the vault: the
/// benchmark baseline's one difference from the product.
pub fn serve_with(
    vault: Arc<Vault>,
    data_plane: Arc<dyn DataPlane>,
    config: &Config,
) -> std::io::Result<Service> {
    let settings = HttpSettings {
        body_limit: config.body_limit,
        argon2_concurrency: config.argon2_concurrency,
        workers: config.workers,
        max_connections: config.max_connections,
    };
    let running = http::bind(vault.clone(), data_plane, config.bind, &settings)?;
    crate::vault::spawn_scheduler(vault.clone(), config.scheduler_tick);
    spawn_refusal_flush(&vault);
    spawn_cache_sync(&vault);
    Ok(Service {
        addr: running.addr,
        vault,
        handle: running.handle,
        server: running.server,
    })
}

/// Appends the counted refusals every [`REFUSAL_INTERVAL`] (see `vault::refusals`); the last
/// ones are appended when the vault is dropped.
fn spawn_refusal_flush(vault: &Arc<Vault>) {
    let weak = Arc::downgrade(vault);
    std::thread::Builder::new()
        .name("refusal-flush".into())
        .spawn(move || loop {
            std::thread::sleep(REFUSAL_INTERVAL);
            let Some(vault) = weak.upgrade() else { return };
            vault.flush_refusals();
        })
        .expect("spawn refusal flush thread");
}

/// Keeps this instance's caches no staler than a second behind changes made anywhere (another
/// instance, the CLI): key rows every 250 ms (cached masters and index keys are dropped when
/// they changed), signer keys and trust rows every 250 ms, revoked or expired credentials every 500 ms.
fn spawn_cache_sync(vault: &Arc<Vault>) {
    let weak = Arc::downgrade(vault);
    std::thread::Builder::new()
        .name("cache-sync".into())
        .spawn(move || {
            for tick in 0u64.. {
                std::thread::sleep(SYNC_INTERVAL);
                let Some(vault) = weak.upgrade() else { return };
                if let Err(e) = vault.keyring().sync() {
                    tracing::warn!(error = %e, "key cache sync failed; retrying");
                }
                // The keystore's ledger once for both: on an HSM each read searches the token.
                match vault.keyring().keystore().destroyed_masters() {
                    Ok(ledger) => {
                        if let Err(e) = vault.signers().refresh_with(&ledger) {
                            tracing::warn!(error = %e, "signer key reload failed; retrying");
                        }
                        if let Err(e) = vault.trust().refresh_with(&ledger) {
                            tracing::warn!(error = %e, "trust reload failed; retrying");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "keystore ledger read failed; retrying"),
                }
                if tick % 2 == 1 {
                    if let Err(e) = vault.credentials().sync_revocations() {
                        tracing::warn!(error = %e, "revocation sync failed; retrying");
                    }
                }
            }
        })
        .expect("spawn cache sync thread");
}
