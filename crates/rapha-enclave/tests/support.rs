//! Test support: the synthetic cohort, the static test trainer, and host-cleanliness checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use rapha_core::{HashedId, HmacKey, IdDomain, JobId, OutputDecl, OutputKind, ResourceLimits};
use rapha_enclave::session::RunPaths;
use rapha_enclave::{
    Dtype, EnclaveSession, FeedRecord, IdentifierKind, JobResult, JobSpec, MemorySource, Pixels,
    RawIdentifiers, SandboxConfig,
};

pub const SIDE: u32 = 32;

/// Raw identifiers of a synthetic patient (what the hospital's PACS would hold).
pub struct RawPatient {
    pub patient_id: String,
    pub name: String,
    pub birth_date: String,
    pub accession: String,
    pub study_uid: String,
    pub sop_uid: String,
}

pub struct Cohort {
    pub source: MemorySource,
    pub raw: Vec<RawPatient>,
}

impl Cohort {
    pub fn identifiers(&self) -> RawIdentifiers {
        let mut ids = RawIdentifiers::new();
        for p in &self.raw {
            ids.add(IdentifierKind::PatientId, &p.patient_id);
            ids.add(IdentifierKind::PatientName, &p.name);
            ids.add(IdentifierKind::BirthDate, &p.birth_date);
            ids.add(IdentifierKind::AccessionNumber, &p.accession);
            ids.add(IdentifierKind::Uid, &p.study_uid);
            ids.add(IdentifierKind::Uid, &p.sop_uid);
        }
        ids
    }
}

/// xorshift noise so pixel windows have entropy, as real images do.
fn noise(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// `n` patients, one 32x32 u16 image each; label-1 images are brighter (a learnable signal).
pub fn cohort(n: usize, seed: u64) -> Cohort {
    let key = HmacKey::from_bytes([7u8; 32]);
    let mut entries = Vec::new();
    let mut raw = Vec::new();
    let mut st = seed | 1;
    for i in 0..n {
        let label = (i % 2) as u8;
        let p = RawPatient {
            patient_id: format!("PAT{seed:03}{i:05}"),
            name: format!("Testperson{i}^Alex"),
            birth_date: format!("19{:02}{:02}{:02}", 40 + i % 50, 1 + i % 12, 1 + i % 28),
            accession: format!("ACC{seed:02}X{i:06}"),
            study_uid: format!("1.2.826.0.1.3680043.8.498.{seed}.{i}.1"),
            sop_uid: format!("1.2.826.0.1.3680043.8.498.{seed}.{i}.1.1.1"),
        };
        let mut bytes = Vec::with_capacity((SIDE * SIDE * 2) as usize);
        for _ in 0..SIDE * SIDE {
            let v = 1000 + u16::from(label) * 400 + (noise(&mut st) % 600) as u16;
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let rec = FeedRecord {
            instance: HashedId::derive(&key, IdDomain::Instance, &p.sop_uid),
            series: HashedId::derive(&key, IdDomain::Series, &format!("{}.1", p.study_uid)),
            study: HashedId::derive(&key, IdDomain::Study, &p.study_uid),
            patient: HashedId::derive(&key, IdDomain::Patient, &p.patient_id),
            label: Some(label),
            modality: "CT".into(),
            dtype: Dtype::U16,
            shape: [1, SIDE, SIDE, 1],
            attributes: BTreeMap::from([("BitsStored".into(), serde_json::json!(12))]),
        };
        let px = Pixels::new(Dtype::U16, [1, SIDE, SIDE, 1], bytes).unwrap();
        entries.push((rec, px));
        raw.push(p);
    }
    Cohort {
        source: MemorySource::new(entries),
        raw,
    }
}

/// The static test trainer (testdata/trainer.c), compiled once per test run.
pub fn trainer_binary() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("rapha-enclave-trainer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let out = dir.join("trainer");
        rapha_testkit::trainer::compile_test_trainer(&out).then_some(out)
    })
    .as_deref()
}

pub fn runc_available() -> bool {
    Command::new("runc")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
        && nix::unistd::geteuid().is_root()
}

/// Returns the trainer binary when the sandbox can run here; otherwise skips loudly (or
/// fails when RAPHA_REQUIRE_SERVICES=1).
pub fn require_sandbox() -> Option<&'static Path> {
    let required = std::env::var("RAPHA_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    if !runc_available() {
        assert!(!required, "runc (as root) is required but not available");
        eprintln!("SKIPPED: runc not installed or not root; sandbox test not run");
        return None;
    }
    let bin = trainer_binary();
    if bin.is_none() {
        assert!(
            !required,
            "gcc -static is required to build the test trainers"
        );
        eprintln!("SKIPPED: gcc -static unavailable; sandbox test not run");
    }
    bin
}

