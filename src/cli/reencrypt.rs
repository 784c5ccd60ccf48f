//! `zkvault reencrypt`: feeds resident IDs from a file (or stdin) to the vault in batches.
//!
//! After each batch a checkpoint is written (atomically) naming the job — the namespace, the
//! master records are being moved to, and a SHA-256 of the ID file — and how many lines are
//! done, so an interrupted run resumes where it stopped. A checkpoint of another job (another
//! namespace, a master rotated since, an edited file) never applies, and a finished job removes
//! its checkpoint: a rerun starts over and counts what was moved as `already_current`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use zeroize::Zeroizing;

use zkvault::vault::{ReencryptReport, Role, Vault, VaultError, MAX_REENCRYPT_IDS};

use super::exit::{fail, Exit};
use super::output::cli_grant;

/// Which job a checkpoint belongs to, and how far it got.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Checkpoint {
    namespace: String,
    target_master: u32,
    ids_sha256: String,
    lines_done: u64,
}

impl Checkpoint {
    fn same_job(&self, other: &Checkpoint) -> bool {
        (&self.namespace, self.target_master, &self.ids_sha256)
            == (&other.namespace, other.target_master, &other.ids_sha256)
    }
}

/// The checkpoint at `path`, if any. One that cannot be read as a checkpoint is reported, not
/// trusted.
fn read_checkpoint(path: &Path) -> Result<Option<Checkpoint>> {
    match std::fs::read_to_string(path) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(c) => Ok(Some(c)),
            Err(_) => {
                eprintln!(
                    "ignoring {}: not a checkpoint of this version",
                    path.display()
                );
                Ok(None)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read checkpoint {}", path.display())),
    }
}

