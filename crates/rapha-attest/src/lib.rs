//! TPM 2.0 quotes and SGX DCAP verification, bound to each job.
//!
//! Supplies the attestation evidence for step 6 of a job and its verification for the final
//! policy gate (step 7); the evidence digests go into the receipt (**I6**). Simulated evidence
//! is a plain, clearly marked variant that only the demo fills, and every production verifier
//! here refuses it (**I8**).
//!
//! ```text
//!  job id, bundle manifest digest, cohort commitment, runtime per-job public key
//!                              |
//!                         binding()            (domain-separated SHA-256)
//!                 ____________/ \_____________
//!                v                            v
//!   TPM quote qualifying data        SGX report data[0..32]
//!   (AK certified by the EK,         (DCAP quote, Intel collateral)
//!    EK cert -> vendor root)
//!                \____________  _____________/
//!                             vv
//!                 Evidence { version, binding, tpm, sgx, simulated }
//!                             |
//!            EvidenceVerifier (production: TPM + SGX required,
//!                              simulated refused; development: says so)
//! ```
//!
//! A quote made for one job cannot be replayed for another (the binding differs), nor for
//! another runtime instance (its public key differs), nor twice for the same job on the
//! same verifier (the TPM clock must move forward).

mod binding;
mod error;
mod evidence;
pub mod sgx;
pub mod tpm;
pub mod x509;

pub use binding::{binding, BindingInputs, BINDING_DOMAIN};
pub use error::{AttestError, Result};
pub use evidence::{
    AttestationLevel, Evidence, EvidenceDigests, EvidenceVerifier, SimulatedEvidence,
    VerifiedEvidence, VerifyMode, EVIDENCE_VERSION, SIMULATED_MARKER,
};
pub use tpm::{tpm_readiness, TpmReadiness};