pub fn outputs() -> Vec<OutputDecl> {
    vec![
        OutputDecl {
            name: "model.safetensors".into(),
            kind: OutputKind::Safetensors,
            max_bytes: 64 << 10,
            // What `write_weights` of testdata/trainer.c writes: four F32 values as 16 bytes.
            tensors: vec![rapha_core::release::TensorDecl {
                name: "w".into(),
                dtype: rapha_core::release::TensorDtype::U8,
                shape: vec![16],
            }],
        },
        OutputDecl {
            name: "metrics.json".into(),
            kind: OutputKind::MetricsJson,
            max_bytes: 4096,
            tensors: vec![],
        },
    ]
}

pub fn job_spec(wall: Duration) -> JobSpec {
    JobSpec {
        job_id: JobId::random(),
        validation_percent: 30,
        min_validation_patients: 5,
        audit_patients: 0,
        outputs: outputs(),
        total_output_cap: 1 << 20,
        limits: ResourceLimits {
            memory_mb: 64,
            cpus: 1,
            pids: 32,
            wall_seconds: 30,
            tmp_mb: rapha_core::DEFAULT_TMP_MB,
            gpus: 0,
        },
        wall_override: Some(wall),
        release: rapha_core::release::ReleaseTransform::DECLARED,
    }
}

pub struct Run {
    pub result: JobResult,
    pub release: tempfile::TempDir,
    pub public_key: [u8; 32],
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.result.stdout).into_owned()
    }
    /// The guard's rejections, in full (hospital-side details).
    pub fn rejections(&self) -> &[rapha_enclave::Rejection] {
        self.result.details.rejections()
    }
    /// Nothing was released: no files, no metrics, outcome not completed, logs withheld.
    pub fn assert_nothing_released(&self) {
        let m = &self.result.signed.manifest;
        assert_ne!(m.outcome, rapha_enclave::ManifestOutcome::Completed);
        assert!(self.result.released.is_empty());
        assert!(m.metrics.is_none());
        assert!(!self.result.logs_releasable);
        assert_eq!(
            std::fs::read_dir(self.release.path())
                .map(|d| d.count())
                .unwrap_or(0),
            0
        );
    }
}

pub fn sandbox_config(root: &Path) -> SandboxConfig {
    SandboxConfig {
        runtime_root: root.join("runc-state"),
        ..SandboxConfig::default()
    }
}

/// Runs the test trainer with `args` on `cohort` under runc.
pub fn run_trainer(bin: &Path, args: &[&str], cohort: &Cohort, spec: JobSpec) -> Run {
    let dir = tempfile::tempdir().unwrap();
    run_trainer_in(dir.path(), bin, args, cohort, spec)
}

/// [`run_trainer`] with its working files (rootfs, runc state, `/out` mount) under `dir`.
pub fn run_trainer_in(
    dir: &Path,
    bin: &Path,
    args: &[&str],
    cohort: &Cohort,
    spec: JobSpec,
) -> Run {
    run_trainer_with(dir, bin, args, cohort, spec, sandbox_config(dir))
}

/// [`run_trainer_in`] on a node configured as `cfg` (its GPUs).
pub fn run_trainer_with(
    dir: &Path,
    bin: &Path,
    args: &[&str],
    cohort: &Cohort,
    spec: JobSpec,
    cfg: SandboxConfig,
) -> Run {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    std::fs::copy(bin, rootfs.join("trainer")).unwrap();
    let release = tempfile::tempdir().unwrap();
    let job = spec.job_id;
    let session = EnclaveSession::new(spec).unwrap();
    let public_key = session.public_key();
    // The job id is the last argv so leftover processes can be found by it.
    let mut entry: Vec<String> = vec!["/trainer".into()];
    entry.extend(args.iter().map(|s| s.to_string()));
    entry.push(job.to_string());
    let paths = RunPaths {
        work_root: &dir.join("work"),
        rootfs: &rootfs,
        release_dir: release.path(),
    };
    let result = session
        .run(&cfg, &paths, &entry, &cohort.source, &cohort.identifiers())
        .unwrap();
    assert_host_clean(&cfg, job, dir);
    Run {
        result,
        release,
        public_key,
    }
}

/// No container, process, cgroup or mount of this job survives the run.
pub fn assert_host_clean(cfg: &SandboxConfig, job: JobId, work: &Path) {
    let id = format!("rapha-{job}");
    let state = Command::new("runc")
        .arg("--root")
        .arg(&cfg.runtime_root)
        .args(["state", &id])
        .output()
        .unwrap();
    assert!(!state.status.success(), "container {id} still exists");
    for ctrl in ["pids", "memory", "cpu", "freezer", "devices"] {
        let p = Path::new("/sys/fs/cgroup")
            .join(ctrl)
            .join("rapha")
            .join(&id);
        assert!(!p.exists(), "cgroup {} left behind", p.display());
    }
    let marker = job.to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            assert!(
                !String::from_utf8_lossy(&cmd).contains(&marker),
                "process {} of job {job} still running",
                entry.file_name().to_string_lossy()
            );
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(work.to_str().unwrap()),
        "a mount under {} is left",
        work.display()
    );
}
