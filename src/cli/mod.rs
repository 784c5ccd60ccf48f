//! The `zkvault` command: the service and its operator tools, one module per command group.
//! Thin: parses arguments, calls the library, prints results. Secrets come from the environment
//! or files, never from argv.

mod audit;
mod credentials;
mod db;
mod exit;
mod guard;
mod keys;
mod keystore;
mod output;
mod policy;
mod reencrypt;
mod seed;
mod serve;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::{Parser, Subcommand};
use zkvault::app;
use zkvault::config::Config;
use zkvault::embedded::EmbeddedLayout;
use zkvault::vault::Vault;

#[derive(Parser)]
#[command(name = "zkvault", version, about = "Zero-knowledge identity vault")]
struct Cli {
    /// Configuration file (TOML). Without it: the embedded default under --data-dir.
    #[arg(long, global = true, env = "ZKVAULT_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory of the embedded default (SQLite file, soft keystore, passphrase).
    #[arg(
        long,
        global = true,
        default_value = "zkvault-data",
        env = "ZKVAULT_DATA_DIR"
    )]
    data_dir: PathBuf,
    /// Who runs the command, as the audit trail records it (`cli:NAME`). Default: the OS user.
    #[arg(long, global = true, value_parser = output::parse_actor)]
    actor: Option<String>,
    /// Print results as JSON (one document on stdout) and errors as JSON on stderr.
    #[arg(long, global = true)]
    json: bool,
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
        command: db::DbCommand,
    },
    /// Manage API credentials directly on the database (works while the service is down).
    Credentials {
        #[command(subcommand)]
        command: credentials::CredentialCommand,
    },
    /// Key policy tools.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Keystore tools.
    Keystore {
        #[command(subcommand)]
        command: keystore::KeystoreCommand,
    },
    /// The tamper-evident audit trail.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Key lifecycle: rotation, compromise response, destruction (works while the service runs).
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Move residents' records to the active master, from a file of resident IDs (one per line,
    /// `-` for stdin). Batched, resumable from a checkpoint, idempotent when rerun.
    Reencrypt {
        #[arg(long)]
        ns: String,
        #[arg(long)]
        ids: PathBuf,
        /// Progress file of this job (namespace, target master, ID file); removed when the job
        /// completes. Default: `<ids>.<ns>.checkpoint` (none for stdin).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Load-test seeding: N residents with deterministic Verhoeff-valid UINs, one sealed ~2 KiB
    /// JSON record each (see loadtest/). Prints a JSON summary line. A tool for load tests, not
    /// for operators: left out of `--help`.
    #[command(hide = true)]
    Seed(seed::SeedArgs),
}

pub fn main() -> ! {
    let code = {
        let cli = Cli::parse();
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_writer(std::io::stderr)
            .init();
        match run(&cli) {
            Ok(()) => 0,
            Err(e) => {
                let code = exit::code_of(&e);
                if output::json_output() {
                    eprintln!(
                        "{}",
                        serde_json::json!({"error": code.name(), "exit": code as i32, "message": exit::message(&e)})
                    );
                } else {
                    eprintln!("zkvault: error: {}", exit::message(&e));
                }
                code as i32
            }
        }
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // Leave without running exit handlers. r2d2 opens database connections on background
    // threads that outlive the pool; returning from main ran libcrypto's OPENSSL_cleanup while
    // one of them was inside a PostgreSQL TLS handshake, and the process died of SIGSEGV (about
    // one run in fifty when a command failed fast, e.g. on a wrong PIN). Everything that must
    // be closed (database connections, keystore sessions, files) was dropped above.
    unsafe { libc::_exit(code) }
}

fn run(cli: &Cli) -> Result<()> {
    output::init(cli.actor.clone(), cli.json);
    match &cli.command {
        Command::Serve => serve::run(cli),
        Command::Db { command } => db::run(cli, command),
        Command::Credentials { command } => credentials::run(cli, command),
        Command::Policy { command } => policy::run(cli, command),
        Command::Keys { command } => keys::run(cli, command),
        Command::Reencrypt {
            ns,
            ids,
            checkpoint,
            batch,
        } => reencrypt::run(
            &open_vault(cli, &config(cli)?)?.0,
            ns,
            ids,
            checkpoint.clone(),
            *batch,
        ),
        Command::Audit { command } => audit::run(cli, command),
        Command::Keystore { command } => keystore::run(cli, command),
        Command::Seed(args) => seed::run(cli, args),
    }
}

fn config(cli: &Cli) -> Result<Config> {
    let mut config = Config::load(cli.config.as_deref(), &cli.data_dir)?;
    if !matches!(cli.command, Command::Serve) {
        // One chain per host for every CLI run, not a new chain each run.
        config.audit_chain = Some(format!("cli:{}", host_name()));
    }
    Ok(config)
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer it is given.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let name =
        String::from_utf8_lossy(buf.split(|&b| b == 0).next().unwrap_or_default()).into_owned();
    if ok && !name.is_empty() {
        name
    } else {
        "localhost".into()
    }
}

/// Opens the vault. Without `--config`, on the embedded default: only `serve`, `keystore init`
/// and `seed` may create its data directory (an operator tool run in the wrong directory must
/// not quietly plan or change keys on a fresh, empty deployment), and a data directory created
/// here is removed again if the vault does not open, so no half-made one is left behind.
fn open_vault(cli: &Cli, config: &Config) -> Result<(Arc<Vault>, Option<EmbeddedLayout>)> {
    if cli.config.is_some() {
        return Ok((app::open_vault(config, false)?, None));
    }
    let layout = embedded_layout(cli)?;
    let fresh = !layout.dir.exists();
    match layout
        .prepare(config)
        .and_then(|()| app::open_vault(config, true))
    {
        Ok(vault) => Ok((vault, Some(layout))),
        Err(e) => {
            if fresh {
                let _ = std::fs::remove_dir_all(&layout.dir);
            }
            Err(e.into())
        }
    }
}

/// The embedded default's data directory; refused unless it already is one or the command
/// creates deployments.
fn embedded_layout(cli: &Cli) -> Result<EmbeddedLayout> {
    let layout = EmbeddedLayout {
        dir: cli.data_dir.clone(),
    };
    let creates = matches!(
        cli.command,
        Command::Serve
            | Command::Seed(_)
            | Command::Keystore {
                command: keystore::KeystoreCommand::Init
            }
    );
    if !creates && !layout.is_data_dir() {
        return Err(exit::fail(
            exit::Exit::Refused,
            format!(
                "no --config given and {} is not a zkvault data directory: pass --config FILE (or --data-dir DIR), \
                 or run `zkvault serve` to create a development deployment there",
                layout.dir.display()
            ),
        ));
    }
    Ok(layout)
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks (conflicting flags, bad defaults, duplicate names).
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
