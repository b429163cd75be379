//! The whole job path through `rapha_node::pipeline::Node` against the real components: a
//! synthetic cohort in Orthanc + DICOMweb, a signed bundle trusted in a temp trust store, the
//! builtin Rego gates, a DPO approval, a deposit in the escrow on anvil (mock 6-decimal USDC),
//! a TPM quote from swtpm verified against its EK CA, the static test trainer under runc, the
//! output guard, the receipt log, the release directory and the on-chain settlement.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use alloy::primitives::{Address, U256};
use rapha_attest::tpm::{
    connect, enroll_ak, record_pcr_policy, TpmAttester, TpmVerifier, VendorRoots,
};
use rapha_attest::EvidenceVerifier;
use rapha_bundle::{SigningKey, TrustStore};
use rapha_core::{CohortQuery, Digest, HmacKey, JobId, JobRequest, Outcome, Usdc};
use rapha_dicom::exclusion::{LabelTable, OptOuts};
use rapha_dicom::{ClientOptions, DicomConfig, DicomWebClient, Pseudonymizer};
use rapha_enclave::SandboxConfig;
use rapha_node::audit::{AuditLog, SyslogTarget};
use rapha_node::pipeline::chain::{ChainPayments, ChainSettings};
use rapha_node::pipeline::{Blocked, EvidenceProvider, Node, NodeParts, Step, TpmEvidence};
use rapha_node::store::{JobState, JobStore};
use rapha_policy::{ApprovalStore, DpoSigningKey, HospitalPolicy, Policy};
use rapha_receipt::{NodeKey, ReceiptLog};
use rapha_settle::test_support::{account, DevMarket};
use rapha_settle::{wallet_provider, Escrow, WalletKey};
use rapha_testkit::bundle::{sign_trainer, trainer_spec, SpecLimits};
use rapha_testkit::cohort::{generate, CohortManifest, CohortSpec};
use rapha_testkit::job::job_request;
use rapha_testkit::node_config::NodeConfig;
use rapha_testkit::policy::test_hospital;
use rapha_testkit::services::{Anvil, AnvilOptions, Orthanc, Swtpm};
use rapha_testkit::trainer::{compile_test_trainer, runc_as_root};

pub const PUBLISHER: &str = "acme-ai";
/// A second publisher the world's trust store knows (a test adds it to the hospital's policy
/// when it needs two companies).
pub const OTHER_PUBLISHER: &str = "beta-labs";
/// The dev account [`OTHER_PUBLISHER`] pays from.
pub const OTHER_COMPANY: usize = 7;
pub const TRAINER: &str = "tiny-trainer";
pub const FEE: u64 = 120_000_000; // 120.00 USDC

/// The states a completed job passes through, in order: written out here, not taken from the
/// node's code, as what the tests expect of it.
pub const COMPLETED_PATH: [JobState; 15] = [
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
    JobState::Settled,
    JobState::Released,
];

pub fn required() -> bool {
    std::env::var("RAPHA_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The enclave suite's static test trainer, compiled once.
pub fn trainer_binary() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rapha-node-trainer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let out = dir.join("trainer");
        compile_test_trainer(&out).then_some(out)
    })
    .clone()
}

pub fn sandbox_ready() -> Option<PathBuf> {
    if !runc_as_root() {
        assert!(!required(), "runc (as root) is required but not available");
        eprintln!("SKIPPED: runc not installed or not root; node end-to-end test not run");
        return None;
    }
    let bin = trainer_binary();
    if bin.is_none() {
        assert!(
            !required(),
            "gcc -static is required to build the test trainer"
        );
        eprintln!("SKIPPED: gcc -static unavailable; node end-to-end test not run");
    }
    bin
}

