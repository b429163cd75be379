//! Job requests for the node's tests and bench: one `rapha_core::JobRequest` literal, the
//! values no test varies as its defaults (override them with struct update syntax).

use rapha_core::{CohortQuery, Digest, JobId, JobRequest, Usdc};

/// A request of `publisher` for `trainer`'s bundle `manifest` over `query`, paying `fee` (USDC
/// base units) from the account `depositor` on chain 137: a fresh job id, no requested
/// fields, half of the patients for validation, no linkage group.
pub fn job_request(
    publisher: &str,
    trainer: &str,
    manifest: Digest,
    query: CohortQuery,
    fee: u64,
    depositor: &str,
) -> JobRequest {
    JobRequest {
        job_id: JobId::random(),
        publisher: publisher.into(),
        trainer: trainer.into(),
        bundle_manifest: manifest,
        query,
        requested_fields: vec![],
        validation_percent: 50,
        fee: Usdc::from_base_units(fee),
        chain_id: 137,
        depositor: depositor.into(),
        linkage: None,
    }
}
