//! Test-only support (a dev-dependency of production crates, never a normal one — **I8**):
//!
//! - `services`: starts real Orthanc + DICOMweb, swtpm and anvil on free loopback ports for a
//!   test, with readiness checks, and tears them down (logs kept on failure);
//! - `cohort`: the synthetic DICOM cohort generator, with PHI planted everywhere a real study
//!   has it, burned-in text, a learnable lesion signal, labels and opt-outs.
//!
//! It also carries small statistics helpers for tests ([`auc`]).

pub mod cohort;
pub mod services;
mod stats;

pub use stats::auc;
