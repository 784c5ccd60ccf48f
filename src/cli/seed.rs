//! `zkvault seed`: load-test seeding (loadtest/), not an operator tool.

use anyhow::Result;

use super::output::cli_actor;
use super::{config, open_vault, Cli};

#[derive(clap::Args)]
pub(super) struct SeedArgs {
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

pub(super) fn run(cli: &Cli, args: &SeedArgs) -> Result<()> {
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
