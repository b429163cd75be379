//! The node configuration file (TOML). Every key is documented in `docs/configuration.md`.
//!
//! Parsing is strict: an unknown key or a value of the wrong type is an error that names the
//! key by its full path (`chain.chain_id`), so a typo cannot silently fall back to a default.
//! Relative paths are resolved against the directory of the configuration file.
//!
//! Loading a config checks its shape only. Whether the things it points at are real and usable
//! (keys, PACS, TPM, chain…) is `doctor`'s job ([`crate::doctor::run_doctor`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rapha_bundle::TrustStore;
use rapha_core::Usdc;
use rapha_policy::{HospitalPolicy, JobBudget, Mode, OutputLimits, PublisherTrust, ScopeLimits};
use serde::{Deserialize, Serialize};

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration file {path}: key `{field}`: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

/// The whole node configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `production` or `demo`.
    pub mode: Mode,
    pub dicomweb: DicomWebConfig,
    /// Scope limits, record fields and exclusions (rapha-dicom's section). Required in
    /// production: `doctor` fails when it is missing.
    #[serde(default)]
    pub dicom: Option<rapha_dicom::DicomConfig>,
    pub keys: KeysConfig,
    pub cohort: CohortConfig,
    pub policy: PolicyConfig,
    pub trust: TrustConfig,
    pub attestation: AttestationConfig,
    pub trainer: TrainerConfig,
    pub chain: ChainConfig,
    /// Who is paid and who pays gas for settlements. Required to build a node; the
    /// `--hospital`, `--payout` and `--settler-key-file` flags of `run-job`/`serve` override it.
    #[serde(default)]
    pub settlement: Option<SettlementConfig>,
    /// `[depositors]`: publisher name (as in the trust store) to the accounts (0x addresses)
    /// it may pay its jobs' escrow deposits from. A job runs only on a deposit from the
    /// account its request names, and only if that account is listed for its publisher.
    #[serde(default)]
    pub depositors: BTreeMap<String, Vec<String>>,
    /// The HTTP API of `rapha-node serve`.
    #[serde(default)]
    pub api: Option<ApiConfig>,
    pub paths: PathsConfig,
}

/// `[dicomweb]`: the hospital PACS.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomWebConfig {
    /// One or more DICOMweb roots; the first that answers is used.
    pub endpoints: Vec<DicomWebEndpoint>,
}

/// One DICOMweb endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomWebEndpoint {
    /// DICOMweb root, e.g. `https://pacs.hospital.example/dicom-web`. Production requires https.
    pub url: String,
    /// PEM file with the CA certificate(s) that issued the PACS's TLS certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How to authenticate.
    #[serde(default)]
    pub auth: DicomWebAuth,
}

/// PACS authentication. Secrets live in files (mode 0600), never in the config.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DicomWebAuth {
    #[default]
    None,
    /// `Authorization: Bearer <token>`; the token is read from `token_file`.
    Bearer { token_file: PathBuf },
    /// Any header (e.g. `Authorization: Basic ...` or an API key); value read from `value_file`.
    Header { name: String, value_file: PathBuf },
}

/// `[keys]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// The 32-byte PHI HMAC key (raw bytes, mode 0600).
    pub hmac_key_file: PathBuf,
    /// The node's secp256k1 key (64 hex digits, mode 0600): signs receipts and settlements.
    pub node_key_file: PathBuf,
    /// Ed25519 public keys (64 hex digits each) of the DPOs whose approvals count.
    pub dpo_public_keys: Vec<String>,
}

/// `[cohort]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortConfig {
    /// CSV with header `PatientID`, one opted-out patient per line.
    pub opt_out_file: PathBuf,
    /// Hospital label table: CSV `AccessionNumber,label`.
    #[serde(default)]
    pub labels_file: Option<PathBuf>,
    /// Most instances one cohort may keep; a larger one is refused like an empty one.
    #[serde(default = "default_max_instances")]
    pub max_instances: u64,
    /// The cohort step's result is committed on a whole number of these seconds after the
    /// job's admission (default 300; 1 to 86400).
    #[serde(default = "default_commit_quantum_secs")]
    pub commit_quantum_secs: u64,
}

fn default_commit_quantum_secs() -> u64 {
    crate::pipeline::COHORT_QUANTUM.as_secs()
}

fn default_max_instances() -> u64 {
    crate::pipeline::DEFAULT_MAX_COHORT_INSTANCES
}

