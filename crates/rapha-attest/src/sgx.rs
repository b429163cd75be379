//! SGX DCAP: quote and collateral verification (`dcap-qvl`, offline), then Rapha's own
//! policy on the verified report.
//!
//! Layer (a) proves the quote was made by a genuine, Intel-certified SGX platform and that the
//! collateral (PCK CRL and chain, root CA CRL, TCB info, QE identity) is signed and valid at
//! the verification time. Layer (b) is Rapha's decision, never the library's default:
//!
//! - TCB status `UpToDate`; any other status only when every advisory ID it carries is on the
//!   policy's explicit list (the library itself returns Ok for `OutOfDate`); `Revoked` never;
//! - the enclave is not a debug enclave;
//! - MRENCLAVE, or MRSIGNER with ISV product id and a minimum ISV SVN, is on the allow-list;
//! - report data bytes `0..32` equal the job binding. Bytes `32..64` are reserved: Rapha's
//!   runtime writes zeros there; they are not part of the binding.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use dcap_qvl::quote::Report;
use dcap_qvl::verify::QuoteVerifier;
use dcap_qvl::QuoteCollateralV3;
use rapha_core::Digest;
use serde::{Deserialize, Serialize};

use crate::error::{AttestError, Result};

/// Intel SGX Root CA (DER), pinned: every chain in a quote and its collateral must end here.
const INTEL_SGX_ROOT_CA: &[u8] = include_bytes!("intel_sgx_root_ca.der");

/// Bit 1 of the first attributes byte: the enclave was launched in debug mode.
const SGX_FLAGS_DEBUG: u8 = 0x02;

/// An SGX DCAP quote and the collateral it is verified against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgxEvidence {
    /// The raw quote (version 3 or 4, ECDSA P-256 attestation key).
    #[serde(with = "hex")]
    pub quote: Vec<u8>,
    /// Collateral as fetched from the platform's PCCS when the quote was made.
    pub collateral: QuoteCollateralV3,
}

impl SgxEvidence {
    /// Digest of the raw quote (for the receipt).
    pub fn quote_digest(&self) -> Digest {
        Digest::of(&self.quote)
    }
}

/// The enclave report of a quote that passed DCAP verification. Only [`verify_quote`] makes
/// one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedSgxReport {
    tcb_status: String,
    advisory_ids: Vec<String>,
    #[serde(with = "hex")]
    mr_enclave: [u8; 32],
    #[serde(with = "hex")]
    mr_signer: [u8; 32],
    isv_prod_id: u16,
    isv_svn: u16,
    #[serde(with = "hex")]
    attributes: [u8; 16],
    #[serde(with = "hex")]
    report_data: [u8; 64],
}

impl VerifiedSgxReport {
    pub fn tcb_status(&self) -> &str {
        &self.tcb_status
    }
    pub fn advisory_ids(&self) -> &[String] {
        &self.advisory_ids
    }
    pub fn mr_enclave(&self) -> &[u8; 32] {
        &self.mr_enclave
    }
    pub fn mr_signer(&self) -> &[u8; 32] {
        &self.mr_signer
    }
    pub fn isv_prod_id(&self) -> u16 {
        self.isv_prod_id
    }
    pub fn isv_svn(&self) -> u16 {
        self.isv_svn
    }
    pub fn report_data(&self) -> &[u8; 64] {
        &self.report_data
    }
    pub fn is_debug(&self) -> bool {
        self.attributes[0] & SGX_FLAGS_DEBUG != 0
    }
}

/// Layer (a): DCAP verification of the quote and collateral at `now_secs` (Unix seconds)
/// against Intel's SGX root CA.
///
/// # Errors
/// [`AttestError::SgxQuoteRejected`] for any signature, chain, CRL, collateral or validity
/// failure; [`AttestError::SgxNotEnclaveQuote`] for a TDX quote.
pub fn verify_quote(ev: &SgxEvidence, now_secs: u64) -> Result<VerifiedSgxReport> {
    // dcap-qvl checks the PCK CRL against the quote's own PCK chain and never reads the
    // collateral's PCK CRL issuer chain; Rapha checks that part too, so no collateral byte goes
    // unverified into the evidence.
    crate::x509::verify_chain_to_pinned(
        ev.collateral.pck_crl_issuer_chain.as_bytes(),
        INTEL_SGX_ROOT_CA,
        now_secs,
    )
    .map_err(|e| AttestError::SgxQuoteRejected(format!("PCK CRL issuer chain: {e}")))?;
    let verifier = QuoteVerifier::new(INTEL_SGX_ROOT_CA.to_vec())
        .with_config::<dcap_qvl::configs::RustCryptoConfig>();
    let report = verifier
        .verify(&ev.quote, &ev.collateral, now_secs)
        .map_err(|e| AttestError::SgxQuoteRejected(format!("{e:#}")))?;
    let Report::SgxEnclave(enclave) = report.report else {
        return Err(AttestError::SgxNotEnclaveQuote("TDX".into()));
    };
    Ok(VerifiedSgxReport {
        tcb_status: report.status,
        advisory_ids: report.advisory_ids,
        mr_enclave: enclave.mr_enclave,
        mr_signer: enclave.mr_signer,
        isv_prod_id: enclave.isv_prod_id,
        isv_svn: enclave.isv_svn,
        attributes: enclave.attributes,
        report_data: enclave.report_data,
    })
}

