//! `rapha-node backup` / `restore`: the state comes back whole, keys never leave, a damaged
//! backup or a non-empty target restores nothing.

use std::path::{Path, PathBuf};

use rapha_core::{CohortQuery, Digest};
use rapha_node::audit::{AuditEvent, AuditKind, AuditLog, AuditOutcome};
use rapha_node::backup::{backup, restore};
use rapha_node::config::Config;
use rapha_node::store::JobStore;

use crate::node_common::*;

fn request(publisher: &str) -> rapha_core::JobRequest {
    rapha_testkit::job::job_request(
        publisher,
        "lesion-classifier",
        Digest::of(b"manifest"),
        CohortQuery {
            modalities: vec!["CT".into()],
            ..CohortQuery::default()
        },
        120_000_000,
        "0x0000000000000000000000000000000000000001",
    )
}

/// A node's configuration under `dir` with its state and data directories made, and the API
/// token file (a key) misplaced inside the state's `approvals/`.
fn config(dir: &Path) -> (PathBuf, Config) {
    let mut spec = ConfigSpec::under(dir);
    std::fs::create_dir_all(spec.state_dir.join("approvals")).unwrap();
    std::fs::create_dir_all(&spec.data_dir).unwrap();
    spec.tokens = spec.state_dir.join("approvals/api-tokens");
    let path = spec.write(&dir.join("node.toml"));
    let config = Config::load(&path).unwrap();
    (path, config)
}

/// A state with a job, a receipt log, an audit trail with a rotated file, an approval, a
/// released output and the misplaced token file.
fn populate(config: &Config) -> rapha_core::JobId {
    let state = &config.paths.state_dir;
    let mut jobs = JobStore::open(&state.join("jobs.sqlite")).unwrap();
    let req = request("acme-ai");
    jobs.insert(&req).unwrap();
    rapha_receipt::ReceiptLog::open(&state.join("receipts")).unwrap();
    let audit = AuditLog::open(&state.join("audit.jsonl"), "node", None).unwrap();
    audit
        .record(AuditEvent::new(
            AuditKind::AdminAction,
            AuditOutcome::Success,
            "test",
            ("admin", "admin"),
            vec![],
        ))
        .unwrap();
    std::fs::write(state.join("audit.jsonl.20261207T000000Z"), b"{\"old\":1}\n").unwrap();
    std::fs::write(
        state.join("approvals/approval-1.json"),
        b"{\"approved\":true}",
    )
    .unwrap();
    rapha_core::fs::write_new_secret(
        &state.join("approvals/api-tokens"),
        b"admin adm-0123456789abcdef0123456789abcdef0123\n",
    )
    .unwrap();
    let cohorts = config.paths.state_dir.join("cohorts");
    std::fs::create_dir_all(&cohorts).unwrap();
    std::fs::write(
        cohorts.join(format!("{}.jsonl", req.job_id)),
        b"{\"entry\":1}\n",
    )
    .unwrap();
    // A running job's rootfs is not backed up.
    std::fs::create_dir_all(config.paths.data_dir.join("work/jobs/x")).unwrap();
    std::fs::write(
        config.paths.data_dir.join("work/jobs/x/raw"),
        b"trainer bytes",
    )
    .unwrap();
    let released = config
        .paths
        .data_dir
        .join("released")
        .join(req.job_id.to_string());
    std::fs::create_dir_all(&released).unwrap();
    std::fs::write(released.join("model.safetensors"), vec![7u8; 4096]).unwrap();
    req.job_id
}

#[test]
fn a_backup_restores_the_state_whole_without_keys_and_is_a_snapshot() {
    let a = tempfile::tempdir().unwrap();
    let (_, from) = config(a.path());
    let job = populate(&from);
    // The node keeps its store open while the backup runs.
    let mut live = JobStore::open(&from.paths.state_dir.join("jobs.sqlite")).unwrap();
    let out = a.path().join("backup-1");
    let manifest = backup(&from, &out).unwrap();
    let later = request("other-co");
    live.insert(&later).unwrap();

    let names: Vec<&str> = manifest.files.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "jobs.sqlite",
        "receipts",
        "audit.jsonl",
        "audit.jsonl.20261207T000000Z",
        "approvals/approval-1.json",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.contains("api-tokens")),
        "a key file is never backed up: {names:?}"
    );
    assert_eq!(manifest.keys_left_out.len(), 1, "{manifest:?}");
    assert!(!out.with_extension("partial").exists());

    let b = tempfile::tempdir().unwrap();
    let (_, to) = config(b.path());
    std::fs::remove_dir(to.paths.state_dir.join("approvals")).unwrap();
    restore(&to, &out).unwrap();
    let restored = JobStore::open(&to.paths.state_dir.join("jobs.sqlite")).unwrap();
    assert_eq!(restored.get(job).unwrap().request.publisher, "acme-ai");
    assert!(
        restored.get(later.job_id).is_err(),
        "the backup is the store as it was when taken"
    );
    rapha_receipt::ReceiptLog::open(&to.paths.state_dir.join("receipts")).unwrap();
    for rel in [
        "audit.jsonl",
        "audit.jsonl.20261207T000000Z",
        "approvals/approval-1.json",
    ] {
        assert_eq!(
            std::fs::read(to.paths.state_dir.join(rel)).unwrap(),
            std::fs::read(from.paths.state_dir.join(rel)).unwrap(),
            "{rel}"
        );
    }
    let cohort = format!("cohorts/{job}.jsonl");
    assert_eq!(
        std::fs::read(to.paths.state_dir.join(&cohort)).unwrap(),
        std::fs::read(from.paths.state_dir.join(&cohort)).unwrap()
    );
    assert!(!to.paths.data_dir.join("work/jobs").exists());
    let model = format!("released/{job}/model.safetensors");
    assert_eq!(
        std::fs::read(to.paths.data_dir.join(&model)).unwrap(),
        vec![7u8; 4096]
    );
    assert!(!to.paths.state_dir.join("approvals/api-tokens").exists());
}

