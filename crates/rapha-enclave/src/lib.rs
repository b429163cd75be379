//! The enclave runtime: record feed, isolated trainer launch, output guard, node-computed
//! validation metrics.
//!
//! Enforces **I1** on the trainer side (the trainer receives records — hashed ids,
//! allow-listed attributes, decoded pixels — never a DICOM object, path or network route),
//! **I3** (pixels live in runtime memory and the socket only; no core dumps; a fresh key pair
//! per job signs the output manifest) and **I4** (only vetted outputs leave: the guard rejects
//! the whole output set on any violation).
//!
//! ```text
//!   RecordSource (WADO-RS / PACS mount / memory)
//!        │ decode in memory
//!        ▼
//!   feed ── /rapha/data.sock (protocol v1) ──▶ trainer in runc: no network, read-only root,
//!    │  fingerprints of fed pixels                uid 65532, no caps, seccomp, cgroup limits
//!    │  validation predictions in                 │ writes /out (tmpfs), stdout/stderr
//!    ▼                                            ▼
//!   metrics (node-computed)            guard: names, file types, caps, DICOM, formats,
//!    │                                        identifiers, pixel blocks (whole set)
//!    └────────────▶ output manifest, signed with the per-job Ed25519 key ◀──┘
//! ```
//!
//! In development the runtime is an ordinary process and reports
//! `confinement: "none-development"` in every manifest and in the feed's `hello`. The trainer
//! protocol is specified in `docs/trainer-protocol.md`.
//!
//! Pixel spill: none. Pixels are decoded into memory per fetch and written to the socket;
//! records a trainer fetches again (later epochs) are kept decoded in this process's memory
//! for the job (bounded, see `feed::PIXEL_CACHE_BYTES`). Nothing is cached on disk, so there
//! is no at-rest copy to encrypt, and the process's memory is locked against swap
//! ([`harden::lock_memory`]). The trainer's `/out` is a RAM-backed tmpfs that is unmounted
//! (discarded) after the guard has run; the trainer's cgroup cannot swap.

pub mod cdi;
pub mod dicom;
mod error;
pub mod feed;
pub mod fingerprint;
pub mod formats;
pub mod fuzzing;
pub mod guard;
pub mod harden;
pub mod identifiers;
pub mod metrics;
/// The trainer protocol v1 (framing, messages, limits): its own crate, shared with the SDKs.
pub use rapha_protocol as protocol;
pub mod record;
pub mod sandbox;
pub mod session;
pub mod split;

pub use error::{EnclaveError, Result};
pub use guard::{Guard, GuardBudget, Rejection, Verdict};
pub use identifiers::{IdentifierKind, RawIdentifiers};
pub use record::{Dtype, FeedRecord, MemorySource, Pixels, RecordSource};
pub use sandbox::{Exit, SandboxConfig};
pub use session::{
    EnclaveSession, GuardSummary, JobResult, JobSpec, ManifestOutcome, OutputManifest, RunDetails,
    RunPaths, SignedManifest,
};
pub use split::Split;
