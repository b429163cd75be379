//! Approvals and review requests come from files an operator can edit; date ranges from job
//! requests. None of them may panic the node. Same entry point as tests/fuzz.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rapha_policy::{date_range_days, Approval, ReviewRequest};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(s) = std::str::from_utf8(bytes) {
        let _ = date_range_days(s);
    }
    if let Ok(a) = serde_json::from_slice::<Approval>(bytes) {
        let _ = a.verify();
    }
    if let Ok(r) = serde_json::from_slice::<ReviewRequest>(bytes) {
        let _ = r.job_digest();
    }
});
