//! Service configuration: an optional TOML file, then `ZKVAULT_*` environment variables, validated
//! once into [`Config`]. Secrets (passphrase, PIN) are never read from here or from argv: only
//! their file paths are; the values come from the environment or those files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::policy::PolicySource;

/// The embedded default's sealed soft keystore, in its data directory.
pub const KEYSTORE_FILE: &str = "keystore.zks";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config file {0}: {1}")]
    Parse(PathBuf, String),
    #[error("config field {0}: {1}")]
    Invalid(&'static str, String),
}

#[derive(Debug, Clone)]
pub enum KeystoreConfig {
    Soft {
        path: PathBuf,
        passphrase_file: Option<PathBuf>,
    },
    Pkcs11 {
        module: PathBuf,
        token_label: String,
        pin_file: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub database_url: String,
    pub db_max_connections: u32,
    pub keystore: KeystoreConfig,
    /// Configured policy directory (`policy_dir`, `ZKVAULT_POLICY_DIR`); see [`Config::policy_source`].
    pub policy_dir: Option<PathBuf>,
    /// No config file: the embedded development default.
    pub embedded: bool,
    /// Largest request body the server reads at all (a namespace may set a lower limit).
    pub body_limit: usize,
    /// How long unwrapped masters stay cached (zeroized on eviction).
    pub master_cache_ttl: Duration,
    /// How long a verified credential stays cached; revocation evicts at once regardless.
    pub credential_cache_ttl: Duration,
    /// Argon2id runs at once at most (credential verification off the cache).
    pub argon2_concurrency: usize,
    pub workers: Option<usize>,
    /// Open client connections at most (all workers together); more wait in the listen backlog.
    pub max_connections: usize,
    /// How often `serve` checks the key policy for due rotations, retirements and destructions.
    pub scheduler_tick: Duration,
    /// Record successful reads in the audit trail (changes and failures always are).
    pub audit_reads: bool,
    /// Audit chain to append to first (the CLI's per-host chain); `None`: new random chains.
    pub audit_chain: Option<String>,
}

/// The file's shape; every field optional, environment variables override.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bind: Option<String>,
    database_url: Option<String>,
    db_max_connections: Option<u32>,
    policy_dir: Option<PathBuf>,
    body_limit_bytes: Option<usize>,
    master_cache_ttl_secs: Option<u64>,
    credential_cache_ttl_secs: Option<u64>,
    argon2_concurrency: Option<usize>,
    workers: Option<usize>,
    max_connections: Option<usize>,
    scheduler_tick_secs: Option<u64>,
    audit_reads: Option<bool>,
    keystore: Option<FileKeystore>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileKeystore {
    kind: Option<String>,
    path: Option<PathBuf>,
    passphrase_file: Option<PathBuf>,
    module: Option<PathBuf>,
    token_label: Option<String>,
    pin_file: Option<PathBuf>,
}

impl Config {
    /// The embedded default: everything under `data_dir`, policies from `./keys-policy` if it
    /// exists, else the built-in policy.
    pub fn embedded(data_dir: &Path) -> Config {
        Config {
            bind: "127.0.0.1:8080".parse().expect("literal address"),
            database_url: format!("sqlite://{}", data_dir.join("zkvault.db").display()),
            db_max_connections: 8,
            keystore: KeystoreConfig::Soft {
                path: data_dir.join(KEYSTORE_FILE),
                passphrase_file: Some(data_dir.join("passphrase")),
            },
            policy_dir: None,
            embedded: true,
            body_limit: 1024 * 1024,
            master_cache_ttl: Duration::from_secs(300),
            credential_cache_ttl: Duration::from_secs(60),
            argon2_concurrency: 2,
            workers: None,
            max_connections: 4096,
            scheduler_tick: Duration::from_secs(60),
            audit_reads: true,
            audit_chain: None,
        }
    }

