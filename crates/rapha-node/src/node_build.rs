//! One way to build a [`Node`] from its configuration, used by `run-job` and `serve` alike.
//!
//! ```text
//!  Config ──(CLI overrides: --hospital, --payout, --settler-key-file, --settle-margin-secs)─┐
//!                                                                                          v
//!  mode = "demo"        no evidence + development verifier (receipt: "none-development")
//!  mode = "production"  TPM quote (configured TCTI, AK enrolled once and kept in ak_file)
//!                       + SGX quote (Gramine's /dev/attestation, DCAP collateral file)
//!                       verified by EvidenceVerifier::production with the configured PCRs,
//!                       enclave measurements and accepted advisories
//! ```
//!
//! A production configuration can never yield the development verifier or "no evidence"
//! (**I8**): a missing `[attestation.tpm]` or `[attestation.sgx]`, an empty PCR policy, no
//! accepted enclave or no collateral file is a [`BuildError`], not a fallback. When the
//! platform has no SGX quote source (no Gramine, no SGX), the evidence carries the TPM quote
//! only and the production verifier refuses it: the job ends refused at the attestation step
//! and the depositor is refunded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use rapha_attest::sgx::{AllowedEnclave, SgxEvidence, SgxPolicy, SgxVerifier};
use rapha_attest::tpm::{connect, enroll_ak, CertifiedAk, TpmAttester, TpmVerifier, VendorRoots};
use rapha_attest::{AttestError, Evidence, EvidenceVerifier};
use rapha_bundle::TrustStore;
use rapha_core::Digest;
use rapha_dicom::exclusion::{LabelTable, OptOuts};
use rapha_dicom::{ClientOptions, DicomWebClient, Pseudonymizer};
use rapha_enclave::SandboxConfig;
use rapha_policy::{ApprovalStore, DpoPublicKey, Mode, Policy};
use rapha_receipt::{NodeKey, ReceiptLog};
use rapha_settle::WalletKey;

use crate::audit::AuditLog;
use crate::config::{parse_address, Config, SettlementConfig, SgxConfig, TpmConfig};
use crate::pipeline::chain::{ChainPayments, ChainSettings};
use crate::pipeline::{EvidenceProvider, NoEvidence, Node, NodeParts, TpmEvidence};
use crate::store::JobStore;

