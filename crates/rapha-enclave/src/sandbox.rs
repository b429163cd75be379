//! Isolated trainer launch through an OCI runtime (`runc` in development and tests).
//!
//! The runtime command is configuration, so crun, runsc or a Gramine shim can replace it;
//! this module writes the OCI runtime spec (`config.json`) itself, so what isolates the
//! trainer is reviewed here and not inherited from a default:
//!
//! - namespaces: pid, network (only a loopback interface, left down), ipc, uts, mount, cgroup;
//! - read-only rootfs, uid/gid [`TRAINER_UID`], no capabilities, `noNewPrivileges`;
//! - seccomp: default allow with a deny list ([`seccomp_profile`]) returning `EPERM` for
//!   kernel attack surface (keyrings, io_uring, bpf, perf, ptrace, mounts, namespaces, module
//!   and kexec loading...), `EAFNOSUPPORT` for every socket family but `AF_UNIX`, and
//!   `ENOSYS` for `clone3` so C libraries fall back to `clone`, whose namespace flags are
//!   filtered;
//! - mounts: `/proc` (with masked and read-only paths), a minimal `/dev` tmpfs, the data
//!   socket's directory read-only at `/rapha`, the host-side size-limited tmpfs at `/out`,
//!   a `/tmp` of the size the bundle declares (`tmp_mb`, bounded by the node at admission);
//!   nothing else of the host, so the HMAC key, node keys and PACS paths do not exist inside;
//! - rlimits `RLIMIT_CORE = 0` and `RLIMIT_NOFILE`; cgroup limits on memory (no swap:
//!   the memory+swap limit equals the memory limit, so cgroup v2 `memory.swap.max` is 0),
//!   pids and CPU; a wall-time limit enforced by killing the container. Limits the OCI
//!   runtime would read as "none" (0 memory, 0 pids, a 0 MiB `/tmp`) or that do not fit its
//!   arithmetic are refused ([`check_limits`]), never passed on;
//! - stdout/stderr captured up to a cap (the guard scans them);
//! - for a job that declared a GPU only, the node's GPUs from the host's CDI specs
//!   ([`crate::cdi`]): device nodes with a cgroup rule for each, read-only bind mounts of the
//!   driver's libraries, its environment and hooks.
//!
//! Teardown (`kill`, `delete --force`) runs on every path, including errors and timeouts.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rapha_core::ResourceLimits;
use serde::Serialize;
use serde_json::{json, Value};

use crate::cdi::GpuDevices;
use crate::error::{io, EnclaveError, Result};
use crate::protocol::{
    OUT_DIR_IN_CONTAINER, OUT_ENV, PROTOCOL_ENV, PROTOCOL_VERSION, SOCKET_ENV,
    SOCKET_PATH_IN_CONTAINER,
};

/// uid and gid the trainer runs as (no account exists for it in the rootfs, by design).
pub const TRAINER_UID: u32 = 65532;
/// Default cap on each captured log stream.
pub const DEFAULT_LOG_CAP: usize = 64 << 10;

/// Largest memory limit in MiB: its bytes must fit the OCI runtime's signed 64-bit limit.
pub const MAX_MEMORY_MB: u64 = (i64::MAX as u64) >> 20;
/// Longest wall time the runtime enforces (a year): past it a deadline is no deadline, and
/// near 2^64 seconds it cannot even be computed. The node's configuration bounds it far
/// lower; this is the runtime's own floor of sanity.
pub const MAX_WALL_SECONDS: u64 = 366 * 24 * 3600;

/// A resource limit the runtime refuses to pass to the OCI runtime.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    #[error(
        "the trainer's {what} limit is 0, which the OCI runtime reads as no limit at all; \
         at least {min} is required"
    )]
    Zero { what: &'static str, min: u64 },
    #[error(
        "the trainer's {what} limit of {value} is over the most this runtime enforces ({max})"
    )]
    TooLarge {
        what: &'static str,
        value: u64,
        max: u64,
    },
}