    /// Loads `file` (if any) over the embedded defaults, then applies `ZKVAULT_*` variables.
    pub fn load(file: Option<&Path>, data_dir: &Path) -> Result<Config, ConfigError> {
        let doc: FileConfig = match file {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| ConfigError::Read(p.into(), e))?;
                toml::from_str(&text)
                    .map_err(|e| ConfigError::Parse(p.into(), e.message().to_owned()))?
            }
            None => FileConfig::default(),
        };
        let mut c = Self::from_parts(doc, data_dir, |k| std::env::var(k).ok())?;
        c.embedded = file.is_none();
        Ok(c)
    }

    /// Where the policy comes from: the configured directory, else `./keys-policy`; the embedded
    /// default falls back to the built-in policy, so it starts from any directory. A config file
    /// never does: production must not run on an example policy by accident.
    pub fn policy_source(&self) -> PolicySource {
        let default = Path::new("keys-policy");
        match &self.policy_dir {
            Some(dir) => PolicySource::Dir(dir.clone()),
            None if self.embedded && !default.exists() => PolicySource::BuiltIn,
            None => PolicySource::Dir(default.to_path_buf()),
        }
    }

    fn from_parts(
        doc: FileConfig,
        data_dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut c = Config::embedded(data_dir);
        let bind = env("ZKVAULT_BIND").or(doc.bind);
        if let Some(b) = bind {
            c.bind = b
                .parse()
                .map_err(|e| ConfigError::Invalid("bind", format!("{b:?}: {e}")))?;
        }
        if let Some(url) = env("ZKVAULT_DATABASE_URL").or(doc.database_url) {
            c.database_url = url;
        }
        c.db_max_connections = parse_env(&env, "ZKVAULT_DB_MAX_CONNECTIONS", "db_max_connections")?
            .or(doc.db_max_connections)
            .unwrap_or(c.db_max_connections);
        if let Some(p) = env("ZKVAULT_POLICY_DIR")
            .map(PathBuf::from)
            .or(doc.policy_dir)
        {
            c.policy_dir = Some(p);
        }
        c.body_limit = parse_env(&env, "ZKVAULT_BODY_LIMIT", "body_limit_bytes")?
            .or(doc.body_limit_bytes)
            .unwrap_or(c.body_limit);
        if let Some(s) = doc.master_cache_ttl_secs {
            c.master_cache_ttl = Duration::from_secs(s);
        }
        if let Some(s) = doc.credential_cache_ttl_secs {
            c.credential_cache_ttl = Duration::from_secs(s);
        }
        c.argon2_concurrency = doc.argon2_concurrency.unwrap_or(c.argon2_concurrency);
        c.workers = parse_env(&env, "ZKVAULT_WORKERS", "workers")?.or(doc.workers);
        c.max_connections = parse_env(&env, "ZKVAULT_MAX_CONNECTIONS", "max_connections")?
            .or(doc.max_connections)
            .unwrap_or(c.max_connections);
        if let Some(s) = parse_env(&env, "ZKVAULT_SCHEDULER_TICK_SECS", "scheduler_tick_secs")?
            .or(doc.scheduler_tick_secs)
        {
            if s == 0 {
                return Err(ConfigError::Invalid(
                    "scheduler_tick_secs",
                    "must be at least 1".into(),
                ));
            }
            c.scheduler_tick = Duration::from_secs(s);
        }

        c.audit_reads = parse_env(&env, "ZKVAULT_AUDIT_READS", "audit_reads")?
            .or(doc.audit_reads)
            .unwrap_or(c.audit_reads);
        let ks = doc.keystore.unwrap_or_default();
        let kind = env("ZKVAULT_KEYSTORE")
            .or(ks.kind)
            .unwrap_or_else(|| "soft".into());
        c.keystore = match kind.as_str() {
            "soft" => {
                let (default_path, default_pass) = match &c.keystore {
                    KeystoreConfig::Soft {
                        path,
                        passphrase_file,
                    } => (path.clone(), passphrase_file.clone()),
                    KeystoreConfig::Pkcs11 { .. } => unreachable!("embedded default is soft"),
                };
                KeystoreConfig::Soft {
                    path: env("ZKVAULT_SOFT_KEYSTORE")
                        .map(PathBuf::from)
                        .or(ks.path)
                        .unwrap_or(default_path),
                    // A passphrase in ZKVAULT_PASSPHRASE replaces the default file, not one configured.
                    passphrase_file: env("ZKVAULT_PASSPHRASE_FILE")
                        .map(PathBuf::from)
                        .or(ks.passphrase_file)
                        .or(if env(crate::keystore::soft::PASSPHRASE_ENV).is_some() {
                            None
                        } else {
                            default_pass
                        }),
                }
            }
            "pkcs11" => KeystoreConfig::Pkcs11 {
                module: env("ZKVAULT_PKCS11_MODULE")
                    .map(PathBuf::from)
                    .or(ks.module)
                    .ok_or(ConfigError::Invalid(
                        "keystore.module",
                        "required for the pkcs11 keystore".into(),
                    ))?,
                token_label: env("ZKVAULT_PKCS11_TOKEN").or(ks.token_label).ok_or(
                    ConfigError::Invalid(
                        "keystore.token_label",
                        "required for the pkcs11 keystore".into(),
                    ),
                )?,
                pin_file: env("ZKVAULT_PKCS11_PIN_FILE")
                    .map(PathBuf::from)
                    .or(ks.pin_file),
            },
            other => {
                return Err(ConfigError::Invalid(
                    "keystore.kind",
                    format!("{other:?}: expected \"soft\" or \"pkcs11\""),
                ))
            }
        };

        if c.body_limit == 0 || c.body_limit > 64 * 1024 * 1024 {
            return Err(ConfigError::Invalid(
                "body_limit_bytes",
                format!("{} is outside 1..=67108864", c.body_limit),
            ));
        }
        if c.db_max_connections == 0 {
            return Err(ConfigError::Invalid(
                "db_max_connections",
                "must be at least 1".into(),
            ));
        }
        if c.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "max_connections",
                "must be at least 1".into(),
            ));
        }
        if c.argon2_concurrency == 0 {
            return Err(ConfigError::Invalid(
                "argon2_concurrency",
                "must be at least 1".into(),
            ));
        }
        Ok(c)
    }
}

