//! The node configuration file (TOML). Every key is documented in `docs/configuration.md`.
//!
//! Parsing is strict: an unknown key or a value of the wrong type is an error that names the
//! key by its full path (`chain.chain_id`), so a typo cannot silently fall back to a default.
//! Relative paths are resolved against the directory of the configuration file.
//!
//! Loading a config checks its shape only. Whether the things it points at are real and usable
//! (keys, PACS, TPM, chain…) is `doctor`'s job ([`crate::doctor::run_doctor`]).
//!
//! One module per group of sections: `pacs` (`[dicomweb]`, `[cohort]`), `policy`,
//! `attestation`, `trainer`, `chain` (`[chain]`, `[settlement]`), `api`, `console` and `audit`
//! (`[audit]`, `[policy.audit]`); this module holds
//! the whole file's shape, the small sections and the checks that span sections.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rapha_policy::Mode;
use serde::{Deserialize, Serialize};

mod api;
mod attestation;
mod audit;
mod chain;
mod console;
mod pacs;
mod policy;
mod trainer;

pub use api::{
    default_listen, default_max_bundle_bytes, ApiConfig, MAX_BUNDLE_BYTES,
    MAX_DOWNLOADS_PER_CALLER, MIN_BUNDLE_BYTES,
};
pub use attestation::{AttestationConfig, SgxConfig, TpmConfig};
pub use audit::{AuditConfig, AuditPolicy, DEFAULT_HOLDOUT_FRACTION, DEFAULT_MIN_AUDIT_PATIENTS};
pub use chain::{ChainConfig, SettlementConfig};
pub use console::{default_console_listen, ConsoleConfig, MAX_SESSION_MINUTES};
pub use pacs::{
    CohortConfig, DicomWebAuth, DicomWebConfig, DicomWebEndpoint, MAX_COHORT_INSTANCES,
};
pub use policy::PolicyConfig;
pub use trainer::TrainerConfig;

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
    /// The DPO console of `rapha-node serve`, on a listener of its own. Absent: no console.
    #[serde(default)]
    pub console: Option<ConsoleConfig>,
    /// `[audit]`: the runner of the node's privacy audit (issue 19); absent: no audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditConfig>,
    /// `[approval]`: DPO passkeys (WebAuthn) and whether they are required.
    #[serde(default)]
    pub approval: Option<ApprovalConfig>,
    pub paths: PathsConfig,
}

/// `[approval]`: DPO passkey sign-off (issue 20, docs/configuration.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalConfig {
    /// The WebAuthn relying-party id: the host name DPOs reach the node's console by (a
    /// passkey is bound to it).
    pub rp_id: String,
    /// The exact origins the console is served from (`https://dpo.hospital.example`,
    /// `http://localhost:8443` for a demo on loopback).
    pub origins: Vec<String>,
    /// Refuse Ed25519 key-file approvals: only a DPO passkey approves a job.
    #[serde(default)]
    pub require_passkey: bool,
}

impl ApprovalConfig {
    /// The checks a start makes: an rp id that is a host name and origins on it.
    ///
    /// # Errors
    /// What is wrong, naming the key.
    pub fn check(&self) -> Result<(), String> {
        let id = &self.rp_id;
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(format!("[approval] rp_id {id:?} is not a host name"));
        }
        if self.origins.is_empty() {
            return Err("[approval] origins is empty: name the console's origin".into());
        }
        for o in &self.origins {
            let host = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://").filter(|_| id == "localhost"))
                .map(|rest| rest.split(':').next().unwrap_or_default());
            if host != Some(id.as_str()) && !host.is_some_and(|h| h.ends_with(&format!(".{id}"))) {
                return Err(format!(
                    "[approval] origins: {o:?} is not an https origin on {id:?} (http only for localhost)"
                ));
            }
        }
        Ok(())
    }
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

/// `[trust]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Trust store directory: one TOML file per trusted publisher (`rapha-node trust add`).
    pub store: PathBuf,
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
        // Absolute, so that what the node hands on (a rootfs to runc, a socket to a trainer)
        // means the same file from any working directory.
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = std::path::absolute(parent).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        config.resolve_paths(&base);
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
        self.chain.validate()?;
        if let Some(s) = &self.settlement {
            s.validate()?;
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
            a.validate()?;
        }
        if let Some(c) = &self.console {
            c.validate()?;
        }
        self.trainer.validate()?;
        if let Some(a) = &self.audit {
            a.validate()?;
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
        self.cohort.validate()?;
        self.policy.validate()?;
        self.attestation.validate()
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
        if let Some(c) = &mut self.console {
            if let Some(f) = &mut c.tls_cert_file {
                fix(f);
            }
            if let Some(f) = &mut c.tls_key_file {
                fix(f);
            }
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
}

fn invalid(field: &str, message: impl Into<String>) -> (String, String) {
    (field.to_owned(), message.into())
}

/// Parses an account address as Rapha reads every outside address ([`rapha_eth::parse_address`]:
/// `0x` + 40 hex digits, and a mixed-case one must carry its EIP-55 checksum, so a mistyped
/// address is refused instead of paying someone else).
///
/// # Errors
/// `(field, message)` saying what is wrong and what an address looks like.
pub fn parse_address(
    field: &str,
    value: &str,
) -> Result<alloy::primitives::Address, (String, String)> {
    rapha_eth::parse_address(value).map_err(|e| {
        let why = match e {
            rapha_eth::EthError::Address { why, .. } => why,
            _ => "not an address",
        };
        invalid(
            field,
            format!(
                "{value:?} is not an account address (0x followed by 40 hex digits, with its \
                 EIP-55 checksum if in mixed case): {why}"
            ),
        )
    })
}
