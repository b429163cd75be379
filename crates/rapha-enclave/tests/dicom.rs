//! The enclave fed from a real DICOM cohort: the testkit's synthetic studies, read by
//! rapha-dicom (pseudonymised records, raw identifiers kept node-side), decoded in memory,
//! served to a trainer under runc, and guarded with the cohort's own raw identifiers.

use std::time::Duration;

use rapha_core::HmacKey;
use rapha_dicom::cohort::CohortBuilder;
use rapha_dicom::exclusion::{LabelTable, OptOuts};
use rapha_dicom::{DicomConfig, Pseudonymizer};
use rapha_enclave::dicom::DicomSource;
use rapha_enclave::guard::Rejection;
use rapha_enclave::session::RunPaths;
use rapha_enclave::{EnclaveSession, ManifestOutcome, RecordSource};
use rapha_testkit::cohort::{generate, CohortManifest, CohortSpec};

use crate::support::{assert_host_clean, job_spec, require_sandbox, sandbox_config};

fn testkit_cohort(
    studies: usize,
    seed: u64,
) -> (
    tempfile::TempDir,
    CohortManifest,
    rapha_dicom::cohort::Cohort,
) {
    let dir = tempfile::tempdir().unwrap();
    let spec = CohortSpec {
        studies,
        seed,
        out: dir.path().to_path_buf(),
        rle_fraction: 0.25,
        label_shuffle: false,
    };
    let manifest = generate(&spec).unwrap();
    let labels = LabelTable::load(&dir.path().join("labels.csv")).unwrap();
    let optouts = OptOuts::load(&dir.path().join("optouts.csv")).unwrap();
    let pseudo = Pseudonymizer::new(HmacKey::from_bytes([0x5a; 32]));
    let config = DicomConfig::default();
    let cohort = CohortBuilder::new(&pseudo, &config, &optouts)
        .with_labels(&labels)
        .from_dir(&dir.path().join("dicom"))
        .unwrap();
    (dir, manifest, cohort)
}

fn run(
    bin: &std::path::Path,
    args: &[&str],
    source: &DicomSource,
    ids: &rapha_enclave::RawIdentifiers,
) -> rapha_enclave::JobResult {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    std::fs::copy(bin, rootfs.join("trainer")).unwrap();
    let release = dir.path().join("release");
    let mut spec = job_spec(Duration::from_secs(30));
    spec.min_validation_patients = 2;
    spec.limits.memory_mb = 256;
    let job = spec.job_id;
    let session = EnclaveSession::new(spec).unwrap();
    let mut entry = vec!["/trainer".to_string()];
    entry.extend(args.iter().map(|s| s.to_string()));
    entry.push(job.to_string());
    let cfg = sandbox_config(dir.path());
    let paths = RunPaths {
        work_root: &dir.path().join("work"),
        rootfs: &rootfs,
        release_dir: &release,
    };
    let r = session.run(&cfg, &paths, &entry, source, ids).unwrap();
    assert_host_clean(&cfg, job, dir.path());
    r
}

