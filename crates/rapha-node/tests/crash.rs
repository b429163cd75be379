//! The real `rapha-node run-job` process SIGKILLed right after committing each state in turn
//! (`RAPHA_NODE_CRASH_AFTER`), restarted until the job settles: the job ends completed or
//! failed exactly once, with one receipt, outputs released at most once and the escrow paid
//! or refunded exactly once. A job killed while its enclave key was live is failed, never
//! re-run.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::Command;

use alloy::primitives::U256;
use rapha_bundle::{SigningKey, TrustStore};
use rapha_core::{CohortQuery, Digest, JobId, JobRequest, Outcome, Usdc};
use rapha_node::pipeline::artifact;
use rapha_node::store::{JobState, JobStore};
use rapha_policy::{ApprovalStore, DpoSigningKey};
use rapha_receipt::ReceiptLog;
use rapha_testkit::cohort::{generate, CohortSpec};
use rapha_testkit::services::Orthanc;

use crate::pipeline_e2e::{all_files, bundle, sandbox_ready, Chain, FEE, PUBLISHER, TRAINER};

fn secret_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn q(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

#[test]
fn sigkill_at_every_state_ends_completed_or_failed_exactly_once() {
    let Some(trainer) = sandbox_ready() else {
        return;
    };
    let Some(orthanc) = rapha_testkit::require!(Orthanc::start()) else {
        return;
    };
    let Some(chain) = Chain::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cohort = t.join("cohort");
    let cohort_manifest = generate(&CohortSpec {
        studies: 20,
        seed: 21,
        out: cohort.clone(),
        rle_fraction: 0.0,
        label_shuffle: false,
    })
    .unwrap();
    let (ok, rejected) = orthanc.upload_dir(&cohort.join("dicom")).unwrap();
    assert!(ok > 0 && rejected == 0);
    let accessions = cohort_manifest.labelled_accessions();
    let publisher = SigningKey::ed25519_from_seed(&[3; 32]);
    TrustStore::add(
        &t.join("trust"),
        PUBLISHER,
        &publisher.public_key(),
        &[TRAINER.into()],
        None,
    )
    .unwrap();
    let (bundle_dir, manifest) = bundle(t, &trainer, "honest", "honest", &publisher);
    let dpo = DpoSigningKey::from_seed(&[4; 32]);
    secret_file(&t.join("hmac.key"), &[0x42; 32]);
    secret_file(
        &t.join("node.key"),
        hex::encode(chain.node_secret).as_bytes(),
    );
    secret_file(&t.join("settler.key"), chain.keys[5].as_bytes());
    let runc = String::from_utf8(Command::new("which").arg("runc").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned();
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policy/rapha.rego");

    let crash_states = [
        JobState::Received,
        JobState::BundleVerified,
        JobState::Admitted,
        JobState::CohortBuilt,
        JobState::AwaitingApproval,
        JobState::Approved,
        JobState::AwaitingDeposit,
        JobState::DepositConfirmed,
        JobState::Attested,
        JobState::FinalGatePassed,
        JobState::Running,
        JobState::OutputsGuarded,
        JobState::Receipted,
        JobState::Released,
    ];
    // One node (one receipt log, which the escrow anchors) killed once per job.
    let dir = t.join("n");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("node.toml");
    {
        std::fs::write(
            &config,
            format!(
                r#"mode = "demo"

[[dicomweb.endpoints]]
url = "{url}"

[keys]
hmac_key_file = {hmac}
node_key_file = {node}
dpo_public_keys = ["{dpo}"]

[cohort]
opt_out_file = {optouts}
labels_file = {labels}

[policy]
path = {policy}
modalities = ["CT", "MR", "CR", "DX", "US", "SC"]
min_fee_usdc = "1.00"
min_patients = 5
min_validation_patients = 2

[policy.outputs]
kinds = ["safetensors", "metrics-json"]
max_file_bytes = 1048576
max_total_bytes = 2097152

[policy.budget]
max_jobs = 100
window_hours = 24

[trust]
store = {trust}

[attestation]

[trainer]
runtime = "{runc}"

[chain]
rpc_url = "{rpc}"
chain_id = 137
usdc_address = "{usdc}"
escrow_address = "{escrow}"
confirmations = 1
test_token = true

[paths]
data_dir = {data}
state_dir = {state}
"#,
                url = orthanc.dicomweb_url(),
                hmac = q(&t.join("hmac.key")),
                node = q(&t.join("node.key")),
                dpo = dpo.public().to_hex(),
                optouts = q(&cohort.join("optouts.csv")),
                labels = q(&cohort.join("labels.csv")),
                policy = q(&policy),
                trust = q(&t.join("trust")),
                rpc = chain.url,
                usdc = chain.usdc,
                escrow = chain.escrow,
                data = q(&dir.join("data")),
                state = q(&dir.join("state")),
            ),
        )
        .unwrap();
    }
    for (i, crash_at) in crash_states.into_iter().enumerate() {
        let request = JobRequest {
            job_id: JobId::random(),
            publisher: PUBLISHER.into(),
            trainer: TRAINER.into(),
            bundle_manifest: manifest,
            query: CohortQuery {
                limit: Some(accessions.len() as u32),
                accession_numbers: accessions.clone(),
                ..CohortQuery::default()
            },
            requested_fields: vec![],
            validation_percent: 50,
            fee: Usdc::from_base_units(FEE),
            chain_id: 137,
            depositor: chain.company.address().to_string(),
        };
        let job = request.job_id;
        std::fs::write(
            dir.join("request.json"),
            serde_json::to_vec(&request).unwrap(),
        )
        .unwrap();

        let payout_before = chain.balance(chain.payout);
        let company_before = chain.balance(chain.company.address());
        let mut crashes = 0;
        let mut deposited = false;
        let mut state = JobState::Received;
        for round in 0..60 {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_rapha-node"));
            cmd.arg("run-job")
                .arg("--config")
                .arg(&config)
                .args(["--hospital", &chain.hospital.to_string()])
                .args(["--payout", &chain.payout.to_string()])
                .arg("--settler-key-file")
                .arg(t.join("settler.key"))
                .env("RAPHA_NODE_CRASH_AFTER", crash_at.as_str());
            if round == 0 {
                cmd.arg("--bundle")
                    .arg(&bundle_dir)
                    .arg("--request")
                    .arg(dir.join("request.json"));
            }
            let out = cmd.output().unwrap();
            if out.status.signal() == Some(9) {
                crashes += 1;
            } else {
                assert!(
                    out.status.success(),
                    "run-job failed (crash at {crash_at}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let store = JobStore::open(&dir.join("state/jobs.sqlite")).unwrap();
            state = store.get(job).unwrap().state;
            if round > 50 {
                eprintln!(
                    "round {round} at {state}: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            match state {
                JobState::Settled => break,
                JobState::AwaitingApproval => {
                    if let Some(b) = store.artifact(job, artifact::REVIEW).unwrap() {
                        let digest: Digest = serde_json::from_slice(&b).unwrap();
                        let approvals = ApprovalStore::open(&dir.join("state/approvals")).unwrap();
                        if approvals.get(&digest).unwrap().is_none() {
                            let now = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .unwrap()
                                .as_secs();
                            approvals
                                .record(&dpo.approve(digest, now, now + 3600).unwrap())
                                .unwrap();
                        }
                    }
                }
                JobState::AwaitingDeposit if !deposited => {
                    chain.deposit(&job);
                    deposited = true;
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(500)),
            }
        }
        assert_eq!(state, JobState::Settled, "crash at {crash_at}: job stuck");
        assert_eq!(
            crashes, 1,
            "crash at {crash_at}: the fault point fired {crashes} times"
        );

        let store = JobStore::open(&dir.join("state/jobs.sqlite")).unwrap();
        let row = store.get(job).unwrap();
        let to: Vec<JobState> = store
            .transitions(job)
            .unwrap()
            .iter()
            .map(|t| t.to)
            .collect();
        let count = |s: JobState| to.iter().filter(|x| **x == s).count();
        assert_eq!(count(JobState::Receipted), 1, "crash at {crash_at}: {to:?}");
        assert_eq!(count(JobState::Settled), 1, "crash at {crash_at}: {to:?}");
        assert!(count(JobState::Released) <= 1);
        assert_eq!(
            count(JobState::Running),
            usize::from(to.contains(&JobState::Running))
        );
        let log = ReceiptLog::open(&dir.join("state/receipts")).unwrap();
        assert_eq!(
            log.size(),
            i as u64 + 1,
            "crash at {crash_at}: receipts in the log"
        );
        // The submission by the admin is audited exactly once, however often the node died.
        let events = rapha_node::audit::AuditLog::read_all(&dir.join("state/audit.jsonl")).unwrap();
        let admin = events
            .iter()
            .filter(|e| e.event_id == "110100" && e.objects.iter().any(|o| o.id == job.to_string()))
            .count();
        assert_eq!(admin, 1, "crash at {crash_at}: admin submission events");
        let released = dir.join("data/released").join(job.to_string());
        let key_lost = matches!(
            crash_at,
            JobState::Attested | JobState::FinalGatePassed | JobState::Running
        );
        if key_lost {
            assert_eq!(row.outcome, Some(Outcome::Failed), "crash at {crash_at}");
            assert!(
                row.reason.as_deref().unwrap_or("").contains("not re-run"),
                "{:?}",
                row.reason
            );
            assert!(
                !released.exists(),
                "crash at {crash_at}: a failed job released outputs"
            );
            assert_eq!(
                chain.balance(chain.company.address()),
                company_before,
                "refund"
            );
            assert_eq!(chain.balance(chain.payout), payout_before);
        } else {
            assert_eq!(
                row.outcome,
                Some(Outcome::Completed),
                "crash at {crash_at}: {:?}",
                row.reason
            );
            let mut names: Vec<String> = all_files(&released)
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, ["metrics.json", "model.safetensors", "receipt.json"]);
            assert_eq!(
                chain.balance(chain.payout) - payout_before,
                U256::from(FEE * 7 / 10)
            );
            assert_eq!(
                company_before - chain.balance(chain.company.address()),
                U256::from(FEE)
            );
        }
        eprintln!(
            "crash after {crash_at}: {:?}, {} transitions",
            row.outcome,
            to.len()
        );
    }
}
