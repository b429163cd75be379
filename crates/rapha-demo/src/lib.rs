//! `rapha-demo`: demo-only pieces (**I8**): an embedded DICOMweb demo PACS serving a synthetic
//! cohort, a local chain, clearly marked dev keys and simulated attestation, and the
//! `rapha-demo run` flow that drives one job end to end with them. Production binaries never
//! link this crate.
//!
//! The library half exists so the demo PACS's request parser can be fuzzed
//! ([`pacs::fuzz_requests`], `fuzz/`) and so `bench/demo.sh` can serve the same records to a
//! trainer run directly (`examples/direct_trainer.rs`); the binary is `src/main.rs`.

pub mod chain;
pub mod hostile;
pub mod node;
pub mod pacs;
pub mod run;
pub mod signing;
pub mod up;

pub use run::RunArgs;