/// Why a node could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error("production mode needs [{section}] in the configuration: {what}")]
    ProductionAttestationMissing {
        section: &'static str,
        what: &'static str,
    },
    #[error("configuration key `{field}`: {message}")]
    Invalid { field: String, message: String },
    #[error("no [settlement] section and no {flag} flag: set settlement.{key} in the configuration (or pass {flag})")]
    SettlementMissing {
        key: &'static str,
        flag: &'static str,
    },
    #[error("settler key file {path}: {reason}")]
    SettlerKey { path: PathBuf, reason: String },
    #[error("TPM attestation key file {path}: {reason}; if the TPM was cleared or replaced, move the file away so the node enrols a new key")]
    AkFile { path: PathBuf, reason: String },
    #[error("TPM attestation setup: {0}")]
    Tpm(#[source] AttestError),
    #[error("trainer.gpus: {0}")]
    Gpu(#[source] rapha_enclave::cdi::CdiError),
}

/// CLI overrides of `[settlement]`, shared by `run-job` and `serve`. Each flag, when given,
/// replaces the configuration's value for this run only.
#[derive(Clone, Debug, Default, Args)]
pub struct SettlementOverrides {
    /// Overrides settlement.hospital_address: the hospital's account in the escrow (0x...).
    #[arg(long)]
    pub hospital: Option<String>,
    /// Overrides settlement.payout_address: the hospital's payout account (0x...).
    #[arg(long)]
    pub payout: Option<String>,
    /// Overrides settlement.settler_key_file: hex key that pays gas for settlements (0600).
    #[arg(long)]
    pub settler_key_file: Option<PathBuf>,
    /// Overrides settlement.settle_margin_secs: seconds kept after the trainer's wall time
    /// before a deposit may become refundable.
    #[arg(long, alias = "run-window-secs")]
    pub settle_margin_secs: Option<u64>,
}

impl SettlementOverrides {
    /// Applies the flags that were given to `cfg.settlement` (creating it when all three of
    /// hospital, payout and settler key are given on the command line).
    ///
    /// # Errors
    /// [`BuildError::SettlementMissing`] when neither the configuration nor a flag gives a
    /// required value; [`BuildError::Invalid`] for an address flag that is not an address.
    pub fn apply(&self, cfg: &mut Config) -> Result<(), BuildError> {
        let base = cfg.settlement.clone();
        let pick = |flag: &Option<String>, from: Option<&String>, key, name| {
            flag.clone()
                .or_else(|| from.cloned())
                .ok_or(BuildError::SettlementMissing { key, flag: name })
        };
        let hospital = pick(
            &self.hospital,
            base.as_ref().map(|s| &s.hospital_address),
            "hospital_address",
            "--hospital",
        )?;
        let payout = pick(
            &self.payout,
            base.as_ref().map(|s| &s.payout_address),
            "payout_address",
            "--payout",
        )?;
        let settler_key_file = self
            .settler_key_file
            .clone()
            .or_else(|| base.as_ref().map(|s| s.settler_key_file.clone()))
            .ok_or(BuildError::SettlementMissing {
                key: "settler_key_file",
                flag: "--settler-key-file",
            })?;
        for (flag, v) in [("--hospital", &hospital), ("--payout", &payout)] {
            parse_address(flag, v)
                .map_err(|(field, message)| BuildError::Invalid { field, message })?;
        }
        let settle_margin_secs = self
            .settle_margin_secs
            .or_else(|| base.as_ref().map(|s| s.settle_margin_secs))
            .unwrap_or(3600);
        cfg.settlement = Some(SettlementConfig {
            settler_key_file,
            hospital_address: hospital,
            payout_address: payout,
            settle_margin_secs,
        });
        Ok(())
    }
}

/// What step 6 of a job runs on: the evidence source and the verifiers.
pub struct AttestationParts {
    pub evidence: Box<dyn EvidenceProvider>,
    pub verifier: EvidenceVerifier,
    /// Demo only: checks a TPM section when one is present. Production leaves it `None`: the
    /// production verifier checks the TPM quote itself, and a second check of the same quote
    /// would see it as a replay.
    pub tpm_verifier: Option<TpmVerifier>,
}

impl std::fmt::Debug for AttestationParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestationParts")
            .field("verifier", &self.verifier.mode())
            .finish_non_exhaustive()
    }
}

/// The attestation of a node in `cfg`'s mode. Production enrols the TPM attestation key on
/// first use and keeps it in the AK file (mode 0600); later starts load it.
///
/// # Errors
/// Production: [`BuildError::ProductionAttestationMissing`] for a missing section,
/// [`BuildError::Invalid`] for an empty PCR policy, enclave allow-list or collateral file,
/// [`BuildError::Tpm`] when the TPM cannot be reached or the AK not enrolled or loaded,
/// [`BuildError::AkFile`] for an unreadable or unusable AK file.
pub fn attestation_from_config(cfg: &Config) -> Result<AttestationParts, BuildError> {
    match cfg.mode {
        Mode::Demo => Ok(AttestationParts {
            evidence: Box::new(NoEvidence),
            verifier: EvidenceVerifier::development(),
            tpm_verifier: None,
        }),
        Mode::Production => production_attestation(cfg),
    }
}

