//! Console benchmark (bench/console.sh; never run in CI): the DPO's approval queue page
//! (`GET /` of the console) with JOBS jobs in the job store, every one of them waiting for a
//! DPO's decision (the queue's worst case: each row is a review read from the store), served
//! by the real console and API state over a node whose steps never reach the chain.
//!
//! It prints the time of each page load measured at the client on loopback (an upper bound
//! of the server's time) as median, p95 and max. Target (issue 20): ≤ 200 ms with 1,000 jobs.
//!
//! Usage: console_bench [JOBS] [LOADS]

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a bench: a panic is a failed run

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rapha_core::demographics::{Demographics, SexBin};
use rapha_core::{CohortQuery, Digest, HmacKey, JobRequest, ResourceBounds, ResourceLimits};
use rapha_node::api::{ApiState, Tokens};
use rapha_node::audit::AuditLog;
use rapha_node::console::{self, ConsoleState};
use rapha_node::pipeline::{
    artifact, DepositStatus, NoEvidence, Node, NodeParts, PaymentTerms, Payments, SettleStatus,
};
use rapha_node::store::{JobState, JobStore};
use rapha_policy::{ApprovalStore, CohortSummary, Policy, ReleaseReview, ResourceReview};
use rapha_receipt::{NodeKey, ReceiptLog};

const PUBLISHER: &str = "bench-ai";
const TRAINER: &str = "bench-trainer";
const DPO_TOKEN: &str = "dpo-bench-0123456789abcdef0123456789abcdef";

/// The benchmark's node never reaches a chain: no job gets past review.
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
        Err("no chain in the console benchmark".into())
    }
    fn recheck_deposit(&mut self, _: &JobRequest, _: u64) -> Result<DepositStatus, String> {
        Err("no chain in the console benchmark".into())
    }
    fn settle(
        &mut self,
        _: &JobRequest,
        _: &rapha_receipt::ReceiptFile,
        _: &rapha_node::pipeline::SettlementSigner,
    ) -> Result<SettleStatus, String> {
        Err("no chain in the console benchmark".into())
    }
}

/// One transition of the store and the artifacts committed with it.
type Step<'a> = (JobState, JobState, Vec<(&'a str, &'a [u8])>);

/// Seeds `jobs` jobs waiting for approval, each with the artifacts a review reads.
fn seed(path: &Path, jobs: usize) {
    let mut store = JobStore::open(path).unwrap();
    let resources = serde_json::to_vec(&ResourceReview {
        requested: ResourceLimits::default(),
        bounds: ResourceBounds::default(),
    })
    .unwrap();
    let release = serde_json::to_vec(&ReleaseReview {
        parameters: 1_000_000,
        bits: 32_000_000,
        ..ReleaseReview::default()
    })
    .unwrap();
    for i in 0..jobs {
        let request = rapha_testkit::job::job_request(
            PUBLISHER,
            TRAINER,
            Digest::of(format!("bundle {i}").as_bytes()),
            CohortQuery {
                accession_numbers: (0..20).map(|a| format!("ACC{i:05}{a:03}")).collect(),
                limit: Some(20),
                ..CohortQuery::default()
            },
            120_000_000,
            "0x0000000000000000000000000000000000000001",
        );
        let job = request.job_id;
        store.insert(&request).unwrap();
        let cohort = serde_json::to_vec(&CohortSummary {
            commitment: Digest::of(format!("cohort {i}").as_bytes()),
            patients: 60,
            train_patients: 48,
            validation_patients: 12,
            studies: 80,
            instances: 400,
            modalities: BTreeMap::from([("CT".into(), 300), ("MR".into(), 100)]),
            exclusions: BTreeMap::from([
                ("burned-in-annotation".into(), 4),
                ("opted-out".into(), 2),
            ]),
            demographics: Some(demographics()),
        })
        .unwrap();
        let steps: [Step<'_>; 4] = [
            (JobState::Received, JobState::BundleVerified, vec![]),
            (
                JobState::BundleVerified,
                JobState::Admitted,
                vec![
                    (artifact::RESOURCES, &resources),
                    (artifact::RELEASE_SIZE, &release),
                ],
            ),
            (
                JobState::Admitted,
                JobState::CohortBuilt,
                vec![(artifact::COHORT_SUMMARY, &cohort)],
            ),
            (JobState::CohortBuilt, JobState::AwaitingApproval, vec![]),
        ];
        for (from, to, artifacts) in steps {
            store.advance(job, from, to, &artifacts, None).unwrap();
        }
    }
}

