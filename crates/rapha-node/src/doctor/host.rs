//! The host: the data directories are writable and have free space (a warning under
//! [`LOW_DISK_BYTES`] or [`LOW_DISK_PERCENT`]), no swap device can take what the node's
//! cgroup holds in memory (**I3**), and the sandboxed decoder works where it is installed.

use crate::config::Config;

use super::{fail, Outcome};

pub(super) fn check_paths(config: &Config) -> Outcome {
    for (key, dir) in [
        ("paths.data_dir", &config.paths.data_dir),
        ("paths.state_dir", &config.paths.state_dir),
    ] {
        if !dir.is_dir() {
            return fail(
                format!("{key}: {} is not a directory", dir.display()),
                format!("mkdir -p {}", dir.display()),
            );
        }
        let probe = dir.join(".rapha-doctor-probe");
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .or_else(|e| {
                fail(
                    format!("{key}: {} is not writable: {e}", dir.display()),
                    "give the node's user write access",
                )
            })?;
    }
    let mut warnings = Vec::new();
    for (key, dir) in [
        ("paths.data_dir", &config.paths.data_dir),
        ("paths.state_dir", &config.paths.state_dir),
    ] {
        match rustix::fs::statvfs(dir.as_path()) {
            Ok(st) => {
                let avail = st.f_bavail.saturating_mul(st.f_frsize);
                let total = st.f_blocks.saturating_mul(st.f_frsize);
                warnings.extend(low_disk(key, avail, total));
            }
            Err(e) => warnings.push(format!(
                "WARNING: {key}: free space of {} unknown: {e}",
                dir.display()
            )),
        }
    }
    if warnings.is_empty() {
        Ok("data and state directories writable, each with free space".into())
    } else {
        Ok(format!(
            "data and state directories writable; {}",
            warnings.join("; ")
        ))
    }
}

/// Free space under which `doctor` warns: a job's work directory holds its cohort records,
/// its trainer's outputs and their re-serialised copies, and the state directory the job
/// store, receipts and audit trail, so a node low on disk fails jobs mid-run.
pub const LOW_DISK_BYTES: u64 = 10 << 30;
/// Free share of the filesystem under which `doctor` warns, in percent.
pub const LOW_DISK_PERCENT: u64 = 10;

/// A warning when `avail` bytes free of `total` is below [`LOW_DISK_BYTES`] or
/// [`LOW_DISK_PERCENT`] of the filesystem.
pub fn low_disk(key: &str, avail: u64, total: u64) -> Option<String> {
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    let low_share = total > 0 && avail.saturating_mul(100) < total.saturating_mul(LOW_DISK_PERCENT);
    (avail < LOW_DISK_BYTES || low_share).then(|| {
        format!(
            "WARNING: {key} has {:.1} GiB free of {:.1} GiB (under {} GiB or {LOW_DISK_PERCENT}%): \
             free space or move it before jobs fail for want of disk",
            gib(avail),
            gib(total),
            LOW_DISK_BYTES >> 30
        )
    })
}

/// The sandboxed decode process for JPEG-LS and 12-bit JPEG (`rapha-decode`, next to the node):
/// started once on an empty stream, which it must enter its sandbox for and refuse. Without
/// one the node runs and excludes those instances as undecodable, which this check says as a
/// warning; one that is installed but cannot run or enter its sandbox fails.
pub(super) fn check_decoder() -> Outcome {
    match rapha_dicom::pixels::sandboxed::probe() {
        Ok(Some(path)) => Ok(format!(
            "{}: JPEG-LS and 12-bit JPEG decoded in a sandboxed process",
            path.display()
        )),
        Ok(None) => Ok(
            "WARNING: rapha-decode is not installed next to rapha-node: JPEG-LS \
             and 12-bit JPEG instances will be excluded as undecodable-transfer-syntax"
                .into(),
        ),
        Err(e) => fail(
            format!("the sandboxed decoder does not work: {e}"),
            "install rapha-decode from the same build as rapha-node, and give the node \
             CAP_IPC_LOCK or LimitMEMLOCK=infinity (the worker locks its memory too)",
        ),
    }
}

/// The node's own memory cgroup, as far as swap goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupSwap {
    /// The cgroup cannot swap (v2 `memory.swap.max` 0; v1 memory+swap limit equal to the
    /// memory limit).
    Disallowed(String),
    /// The cgroup may swap (or no limit could be read: treated as allowed).
    Allowed(String),
}

