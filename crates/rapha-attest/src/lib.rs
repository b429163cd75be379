//! TPM 2.0 quotes and SGX DCAP verification, bound to each job.
//!
//! Supplies the attestation evidence for step 6 and its verification for the final gate; the
//! evidence digests go into the receipt (**I6**). Simulated evidence lives only in the demo
//! crates and is refused by every verifier here (**I8**).
