//! Sandbox limits a bundle chooses (issue 18, items 3 and 9, the enclave's part): a limit that
//! the OCI runtime would read as "unlimited", or one whose arithmetic overflows, is refused
//! with a typed error before anything runs; the trainer's cgroup never swaps; the runtime's
//! own memory (decoded pixels, the pixel cache) is locked against swap.

use std::path::Path;
use std::time::Duration;

use rapha_core::ResourceLimits;
use rapha_enclave::sandbox::{LimitError, MAX_WALL_SECONDS};
use rapha_enclave::{EnclaveError, EnclaveSession};

use crate::support::*;

fn spec_with(limits: ResourceLimits) -> rapha_enclave::JobSpec {
    rapha_enclave::JobSpec {
        limits,
        wall_override: None,
        release: rapha_core::release::ReleaseTransform::DECLARED,
        ..job_spec(Duration::from_secs(5))
    }
}

fn ok_limits() -> ResourceLimits {
    ResourceLimits {
        memory_mb: 64,
        cpus: 1,
        pids: 32,
        wall_seconds: 30,
        tmp_mb: rapha_core::DEFAULT_TMP_MB,
        gpus: 0,
    }
}

#[test]
fn a_memory_limit_of_zero_is_refused_not_unlimited() {
    let r = EnclaveSession::new(spec_with(ResourceLimits {
        memory_mb: 0,
        ..ok_limits()
    }));
    let Err(EnclaveError::Limit(e)) = r else {
        panic!("memory_mb = 0 was accepted (runc reads it as no limit)");
    };
    assert_eq!(
        e,
        LimitError::Zero {
            what: "memory (MiB)",
            min: 1
        }
    );
    assert_eq!(
        e.to_string(),
        "the trainer's memory (MiB) limit is 0, which the OCI runtime reads as no limit at all; \
         at least 1 is required"
    );
    let Err(EnclaveError::Limit(e)) = EnclaveSession::new(spec_with(ResourceLimits {
        memory_mb: u64::MAX,
        ..ok_limits()
    })) else {
        panic!("a memory limit past i64 bytes was accepted");
    };
    assert_eq!(
        e,
        LimitError::TooLarge {
            what: "memory (MiB)",
            value: u64::MAX,
            max: rapha_enclave::sandbox::MAX_MEMORY_MB
        }
    );
}

#[test]
fn a_pids_limit_of_zero_is_refused_not_unlimited() {
    let r = EnclaveSession::new(spec_with(ResourceLimits {
        pids: 0,
        ..ok_limits()
    }));
    let Err(EnclaveError::Limit(e)) = r else {
        panic!("pids = 0 was accepted (runc reads it as no limit)");
    };
    assert_eq!(
        e,
        LimitError::Zero {
            what: "pids",
            min: 1
        }
    );
}

/// A wall time near 2^64 seconds: refused up front, never a panic in the deadline arithmetic
/// (which would leave the node's lock held for every later job).
#[test]
fn a_wall_time_near_2_64_seconds_is_refused_not_a_panic() {
    for wall_seconds in [u64::MAX, u64::MAX - 5, MAX_WALL_SECONDS + 1] {
        let r = EnclaveSession::new(spec_with(ResourceLimits {
            wall_seconds,
            ..ok_limits()
        }));
        let Err(EnclaveError::Limit(e)) = r else {
            panic!("a wall time of {wall_seconds} s was accepted");
        };
        assert_eq!(
            e,
            LimitError::TooLarge {
                what: "wall time (s)",
                value: wall_seconds,
                max: MAX_WALL_SECONDS
            }
        );
    }
    assert!(EnclaveSession::new(spec_with(ResourceLimits {
        wall_seconds: MAX_WALL_SECONDS,
        ..ok_limits()
    }))
    .is_ok());
}

/// A `/tmp` of 0 MiB (the size the bundle declares), which tmpfs reads as unlimited, is
/// refused like the other limits: by the session, and by the sandbox on its own (a caller that
/// skipped the session's check), with no container started.
#[test]
fn the_sandbox_refuses_an_unlimited_tmp_before_starting_anything() {
    let zero_tmp = ResourceLimits {
        tmp_mb: 0,
        ..ok_limits()
    };
    let Err(EnclaveError::Limit(e)) = EnclaveSession::new(spec_with(zero_tmp.clone())) else {
        panic!("tmp_mb = 0 was accepted (tmpfs reads it as no limit)");
    };
    assert_eq!(
        e.to_string(),
        "the trainer's /tmp size (MiB) limit is 0, which the OCI runtime reads as no limit at \
         all; at least 1 is required"
    );
    let Some(bin) = require_sandbox() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    std::fs::copy(bin, rootfs.join("trainer")).unwrap();
    let (sock, out, bundle) = (
        dir.path().join("sock"),
        dir.path().join("out"),
        dir.path().join("bundle"),
    );
    for d in [&sock, &out, &bundle] {
        std::fs::create_dir(d).unwrap();
    }
    let cfg = sandbox_config(dir.path());
    let job = rapha_core::JobId::random();
    let id = format!("rapha-{job}");
    let err = rapha_enclave::sandbox::run(
        &cfg,
        &rapha_enclave::sandbox::LaunchSpec {
            container_id: &id,
            rootfs: &rootfs,
            entrypoint: &["/trainer".into(), "honest".into()],
            limits: &zero_tmp,
            socket_dir: &sock,
            out_dir: &out,
            bundle_dir: &bundle,
            inputs: None,
            wall: Duration::from_secs(5),
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            EnclaveError::Limit(LimitError::Zero {
                what: "/tmp size (MiB)",
                min: 1
            })
        ),
        "{err}"
    );
    assert!(
        !bundle.join("config.json").exists(),
        "a runtime spec was written"
    );
    assert_host_clean(&cfg, job, dir.path());
}