fn production_attestation(cfg: &Config) -> Result<AttestationParts, BuildError> {
    let tpm = cfg
        .attestation
        .tpm
        .as_ref()
        .ok_or(BuildError::ProductionAttestationMissing {
            section: "attestation.tpm",
            what: "the TPM's tcti and vendor_root_ca (jobs run only on an attested appliance)",
        })?;
    let sgx = cfg
        .attestation
        .sgx
        .as_ref()
        .ok_or(BuildError::ProductionAttestationMissing {
            section: "attestation.sgx",
            what: "the enclave runtime's measurements and DCAP collateral file",
        })?;
    let sgx_policy = sgx_policy(sgx)?;
    let collateral = sgx.collateral_file.clone().ok_or_else(|| BuildError::Invalid {
        field: "attestation.sgx.collateral_file".into(),
        message: "not set: DCAP quotes are verified against Intel collateral from the hospital's PCCS; point it at the collateral JSON file".into(),
    })?;
    let pcr_policy = tpm
        .pcr_policy()
        .map_err(|(field, message)| BuildError::Invalid { field, message })?;
    if pcr_policy.expected.is_empty() {
        return Err(BuildError::Invalid {
            field: "attestation.tpm.expected_pcrs".into(),
            message: "empty: a quote over no PCRs says nothing about how the appliance booted; record the values of PCRs 0-7 on the known-good appliance (`tpm2_pcrread sha256:0,1,2,3,4,5,6,7`)".into(),
        });
    }
    let pcrs = pcr_policy.selection();
    let roots = VendorRoots::from_pem_file(&tpm.vendor_root_ca).map_err(BuildError::Tpm)?;
    let ak_file = cfg
        .tpm_ak_file()
        .unwrap_or_else(|| cfg.paths.state_dir.join("attestation/tpm-ak.json"));
    let certified = load_or_enrol_ak(tpm, &roots, &ak_file)?;
    let record = certified.record();
    let attester = TpmAttester::open(&tpm.tcti, certified).map_err(|e| BuildError::AkFile {
        path: ak_file.clone(),
        reason: format!("the TPM at {} cannot load it: {e}", tpm.tcti),
    })?;
    let mut tpm_verifier = TpmVerifier::new(roots, pcr_policy);
    tpm_verifier
        .trust_ak(record)
        .map_err(|e| BuildError::AkFile {
            path: ak_file.clone(),
            reason: e.to_string(),
        })?;
    Ok(AttestationParts {
        evidence: Box::new(HardwareEvidence {
            tpm: TpmEvidence { attester, pcrs },
            sgx: GramineQuoteSource {
                dir: sgx.quote_source.clone(),
                collateral,
            },
        }),
        verifier: EvidenceVerifier::production(tpm_verifier, SgxVerifier::new(sgx_policy)),
        tpm_verifier: None,
    })
}

fn sgx_policy(sgx: &SgxConfig) -> Result<SgxPolicy, BuildError> {
    let digest = |field: String, v: &str| {
        let mut b = [0u8; 32];
        hex::decode_to_slice(v, &mut b)
            .map(|()| Digest::from_bytes(b))
            .map_err(|e| BuildError::Invalid {
                field,
                message: e.to_string(),
            })
    };
    let mut allowed = Vec::new();
    for (i, m) in sgx.mrenclave.iter().enumerate() {
        allowed.push(AllowedEnclave::MrEnclave {
            mr_enclave: digest(format!("attestation.sgx.mrenclave[{i}]"), m)?,
        });
    }
    for (i, m) in sgx.mrsigner.iter().enumerate() {
        allowed.push(AllowedEnclave::MrSigner {
            mr_signer: digest(format!("attestation.sgx.mrsigner[{i}]"), m)?,
            isv_prod_id: sgx.isv_prod_id,
            min_isv_svn: sgx.min_isv_svn,
        });
    }
    if allowed.is_empty() {
        return Err(BuildError::Invalid {
            field: "attestation.sgx.mrenclave".into(),
            message: "no accepted enclave (mrenclave and mrsigner are both empty): no job could ever be attested; set the enclave runtime's MRENCLAVE or MRSIGNER".into(),
        });
    }
    Ok(SgxPolicy {
        accepted_advisories: sgx.accepted_advisories.iter().cloned().collect(),
        allowed_enclaves: allowed,
    })
}