/// Checks a job's resource limits: none may be 0 (read as "unlimited" by runc for memory and
/// pids) and none may overflow the arithmetic that turns it into a cgroup value or a deadline.
///
/// # Errors
/// The first limit out of range.
pub fn check_limits(limits: &ResourceLimits) -> Result<(), LimitError> {
    let at_least_one = |what, v: u64| {
        if v == 0 {
            Err(LimitError::Zero { what, min: 1 })
        } else {
            Ok(())
        }
    };
    at_least_one("memory (MiB)", limits.memory_mb)?;
    at_least_one("pids", u64::from(limits.pids))?;
    at_least_one("CPU", u64::from(limits.cpus))?;
    at_least_one("wall time (s)", limits.wall_seconds)?;
    // tmpfs reads size=0 as "no limit": the trainer could fill the node's memory.
    at_least_one("/tmp size (MiB)", limits.tmp_mb)?;
    if limits.memory_mb > MAX_MEMORY_MB {
        return Err(LimitError::TooLarge {
            what: "memory (MiB)",
            value: limits.memory_mb,
            max: MAX_MEMORY_MB,
        });
    }
    if limits.wall_seconds > MAX_WALL_SECONDS {
        return Err(LimitError::TooLarge {
            what: "wall time (s)",
            value: limits.wall_seconds,
            max: MAX_WALL_SECONDS,
        });
    }
    Ok(())
}

/// How the node runs trainers.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// The OCI runtime command (`runc`, `crun`, ...).
    pub runtime: PathBuf,
    /// State directory passed as `--root` (kept apart from any other runc user).
    pub runtime_root: PathBuf,
    /// Cap on each of stdout and stderr.
    pub log_cap: usize,
    /// `RLIMIT_NOFILE` for the trainer.
    pub nofile: u64,
    /// cgroup parent path for trainer containers.
    pub cgroup_parent: String,
    /// Wall time for the output guard, instead of the default of
    /// [`crate::guard::GuardBudget::for_outputs`].
    pub guard_wall: Option<Duration>,
    /// The GPUs a job that declares `resources.gpus > 0` gets (`[trainer] gpus`, resolved from
    /// the host's CDI specs); `None` on a node without GPUs, which refuses such a job.
    pub gpus: Option<Arc<GpuDevices>>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            runtime: PathBuf::from("runc"),
            runtime_root: PathBuf::from("/run/rapha-runc"),
            log_cap: DEFAULT_LOG_CAP,
            nofile: 256,
            cgroup_parent: "/rapha".into(),
            guard_wall: None,
            gpus: None,
        }
    }
}

/// Everything one launch needs.
#[derive(Debug)]
pub struct LaunchSpec<'a> {
    pub container_id: &'a str,
    pub rootfs: &'a Path,
    pub entrypoint: &'a [String],
    pub limits: &'a ResourceLimits,
    /// Host directory bound at `/rapha` (holds only `data.sock`).
    pub socket_dir: &'a Path,
    /// Host directory (a size-limited tmpfs) bound at `/out`.
    pub out_dir: &'a Path,
    /// Directory the OCI bundle (`config.json`) is written to.
    pub bundle_dir: &'a Path,
    /// Host directory bound read-only at `/in`, if any: the node's audit runner reads the model
    /// it scores there (a trainer gets none).
    pub inputs: Option<&'a Path>,
    /// Wall-time limit (overrides `limits.wall_seconds` when shorter; tests use it).
    pub wall: Duration,
}

/// How the trainer's run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Exit {
    /// Exited with this status.
    Exited { code: i32 },
    /// Killed by this signal (9 is also how the memory limit ends a trainer).
    Signaled { signal: i32 },
    /// Ran past the wall-time limit and was killed.
    TimedOut { seconds: u64 },
}

impl Exit {
    /// True for a clean exit with status 0.
    pub fn success(&self) -> bool {
        matches!(self, Exit::Exited { code: 0 })
    }
}

/// A captured output stream.
#[derive(Clone, Debug, Default)]
pub struct Captured {
    pub bytes: Vec<u8>,
    pub overflowed: bool,
}