/// Writes a secret file at mode 0600, as the node requires of its key files.
pub fn secret_file(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// What the whole-node process tests (`crash.rs`, `production_node.rs`) set up alike under a
/// directory: a 20-study cohort loaded into Orthanc, a trusted publisher and its signed honest
/// bundle, a DPO key, and the node's HMAC, node and settler key files.
pub struct NodeFixture {
    /// The directory it was set up under.
    pub root: PathBuf,
    pub dicomweb_url: String,
    /// The generated cohort (`dicom/`, `labels.csv`, `optouts.csv`).
    pub cohort: PathBuf,
    pub accessions: Vec<String>,
    pub bundle_dir: PathBuf,
    pub manifest: Digest,
    pub dpo: DpoSigningKey,
    /// The `runc` on PATH.
    pub runc: String,
}

impl NodeFixture {
    /// Sets it up under `t` (trust store `t/trust`, keys `t/hmac.key`, `t/node.key`,
    /// `t/settler.key`); `seed` picks the cohort and the keys.
    pub fn new(t: &Path, orthanc: &Orthanc, chain: &Chain, trainer: &Path, seed: u8) -> Self {
        let cohort = t.join("cohort");
        let cohort_manifest =
            generate(&CohortSpec::new(20, u64::from(seed), cohort.clone())).unwrap();
        let (ok, rejected) = orthanc.upload_dir(&cohort.join("dicom")).unwrap();
        assert!(ok > 0 && rejected == 0);
        let publisher = SigningKey::ed25519_from_seed(&[seed; 32]);
        TrustStore::add(
            &t.join("trust"),
            PUBLISHER,
            &publisher.public_key(),
            &[TRAINER.into()],
            None,
        )
        .unwrap();
        let (bundle_dir, manifest) = bundle(t, trainer, "honest", "honest", &publisher);
        secret_file(&t.join("hmac.key"), &[seed.wrapping_add(1); 32]);
        secret_file(
            &t.join("node.key"),
            hex::encode(chain.node_secret).as_bytes(),
        );
        secret_file(&t.join("settler.key"), chain.keys[5].as_bytes());
        let runc = String::from_utf8(Command::new("which").arg("runc").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned();
        Self {
            root: t.to_path_buf(),
            dicomweb_url: orthanc.dicomweb_url(),
            cohort,
            accessions: cohort_manifest.labelled_accessions(),
            bundle_dir,
            manifest,
            dpo: DpoSigningKey::from_seed(&[seed.wrapping_add(2); 32]),
            runc,
        }
    }

    /// A demo-mode node config over this fixture and `chain`, with no attestation, cohorts
    /// committed and runs ended to the second, and [`PUBLISHER`] paying from the company's
    /// account; its files under the fixture's root (`data`, `state`).
    pub fn config(&self, chain: &Chain) -> NodeConfig {
        NodeConfig {
            dicom_scope: false,
            dpo_keys: vec![self.dpo.public().to_hex()],
            opt_out: self.cohort.join("optouts.csv"),
            labels: Some(self.cohort.join("labels.csv")),
            commit_quantum_secs: Some(1),
            runtime: PathBuf::from(&self.runc),
            run_quantum_secs: Some(1),
            depositors: vec![(
                PUBLISHER.to_owned(),
                vec![chain.company.address().to_string()],
            )],
            ..NodeConfig::demo(
                &self.root,
                &self.dicomweb_url,
                &chain.url,
                &chain.usdc.to_string(),
                &chain.escrow.to_string(),
            )
        }
    }
}

/// Builds and signs a bundle whose entrypoint runs the test trainer in `mode`.
pub fn bundle(
    tmp: &Path,
    trainer: &Path,
    name: &str,
    mode: &str,
    key: &SigningKey,
) -> (PathBuf, Digest) {
    bundle_args(tmp, trainer, name, &[mode], key)
}

/// Builds and signs a bundle whose entrypoint runs `trainer` with `args`.
pub fn bundle_args(
    tmp: &Path,
    trainer: &Path,
    name: &str,
    args: &[&str],
    key: &SigningKey,
) -> (PathBuf, Digest) {
    bundle_args_with(tmp, trainer, name, args, key, |_| {})
}

/// [`bundle`], with the signed resource requests changed by `resources` (as a publisher
/// writing its statement by hand may: TOML integers stop at 2^63, JSON's do not).
pub fn bundle_with(
    tmp: &Path,
    trainer: &Path,
    name: &str,
    mode: &str,
    key: &SigningKey,
    resources: impl FnOnce(&mut rapha_core::ResourceLimits),
) -> (PathBuf, Digest) {
    bundle_args_with(tmp, trainer, name, &[mode], key, resources)
}

/// [`bundle`] of another publisher: `publisher` is the name the signed statement gives.
pub fn bundle_of(
    publisher: &str,
    tmp: &Path,
    trainer: &Path,
    name: &str,
    mode: &str,
    key: &SigningKey,
) -> (PathBuf, Digest) {
    bundle_for(publisher, tmp, trainer, name, &[mode], key, |_| {})
}

fn bundle_args_with(
    tmp: &Path,
    trainer: &Path,
    name: &str,
    args: &[&str],
    key: &SigningKey,
    resources: impl FnOnce(&mut rapha_core::ResourceLimits),
) -> (PathBuf, Digest) {
    bundle_for(PUBLISHER, tmp, trainer, name, args, key, resources)
}

fn bundle_for(
    publisher: &str,
    tmp: &Path,
    trainer: &Path,
    name: &str,
    args: &[&str],
    key: &SigningKey,
    resources: impl FnOnce(&mut rapha_core::ResourceLimits),
) -> (PathBuf, Digest) {
    let mut spec = trainer_spec(publisher, TRAINER, &SpecLimits::SMALL).unwrap();
    resources(&mut spec.resources);
    sign_trainer(tmp, name, trainer, args, &spec, key).unwrap()
}

/// The swtpm provider, or on demand an attacker's relabelled quote: a genuine quote over
/// another job's binding with this job's binding written into the evidence.
struct Switchable {
    inner: TpmEvidence,
    forge: Arc<AtomicBool>,
}

impl EvidenceProvider for Switchable {
    fn evidence(&mut self, binding: &Digest) -> Result<rapha_attest::Evidence, String> {
        if self.forge.load(Ordering::SeqCst) {
            let mut ev = self.inner.evidence(&Digest::of(b"another job"))?;
            ev.binding = *binding;
            Ok(ev)
        } else {
            self.inner.evidence(binding)
        }
    }
}

pub struct Chain {
    _anvil: Anvil,
    pub rt: tokio::runtime::Runtime,
    pub url: String,
    pub usdc: Address,
    pub escrow: Address,
    pub company: WalletKey,
    pub hospital: Address,
    pub payout: Address,
    pub treasury: Address,
    pub node_secret: [u8; 32],
    pub settler: WalletKey,
    /// anvil's dev account keys (hex).
    pub keys: Vec<String>,
}

impl Chain {
    pub fn start() -> Option<Chain> {
        let anvil = rapha_testkit::require!(Anvil::start(AnvilOptions::default()))?;
        let url = anvil.rpc_url();
        let keys: Vec<String> = anvil.dev_accounts().into_iter().map(|(_, k)| k).collect();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let market = rt.block_on(DevMarket::deploy(&url, keys)).unwrap();
        let key = |i: usize| market.key(i);
        Some(Chain {
            _anvil: anvil,
            rt,
            url: url.clone(),
            usdc: market.token,
            escrow: market.escrow,
            company: key(account::COMPANY),
            hospital: key(account::HOSPITAL).address(),
            payout: key(account::PAYOUT).address(),
            treasury: key(account::TREASURY).address(),
            node_secret: market.node_secret(),
            settler: key(account::SETTLER),
            keys: market.keys,
        })
    }

    /// USDC `who` holds plus what the escrow owes it: settlements and expiry refunds credit
    /// the escrow's `owed` (pull payments) until the account withdraws.
    pub fn funds(&self, who: Address) -> U256 {
        self.rt.block_on(async {
            let p = rapha_settle::network::connect_http(&self.url).unwrap();
            let held = Escrow::balance_of(&p, self.usdc, who).await.unwrap();
            held + Escrow::at(p, self.escrow).owed(who).await.unwrap()
        })
    }

    /// The dev account `i`'s wallet key (0 deployed the market; 2 is the company).
    pub fn key(&self, i: usize) -> WalletKey {
        WalletKey::from_hex(&self.keys[i]).unwrap()
    }

    /// The node's `[depositors]`: [`PUBLISHER`] pays from the company's account,
    /// [`OTHER_PUBLISHER`] from account [`OTHER_COMPANY`].
    pub fn depositors(&self) -> std::collections::BTreeMap<String, Vec<Address>> {
        std::collections::BTreeMap::from([
            (PUBLISHER.to_owned(), vec![self.company.address()]),
            (
                OTHER_PUBLISHER.to_owned(),
                vec![self.key(OTHER_COMPANY).address()],
            ),
        ])
    }

    /// Mints `amount` base units of the mock USDC to `to`.
    pub fn mint(&self, to: Address, amount: u64) {
        self.rt.block_on(async {
            let deployer = wallet_provider(&self.url, &self.key(0)).unwrap();
            Escrow::mint_mock_usdc(deployer, self.usdc, to, Usdc::from_base_units(amount))
                .await
                .unwrap();
        });
    }

    pub fn deposit(&self, job: &JobId) {
        self.rt.block_on(async {
            let company = Escrow::at(
                wallet_provider(&self.url, &self.company).unwrap(),
                self.escrow,
            );
            // A day: past any test trainer's wall time plus the node's settlement margin.
            let deadline = company.chain_time().await.unwrap() + 86_400;
            company
                .approve_and_deposit(job, self.hospital, Usdc::from_base_units(FEE), deadline)
                .await
                .unwrap();
        });
    }
}

/// The real components with a tiny cohort and a node over them (also served through the API
/// in `api_phi`).
pub struct World {
    pub tmp: tempfile::TempDir,
    _orthanc: Orthanc,
    _tpm: Swtpm,
    pub chain: Chain,
    pub manifest: CohortManifest,
    pub accessions: Vec<String>,
    pub node: Node,
    pacs_calls: Arc<AtomicUsize>,
    forge: Arc<AtomicBool>,
    pub dpo: DpoSigningKey,
    pub publisher_key: SigningKey,
    /// [`OTHER_PUBLISHER`]'s bundle key (trusted; not in the hospital's policy unless a test
    /// puts it there).
    pub other_publisher_key: SigningKey,
    pub trainer: PathBuf,
    /// What the node's audit log sent to syslog.
    pub syslog: SyslogCapture,
}

/// The syslog lines the node's audit log sends to a unix datagram socket in the test's
/// directory, read by a thread of the test (which ends when the directory is gone).
pub struct SyslogCapture {
    lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl SyslogCapture {
    fn bind(path: &Path) -> Self {
        let sock = std::os::unix::net::UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap();
        let lines = Arc::<std::sync::Mutex<Vec<String>>>::default();
        let (kept, path) = (Arc::clone(&lines), path.to_path_buf());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4 << 20];
            while path.exists() {
                if let Ok(n) = sock.recv(&mut buf) {
                    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
                    kept.lock().unwrap().push(line);
                }
            }
        });
        Self { lines }
    }

    /// Every line received so far.
    pub fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

pub fn world() -> Option<World> {
    world_with(20, 12)
}

/// The world with a cohort of `studies` synthetic studies generated from `seed` (the scope
/// limit admits them all).
pub fn world_with(studies: usize, seed: u64) -> Option<World> {
    world_with_policy(studies, seed, |_| {})
}

/// [`world_with`], with the hospital's policy settings changed by `policy` first.
pub fn world_with_policy(
    studies: usize,
    seed: u64,
    policy: impl FnOnce(&mut HospitalPolicy),
) -> Option<World> {
    world_built(studies, policy, |dir| {
        generate(&CohortSpec {
            rle_fraction: 0.2,
            ..CohortSpec::new(studies, seed, dir.to_path_buf())
        })
        .unwrap()
    })
}

/// The world over the cohort of `studies` studies that `cohort` writes into the directory it
/// is given (generated, then re-encoded or enhanced as a test needs), loaded into Orthanc.
pub fn world_built(
    studies: usize,
    policy: impl FnOnce(&mut HospitalPolicy),
    cohort: impl FnOnce(&Path) -> CohortManifest,
) -> Option<World> {
    let trainer = sandbox_ready()?;
    let orthanc = rapha_testkit::require!(Orthanc::start())?;
    let tpm = rapha_testkit::require!(Swtpm::start_provisioned())?;
    let chain = Chain::start()?;
    let tmp = tempfile::tempdir().unwrap();
    let cohort_dir = tmp.path().join("cohort");
    let manifest = cohort(&cohort_dir);
    let (ok, rejected) = orthanc.upload_dir(&cohort_dir.join("dicom")).unwrap();
    assert!(
        ok > 0 && rejected == 0,
        "Orthanc accepted {ok}, rejected {rejected}"
    );
    let accessions = manifest.labelled_accessions();

    // TPM: enrol an AK certified by the swtpm's EK, record the PCR policy, trust the AK.
    let roots = VendorRoots::from_pem_file(tpm.ek_ca_cert_pem().unwrap()).unwrap();
    let pcrs: std::collections::BTreeSet<u8> = [0, 1, 2, 3, 4, 7].into_iter().collect();
    let mut ctx = connect(&tpm.tcti()).unwrap();
    let certified = enroll_ak(&mut ctx, &roots).unwrap();
    let pcr_policy = record_pcr_policy(&mut ctx, &pcrs).unwrap();
    drop(ctx);
    let mut tpm_verifier = TpmVerifier::new(roots, pcr_policy);
    tpm_verifier.trust_ak(certified.record()).unwrap();
    let attester = TpmAttester::open(&tpm.tcti(), certified).unwrap();

    let publisher_key = SigningKey::ed25519_from_seed(&[7; 32]);
    TrustStore::add(
        &tmp.path().join("trust"),
        PUBLISHER,
        &publisher_key.public_key(),
        &[TRAINER.into()],
        None,
    )
    .unwrap();
    let other_publisher_key = SigningKey::ed25519_from_seed(&[8; 32]);
    TrustStore::add(
        &tmp.path().join("trust"),
        OTHER_PUBLISHER,
        &other_publisher_key.public_key(),
        &[TRAINER.into()],
        None,
    )
    .unwrap();
    let trust = TrustStore::open(&tmp.path().join("trust")).unwrap();
    let mut hospital = test_hospital(PUBLISHER, TRAINER);
    hospital.scope.max_studies = (studies as u64).max(100);
    policy(&mut hospital);
    let dpo = DpoSigningKey::from_seed(&[9; 32]);
    let forge = Arc::new(AtomicBool::new(false));
    let pacs_calls = Arc::new(AtomicUsize::new(0));
    let calls = pacs_calls.clone();
    let url = orthanc.dicomweb_url();
    let syslog = SyslogCapture::bind(&tmp.path().join("syslog.sock"));
    let node_key = NodeKey::from_secret_bytes(&chain.node_secret).unwrap();
    let payments = ChainPayments::connect(
        &ChainSettings {
            rpc_url: chain.url.clone(),
            escrow: chain.escrow,
            hospital: chain.hospital,
            payout: chain.payout,
            depositors: chain.depositors(),
            confirmations: 1,
            settle_margin_secs: 600,
            poll_interval: std::time::Duration::from_millis(250),
        },
        &chain.settler,
        &tmp.path().join("ledger.sqlite"),
    )
    .unwrap();
    let mut node = Node::new(NodeParts {
        store: JobStore::open(&tmp.path().join("jobs.sqlite")).unwrap(),
        trust,
        policy: Policy::builtin().unwrap(),
        hospital,
        pseudonymizer: Pseudonymizer::new(HmacKey::from_bytes([0x5a; 32])),
        dicom: DicomConfig::default(),
        optouts: OptOuts::load(&cohort_dir.join("optouts.csv")).unwrap(),
        labels: Some(LabelTable::load(&cohort_dir.join("labels.csv")).unwrap()),
        pacs: Box::new(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            DicomWebClient::new(ClientOptions::new(url.clone()))
        }),
        approvals: ApprovalStore::open(&tmp.path().join("approvals")).unwrap(),
        dpo_keys: vec![dpo.public()],
        evidence: Box::new(Switchable {
            inner: TpmEvidence { attester, pcrs },
            forge: forge.clone(),
        }),
        verifier: EvidenceVerifier::development(),
        tpm_verifier: Some(tpm_verifier),
        sandbox: SandboxConfig {
            runtime_root: tmp.path().join("runc-state"),
            ..SandboxConfig::default()
        },
        min_validation_patients: 2,
        node_key,
        node_name: "test-hospital".into(),
        receipts: ReceiptLog::open(&tmp.path().join("receipts")).unwrap(),
        payments: Box::new(payments),
        audit: AuditLog::open(
            &tmp.path().join("audit.jsonl"),
            "test-hospital",
            Some(SyslogTarget::Unix(tmp.path().join("syslog.sock"))),
        )
        .unwrap(),
        work_dir: tmp.path().join("work"),
        release_dir: tmp.path().join("released"),
    })
    .unwrap();
    // Runs end as the trainer exits (the publisher-side quantum has its own test).
    node.set_run_quantum(std::time::Duration::ZERO);
    node.set_cohort_quantum(std::time::Duration::ZERO);
    Some(World {
        tmp,
        _orthanc: orthanc,
        _tpm: tpm,
        chain,
        manifest,
        accessions,
        node,
        pacs_calls,
        forge,
        dpo,
        publisher_key,
        other_publisher_key,
        trainer,
        syslog,
    })
}

