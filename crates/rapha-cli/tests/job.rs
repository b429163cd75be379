//! `rapha job submit|status|fetch` through the real binary against a real node API served
//! in-process (`rapha_node::api::serve` over a `Node` with Orthanc + DICOMweb holding a
//! synthetic cohort, the escrow on anvil, the static test trainer under runc): one job goes
//! from submit to verified outputs with the CLI alone; a broad query ends refused (exit 3 with
//! the node's reason); a wrong token is exit 2 and never echoed; an output altered on the
//! node's disk is caught against the receipt (exit 4) and nothing is written; an unreachable
//! node is exit 5 with what to check.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rapha_attest::{Evidence, EvidenceVerifier, SimulatedEvidence, SIMULATED_MARKER};
use rapha_bundle::{SigningKey, TrustStore};
use rapha_core::{Digest, HmacKey, JobId};
use rapha_dicom::exclusion::{LabelTable, OptOuts};
use rapha_dicom::{ClientOptions, DicomConfig, DicomWebClient, Pseudonymizer};
use rapha_enclave::SandboxConfig;
use rapha_node::api::{self, ApiState, Tokens};
use rapha_node::audit::AuditLog;
use rapha_node::pipeline::chain::{ChainPayments, ChainSettings};
use rapha_node::pipeline::{EvidenceProvider, Node, NodeParts};
use rapha_node::store::JobStore;
use rapha_policy::{ApprovalStore, DpoSigningKey, Policy};
use rapha_receipt::{NodeKey, ReceiptLog};
use rapha_settle::test_support::{account, DevMarket};
use rapha_testkit::bundle::{sign_trainer, trainer_spec, SpecLimits};
use rapha_testkit::cohort::{generate, CohortSpec};
use rapha_testkit::policy::test_hospital;
use rapha_testkit::services::{Anvil, AnvilOptions, Orthanc};
use rapha_testkit::trainer::{compile_test_trainer, runc_as_root};
use serde_json::Value;

const PUBLISHER: &str = "acme-ai";
const TRAINER: &str = "tiny-trainer";
const PUBLISHER_TOKEN: &str = "pub-0123456789abcdef0123456789abcdef";
const DPO_TOKEN: &str = "dpo-0123456789abcdef0123456789abcdef";
const WRONG_TOKEN: &str = "wrong-tok-0123456789abcdef0123456789";

fn rapha(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rapha"))
        .args(args)
        .env_remove("RAPHA_TOKEN")
        .env_remove("RAPHA_NODE")
        .output()
        .unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}{}", stdout(o), stderr(o)))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn private_file(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_owned()
}

/// A URL on which nothing listens.
fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

// ------------------------------------------------------------------------------------------
// Without services

