//! The malicious trainer suite: each attack from the threat model, run under runc, must fail
//! closed with its own reason, release nothing, and leave the host clean (checked for every
//! run by `run_trainer`: no container, process, cgroup or mount left). Next to them, the honest
//! trainer shows the same sandbox lets real work through.

use std::path::Path;
use std::time::Duration;

use rapha_enclave::guard::Rejection;
use rapha_enclave::session::SignedManifest;
use rapha_enclave::{Exit, IdentifierKind, ManifestOutcome};

use crate::support::*;

const SHORT: Duration = Duration::from_secs(10);

fn attack(args: &[&str]) -> Option<Run> {
    let bin = require_sandbox()?;
    let cohort = cohort(12, 2);
    let run = run_trainer(bin, args, &cohort, job_spec(SHORT));
    run.assert_nothing_released();
    Some(run)
}

/// The trainer saw its attempt fail (exit 3 = "blocked, giving up") and the job failed: the
/// manifest says `trainer-failed`, the status is in the hospital's details only.
fn assert_blocked_inside(run: &Run, line: &str) {
    let m = &run.result.signed.manifest;
    let d = &run.result.details;
    assert_eq!(m.outcome, ManifestOutcome::TrainerFailed);
    assert_eq!(
        d.trainer_exit,
        Some(Exit::Exited { code: 3 }),
        "stdout: {}",
        run.stdout()
    );
    assert_eq!(m.reasons, ["trainer-failed"]);
    assert_eq!(d.reasons, ["the trainer exited with status 3"]);
    assert!(
        run.stdout().contains(line),
        "expected {line:?} in stdout: {}",
        run.stdout()
    );
}

fn assert_rejected_for(run: &Run, pred: impl Fn(&Rejection) -> bool) {
    let m = &run.result.signed.manifest;
    assert_eq!(
        m.outcome,
        ManifestOutcome::Rejected,
        "{:?} {}",
        m.reasons,
        run.stdout()
    );
    assert!(!m.guard.accepted);
    assert!(
        run.rejections().iter().any(pred),
        "rejections: {:?}",
        run.rejections()
    );
    // The manifest has the rules' codes only; the details have every rejection in words.
    let mut rules: Vec<&str> = run.rejections().iter().map(Rejection::rule).collect();
    rules.sort_unstable();
    rules.dedup();
    assert_eq!(m.reasons, rules);
    assert_eq!(run.result.details.reasons.len(), run.rejections().len());
}

#[test]
fn honest_trainer_is_released_with_node_computed_metrics() {
    let Some(bin) = require_sandbox() else { return };
    let cohort = cohort(40, 1);
    let run = run_trainer(bin, &["honest"], &cohort, job_spec(Duration::from_secs(20)));
    let m = &run.result.signed.manifest;
    assert_eq!(
        m.outcome,
        ManifestOutcome::Completed,
        "{:?} {}",
        m.reasons,
        run.stdout()
    );
    assert!(m.guard.accepted);
    assert_eq!(m.confinement, "none-development");
    assert_eq!(m.records_fed, Some(40));
    assert_ne!(m.fed_root, Some(rapha_core::merkle::empty_root()));
    assert_eq!(m.fed_root, Some(m.cohort_root), "every record was fed");
    let metrics = m.metrics.as_ref().expect("metrics released");
    assert_eq!(metrics.patients, m.validation_patients);
    assert_eq!(metrics.n, m.validation_records);
    assert!(
        metrics.auc > 0.9,
        "the brightness signal is learnable: auc {}",
        metrics.auc
    );
    assert!(metrics.auc_ci95[0] <= metrics.auc && metrics.auc <= metrics.auc_ci95[1]);
    // Self-reported figures are kept apart (hospital-side details), not the job's metrics.
    let self_reported = run.result.details.self_reported.as_ref().unwrap();
    assert_eq!(self_reported.metrics["accuracy"], 0.99);
    let names: Vec<_> = run
        .result
        .released
        .iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["metrics.json", "model.safetensors"]);
    assert!(run.result.logs_releasable);
    assert!(SignedManifest::verify(
        &run.result.signed.bytes,
        &run.result.signed.signature,
        &run.public_key
    ));
    let mut tampered = run.result.signed.bytes.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    assert!(!SignedManifest::verify(
        &tampered,
        &run.result.signed.signature,
        &run.public_key
    ));
}