impl World {
    /// Submits the honest test trainer's bundle `name` on the scoped query and runs the job
    /// to the DPO's review.
    /// Submits the bundle in `dir` (manifest digest `manifest`) on the scoped query.
    pub fn submit_scoped(&mut self, dir: &Path, manifest: Digest) -> JobId {
        let request = self.request(manifest, self.scoped_query());
        self.node.submit(dir, request).unwrap()
    }

    pub fn submit_to_review(&mut self, name: &str) -> JobId {
        let tmp = self.tmp.path().to_path_buf();
        let (dir, manifest) = bundle(&tmp, &self.trainer, name, "honest", &self.publisher_key);
        let job = self.submit_scoped(&dir, manifest);
        assert_eq!(
            self.node.run_until_blocked(job).unwrap(),
            JobState::AwaitingApproval,
            "{name}"
        );
        job
    }

    pub fn request(&self, manifest: Digest, query: CohortQuery) -> JobRequest {
        job_request(
            PUBLISHER,
            TRAINER,
            manifest,
            query,
            FEE,
            &self.chain.company.address().to_string(),
        )
    }

    pub fn scoped_query(&self) -> CohortQuery {
        CohortQuery {
            limit: Some(self.accessions.len() as u32),
            accession_numbers: self.accessions.clone(),
            ..CohortQuery::default()
        }
    }