#[test]
fn honest_trainer_reads_every_record_of_a_dicom_cohort() {
    let Some(bin) = require_sandbox() else { return };
    let (_dir, _manifest, cohort) = testkit_cohort(16, 11);
    assert!(!cohort.entries.is_empty());
    let (source, ids) = DicomSource::new(&cohort.entries, None);
    // Every listed shape is what decoding gives.
    for i in 0..source.records().len() {
        let px = source.pixels(i).unwrap();
        assert_eq!(px.shape, source.records()[i].shape);
        assert_eq!(px.dtype, source.records()[i].dtype);
    }
    let r = run(bin, &["honest"], &source, &ids);
    let m = &r.signed.manifest;
    assert_eq!(
        m.outcome,
        ManifestOutcome::Completed,
        "{:?} {}",
        m.reasons,
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(m.records_fed, Some(cohort.entries.len()));
    assert!(m.metrics.is_some() || m.metrics_withheld.is_some());
    assert_eq!(r.released.len(), 2);
}

#[test]
fn planted_phi_of_a_dicom_cohort_is_caught_in_trainer_logs() {
    let Some(bin) = require_sandbox() else { return };
    let (_dir, manifest, cohort) = testkit_cohort(6, 12);
    let (source, ids) = DicomSource::new(&cohort.entries, None);
    // A PHI string the generator planted in a kept instance's header (rapha-dicom passes it on
    // as a raw identifier); the trainer never saw it, here it "guessed" it.
    let raw: Vec<&String> = cohort
        .entries
        .iter()
        .flat_map(|e| &e.raw_identifiers)
        .collect();
    let planted = manifest
        .phi
        .iter()
        .find(|p| p.len() >= 8 && raw.contains(p))
        .expect("a planted PHI value in the kept cohort");
    let r = run(bin, &["ident-stderr", planted], &source, &ids);
    let m = &r.signed.manifest;
    assert_eq!(m.outcome, ManifestOutcome::Rejected);
    assert!(r.released.is_empty() && !r.logs_releasable);
    assert!(
        r.details
            .rejections()
            .iter()
            .any(|x| matches!(x, Rejection::Identifier { stream, .. } if stream == "stderr")),
        "{:?}",
        r.details.rejections()
    );
    assert!(!String::from_utf8_lossy(&r.signed.bytes).contains(planted.as_str()));
}

/// The production path: records fetched from a real PACS (Orthanc + DICOMweb) over WADO-RS
/// one at a time, decoded in memory, fed to a trainer under runc.
#[test]
fn honest_trainer_is_fed_over_wado_rs_from_orthanc() {
    use rapha_dicom::cohort::InstanceSource;
    use rapha_dicom::{ClientOptions, DicomWebClient, ScopeLimits, ScopedQuery};
    use rapha_testkit::services::Orthanc;

    let Some(bin) = require_sandbox() else { return };
    let Some(orthanc) = rapha_testkit::require!(Orthanc::start()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = CohortSpec {
        studies: 10,
        seed: 77,
        out: dir.path().to_path_buf(),
        rle_fraction: 0.3,
        label_shuffle: false,
    };
    let manifest = generate(&spec).unwrap();
    let (accepted, rejected) = orthanc.upload_dir(&dir.path().join("dicom")).unwrap();
    assert_eq!((accepted, rejected), (manifest.instance_count, 0));
    let config = DicomConfig {
        scope: ScopeLimits {
            max_date_range_days: 4018,
            max_limit: 1000,
            max_list: 100,
            page_size: 100,
        },
        ..DicomConfig::default()
    };
    let q = ScopedQuery::parse(
        "StudyDate=20160101-20261231&ModalitiesInStudy=CT,MR,CR,DX,US,SC,OT&limit=1000",
        &config.scope,
    )
    .unwrap();
    let labels = LabelTable::load(&dir.path().join("labels.csv")).unwrap();
    let optouts = OptOuts::load(&dir.path().join("optouts.csv")).unwrap();
    let pseudo = Pseudonymizer::new(HmacKey::from_bytes([0x33; 32]));
    let client = || DicomWebClient::new(ClientOptions::new(orthanc.dicomweb_url())).unwrap();
    let cohort = CohortBuilder::new(&pseudo, &config, &optouts)
        .with_labels(&labels)
        .from_dicomweb(&client(), &q)
        .unwrap();
    assert!(!cohort.entries.is_empty());
    assert!(cohort
        .entries
        .iter()
        .all(|e| matches!(e.source, InstanceSource::DicomWeb { .. })));
    let (source, ids) = DicomSource::new(&cohort.entries, Some(client()));
    let r = run(bin, &["honest"], &source, &ids);
    let m = &r.signed.manifest;
    assert_eq!(
        m.outcome,
        ManifestOutcome::Completed,
        "{:?} {}",
        m.reasons,
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(m.records_fed, Some(cohort.entries.len()));
    assert_eq!(m.fed_root, Some(m.cohort_root));

    // Without a DICOMweb client the same records are unavailable, not fetched some other way.
    let (no_client, _) = DicomSource::new(&cohort.entries, None);
    assert!(matches!(
        no_client.pixels(0),
        Err(rapha_enclave::EnclaveError::RecordUnavailable { .. })
    ));
}