#[test]
fn help_documents_one_exit_code_table_and_usage_errors_exit_1() {
    for cmd in [
        &["--help"][..],
        &["job", "submit", "--help"],
        &["job", "status", "--help"],
        &["job", "fetch", "--help"],
        &["job", "deposit", "--help"],
        &["verify", "--help"],
        &["keygen", "--help"],
        &["bundle", "inspect", "--help"],
    ] {
        let out = rapha(cmd);
        assert_eq!(code(&out), 0, "{cmd:?}");
        let text = stdout(&out);
        for line in [
            "Exit codes (the same for every command):",
            "  2  the node refused the request",
            "  3  the job ended refused or failed",
            "  4  verification failed",
            "  5  the node could not be reached",
        ] {
            assert!(text.contains(line), "{cmd:?} help lacks {line:?}:\n{text}");
        }
    }
    let out = rapha(&["job", "status", "not-a-job-id", "--node", "http://x"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let out = rapha(&["job", "frobnicate"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let job = JobId::random().to_string();
    for bad in ["nan", "0", "0.01", "1e9"] {
        let out = rapha(&[
            "job",
            "status",
            &job,
            "--node",
            "http://x",
            "--watch",
            "--interval",
            bad,
        ]);
        assert_eq!(code(&out), 1, "{bad}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("from 0.1 to 3600"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn an_unreachable_node_exits_5_and_says_what_to_check() {
    let tmp = tempfile::tempdir().unwrap();
    let token = private_file(&tmp.path().join("token"), PUBLISHER_TOKEN);
    let url = closed_port_url();
    let job = JobId::random().to_string();
    for args in [
        vec!["job", "status", &job],
        vec!["job", "status", &job, "--watch"],
        vec!["job", "fetch", &job, "--out", s(&tmp.path().join("out"))],
    ] {
        let mut args = args.clone();
        args.extend(["--node", &url, "--token-file", s(&token)]);
        let out = rapha(&args);
        assert_eq!(code(&out), 5, "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("cannot reach the node at {url}")),
            "{err}"
        );
        assert!(err.contains("`rapha-node serve` is running"), "{err}");
        assert!(!err.contains(PUBLISHER_TOKEN) && !stdout(&out).contains(PUBLISHER_TOKEN));
    }
    assert!(!tmp.path().join("out").exists(), "fetch left a directory");
    // With --json the failure is a JSON document too, with its exit code.
    let out = rapha(&[
        "job",
        "status",
        &job,
        "--json",
        "--node",
        &url,
        "--token-file",
        s(&token),
    ]);
    assert_eq!(code(&out), 5);
    let v = json(&out);
    assert_eq!(
        (
            v["ok"].as_bool(),
            v["error"].as_str(),
            v["exit_code"].as_u64()
        ),
        (Some(false), Some("node-unreachable"), Some(5)),
        "{v}"
    );
}

#[test]
fn a_hostile_node_cannot_make_the_cli_read_an_endless_answer() {
    // An attacker's endpoint (not a node): answers every request with a 17 MiB JSON body.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut req = [0u8; 4096];
            let _ = stream.read(&mut req);
            let body = vec![b' '; 17 << 20];
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let token = private_file(&tmp.path().join("token"), PUBLISHER_TOKEN);
    let job = JobId::random().to_string();
    let out = rapha(&[
        "job",
        "status",
        &job,
        "--node",
        &url,
        "--token-file",
        s(&token),
    ]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("larger than 16777216 bytes"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_token_comes_from_a_private_file_or_rapha_token_never_from_a_loose_file() {
    let tmp = tempfile::tempdir().unwrap();
    let url = closed_port_url();
    let job = JobId::random().to_string();
    let loose = tmp.path().join("loose");
    std::fs::write(&loose, PUBLISHER_TOKEN).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Refused before any request is made (an attempted request would be exit 5 here).
    let out = rapha(&[
        "job",
        "status",
        &job,
        "--node",
        &url,
        "--token-file",
        s(&loose),
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    assert!(!stderr(&out).contains(PUBLISHER_TOKEN));
    let out = rapha(&["job", "status", &job, "--node", &url]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("RAPHA_TOKEN"), "{}", stderr(&out));
    // From the environment it is accepted (and the request then fails to connect).
    let out = Command::new(env!("CARGO_BIN_EXE_rapha"))
        .args(["job", "status", &job, "--node", &url])
        .env("RAPHA_TOKEN", PUBLISHER_TOKEN)
        .output()
        .unwrap();
    assert_eq!(code(&out), 5, "{}", stderr(&out));
}

#[test]
fn an_empty_or_malformed_query_is_refused_before_anything_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let token = private_file(&tmp.path().join("token"), PUBLISHER_TOKEN);
    let url = closed_port_url();
    let base = [
        "job",
        "submit",
        "no-such-bundle",
        "--node",
        &url,
        "--token-file",
        s(&token),
        "--depositor",
        "0x000000000000000000000000000000000000dEaD",
    ];
    let mut args = base.to_vec();
    args.extend(["--fee", "120.00"]);
    let out = rapha(&args);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("empty query"), "{}", stderr(&out));
    for (extra, want) in [
        (
            &["--fee", "120", "--study-date", "2024-01"][..],
            "not YYYYMMDD-YYYYMMDD",
        ),
        (
            &["--fee", "120", "--study-date", "20240301-20240101"],
            "ends before it starts",
        ),
        (
            &["--fee", "120", "--study-date", "20241301-20241231"],
            "not YYYYMMDD-YYYYMMDD",
        ),
        (&["--fee", "120", "--limit", "0"], "0 is not in 1.."),
        (&["--modality", "CT", "--fee", "1.0000001"], "6 decimals"),
    ] {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let out = rapha(&args);
        assert_eq!(code(&out), 1, "{extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{extra:?}: {}", stderr(&out));
    }
}

#[test]
fn a_request_file_in_the_way_is_refused_before_anything_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let token = private_file(&tmp.path().join("token"), PUBLISHER_TOKEN);
    let trainer = tmp.path().join("trainer-bin");
    std::fs::write(&trainer, b"#!/bin/sh\n").unwrap();
    let bundle = signed_bundle(
        tmp.path(),
        &trainer,
        &SigningKey::ed25519_from_seed(&[7; 32]),
    );
    let request = tmp.path().join("request.json");
    std::fs::write(&request, b"an earlier job's request").unwrap();
    // Nothing listens at the URL: had the CLI sent anything, this would be exit 5.
    let out = rapha(&[
        "job",
        "submit",
        s(&bundle),
        "--modality",
        "CT",
        "--fee",
        "120.00",
        "--depositor",
        "0x000000000000000000000000000000000000dEaD",
        "--request-out",
        s(&request),
        "--node",
        &closed_port_url(),
        "--token-file",
        s(&token),
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("choose another --request-out"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(&request).unwrap(),
        b"an earlier job's request"
    );
}

// ------------------------------------------------------------------------------------------
// Against the real node

fn required() -> bool {
    rapha_testkit::services::services_required()
}

/// The enclave suite's static test trainer.
fn trainer_binary(dir: &Path) -> Option<PathBuf> {
    if !runc_as_root() {
        assert!(!required(), "runc (as root) is required but not available");
        eprintln!("SKIPPED: runc not installed or not root; CLI job test not run");
        return None;
    }
    let out = dir.join("trainer");
    if !compile_test_trainer(&out) {
        assert!(
            !required(),
            "gcc -static is required to build the test trainer"
        );
        eprintln!("SKIPPED: gcc -static unavailable; CLI job test not run");
        return None;
    }
    Some(out)
}

/// Simulated attestation (a development-mode verifier accepts it): this suite is about the
/// CLI, the TPM path is the node's own e2e test.
struct Simulated;

impl EvidenceProvider for Simulated {
    fn evidence(&mut self, binding: &Digest) -> Result<Evidence, String> {
        let mut ev = Evidence::new(*binding);
        ev.simulated = Some(SimulatedEvidence {
            marker: SIMULATED_MARKER.to_owned(),
            note: "rapha-cli tests".to_owned(),
        });
        Ok(ev)
    }
}

fn signed_bundle(tmp: &Path, trainer: &Path, key: &SigningKey) -> PathBuf {
    let spec = trainer_spec(PUBLISHER, TRAINER, &SpecLimits::SMALL).unwrap();
    sign_trainer(tmp, "honest", trainer, &["honest"], &spec, key)
        .unwrap()
        .0
}

/// Everything the end-to-end test runs against. Fields drop in order: the server's runtime
/// first, then the node, then the services.
struct World {
    _rt: tokio::runtime::Runtime,
    _state: ApiState,
    http: reqwest::blocking::Client,
    url: String,
    rpc: String,
    escrow: String,
    hospital: String,
    node_address: String,
    dpo: DpoSigningKey,
    token: PathBuf,
    wrong_token: PathBuf,
    wallet: PathBuf,
    accessions: PathBuf,
    studies: usize,
    bundle: PathBuf,
    release_dir: PathBuf,
    _orthanc: Orthanc,
    _anvil: Anvil,
    tmp: tempfile::TempDir,
}

fn world() -> Option<World> {
    let tmp = tempfile::tempdir().unwrap();
    let trainer = trainer_binary(tmp.path())?;
    let orthanc = rapha_testkit::require!(Orthanc::start())?;
    let anvil = rapha_testkit::require!(Anvil::start(AnvilOptions::default()))?;

    // A small synthetic cohort in Orthanc.
    let cohort = tmp.path().join("cohort");
    let cohort_manifest = generate(&CohortSpec {
        studies: 20,
        seed: 21,
        out: cohort.clone(),
        rle_fraction: 0.2,
        label_shuffle: false,
    })
    .unwrap();
    let (ok, rejected) = orthanc.upload_dir(&cohort.join("dicom")).unwrap();
    assert!(
        ok > 0 && rejected == 0,
        "Orthanc: {ok} accepted, {rejected} rejected"
    );
    let accessions = cohort_manifest.labelled_accessions();
    let accessions_file = tmp.path().join("accessions.txt");
    std::fs::write(&accessions_file, accessions.join("\n")).unwrap();

    // The market on anvil, each role a dev account (rapha_settle::test_support::account).
    let rpc = anvil.rpc_url();
    let keys: Vec<String> = anvil.dev_accounts().into_iter().map(|(_, k)| k).collect();
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let market = setup.block_on(DevMarket::deploy(&rpc, keys)).unwrap();
    drop(setup);
    let key = |i: usize| market.key(i);
    let node_secret = market.node_secret();
    let node_key = NodeKey::from_secret_bytes(&node_secret).unwrap();
    let node_address = node_key.address().to_string();

    let publisher_key = SigningKey::ed25519_from_seed(&[7; 32]);
    let trust = tmp.path().join("trust");
    TrustStore::add(
        &trust,
        PUBLISHER,
        &publisher_key.public_key(),
        &[TRAINER.into()],
        None,
    )
    .unwrap();
    let bundle = signed_bundle(tmp.path(), &trainer, &publisher_key);

    let dpo = DpoSigningKey::from_seed(&[9; 32]);
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let payments = ChainPayments::connect(
        &ChainSettings {
            rpc_url: rpc.clone(),
            escrow: market.escrow,
            hospital: key(account::HOSPITAL).address(),
            payout: key(account::PAYOUT).address(),
            // The AI company pays from its account.
            depositors: std::collections::BTreeMap::from([(
                PUBLISHER.to_owned(),
                vec![key(account::COMPANY).address()],
            )]),
            confirmations: 1,
            settle_margin_secs: 600,
            poll_interval: Duration::from_millis(250),
        },
        &key(account::SETTLER),
        &state.join("ledger.sqlite"),
    )
    .unwrap();
    let pacs = orthanc.dicomweb_url();
    let release_dir = state.join("released");
    // A deliberate duplicate (issue 23): the demo node (crates/rapha-demo/src/node.rs) fills the
    // same development parts (simulated attestation, the development verifier, runc state under
    // the node's state). The one builder both could share would sit in rapha-node, which the
    // production binary links (I8), or in rapha-demo, which these tests must not need.
    let mut node = Node::new(NodeParts {
        store: JobStore::open(&state.join("jobs.sqlite")).unwrap(),
        trust: TrustStore::open(&trust).unwrap(),
        policy: Policy::builtin().unwrap(),
        hospital: test_hospital(PUBLISHER, TRAINER),
        pseudonymizer: Pseudonymizer::new(HmacKey::from_bytes([0x5a; 32])),
        dicom: DicomConfig::default(),
        optouts: OptOuts::load(&cohort.join("optouts.csv")).unwrap(),
        labels: Some(LabelTable::load(&cohort.join("labels.csv")).unwrap()),
        pacs: Box::new(move || DicomWebClient::new(ClientOptions::new(pacs.clone()))),
        approvals: ApprovalStore::open(&state.join("approvals")).unwrap(),
        dpo_keys: vec![dpo.public()],
        evidence: Box::new(Simulated),
        verifier: EvidenceVerifier::development(),
        tpm_verifier: None,
        sandbox: SandboxConfig {
            runtime_root: state.join("runc-state"),
            ..SandboxConfig::default()
        },
        min_validation_patients: 2,
        node_key,
        node_name: "cli-test-hospital".into(),
        receipts: ReceiptLog::open(&state.join("receipts")).unwrap(),
        payments: Box::new(payments),
        audit: AuditLog::open(&state.join("audit.jsonl"), "cli-test-hospital", None).unwrap(),
        work_dir: state.join("work"),
        release_dir: release_dir.clone(),
    })
    .unwrap();
    // Runs end as the trainer exits (the node's quantum is tested in rapha-node).
    node.set_run_quantum(std::time::Duration::ZERO);
    node.set_cohort_quantum(std::time::Duration::ZERO);
    let tokens = Tokens::parse(&format!(
        "publisher {PUBLISHER_TOKEN} {PUBLISHER}\ndpo {DPO_TOKEN}\n"
    ))
    .unwrap();
    let api_state = ApiState::new(node, state.join("jobs.sqlite"), tokens);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(api::serve(listener, api_state.clone()));

    let token = private_file(&tmp.path().join("publisher.token"), PUBLISHER_TOKEN);
    let wrong_token = private_file(&tmp.path().join("wrong.token"), WRONG_TOKEN);
    let wallet = private_file(
        &tmp.path().join("wallet.key"),
        &market.keys[account::COMPANY],
    );
    Some(World {
        _rt: rt,
        _state: api_state,
        http: reqwest::blocking::Client::new(),
        url,
        rpc,
        escrow: market.escrow.to_string(),
        hospital: key(account::HOSPITAL).address().to_string(),
        node_address,
        dpo,
        token,
        wrong_token,
        wallet,
        accessions: accessions_file,
        studies: accessions.len(),
        bundle,
        release_dir,
        _orthanc: orthanc,
        _anvil: anvil,
        tmp,
    })
}

impl World {
    /// `rapha job <cmd> <args> --node URL --token-file <publisher token>`.
    fn job(&self, cmd: &str, args: &[&str]) -> Output {
        let mut all = vec!["job", cmd];
        all.extend_from_slice(args);
        all.extend(["--node", &self.url, "--token-file", s(&self.token)]);
        rapha(&all)
    }

    fn submit(&self, query: &[&str]) -> String {
        let request = self
            .tmp
            .path()
            .join(format!("request-{}.json", JobId::random()));
        let mut args = vec![
            s(&self.bundle),
            "--fee",
            "120.00",
            "--validation-percent",
            "50",
            "--key",
            s(&self.wallet),
            "--request-out",
            s(&request),
            "--json",
        ];
        args.extend_from_slice(query);
        let out = self.job("submit", &args);
        assert_eq!(code(&out), 0, "submit: {}", stderr(&out));
        let v = json(&out);
        let id = v["job_id"].as_str().unwrap().to_owned();
        // The request it sent is kept, and its digest printed, for `rapha job deposit`.
        let kept: rapha_core::JobRequest =
            serde_json::from_slice(&std::fs::read(&request).unwrap()).unwrap();
        assert_eq!(kept.job_id.to_string(), id);
        assert_eq!(v["request_digest"], kept.digest().to_string());
        assert_eq!(v["request_path"], s(&request));
        id
    }

    fn state(&self, job: &str) -> Value {
        let out = self.job("status", &[job, "--json"]);
        assert_eq!(code(&out), 0, "status: {}", stderr(&out));
        json(&out)
    }

    fn wait_for(&self, job: &str, state: &str) {
        for _ in 0..300 {
            if self.state(job)["state"] == state {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("job {job} never reached {state}: {}", self.state(job));
    }

    /// The DPO approves the job's cohort over the API (pending list → signed approval).
    /// Waits for the review to be requested (the cohort built) first.
    fn approve(&self, job: &str) {
        let mut pending = Value::Null;
        let mut review = None;
        for _ in 0..300 {
            pending = self
                .http
                .get(format!("{}/v1/approvals/pending", self.url))
                .bearer_auth(DPO_TOKEN)
                .send()
                .unwrap()
                .json()
                .unwrap();
            review = pending["pending"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["job_id"] == job)
                .cloned();
            if review.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let review = review.unwrap_or_else(|| panic!("job {job} not pending: {pending}"));
        let digest: Digest = review["job_digest"].as_str().unwrap().parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let approval = self.dpo.approve(digest, now, now + 3600).unwrap();
        let resp = self
            .http
            .post(format!("{}/v1/jobs/{job}/approve", self.url))
            .bearer_auth(DPO_TOKEN)
            .json(&approval)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202, "{}", resp.text().unwrap());
    }
}

#[test]
fn a_job_goes_from_submit_to_verified_outputs_through_the_cli_alone() {
    let Some(w) = world() else { return };
    let t0 = std::time::Instant::now();

    // A wrong token: the node refuses (401, exit 2); the token is never echoed.
    let unknown = JobId::random().to_string();
    for args in [
        vec!["job", "status", &unknown],
        vec![
            "job",
            "submit",
            s(&w.bundle),
            "--modality",
            "CT",
            "--fee",
            "120.00",
            "--key",
            s(&w.wallet),
        ],
    ] {
        let mut args = args.clone();
        args.extend(["--node", &w.url, "--token-file", s(&w.wrong_token)]);
        let out = rapha(&args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("HTTP 401"), "{}", stderr(&out));
        for text in [stdout(&out), stderr(&out)] {
            assert!(!text.contains(WRONG_TOKEN) && !text.contains(PUBLISHER_TOKEN));
        }
    }
    // An unknown job with the right token: 404, exit 2.
    let out = w.job("status", &[&unknown]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("unknown-job"), "{}", stderr(&out));
    // A valid token of a role that may not upload (the DPO's): the node stops the upload
    // before reading it; the CLI reports the node's 403, not a network failure.
    let dpo_token = private_file(&w.tmp.path().join("dpo.token"), DPO_TOKEN);
    let out = rapha(&[
        "job",
        "submit",
        s(&w.bundle),
        "--modality",
        "CT",
        "--fee",
        "120.00",
        "--key",
        s(&w.wallet),
        "--node",
        &w.url,
        "--token-file",
        s(&dpo_token),
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("HTTP 403, forbidden"),
        "{}",
        stderr(&out)
    );

    // 1. A broad query (a modality only): the node refuses it before the PACS sees a
    //    request; `status --watch` ends with exit 3 and the reason; `fetch` saves the
    //    verified receipt of the refusal and exits 3 too.
    let refused = w.submit(&["--modality", "CT"]);
    let out = w.job(
        "status",
        &[
            &refused,
            "--watch",
            "--interval",
            "0.2",
            "--timeout",
            "120",
            "--json",
        ],
    );
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(
        (
            v["state"].as_str(),
            v["outcome"].as_str(),
            v["terminal"].as_bool()
        ),
        (Some("settled"), Some("refused"), Some(true)),
        "{v}"
    );
    let reason = v["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("query"), "{reason}");
    assert!(
        stderr(&out).contains(&format!("ended refused: {reason}")),
        "{}",
        stderr(&out)
    );
    let refused_out = w.tmp.path().join("refused-out");
    let out = w.job("fetch", &[&refused, "--out", s(&refused_out)]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("receipt  verified"),
        "{}",
        stdout(&out)
    );
    let names: Vec<_> = std::fs::read_dir(&refused_out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["receipt.json"]);

    // 2. The honest job, with the CLI alone on the AI company's side.
    let limit = w.studies.to_string();
    let job = w.submit(&["--accessions-file", s(&w.accessions), "--limit", &limit]);
    // The publisher sees its job `admitted` until the DPO decides; the DPO's list shows it.
    w.wait_for(&job, "admitted");
    w.approve(&job);
    w.wait_for(&job, "awaiting-deposit");
    let out = rapha(&[
        "job",
        "deposit",
        &job,
        "--fee",
        "120.00",
        "--escrow",
        &w.escrow,
        "--rpc",
        &w.rpc,
        "--key",
        s(&w.wallet),
        "--hospital",
        &w.hospital,
        "--test-token",
        "--json",
    ]);
    assert_eq!(code(&out), 0, "deposit: {}", stderr(&out));
    let v = json(&out);
    assert_eq!(
        (v["job_id"].as_str(), v["fee_base_units"].as_str()),
        (Some(job.as_str()), Some("120000000"))
    );
    // No further call: the node sees the deposit on its own (`serve` re-drives unfinished
    // jobs), and `status --watch` follows the job to its end.
    let out = w.job(
        "status",
        &[
            &job,
            "--watch",
            "--interval",
            "0.3",
            "--timeout",
            "300",
            "--json",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(
        (v["state"].as_str(), v["outcome"].as_str()),
        (Some("released"), Some("completed")),
        "{v}"
    );
    assert_eq!(
        v["progress"]["step"],
        v["progress"]["of"].as_u64().unwrap() - 1
    );
    // Not a TTY: plain lines, one per state seen, ending with the released one.
    let err = stderr(&out);
    assert!(!err.contains('\r'), "{err}");
    assert!(
        err.lines().last().unwrap().contains("released (step"),
        "{err}"
    );

    // On a terminal (a pty from util-linux `script`), --watch draws one self-erasing line.
    let cmd = format!(
        "{} job status {job} --watch --node {} --token-file {}",
        env!("CARGO_BIN_EXE_rapha"),
        w.url,
        s(&w.token)
    );
    let tty = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("RAPHA_TOKEN")
        .output()
        .unwrap();
    assert_eq!(code(&tty), 0, "{}", stderr(&tty));
    let shown = stdout(&tty);
    assert!(
        shown.contains("\r\x1b[2K[########################] 17/17 released"),
        "{shown:?}"
    );

    // 3. Fetch: the receipt verifies against the pinned node address, every output matches
    //    the digest the receipt commits to, and `rapha verify` accepts the receipt.
    let out_dir = w.tmp.path().join("out");
    let out = w.job(
        "fetch",
        &[
            &job,
            "--out",
            s(&out_dir),
            "--node-address",
            &w.node_address,
            "--json",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["verified"], true);
    assert_eq!(v["signer_pinned"], true);
    assert_eq!(v["outcome"], "completed");
    let receipt = std::fs::read(out_dir.join("receipt.json")).unwrap();
    let verified = rapha_receipt::verify(
        &receipt,
        &rapha_receipt::VerifyOptions {
            node_address: Some(w.node_address.parse().unwrap()),
            sth: None,
            consistency_from: None,
        },
    )
    .unwrap();
    let committed = verified.body.outputs.unwrap().files;
    assert_eq!(committed.len(), 2);
    for f in &committed {
        let bytes = std::fs::read(out_dir.join(&f.name)).unwrap();
        assert_eq!(Digest::of(&bytes), f.sha256, "{}", f.name);
        assert_eq!(bytes.len() as u64, f.bytes);
        let listed = v["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == f.name.as_str())
            .unwrap();
        assert_eq!(listed["sha256"], f.sha256.to_string());
        assert_eq!(listed["written"], true);
    }
    let mut names: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["metrics.json", "model.safetensors", "receipt.json"]);
    let out = rapha(&[
        "verify",
        s(&out_dir.join("receipt.json")),
        "--node-address",
        &w.node_address,
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("outcome completed"),
        "{}",
        stdout(&out)
    );

    // A file in the node's release directory that the receipt does not name: refused, exit 4,
    // nothing written.
    let extra = w.release_dir.join(&job).join("extra.bin");
    std::fs::write(&extra, b"not receipted").unwrap();
    let extra_out = w.tmp.path().join("extra-out");
    let out = w.job("fetch", &[&job, "--out", s(&extra_out), "--json"]);
    std::fs::remove_file(&extra).unwrap();
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert_eq!(json(&out)["error"], "output-set-mismatch");
    assert!(stderr(&out).contains("extra.bin"), "{}", stderr(&out));
    assert!(!extra_out.exists());

    // Fetching again is idempotent: the same files are left as they are.
    let out = w.job("fetch", &[&job, "--out", s(&out_dir), "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(json(&out)["files"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["written"] == false));

    // A different file in the way is never overwritten: exit 1, nothing else written.
    let busy = w.tmp.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("model.safetensors"), b"my own model").unwrap();
    let out = w.job("fetch", &[&job, "--out", s(&busy)]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exists and is not the file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(busy.join("model.safetensors")).unwrap(),
        b"my own model"
    );
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);

    // 4. An output altered on the node's disk after release (same size): fetch catches it
    //    against the receipt, exit 4, and leaves nothing behind.
    let released = w.release_dir.join(&job).join("model.safetensors");
    let honest = std::fs::read(&released).unwrap();
    let mut evil = honest.clone();
    let last = evil.len() - 1;
    evil[last] ^= 0x01;
    std::fs::write(&released, &evil).unwrap();
    let tampered_out = w.tmp.path().join("tampered-out");
    let out = w.job("fetch", &[&job, "--out", s(&tampered_out), "--json"]);
    std::fs::write(&released, &honest).unwrap();
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["error"], "output-digest-mismatch", "{v}");
    assert!(
        stderr(&out).contains("output model.safetensors does not match the receipt"),
        "{}",
        stderr(&out)
    );
    assert!(
        !tampered_out.exists(),
        "a failed fetch left {tampered_out:?}"
    );
    // A node that serves an endless file: the CLI reads one byte past the receipt's size and
    // stops (exit 4), so it cannot fill the disk.
    let mut longer = honest.clone();
    longer.resize(honest.len() + (8 << 20), 0x41);
    std::fs::write(&released, &longer).unwrap();
    let out = w.job("fetch", &[&job, "--out", s(&tampered_out)]);
    std::fs::write(&released, &honest).unwrap();
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("({} bytes), the receipt", honest.len() + 1)),
        "{}",
        stderr(&out)
    );
    assert!(!tampered_out.exists());

    // 5. A receipt edited on disk after the fetch: `rapha verify` refuses it.
    let mut edited: Value = serde_json::from_slice(&receipt).unwrap();
    edited["body"]["payment"]["payout"] = "0x000000000000000000000000000000000000dEaD".into();
    let edited_path = w.tmp.path().join("edited-receipt.json");
    std::fs::write(&edited_path, serde_json::to_vec(&edited).unwrap()).unwrap();
    let out = rapha(&["verify", s(&edited_path), "--json"]);
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert_eq!(json(&out)["class"], "malformed");

    eprintln!("CLI end-to-end test took {:?}", t0.elapsed());
}