/// The runtime's memory (decoded pixels, the pixel cache of later epochs) is locked: it can
/// never be written to swap.
#[test]
fn the_runtimes_memory_is_locked_against_swap() {
    let _session = EnclaveSession::new(job_spec(Duration::from_secs(5))).unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let locked_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(locked_kb > 0, "VmLck is 0: nothing is locked\n{status}");
}

/// While the trainer runs, its cgroup allows no swap at all (cgroup v2 `memory.swap.max` 0;
/// v1: the memory+swap limit equals the memory limit).
#[test]
fn the_running_trainers_cgroup_has_zero_swap() {
    let Some(bin) = require_sandbox() else { return };
    let spec = job_spec(Duration::from_millis(1500));
    let id = format!("rapha-{}", spec.job_id);
    let v2 = Path::new("/sys/fs/cgroup/rapha").join(&id);
    let v1 = Path::new("/sys/fs/cgroup/memory/rapha").join(&id);
    let seen = std::sync::Mutex::new(None::<String>);
    let done = std::sync::atomic::AtomicBool::new(false);
    let cohort = cohort(4, 12);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let read = |p: &Path| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
                let found = if let Some(swap) = read(&v2.join("memory.swap.max")) {
                    Some(format!("v2 swap.max={swap}"))
                } else if let (Some(limit), Some(memsw)) = (
                    read(&v1.join("memory.limit_in_bytes")),
                    read(&v1.join("memory.memsw.limit_in_bytes")),
                ) {
                    Some(format!("v1 limit={limit} memsw={memsw}"))
                } else {
                    None
                };
                if found.is_some() {
                    *seen.lock().unwrap() = found;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let _run = run_trainer(bin, &["never-exit"], &cohort, spec);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let seen = seen
        .into_inner()
        .unwrap()
        .expect("the trainer's memory cgroup was never seen");
    let limit = (64u64 << 20).to_string();
    assert!(
        seen == "v2 swap.max=0" || seen == format!("v1 limit={limit} memsw={limit}"),
        "the trainer's cgroup allows swap: {seen}"
    );
}

#[test]
fn memory_is_lockable_only_with_cap_ipc_lock_or_no_memlock_limit() {
    use rapha_enclave::harden::can_lock_all;
    let unlimited = nix::sys::resource::RLIM_INFINITY;
    assert!(can_lock_all(unlimited, None));
    assert!(can_lock_all(8 << 20, Some("\t000001ffffffffff")));
    assert!(can_lock_all(8 << 20, Some("0000000000004000")));
    assert!(!can_lock_all(8 << 20, Some("00000000a80025fb")));
    assert!(!can_lock_all(8 << 20, Some("0000000000000000")));
    assert!(!can_lock_all(8 << 20, None));
}

/// Issue 16, item 6: every resource a bundle declares reaches the runc spec as the limit the
/// kernel enforces (memory with no swap, CFS quota, pids, the `/tmp` tmpfs size; the wall time
/// is the runtime's own deadline, tested above; GPUs in `tests/cdi.rs`).
#[test]
fn every_declared_resource_becomes_its_cgroup_or_mount_limit() {
    let limits = ResourceLimits {
        memory_mb: 300,
        cpus: 3,
        pids: 40,
        wall_seconds: 30,
        tmp_mb: 17,
        gpus: 0,
    };
    let p = Path::new("/nonexistent");
    let spec = rapha_enclave::sandbox::oci_spec(
        &rapha_enclave::SandboxConfig::default(),
        &rapha_enclave::sandbox::LaunchSpec {
            container_id: "rapha-limits",
            rootfs: p,
            entrypoint: &["/trainer".into()],
            limits: &limits,
            socket_dir: p,
            out_dir: p,
            bundle_dir: p,
            inputs: None,
            wall: Duration::from_secs(30),
        },
    );
    let r = &spec["linux"]["resources"];
    assert_eq!(r["memory"]["limit"], 300u64 << 20);
    assert_eq!(r["memory"]["swap"], 300u64 << 20);
    assert_eq!(r["pids"]["limit"], 40);
    assert_eq!(r["cpu"]["quota"], 300_000);
    assert_eq!(r["cpu"]["period"], 100_000);
    assert_eq!(
        r["devices"],
        serde_json::json!([{"allow": false, "access": "rwm"}])
    );
    let tmp = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/tmp")
        .unwrap();
    assert!(
        tmp["options"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("size=17m")),
        "{tmp}"
    );
}
