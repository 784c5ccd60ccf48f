//! The `zkvault` command: the service and its operator tools. Thin: parses arguments, calls the
//! library, prints results. Secrets come from the environment or files, never from argv.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use zkvault::config::Config;
use zkvault::http::{self, HttpSettings};
use zkvault::policy;
use zkvault::service::{self, EmbeddedLayout};
use zkvault::vault::{Role, Vault};

#[derive(Parser)]
#[command(name = "zkvault", version, about = "Zero-knowledge identity vault")]
struct Cli {
    /// Configuration file (TOML). Without it: the embedded default under --data-dir.
    #[arg(long, global = true, env = "ZKVAULT_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory of the embedded default (SQLite file, soft keystore, passphrase).
    #[arg(long, global = true, default_value = "zkvault-data", env = "ZKVAULT_DATA_DIR")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve,
    /// Database maintenance.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Manage API credentials directly on the database (works while the service is down).
    Credentials {
        #[command(subcommand)]
        command: CredentialCommand,
    },
    /// Key policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Keystore tools.
    Keystore {
        #[command(subcommand)]
        command: KeystoreCommand,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Apply pending migrations.
    Migrate,
}

#[derive(Subcommand)]
enum CredentialCommand {
    /// Issue a credential and print its token once.
    Create {
        #[arg(long)]
        label: String,
        /// Role(s): admin, writer, reader, reencrypt, operator, auditor.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Namespace(s) the credential may use; none = all.
        #[arg(long = "ns")]
        namespaces: Vec<String>,
    },
    /// List credentials (no secrets).
    List,
    /// Revoke a credential by id.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy directory; prints every problem with file, field and reason.
    Check { dir: PathBuf },
}

#[derive(Subcommand)]
enum KeystoreCommand {
    /// Create the configured keystore (soft: a new sealed file) with its first KEK.
    Init,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match &cli.command {
        Command::Serve => serve(&cli),
        Command::Db { command: DbCommand::Migrate } => {
            service::open_store(&config(&cli)?)?;
            println!("database migrated");
            Ok(())
        }
        Command::Credentials { command } => credentials(&cli, command),
        Command::Policy { command: PolicyCommand::Check { dir } } => policy_check(dir),
        Command::Keystore { command: KeystoreCommand::Init } => {
            let keystore = service::open_keystore(&config(&cli)?.keystore, true)?;
            let kek = match keystore.active_kek()? {
                Some(v) => v,
                None => keystore.create_kek()?,
            };
            println!("{} keystore ready; active KEK v{kek}", keystore.kind());
            Ok(())
        }
    }
}

fn config(cli: &Cli) -> Result<Config> {
    Ok(Config::load(cli.config.as_deref(), &cli.data_dir)?)
}

/// Opens the vault; on the embedded default, creates its data directory and keystore first.
fn open_vault(cli: &Cli, config: &Config) -> Result<(Arc<Vault>, Option<EmbeddedLayout>)> {
    if cli.config.is_some() {
        return Ok((service::open_vault(config, false)?, None));
    }
    let layout = EmbeddedLayout { dir: cli.data_dir.clone() };
    layout.prepare()?;
    Ok((service::open_vault(config, true)?, Some(layout)))
}

fn serve(cli: &Cli) -> Result<()> {
    let config = config(cli)?;
    let (vault, embedded) = open_vault(cli, &config)?;
    if let Some(layout) = &embedded {
        eprintln!("\n  !! DEVELOPMENT KEYSTORE: keys sealed under a passphrase stored next to them in {}.", layout.dir.display());
        eprintln!("  !! Fine for trying zkvault; for production use --config with a PKCS#11 HSM (see README).\n");
        if let Some((admin, writer)) = layout.issue_first_credentials(&vault)? {
            eprintln!("  first run: admin token in {}, writer token in {}\n", admin.display(), writer.display());
        }
    }
    let settings = HttpSettings {
        body_limit: config.body_limit,
        argon2_concurrency: config.argon2_concurrency,
        workers: config.workers,
    };
    let sys = actix_web::rt::System::new();
    sys.block_on(async move {
        let running = http::bind(vault, config.bind, &settings).with_context(|| format!("cannot listen on {}", config.bind))?;
        tracing::info!(addr = %running.addr, "zkvault listening");
        running.server.await.context("server failed")
    })
}

fn credentials(cli: &Cli, command: &CredentialCommand) -> Result<()> {
    let config = config(cli)?;
    let (vault, _) = open_vault(cli, &config)?;
    match command {
        CredentialCommand::Create { label, roles, namespaces } => {
            let roles = roles
                .iter()
                .map(|r| Role::parse(r).with_context(|| format!("unknown role {r:?}")))
                .collect::<Result<Vec<_>>>()?;
            let issued = vault.create_credential(label, &roles, namespaces)?;
            eprintln!("credential {} created; the token below is shown once:", issued.id);
            println!("{}", issued.token.as_str());
        }
        CredentialCommand::List => {
            for c in vault.credentials().list()? {
                println!("{}", serde_json::to_string(&c)?);
            }
        }
        CredentialCommand::Revoke { id } => {
            vault.credentials().revoke(id)?;
            println!("credential {id} revoked");
        }
    }
    Ok(())
}

fn policy_check(dir: &Path) -> Result<()> {
    match policy::load_dir(dir) {
        Ok(p) => {
            println!("{}: valid ({} namespaces: {})", dir.display(), p.namespaces.len(), p.namespaces.keys().cloned().collect::<Vec<_>>().join(", "));
            Ok(())
        }
        Err(errors) => {
            for issue in &errors.0 {
                println!("{issue}");
            }
            bail!("{} problem(s) in {}", errors.0.len(), dir.display())
        }
    }
}
