//! Process hardening for `zkvault serve`: keep unwrapped keys, tokens and resident IDs out of
//! core files, out of other processes' reach, and (where the operator allows it) out of swap.
//!
//! [`apply`] is called once, first thing in `serve`, before any key is unwrapped:
//!
//! - **Core dumps off, always.** `RLIMIT_CORE` is set to 0 (soft and hard, so the process cannot
//!   raise it again) and the process is made non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`). The
//!   latter also stops processes of the same user from attaching with ptrace or reading
//!   `/proc/<pid>/mem`, and keeps a crash handler like systemd-coredump from capturing memory.
//!   Root (or `CAP_SYS_PTRACE`) can still read the process's memory: see docs/threat-model.md.
//! - **Memory locked where the OS allows.** Keys live in many small heap allocations (moka caches
//!   of unwrapped masters, per-request resident and record keys), so locking only "the key pages"
//!   is not practical; zkvault locks the whole process with
//!   `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`. `MCL_ONFAULT` locks pages as they are
//!   touched rather than populating every reservation (thread stacks, allocator arenas) up front,
//!   so the locked size is the resident size, not the virtual size. With [`LockMemory::Auto`]
//!   (what `serve` uses) this happens only when the operator has granted it — an unlimited
//!   `RLIMIT_MEMLOCK` (systemd `LimitMEMLOCK=infinity`, `docker run --ulimit memlock=-1`) or the
//!   `CAP_IPC_LOCK` capability — because under a finite limit `MCL_FUTURE` would make some later
//!   allocation fail once the limit is reached and the server would abort mid-request.
//!   Otherwise (the usual default limit is 8 MiB or less) nothing is locked and `serve` logs one
//!   warning naming the fallback: run without swap or with encrypted swap, which is what keeps
//!   pages off disk then. Zeroize-on-drop of every key type limits what any copy holds either way.
//! - **Two allocator arenas.** glibc gives busy threads arenas of their own (up to 8 per core),
//!   and memory freed in one stays there. Locked pages are never reclaimed, so that spread is
//!   resident for good: the blocking pool's many threads grew the server by tens of MiB under
//!   load. `M_ARENA_MAX = 2` keeps it small (docs/performance.md, "Memory").

use std::fmt;

/// Whether to lock the process's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMemory {
    /// Never lock.
    Off,
    /// Lock if the limit is unlimited or the process holds `CAP_IPC_LOCK`; else warn and go on.
    Auto,
}

/// What [`apply`] achieved; `serve` logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    /// `RLIMIT_CORE` is 0 (soft and hard).
    pub core_dumps_disabled: bool,
    /// `PR_GET_DUMPABLE` is 0.
    pub non_dumpable: bool,
    pub memory: MemoryLock,
}

/// The outcome of locking memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryLock {
    /// `mlockall` succeeded: current and future pages are locked as they are touched.
    Locked,
    /// Not asked for ([`LockMemory::Off`]).
    NotRequested,
    /// Not attempted, or refused by the OS: why, and what to do about it.
    Unlocked(String),
}

impl fmt::Display for MemoryLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryLock::Locked => f.write_str("locked"),
            MemoryLock::NotRequested => f.write_str("not requested"),
            MemoryLock::Unlocked(why) => write!(f, "not locked: {why}"),
        }
    }
}

/// Disables core dumps, makes the process non-dumpable and locks memory per `lock`. Never fails:
/// each step that the OS refuses is reported in the result (and logged) instead.
pub fn apply(lock: LockMemory) -> Hardening {
    bound_allocator_arenas();
    let core_dumps_disabled = disable_core_dumps();
    let non_dumpable = make_non_dumpable();
    let memory = match lock {
        LockMemory::Off => MemoryLock::NotRequested,
        LockMemory::Auto => match lock_allowed(memlock_limit(), has_cap_ipc_lock()) {
            Err(why) => MemoryLock::Unlocked(why),
            Ok(()) => lock_all(),
        },
    };
    let report = Hardening {
        core_dumps_disabled,
        non_dumpable,
        memory,
    };
    if !report.core_dumps_disabled || !report.non_dumpable {
        tracing::warn!(?report, "could not fully disable core dumps");
    }
    match &report.memory {
        MemoryLock::Unlocked(why) => tracing::warn!(
            reason = %why,
            "process memory is not locked: keys may reach swap; run without swap or with encrypted swap, \
             or allow locking (LimitMEMLOCK=infinity or CAP_IPC_LOCK)"
        ),
        other => tracing::info!(memory = %other, core_dumps = "disabled", "process hardened"),
    }
    report
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn bound_allocator_arenas() {
    // SAFETY: mallopt takes two integers; it only changes the allocator's tuning.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bound_allocator_arenas() {}

fn disable_core_dumps() -> bool {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads a valid rlimit struct; no memory is retained.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) == 0 }
}

