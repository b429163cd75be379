//! Shared vocabulary of Rapha: ids, digests, pseudonyms, money, job and receipt types, and
//! RFC 9162 Merkle hashing.
//!
//! Every other crate builds on these types, so each one is made to be hard to misuse:
//!
//! - [`Digest`] is a SHA-256 value; it prints as lowercase hex and parses only from exactly
//!   64 hex digits (optionally prefixed `sha256:` as in OCI).
//! - [`HashedId`] is a pseudonym. Outside of deserialising one that was already hashed, the only
//!   way to make one is [`HashedId::derive_in`] (or the unscoped [`HashedId::derive`]), an
//!   HMAC-SHA256 under a hospital-held [`HmacKey`] (**I1**). A
//!   raw identifier therefore cannot be passed where a pseudonym is expected.
//! - [`HmacKey`] is exactly 32 bytes, zeroized on drop, with no `Debug`/`Display` that could
//!   print it, and [`HmacKey::load`] refuses files that are group- or world-readable.
//! - [`Usdc`] is an amount in integer base units (6 decimals); [`FeeSplit`] is the one place
//!   the 70/30 split is computed (**I7**).
//! - [`jcs`] is the one RFC 8785 canonical JSON of everything signed or hashed as JSON
//!   (receipt bodies, policy input digests, the job digest a DPO approves).
//! - [`merkle`] implements RFC 9162 §2.1: leaf and node hashes, tree roots, inclusion and
//!   consistency proofs. The cohort commitment and the receipt log (**I6**) share it.
//! - [`lists`] reads the hospital's lists (opt-outs, labels, accession lists) as spreadsheets
//!   save them, refusing with the line named what it cannot read with certainty.
//! - [`fs`] lists the regular files under a directory and replaces a file atomically.
//! - [`release`] is the release channel: the tensors a released model file declares and the
//!   bits they can carry (**I4**).
//! - [`percent`] is the one percent-decoder of URL query components, strict about escapes.
//! - [`demographics`] counts a cohort's patients by sex and age decade for the DPO's summary
//!   (bins only, never a date or an age; counts below five shown as "<5").
//!
//! ```text
//!   raw PatientID ──HMAC(key, "rapha-pseudonym-v2" 0x00 "job/<id>" 0x00 "patient" 0x00 id)──▶
//!       HashedId ──▶ records, cohort commitment ──▶ Merkle leaf ──▶ receipt
//! ```
//!
//! Jobs hash within a [`PseudonymScope`] (their own by default), so no two jobs' records join.

pub mod demographics;
mod digest;
mod error;
pub mod fs;
mod ids;
pub mod jcs;
mod job;
pub mod lists;
pub mod merkle;
mod money;
pub mod percent;
mod pseudonym;
mod receipt;
pub mod release;

pub use digest::{Digest, DigestWriter};
pub use error::{CoreError, Result};
pub use ids::JobId;
pub use job::{
    Bound, CohortQuery, JobRequest, LinkageGroup, OutOfRange, OutputDecl, OutputKind,
    ResourceBounds, ResourceLimits, DEFAULT_TMP_MB,
};
pub use money::{FeeSplit, Usdc, USDC_DECIMALS};
pub use pseudonym::{HashedId, HmacKey, IdDomain, PseudonymScope, HMAC_KEY_LEN};
pub use receipt::{ExclusionCounts, Outcome, ReasonCode};