/// The swap allowance of the node's memory cgroup, from `/proc/self/cgroup` and the files
/// `read` returns (a path under `/sys/fs/cgroup`, e.g. `/sys/fs/cgroup/x/memory.swap.max`).
pub fn node_cgroup_swap(
    proc_self_cgroup: &str,
    read: impl Fn(&str) -> Option<String>,
) -> CgroupSwap {
    let read = |p: &str| read(p).map(|v| v.trim().to_owned());
    // cgroup v1 (or hybrid): the memory controller's own line decides.
    let v1 = proc_self_cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls.split(',').any(|c| c == "memory").then_some(path)
    });
    if let Some(path) = v1 {
        let dir = format!("/sys/fs/cgroup/memory{}", path.trim_end_matches('/'));
        let limit = read(&format!("{dir}/memory.limit_in_bytes"));
        let memsw = read(&format!("{dir}/memory.memsw.limit_in_bytes"));
        return match (limit, memsw) {
            (Some(l), Some(m)) if l == m => CgroupSwap::Disallowed(format!(
                "cgroup v1 memory:{path}: memory+swap limit equals the memory limit ({l} bytes)"
            )),
            (l, m) => CgroupSwap::Allowed(format!(
                "cgroup v1 memory:{path}: memory limit {}, memory+swap limit {}",
                l.as_deref().unwrap_or("unreadable"),
                m.as_deref().unwrap_or("unreadable (no swap accounting)")
            )),
        };
    }
    let v2 = proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/");
    let file = format!("/sys/fs/cgroup{}/memory.swap.max", v2.trim_end_matches('/'));
    match read(&file) {
        Some(v) if v == "0" => {
            CgroupSwap::Disallowed(format!("cgroup v2 {v2}: memory.swap.max is 0"))
        }
        Some(v) => CgroupSwap::Allowed(format!("cgroup v2 {v2}: memory.swap.max is {v}")),
        None => CgroupSwap::Allowed(format!("cgroup v2 {v2}: no memory.swap.max (no limit)")),
    }
}

/// Production refuses swap the node could use (**I3**): the runtime locks its own memory, but
/// the trainer's `/out` and what else the node's cgroup holds could still be written to a
/// swap device. PASS when `/proc/swaps` lists no active device, or the node's cgroup cannot
/// swap.
pub fn check_swap(proc_swaps: &str, cgroup: &CgroupSwap) -> Result<String, (String, String)> {
    let active: Vec<&str> = proc_swaps
        .lines()
        .skip(1) // the header: Filename Type Size Used Priority
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if active.is_empty() {
        return Ok("no active swap device".into());
    }
    match cgroup {
        CgroupSwap::Disallowed(why) => Ok(format!(
            "{} active swap device(s), but the node's cgroup cannot swap ({why})",
            active.len()
        )),
        CgroupSwap::Allowed(why) => fail(
            format!(
                "swap is active ({}) and the node's cgroup may use it ({why}): pixels and \
                 trainer outputs held in memory could be written to disk",
                active.join(", ")
            ),
            "turn swap off (swapoff -a, and remove it from /etc/fstab), or run the node in a \
             cgroup without swap (systemd: MemorySwapMax=0)",
        ),
    }
}