    /// How many PACS clients the node has made (each cohort build or run makes one).
    pub fn pacs_calls(&self) -> usize {
        self.pacs_calls.load(Ordering::SeqCst)
    }

    /// Records a DPO approval of the job's review digest, valid for an hour.
    pub fn approve(&self, job: JobId) {
        let digest = self
            .node
            .review_digest(job)
            .unwrap()
            .expect("review digest stored");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let a = self.dpo.approve(digest, now, now + 3600).unwrap();
        self.node.approvals().record(&a).unwrap();
    }

    /// Drives a job through approval and deposit to its end.
    pub fn drive(&mut self, job: JobId) -> JobState {
        self.drive_within(job, 60)
    }

    /// [`World::drive`], advancing the job for up to `rounds` half-second rounds after the
    /// deposit (a long trainer run needs more than `drive`'s 30 seconds).
    pub fn drive_within(&mut self, job: JobId, rounds: usize) -> JobState {
        assert_eq!(
            self.node.run_until_blocked(job).unwrap(),
            JobState::AwaitingApproval
        );
        // Without an approval the job waits; it does not run.
        assert!(matches!(
            self.node.advance(job).unwrap(),
            Step::Blocked(Blocked::Approval { .. })
        ));
        // An approval of this exact digest signed by a key that is not the hospital's DPO is
        // no approval: the job keeps waiting.
        let digest = self.node.review_digest(job).unwrap().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let rogue = DpoSigningKey::from_seed(&[0xee; 32])
            .approve(digest, now, now + 3600)
            .unwrap();
        self.node.approvals().record(&rogue).unwrap();
        assert!(matches!(
            self.node.advance(job).unwrap(),
            Step::Blocked(Blocked::Approval { job_digest }) if job_digest == digest
        ));
        assert_eq!(
            self.node.store().get(job).unwrap().state,
            JobState::AwaitingApproval
        );
        self.approve(job);
        assert_eq!(
            self.node.run_until_blocked(job).unwrap(),
            JobState::AwaitingDeposit
        );
        self.deposit_and_finish(job, rounds)
    }

