//! The stores written before issue 18 (`testdata/v1`, by commit 665d500) open with today's
//! node: each is taken as version 1 and migrated forward (the job store to version 3, which
//! adds the suspensions and release-bits tables) or stamped, keeping every row; a job waiting for approval there is
//! approved with its v1 job digest and moves on; a store newer than the node is refused with
//! the store, its version and ours named; a reader never reads an unmigrated store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rapha_core::{JobRequest, OutputKind, Usdc};
use rapha_node::pipeline::{
    Blocked, DepositStatus, NoEvidence, Node, NodeParts, PaymentTerms, Payments, SettleStatus, Step,
};
use rapha_node::store::{JobReader, JobState, JobStore, StoreError};
use rapha_policy::{
    ApprovalStore, DpoSigningKey, HospitalPolicy, JobBudget, JobDigestVersion, Mode, OutputLimits,
    Policy, PublisherTrust, ScopeLimits, DEV_KEY_PREFIX,
};
use rapha_receipt::ReceiptLog;
use rusqlite::Connection;
use serde_json::Value;

fn v1() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/v1")
}

fn fixture() -> Value {
    serde_json::from_slice(&std::fs::read(v1().join("fixture.json")).unwrap()).unwrap()
}

/// A copy of the fixture node's state (the fixtures themselves are never written).
fn copy_state() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&v1().join("node"), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn user_version(path: &Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

fn set_user_version(path: &Path, v: i64) {
    Connection::open(path)
        .unwrap()
        .pragma_update(None, "user_version", v)
        .unwrap();
}

#[test]
fn v1_job_store_migrates_to_version_3_with_a_job_in_every_state() {
    let state = copy_state();
    let path = state.path().join("jobs.sqlite");
    assert_eq!(user_version(&path), 0, "written before versions");
    // A reader must not read it before a writer migrated it.
    let err = JobReader::open(&path).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Version(rapha_migrate::VersionError::NotMigrated {
                found: 0,
                supported: 3,
                ..
            })
        ),
        "{err}"
    );
    let store = JobStore::open(&path).unwrap();
    assert_eq!(user_version(&path), 3);
    JobReader::open(&path).unwrap();
    let f = fixture();
    for s in JobState::ALL {
        let id = f["jobs"][s.as_str()].as_str().unwrap().parse().unwrap();
        assert_eq!(store.get(id).unwrap().state, s, "{s}");
    }
    let unsettled = store.unfinished().unwrap().len();
    assert_eq!(unsettled, 16, "every state but settled");
    // The migration added the suspensions table, empty.
    assert!(store.suspension("example-ai").unwrap().is_none());
    // And the release-bits table, empty: no publisher has been charged.
    assert_eq!(store.publisher_bits("example-ai").unwrap(), 0);
    drop(store);
    // A reader refuses a store newer than the node.
    set_user_version(&path, 4);
    let err = JobReader::open(&path).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Version(rapha_migrate::VersionError::TooNew { found: 4, .. })
        ),
        "{err}"
    );
}

#[test]
fn every_v1_store_newer_than_the_node_is_refused_by_name() {
    let state = copy_state();
    let jobs = state.path().join("jobs.sqlite");
    set_user_version(&jobs, 99);
    let err = JobStore::open(&jobs).unwrap_err().to_string();
    assert!(
        err.starts_with("the job store at ")
            && err.contains("is version 99, newer than this node supports (version 3)"),
        "{err}"
    );
    let log = state.path().join("receipts.log");
    set_user_version(&log, 99);
    let err = ReceiptLog::open(&log).unwrap_err().to_string();
    assert!(
        err.contains("receipt log") && err.contains("version 99"),
        "{err}"
    );
    let ledger = state.path().join("settlement-ledger.sqlite");
    set_user_version(&ledger, 99);
    let err = rapha_settle::Ledger::open(&ledger).unwrap_err().to_string();
    assert!(
        err.contains("settlement ledger") && err.contains("version 99"),
        "{err}"
    );
    let approvals = state.path().join("approvals");
    std::fs::write(approvals.join(rapha_migrate::dir::VERSION_FILE), "99\n").unwrap();
    let err = ApprovalStore::open(&approvals).unwrap_err().to_string();
    assert!(
        err.contains("approval store") && err.contains("version 99"),
        "{err}"
    );
}