/// `[policy]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The Rego policy (package `rapha`).
    pub path: PathBuf,
    /// Directory with the policy's Rego unit tests (`*_test.rego`); default: the policy's
    /// directory.
    #[serde(default)]
    pub tests_dir: Option<PathBuf>,
    /// Modalities made available for training.
    pub modalities: Vec<String>,
    pub outputs: OutputLimits,
    /// Lowest fee accepted, in USDC (decimal string, e.g. "100.00").
    pub min_fee_usdc: String,
    pub budget: JobBudget,
    #[serde(default = "default_min_patients")]
    pub min_patients: u64,
    #[serde(default = "default_min_validation_patients")]
    pub min_validation_patients: u64,
    /// Publishers whose jobs may name a pseudonym linkage group (their records then join the
    /// group's other jobs' records); every other job's pseudonyms are its own.
    #[serde(default)]
    pub allow_linkage: Vec<String>,
    /// Whether a job of a linkage group must ask the same query as the group's earlier jobs
    /// (default true): two jobs of one group whose queries differ by one accession attribute
    /// that accession's records.
    #[serde(default = "default_true")]
    pub linkage_same_query: bool,
    /// Smallest `validation_percent` a job may ask for (default 10).
    #[serde(default = "default_min_validation_percent")]
    pub min_validation_percent: u8,
    /// Largest `validation_percent` a job may ask for (default 50; at most 90).
    #[serde(default = "default_max_validation_percent")]
    pub max_validation_percent: u8,
}

fn default_true() -> bool {
    true
}

fn default_min_validation_percent() -> u8 {
    crate::pipeline::DEFAULT_MIN_VALIDATION_PERCENT
}
fn default_max_validation_percent() -> u8 {
    crate::pipeline::DEFAULT_MAX_VALIDATION_PERCENT
}

fn default_min_patients() -> u64 {
    rapha_policy::DEFAULT_MIN_PATIENTS
}
fn default_min_validation_patients() -> u64 {
    rapha_policy::DEFAULT_MIN_VALIDATION_PATIENTS
}

/// `[trust]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Trust store directory: one TOML file per trusted publisher (`rapha-node trust add`).
    pub store: PathBuf,
}

/// `[attestation]`: the hardware backends and what they must measure.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    #[serde(default)]
    pub tpm: Option<TpmConfig>,
    #[serde(default)]
    pub sgx: Option<SgxConfig>,
}

/// `[attestation.tpm]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmConfig {
    /// TSS2 TCTI string, e.g. `device:/dev/tpmrm0`.
    pub tcti: String,
    /// PEM file with the TPM vendor's EK root CA certificate(s).
    pub vendor_root_ca: PathBuf,
    /// PCR bank whose values are quoted (only `sha256` is supported).
    #[serde(default = "default_pcr_bank")]
    pub pcr_bank: String,
    /// Expected PCR values: PCR index (as a string key) to hex digest. The PCRs quoted for
    /// every job are exactly these indices.
    #[serde(default)]
    pub expected_pcrs: BTreeMap<String, String>,
    /// Where the node keeps its enrolled attestation key (JSON, mode 0600; the private part
    /// is wrapped by the TPM and loads on no other TPM). Enrolled at first start when absent.
    /// Default: `<paths.state_dir>/attestation/tpm-ak.json`.
    #[serde(default)]
    pub ak_file: Option<PathBuf>,
}

fn default_pcr_bank() -> String {
    "sha256".to_owned()
}

/// `[attestation.sgx]`: the enclave runtime's SGX quote and what it must measure.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgxConfig {
    /// Gramine's attestation interface: the node writes the job binding to
    /// `<quote_source>/user_report_data` and reads the DCAP quote from `<quote_source>/quote`.
    #[serde(default = "default_quote_source")]
    pub quote_source: PathBuf,
    /// DCAP collateral (PCK CRL and chain, root CA CRL, TCB info, QE identity) as JSON, kept
    /// fresh from the hospital's PCCS. Signed by Intel: the verifier checks every part.
    #[serde(default)]
    pub collateral_file: Option<PathBuf>,
    /// Accepted MRENCLAVE values of the enclave runtime (64 hex digits each).
    #[serde(default)]
    pub mrenclave: Vec<String>,
    /// Accepted MRSIGNER values (64 hex digits each), with `isv_prod_id` and `min_isv_svn`.
    #[serde(default)]
    pub mrsigner: Vec<String>,
    /// ISV product id the MRSIGNER entries are for.
    #[serde(default)]
    pub isv_prod_id: u16,
    /// Lowest accepted ISV security version (MRSIGNER entries).
    #[serde(default)]
    pub min_isv_svn: u16,
    /// Intel advisory ids (e.g. `INTEL-SA-00615`) accepted on a platform whose TCB is not
    /// UpToDate. Empty: only UpToDate platforms pass.
    #[serde(default)]
    pub accepted_advisories: Vec<String>,
}