    /// Deposits the job's fee and advances it, every half second, until it finished or
    /// `rounds` rounds passed; the state it reached.
    pub fn deposit_and_finish(&mut self, job: JobId, rounds: usize) -> JobState {
        self.chain.deposit(&job);
        let mut state = JobState::AwaitingDeposit;
        for _ in 0..rounds {
            state = self.node.run_until_blocked(job).unwrap();
            if self.node.store().finished(job).unwrap() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        state
    }

    /// Deposits and finishes a job that must end `reason` before its trainer ran (no run
    /// record); returns how it ended, hospital-side.
    pub fn finish_refused_before_running(
        &mut self,
        job: JobId,
        reason: &str,
    ) -> rapha_node::pipeline::Ending {
        self.deposit_and_finish(job, 60);
        assert!(self.node.store().finished(job).unwrap());
        let row = self.node.store().get(job).unwrap();
        assert_eq!(row.reason.as_deref(), Some(reason), "{:?}", row.state);
        assert!(
            self.node
                .store()
                .artifact(job, rapha_node::pipeline::artifact::MANIFEST)
                .unwrap()
                .is_none(),
            "no run record: the trainer never ran"
        );
        self.node.ending(job).unwrap().unwrap()
    }

    /// Every planted PHI value absent from `bytes`; returns the ones found.
    fn phi_in(&self, bytes: &[u8]) -> Vec<String> {
        phi_in(&self.manifest.phi, bytes)
    }
}

/// The planted PHI values (of at least 4 characters) that occur in `bytes`.
pub fn phi_in(phi: &[String], bytes: &[u8]) -> Vec<String> {
    let hay = String::from_utf8_lossy(bytes);
    phi.iter()
        .filter(|p| p.len() >= 4 && hay.contains(p.as_str()))
        .cloned()
        .collect()
}

pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(all_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn honest_job_settles_malicious_job_is_charged_broad_query_never_reaches_the_pacs() {
    let Some(mut w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let (honest_dir, honest_manifest) =
        bundle(&tmp, &w.trainer, "honest", "honest", &w.publisher_key);

    // 1. A broad query (no study list, no date range, no limit) is refused before any PACS
    //    client is made, receipted, and settled without money moving (nothing was deposited).
    let broad = w.request(
        honest_manifest,
        CohortQuery {
            modalities: vec!["CT".into()],
            ..CohortQuery::default()
        },
    );
    let broad_id = w.node.submit(&honest_dir, broad).unwrap();
    assert_eq!(
        w.node.run_until_blocked(broad_id).unwrap(),
        JobState::Settled
    );
    let row = w.node.store().get(broad_id).unwrap();
    assert_eq!(row.outcome, Some(Outcome::Refused));
    assert_eq!(
        w.pacs_calls.load(Ordering::SeqCst),
        0,
        "the PACS was contacted for a refused query"
    );
    let r = w
        .node
        .receipt(broad_id)
        .unwrap()
        .expect("a refused job has a receipt");
    assert_eq!(r.body["outcome"], "refused", "{}", r.body);
    assert!(!w.node.release_path(broad_id).exists());

    // 2. The honest job: end to end to settled, hospital paid 70%, protocol 30%.
    let payout_before = w.chain.funds(w.chain.payout);
    let treasury_before = w.chain.funds(w.chain.treasury);
    let honest = w.request(honest_manifest, w.scoped_query());
    let job = w.node.submit(&honest_dir, honest).unwrap();
    assert_eq!(w.drive(job), JobState::Released);
    let row = w.node.store().get(job).unwrap();
    assert_eq!(row.outcome, Some(Outcome::Completed), "{:?}", row.reason);
    let states: Vec<JobState> = w
        .node
        .store()
        .transitions(job)
        .unwrap()
        .iter()
        .map(|t| t.to)
        .collect();
    assert_eq!(states, COMPLETED_PATH);
    let released = w.node.release_path(job);
    let mut names: Vec<String> = all_files(&released)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["metrics.json", "model.safetensors", "receipt.json"]);
    let receipt = w.node.receipt(job).unwrap().unwrap();
    let receipt_bytes = w
        .node
        .store()
        .artifact(job, rapha_node::pipeline::artifact::RECEIPT)
        .unwrap()
        .unwrap();
    let node_addr = NodeKey::from_secret_bytes(&w.chain.node_secret)
        .unwrap()
        .address();
    rapha_receipt::verify(
        &receipt_bytes,
        &rapha_receipt::VerifyOptions {
            node_address: Some(node_addr),
            sth: None,
            consistency_from: None,
        },
    )
    .expect("the receipt verifies under the node key");
    assert_eq!(receipt.body["outcome"], "completed");
    // No runner configured: the receipt says so, never a figure (issue 19).
    assert_eq!(
        receipt.body["audit"],
        serde_json::json!({"status": "not available", "reason": "no-runner"})
    );
    assert_eq!(
        receipt.body["attestation"]["mode"], "verified",
        "{}",
        receipt.body["attestation"]
    );
    assert_eq!(
        w.chain.funds(w.chain.payout) - payout_before,
        U256::from(FEE * 7 / 10)
    );
    assert_eq!(
        w.chain.funds(w.chain.treasury) - treasury_before,
        U256::from(FEE * 3 / 10)
    );

    // 3. A malicious trainer (copies pixels into its "weights"): the guard refuses, the job
    //    ends violated with a receipt carrying one code, nothing is released, and (issue 18)
    //    the fee is charged, not refunded: a refunded refusal would be a free oracle.
    let (bad_dir, bad_manifest) = bundle(&tmp, &w.trainer, "bad", "pixel-copy", &w.publisher_key);
    let company_before = w.chain.funds(w.chain.company.address());
    let bad = w.request(bad_manifest, w.scoped_query());
    let bad_id = w.node.submit(&bad_dir, bad).unwrap();
    // Settled: escrow v2 pays violations 70/30.
    assert_eq!(w.drive(bad_id), JobState::Settled);
    let row = w.node.store().get(bad_id).unwrap();
    assert_eq!(row.outcome, Some(Outcome::Violated), "{:?}", row.reason);
    let reason = row.reason.unwrap();
    assert_eq!(reason, "output-guard");
    let detail = w.node.ending(bad_id).unwrap().unwrap().detail;
    // The hospital's detail names the rule and the place in the node's words.
    assert!(
        detail.contains("pixel-block: \"model.safetensors\" at offset "),
        "{detail}"
    );
    let bad_receipt = w.node.receipt(bad_id).unwrap().unwrap();
    assert_eq!(bad_receipt.body["reason"], reason.as_str());
    assert!(bad_receipt.body["outputs"].is_null());
    assert!(
        !w.node.release_path(bad_id).exists(),
        "a violated job released something"
    );
    assert_eq!(
        w.chain.funds(w.chain.company.address()),
        company_before - U256::from(FEE),
        "a guard refusal was refunded"
    );
    // The publisher is suspended until a DPO reviews the violation; reinstated for step 4.
    assert!(w.node.suspension(PUBLISHER).unwrap().is_some());
    w.node
        .reinstate(PUBLISHER, "test-dpo", "reviewed in the end-to-end test")
        .unwrap()
        .expect("suspended");

    // 4. A TPM quote over another job's binding, relabelled with this job's binding, is
    //    refused before the trainer runs; the depositor is refunded, nothing released.
    w.forge.store(true, Ordering::SeqCst);
    let company_before = w.chain.funds(w.chain.company.address());
    let forged = w.request(honest_manifest, w.scoped_query());
    let forged_id = w.node.submit(&honest_dir, forged).unwrap();
    assert_eq!(w.drive(forged_id), JobState::Settled);
    w.forge.store(false, Ordering::SeqCst);
    let row = w.node.store().get(forged_id).unwrap();
    assert_eq!(row.outcome, Some(Outcome::Refused));
    assert_eq!(row.reason.as_deref(), Some("attestation-refused"));
    let detail = w.node.ending(forged_id).unwrap().unwrap().detail;
    assert!(detail.starts_with("TPM evidence refused"), "{detail}");
    let to: Vec<JobState> = w
        .node
        .store()
        .transitions(forged_id)
        .unwrap()
        .iter()
        .map(|t| t.to)
        .collect();
    assert!(!to.contains(&JobState::Running), "{to:?}");
    assert!(!w.node.release_path(forged_id).exists());
    assert_eq!(w.chain.funds(w.chain.company.address()), company_before);

    // 5. No planted PHI value in anything that left the hospital, the receipts or the audit log.
    let mut checked = vec![];
    for f in all_files(&w.tmp.path().join("released")) {
        checked.push((f.display().to_string(), std::fs::read(&f).unwrap()));
    }
    for id in [broad_id, job, bad_id, forged_id] {
        checked.push((
            format!("receipt {id}"),
            w.node.receipt(id).unwrap().unwrap().to_json().unwrap(),
        ));
    }
    checked.push((
        "audit log".into(),
        std::fs::read(w.node.audit_path()).unwrap(),
    ));
    assert!(!w.manifest.phi.is_empty());
    for (what, bytes) in &checked {
        let found = w.phi_in(bytes);
        assert!(found.is_empty(), "PHI {found:?} in {what}");
    }

    // 6. The audit trail recorded the PACS query, the DPO approval, the refusals and the release.
    let events = AuditLog::read_all(w.node.audit_path()).unwrap();
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    for code in ["110112", "110103", "110110", "110113", "110106"] {
        assert!(ids.contains(&code), "no audit event {code} in {ids:?}");
    }
}

/// The approved cohort is the job's cohort file, checked against the digest committed with
/// the cohort: a file changed after approval (here one entry's instance swapped for another
/// the PACS holds, its line otherwise intact) ends the run before the trainer starts, with
/// nothing fed. The file is the node's: under its working directory, outside every job's
/// directory and so outside the trainer's rootfs.
/// The privacy audit on the node (issue 19): with a runner configured, a bundle that pins no
/// graph is "not available: no-pinned-graph"; one whose image holds another graph than the
/// pinned digest is "graph-mismatch"; one whose runner cannot load the model (exits non-zero)
/// is "runner-failed". Each still completes and releases (the audit reports; no threshold is
/// set), and each receipt verifies.
#[test]
fn the_privacy_audit_is_not_available_without_a_pinned_graph_or_a_working_runner() {
    // Enough patients for an audit split of at least 2 (the default world keeps 6).
    let Some(mut w) = world_with(40, 12) else {
        return;
    };
    let tmp = w.tmp.path().to_path_buf();
    let src = tmp.join("failing-runner.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\nint main(void) { fputs(\"cannot load /in/model.onnx\\n\", stderr); \
         return 3; }\n",
    )
    .unwrap();
    let runner = tmp.join("audit-runner");
    assert!(rapha_testkit::trainer::compile_c_trainer(&src, &runner));
    w.node
        .set_privacy_audit(rapha_node::pipeline::PrivacyAudit {
            runner: Some((
                runner,
                rapha_core::ResourceLimits {
                    memory_mb: 64,
                    cpus: 1,
                    pids: 16,
                    wall_seconds: 30,
                    tmp_mb: 16,
                    gpus: 0,
                },
            )),
            holdout_fraction: 0.25,
            min_patients: 2,
            // An audit that is not available never withholds, whatever the threshold.
            max_attack_auc: Some(0.5),
        });
    let trainer_digest = Digest::of(&std::fs::read(&w.trainer).unwrap());
    let pinned = |name: &str, digest: Digest| {
        let mut spec = trainer_spec(PUBLISHER, TRAINER, &SpecLimits::SMALL).unwrap();
        spec.audit = Some(rapha_bundle::statement::AuditDecl {
            // The image's one file stands in for a graph: the runner fails before reading it.
            graph: "/trainer".into(),
            graph_sha256: digest,
            input: rapha_bundle::statement::AuditInput {
                kind: rapha_bundle::statement::AuditInputKind::GreyV1,
                side: 64,
            },
            output: rapha_bundle::statement::AuditOutput::Logit,
        });
        sign_trainer(&tmp, name, &w.trainer, &["honest"], &spec, &w.publisher_key).unwrap()
    };
    let unpinned = bundle(&tmp, &w.trainer, "unpinned", "honest", &w.publisher_key);
    let mismatched = pinned("mismatched", Digest::of(b"another graph"));
    let failing = pinned("failing", trainer_digest);
    for ((dir, manifest), reason) in [
        (unpinned, "no-pinned-graph"),
        (mismatched, "graph-mismatch"),
        (failing, "runner-failed"),
    ] {
        let req = w.request(manifest, w.scoped_query());
        let job = w.node.submit(&dir, req).unwrap();
        assert_eq!(w.drive(job), JobState::Released, "{reason}");
        let receipt = w.node.receipt(job).unwrap().unwrap();
        assert_eq!(receipt.body["outcome"], "completed", "{reason}");
        assert_eq!(
            receipt.body["audit"],
            serde_json::json!({"status": "not available", "reason": reason})
        );
        let bytes = w
            .node
            .store()
            .artifact(job, rapha_node::pipeline::artifact::RECEIPT)
            .unwrap()
            .unwrap();
        rapha_receipt::verify(&bytes, &rapha_receipt::VerifyOptions::default())
            .expect("the receipt verifies");
    }
}

#[test]
fn a_cohort_file_changed_after_approval_feeds_nothing() {
    let Some(mut w) = world() else { return };
    let job = w.submit_to_review("honest");
    let file = w.node.cohort_file(job);
    assert!(!file.starts_with(w.node.work_dir()), "{}", file.display());
    let text = std::fs::read_to_string(&file).unwrap();
    let entries = w.node.cohort_entries(job).unwrap().unwrap();
    assert_eq!(text.lines().count(), entries.len());
    let uid = |e: &rapha_dicom::cohort::CohortEntry| match &e.source {
        rapha_dicom::cohort::InstanceSource::DicomWeb { instance_uid, .. } => instance_uid.clone(),
        other => panic!("not a DICOMweb entry: {other:?}"),
    };
    let (first, last) = (uid(&entries[0]), uid(&entries[entries.len() - 1]));
    assert_ne!(first, last);
    let changed = text.replacen(&first, &last, 1);
    assert_ne!(changed, text);
    w.approve(job);
    std::fs::write(&file, changed).unwrap();

    assert_eq!(
        w.node.run_until_blocked(job).unwrap(),
        JobState::AwaitingDeposit
    );
    let ending = w.finish_refused_before_running(job, "enclave-error");
    assert!(
        ending
            .detail
            .contains("not the cohort file that was committed"),
        "{}",
        ending.detail
    );
}

/// Issue 18, item 11: a patient who opts out after the DPO approved the cohort is dropped when
/// the run starts: none of their records is listed or fed, and the run record counts them.
#[test]
fn patient_opted_out_after_approval_is_not_fed_and_is_counted_in_the_run_record() {
    let Some(mut w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let job = w.submit_to_review("honest");
    let cohort = serde_json::to_value(w.node.cohort_entries(job).unwrap().unwrap()).unwrap();
    let entries = cohort.as_array().unwrap();
    let patient = entries[0]["approved"]["patient_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let theirs = entries
        .iter()
        .filter(|e| e["approved"]["patient_id"] == patient.as_str())
        .count();
    w.approve(job);

    // After approval, the patient opts out: the hospital appends them to its list.
    let list = tmp.join("cohort").join("optouts.csv");
    let mut text = std::fs::read_to_string(&list).unwrap();
    text.push_str(&format!("{patient}\n"));
    std::fs::write(&list, text).unwrap();

    assert_eq!(
        w.node.run_until_blocked(job).unwrap(),
        JobState::AwaitingDeposit
    );
    // Completed, settled, then released.
    assert_eq!(w.deposit_and_finish(job, 60), JobState::Released);
    let run: serde_json::Value = serde_json::from_slice(
        &w.node
            .store()
            .artifact(job, rapha_node::pipeline::artifact::MANIFEST)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(run["opted_out_since_approval"], theirs as u64, "{run}");
    assert_eq!(
        run["records_fed"],
        (entries.len() - theirs) as u64,
        "the honest trainer reads every record it is offered"
    );
    assert!(
        run["fetch_refusals"].as_object().unwrap().is_empty(),
        "{run}"
    );
}

/// A publisher the hospital revokes while its job waits for the deposit (`rapha-node trust
/// remove --revoke` on the running node) never runs: the run step verifies the bundle against
/// the trust store as it is now, not as it was when the node started, and the job ends
/// `bundle-refused` with the depositor refunded and no trainer started.
#[test]
fn a_publisher_revoked_on_a_running_node_does_not_run_its_waiting_job() {
    let Some(mut w) = world() else { return };
    let job = w.submit_to_review("revoked-while-waiting");
    w.approve(job);
    assert_eq!(
        w.node.run_until_blocked(job).unwrap(),
        JobState::AwaitingDeposit
    );
    TrustStore::revoke(
        &w.tmp.path().join("trust"),
        PUBLISHER,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let ending = w.finish_refused_before_running(job, "bundle-refused");
    assert!(ending.detail.contains("revoked"), "{}", ending.detail);
}
