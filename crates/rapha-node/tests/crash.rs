//! The real `rapha-node run-job` process SIGKILLed right after committing each state in turn
//! (`RAPHA_NODE_CRASH_AFTER`), restarted until the job is finished: the job ends completed or
//! failed exactly once, with one receipt, the escrow paid or refunded exactly once and outputs
//! released at most once, after the settlement. A job killed while its enclave key was live
//! is failed, never re-run.

use std::os::unix::process::ExitStatusExt as _;
use std::process::Command;

use alloy::primitives::U256;
use rapha_core::{CohortQuery, Outcome};
use rapha_node::pipeline::artifact;
use rapha_node::store::{JobState, JobStore};
use rapha_policy::ApprovalStore;
use rapha_receipt::ReceiptLog;
use rapha_testkit::job::job_request;
use rapha_testkit::node_config::NodeConfig;
use rapha_testkit::services::Orthanc;

use crate::pipeline_e2e::{
    all_files, sandbox_ready, Chain, NodeFixture, COMPLETED_PATH, FEE, PUBLISHER, TRAINER,
};

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
    let fixture = NodeFixture::new(t, &orthanc, &chain, &trainer, 21);
    let (accessions, bundle_dir, manifest, dpo) = (
        &fixture.accessions,
        &fixture.bundle_dir,
        fixture.manifest,
        &fixture.dpo,
    );

    // Every state of the completed path but its last.
    let crash_states = &COMPLETED_PATH[..COMPLETED_PATH.len() - 1];
    // One node (one receipt log, which the escrow anchors) killed once per job.
    let dir = t.join("n");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("node.toml");
    let toml = NodeConfig {
        data_dir: dir.join("data"),
        state_dir: dir.join("state"),
        ..fixture.config(&chain)
    }
    .to_toml();
    std::fs::write(&config, toml).unwrap();
    for (i, crash_at) in crash_states.iter().copied().enumerate() {
        let request = job_request(
            PUBLISHER,
            TRAINER,
            manifest,
            CohortQuery {
                limit: Some(accessions.len() as u32),
                accession_numbers: accessions.clone(),
                ..CohortQuery::default()
            },
            FEE,
            &chain.company.address().to_string(),
        );
        let job = request.job_id;
        std::fs::write(
            dir.join("request.json"),
            serde_json::to_vec(&request).unwrap(),
        )
        .unwrap();

        let payout_before = chain.funds(chain.payout);
        let company_before = chain.funds(chain.company.address());
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
                    .arg(bundle_dir)
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
            if store.finished(job).unwrap() {
                break;
            }
            match state {
                JobState::AwaitingApproval => {
                    if let Some(b) = store.artifact(job, artifact::REVIEW).unwrap() {
                        let digest = serde_json::from_slice::<rapha_policy::JobDigestRef>(&b)
                            .unwrap()
                            .job_digest;
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
        assert!(
            matches!(state, JobState::Settled | JobState::Released),
            "crash at {crash_at}: job stuck in {state}"
        );
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
            assert_eq!(
                row.reason.as_deref(),
                Some("node-restarted"),
                "{:?}",
                row.reason
            );
            assert!(
                !released.exists(),
                "crash at {crash_at}: a failed job released outputs"
            );
            assert_eq!(
                chain.funds(chain.company.address()),
                company_before,
                "refund"
            );
            assert_eq!(chain.funds(chain.payout), payout_before);
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
            assert_eq!(state, JobState::Released, "crash at {crash_at}");
            let settled_at = to.iter().position(|s| *s == JobState::Settled);
            let released_at = to.iter().position(|s| *s == JobState::Released);
            assert!(settled_at < released_at, "released before settled: {to:?}");
            assert_eq!(
                chain.funds(chain.payout) - payout_before,
                U256::from(FEE * 7 / 10)
            );
            assert_eq!(
                company_before - chain.funds(chain.company.address()),
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