fn write_checkpoint(path: &Path, checkpoint: &Checkpoint) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    writeln!(f, "{}", serde_json::to_string(checkpoint)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// Line count and SHA-256 of the ID file.
fn fingerprint(ids: &Path) -> Result<(u64, String)> {
    let mut file =
        BufReader::new(File::open(ids).with_context(|| format!("cannot open {}", ids.display()))?);
    let (mut hash, mut lines) = (Sha256::new(), 0u64);
    let mut buf = Zeroizing::new(vec![0u8; 64 * 1024]);
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", ids.display()))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
    Ok((lines, hex::encode(hash.finalize())))
}

pub fn run(
    vault: &Vault,
    ns: &str,
    ids: &Path,
    checkpoint: Option<PathBuf>,
    batch: usize,
) -> Result<()> {
    let grant = cli_grant(vault, "bulk re-encryption", Role::Reencrypt, Some(ns))?;
    let batch = batch.clamp(1, MAX_REENCRYPT_IDS);
    let stdin = ids == Path::new("-");
    if stdin && checkpoint.is_some() {
        // Nothing identifies a stream's content, so its checkpoint could resume another list.
        anyhow::bail!("--checkpoint needs an ID file: a job read from stdin cannot be resumed");
    }
    let checkpoint = checkpoint
        .or_else(|| (!stdin).then(|| PathBuf::from(format!("{}.{ns}.checkpoint", ids.display()))));
    let target_master = vault.keyring().active_version(ns)?;
    let (total, ids_sha256) = if stdin {
        (None, String::new())
    } else {
        fingerprint(ids).map(|(n, h)| (Some(n), h))?
    };
    let mut progress = Checkpoint {
        namespace: ns.to_owned(),
        target_master,
        ids_sha256,
        lines_done: 0,
    };
    if let Some(path) = &checkpoint {
        match read_checkpoint(path)? {
            Some(saved) if saved.same_job(&progress) => progress.lines_done = saved.lines_done,
            Some(_) => eprintln!("ignoring {}: it belongs to another job (namespace, target master or ID file differ)", path.display()),
            None => {}
        }
    }
    let skip = progress.lines_done;
    let reader: Box<dyn BufRead> = if stdin {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        Box::new(BufReader::new(
            File::open(ids).with_context(|| format!("cannot open {}", ids.display()))?,
        ))
    };

    let bar = match total {
        Some(t) => ProgressBar::new(t).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} IDs  {per_sec}  ETA {eta}")
                .expect("valid template"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {pos} IDs  {per_sec}").expect("valid template"),
        ),
    };
    bar.set_position(skip);
    if skip > 0 {
        eprintln!("resuming after line {skip} (checkpoint)");
    }

    let interrupted = on_sigint();
    let mut total_report = ReencryptReport::default();
    // Line numbers of the IDs that are not valid resident IDs: reported, never the IDs.
    let mut invalid_lines: Vec<u64> = Vec::new();
    let mut lines_done = skip;
    let mut pending: Vec<(u64, Zeroizing<String>)> = Vec::with_capacity(batch);
    let mut lines = reader.lines().skip(skip as usize);
    loop {
        let line = lines.next().transpose().context("reading resident IDs")?;
        let finished = line.is_none();
        if let Some(line) = line {
            let line = Zeroizing::new(line);
            lines_done += 1;
            if !line.trim().is_empty() {
                pending.push((lines_done, line));
            }
            if pending.len() < batch {
                continue;
            }
        }
        while !pending.is_empty() {
            let ids: Vec<&str> = pending.iter().map(|(_, s)| s.as_str()).collect();
            match vault.reencrypt(&grant, &ids) {
                Ok(r) => {
                    total_report.moved += r.moved;
                    total_report.rekeyed += r.rekeyed;
                    total_report.already_current += r.already_current;
                    total_report.not_found += r.not_found;
                    total_report.shredded += r.shredded;
                    pending.clear();
                }
                // One invalid ID refuses its whole batch: set it aside by its line and rerun the rest.
                Err(VaultError::BadInput(m))
                    if invalid_index(&m).is_some_and(|i| i < pending.len()) =>
                {
                    let (line, _) = pending.remove(invalid_index(&m).expect("checked"));
                    invalid_lines.push(line);
                }
                Err(e) => {
                    return Err(
                        anyhow::Error::new(e).context(format!("batch ending at line {lines_done}"))
                    )
                }
            }
        }
        bar.set_position(lines_done);
        if finished {
            break;
        }
        if let Some(path) = &checkpoint {
            progress.lines_done = lines_done;
            write_checkpoint(path, &progress)?;
        }
        if interrupted.load(Ordering::Relaxed) {
            // Stopped after a whole batch; its checkpoint is written, so a rerun resumes here.
            bar.abandon();
            eprintln!("interrupted after line {lines_done}; rerun the same command to resume");
            summary(&total_report, &invalid_lines, true)?;
            return Err(fail(Exit::Interrupted, "interrupted"));
        }
    }
    bar.finish();
    if let Some(path) = checkpoint.as_deref().filter(|p| p.exists()) {
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove finished checkpoint {}", path.display()))?;
    }
    summary(&total_report, &invalid_lines, false)
}

fn summary(report: &ReencryptReport, invalid_lines: &[u64], interrupted: bool) -> Result<()> {
    if !invalid_lines.is_empty() {
        eprintln!(
            "skipped {} invalid resident ID(s) at line(s) {}",
            invalid_lines.len(),
            invalid_lines
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut out = serde_json::to_value(report)?;
    out["invalid"] = invalid_lines.len().into();
    out["invalid_lines"] = invalid_lines.into();
    out["interrupted"] = interrupted.into();
    println!("{out}");
    Ok(())
}

/// Position in the batch of the ID a `resident_ids[i]: ...` refusal names.
fn invalid_index(message: &str) -> Option<usize> {
    message
        .strip_prefix("resident_ids[")?
        .split(']')
        .next()?
        .parse()
        .ok()
}

/// A flag SIGINT raises instead of killing the process, so the run stops after its current
/// batch and still prints its summary.
fn on_sigint() -> &'static AtomicBool {
    static INTERRUPTED: AtomicBool = AtomicBool::new(false);
    extern "C" fn raise(_: libc::c_int) {
        INTERRUPTED.store(true, Ordering::Relaxed);
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            raise as extern "C" fn(libc::c_int) as libc::sighandler_t,
        )
    };
    &INTERRUPTED
}
