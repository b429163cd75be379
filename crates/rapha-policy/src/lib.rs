//! Rego policy evaluation (regorus), default policy, DPO approvals.
//!
//! Runs the two gates of the job path: **admission** (step 2) and **final** (step 7). Part of
//! **I8**: production preflight refuses demo components and missing keys.