#[test]
fn a_damaged_backup_or_a_non_empty_target_restores_nothing() {
    let a = tempfile::tempdir().unwrap();
    let (_, from) = config(a.path());
    let job = populate(&from);
    let out = a.path().join("backup");
    backup(&from, &out).unwrap();

    // One byte of a released output changed in the backup.
    let model = out.join(format!("data/released/{job}/model.safetensors"));
    let mut bytes = std::fs::read(&model).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&model, &bytes).unwrap();
    let b = tempfile::tempdir().unwrap();
    let (_, to) = config(b.path());
    std::fs::remove_dir(to.paths.state_dir.join("approvals")).unwrap();
    let err = format!("{:#}", restore(&to, &out).unwrap_err());
    assert!(
        err.contains("model.safetensors does not match MANIFEST.json")
            && err.contains("nothing was restored"),
        "{err}"
    );
    assert!(
        !to.paths.state_dir.join("jobs.sqlite").exists(),
        "nothing written"
    );
    bytes[100] ^= 1;
    std::fs::write(&model, &bytes).unwrap();

    // A manifest path that climbs out of its root.
    let manifest_path = out.join("MANIFEST.json");
    let original = std::fs::read_to_string(&manifest_path).unwrap();
    std::fs::write(
        &manifest_path,
        original.replace("\"approvals/approval-1.json\"", "\"../approval-1.json\""),
    )
    .unwrap();
    let err = format!("{:#}", restore(&to, &out).unwrap_err());
    assert!(err.contains("not a plain relative path"), "{err}");
    std::fs::write(&manifest_path, &original).unwrap();

    // A target that already has a job store.
    JobStore::open(&to.paths.state_dir.join("jobs.sqlite")).unwrap();
    let err = format!("{:#}", restore(&to, &out).unwrap_err());
    assert!(
        err.contains("already exists") && err.contains("nothing was restored"),
        "{err}"
    );
    assert!(
        !to.paths.state_dir.join("audit.jsonl").exists(),
        "nothing written"
    );

    // And the backup's own name is never overwritten.
    let err = format!("{:#}", backup(&from, &out).unwrap_err());
    assert!(err.contains("exists; name a new directory"), "{err}");
}

#[test]
fn backup_and_restore_through_the_binary() {
    let a = tempfile::tempdir().unwrap();
    let (path, from) = config(a.path());
    populate(&from);
    let out = a.path().join("nightly");
    let o = node(&[
        "backup",
        "--config",
        path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("left out (a key file):") && text.contains("api-tokens"),
        "{text}"
    );
    let b = tempfile::tempdir().unwrap();
    let (to_path, to) = config(b.path());
    std::fs::remove_dir(to.paths.state_dir.join("approvals")).unwrap();
    let o = node(&[
        "restore",
        "--config",
        to_path.to_str().unwrap(),
        "--from",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("put the node's keys back"),
        "{}",
        stdout(&o)
    );
    assert!(to.paths.state_dir.join("jobs.sqlite").is_file());
}

/// A link planted in a backed-up directory is never followed (it could point at a key or any
/// file of the host); a link elsewhere in the state directory is not looked at.
#[test]
fn a_backup_follows_no_symbolic_link() {
    let a = tempfile::tempdir().unwrap();
    let (_, from) = config(a.path());
    populate(&from);
    std::os::unix::fs::symlink("/etc/hostname", from.paths.state_dir.join("elsewhere")).unwrap();
    backup(&from, &a.path().join("fine")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", from.paths.state_dir.join("approvals/link"))
        .unwrap();
    let err = format!(
        "{:#}",
        backup(&from, &a.path().join("refused")).unwrap_err()
    );
    assert!(err.contains("approvals/link is a symbolic link"), "{err}");
    assert!(!a.path().join("refused").exists());
}