#[test]
fn connect_to_a_host_loopback_listener_fails() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let Some(run) = attack(&["connect-host", &port]) else {
        return;
    };
    assert_blocked_inside(&run, "socket(AF_INET) ret=-1 errno=97");
    assert!(
        listener.accept().is_err(),
        "the host listener saw a connection"
    );
}

#[test]
fn dns_resolution_fails() {
    let Some(run) = attack(&["dns"]) else { return };
    assert!(
        run.stdout()
            .contains("open(/etc/resolv.conf) ret=-1 errno=2"),
        "{}",
        run.stdout()
    );
    assert_blocked_inside(&run, "socket(AF_INET, DGRAM) ret=-1 errno=97");
}

#[test]
fn host_key_file_is_not_visible() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("phi-hmac.key");
    std::fs::write(&key, [0x42u8; 32]).unwrap();
    let Some(run) = attack(&["read", key.to_str().unwrap()]) else {
        return;
    };
    assert_blocked_inside(&run, "open ret=-1 errno=2");
}

#[test]
fn pacs_storage_path_is_not_visible() {
    let dir = tempfile::tempdir().unwrap();
    let pacs = dir.path().join("orthanc-storage/00/00");
    std::fs::create_dir_all(&pacs).unwrap();
    let file = pacs.join("instance");
    std::fs::write(&file, b"DICM").unwrap();
    let Some(run) = attack(&["read", file.to_str().unwrap()]) else {
        return;
    };
    assert_blocked_inside(&run, "open ret=-1 errno=2");
}

#[test]
fn proc_1_environ_is_the_trainers_own_not_the_hosts() {
    let host_pid = std::process::id().to_string();
    let Some(run) = attack(&["proc1", &host_pid]) else {
        return;
    };
    let out = run.stdout();
    // PID namespace: pid 1 is the trainer itself, with only the environment the node set.
    assert!(out.contains("pid1 cmdline: /trainer proc1"), "{out}");
    assert!(out.contains("RAPHA_PROTOCOL=1"), "{out}");
    assert!(!out.contains("CARGO"), "host environment leaked: {out}");
    assert_blocked_inside(&run, "open(/proc/<host pid>/environ) ret=-1 errno=2");
}

#[test]
fn dcm_named_outputs_are_rejected_in_any_case() {
    for name in ["x.dcm", "X.DCM", "scan.DiCoM"] {
        let Some(run) = attack(&["name", name]) else {
            return;
        };
        assert_rejected_for(
            &run,
            |r| matches!(r, Rejection::DicomName { name: n } if n == name),
        );
    }
}

#[test]
fn renamed_dicom_file_is_rejected() {
    let Some(run) = attack(&["renamed-dicom"]) else {
        return;
    };
    assert_rejected_for(
        &run,
        |r| matches!(r, Rejection::DicomContent { name, how } if name == "model.safetensors" && how.contains("DICM")),
    );
}

#[test]
fn preamble_less_dicom_dataset_is_rejected() {
    let Some(run) = attack(&["raw-dataset"]) else {
        return;
    };
    assert_rejected_for(
        &run,
        |r| matches!(r, Rejection::DicomContent { name, how } if name == "model.safetensors" && how.contains("without preamble")),
    );
}

#[test]
fn symlink_in_out_is_rejected() {
    let Some(run) = attack(&["symlink"]) else {
        return;
    };
    assert_rejected_for(
        &run,
        |r| matches!(r, Rejection::NotRegular { kind, .. } if kind == "symbolic link"),
    );
}

#[test]
fn hard_link_in_out_is_rejected() {
    let Some(run) = attack(&["hardlink"]) else {
        return;
    };
    assert_rejected_for(&run, |r| matches!(r, Rejection::HardLink { links: 2, .. }));
}