#[test]
fn v1_ledger_receipt_log_and_approval_store_open_and_keep_their_rows() {
    let state = copy_state();
    let ledger = state.path().join("settlement-ledger.sqlite");
    let l = rapha_settle::Ledger::open(&ledger).unwrap();
    assert_eq!(user_version(&ledger), 1);
    drop(l);
    let log_path = state.path().join("receipts.log");
    let log = ReceiptLog::open(&log_path).unwrap();
    assert_eq!(user_version(&log_path), 1);
    assert_eq!(log.size(), 5);
    let approvals = ApprovalStore::open(&state.path().join("approvals")).unwrap();
    assert_eq!(
        std::fs::read_to_string(
            state
                .path()
                .join("approvals")
                .join(rapha_migrate::dir::VERSION_FILE)
        )
        .unwrap(),
        "1\n"
    );
    // The in-flight approval (job in awaiting-deposit) is read back as a v1 review whose v1
    // digest is the one the DPO signed.
    let f = fixture();
    let digest = f["job_digests"]["awaiting-deposit"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let review = approvals.review(&digest).unwrap();
    assert_eq!(review.digest_version, JobDigestVersion::V1);
    assert_eq!(review.job_digest().unwrap(), digest);
    let rec = approvals.get(&digest).unwrap().unwrap();
    rec.approval.verify().unwrap();
    assert_eq!(rec.approval.job_digest, digest);
    // Every job that reached review: 19 jobs less the four stopped before it.
    assert_eq!(approvals.list().unwrap().len(), 15);
}

/// The node's steps exercised here never reach the chain; a call means the test is wrong.
struct NoChain;

impl Payments for NoChain {
    fn terms(&self) -> PaymentTerms {
        let a = rapha_receipt::Address::ZERO;
        PaymentTerms {
            chain_id: 137,
            escrow: a,
            token: a,
            payout: a,
        }
    }
    fn check_deposit(&mut self, _: &JobRequest, _: u64) -> Result<DepositStatus, String> {
        panic!("the steps under test do not check deposits")
    }
    fn recheck_deposit(&mut self, _: &JobRequest, _: u64) -> Result<DepositStatus, String> {
        panic!("the steps under test do not check deposits")
    }
    fn settle(
        &mut self,
        _: &JobRequest,
        _: &rapha_receipt::ReceiptFile,
        _: &rapha_node::pipeline::SettlementSigner,
    ) -> Result<SettleStatus, String> {
        panic!("the steps under test do not settle")
    }
}

fn v1_node(state: &Path) -> Node {
    let f = fixture();
    let publisher = f["publisher"].as_str().unwrap().to_owned();
    let trainers: Vec<String> = f["trainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    // A deliberate duplicate (issue 23) of the demo node's policy (crates/rapha-demo/src/node.rs)
    // as it was when the fixtures were made (commit 665d500): frozen with them, while the
    // demo's changes.
    let hospital = HospitalPolicy {
        mode: Mode::Demo,
        publishers: BTreeMap::from([(publisher, PublisherTrust { trainers })]),
        scope: ScopeLimits {
            max_studies: 10_000,
            max_date_range_days: 3650,
            modalities: vec!["CT".into(), "MR".into(), "CR".into(), "DX".into()],
        },
        outputs: OutputLimits {
            kinds: vec![OutputKind::Safetensors, OutputKind::MetricsJson],
            max_file_bytes: 64 << 20,
            max_total_bytes: 128 << 20,
            max_release_bits: None,
            max_publisher_bits: None,
            release_precision: Default::default(),
            release_noise_k: Default::default(),
        },
        allowed_metadata_fields: vec!["BodyPartExamined".into()],
        min_fee: Usdc::from_base_units(1_000_000),
        budget: JobBudget {
            max_jobs: 1000,
            window_hours: 24,
        },
        min_patients: 10,
        min_validation_patients: 2,
        resources: rapha_core::ResourceBounds::default(),
        linkage_publishers: vec![],
    };
    Node::new(NodeParts {
        store: JobStore::open(&state.join("jobs.sqlite")).unwrap(),
        trust: rapha_bundle::TrustStore::open(&state.join("trust")).unwrap(),
        policy: Policy::builtin().unwrap(),
        hospital,
        pseudonymizer: rapha_dicom::Pseudonymizer::new(rapha_core::HmacKey::from_bytes(dev_seed(
            0x5a,
        ))),
        dicom: rapha_dicom::DicomConfig::default(),
        optouts: rapha_dicom::exclusion::OptOuts::default(),
        labels: None,
        pacs: Box::new(|| {
            rapha_dicom::DicomWebClient::new(rapha_dicom::client::ClientOptions::new(
                "http://127.0.0.1:9/dicom-web".to_owned(),
            ))
        }),
        approvals: ApprovalStore::open(&state.join("approvals")).unwrap(),
        dpo_keys: vec![dpo().public()],
        evidence: Box::new(NoEvidence),
        verifier: rapha_attest::EvidenceVerifier::development(),
        tpm_verifier: None,
        sandbox: rapha_enclave::SandboxConfig {
            runtime_root: state.join("runc-state"),
            ..rapha_enclave::SandboxConfig::default()
        },
        min_validation_patients: 2,
        node_key: rapha_receipt::NodeKey::from_secret_bytes(&dev_seed(0x3b)).unwrap(),
        node_name: "rapha-v1-fixture-hospital".into(),
        receipts: ReceiptLog::open(&state.join("receipts.log")).unwrap(),
        payments: Box::new(NoChain),
        audit: rapha_node::audit::AuditLog::open(
            &state.join("audit.jsonl"),
            "rapha-v1-fixture-hospital",
            None,
        )
        .unwrap(),
        work_dir: state.join("work"),
        release_dir: state.join("released"),
    })
    .unwrap()
}

/// The demo's dev secrets the fixture node used (`RAPHA-DEV!` then a role byte).
fn dev_seed(role: u8) -> [u8; 32] {
    let mut seed = [role; 32];
    seed[..DEV_KEY_PREFIX.len()].copy_from_slice(DEV_KEY_PREFIX);
    seed
}

fn dpo() -> DpoSigningKey {
    DpoSigningKey::from_seed(&dev_seed(0xd0))
}

#[test]
fn v1_job_awaiting_approval_is_approved_with_its_v1_digest_and_moves_on() {
    let state = copy_state();
    let f = fixture();
    let mut node = v1_node(state.path());
    let job = f["jobs"]["awaiting-approval"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let want: rapha_core::Digest = f["job_digests"]["awaiting-approval"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // The node asks for the v1 digest the job was reviewed under (not a v2 one).
    assert_eq!(
        node.advance(job).unwrap(),
        Step::Blocked(Blocked::Approval { job_digest: want })
    );
    assert_eq!(
        node.review_ref(job).unwrap().unwrap().digest_version,
        JobDigestVersion::V1
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    node.approvals()
        .record(&dpo().approve(want, now, now + 3600).unwrap())
        .unwrap();
    assert_eq!(node.advance(job).unwrap(), Step::Moved(JobState::Approved));
    assert_eq!(
        node.advance(job).unwrap(),
        Step::Moved(JobState::AwaitingDeposit)
    );
    // The job approved under v1 before the upgrade moves on too.
    let approved = f["jobs"]["approved"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        node.advance(approved).unwrap(),
        Step::Moved(JobState::AwaitingDeposit)
    );
}
