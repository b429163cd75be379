//! Process hardening for the runtime: no core dumps, not dumpable, no swap (**I3**).
//!
//! A core dump of the runtime would write decoded pixels (and the per-job signing key) to
//! disk in the clear. `RLIMIT_CORE = 0` (soft and hard, so it cannot be raised again without
//! privilege) stops the kernel writing one; `PR_SET_DUMPABLE = 0` additionally stops
//! same-uid processes from attaching with ptrace or reading `/proc/<pid>/mem`.
//!
//! Swap would write them out too: decode buffers and the feed's pixel cache of later epochs
//! live in this process. [`lock_memory`] locks the whole process, present and future
//! mappings (`mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`), rather than each pixel
//! buffer: the decoders' own scratch allocations hold pixels too and are out of reach of a
//! per-buffer lock, and `nix::sys::mman::mlockall` is a safe function where `mlock` on a
//! buffer is `unsafe` in `nix` (a pointer and a length). `MCL_ONFAULT` locks pages as they
//! are first touched, so reserved but unused address space is not faulted in. Locking needs
//! `CAP_IPC_LOCK` (the node runs as root for runc) or an unlimited `RLIMIT_MEMLOCK`
//! (systemd: `LimitMEMLOCK=infinity`); without either it is refused up front, because under
//! `MCL_FUTURE` a later allocation past the limit would fail instead.
//!
//! Everything goes through `nix`'s safe wrappers, so this crate stays free of `unsafe`.

use nix::sys::mman::{mlockall, MlockAllFlags};
use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

use crate::error::{EnclaveError, Result};

/// Turns core dumps off for the current process and makes it non-dumpable. Idempotent.
///
/// # Errors
/// When the kernel refuses either setting.
pub fn harden_current_process() -> Result<()> {
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(|source| EnclaveError::Harden {
        what: "RLIMIT_CORE=0",
        source,
    })?;
    nix::sys::prctl::set_dumpable(false).map_err(|source| EnclaveError::Harden {
        what: "PR_SET_DUMPABLE=0",
        source,
    })?;
    Ok(())
}

/// `CAP_IPC_LOCK`'s bit in the capability sets of `/proc/<pid>/status`.
const CAP_IPC_LOCK: u32 = 14;

/// Whether memory can be locked without limit: `RLIMIT_MEMLOCK` (soft) is unlimited, or the
/// effective capabilities (`CapEff` of `/proc/self/status`, hex) include `CAP_IPC_LOCK`.
pub fn can_lock_all(memlock_soft: u64, cap_eff_hex: Option<&str>) -> bool {
    memlock_soft == RLIM_INFINITY
        || cap_eff_hex
            .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
            .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Locks this process's memory, present and future, against swap. Idempotent.
///
/// # Errors
/// [`EnclaveError::MemoryLock`] when the process may not lock without limit or the kernel
/// refuses: the run must not start (fail closed).
pub fn lock_memory() -> Result<()> {
    let (soft, _) = getrlimit(Resource::RLIMIT_MEMLOCK).map_err(|e| EnclaveError::MemoryLock {
        detail: format!("getrlimit(RLIMIT_MEMLOCK): {e}"),
    })?;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status.lines().find_map(|l| l.strip_prefix("CapEff:"));
    if !can_lock_all(soft, cap_eff) {
        return Err(EnclaveError::MemoryLock {
            detail: format!("RLIMIT_MEMLOCK is {soft} bytes and CAP_IPC_LOCK is not held"),
        });
    }
    let flags = MlockAllFlags::MCL_CURRENT
        | MlockAllFlags::MCL_FUTURE
        | MlockAllFlags::from_bits_retain(nix::libc::MCL_ONFAULT);
    mlockall(flags).map_err(|e| EnclaveError::MemoryLock {
        detail: format!("mlockall: {e}"),
    })
}

/// The current process's hardening state: `(core soft, core hard, dumpable)`.
///
/// # Errors
/// When the kernel cannot report it.
pub fn hardening_state() -> Result<(u64, u64, bool)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_CORE).map_err(|source| EnclaveError::Harden {
        what: "getrlimit(RLIMIT_CORE)",
        source,
    })?;
    let dumpable = nix::sys::prctl::get_dumpable().map_err(|source| EnclaveError::Harden {
        what: "PR_GET_DUMPABLE",
        source,
    })?;
    Ok((soft, hard, dumpable))
}