fn default_quote_source() -> PathBuf {
    PathBuf::from("/dev/attestation")
}

impl TpmConfig {
    /// The expected PCR values, parsed: the selection quoted for every job is their indices.
    ///
    /// # Errors
    /// `(key path, message)` for an index that is not a PCR 0-23 or a value that is not a
    /// SHA-256 digest.
    pub fn pcr_policy(&self) -> Result<rapha_attest::tpm::PcrPolicy, (String, String)> {
        let mut expected = BTreeMap::new();
        for (index, digest) in &self.expected_pcrs {
            let field = format!("attestation.tpm.expected_pcrs.{index}");
            let i = index.parse::<u8>().ok().filter(|i| *i <= 23).ok_or_else(|| {
                invalid(
                    &field,
                    format!("{index:?} is not a PCR index 0-23; write each entry as \"INDEX\" = \"HEX DIGEST\""),
                )
            })?;
            let d = parse_digest(&field, digest).map_err(|(f, _)| {
                invalid(
                    &f,
                    format!("{digest:?} is not a 32-byte sha256 digest in hex; read it on the known-good appliance with `tpm2_pcrread sha256:{index}`"),
                )
            })?;
            expected.insert(i, d);
        }
        Ok(rapha_attest::tpm::PcrPolicy { expected })
    }
}

fn invalid(field: &str, message: impl Into<String>) -> (String, String) {
    (field.to_owned(), message.into())
}

/// Parses a `0x` + 40 hex digit account address.
///
/// # Errors
/// `(field, message)` saying what an address looks like.
pub fn parse_address(
    field: &str,
    value: &str,
) -> Result<alloy::primitives::Address, (String, String)> {
    let ok = value
        .strip_prefix("0x")
        .is_some_and(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    let parsed = ok
        .then(|| value.parse::<alloy::primitives::Address>().ok())
        .flatten();
    parsed.ok_or_else(|| {
        invalid(
            field,
            format!("{value:?} is not an account address (0x followed by 40 hex digits)"),
        )
    })
}

fn parse_digest(field: &str, value: &str) -> Result<rapha_core::Digest, (String, String)> {
    let mut bytes = [0u8; 32];
    match hex::decode_to_slice(value, &mut bytes) {
        Ok(()) => Ok(rapha_core::Digest::from_bytes(bytes)),
        Err(e) => Err(invalid(field, e.to_string())),
    }
}

/// TCTI module names the TSS2 loader knows, and what follows the colon for each.
const TCTI_KINDS: &[&str] = &[
    "device",
    "mssim",
    "swtpm",
    "tabrmd",
    "libtpms",
    "cmd",
    "spi-helper",
];

fn validate_tcti(tcti: &str) -> Result<(), (String, String)> {
    let kind = tcti.split(':').next().unwrap_or_default();
    if TCTI_KINDS.contains(&kind) && !tcti.trim().is_empty() {
        return Ok(());
    }
    Err(invalid(
        "attestation.tpm.tcti",
        format!(
            "{tcti:?} is not a TSS2 TCTI: use \"device:/dev/tpmrm0\" (the kernel resource manager), \"tabrmd\" or \"swtpm:host=HOST,port=PORT\""
        ),
    ))
}

/// `[trainer]`: the enterprise-node trainer command.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerConfig {
    /// Absolute path of the OCI runtime (e.g. `/usr/sbin/runc`).
    pub runtime: PathBuf,
    /// Extra global options passed to the runtime before its subcommand.
    #[serde(default)]
    pub runtime_args: Vec<String>,
    /// `[trainer.limits]`: the range each resource a bundle requests must fall in. With
    /// `gpus` configured and no `gpus` bound, a job may declare up to one GPU per name.
    #[serde(default)]
    pub limits: rapha_core::ResourceBounds,
    /// CDI device names (`VENDOR/CLASS=NAME`, e.g. `nvidia.com/gpu=0`): a job declaring `n`
    /// GPUs (`resources.gpus`) gets the first `n`; only this configuration picks devices, never
    /// a bundle. Empty (the default): jobs declaring a GPU are refused at admission.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    /// Directories of the host's CDI specs, lowest priority first (default `/etc/cdi`,
    /// `/var/run/cdi`, as container runtimes read them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdi_spec_dirs: Option<Vec<PathBuf>>,
    /// A run's end is committed on a whole number of these seconds after its start, so the
    /// publisher learns its trainer's run length in such steps only (default 60; 1 to 3600).
    #[serde(default = "default_run_quantum_secs")]
    pub run_quantum_secs: u64,
}