/// Result of one run.
#[derive(Debug)]
pub struct RunResult {
    pub exit: Exit,
    pub stdout: Captured,
    pub stderr: Captured,
    pub elapsed: Duration,
}

/// The seccomp profile (OCI `linux.seccomp`).
pub fn seccomp_profile() -> Value {
    const EPERM: u32 = 1;
    const ENOSYS: u32 = 38;
    const EAFNOSUPPORT: u32 = 97;
    const AF_UNIX: u64 = 1;
    let denied = [
        // kernel keyrings
        "keyctl",
        "add_key",
        "request_key",
        // io_uring (bypasses seccomp for the operations it performs)
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        // eBPF, perf counters
        "bpf",
        "perf_event_open",
        // other processes' memory
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "kcmp",
        "pidfd_getfd",
        // filesystems and namespaces
        "mount",
        "umount",
        "umount2",
        "pivot_root",
        "chroot",
        "unshare",
        "setns",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "move_mount",
        "open_tree",
        "mount_setattr",
        "open_by_handle_at",
        "name_to_handle_at",
        "quotactl",
        "quotactl_fd",
        // kernel code and machine state
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "reboot",
        "swapon",
        "swapoff",
        "acct",
        "syslog",
        "vhangup",
        "iopl",
        "ioperm",
        "settimeofday",
        "clock_settime",
        "clock_adjtime",
        "adjtimex",
        "lookup_dcookie",
        "sethostname",
        "setdomainname",
        // fault handling used in kernel exploits
        "userfaultfd",
        // NUMA / memory policy of other processes
        "move_pages",
        "migrate_pages",
        "mbind",
        "set_mempolicy",
        // personality changes that can weaken ASLR
        "personality",
    ];
    let mut syscalls = vec![
        json!({"names": denied.as_slice(), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}),
        json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}),
        json!({"names": ["socket", "socketpair"], "action": "SCMP_ACT_ERRNO", "errnoRet": EAFNOSUPPORT,
               "args": [{"index": 0, "value": AF_UNIX, "op": "SCMP_CMP_NE"}]}),
    ];
    // clone with any namespace flag: one rule per flag (rules on args are ANDed).
    for flag in [
        0x0002_0000u64,
        0x0200_0000,
        0x0400_0000,
        0x0800_0000,
        0x1000_0000,
        0x2000_0000,
        0x4000_0000,
        0x80,
    ] {
        syscalls.push(
            json!({"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
            "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]}),
        );
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": syscalls,
    })
}

/// The OCI runtime spec for one trainer run. A job that declared a GPU gets the node's GPUs
/// ([`SandboxConfig::gpus`]); any other job none of them.
pub fn oci_spec(cfg: &SandboxConfig, spec: &LaunchSpec<'_>) -> Value {
    let mut v = base_spec(cfg, spec);
    if spec.limits.gpus > 0 {
        if let Some(gpus) = &cfg.gpus {
            gpus.apply(&mut v, spec.limits.gpus);
        }
    }
    v
}

