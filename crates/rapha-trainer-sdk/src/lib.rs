//! Trainer-side SDK for the Rapha trainer protocol v1 (`docs/trainer-protocol.md`).
//!
//! A trainer runs in a sandbox with no network and no DICOM: all it gets is the record feed on
//! a Unix socket. This crate speaks that protocol so a trainer is a few lines of code:
//!
//! ```no_run
//! use rapha_trainer_sdk::{Client, Cohort, outputs};
//!
//! # fn main() -> Result<(), rapha_trainer_sdk::SdkError> {
//! let mut client = Client::connect("my-trainer 1.0")?;        // RAPHA_DATA_SOCKET
//! let cohort = Cohort::load(&mut client)?;                     // every record's metadata
//! for epoch in 0..3 {
//!     for batch in cohort.train_batches(32, epoch) {          // shuffled, reproducible
//!         // Several fetches in flight: the node decodes ahead while this record trains.
//!         for record in client.records(batch.iter().map(|m| m.index)) {
//!             let record = record?;                          // pixels as a typed array
//!             let _pixels: Vec<f32> = record.pixels.to_f32();
//!             // ... train on it with the label of batch[..].index == record.index ...
//!         }
//!     }
//!     client.progress(&rapha_trainer_sdk::Progress { epoch: Some(epoch), ..Default::default() })?;
//! }
//! let scores: Vec<(u32, f64)> = cohort.validation().map(|m| (m.index, 0.5)).collect();
//! client.predict(&scores)?;                                    // the node computes the metrics
//! outputs::write_metrics(&outputs::out_dir().join("metrics.json"), &[("epochs", 3.0)])?;
//! client.done()?;
//! # Ok(()) }
//! ```
//!
//! What the trainer never gets: validation labels (it submits scores; the node computes AUC and
//! the rest), raw identifiers (only HMAC pseudonyms), DICOM objects, paths or a network.
//!
//! The protocol's constants, messages and names come from `rapha-protocol`, the crate the
//! node's side uses too, so the two cannot drift apart.
//!
//! Every frame from the node is checked against the protocol's limits before anything is
//! allocated, and every malformed frame is a typed [`SdkError`], never a panic.

mod client;
mod cohort;
mod error;
pub mod outputs;
mod pixels;
pub mod preprocess;

pub use client::{
    Client, DoneAck, JobInfo, PredictAck, Progress, Records, DEFAULT_SOCKET, PREFETCH_DEPTH,
};
pub use cohort::{Cohort, RecordMeta};
pub use error::SdkError;
pub use pixels::{Pixels, Record};
/// The wire's pixel types and split sides (`rapha_protocol`).
pub use rapha_protocol::{Dtype, Split};

/// The protocol's version and limits, as this SDK speaks and enforces them.
pub use rapha_protocol::{
    MAX_IN_FLIGHT, MAX_PAGE, MAX_PAYLOAD, MAX_RESPONSE_HEADER, PROTOCOL_VERSION,
};