fn node(dir: &Path) -> Node {
    std::fs::create_dir_all(dir.join("trust")).unwrap();
    Node::new(NodeParts {
        store: JobStore::open(&dir.join("jobs.sqlite")).unwrap(),
        trust: rapha_bundle::TrustStore::open(&dir.join("trust")).unwrap(),
        policy: Policy::builtin().unwrap(),
        hospital: rapha_testkit::policy::test_hospital(PUBLISHER, TRAINER),
        pseudonymizer: rapha_dicom::Pseudonymizer::new(HmacKey::from_bytes([0x5a; 32])),
        dicom: rapha_dicom::DicomConfig::default(),
        optouts: rapha_dicom::exclusion::OptOuts::none(),
        labels: None,
        pacs: Box::new(|| {
            rapha_dicom::DicomWebClient::new(rapha_dicom::ClientOptions::new(
                "http://127.0.0.1:9/dicom-web",
            ))
        }),
        approvals: ApprovalStore::open(&dir.join("approvals")).unwrap(),
        dpo_keys: vec![],
        evidence: Box::new(NoEvidence),
        verifier: rapha_attest::EvidenceVerifier::development(),
        tpm_verifier: None,
        sandbox: rapha_enclave::SandboxConfig {
            runtime_root: dir.join("runc-state"),
            ..rapha_enclave::SandboxConfig::default()
        },
        min_validation_patients: 2,
        node_key: NodeKey::from_secret_bytes(&[0x3b; 32]).unwrap(),
        node_name: "console-bench".into(),
        receipts: ReceiptLog::open(&dir.join("receipts")).unwrap(),
        payments: Box::new(NoChain),
        audit: AuditLog::open(&dir.join("audit.jsonl"), "console-bench", None).unwrap(),
        work_dir: dir.join("work"),
        release_dir: dir.join("released"),
    })
    .unwrap()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let jobs: usize = args.next().map_or(1000, |s| s.parse().unwrap());
    let loads: usize = args.next().map_or(30, |s| s.parse().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = Instant::now();
    seed(&dir.join("jobs.sqlite"), jobs);
    println!("seeded {jobs} jobs awaiting approval in {:?}", t.elapsed());

    let tokens = Tokens::parse(&format!("dpo {DPO_TOKEN}\n")).unwrap();
    let api = ApiState::new(node(dir), dir.join("jobs.sqlite"), tokens);
    let config = rapha_node::config::Config::parse(rapha_node::init::DEMO_TEMPLATE)
        .unwrap()
        .console
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(console::serve(
        listener,
        None,
        ConsoleState::new(api.clone(), &config),
    ));
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = http
        .post(format!("http://{addr}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={DPO_TOKEN}"))
        .send()
        .unwrap();
    assert_eq!(login.status(), 303, "login");
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    let mut times: Vec<Duration> = Vec::with_capacity(loads);
    let mut bytes = 0;
    for i in 0..=loads {
        let t = Instant::now();
        let r = http
            .get(format!("http://{addr}/"))
            .header("cookie", &cookie)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let body = r.text().unwrap();
        let took = t.elapsed();
        assert!(
            body.contains(&format!("{jobs} job(s) waiting")),
            "the queue lists every job"
        );
        bytes = body.len();
        // The first load warms the store's page cache; it is reported apart.
        if i == 0 {
            println!("first load: {took:?} ({bytes} bytes)");
        } else {
            times.push(took);
        }
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "approval queue, {jobs} jobs awaiting approval, {loads} loads ({bytes} bytes): median {:?}, p95 {:?}, max {:?} (target ≤ 200 ms)",
        at(0.5),
        at(0.95),
        times[times.len() - 1]
    );
    drop(rt);
    drop(api);
}

/// 60 patients by sex and age decade, some bins below five (drawn as "<5").
fn demographics() -> Demographics {
    let mut d = Demographics::default();
    for i in 0..60u8 {
        let sex = match i % 7 {
            0 => SexBin::Unknown,
            1 | 3 | 5 => SexBin::Female,
            _ => SexBin::Male,
        };
        d.add(sex, (i % 13 != 0).then_some(i % 10));
    }
    d
}
