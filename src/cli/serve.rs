//! `zkvault serve`: the HTTP service and the embedded default's first run.

use anyhow::{Context, Result};

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
    let sys = actix_web::rt::System::new();
    sys.block_on(async move {
        let service = zkvault::app::serve(vault, &config)
            .with_context(|| format!("cannot listen on {}", config.bind))?;
        tracing::info!(addr = %service.addr, "zkvault listening");
        service.server.await.context("server failed")
    })
}
