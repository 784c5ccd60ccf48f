//! The `zkvault` command: the service and its operator tools. Thin: parses arguments, calls the
//! library, prints results. Secrets come from the environment or files, never from argv.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use zkvault::config::Config;
use zkvault::http::{self, HttpSettings};
use zkvault::policy;
use zkvault::service::{self, EmbeddedLayout};
use zkvault::vault::{spawn_scheduler, Actor, Role, Vault};

#[path = "cli/exit.rs"]
mod exit;
#[path = "cli/guard.rs"]
mod guard;
#[path = "cli/reencrypt.rs"]
mod reencrypt;

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
    #[arg(long, global = true, value_parser = parse_actor)]
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
    /// The tamper-evident audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Key lifecycle: rotation, compromise response, destruction (works while the service runs).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
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
    /// JSON record each (see loadtest/). Prints a JSON summary line.
    Seed(SeedArgs),
}

#[derive(clap::Args)]
struct SeedArgs {
    #[arg(long, default_value = "resident-portal")]
    ns: String,
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// First resident index (UIN of index i = zkvault::vault::seed_uin(i)).
    #[arg(long, default_value_t = 0)]
    start: u64,
    #[arg(long, default_value = "demographics")]
    name: String,
    /// Rows per transaction.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Sealing threads (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk every hash chain and check every keystore-MACed checkpoint; exits non-zero and names
    /// the first entry that was edited, deleted, inserted or reordered.
    Verify,
    /// MAC the current chain heads now (the service also does it every scheduler tick).
    Checkpoint,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// KEK versions, and per namespace each master's state and record count (JSON).
    List,
    /// New KEK version; every master and index key rewrapped; the old KEK retired.
    RotateKek,
    /// New active master for a namespace; the previous one becomes decrypt-only.
    RotateMaster {
        #[arg(long)]
        ns: String,
    },
    /// Mark a master compromised (rotates first if active); its records are re-keyed first.
    Compromise {
        #[arg(long)]
        ns: String,
        #[arg(long)]
        version: u32,
    },
    /// Suspected KEK/HSM exposure: rotate the KEK, mark every live master compromised and rotate.
    CompromiseKek {
        /// Print what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Destroy a master's material; refused while records remain unless --shred.
    Destroy {
        #[arg(long)]
        ns: String,
        #[arg(long)]
        version: u32,
        /// Destroy it even though records remain: they become unreadable forever (asks first).
        #[arg(long)]
        shred: bool,
        /// Print what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask before --shred.
        #[arg(long)]
        yes: bool,
    },
    /// Destroy a retired KEK in the keystore once nothing is wrapped under it (asks first).
    DestroyKek {
        version: u32,
        /// Print what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Run the policy's due rotations, retirements and destructions now.
    RunDue,
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
    /// Issue a successor (same label, roles, namespaces; token printed once) and let the old
    /// credential expire after the overlap, so clients switch without an outage.
    Rotate {
        id: String,
        /// How long the old token keeps working (never past its own expiry): e.g. 30m, 24h, 7d.
        #[arg(long, default_value = "24h", value_parser = zkvault::duration::parse)]
        overlap: std::time::Duration,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy directory; prints every problem with file, field and reason.
    Check { dir: PathBuf },
    /// The coming rotations, window ends, destructions and credential expiries, from the
    /// current key state in the database, as a dated timeline.
    Plan {
        dir: PathBuf,
        /// How far ahead: e.g. 90d, 1y, 3y.
        #[arg(long, default_value = "1y", value_parser = zkvault::duration::parse)]
        horizon: std::time::Duration,
    },
}

#[derive(Subcommand)]
enum KeystoreCommand {
    /// Create the configured keystore (soft: a new sealed file) with its first KEK.
    Init,
    /// Move every master to another keystore (its config file's [keystore] table); records are
    /// untouched. Restart every instance with that keystore configuration afterwards.
    Migrate {
        #[arg(long)]
        to: PathBuf,
        /// Print what would happen; change nothing (the target keystore is not touched).
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() {
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
                if JSON.get().copied().unwrap_or(false) {
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
    ACTOR.get_or_init(|| cli.actor.clone().unwrap_or_else(os_user));
    JSON.get_or_init(|| cli.json);

    match &cli.command {
        Command::Serve => serve(cli),
        Command::Db {
            command: DbCommand::Migrate,
        } => {
            service::open_store(&config(cli)?)?;
            emit(json!({"migrated": true}), || "database migrated".into());
            Ok(())
        }
        Command::Credentials { command } => credentials(cli, command),
        Command::Policy {
            command: PolicyCommand::Check { dir },
        } => policy_check(dir),
        Command::Policy {
            command: PolicyCommand::Plan { dir, horizon },
        } => policy_plan(cli, dir, *horizon),
        Command::Keys { command } => keys(cli, command),
        Command::Reencrypt {
            ns,
            ids,
            checkpoint,
            batch,
        } => reencrypt::run(
            &open_vault(cli, &config(cli)?)?.0,
            &cli_actor("bulk re-encryption"),
            ns,
            ids,
            checkpoint.clone(),
            *batch,
        ),
        Command::Audit { command } => audit(cli, command),
        Command::Keystore {
            command: KeystoreCommand::Migrate { to, dry_run },
        } => {
            let (vault, _) = open_vault(cli, &config(cli)?)?;
            if *dry_run {
                emit_pretty(&guard::migrate(&vault, to)?)?;
                return Ok(());
            }
            let target = Config::load(Some(to), &cli.data_dir)?;
            let target = service::open_keystore(&target.keystore, true)?;
            let report =
                vault.migrate_keystore(target.as_ref(), &cli_actor("keystore migration"))?;
            emit_pretty(&report)?;
            eprintln!(
                "now restart every instance with the keystore configuration of {}",
                to.display()
            );
            Ok(())
        }
        Command::Seed(args) => seed(cli, args),
        Command::Keystore {
            command: KeystoreCommand::Init,
        } => {
            let config = config(cli)?;
            if cli.config.is_none() {
                embedded_layout(cli)?.prepare(&config)?;
            }
            let keystore = service::open_keystore(&config.keystore, true)?;
            let kek = match keystore.active_kek()? {
                Some(v) => v,
                None => keystore.create_kek()?,
            };
            emit(
                json!({"keystore": keystore.kind(), "active_kek": kek}),
                || format!("{} keystore ready; active KEK v{kek}", keystore.kind()),
            );
            Ok(())
        }
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
        return Ok((service::open_vault(config, false)?, None));
    }
    let layout = embedded_layout(cli)?;
    let fresh = !layout.dir.exists();
    match layout
        .prepare(config)
        .and_then(|()| service::open_vault(config, true))
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
                command: KeystoreCommand::Init
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

fn serve(cli: &Cli) -> Result<()> {
    zkvault::hardening::apply(zkvault::hardening::LockMemory::Auto);
    let config = config(cli)?;
    let (vault, embedded) = open_vault(cli, &config)?;
    if let Some(layout) = &embedded {
        if layout.keeps_passphrase(&config) {
            eprintln!("\n  !! DEVELOPMENT KEYSTORE: keys sealed under a passphrase stored next to them in {}.", layout.dir.display());
        } else {
            eprintln!(
                "\n  !! DEVELOPMENT KEYSTORE: a soft keystore file in {}.",
                layout.dir.display()
            );
        }
        eprintln!("  !! Fine for trying zkvault; for production use --config with a PKCS#11 HSM (see README).\n");
        if let Some((admin, writer)) = layout.issue_first_credentials(&vault)? {
            eprintln!(
                "  first run: admin token in {}, writer token in {}\n",
                admin.display(),
                writer.display()
            );
        }
    }
    let settings = HttpSettings {
        body_limit: config.body_limit,
        argon2_concurrency: config.argon2_concurrency,
        workers: config.workers,
        max_connections: config.max_connections,
    };
    spawn_scheduler(vault.clone(), config.scheduler_tick);
    let sys = actix_web::rt::System::new();
    sys.block_on(async move {
        let running = http::bind(vault, config.bind, &settings)
            .with_context(|| format!("cannot listen on {}", config.bind))?;
        tracing::info!(addr = %running.addr, "zkvault listening");
        running.server.await.context("server failed")
    })
}

fn credentials(cli: &Cli, command: &CredentialCommand) -> Result<()> {
    let config = config(cli)?;
    let (vault, _) = open_vault(cli, &config)?;
    match command {
        CredentialCommand::Create {
            label,
            roles,
            namespaces,
        } => {
            let roles = roles
                .iter()
                .map(|r| Role::parse(r).ok_or_else(|| exit::fail(exit::Exit::Usage, format!("unknown role {r:?}: expected admin, writer, reader, reencrypt, operator or auditor"))))
                .collect::<Result<Vec<_>>>()?;
            let issued = vault.create_credential(
                &cli_actor("credential issued"),
                label,
                &roles,
                namespaces,
            )?;
            if !json_output() {
                eprintln!(
                    "credential {} created; the token below is shown once:",
                    issued.id
                );
            }
            emit(
                json!({"id": issued.id, "token": issued.token.as_str()}),
                || issued.token.as_str().to_owned(),
            );
        }
        CredentialCommand::List => {
            let list = vault.credentials().list()?;
            emit(serde_json::to_value(&list)?, || {
                list.iter()
                    .map(|c| serde_json::to_string(c).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        CredentialCommand::Rotate { id, overlap } => {
            let issued = vault.rotate_credential(&cli_actor("credential rotated"), id, *overlap)?;
            // Report the expiry the old credential really has now, not the requested overlap.
            let expires = vault
                .store()
                .credential(id)?
                .and_then(|c| c.expires_at)
                .unwrap_or_default();
            let left = std::time::Duration::from_millis(
                (expires - zkvault::vault::now_ms()).max(0) as u64,
            );
            let at = zkvault::time::rfc3339(expires);
            if !json_output() {
                eprintln!(
                    "credential {} issued as successor of {id}, which expires at {at} (in {}); the token below is shown once:",
                    issued.id,
                    zkvault::duration::format(left)
                );
            }
            emit(
                json!({"id": issued.id, "token": issued.token.as_str(), "predecessor": id, "predecessor_expires_at": at}),
                || issued.token.as_str().to_owned(),
            );
        }
        CredentialCommand::Revoke { id } => {
            vault
                .credentials()
                .revoke(&cli_actor("credential revoked"), id)?;
            emit(json!({"revoked": id}), || {
                format!("credential {id} revoked")
            });
        }
    }
    Ok(())
}

fn seed(cli: &Cli, args: &SeedArgs) -> Result<()> {
    let (vault, _) = open_vault(cli, &config(cli)?)?;
    let opts = zkvault::vault::SeedOptions {
        namespace: args.ns.clone(),
        record_name: args.name.clone(),
        start: args.start,
        count: args.count,
        batch: args.batch,
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
    };
    let mut last = std::time::Instant::now();
    let report = vault.seed(&cli_actor("load-test seeding"), &opts, |done, total| {
        if last.elapsed().as_secs() >= 5 {
            last = std::time::Instant::now();
            eprintln!("seed: {done}/{total}");
        }
    })?;
    let rate = (report.inserted + report.skipped) as f64 / report.seconds.max(1e-9);
    eprintln!(
        "seeded {} residents into {} in {:.1} s ({rate:.0}/s, {} already present)",
        report.inserted, args.ns, report.seconds, report.skipped
    );
    println!(
        "{}",
        serde_json::json!({"namespace": args.ns, "start": args.start, "count": args.count, "report": report, "per_second": rate})
    );
    Ok(())
}

static ACTOR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static JSON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

fn json_output() -> bool {
    JSON.get().copied().unwrap_or(false)
}

/// A command's result on stdout: `json` (one line) with --json, else `human`.
fn emit(json: Value, human: impl FnOnce() -> String) {
    if json_output() {
        println!("{json}");
    } else {
        let text = human();
        if !text.is_empty() {
            println!("{text}");
        }
    }
}

/// A result that is JSON either way: one line with --json, indented for people otherwise.
fn emit_pretty(value: &impl serde::Serialize) -> Result<()> {
    let value = serde_json::to_value(value)?;
    let pretty = serde_json::to_string_pretty(&value)?;
    emit(value, || pretty);
    Ok(())
}

fn cli_actor(why: &str) -> Actor {
    Actor::new(
        format!("cli:{}", ACTOR.get().map_or("?", String::as_str)),
        why,
    )
}

fn parse_actor(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
    ok.then(|| s.to_owned())
        .ok_or_else(|| "1 to 64 characters of A-Z a-z 0-9 . _ @ -".into())
}

/// The OS user running the command: `$USER`/`$LOGNAME` if set, else the password database's
/// name for the real uid, else `uid<N>`. Never "unknown": the audit trail must name someone.
fn os_user() -> String {
    let from_env = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|u| parse_actor(u).is_ok());
    from_env.unwrap_or_else(|| {
        // SAFETY: getuid cannot fail; getpwuid's result is read before any other passwd call.
        let uid = unsafe { libc::getuid() };
        let pw = unsafe { libc::getpwuid(uid) };
        let name = (!pw.is_null()).then(|| {
            unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) }
                .to_string_lossy()
                .into_owned()
        });
        name.filter(|n| parse_actor(n).is_ok())
            .unwrap_or(format!("uid{uid}"))
    })
}

fn keys(cli: &Cli, command: &KeysCommand) -> Result<()> {
    let (vault, _) = open_vault(cli, &config(cli)?)?;
    let out = match command {
        KeysCommand::List => serde_json::to_value(vault.key_overview()?)?,
        KeysCommand::RotateKek => {
            serde_json::to_value(vault.rotate_kek(&cli_actor("KEK rotation"))?)?
        }
        KeysCommand::RotateMaster { ns } => {
            serde_json::to_value(vault.rotate_master(ns, &cli_actor("master rotation"))?)?
        }
        KeysCommand::Compromise { ns, version } => serde_json::to_value(vault.compromise_master(
            ns,
            *version,
            &cli_actor("suspected master compromise"),
        )?)?,
        KeysCommand::CompromiseKek { dry_run: true } => guard::compromise_kek(&vault)?,
        KeysCommand::CompromiseKek { dry_run: false } => {
            serde_json::to_value(vault.compromise_kek(&cli_actor("suspected KEK/HSM compromise"))?)?
        }
        KeysCommand::Destroy {
            ns,
            version,
            shred,
            dry_run: true,
            ..
        } => guard::destroy(&vault, ns, *version, *shred)?,
        KeysCommand::Destroy {
            ns,
            version,
            shred,
            dry_run: false,
            yes,
        } => {
            if *shred {
                guard::confirm(
                    &format!("Shredding {ns} v{version} (its records become unreadable forever)"),
                    *yes,
                )?;
            }
            serde_json::to_value(vault.destroy_master(
                ns,
                *version,
                *shred,
                &cli_actor("destruction"),
            )?)?
        }
        KeysCommand::DestroyKek {
            version,
            dry_run: true,
            ..
        } => guard::destroy_kek(&vault, *version)?,
        KeysCommand::DestroyKek {
            version,
            dry_run: false,
            yes,
        } => {
            guard::confirm(&format!("Destroying KEK v{version}"), *yes)?;
            vault.destroy_kek(*version, &cli_actor("KEK destruction"))?;
            serde_json::json!({"destroyed_kek": version})
        }
        KeysCommand::RunDue => {
            serde_json::to_value(vault.run_due_lifecycle(zkvault::vault::now_ms())?)?
        }
    };
    emit_pretty(&out)?;
    Ok(())
}

fn audit(cli: &Cli, command: &AuditCommand) -> Result<()> {
    let (vault, _) = open_vault(cli, &config(cli)?)?;
    match command {
        AuditCommand::Checkpoint => {
            let n = vault.checkpoint_audit()?;
            emit(json!({"checkpoints_written": n}), || {
                format!("{n} checkpoint(s) written")
            });
        }
        AuditCommand::Verify => {
            let report = vault.verify_audit()?;
            emit_pretty(&report)?;
            if let Some(b) = report.first_break {
                return Err(exit::fail(
                    exit::Exit::Integrity,
                    format!(
                        "audit trail broken at chain {} entry {}: {}",
                        b.chain, b.seq, b.reason
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn policy_plan(cli: &Cli, dir: &Path, horizon: std::time::Duration) -> Result<()> {
    let mut config = config(cli)?;
    config.policy_dir = Some(dir.to_path_buf());
    let (vault, _) = open_vault(cli, &config)?;
    let events = vault.plan(zkvault::vault::now_ms(), horizon)?;
    let date = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .format("%Y-%m-%d")
            .to_string()
    };
    let as_json = events
        .iter()
        .map(|e| json!({"date": date(e.at_ms), "at": zkvault::time::rfc3339(e.at_ms), "what": e.what}))
        .collect();
    emit(Value::Array(as_json), || {
        events
            .iter()
            .map(|e| format!("{}  {}", date(e.at_ms), e.what))
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

fn policy_check(dir: &Path) -> Result<()> {
    match policy::load_dir(dir) {
        Ok(p) => {
            let names: Vec<&String> = p.namespaces.keys().collect();
            emit(json!({"valid": true, "namespaces": names}), || {
                format!(
                    "{}: valid ({} namespaces: {})",
                    dir.display(),
                    names.len(),
                    names
                        .iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
            Ok(())
        }
        Err(errors) => {
            let issues: Vec<Value> = errors
                .0
                .iter()
                .map(|i| json!({"file": i.file, "field": i.field, "reason": i.reason}))
                .collect();
            emit(json!({"valid": false, "issues": issues}), || {
                errors
                    .0
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Err(exit::fail(
                exit::Exit::Config,
                format!("{} problem(s) in {}", errors.0.len(), dir.display()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks (conflicting flags, bad defaults, duplicate names).
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