fn base_spec(cfg: &SandboxConfig, spec: &LaunchSpec<'_>) -> Value {
    let mut v = trainer_spec(cfg, spec);
    if let (Some(inputs), Some(mounts)) = (spec.inputs, v["mounts"].as_array_mut()) {
        mounts.push(
            json!({"destination": "/in", "type": "bind", "source": inputs,
            "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}),
        );
    }
    v
}

fn trainer_spec(cfg: &SandboxConfig, spec: &LaunchSpec<'_>) -> Value {
    // Within i64 for every limit [`check_limits`] accepts; saturating all the same.
    let mem = spec.limits.memory_mb.saturating_mul(1 << 20);
    let env = [
        "PATH=/usr/local/bin:/usr/bin:/bin".to_string(),
        "HOME=/tmp".into(),
        format!("{SOCKET_ENV}={SOCKET_PATH_IN_CONTAINER}"),
        format!("{OUT_ENV}={OUT_DIR_IN_CONTAINER}"),
        format!("{PROTOCOL_ENV}={PROTOCOL_VERSION}"),
    ];
    let no_caps: [&str; 0] = [];
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": TRAINER_UID, "gid": TRAINER_UID, "additionalGids": []},
            "args": spec.entrypoint,
            "env": env,
            "cwd": "/out",
            "capabilities": {"bounding": no_caps, "effective": no_caps, "inheritable": no_caps,
                             "permitted": no_caps, "ambient": no_caps},
            "rlimits": [
                {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
                {"type": "RLIMIT_NOFILE", "hard": cfg.nofile, "soft": cfg.nofile},
            ],
            "noNewPrivileges": true,
            "oomScoreAdj": 1000,
        },
        "root": {"path": spec.rootfs, "readonly": true},
        "hostname": "trainer",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "noexec", "strictatime", "mode=755", "size=64k"]},
            {"destination": "/rapha", "type": "bind", "source": spec.socket_dir,
             "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]},
            {"destination": "/out", "type": "bind", "source": spec.out_dir,
             "options": ["rbind", "rw", "nosuid", "nodev", "noexec"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "noexec", "mode=1777", format!("size={}m", spec.limits.tmp_mb)]},
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                           {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}],
            "cgroupsPath": format!("{}/{}", cfg.cgroup_parent, spec.container_id),
            "resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": {"limit": mem, "swap": mem},
                "pids": {"limit": spec.limits.pids},
                "cpu": {"quota": i64::from(spec.limits.cpus.max(1)).saturating_mul(100_000), "period": 100_000},
            },
            "seccomp": seccomp_profile(),
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/proc/kallsyms", "/proc/modules", "/proc/config.gz", "/proc/sysrq-trigger",
                "/proc/self/mountinfo", "/proc/mounts", "/proc/cmdline", "/proc/interrupts",
                "/proc/vmallocinfo", "/proc/slabinfo", "/proc/pagetypeinfo", "/proc/zoneinfo",
                "/sys/firmware"
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"],
        },
    })
}

fn capture(mut r: impl Read + Send + 'static, cap: usize) -> thread::JoinHandle<Captured> {
    thread::spawn(move || {
        let mut out = Captured::default();
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = cap.saturating_sub(out.bytes.len());
                    out.bytes.extend_from_slice(&buf[..n.min(room)]);
                    if n > room {
                        // Keep draining so the trainer never blocks on a full pipe.
                        out.overflowed = true;
                    }
                }
            }
        }
        out
    })
}