/// Loads the enrolled AK from `path`, or enrols one on the TPM and keeps it there (0600,
/// written to a temporary file and renamed, so a crash leaves no half-written key).
///
/// # Errors
/// [`BuildError::AkFile`] for a file that is unreadable, too open or not an AK record;
/// [`BuildError::Tpm`] when enrolment fails.
/// The EK certificate of a loaded record is checked against the roots when the verifier
/// trusts the AK ([`TpmVerifier::trust_ak`]).
pub fn load_or_enrol_ak(
    tpm: &TpmConfig,
    roots: &VendorRoots,
    path: &Path,
) -> Result<CertifiedAk, BuildError> {
    let ak_err = |reason: String| BuildError::AkFile {
        path: path.to_owned(),
        reason,
    };
    if path.exists() {
        let bytes =
            rapha_core::fs::read_secret(path, 1 << 20).map_err(|e| ak_err(e.to_string()))?;
        let ak: CertifiedAk = serde_json::from_slice(&bytes)
            .map_err(|e| ak_err(format!("not an enrolled attestation key record: {e}")))?;
        tracing::info!(ak_file = %path.display(), "TPM attestation key loaded");
        return Ok(ak);
    }
    let mut ctx = connect(&tpm.tcti).map_err(BuildError::Tpm)?;
    let ak = enroll_ak(&mut ctx, roots).map_err(BuildError::Tpm)?;
    drop(ctx);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ak_err(format!("creating its directory: {e}")))?;
    }
    let json = serde_json::to_vec_pretty(&ak).map_err(|e| ak_err(e.to_string()))?;
    let tmp = path.with_extension("json.new");
    let _ = std::fs::remove_file(&tmp);
    rapha_policy::write_secret_file(&tmp, &json).map_err(|e| ak_err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| ak_err(e.to_string()))?;
    tracing::info!(
        ak_file = %path.display(),
        ak_name = %hex::encode(ak.ak_name()),
        "TPM attestation key enrolled against the EK"
    );
    Ok(ak)
}

/// Gramine's attestation pseudo-files: write the report data, read the DCAP quote.
#[derive(Debug, Clone)]
pub struct GramineQuoteSource {
    /// `/dev/attestation` inside a Gramine-SGX enclave.
    pub dir: PathBuf,
    /// DCAP collateral JSON (refreshed from the PCCS).
    pub collateral: PathBuf,
}

/// Why no SGX quote was taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SgxSourceError {
    #[error("no SGX quote source: {0} is absent (the node is not running inside Gramine-SGX on SGX hardware)")]
    Absent(PathBuf),
    #[error("SGX quote source {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("DCAP collateral file {path}: {reason}")]
    Collateral { path: PathBuf, reason: String },
}

impl GramineQuoteSource {
    /// True when the Gramine interface is present and offers DCAP quotes.
    pub fn present(&self) -> bool {
        let kind = std::fs::read_to_string(self.dir.join("attestation_type")).unwrap_or_default();
        self.dir.join("quote").exists()
            && self.dir.join("user_report_data").exists()
            && kind.trim() != "none"
    }

    /// A DCAP quote whose report data bytes 0..32 are `binding` (32..64 zero), with the
    /// collateral to verify it.
    ///
    /// # Errors
    /// [`SgxSourceError::Absent`] when the interface is not there; otherwise the I/O or
    /// collateral error.
    pub fn quote(&self, binding: &Digest) -> Result<SgxEvidence, SgxSourceError> {
        if !self.present() {
            return Err(SgxSourceError::Absent(self.dir.clone()));
        }
        let io = |path: PathBuf| {
            move |e: std::io::Error| SgxSourceError::Io {
                path,
                reason: e.to_string(),
            }
        };
        let report_data_path = self.dir.join("user_report_data");
        let mut report_data = [0u8; 64];
        report_data[..32].copy_from_slice(binding.as_bytes());
        {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&report_data_path)
                .map_err(io(report_data_path.clone()))?;
            f.write_all(&report_data)
                .map_err(io(report_data_path.clone()))?;
        }
        let quote_path = self.dir.join("quote");
        let quote = std::fs::read(&quote_path).map_err(io(quote_path.clone()))?;
        let coll_err = |reason: String| SgxSourceError::Collateral {
            path: self.collateral.clone(),
            reason,
        };
        let text = std::fs::read(&self.collateral).map_err(|e| coll_err(e.to_string()))?;
        let collateral = serde_json::from_slice(&text)
            .map_err(|e| coll_err(format!("not DCAP collateral JSON: {e}")))?;
        Ok(SgxEvidence { quote, collateral })
    }
}