/// One allowed enclave identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AllowedEnclave {
    /// Exactly this build (MRENCLAVE from `gramine-sgx-sign`).
    MrEnclave { mr_enclave: Digest },
    /// Any build signed by this key for this product, at or above this security version.
    MrSigner {
        mr_signer: Digest,
        isv_prod_id: u16,
        min_isv_svn: u16,
    },
}

/// Rapha's policy on a verified SGX report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SgxPolicy {
    /// Advisory IDs (e.g. `INTEL-SA-00615`) the hospital accepts on a platform whose TCB is
    /// not UpToDate. Empty: only UpToDate platforms pass.
    #[serde(default)]
    pub accepted_advisories: BTreeSet<String>,
    /// Enclave identities allowed to run jobs. Empty: nothing passes.
    pub allowed_enclaves: Vec<AllowedEnclave>,
}

impl SgxPolicy {
    /// Layer (b): Rapha's decision on a verified report for the job `binding`.
    ///
    /// # Errors
    /// [`AttestError::SgxDebugEnclave`], [`AttestError::SgxTcbNotUpToDate`],
    /// [`AttestError::SgxAdvisoryNotAccepted`], [`AttestError::SgxMeasurementNotAllowed`],
    /// [`AttestError::SgxReportDataMismatch`].
    pub fn check(&self, report: &VerifiedSgxReport, binding: &Digest) -> Result<()> {
        if report.is_debug() {
            return Err(AttestError::SgxDebugEnclave);
        }
        self.check_tcb(report)?;
        let allowed = self.allowed_enclaves.iter().any(|a| match a {
            AllowedEnclave::MrEnclave { mr_enclave } => mr_enclave.as_bytes() == &report.mr_enclave,
            AllowedEnclave::MrSigner {
                mr_signer,
                isv_prod_id,
                min_isv_svn,
            } => {
                mr_signer.as_bytes() == &report.mr_signer
                    && *isv_prod_id == report.isv_prod_id
                    && report.isv_svn >= *min_isv_svn
            }
        });
        if !allowed {
            return Err(AttestError::SgxMeasurementNotAllowed {
                mr_enclave: hex::encode(report.mr_enclave),
                mr_signer: hex::encode(report.mr_signer),
                isv_prod_id: report.isv_prod_id,
                isv_svn: report.isv_svn,
            });
        }
        if report.report_data[..32] != binding.as_bytes()[..] {
            return Err(AttestError::SgxReportDataMismatch {
                expected: binding.to_hex(),
                found: hex::encode(&report.report_data[..32]),
            });
        }
        Ok(())
    }

    fn check_tcb(&self, report: &VerifiedSgxReport) -> Result<()> {
        let status = report.tcb_status.as_str();
        if status == "UpToDate" && report.advisory_ids.is_empty() {
            return Ok(());
        }
        if status == "Revoked" || (status != "UpToDate" && report.advisory_ids.is_empty()) {
            return Err(AttestError::SgxTcbNotUpToDate {
                status: status.to_owned(),
            });
        }
        if self.accepted_advisories.is_empty() {
            return Err(AttestError::SgxTcbNotUpToDate {
                status: status.to_owned(),
            });
        }
        for advisory in &report.advisory_ids {
            if !self.accepted_advisories.contains(advisory) {
                return Err(AttestError::SgxAdvisoryNotAccepted {
                    status: status.to_owned(),
                    advisory: advisory.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Both layers together, at a fixed or the current time.
#[derive(Debug, Clone)]
pub struct SgxVerifier {
    policy: SgxPolicy,
    at: Option<u64>,
}

impl SgxVerifier {
    pub fn new(policy: SgxPolicy) -> Self {
        Self { policy, at: None }
    }

    /// Verifies at a fixed Unix time instead of now (offline checks of old evidence, tests).
    pub fn at_time(mut self, unix_secs: u64) -> Self {
        self.at = Some(unix_secs);
        self
    }

    /// Layer (a) then layer (b).
    pub fn verify(&self, ev: &SgxEvidence, binding: &Digest) -> Result<VerifiedSgxReport> {
        let now = self.at.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
        let report = verify_quote(ev, now)?;
        self.policy.check(&report, binding)?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure
    use super::*;

    fn report(attributes0: u8) -> VerifiedSgxReport {
        let mut attributes = [0u8; 16];
        attributes[0] = attributes0;
        VerifiedSgxReport {
            tcb_status: "UpToDate".into(),
            advisory_ids: vec![],
            mr_enclave: [1; 32],
            mr_signer: [2; 32],
            isv_prod_id: 7,
            isv_svn: 3,
            attributes,
            report_data: [9; 64],
        }
    }

    /// The debug bit cannot be set in a real signed quote without breaking its signature
    /// (and dcap-qvl refuses debug quotes itself), so Rapha's own debug check is proven on the
    /// report value directly: the same report passes with the bit clear and fails with it set.
    #[test]
    fn debug_enclave_report_is_refused_by_rapha_policy() {
        let policy = SgxPolicy {
            accepted_advisories: BTreeSet::new(),
            allowed_enclaves: vec![AllowedEnclave::MrEnclave {
                mr_enclave: Digest::from_bytes([1; 32]),
            }],
        };
        let binding = Digest::from_bytes([9; 32]);
        policy.check(&report(0x05), &binding).unwrap();
        assert!(matches!(
            policy.check(&report(0x07), &binding),
            Err(AttestError::SgxDebugEnclave)
        ));
    }
}
