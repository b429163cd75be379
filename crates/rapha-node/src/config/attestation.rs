//! `[attestation]`: the TPM and SGX backends and what they must measure.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::invalid;

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

impl AttestationConfig {
    /// The TCTI, PCR bank and digests, enclave measurements and advisory ids are well formed.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        if let Some(tpm) = &self.tpm {
            validate_tcti(&tpm.tcti)?;
            if tpm.pcr_bank != "sha256" {
                return Err(invalid(
                    "attestation.tpm.pcr_bank",
                    format!("{:?} is not supported: quotes cover the sha256 bank; set pcr_bank = \"sha256\"", tpm.pcr_bank),
                ));
            }
            tpm.pcr_policy()?;
        }
        if let Some(sgx) = &self.sgx {
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
}