fn parse_env<T: std::str::FromStr>(
    env: &impl Fn(&str) -> Option<String>,
    var: &str,
    field: &'static str,
) -> Result<Option<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    env(var)
        .map(|v| {
            v.parse()
                .map_err(|e| ConfigError::Invalid(field, format!("{var}={v:?}: {e}")))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(file: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let doc: FileConfig = toml::from_str(file).unwrap();
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_parts(doc, Path::new("/d"), |k| {
            vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults_are_the_embedded_service() {
        let c = cfg("", &[]).unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, "sqlite:///d/zkvault.db");
        assert!(matches!(c.keystore, KeystoreConfig::Soft { .. }));
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = cfg(
            "bind = \"0.0.0.0:9000\"\nbody_limit_bytes = 2048",
            &[("ZKVAULT_BIND", "127.0.0.1:1")],
        )
        .unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:1");
        assert_eq!(c.body_limit, 2048);
        assert_eq!(cfg("", &[]).unwrap().max_connections, 4096);
        assert_eq!(
            cfg("max_connections = 100", &[]).unwrap().max_connections,
            100
        );
        assert_eq!(
            cfg("max_connections = 100", &[("ZKVAULT_MAX_CONNECTIONS", "7")])
                .unwrap()
                .max_connections,
            7
        );
        assert!(matches!(
            cfg("max_connections = 0", &[]),
            Err(ConfigError::Invalid("max_connections", _))
        ));
    }

    #[test]
    fn the_passphrase_comes_from_a_file_or_the_environment() {
        let file = |c: Config| match c.keystore {
            KeystoreConfig::Soft {
                passphrase_file, ..
            } => passphrase_file,
            KeystoreConfig::Pkcs11 { .. } => unreachable!(),
        };
        assert_eq!(
            file(cfg("", &[]).unwrap()),
            Some(PathBuf::from("/d/passphrase"))
        );
        assert_eq!(
            file(cfg("", &[("ZKVAULT_PASSPHRASE", "p")]).unwrap()),
            None,
            "ZKVAULT_PASSPHRASE is read"
        );
        let configured = "[keystore]\nkind = \"soft\"\npassphrase_file = \"/run/p\"";
        assert_eq!(
            file(cfg(configured, &[("ZKVAULT_PASSPHRASE", "p")]).unwrap()),
            Some(PathBuf::from("/run/p"))
        );
        assert_eq!(
            file(cfg(configured, &[("ZKVAULT_PASSPHRASE_FILE", "/e")]).unwrap()),
            Some(PathBuf::from("/e"))
        );
    }

    #[test]
    fn pkcs11_needs_module_and_token() {
        assert!(matches!(
            cfg("[keystore]\nkind = \"pkcs11\"", &[]),
            Err(ConfigError::Invalid("keystore.module", _))
        ));
        let c = cfg(
            "[keystore]\nkind = \"pkcs11\"\nmodule = \"/m.so\"\ntoken_label = \"t\"",
            &[],
        )
        .unwrap();
        assert!(matches!(c.keystore, KeystoreConfig::Pkcs11 { .. }));
    }

    #[test]
    fn bad_values_are_named() {
        assert!(matches!(
            cfg("", &[("ZKVAULT_BODY_LIMIT", "lots")]),
            Err(ConfigError::Invalid("body_limit_bytes", _))
        ));
        assert!(matches!(
            cfg("bind = \"nope\"", &[]),
            Err(ConfigError::Invalid("bind", _))
        ));
        assert!(
            toml::from_str::<FileConfig>("passphrase = \"x\"").is_err(),
            "secrets have no config field"
        );
    }
}
