use std::path::PathBuf;

/// Everything this crate refuses, each with its own variant so the caller (and the receipt)
/// can say exactly why attestation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    // --- talking to the TPM -------------------------------------------------------------
    #[error("cannot reach the TPM through TCTI {tcti:?}: {reason}")]
    TpmUnreachable { tcti: String, reason: String },
    #[error("the sealed key was refused: {0}")]
    SealedKeyRefused(String),
    #[error("not a sealed key file: {0}")]
    SealedFileMalformed(String),
    #[error("TPM command {command} failed: {reason}")]
    TpmCommand {
        command: &'static str,
        reason: String,
    },
    #[error("the PCRs kept changing while the quote was taken ({attempts} attempts); retry when the platform is idle")]
    PcrsUnstable { attempts: u32 },

    // --- EK certificate and AK certification ---------------------------------------------
    #[error("cannot read the TPM vendor root certificates at {path}: {reason}")]
    VendorRootUnreadable { path: PathBuf, reason: String },
    #[error("the TPM holds no EK certificate in NV index {nv_index:#010x}")]
    EkCertMissing { nv_index: u32 },
    #[error("the EK certificate is not a valid X.509 certificate: {0}")]
    EkCertMalformed(String),
    #[error(
        "the EK certificate (issuer {issuer:?}) does not chain to a configured TPM vendor root"
    )]
    EkCertUntrusted { issuer: String },
    #[error("the EK certificate chain uses an unsupported signature algorithm {0}")]
    UnsupportedCertAlgorithm(String),
    #[error("certificate {subject:?} is outside its validity period")]
    CertNotValidNow { subject: String },
    #[error("the TPM's endorsement key does not match the public key in its EK certificate")]
    EkKeyMismatch,
    #[error("the attestation key failed credential activation against the EK: {0}")]
    AkActivationFailed(String),
    #[error(
        "quote signed by attestation key {ak_name} that was never certified against a trusted EK"
    )]
    AkNotCertified { ak_name: String },

    // --- TPM quote verification ----------------------------------------------------------
    #[error("TPM quote structure is malformed: {0}")]
    QuoteMalformed(String),
    #[error("TPM quote signature does not verify under the certified attestation key")]
    QuoteSignatureInvalid,
    #[error("TPM quote qualifying data is not this job's binding (expected {expected}, quote has {found})")]
    QuoteWrongNonce { expected: String, found: String },
    #[error("TPM quote covers PCR selection {found} but the policy requires {expected}")]
    PcrSelectionMismatch { expected: String, found: String },
    #[error("the PCR values supplied with the quote do not hash to the quoted PCR digest")]
    PcrDigestMismatch,
    #[error("PCR {pcr} (sha256) is {found}, the recorded policy expects {expected}: the platform changed since the policy was recorded")]
    PcrPolicyViolation {
        pcr: u8,
        expected: String,
        found: String,
    },
    #[error("TPM quote is not newer than one already accepted from this TPM (reset {reset_count}, restart {restart_count}, clock {clock}): replay refused")]
    QuoteReplayed {
        reset_count: u32,
        restart_count: u32,
        clock: u64,
    },

    // --- SGX DCAP --------------------------------------------------------------------------
    #[error("SGX quote or its collateral failed DCAP verification: {0}")]
    SgxQuoteRejected(String),
    #[error("the quote is not an SGX enclave quote (TEE type {0})")]
    SgxNotEnclaveQuote(String),
    #[error("SGX platform TCB status is {status}, not UpToDate, and the policy accepts no advisories for it")]
    SgxTcbNotUpToDate { status: String },
    #[error("SGX platform TCB status {status} carries advisory {advisory}, which the policy does not accept")]
    SgxAdvisoryNotAccepted { status: String, advisory: String },
    #[error("SGX enclave runs in debug mode; debug enclaves are never accepted")]
    SgxDebugEnclave,
    #[error("SGX enclave measurement (MRENCLAVE {mr_enclave}, MRSIGNER {mr_signer}, product {isv_prod_id}, SVN {isv_svn}) is not on the allow-list")]
    SgxMeasurementNotAllowed {
        mr_enclave: String,
        mr_signer: String,
        isv_prod_id: u16,
        isv_svn: u16,
    },
    #[error("SGX report data does not carry this job's binding (expected {expected}, report has {found})")]
    SgxReportDataMismatch { expected: String, found: String },

    // --- evidence bundle -------------------------------------------------------------------
    #[error("evidence format version {0} is not supported (this build reads version {supported})", supported = crate::EVIDENCE_VERSION)]
    UnsupportedEvidenceVersion(u32),
    #[error("evidence is bound to {found}, but this job's binding is {expected}")]
    EvidenceBindingMismatch { expected: String, found: String },
    #[error(
        "simulated attestation evidence is refused in production: configure a real TPM and SGX"
    )]
    SimulatedEvidenceRefused,
    #[error("evidence carries no TPM quote, which production requires")]
    MissingTpmEvidence,
    #[error("evidence carries no SGX quote, which production requires")]
    MissingSgxEvidence,
    #[error("evidence is not valid JSON: {0}")]
    EvidenceMalformed(String),
}

/// Result alias of this crate.
pub type Result<T, E = AttestError> = std::result::Result<T, E>;
