//! `zkvault serve`: the HTTP service, its scheduler, and the embedded default's first run.

use anyhow::{Context, Result};
use zkvault::http::{self, HttpSettings};
use zkvault::vault::spawn_scheduler;

use super::{config, open_vault, Cli};

pub(super) fn run(cli: &Cli) -> Result<()> {
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
