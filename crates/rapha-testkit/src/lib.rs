//! Test-only support (a dev-dependency of production crates, never a normal one — **I8**):
//!
//! - `bundle`: signed trainer bundles (one spec template, one build-and-sign sequence) for the
//!   node, CLI and bench tests;
//! - `job`: the job request of the node's tests and bench;
//! - `node_config`: the `rapha-node` configuration file the node's tests and bench write;
//! - `policy`: the hospital policy the node's and the CLI's job tests run under;
//! - `pytorch`: the PyTorch example trainer's image and the check of the models it releases;
//! - `services`: starts real Orthanc + DICOMweb, swtpm and anvil on free loopback ports for a
//!   test, with readiness checks, and tears them down (logs kept on failure);
//! - `command`: a helper tool's output, asserting it succeeded;
//! - `cohort`: the synthetic DICOM cohort generator, with PHI planted everywhere a real study
//!   has it, burned-in text, a learnable lesion signal, labels and opt-outs;
//! - `crafted`: hostile DICOM a PACS could serve (deep nesting in Part 10 and DICOM JSON,
//!   deflate bombs, false length claims), built byte by byte;
//! - `hostile`: a hostile DICOMweb server on loopback (silent, trickling, endless, ignoring
//!   `offset`), the adversary of the PACS-client tests;
//! - `tls`: a hospital's private CA and a PACS certificate for 127.0.0.1 (openssl CLI);
//! - `trainer`: the static test trainer the sandbox runs, and whether this host can run it;
//! - `victim`: runs code under attack in a child process with a memory cap and a timeout, so
//!   a crash or a hang is an outcome the test reports rather than the end of the test binary.
//!
//! It also carries small statistics helpers for tests ([`auc`]).

pub mod bundle;
pub mod cohort;
pub mod command;
pub mod crafted;
pub mod hostile;
pub mod job;
pub mod node_config;
pub mod passkey;
pub mod policy;
pub mod pytorch;
pub mod services;
mod stats;
pub mod tls;
pub mod trainer;
pub mod victim;

pub use stats::auc;