pub(super) fn check_host_swap() -> Outcome {
    let swaps = std::fs::read_to_string("/proc/swaps").or_else(|e| {
        fail(
            format!("/proc/swaps is unreadable: {e}"),
            "run the node on Linux with /proc mounted",
        )
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    check_swap(
        &swaps,
        &node_cgroup_swap(&own, |p| std::fs::read_to_string(p).ok()),
    )
}

#[cfg(test)]
mod swap_tests {
    use super::{check_swap, low_disk, node_cgroup_swap, CgroupSwap};

    const ACTIVE: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
        /dev/vda3                               partition\t8388604\t\t0\t\t-2\n\
        /swapfile                               file\t\t2097148\t\t0\t\t-3\n";
    const NONE: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";

    #[test]
    fn low_disk_warns_under_ten_gib_or_ten_percent() {
        const GIB: u64 = 1 << 30;
        assert_eq!(low_disk("paths.data_dir", 200 * GIB, 1000 * GIB), None);
        let few = low_disk("paths.data_dir", 9 * GIB, 40 * GIB).unwrap();
        assert!(
            few.starts_with("WARNING: paths.data_dir has 9.0 GiB free of 40.0 GiB"),
            "{few}"
        );
        // Plenty of bytes, but under a tenth of a large filesystem.
        assert!(low_disk("paths.state_dir", 90 * GIB, 1000 * GIB).is_some());
        assert_eq!(low_disk("paths.state_dir", 100 * GIB, 1000 * GIB), None);
        // Nothing known of the total: the byte floor alone.
        assert!(low_disk("paths.state_dir", GIB, 0).is_some());
    }

    fn files(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(p, v)| ((*p).to_owned(), (*v).to_owned()))
            .collect();
        move |p: &str| owned.iter().find(|(k, _)| k == p).map(|(_, v)| v.clone())
    }

    #[test]
    fn active_swap_with_a_cgroup_that_may_swap_is_refused() {
        // cgroup v2, the node's service without a swap limit.
        let cg = node_cgroup_swap(
            "0::/system.slice/rapha-node.service\n",
            files(&[(
                "/sys/fs/cgroup/system.slice/rapha-node.service/memory.swap.max",
                "max\n",
            )]),
        );
        let Err((detail, fix)) = check_swap(ACTIVE, &cg) else {
            panic!("active swap passed")
        };
        assert_eq!(
            detail,
            "swap is active (/dev/vda3, /swapfile) and the node's cgroup may use it (cgroup v2 \
             /system.slice/rapha-node.service: memory.swap.max is max): pixels and trainer \
             outputs held in memory could be written to disk"
        );
        assert!(
            fix.contains("swapoff -a") && fix.contains("MemorySwapMax=0"),
            "{fix}"
        );
        // The root cgroup has no memory.swap.max at all: no limit, refused too.
        let root = node_cgroup_swap("0::/\n", files(&[]));
        assert!(matches!(root, CgroupSwap::Allowed(_)));
        assert!(check_swap(ACTIVE, &root).is_err());
    }

    #[test]
    fn cgroup_v1_without_swap_accounting_counts_as_swap_allowed() {
        let proc_cgroup = "9:pids:/\n4:memory:/rapha-node\n0::/\n";
        let no_accounting = node_cgroup_swap(
            proc_cgroup,
            files(&[(
                "/sys/fs/cgroup/memory/rapha-node/memory.limit_in_bytes",
                "4294967296",
            )]),
        );
        assert!(check_swap(ACTIVE, &no_accounting).is_err());
        let swap_allowed = node_cgroup_swap(
            proc_cgroup,
            files(&[
                (
                    "/sys/fs/cgroup/memory/rapha-node/memory.limit_in_bytes",
                    "4294967296",
                ),
                (
                    "/sys/fs/cgroup/memory/rapha-node/memory.memsw.limit_in_bytes",
                    "9223372036854771712",
                ),
            ]),
        );
        assert!(check_swap(ACTIVE, &swap_allowed).is_err());
    }

    #[test]
    fn no_active_swap_or_a_cgroup_that_cannot_swap_passes() {
        let may_swap = CgroupSwap::Allowed("test".into());
        assert_eq!(
            check_swap(NONE, &may_swap),
            Ok("no active swap device".into())
        );
        assert_eq!(
            check_swap("", &may_swap),
            Ok("no active swap device".into())
        );
        let v2 = node_cgroup_swap(
            "0::/rapha\n",
            files(&[("/sys/fs/cgroup/rapha/memory.swap.max", "0\n")]),
        );
        assert_eq!(
            v2,
            CgroupSwap::Disallowed("cgroup v2 /rapha: memory.swap.max is 0".into())
        );
        assert!(check_swap(ACTIVE, &v2).is_ok());
        let v1 = node_cgroup_swap(
            "4:memory:/rapha-node\n",
            files(&[
                (
                    "/sys/fs/cgroup/memory/rapha-node/memory.limit_in_bytes",
                    "4294967296\n",
                ),
                (
                    "/sys/fs/cgroup/memory/rapha-node/memory.memsw.limit_in_bytes",
                    "4294967296\n",
                ),
            ]),
        );
        assert!(matches!(v1, CgroupSwap::Disallowed(_)));
        assert!(check_swap(ACTIVE, &v1).is_ok());
    }
}