/// Production evidence: the TPM quote, and the SGX quote when the platform has one. Without
/// an SGX quote source the evidence carries no SGX section, and the production verifier
/// refuses it ("evidence carries no SGX quote"): fail closed, never a weaker level.
pub struct HardwareEvidence {
    pub tpm: TpmEvidence,
    pub sgx: GramineQuoteSource,
}

impl EvidenceProvider for HardwareEvidence {
    fn evidence(&mut self, binding: &Digest) -> Result<Evidence, String> {
        let mut ev = self.tpm.evidence(binding)?;
        match self.sgx.quote(binding) {
            Ok(sgx) => ev.sgx = Some(sgx),
            Err(SgxSourceError::Absent(dir)) => tracing::warn!(
                quote_source = %dir.display(),
                "no SGX quote source: the evidence has no SGX quote and production verification will refuse it"
            ),
            Err(e) => return Err(e.to_string()),
        }
        Ok(ev)
    }
}

/// Builds the node's pipeline from its configuration (with any settlement overrides already
/// applied, see [`SettlementOverrides::apply`]).
///
/// # Errors
/// A [`BuildError`] (attestation, settlement), or any unreadable key, store, policy or trust
/// store, or an unreachable chain.
pub fn node_from_config(cfg: &Config) -> anyhow::Result<Node> {
    let settlement = cfg
        .settlement
        .as_ref()
        .ok_or(BuildError::SettlementMissing {
            key: "hospital_address",
            flag: "--hospital",
        })?;
    let state = &cfg.paths.state_dir;
    std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
    // Attestation first: a production node with an unusable TPM or SGX setup stops here,
    // before anything else is opened.
    let attestation = attestation_from_config(cfg)?;
    let trust = TrustStore::open(&cfg.trust.store).context("trust store")?;
    let hospital = cfg
        .hospital_policy(&trust)
        .map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
    let Some(endpoint) = cfg.dicomweb.endpoints.first() else {
        anyhow::bail!("dicomweb.endpoints is empty: add a [[dicomweb.endpoints]] entry");
    };
    let url = endpoint.url.clone();
    let ca = endpoint.ca_file.clone();
    // Read once at start: the credentials every PACS request of this node carries.
    let auth = endpoint.auth.load().map_err(|(path, e)| {
        anyhow::anyhow!(
            "dicomweb.endpoints auth: credential file {}: {e}",
            path.display()
        )
    })?;
    let pacs_limits = cfg.dicom.clone().unwrap_or_default().pacs;
    let dpo_keys = cfg
        .keys
        .dpo_public_keys
        .iter()
        .map(|k| k.parse::<DpoPublicKey>())
        .collect::<Result<Vec<_>, _>>()
        .context("keys.dpo_public_keys")?;
    let settler = read_settler_key(&settlement.settler_key_file)?;
    let addr = |field: &str, v: &str| {
        parse_address(field, v).map_err(|(field, message)| BuildError::Invalid { field, message })
    };
    let payments = ChainPayments::connect(
        &ChainSettings {
            rpc_url: cfg.chain.rpc_url.clone(),
            escrow: addr("chain.escrow_address", &cfg.chain.escrow_address)?,
            hospital: addr("settlement.hospital_address", &settlement.hospital_address)?,
            payout: addr("settlement.payout_address", &settlement.payout_address)?,
            depositors: cfg
                .depositor_accounts()
                .map_err(|(field, message)| BuildError::Invalid { field, message })?,
            confirmations: cfg.chain.confirmations,
            settle_margin_secs: settlement.settle_margin_secs,
            poll_interval: Duration::from_millis(250),
        },
        &settler,
        &state.join("settlement-ledger.sqlite"),
    )
    .map_err(|e| anyhow::anyhow!("chain: {e}"))?;
    let parts = NodeParts {
        store: JobStore::open(&state.join("jobs.sqlite"))?,
        trust,
        policy: Policy::load(&cfg.policy.path)?,
        hospital,
        pseudonymizer: Pseudonymizer::new(crate::hmac_key::load(cfg)?.0),
        dicom: cfg.dicom.clone().unwrap_or_default(),
        optouts: OptOuts::load(&cfg.cohort.opt_out_file)?,
        labels: cfg
            .cohort
            .labels_file
            .as_deref()
            .map(LabelTable::load)
            .transpose()?,
        pacs: Box::new(move || {
            let mut o = ClientOptions::new(url.clone());
            o.ca_pem.clone_from(&ca);
            o.auth.clone_from(&auth);
            o.timeout = std::time::Duration::from_secs(pacs_limits.connect_timeout_seconds);
            DicomWebClient::new(o).map(|c| c.with_limits(pacs_limits.clone()))
        }),
        approvals: ApprovalStore::open(&cfg.approvals_dir())?,
        dpo_keys,
        evidence: attestation.evidence,
        verifier: attestation.verifier,
        tpm_verifier: attestation.tpm_verifier,
        sandbox: SandboxConfig {
            runtime: cfg.trainer.runtime.clone(),
            runtime_root: state.join("runc"),
            gpus: gpu_devices(&cfg.trainer)?,
            ..SandboxConfig::default()
        },
        min_validation_patients: usize::try_from(cfg.policy.min_validation_patients)
            .unwrap_or(usize::MAX),
        node_key: NodeKey::load(&cfg.keys.node_key_file)?,
        node_name: "rapha-node".into(),
        receipts: ReceiptLog::open(&state.join("receipts"))?,
        payments: Box::new(payments),
        audit: AuditLog::open(&state.join("audit.jsonl"), "rapha-node", None)?,
        work_dir: cfg.paths.data_dir.join("work"),
        release_dir: cfg.paths.data_dir.join("released"),
    };
    let mut node = Node::new(parts)?;
    if let Some(a) = &cfg.approval {
        a.check().map_err(|e| anyhow::anyhow!("{e}"))?;
        let passkeys = crate::passkeys::Passkeys::open(
            &state.join("passkeys.sqlite"),
            &a.rp_id,
            a.origins.clone(),
            node.receipt_log(),
        )
        .map_err(|e| anyhow::anyhow!("passkey store: {e}"))?;
        node.set_passkeys(passkeys, a.require_passkey);
    }
    node.set_run_quantum(Duration::from_secs(cfg.trainer.run_quantum_secs));
    node.set_rules(cfg.job_rules());
    node.set_privacy_audit(crate::pipeline::PrivacyAudit {
        runner: cfg.audit.as_ref().map(|a| (a.runner.clone(), a.limits())),
        holdout_fraction: cfg.policy.audit.holdout_fraction,
        min_patients: usize::try_from(cfg.policy.audit.min_patients).unwrap_or(usize::MAX),
        max_attack_auc: cfg.policy.audit.max_attack_auc,
    });
    Ok(node)
}

