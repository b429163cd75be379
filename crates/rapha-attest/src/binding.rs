//! The job binding: one digest that ties attestation evidence to exactly one job and one
//! enclave runtime instance.

use rapha_core::{Digest, JobId};

/// Domain separator of the binding hash (version 1).
pub const BINDING_DOMAIN: &[u8] = b"rapha.attest.binding.v1";

/// What the binding commits to. The runtime's public key is taken as raw bytes (the enclave
/// runtime uses a 32-byte Ed25519 key per job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingInputs {
    pub job_id: JobId,
    pub bundle_manifest: Digest,
    pub cohort_commitment: Digest,
    pub runtime_public_key: Vec<u8>,
}

impl BindingInputs {
    /// The binding value of these inputs.
    pub fn binding(&self) -> Digest {
        binding(
            &self.job_id,
            &self.bundle_manifest,
            &self.cohort_commitment,
            &self.runtime_public_key,
        )
    }
}

/// The binding value:
///
/// ```text
/// SHA-256( u32be(len(D)) || D
///        || u32be(16) || job id (16 bytes)
///        || u32be(32) || bundle manifest digest
///        || u32be(32) || cohort commitment
///        || u32be(len(K)) || K )          D = "rapha.attest.binding.v1", K = runtime public key
/// ```
///
/// Every field is length-prefixed, so no two different tuples hash the same input bytes.
/// It is the TPM quote's qualifying data and the first 32 bytes of the SGX report data.
pub fn binding(
    job_id: &JobId,
    bundle_manifest: &Digest,
    cohort_commitment: &Digest,
    runtime_public_key: &[u8],
) -> Digest {
    let mut h = Digest::hasher();
    for field in [
        BINDING_DOMAIN,
        job_id.as_bytes().as_slice(),
        bundle_manifest.as_bytes().as_slice(),
        cohort_commitment.as_bytes().as_slice(),
        runtime_public_key,
    ] {
        // A public key or domain string longer than 4 GiB does not exist; saturating keeps
        // the function total without a panic path.
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        h.update(&len.to_be_bytes());
        h.update(field);
    }
    h.finish()
}