impl TrainerConfig {
    /// The CDI spec directories in force, lowest priority first.
    pub fn cdi_dirs(&self) -> Vec<PathBuf> {
        self.cdi_spec_dirs.clone().unwrap_or_else(|| {
            rapha_enclave::cdi::DEFAULT_SPEC_DIRS
                .iter()
                .map(PathBuf::from)
                .collect()
        })
    }
}

fn default_run_quantum_secs() -> u64 {
    crate::pipeline::RUN_QUANTUM.as_secs()
}

/// `[chain]`: settlement.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// JSON-RPC endpoint.
    pub rpc_url: String,
    pub chain_id: u64,
    /// USDC token contract; must be the official one for `chain_id`.
    pub usdc_address: String,
    /// Rapha escrow contract.
    pub escrow_address: String,
    /// Blocks to wait before a deposit counts as confirmed.
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
    /// Accept a token other than official USDC (tests, staging). `doctor` always flags it as
    /// non-production.
    #[serde(default)]
    pub test_token: bool,
}

fn default_confirmations() -> u64 {
    12
}

/// `[settlement]`: the hospital's accounts in the escrow and the key that pays gas.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementConfig {
    /// File with the hex secp256k1 key of the account that sends settlement transactions
    /// (mode 0600): `rapha-node keygen --settler`. Needs gas, never holds fees.
    pub settler_key_file: PathBuf,
    /// The hospital's account registered in the escrow (0x address).
    pub hospital_address: String,
    /// The payout account registered for the hospital (0x address): receives its 70%.
    pub payout_address: String,
    /// Seconds kept after the trainer's wall time for guard, receipt, settlement and its
    /// confirmations: a deposit is accepted, and its trainer started, only if its refund
    /// deadline is at least chain time + wall time + this. (`run_window_secs`, its name
    /// before the wall time counted separately, is read as this.)
    #[serde(default = "default_settle_margin_secs", alias = "run_window_secs")]
    pub settle_margin_secs: u64,
}

fn default_settle_margin_secs() -> u64 {
    3600
}

/// `[api]`: where `rapha-node serve` listens and whom it lets in.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: std::net::SocketAddr,
    /// Token file: one `<publisher|dpo|admin> <token>` per line (mode 0600).
    pub tokens_file: PathBuf,
    /// Largest bundle upload (`POST /v1/bundles`) in bytes, also the largest file and the
    /// largest unpacked total in it. Uploads are staged under `paths.data_dir/bundles`.
    #[serde(default = "default_max_bundle_bytes")]
    pub max_bundle_bytes: u64,
    /// Jobs one publisher may have not yet settled (default 4).
    #[serde(default = "default_max_jobs_in_flight")]
    pub max_jobs_in_flight: u64,
    /// Bytes of bundles one publisher may keep stored (default four of the largest uploads,
    /// [`ApiConfig::publisher_bundle_quota`]).
    #[serde(default)]
    pub max_publisher_bundle_bytes: Option<u64>,
    /// Downloads of released outputs one caller (a publisher, or a hospital role) may have
    /// under way at once; more are refused 429 `too-many-downloads` (default 2).
    #[serde(default = "default_downloads_per_caller")]
    pub max_downloads_per_caller: usize,
    /// Longest one download of a released output may take, in seconds (default 600).
    #[serde(default = "default_download_timeout_secs")]
    pub download_timeout_secs: u64,
    /// Longest any response may wait on a client that reads nothing, in seconds, before its
    /// connection is closed (default 60).
    #[serde(default = "default_download_stall_secs")]
    pub download_stall_secs: u64,
    /// A publisher's sustained API calls per second, across its tokens (default 2); calls past
    /// it and the burst are 429 `rate-limited`. The hospital's roles are not limited.
    #[serde(default = "default_publisher_calls_per_sec")]
    pub publisher_calls_per_sec: u32,
    /// A publisher's burst of API calls (default 30).
    #[serde(default = "default_publisher_call_burst")]
    pub publisher_call_burst: u32,
}

impl ApiConfig {
    /// The limit on a publisher's call rate in force.
    pub fn publisher_rate(&self) -> crate::api::RateLimit {
        crate::api::RateLimit {
            per_sec: self.publisher_calls_per_sec,
            burst: self.publisher_call_burst,
        }
    }

