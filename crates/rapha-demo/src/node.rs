//! The in-process hospital node: `rapha_node::pipeline::Node` built directly from demo parts
//! (dev keys, simulated attestation, the embedded demo PACS, the local chain).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rapha_attest::{Evidence, EvidenceVerifier, SimulatedEvidence, SIMULATED_MARKER};
use rapha_bundle::TrustStore;
use rapha_core::{Digest, HmacKey, OutputKind, Usdc};
use rapha_dicom::client::ClientOptions;
use rapha_dicom::exclusion::{LabelTable, OptOuts};
use rapha_dicom::{DicomConfig, DicomWebClient, Pseudonymizer};
use rapha_enclave::SandboxConfig;
use rapha_node::audit::AuditLog;
use rapha_node::pipeline::chain::{ChainPayments, ChainSettings};
use rapha_node::pipeline::{EvidenceProvider, Node, NodeParts};
use rapha_node::store::JobStore;
use rapha_policy::{
    ApprovalStore, DpoSigningKey, HospitalPolicy, JobBudget, Mode, OutputLimits, Policy,
    PublisherTrust, ScopeLimits,
};
use rapha_receipt::{NodeKey, ReceiptLog};

use crate::chain::Chain;
use crate::signing::dev_seed;

/// Simulated attestation: evidence bound to the job, marked [`SIMULATED_MARKER`]. Only a
/// development-mode verifier accepts it.
// A deliberate duplicate (issue 23): testdata/v1/generator/v1gen.rs has its own copy of this
// provider and of the demo node's set-up. That generator is built only at commit 665d500
// against that commit's crates, to remake the frozen v1 fixtures; it cannot use today's code.
struct SimulatedProvider;

impl EvidenceProvider for SimulatedProvider {
    fn evidence(&mut self, binding: &Digest) -> std::result::Result<Evidence, String> {
        let mut ev = Evidence::new(*binding);
        ev.simulated = Some(SimulatedEvidence {
            marker: SIMULATED_MARKER.to_owned(),
            note: "rapha-demo: no TPM or SGX used".to_owned(),
        });
        Ok(ev)
    }
}

/// The demo node's PHI HMAC key (a dev key).
pub fn dev_hmac_key() -> HmacKey {
    HmacKey::from_bytes(dev_seed(0x5a))
}

/// The demo node's receipt signing key (a dev key: secp256k1 secret with the dev prefix).
pub fn node_key() -> Result<NodeKey> {
    NodeKey::from_secret_bytes(&dev_seed(0x3b)).map_err(|e| anyhow!("node key: {e}"))
}

/// The demo DPO's signing key (a dev key).
pub fn dpo_key() -> DpoSigningKey {
    DpoSigningKey::from_seed(&dev_seed(0xd0))
}

/// Everything the node needs, under `state`.
#[allow(clippy::too_many_arguments)]
pub fn build(
    state: &Path,
    trust_dir: &Path,
    cohort_dir: &Path,
    pacs_url: String,
    chain: &Chain,
    publisher: &str,
    trainer: &str,
    requested_fields: &[String],
) -> Result<Node> {
    std::fs::create_dir_all(state)?;
    let trust = TrustStore::open(trust_dir)?;
    let mut publishers = BTreeMap::new();
    publishers.insert(
        publisher.to_owned(),
        PublisherTrust {
            trainers: vec![trainer.to_owned()],
        },
    );
    // A deliberate duplicate (issue 23): crates/rapha-node/tests/v1_stores.rs writes out the
    // policy of the node that made the v1 fixtures (this one as it was at commit 665d500); that
    // one is frozen with the fixtures, this one is the demo's today.
    let hospital = HospitalPolicy {
        mode: Mode::Demo,
        publishers,
        scope: ScopeLimits {
            max_studies: 10_000,
            max_date_range_days: 3650,
            modalities: [
                "CT", "MR", "CR", "DX", "MG", "US", "SC", "OT", "PT", "NM", "XA",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        },
        outputs: OutputLimits {
            kinds: vec![
                OutputKind::Safetensors,
                OutputKind::Onnx,
                OutputKind::PytorchZip,
                OutputKind::MetricsJson,
            ],
            max_file_bytes: 64 << 20,
            max_total_bytes: 128 << 20,
            max_release_bits: None,
            max_publisher_bits: None,
            release_precision: Default::default(),
            release_noise_k: Default::default(),
        },
        allowed_metadata_fields: requested_fields.to_vec(),
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
    let key = node_key()?;
    let ledger = state.join("settlement-ledger.sqlite");
    let payments = ChainPayments::connect(
        &ChainSettings {
            rpc_url: chain.rpc.clone(),
            escrow: chain.escrow,
            hospital: chain.hospital.address(),
            payout: chain.payout,
            // The demo's publisher pays from the AI company's account.
            depositors: BTreeMap::from([(publisher.to_owned(), vec![chain.company.address()])]),
            confirmations: 1,
            settle_margin_secs: 3600,
            // A local anvil answers in microseconds; polling it often costs nothing.
            poll_interval: Duration::from_millis(100),
        },
        &chain.hospital,
        &ledger,
    )
    .map_err(|e| anyhow!("connecting the node to the escrow: {e}"))?;
    let url = pacs_url.clone();
    // A deliberate duplicate (issue 23): the CLI's job tests (crates/rapha-cli/tests/job.rs)
    // fill the same development parts. The one builder both could share would sit in
    // rapha-node, which the production binary links (I8), or here, which those tests must not
    // need.
    let parts = NodeParts {
        store: JobStore::open(&state.join("jobs.sqlite")).context("opening the job store")?,
        trust,
        policy: Policy::builtin().context("loading the built-in policy")?,
        hospital,
        pseudonymizer: Pseudonymizer::new(dev_hmac_key()),
        dicom: DicomConfig::default(),
        optouts: OptOuts::load(&cohort_dir.join("optouts.csv"))?,
        labels: Some(LabelTable::load(&cohort_dir.join("labels.csv"))?),
        pacs: Box::new(move || DicomWebClient::new(ClientOptions::new(url.clone()))),
        approvals: ApprovalStore::open(&state.join("approvals"))?,
        dpo_keys: vec![dpo_key().public()],
        evidence: Box::new(SimulatedProvider),
        verifier: EvidenceVerifier::development(),
        tpm_verifier: None,
        sandbox: SandboxConfig {
            runtime_root: state.join("runc-state"),
            ..SandboxConfig::default()
        },
        min_validation_patients: 2,
        node_key: key,
        node_name: "rapha-demo-hospital".to_owned(),
        receipts: ReceiptLog::open(&state.join("receipts.log"))
            .context("opening the receipt log")?,
        payments: Box::new(payments),
        audit: AuditLog::open(&state.join("audit.jsonl"), "rapha-demo-hospital", None)
            .context("opening the audit log")?,
        work_dir: state.join("work"),
        release_dir: state.join("released"),
    };
    let mut node = Node::new(parts)?;
    // The demo times the pipeline: a run's end and a cohort are committed as they happen, not
    // on the quanta a production node waits for (what the publisher could time).
    node.set_run_quantum(std::time::Duration::ZERO);
    node.set_cohort_quantum(std::time::Duration::ZERO);
    Ok(node)
}