/// Runs the trainer to completion (or the wall-time limit) and tears the container down.
///
/// # Errors
/// The OCI runtime could not be started or failed before the trainer ran.
pub fn run(cfg: &SandboxConfig, spec: &LaunchSpec<'_>) -> Result<RunResult> {
    if spec.entrypoint.is_empty() {
        return Err(EnclaveError::NoEntrypoint);
    }
    check_limits(spec.limits)?;
    if spec.limits.gpus > 0 && cfg.gpus.is_none() {
        return Err(EnclaveError::NoGpu {
            requested: spec.limits.gpus,
        });
    }
    let wall = spec
        .wall
        .min(Duration::from_secs(spec.limits.wall_seconds.max(1)));
    // The deadline is computed before anything starts: an unrepresentable one refuses the
    // run instead of panicking with a container already running.
    let Some(deadline) = Instant::now().checked_add(wall) else {
        return Err(LimitError::TooLarge {
            what: "wall time (s)",
            value: wall.as_secs(),
            max: MAX_WALL_SECONDS,
        }
        .into());
    };
    if !spec.rootfs.is_dir() {
        return Err(EnclaveError::NoRootfs(spec.rootfs.to_path_buf()));
    }
    std::fs::create_dir_all(&cfg.runtime_root)
        .map_err(io("create the OCI runtime state dir", &cfg.runtime_root))?;
    let config = serde_json::to_vec_pretty(&oci_spec(cfg, spec))
        .map_err(|_| EnclaveError::Serialise("the OCI runtime spec"))?;
    let config_path = spec.bundle_dir.join("config.json");
    std::fs::write(&config_path, config).map_err(io("write the OCI runtime spec", &config_path))?;
    let log_path = spec.bundle_dir.join("runtime.log");

    let guard = Teardown {
        cfg,
        id: spec.container_id,
    };
    let started = Instant::now();
    let mut child = Command::new(&cfg.runtime)
        .arg("--root")
        .arg(&cfg.runtime_root)
        .arg("--log")
        .arg(&log_path)
        .args(["--log-format", "json", "run", "--bundle"])
        .arg(spec.bundle_dir)
        .arg(spec.container_id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| EnclaveError::RuntimeStart {
            command: cfg.runtime.display().to_string(),
            source,
        })?;
    let out = child.stdout.take().map(|s| capture(s, cfg.log_cap));
    let err = child.stderr.take().map(|s| capture(s, cfg.log_cap));

    // The deadline counts from before the runtime was started (a few ms earlier).
    let status = wait_until(&mut child, deadline);
    let exit = match status {
        Some(st) => classify(st),
        None => {
            guard.kill();
            let _ = child.wait();
            Exit::TimedOut {
                seconds: wall.as_secs(),
            }
        }
    };
    let elapsed = started.elapsed();
    drop(guard); // delete --force: no container, process or cgroup survives this point
    let stdout = out.and_then(|h| h.join().ok()).unwrap_or_default();
    let stderr = err.and_then(|h| h.join().ok()).unwrap_or_default();

    // runc exits 1 and logs `runc run failed: …` when it could not create or start the
    // container: the node's failure (refunded), not the trainer's exit status.
    if matches!(exit, Exit::Exited { code: 1 }) {
        if let Some(detail) = runtime_failure(&log_path) {
            return Err(EnclaveError::Runtime {
                command: cfg.runtime.display().to_string(),
                action: "run the trainer container",
                detail,
            });
        }
    }
    Ok(RunResult {
        exit,
        stdout,
        stderr,
        elapsed,
    })
}

/// The runtime's own failure in its JSON log (`--log-format json`): an entry at level `error`
/// whose message is runc's `runc run failed: …`, the one it logs when `run` itself fails. Other
/// errors it logs (such as a failed clean-up after the trainer exited) are not the run's
/// failure: a trainer must not be able to turn its own exit into a refunded one.
fn runtime_failure(log_path: &Path) -> Option<String> {
    let mut log = String::new();
    std::fs::File::open(log_path)
        .ok()?
        .take(RUNTIME_LOG_CAP)
        .read_to_string(&mut log)
        .ok()?;
    log.lines().find_map(|line| {
        let entry: Value = serde_json::from_str(line).ok()?;
        let msg = entry.get("msg")?.as_str()?;
        (entry.get("level")?.as_str()? == "error" && msg.starts_with("runc run failed"))
            .then(|| msg.chars().take(500).collect())
    })
}

/// Bytes of the runtime's log read to find its failure.
const RUNTIME_LOG_CAP: u64 = 1 << 20;

fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn classify(st: ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = st.signal() {
        return Exit::Signaled { signal: sig };
    }
    match st.code() {
        // runc reports a container killed by signal N as 128 + N.
        Some(c) if c > 128 && c < 160 => Exit::Signaled { signal: c - 128 },
        Some(c) => Exit::Exited { code: c },
        None => Exit::Signaled { signal: 0 },
    }
}

/// Kills and deletes the container when dropped.
struct Teardown<'a> {
    cfg: &'a SandboxConfig,
    id: &'a str,
}

impl Teardown<'_> {
    fn runtime(&self, args: &[&str]) -> bool {
        Command::new(&self.cfg.runtime)
            .arg("--root")
            .arg(&self.cfg.runtime_root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn kill(&self) {
        let _ = self.runtime(&["kill", "--all", self.id, "KILL"]);
    }
}

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        // `delete --force` kills whatever is left and removes the cgroup and state.
        for _ in 0..50 {
            if self.runtime(&["delete", "--force", self.id]) || !self.runtime(&["state", self.id]) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        tracing::error!(
            container = self.id,
            "trainer container could not be deleted"
        );
    }
}