    /// The limits on downloads of released outputs in force.
    pub fn download_limits(&self) -> crate::api::DownloadLimits {
        crate::api::DownloadLimits {
            per_caller: self.max_downloads_per_caller,
            send_timeout: std::time::Duration::from_secs(self.download_timeout_secs),
            stall_timeout: std::time::Duration::from_secs(self.download_stall_secs),
        }
    }

    /// The per-publisher bundle storage quota in force: as configured, else four times
    /// `max_bundle_bytes` (8 GiB with the defaults).
    pub fn publisher_bundle_quota(&self) -> u64 {
        self.max_publisher_bundle_bytes
            .unwrap_or_else(|| self.max_bundle_bytes.saturating_mul(4))
    }
}

fn default_publisher_calls_per_sec() -> u32 {
    crate::api::DEFAULT_PUBLISHER_CALLS_PER_SEC
}

fn default_publisher_call_burst() -> u32 {
    crate::api::DEFAULT_PUBLISHER_BURST
}

fn default_downloads_per_caller() -> usize {
    crate::api::DEFAULT_DOWNLOADS_PER_CALLER
}

fn default_download_timeout_secs() -> u64 {
    crate::api::DEFAULT_DOWNLOAD_TIMEOUT.as_secs()
}

fn default_download_stall_secs() -> u64 {
    crate::api::DEFAULT_STALL_TIMEOUT.as_secs()
}

/// Most concurrent downloads per caller accepted in `[api] max_downloads_per_caller`.
pub const MAX_DOWNLOADS_PER_CALLER: usize = 16;

fn default_max_jobs_in_flight() -> u64 {
    crate::api::DEFAULT_MAX_JOBS_IN_FLIGHT
}

/// The default `[api] max_bundle_bytes`: 2 GiB.
pub fn default_max_bundle_bytes() -> u64 {
    crate::api::BUNDLE_BODY_LIMIT
}

/// Smallest `[api] max_bundle_bytes` accepted (no trainer image fits in less).
pub const MIN_BUNDLE_BYTES: u64 = 1 << 20;
/// Largest `[api] max_bundle_bytes` accepted (a larger figure is taken for a typo).
pub const MAX_BUNDLE_BYTES: u64 = 64 << 30;

/// Largest `[cohort] max_instances` accepted: at about 2 KB per stored entry, the cohort
/// artifact stays within the node's limit ([`crate::pipeline::MAX_COHORT_ARTIFACT_BYTES`]).
pub const MAX_COHORT_INSTANCES: u64 = 200_000;

/// The API's default listen address, 127.0.0.1:8420 (loopback: put a TLS proxy in front).
pub fn default_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 8420))
}

/// `[paths]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsConfig {
    /// Bulk data: unpacked bundles, job work directories, outputs.
    pub data_dir: PathBuf,
    /// Job store, approvals, receipt log.
    pub state_dir: PathBuf,
}

