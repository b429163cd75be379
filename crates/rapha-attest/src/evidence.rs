//! The job-bound evidence bundle, its digests for the receipt, and the verifier that the final
//! policy gate runs.

use rapha_core::Digest;
use serde::{Deserialize, Serialize};

use crate::binding::BindingInputs;
use crate::error::{AttestError, Result};
use crate::sgx::{SgxEvidence, SgxVerifier, VerifiedSgxReport};
use crate::tpm::{TpmEvidence, TpmVerifier, VerifiedQuote};

/// The evidence format version this build writes and reads.
pub const EVIDENCE_VERSION: u32 = 1;

/// The marker a simulated evidence section carries, so that no reader mistakes it for
/// hardware attestation.
pub const SIMULATED_MARKER: &str = "SIMULATED: NOT HARDWARE ATTESTATION";

/// Attestation evidence for one job (serde JSON; see `docs/attestation.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    pub version: u32,
    /// [`crate::binding`] of the job this evidence is for.
    pub binding: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmEvidence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sgx: Option<SgxEvidence>,
    /// Present only in demo evidence. Production verification refuses evidence carrying it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated: Option<SimulatedEvidence>,
}

/// Development stand-in for hardware evidence, filled by the demo only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedEvidence {
    /// Must be [`SIMULATED_MARKER`].
    pub marker: String,
    /// Who made it and why (e.g. "rapha-demo on a laptop without TPM or SGX").
    pub note: String,
}

/// Digests of the evidence for the receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceDigests {
    /// SHA-256 of the evidence's JSON serialisation.
    pub evidence: Digest,
    pub binding: Digest,
    pub tpm_quote: Option<Digest>,
    pub sgx_quote: Option<Digest>,
    pub simulated: bool,
}

impl Evidence {
    /// A version-1 bundle with no sections yet.
    pub fn new(binding: Digest) -> Self {
        Self {
            version: EVIDENCE_VERSION,
            binding,
            tpm: None,
            sgx: None,
            simulated: None,
        }
    }

    /// Parses evidence JSON.
    ///
    /// # Errors
    /// [`AttestError::EvidenceMalformed`] on bad JSON or unknown fields,
    /// [`AttestError::UnsupportedEvidenceVersion`] on another version.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let ev: Self = serde_json::from_slice(bytes)
            .map_err(|e| AttestError::EvidenceMalformed(e.to_string()))?;
        if ev.version != EVIDENCE_VERSION {
            return Err(AttestError::UnsupportedEvidenceVersion(ev.version));
        }
        Ok(ev)
    }

    /// The JSON serialisation whose digest goes into the receipt.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain structs, strings and BTreeMaps into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Digests for the receipt.
    pub fn digests(&self) -> EvidenceDigests {
        EvidenceDigests {
            evidence: Digest::of(&self.to_json()),
            binding: self.binding,
            tpm_quote: self.tpm.as_ref().map(TpmEvidence::quote_digest),
            sgx_quote: self.sgx.as_ref().map(SgxEvidence::quote_digest),
            simulated: self.simulated.is_some(),
        }
    }
}

/// Production refuses anything but verified TPM and SGX evidence; development accepts what it
/// gets and says plainly what that was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyMode {
    Production,
    Development,
}

/// What the verification established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttestationLevel {
    /// TPM quote and SGX quote both verified against the job binding.
    Hardware,
    /// Development mode, simulated evidence: nothing was attested.
    Simulated,
    /// Development mode, no evidence at all: nothing was attested.
    NoneDevelopment,
}

impl AttestationLevel {
    /// The label written into receipts and logs: `hardware`, `simulated`, `none-development`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hardware => "hardware",
            Self::Simulated => "simulated",
            Self::NoneDevelopment => "none-development",
        }
    }
}

/// The result of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedEvidence {
    pub level: AttestationLevel,
    pub digests: EvidenceDigests,
    pub tpm: Option<VerifiedQuote>,
    pub sgx: Option<VerifiedSgxReport>,
}

/// Verifies a job's evidence bundle.
#[derive(Debug)]
pub struct EvidenceVerifier {
    mode: VerifyMode,
    tpm: Option<TpmVerifier>,
    sgx: Option<SgxVerifier>,
}

impl EvidenceVerifier {
    /// Production: both verifiers are required.
    pub fn production(tpm: TpmVerifier, sgx: SgxVerifier) -> Self {
        Self {
            mode: VerifyMode::Production,
            tpm: Some(tpm),
            sgx: Some(sgx),
        }
    }

    /// Development: accepts simulated or absent evidence and reports it as such.
    pub fn development() -> Self {
        Self {
            mode: VerifyMode::Development,
            tpm: None,
            sgx: None,
        }
    }

    pub fn mode(&self) -> VerifyMode {
        self.mode
    }

    /// Verifies `ev` for the job described by `inputs`.
    pub fn verify(&self, ev: &Evidence, inputs: &BindingInputs) -> Result<VerifiedEvidence> {
        self.verify_bound(ev, &inputs.binding())
    }

    /// Verifies `ev` against an already computed binding.
    ///
    /// # Errors
    /// [`AttestError::UnsupportedEvidenceVersion`], [`AttestError::SimulatedEvidenceRefused`]
    /// (production), [`AttestError::EvidenceBindingMismatch`],
    /// [`AttestError::MissingTpmEvidence`], [`AttestError::MissingSgxEvidence`], or the first
    /// TPM or SGX check that failed.
    pub fn verify_bound(&self, ev: &Evidence, binding: &Digest) -> Result<VerifiedEvidence> {
        if ev.version != EVIDENCE_VERSION {
            return Err(AttestError::UnsupportedEvidenceVersion(ev.version));
        }
        if self.mode == VerifyMode::Production && ev.simulated.is_some() {
            return Err(AttestError::SimulatedEvidenceRefused);
        }
        if ev.binding != *binding {
            return Err(AttestError::EvidenceBindingMismatch {
                expected: binding.to_hex(),
                found: ev.binding.to_hex(),
            });
        }
        match self.mode {
            VerifyMode::Production => {
                let (Some(tpm_v), Some(sgx_v)) = (&self.tpm, &self.sgx) else {
                    return Err(AttestError::MissingTpmEvidence);
                };
                let tpm_ev = ev.tpm.as_ref().ok_or(AttestError::MissingTpmEvidence)?;
                let sgx_ev = ev.sgx.as_ref().ok_or(AttestError::MissingSgxEvidence)?;
                let sgx = sgx_v.verify(sgx_ev, binding)?;
                let tpm = tpm_v.verify(tpm_ev, binding)?;
                Ok(VerifiedEvidence {
                    level: AttestationLevel::Hardware,
                    digests: ev.digests(),
                    tpm: Some(tpm),
                    sgx: Some(sgx),
                })
            }
            VerifyMode::Development => {
                let level = match &ev.simulated {
                    Some(s) if s.marker == SIMULATED_MARKER => AttestationLevel::Simulated,
                    Some(_) => {
                        return Err(AttestError::EvidenceMalformed(format!(
                            "simulated evidence must carry the marker {SIMULATED_MARKER:?}"
                        )))
                    }
                    None => AttestationLevel::NoneDevelopment,
                };
                tracing::warn!(
                    level = level.as_str(),
                    "attestation NOT verified: development mode"
                );
                Ok(VerifiedEvidence {
                    level,
                    digests: ev.digests(),
                    tpm: None,
                    sgx: None,
                })
            }
        }
    }
}
