//! `rapha-node cohort preview`: what the DPO sees is the trainer's view, with exclusions on
//! stderr; bad keys and broad queries fail with a non-zero exit that names the problem.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rapha_testkit::cohort::{generate, CohortSpec};
use rapha_testkit::services::Orthanc;

use crate::node_common::{node, stderr, stdout};

fn write_key(path: &Path, len: usize, mode: u32) {
    std::fs::write(path, vec![7u8; len]).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn bad_keys_are_refused_with_an_actionable_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let loose = dir.path().join("loose.key");
    write_key(&loose, 32, 0o644);
    let o = node(&[
        "cohort",
        "preview",
        "--key",
        loose.to_str().unwrap(),
        "--dicom-dir",
        d,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    let short = dir.path().join("short.key");
    write_key(&short, 31, 0o600);
    let o = node(&[
        "cohort",
        "preview",
        "--key",
        short.to_str().unwrap(),
        "--dicom-dir",
        d,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("exactly 32 bytes"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
}

#[test]
fn broad_query_exits_non_zero_naming_the_rule_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("hmac.key");
    write_key(&key, 32, 0o600);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/dicom-web", listener.local_addr().unwrap());
    for (q, rule) in [
        ("PatientName=*&limit=5", "allowed-keys"),
        ("ModalitiesInStudy=CT&limit=5", "narrowing-key-required"),
        ("instances?limit=5", "study-level-only"),
        ("AccessionNumber=A1", "limit-required"),
    ] {
        let o = node(&[
            "cohort",
            "preview",
            "--key",
            key.to_str().unwrap(),
            "--dicomweb",
            &url,
            "--query",
            q,
        ]);
        assert!(!o.status.success(), "{q}");
        assert!(stderr(&o).contains(rule), "{q}: {}", stderr(&o));
        assert!(stdout(&o).is_empty());
    }
    assert!(
        listener.accept().is_err(),
        "a refused query connected to the PACS"
    );
}

#[test]
fn preview_prints_records_without_phi_and_counts_exclusions() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("hmac.key");
    write_key(&key, 32, 0o600);
    let m = generate(&CohortSpec::new(6, 11, dir.path().join("cohort"))).unwrap();
    let cohort = dir.path().join("cohort");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "[dicom.fields]\nsex = true\n\n[dicom.scope]\nmax_date_range_days = 4018\n",
    )
    .unwrap();
    let o = node(&[
        "cohort",
        "preview",
        "--key",
        key.to_str().unwrap(),
        "--dicom-dir",
        cohort.join("dicom").to_str().unwrap(),
        "--optouts",
        cohort.join("optouts.csv").to_str().unwrap(),
        "--labels",
        cohort.join("labels.csv").to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let records: Vec<rapha_dicom::Record> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!records.is_empty());
    assert!(
        records.iter().all(|r| r.sex.is_some()),
        "config opted sex in"
    );
    let lower = out.to_lowercase();
    for p in m.phi.iter().filter(|p| p.chars().count() >= 4) {
        assert!(
            !lower.contains(&p.to_lowercase()),
            "preview shows PHI {p:?}"
        );
    }
    let summary: serde_json::Value =
        serde_json::from_str(stderr(&o).lines().last().unwrap()).unwrap();
    assert_eq!(summary["kept"].as_u64().unwrap() as usize, records.len());
    let excluded = summary["excluded"].as_object().unwrap();
    let total: u64 = excluded.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(records.len() as u64 + total, m.instance_count as u64);
    assert!(excluded.contains_key("at-risk-modality"), "{excluded:?}");
}

#[test]
fn preview_over_dicomweb_matches_the_directory() {
    let Some(orthanc) = rapha_testkit::require!(Orthanc::start()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("hmac.key");
    write_key(&key, 32, 0o600);
    let m = generate(&CohortSpec::new(4, 5, dir.path().join("cohort"))).unwrap();
    let dicom = dir.path().join("cohort/dicom");
    orthanc.upload_dir(&dicom).unwrap();
    let acc: Vec<&str> = m
        .studies
        .iter()
        .map(|s| s.accession_number.as_str())
        .collect();
    let q = format!("AccessionNumber={}&limit=10", acc.join(","));
    let k = key.to_str().unwrap();
    let web = node(&[
        "cohort",
        "preview",
        "--key",
        k,
        "--dicomweb",
        &orthanc.dicomweb_url(),
        "--query",
        &q,
    ]);
    assert!(web.status.success(), "{}", stderr(&web));
    let files = node(&[
        "cohort",
        "preview",
        "--key",
        k,
        "--dicom-dir",
        dicom.to_str().unwrap(),
    ]);
    assert!(files.status.success(), "{}", stderr(&files));
    let norm = |s: String| {
        let mut v: Vec<serde_json::Value> = s
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("transfer_syntax_uid");
                v
            })
            .collect();
        v.sort_by_key(|r| r["instance"].as_str().unwrap().to_owned());
        v
    };
    let (a, b) = (norm(stdout(&web)), norm(stdout(&files)));
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

/// Issue 18, item 4: a ~720 KB file of 20 000 nested sequences aborted `cohort preview` (stack
/// overflow in the DICOM parser). It is now counted as malformed and the preview goes on.
#[test]
fn preview_survives_a_deeply_nested_file_and_counts_it_malformed() {
    use rapha_testkit::crafted::{deep_part10, plain_part10, Identity};
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("hmac.key");
    write_key(&key, 32, 0o600);
    let files = dir.path().join("dicom");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("a.dcm"), plain_part10(&Identity::ct(1))).unwrap();
    let deep = deep_part10(&Identity::ct(2), 20_000);
    assert!(deep.len() > 700_000);
    std::fs::write(files.join("b.dcm"), deep).unwrap();
    let o = node(&[
        "cohort",
        "preview",
        "--key",
        key.to_str().unwrap(),
        "--dicom-dir",
        files.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    let summary: serde_json::Value =
        serde_json::from_str(stderr(&o).lines().last().unwrap()).unwrap();
    assert_eq!(summary["kept"], 1, "{summary}");
    assert_eq!(summary["excluded"]["malformed"], 1, "{summary}");
}

/// The same file through a real PACS: Orthanc crashes on ~50 nested levels but accepts 30, and
/// its DICOMweb metadata leaves the deep sequence out, so what the preview (and the cohort)
/// reads is an ordinary header. The Part 10 object it serves over WADO-RS still nests 30
/// levels: the enclave runtime refuses it at fetch time (rapha-enclave's
/// `deeply_nested_instance_in_orthanc_is_refused_at_fetch_time`).
#[test]
fn preview_over_dicomweb_of_a_deeply_nested_instance_reads_orthancs_metadata() {
    use rapha_testkit::crafted::{deep_part10, plain_part10, Identity};
    let Some(orthanc) = rapha_testkit::require!(Orthanc::start()) else {
        return;
    };
    orthanc
        .upload_bytes(&plain_part10(&Identity::ct(3)))
        .unwrap();
    orthanc
        .upload_bytes(&deep_part10(&Identity::ct(4), 30))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("hmac.key");
    write_key(&key, 32, 0o600);
    let o = node(&[
        "cohort",
        "preview",
        "--key",
        key.to_str().unwrap(),
        "--dicomweb",
        &orthanc.dicomweb_url(),
        "--query",
        "StudyDate=20240105-20240105&ModalitiesInStudy=CT&limit=10",
    ]);
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 2);
}