impl Config {
    /// Reads and parses a configuration file and resolves its relative paths.
    ///
    /// # Errors
    /// [`ConfigError::Io`], or [`ConfigError::Invalid`] naming the key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|(field, message)| ConfigError::Invalid {
            path: path.to_owned(),
            field,
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses TOML text and checks the shape of every value (addresses, TCTI, PCR digests,
    /// enclave measurements, …). The error is `(key path, message)`.
    ///
    /// # Errors
    /// The key path (`.` for the whole document) and what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, (String, String)> {
        let de = toml::Deserializer::new(text);
        let mut config: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            // toml's message has the line and a pointer; keep it, it shows where.
            (field, inner.to_string().trim_end().to_owned())
        })?;
        // Naming devices admits up to one GPU per name unless the bound says otherwise.
        if !config.trainer.gpus.is_empty() && config.trainer.limits.gpus.is_none() {
            let names = u64::try_from(config.trainer.gpus.len()).unwrap_or(u64::MAX);
            config.trainer.limits.gpus = Some(rapha_core::Bound::new(0, names));
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks each value's shape; what the values point at is `doctor`'s to check.
    fn validate(&self) -> Result<(), (String, String)> {
        let c = &self.chain;
        if !(c.rpc_url.starts_with("http://") || c.rpc_url.starts_with("https://")) {
            return Err(invalid(
                "chain.rpc_url",
                format!(
                    "{:?} is not an http(s) URL of a JSON-RPC endpoint",
                    c.rpc_url
                ),
            ));
        }
        parse_address("chain.usdc_address", &c.usdc_address)?;
        parse_address("chain.escrow_address", &c.escrow_address)?;
        if c.confirmations == 0 {
            return Err(invalid(
                "chain.confirmations",
                "0 would count a deposit before any block confirms it; use at least 1 (12 on Polygon PoS)",
            ));
        }
        if let Some(s) = &self.settlement {
            parse_address("settlement.hospital_address", &s.hospital_address)?;
            parse_address("settlement.payout_address", &s.payout_address)?;
            if s.settle_margin_secs == 0 {
                return Err(invalid(
                    "settlement.settle_margin_secs",
                    "0 leaves the depositor free to take the fee back before the settlement lands; use the time guard, receipt and settlement confirmations need (default 3600)",
                ));
            }
        }
        if !(1..=3600).contains(&self.trainer.run_quantum_secs) {
            return Err(invalid(
                "trainer.run_quantum_secs",
                format!(
                    "{} is outside 1 to 3600 s; a run's end is shown to the publisher on this \
                     step (default 60)",
                    self.trainer.run_quantum_secs
                ),
            ));
        }
        if let Some(a) = &self.api {
            if a.max_jobs_in_flight == 0 {
                return Err(invalid(
                    "api.max_jobs_in_flight",
                    "0 would refuse every job; use at least 1 (default 4)",
                ));
            }
            if !(MIN_BUNDLE_BYTES..=MAX_BUNDLE_BYTES).contains(&a.max_bundle_bytes) {
                return Err(invalid(
                    "api.max_bundle_bytes",
                    format!(
                        "{} is outside 1 MiB ({MIN_BUNDLE_BYTES}) to 64 GiB ({MAX_BUNDLE_BYTES}); \
                         the default is 2 GiB (2147483648)",
                        a.max_bundle_bytes
                    ),
                ));
            }
            if !(1..=MAX_DOWNLOADS_PER_CALLER).contains(&a.max_downloads_per_caller) {
                return Err(invalid(
                    "api.max_downloads_per_caller",
                    format!(
                        "{} is outside 1 to {MAX_DOWNLOADS_PER_CALLER}; each download under \
                         way holds a connection and a file open (default 2)",
                        a.max_downloads_per_caller
                    ),
                ));
            }
            if !(1..=86_400).contains(&a.download_timeout_secs) {
                return Err(invalid(
                    "api.download_timeout_secs",
                    format!(
                        "{} is outside 1 to 86400 s (default 600)",
                        a.download_timeout_secs
                    ),
                ));
            }
            if !(1..=3600).contains(&a.download_stall_secs) {
                return Err(invalid(
                    "api.download_stall_secs",
                    format!(
                        "{} is outside 1 to 3600 s; a client that reads nothing for this long \
                         is disconnected (default 60)",
                        a.download_stall_secs
                    ),
                ));
            }
            if !(1..=100).contains(&a.publisher_calls_per_sec) {
                return Err(invalid(
                    "api.publisher_calls_per_sec",
                    format!(
                        "{} is outside 1 to 100; each call lets the publisher sample the node's \
                         latency (default 2)",
                        a.publisher_calls_per_sec
                    ),
                ));
            }
            if !(1..=1000).contains(&a.publisher_call_burst) {
                return Err(invalid(
                    "api.publisher_call_burst",
                    format!(
                        "{} is outside 1 to 1000 (default 30)",
                        a.publisher_call_burst
                    ),
                ));
            }
            if a.publisher_bundle_quota() < a.max_bundle_bytes {
                return Err(invalid(
                    "api.max_publisher_bundle_bytes",
                    format!(
                        "{} is below api.max_bundle_bytes ({}): a publisher could not store \
                         one bundle of the largest size accepted",
                        a.publisher_bundle_quota(),
                        a.max_bundle_bytes
                    ),
                ));
            }
        }
        self.trainer
            .limits
            .validate()
            .map_err(|(key, message)| invalid(&format!("trainer.limits.{key}"), message))?;
        let gpu_max = self.trainer.limits.gpu_bound().max;
        if gpu_max > 0 && self.trainer.gpus.is_empty() {
            return Err(invalid(
                "trainer.limits.gpus.max",
                format!(
                    "{gpu_max} would admit jobs that declare a GPU, and trainer.gpus names none \
                     to give them: name the node's CDI devices (e.g. gpus = [\"nvidia.com/gpu=all\"]) \
                     or set gpus.max = 0"
                ),
            ));
        }
        for (i, name) in self.trainer.gpus.iter().enumerate() {
            rapha_enclave::cdi::check_name(name)
                .map_err(|e| invalid(&format!("trainer.gpus[{i}]"), e.to_string()))?;
        }
        for (i, dir) in self.trainer.cdi_dirs().iter().enumerate() {
            if !dir.is_absolute() {
                return Err(invalid(
                    &format!("trainer.cdi_spec_dirs[{i}]"),
                    format!("{} is not an absolute path", dir.display()),
                ));
            }
        }
        for (publisher, accounts) in &self.depositors {
            if rapha_bundle::trust::check_name(publisher).is_err() {
                return Err(invalid(
                    &format!("depositors.{publisher}"),
                    format!("{publisher:?} is not a publisher name as the trust store writes them (a-z, 0-9, '.', '_', '-')"),
                ));
            }
            for (i, a) in accounts.iter().enumerate() {
                parse_address(&format!("depositors.{publisher}[{i}]"), a)?;
            }
        }
        if !(1..=MAX_COHORT_INSTANCES).contains(&self.cohort.max_instances) {
            return Err(invalid(
                "cohort.max_instances",
                format!(
                    "{} is outside 1 to {MAX_COHORT_INSTANCES} (a larger cohort does not fit in \
                     the job store); the default is {}",
                    self.cohort.max_instances,
                    crate::pipeline::DEFAULT_MAX_COHORT_INSTANCES
                ),
            ));
        }
        if !(1..=86_400).contains(&self.cohort.commit_quantum_secs) {
            return Err(invalid(
                "cohort.commit_quantum_secs",
                format!(
                    "{} is outside 1 to 86400 s; the cohort step's result is shown to the \
                     publisher on this step after admission (default 300)",
                    self.cohort.commit_quantum_secs
                ),
            ));
        }
        let (lo, hi) = (
            self.policy.min_validation_percent,
            self.policy.max_validation_percent,
        );
        if lo == 0 || lo > hi || hi > 90 {
            return Err(invalid(
                "policy.max_validation_percent",
                format!(
                    "min_validation_percent {lo} to max_validation_percent {hi} is not a range \
                     within 1 to 90 (the enclave holds out at most 90%); the default is 10 to 50"
                ),
            ));
        }
        for (i, p) in self.policy.allow_linkage.iter().enumerate() {
            if rapha_bundle::trust::check_name(p).is_err() {
                return Err(invalid(
                    &format!("policy.allow_linkage[{i}]"),
                    format!("{p:?} is not a publisher name as the trust store writes them (a-z, 0-9, '.', '_', '-')"),
                ));
            }
        }
        if let Some(tpm) = &self.attestation.tpm {
            validate_tcti(&tpm.tcti)?;
            if tpm.pcr_bank != "sha256" {
                return Err(invalid(
                    "attestation.tpm.pcr_bank",
                    format!("{:?} is not supported: quotes cover the sha256 bank; set pcr_bank = \"sha256\"", tpm.pcr_bank),
                ));
            }
            tpm.pcr_policy()?;
        }
        if let Some(sgx) = &self.attestation.sgx {
            for (key, values) in [("mrenclave", &sgx.mrenclave), ("mrsigner", &sgx.mrsigner)] {
                for (i, v) in values.iter().enumerate() {
                    parse_digest(&format!("attestation.sgx.{key}[{i}]"), v).map_err(|(f, _)| {
                        invalid(
                            &f,
                            format!("{v:?} is not 64 hex digits; copy the enclave runtime's {key} as `gramine-sgx-sigstruct-view` prints it"),
                        )
                    })?;
                }
            }
            for (i, a) in sgx.accepted_advisories.iter().enumerate() {
                let ok = a
                    .strip_prefix("INTEL-SA-")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if !ok {
                    return Err(invalid(
                        &format!("attestation.sgx.accepted_advisories[{i}]"),
                        format!("{a:?} is not an Intel advisory id such as \"INTEL-SA-00615\""),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The configured TPM's attestation-key file (default under the state directory).
    pub fn tpm_ak_file(&self) -> Option<PathBuf> {
        self.attestation.tpm.as_ref().map(|t| {
            t.ak_file
                .clone()
                .unwrap_or_else(|| self.paths.state_dir.join("attestation").join("tpm-ak.json"))
        })
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for e in &mut self.dicomweb.endpoints {
            if let Some(ca) = &mut e.ca_file {
                fix(ca);
            }
            match &mut e.auth {
                DicomWebAuth::None => {}
                DicomWebAuth::Bearer { token_file } => fix(token_file),
                DicomWebAuth::Header { value_file, .. } => fix(value_file),
            }
        }
        fix(&mut self.keys.hmac_key_file);
        fix(&mut self.keys.node_key_file);
        fix(&mut self.cohort.opt_out_file);
        if let Some(l) = &mut self.cohort.labels_file {
            fix(l);
        }
        fix(&mut self.policy.path);
        if let Some(t) = &mut self.policy.tests_dir {
            fix(t);
        }
        fix(&mut self.trust.store);
        if let Some(tpm) = &mut self.attestation.tpm {
            fix(&mut tpm.vendor_root_ca);
            if let Some(ak) = &mut tpm.ak_file {
                fix(ak);
            }
        }
        if let Some(sgx) = &mut self.attestation.sgx {
            fix(&mut sgx.quote_source);
            if let Some(c) = &mut sgx.collateral_file {
                fix(c);
            }
        }
        if let Some(s) = &mut self.settlement {
            fix(&mut s.settler_key_file);
        }
        if let Some(a) = &mut self.api {
            fix(&mut a.tokens_file);
        }
        fix(&mut self.paths.data_dir);
        fix(&mut self.paths.state_dir);
    }

    /// `[depositors]`, parsed: the accounts each publisher may pay from.
    ///
    /// # Errors
    /// `(key path, message)` for an entry that is not an account address.
    pub fn depositor_accounts(
        &self,
    ) -> Result<BTreeMap<String, Vec<alloy::primitives::Address>>, (String, String)> {
        self.depositors
            .iter()
            .map(|(publisher, accounts)| {
                let parsed = accounts
                    .iter()
                    .enumerate()
                    .map(|(i, a)| parse_address(&format!("depositors.{publisher}[{i}]"), a))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((publisher.clone(), parsed))
            })
            .collect()
    }

    /// The node's own bounds on a job ([`crate::pipeline::JobRules`]) as configured.
    pub fn job_rules(&self) -> crate::pipeline::JobRules {
        crate::pipeline::JobRules {
            validation_percent: self.policy.min_validation_percent
                ..=self.policy.max_validation_percent,
            max_cohort_instances: self.cohort.max_instances,
            cohort_quantum: std::time::Duration::from_secs(self.cohort.commit_quantum_secs),
            linkage_same_query: self.policy.linkage_same_query,
            ..crate::pipeline::JobRules::default()
        }
    }

    /// Directory of the policy's Rego unit tests.
    pub fn policy_tests_dir(&self) -> PathBuf {
        self.policy.tests_dir.clone().unwrap_or_else(|| {
            self.policy
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        })
    }

    /// Where DPO approvals are kept.
    pub fn approvals_dir(&self) -> PathBuf {
        self.paths.state_dir.join("approvals")
    }

    /// The metadata fields a job may opt in to, as the policy sees them (from `[dicom.fields]`).
    pub fn allowed_metadata_fields(&self) -> Vec<String> {
        let Some(d) = &self.dicom else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if d.fields.sex {
            out.push("PatientSex".to_owned());
        }
        if d.fields.manufacturer_model {
            out.push("ManufacturerModelName".to_owned());
        }
        out.extend(d.fields.free_text.iter().cloned());
        out
    }

    /// The policy's `data.hospital`, with trusted publishers from the trust store (revoked and
    /// expired publishers left out).
    ///
    /// # Errors
    /// `(key path, message)` for a setting the policy cannot use.
    pub fn hospital_policy(&self, trust: &TrustStore) -> Result<HospitalPolicy, (String, String)> {
        let min_fee: Usdc =
            self.policy
                .min_fee_usdc
                .parse()
                .map_err(|e: rapha_core::CoreError| {
                    ("policy.min_fee_usdc".to_owned(), e.to_string())
                })?;
        let scope = self
            .dicom
            .as_ref()
            .map(|d| d.scope.clone())
            .unwrap_or_default();
        let now = time::OffsetDateTime::now_utc();
        let publishers = trust
            .publishers()
            .iter()
            .filter(|p| !p.revoked && p.expires.is_none_or(|e| e > now))
            .map(|p| {
                (
                    p.name.clone(),
                    PublisherTrust {
                        trainers: p.trainers.clone(),
                    },
                )
            })
            .collect();
        Ok(HospitalPolicy {
            mode: self.mode,
            publishers,
            scope: ScopeLimits {
                max_studies: u64::from(scope.max_limit),
                max_date_range_days: u64::from(scope.max_date_range_days),
                modalities: self.policy.modalities.clone(),
            },
            outputs: self.policy.outputs.clone(),
            allowed_metadata_fields: self.allowed_metadata_fields(),
            min_fee,
            budget: self.policy.budget.clone(),
            min_patients: self.policy.min_patients,
            min_validation_patients: self.policy.min_validation_patients,
            resources: self.trainer.limits.clone(),
            linkage_publishers: self.policy.allow_linkage.clone(),
        })
    }
}