#[test]
fn fifo_in_out_is_rejected() {
    let Some(run) = attack(&["fifo"]) else { return };
    assert_rejected_for(
        &run,
        |r| matches!(r, Rejection::NotRegular { kind, .. } if kind == "FIFO"),
    );
}

#[test]
fn output_past_its_cap_is_rejected() {
    let Some(run) = attack(&["over-cap", "100000"]) else {
        return;
    };
    assert_rejected_for(
        &run,
        |r| matches!(r, Rejection::TooLarge { name, cap, .. } if name == "model.safetensors" && *cap == 64 << 10),
    );
}

#[test]
fn memory_fill_is_stopped_by_the_memory_limit() {
    let Some(run) = attack(&["memory"]) else {
        return;
    };
    let m = &run.result.signed.manifest;
    assert_eq!(m.outcome, ManifestOutcome::TrainerFailed);
    // The cgroup's OOM killer (SIGKILL), or malloc failing first under the limit.
    let exit = &run.result.details.trainer_exit;
    assert!(
        matches!(
            exit,
            Some(Exit::Signaled { signal: 9 } | Exit::Exited { code: 3 })
        ),
        "{exit:?}"
    );
}

#[test]
fn fork_bomb_hits_the_pids_limit_and_is_killed() {
    let Some(bin) = require_sandbox() else { return };
    let run = run_trainer(
        bin,
        &["fork-bomb"],
        &cohort(4, 3),
        job_spec(Duration::from_millis(1500)),
    );
    run.assert_nothing_released();
    assert_eq!(
        run.result.details.trainer_exit,
        Some(Exit::TimedOut { seconds: 1 })
    );
    assert!(
        run.stdout()
            .contains("fork failed: Resource temporarily unavailable"),
        "{}",
        run.stdout()
    );
}

#[test]
fn trainer_that_never_exits_is_killed_at_the_wall_time_limit() {
    let Some(bin) = require_sandbox() else { return };
    let run = run_trainer(
        bin,
        &["never-exit"],
        &cohort(4, 4),
        job_spec(Duration::from_secs(1)),
    );
    run.assert_nothing_released();
    let m = &run.result.signed.manifest;
    let d = &run.result.details;
    assert_eq!(m.outcome, ManifestOutcome::TrainerFailed);
    assert_eq!(m.reasons, ["trainer-failed"]);
    assert_eq!(d.trainer_exit, Some(Exit::TimedOut { seconds: 1 }));
    assert!(d.reasons[0].contains("wall-time limit"), "{:?}", d.reasons);
}

