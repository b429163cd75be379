//! Process hardening for the runtime: no core dumps, not dumpable (**I3**).
//!
//! A core dump of the runtime would write decoded pixels (and the per-job signing key) to
//! disk in the clear. `RLIMIT_CORE = 0` (soft and hard, so it cannot be raised again without
//! privilege) stops the kernel writing one; `PR_SET_DUMPABLE = 0` additionally stops
//! same-uid processes from attaching with ptrace or reading `/proc/<pid>/mem`.
//! Both go through `nix`'s safe wrappers, so this crate stays free of `unsafe`.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

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
