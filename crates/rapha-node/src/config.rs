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
    /// PCR bank whose values are quoted.
    #[serde(default = "default_pcr_bank")]
    pub pcr_bank: String,
    /// Expected PCR values: PCR index (as a string key) to hex digest.
    #[serde(default)]
    pub expected_pcrs: BTreeMap<String, String>,
}

fn default_pcr_bank() -> String {
    "sha256".to_owned()
}

/// `[attestation.sgx]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgxConfig {
    #[serde(default = "default_sgx_device")]
    pub device: PathBuf,
    /// DCAP quote provider library (talks to the PCCS).
    #[serde(default = "default_qpl")]
    pub quote_provider_library: PathBuf,
    /// PCCS client configuration of the quote provider library.
    #[serde(default = "default_qcnl")]
    pub pccs_config: PathBuf,
    /// Accepted MRENCLAVE values of the enclave runtime (hex).
    #[serde(default)]
    pub mrenclave: Vec<String>,
    /// Accepted MRSIGNER values (hex).
    #[serde(default)]
    pub mrsigner: Vec<String>,
    /// Lowest accepted ISV security version.
    #[serde(default)]
    pub min_isv_svn: u16,
}

fn default_sgx_device() -> PathBuf {
    PathBuf::from("/dev/sgx_enclave")
}
fn default_qpl() -> PathBuf {
    PathBuf::from("/usr/lib/x86_64-linux-gnu/libdcap_quoteprov.so.1")
}
fn default_qcnl() -> PathBuf {
    PathBuf::from("/etc/sgx_default_qcnl.conf")
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

    /// Parses TOML text. The error is `(key path, message)`.
    ///
    /// # Errors
    /// The key path (`.` for the whole document) and what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, (String, String)> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            // toml's message has the line and a pointer; keep it, it shows where.
            (field, inner.to_string().trim_end().to_owned())
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
        }
        fix(&mut self.paths.data_dir);
        fix(&mut self.paths.state_dir);
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
        })
    }
}