/// The GPUs of `[trainer] gpus`, resolved from the host's CDI specs once, at start (`None`
/// when none are configured).
///
/// # Errors
/// [`BuildError::Gpu`]: a name no spec defines, a spec that does not parse or is refused.
pub fn gpu_devices(
    trainer: &crate::config::TrainerConfig,
) -> Result<Option<std::sync::Arc<rapha_enclave::cdi::GpuDevices>>, BuildError> {
    if trainer.gpus.is_empty() {
        return Ok(None);
    }
    rapha_enclave::cdi::GpuDevices::resolve(&trainer.cdi_dirs(), &trainer.gpus)
        .map(|g| Some(std::sync::Arc::new(g)))
        .map_err(BuildError::Gpu)
}

/// Reads the settlement wallet key (hex, mode 0600 or stricter).
///
/// # Errors
/// [`BuildError::SettlerKey`] naming the file and what is wrong.
pub fn read_settler_key(path: &Path) -> Result<WalletKey, BuildError> {
    let err = |reason: String| BuildError::SettlerKey {
        path: path.to_owned(),
        reason,
    };
    let text = rapha_core::fs::read_secret_text(path, 4096).map_err(|e| match e {
        rapha_core::fs::SecretFileError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            err(format!(
                "{io}; create one with `rapha-node keygen --settler --out {}` and fund its address with gas",
                path.display()
            ))
        }
        e => err(e.to_string()),
    })?;
    WalletKey::from_hex(text.trim()).map_err(|_| {
        err("not a secp256k1 key in hex (64 hex digits, optionally 0x-prefixed)".into())
    })
}
