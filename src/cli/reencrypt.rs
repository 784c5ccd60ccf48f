//! `zkvault reencrypt`: feeds resident IDs from a file (or stdin) to the vault in batches.
//!
//! After each batch the number of lines done is written to a checkpoint file (atomically), so
//! an interrupted run resumes where it stopped; rerunning a finished one is harmless, since
//! records already under the active master are only counted.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use zeroize::Zeroizing;
use zkvault::vault::{Actor, ReencryptReport, Vault, MAX_REENCRYPT_IDS};

fn read_checkpoint(path: &Path) -> Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().with_context(|| format!("checkpoint {} is not a line count", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("cannot read checkpoint {}", path.display())),
    }
}

fn write_checkpoint(path: &Path, lines_done: u64) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    writeln!(f, "{lines_done}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

pub fn run(vault: &Vault, actor: &Actor, ns: &str, ids: &Path, checkpoint: Option<PathBuf>, batch: usize) -> Result<()> {
    let batch = batch.clamp(1, MAX_REENCRYPT_IDS);
    let stdin = ids == Path::new("-");
    let checkpoint = checkpoint.or_else(|| (!stdin).then(|| PathBuf::from(format!("{}.checkpoint", ids.display()))));
    let skip = match &checkpoint {
        Some(path) => read_checkpoint(path)?,
        None => 0,
    };
    let (reader, total): (Box<dyn BufRead>, Option<u64>) = if stdin {
        (Box::new(BufReader::new(std::io::stdin())), None)
    } else {
        let file = File::open(ids).with_context(|| format!("cannot open {}", ids.display()))?;
        let total = BufReader::new(File::open(ids)?).lines().count() as u64;
        (Box::new(BufReader::new(file)), Some(total))
    };

    let bar = match total {
        Some(t) => ProgressBar::new(t).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} IDs  {per_sec}  ETA {eta}").expect("valid template"),
        ),
        None => ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} {pos} IDs  {per_sec}").expect("valid template")),
    };
    bar.set_position(skip);
    if skip > 0 {
        eprintln!("resuming after line {skip} (checkpoint)");
    }

    let mut total_report = ReencryptReport::default();
    let mut lines_done = skip;
    let mut pending: Vec<Zeroizing<String>> = Vec::with_capacity(batch);
    let mut lines = reader.lines().skip(skip as usize);
    loop {
        let line = lines.next().transpose().context("reading resident IDs")?;
        let finished = line.is_none();
        if let Some(line) = line {
            let line = Zeroizing::new(line);
            lines_done += 1;
            if !line.trim().is_empty() {
                pending.push(line);
            }
            if pending.len() < batch {
                continue;
            }
        }
        if !pending.is_empty() {
            let ids: Vec<&str> = pending.iter().map(|s| s.as_str()).collect();
            let r = vault.reencrypt(actor, ns, &ids).with_context(|| format!("batch ending at line {lines_done}"))?;
            total_report.moved += r.moved;
            total_report.rekeyed += r.rekeyed;
            total_report.already_current += r.already_current;
            total_report.not_found += r.not_found;
            pending.clear();
        }
        if let Some(path) = &checkpoint {
            write_checkpoint(path, lines_done)?;
        }
        bar.set_position(lines_done);
        if finished {
            break;
        }
    }
    bar.finish();
    println!("{}", serde_json::to_string(&total_report)?);
    Ok(())
}