#[cfg(target_os = "linux")]
fn make_non_dumpable() -> bool {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
            && libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn make_non_dumpable() -> bool {
    false
}

/// The soft `RLIMIT_MEMLOCK` in bytes; `None` for unlimited.
fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Some(0);
    }
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// Whether the effective capability set holds `CAP_IPC_LOCK` (bit 14), from /proc/self/status.
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_owned()))
        })
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// [`LockMemory::Auto`]'s rule: lock only when nothing can make a later allocation fail.
fn lock_allowed(limit: Option<u64>, cap_ipc_lock: bool) -> Result<(), String> {
    match (limit, cap_ipc_lock) {
        (None, _) | (_, true) => Ok(()),
        (Some(bytes), false) => Err(format!(
            "RLIMIT_MEMLOCK is {} KiB and the process lacks CAP_IPC_LOCK; locking everything would make a later allocation fail",
            bytes / 1024
        )),
    }
}

#[cfg(target_os = "linux")]
fn lock_all() -> MemoryLock {
    // SAFETY: mlockall takes flags only.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) } == 0 {
        MemoryLock::Locked
    } else {
        MemoryLock::Unlocked(format!(
            "mlockall refused: {}",
            std::io::Error::last_os_error()
        ))
    }
}

#[cfg(not(target_os = "linux"))]
fn lock_all() -> MemoryLock {
    MemoryLock::Unlocked("memory locking is implemented for Linux only".into())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Set in the child process that [`in_child`] starts.
    const CHILD: &str = "ZKVAULT_HARDENING_CHILD";

    /// Runs the test `name` again in a child process with [`CHILD`] set, so what `apply` does to
    /// the process (limits, dumpable flag, locked memory) never touches the other tests. Returns
    /// true in the child, which then does the real work; the parent asserts the child passed.
    fn in_child(name: &str) -> bool {
        if std::env::var_os(CHILD).is_some() {
            return true;
        }
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "child failed:\n{text}");
        assert!(text.contains("1 passed"), "the child ran the test:\n{text}");
        false
    }

    fn vm_locked_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmLck:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn core_dumps_are_disabled_for_good() {
        if !in_child("hardening::tests::core_dumps_are_disabled_for_good") {
            return;
        }
        let report = apply(LockMemory::Off);
        assert!(
            report.core_dumps_disabled && report.non_dumpable,
            "{report:?}"
        );
        assert_eq!(report.memory, MemoryLock::NotRequested);
        let mut lim = libc::rlimit {
            rlim_cur: 1,
            rlim_max: 1,
        };
        // SAFETY: valid out-pointer; prctl with integer arguments.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_CORE, &mut lim), 0);
            assert_eq!(libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
        }
        // The hard limit is 0 too, so the process cannot raise it again (short of CAP_SYS_RESOURCE).
        assert_eq!((lim.rlim_cur, lim.rlim_max), (0, 0));
        assert_eq!(vm_locked_kib(), 0, "LockMemory::Off locks nothing");
    }

    #[test]
    fn memory_is_locked_when_allowed_and_reported_when_not() {
        if !in_child("hardening::tests::memory_is_locked_when_allowed_and_reported_when_not") {
            return;
        }
        let allowed = lock_allowed(memlock_limit(), has_cap_ipc_lock()).is_ok();
        let report = apply(LockMemory::Auto);
        assert!(report.core_dumps_disabled && report.non_dumpable);
        if allowed {
            assert_eq!(report.memory, MemoryLock::Locked);
            // Touch fresh memory: with MCL_FUTURE | MCL_ONFAULT it is locked as it is faulted in.
            let before = vm_locked_kib();
            let buf = vec![1u8; 4 << 20];
            std::hint::black_box(&buf);
            assert!(
                vm_locked_kib() >= before + 4096,
                "4 MiB touched after mlockall is locked"
            );
            eprintln!("memory locked (VmLck {} kB)", vm_locked_kib());
        } else {
            assert!(
                matches!(&report.memory, MemoryLock::Unlocked(why) if why.contains("RLIMIT_MEMLOCK")),
                "{report:?}"
            );
            assert_eq!(vm_locked_kib(), 0);
            eprintln!("memory not locked here: {}", report.memory);
        }
    }

    #[test]
    fn locking_is_attempted_only_when_it_cannot_break_allocation() {
        assert!(lock_allowed(None, false).is_ok(), "unlimited");
        assert!(
            lock_allowed(Some(64 * 1024), true).is_ok(),
            "CAP_IPC_LOCK ignores the limit"
        );
        let why = lock_allowed(Some(8 << 20), false).unwrap_err();
        assert!(why.contains("8192 KiB"), "{why}");
    }
}
