//! The trainer's `/out`: a RAM-backed tmpfs sized to the bundle's output cap, unmounted (every
//! byte discarded) once the guard has run (**I3**: no output byte is ever on disk), and
//! detached at start-up where a run died with an earlier process.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags, MsFlags};

use crate::error::{EnclaveError, Result};
use crate::guard::MAX_ENTRIES;
use crate::sandbox::TRAINER_UID;

/// Unmounts the `/out` tmpfs (discarding every byte in it) when dropped.
pub(super) struct OutMount(PathBuf);

impl Drop for OutMount {
    fn drop(&mut self) {
        if let Err(e) = umount2(&self.0, MntFlags::MNT_DETACH) {
            tracing::error!(error = %e, "could not unmount the trainer's /out tmpfs");
        }
    }
}

pub(super) fn mount_out(dir: &Path, cap: u64) -> Result<OutMount> {
    let size = cap.max(4096);
    let data = format!(
        "size={size},nr_inodes={},mode=0700,uid={TRAINER_UID},gid={TRAINER_UID}",
        MAX_ENTRIES + 16
    );
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data.as_str()),
    )
    .map_err(|source| EnclaveError::Mount {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(OutMount(dir.to_path_buf()))
}

/// Removes `work_root`, the directory [`RunPaths::work_root`] names, after runs that died with
/// an earlier process (start-up clean-up; no run of this process may be under way). A run
/// that did not end cleanly leaves its `/out` tmpfs mounted in its job directory, which would
/// make the removal fail (EBUSY): each one is detached first (`MNT_DETACH`), discarding
/// whatever the trainer wrote.
///
/// # Errors
/// The directory cannot be read or removed.
pub fn clear_work_root(work_root: &Path) -> std::io::Result<()> {
    let entries = match fs::read_dir(work_root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries.flatten() {
        let out = e.path().join("out");
        let is_job = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("rapha-job-"));
        if is_job && out.is_dir() {
            match umount2(&out, MntFlags::MNT_DETACH) {
                // Not a mount point (the run ended cleanly enough to unmount it).
                Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
                Err(e) => return Err(std::io::Error::from(e)),
            }
        }
    }
    fs::remove_dir_all(work_root)
}
