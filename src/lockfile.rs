//! Cross-process exclusive locks on a sidecar file (`flock(2)`), for state that several
//! processes share without a database lock to lean on: the soft keystore file, and key changes
//! on a SQLite deployment (the service and the CLI are separate processes).
//!
//! The lock belongs to the open file description, so two acquisitions in one process (two
//! threads, two keystore objects) exclude each other as two processes do. It is released when
//! the guard is dropped, or by the kernel when the process dies (kill -9 leaves no stale lock).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// Held while alive; dropping it closes the file and so releases the lock.
pub struct FileLock {
    _file: File,
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lock {0} still held by another process after {1:?}")]
    Timeout(String, Duration),
    #[error("cannot open lock file {0}: {1}")]
    Io(String, std::io::Error),
}

impl FileLock {
    /// Takes the exclusive lock on `path` (created 0600 if missing), waiting at most `wait`.
    pub fn acquire(path: &Path, wait: Duration) -> Result<FileLock, LockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| LockError::Io(path.display().to_string(), e))?;
        let started = Instant::now();
        loop {
            // SAFETY: flock on a descriptor this function owns; no memory is shared.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(FileLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(LockError::Io(path.display().to_string(), err));
            }
            if started.elapsed() >= wait {
                return Err(LockError::Timeout(path.display().to_string(), wait));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_then_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let first = FileLock::acquire(&path, Duration::ZERO).unwrap();
        assert!(matches!(
            FileLock::acquire(&path, Duration::from_millis(30)),
            Err(LockError::Timeout(..))
        ));
        drop(first);
        FileLock::acquire(&path, Duration::ZERO).unwrap();
    }
}