/// Detaches every mount under `dir` (a run the test gave up on leaves its `/out` tmpfs).
fn detach_mounts_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for m in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
        if Path::new(m).starts_with(dir) {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Review F1: the trainer fills the feed's answer path with fetches it never reads, passes its
/// own end of the feed connection to the node (SCM_RIGHTS) and exits 0 with valid outputs. The
/// socket then lives on in the node's receive queue after the container is gone, so the
/// node's writer and reader would wait on it forever. The node cuts the connection once the
/// container is gone, within a bound, and the run is the trainer's failure (charged), never
/// the node's (refunded) nor completed.
#[test]
fn a_trainer_that_passes_its_feed_socket_to_the_node_is_cut_off_and_charged() {
    let Some(bin) = require_sandbox() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let started = std::time::Instant::now();
    {
        let (bin, dir) = (bin.to_path_buf(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            let cohort = cohort(12, 2);
            let run = run_trainer_in(&dir, &bin, &["wedge", "2000"], &cohort, job_spec(SHORT));
            let _ = tx.send(run);
        });
    }
    // The trainer is done in about two seconds; the run must end soon after.
    let Ok(run) = rx.recv_timeout(Duration::from_secs(60)) else {
        detach_mounts_under(dir.path());
        panic!(
            "the run did not return {:?} after it started: a trainer that passed its feed \
             socket to the node holds the run forever",
            started.elapsed()
        );
    };
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    run.assert_nothing_released();
    let m = &run.result.signed.manifest;
    let d = &run.result.details;
    assert_eq!(
        m.outcome,
        ManifestOutcome::TrainerFailed,
        "{}",
        run.stdout()
    );
    assert_eq!(m.reasons, ["trainer-failed"]);
    assert_eq!(d.trainer_exit, Some(Exit::Exited { code: 0 }));
    assert!(
        run.stdout().contains("passed the feed socket to the node"),
        "{}",
        run.stdout()
    );
    assert!(
        d.reasons.iter().any(|r| r.contains("outlived the trainer")),
        "{:?}",
        d.reasons
    );
}

#[test]
fn metrics_json_with_strings_is_rejected() {
    let Some(run) = attack(&["metrics-strings"]) else {
        return;
    };
    assert_rejected_for(
        &run,
        |r| matches!(r, Rejection::BadFormat { name, detail, .. } if name == "metrics.json" && detail.contains("\"loss\"")),
    );
}

#[test]
fn raw_identifier_in_weights_is_rejected() {
    let Some(bin) = require_sandbox() else { return };
    let cohort = cohort(12, 5);
    let pid = cohort.raw[3].patient_id.clone();
    let run = run_trainer(bin, &["ident-weights", &pid], &cohort, job_spec(SHORT));
    run.assert_nothing_released();
    assert_rejected_for(
        &run,
        |r| matches!(r, Rejection::Identifier { stream, kind: IdentifierKind::PatientId, .. } if stream == "model.safetensors"),
    );
    // The verdict names the kind of identifier, never its value.
    assert!(!String::from_utf8_lossy(&run.result.signed.bytes).contains(&pid));
}

#[test]
fn raw_identifier_in_stderr_is_rejected() {
    let Some(bin) = require_sandbox() else { return };
    let cohort = cohort(12, 6);
    let name = cohort.raw[1].name.clone();
    let run = run_trainer(bin, &["ident-stderr", &name], &cohort, job_spec(SHORT));
    run.assert_nothing_released();
    assert_rejected_for(
        &run,
        |r| matches!(r, Rejection::Identifier { stream, kind: IdentifierKind::PatientName, .. } if stream == "stderr"),
    );
}

#[test]
fn fed_pixel_bytes_copied_into_weights_are_rejected() {
    let Some(run) = attack(&["pixel-copy"]) else {
        return;
    };
    assert_eq!(run.result.details.records_fed, 1);
    assert_rejected_for(
        &run,
        |r| matches!(r, Rejection::PixelBlock { stream, .. } if stream == "model.safetensors"),
    );
}

fn syscall_is_blocked_by_seccomp(name: &str) {
    let Some(run) = attack(&["syscall", name]) else {
        return;
    };
    // A filter is installed (mode 2) and the call itself returned EPERM.
    assert!(run.stdout().contains("Seccomp:\t2"), "{}", run.stdout());
    assert_blocked_inside(&run, &format!("{name} ret=-1 errno=1 "));
}

#[test]
fn keyctl_is_blocked_by_seccomp() {
    syscall_is_blocked_by_seccomp("keyctl");
}

#[test]
fn add_key_is_blocked_by_seccomp() {
    syscall_is_blocked_by_seccomp("add_key");
}

#[test]
fn io_uring_setup_is_blocked_by_seccomp() {
    syscall_is_blocked_by_seccomp("io_uring_setup");
}

#[test]
fn bpf_is_blocked_by_seccomp() {
    syscall_is_blocked_by_seccomp("bpf");
}

#[test]
fn perf_event_open_is_blocked_by_seccomp() {
    syscall_is_blocked_by_seccomp("perf_event_open");
}

#[test]
fn ptrace_is_blocked_by_seccomp() {
    syscall_is_blocked_by_seccomp("ptrace");
}

#[test]
fn unshare_user_namespace_is_blocked_by_seccomp() {
    syscall_is_blocked_by_seccomp("unshare");
}

/// Control for the seccomp tests: outside the sandbox the same unprivileged-capable calls
/// succeed, so it is the filter (not missing capabilities) that refuses them inside.
#[test]
fn the_same_syscalls_succeed_outside_the_sandbox() {
    let Some(bin) = require_sandbox() else { return };
    for name in ["keyctl", "ptrace"] {
        let out = std::process::Command::new(bin)
            .args(["syscall", name])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(
            s.contains(&format!("{name} ret=")) && s.contains("errno=0 (ok)"),
            "{name}: {s}"
        );
    }
}

#[test]
fn core_dump_after_reading_records_is_impossible() {
    let Some(run) = attack(&["core-dump"]) else {
        return;
    };
    let m = &run.result.signed.manifest;
    assert_eq!(m.outcome, ManifestOutcome::TrainerFailed);
    assert_eq!(
        run.result.details.trainer_exit,
        Some(Exit::Signaled { signal: 11 })
    );
    assert_eq!(run.result.details.records_fed, 1);
    // What a trainer that did not complete fed itself on is not in its manifest.
    assert_eq!(m.records_fed, None);
    let out = run.stdout();
    assert!(
        out.contains("setrlimit(RLIMIT_CORE, unlimited) ret=-1 errno=1"),
        "{out}"
    );
    assert!(out.contains("core limit soft=0 hard=0"), "{out}");
    // The working directory is /out: a core file would have been seen by the guard.
    assert!(
        !run.rejections()
            .iter()
            .any(|r| matches!(r, Rejection::Undeclared { name } if name.starts_with("core"))),
        "{:?}",
        run.rejections()
    );
    assert!(!Path::new("core").exists());
}

/// The leftover checks look where the container really lives: its cgroup and processes exist
/// while it runs and are gone after (so `assert_host_clean` cannot pass vacuously).
#[test]
fn container_cgroup_and_processes_exist_during_the_run_and_not_after() {
    let Some(bin) = require_sandbox() else { return };
    let spec = job_spec(Duration::from_millis(1500));
    let id = format!("rapha-{}", spec.job_id);
    let marker = spec.job_id.to_string();
    let seen = std::sync::atomic::AtomicBool::new(false);
    let seen_proc = std::sync::atomic::AtomicBool::new(false);
    let done = std::sync::atomic::AtomicBool::new(false);
    let cohort = cohort(4, 8);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if Path::new("/sys/fs/cgroup/pids/rapha").join(&id).exists() {
                    seen.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                for e in std::fs::read_dir("/proc").unwrap().flatten() {
                    if std::fs::read(e.path().join("cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
                    {
                        seen_proc.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let run = run_trainer(bin, &["never-exit"], &cohort, spec); // asserts host clean after
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            run.result.details.trainer_exit,
            Some(Exit::TimedOut { seconds: 1 })
        );
    });
    assert!(
        seen.load(std::sync::atomic::Ordering::Relaxed),
        "the container's pids cgroup was never seen"
    );
    assert!(
        seen_proc.load(std::sync::atomic::Ordering::Relaxed),
        "the trainer process was never seen"
    );
}

/// The manifest the runtime signs can reach the publisher: a refusal must not carry the
/// names the trainer chose (here an undeclared file named like hex-encoded pixels), only the
/// rule that fired. The name stays in the hospital-side details.
#[test]
fn refusal_manifest_names_the_rule_not_the_trainers_file_name() {
    let Some(run) = attack(&["name", "deadbeefcafe0123.bin"]) else {
        return;
    };
    let signed = String::from_utf8_lossy(&run.result.signed.bytes).into_owned();
    assert!(
        !signed.contains("deadbeefcafe0123"),
        "the signed manifest carries the trainer's file name: {signed}"
    );
    assert_eq!(run.result.signed.manifest.reasons, ["undeclared-output"]);
}

/// Two trainers that differ only in their exit status get manifests that differ only in the
/// job's own identity: the status is not a channel to the publisher.
#[test]
fn manifest_of_a_failed_trainer_does_not_carry_its_exit_status() {
    let Some(bin) = require_sandbox() else { return };
    let cohort = cohort(6, 9);
    let publishable = |code: &str| {
        let run = run_trainer(bin, &["exit", code], &cohort, job_spec(SHORT));
        run.assert_nothing_released();
        let mut v: serde_json::Value = serde_json::from_slice(&run.result.signed.bytes).unwrap();
        let m = v.as_object_mut().unwrap();
        m.remove("job");
        m.remove("enclave_public_key");
        v
    };
    assert_eq!(publishable("77"), publishable("78"));
}

/// The node's own failure after the run began (here the OCI runtime cannot be started) is
/// `failed`, signed with its reason code, never `trainer-failed`: the trainer is not charged
/// for the node.
#[test]
fn a_runtime_that_cannot_start_is_the_nodes_failure_not_the_trainers() {
    let Some(bin) = require_sandbox() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    std::fs::copy(bin, rootfs.join("trainer")).unwrap();
    let release = tempfile::tempdir().unwrap();
    let session = rapha_enclave::EnclaveSession::new(job_spec(SHORT)).unwrap();
    let cfg = rapha_enclave::SandboxConfig {
        runtime: "/nonexistent/runc".into(),
        ..sandbox_config(dir.path())
    };
    let cohort = cohort(4, 10);
    let paths = rapha_enclave::RunPaths {
        work_root: &dir.path().join("work"),
        rootfs: &rootfs,
        release_dir: release.path(),
    };
    let r = session
        .run(
            &cfg,
            &paths,
            &["/trainer".into(), "honest".into()],
            &cohort.source,
            &cohort.identifiers(),
        )
        .unwrap();
    let m = &r.signed.manifest;
    assert_eq!(m.outcome, ManifestOutcome::Failed);
    assert_eq!(m.reasons, ["enclave-error"]);
    assert!(r.released.is_empty() && !m.guard.accepted);
    assert_eq!(r.details.trainer_exit, None);
    assert!(
        r.details.reasons[0].starts_with("could not start the OCI runtime \"/nonexistent/runc\""),
        "{:?}",
        r.details.reasons
    );
    assert!(SignedManifest::verify(
        &r.signed.bytes,
        &r.signed.signature,
        &session.public_key()
    ));
}

/// Review F4: the OCI runtime starts but cannot create the container (here the state of a
/// container of the same id is left in its state directory; a cgroup, mount or seccomp set-up
/// failure ends the same way). That is the node's failure, refunded: `failed` with
/// `enclave-error`, not the trainer's exit status 1 charged as `trainer-failed`.
#[test]
fn a_runtime_that_cannot_create_the_container_is_the_nodes_failure_not_the_trainers() {
    let Some(bin) = require_sandbox() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    std::fs::copy(bin, rootfs.join("trainer")).unwrap();
    let release = tempfile::tempdir().unwrap();
    let spec = job_spec(SHORT);
    let job = spec.job_id;
    let session = rapha_enclave::EnclaveSession::new(spec).unwrap();
    let cfg = sandbox_config(dir.path());
    let stale = cfg.runtime_root.join(format!("rapha-{job}"));
    std::fs::create_dir_all(&stale).unwrap();
    let cohort = cohort(4, 10);
    let paths = rapha_enclave::RunPaths {
        work_root: &dir.path().join("work"),
        rootfs: &rootfs,
        release_dir: release.path(),
    };
    let r = session
        .run(
            &cfg,
            &paths,
            &["/trainer".into(), "honest".into(), job.to_string()],
            &cohort.source,
            &cohort.identifiers(),
        )
        .unwrap();
    let m = &r.signed.manifest;
    assert_eq!(
        (m.outcome, m.reasons.as_slice(), r.details.trainer_exit),
        (ManifestOutcome::Failed, ["enclave-error"].as_slice(), None),
        "{:?}",
        r.details.reasons
    );
    assert!(r.released.is_empty() && !m.guard.accepted);
    assert!(
        r.details.reasons[0].starts_with(
            "the OCI runtime \"runc\" failed to run the trainer container: runc run failed"
        ),
        "{:?}",
        r.details.reasons
    );
    assert_host_clean(&cfg, job, dir.path());
}
