//! The hospital-built audit runner (issue 19 item 5): scores records with a model's released
//! weights, in the graph the signed predicate pins, for the node's membership-inference audit.
//!
//! ```text
//!   /in/model.onnx        the publisher's pinned graph (architecture; initializers by name)
//!   /in/model.safetensors the node's re-serialisation of the released weights
//!   /in/audit.json        the predicate's declaration: input kind + side, output kind
//!        |
//!        v  checked before the feed is touched: any refusal exits non-zero, one line on stderr
//!   weights substituted into the graph's initializers (names, shapes: exactly)
//!        |
//!   record feed (list_all, fetch) -> canonical preprocessing -> graph -> p(positive)
//!        |
//!        v
//!   predict(index, p) per batch, then done
//! ```
//!
//! The graph and the weights are the publisher's choice, so both are read as hostile input:
//! the graph file is at most [`MAX_GRAPH_BYTES`], the weights file at most
//! [`MAX_WEIGHTS_BYTES`], and nothing is computed before the runner has bounded what it will
//! allocate ([`MAX_ELEMENTS`] values in the weights and constants, and again in one batch's
//! intermediate values). Only the operators of [`graph::ALLOWED_OPS`] load; a node whose inputs
//! are all constants is refused (it would be evaluated while the graph loads, before any
//! bound could be checked). A score the graph cannot give (a non-finite logit, a probability
//! outside [0, 1]) ends the run: the node reports "audit: not available", never a made-up
//! figure.

pub mod declaration;
pub mod graph;
pub mod reference;
pub mod weights;

/// Largest graph file read (64 MiB).
pub const MAX_GRAPH_BYTES: u64 = 64 << 20;
/// Largest weights file read (1 GiB).
pub const MAX_WEIGHTS_BYTES: u64 = 1 << 30;
/// Most values allocated for the weights and constants together, and again for one batch's
/// intermediate values (256 Mi values, 1 GiB as f32).
pub const MAX_ELEMENTS: u64 = 256 << 20;

/// Why the runner stops, with the exit code the node sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: i32,
    pub reason: String,
}

impl Refusal {
    /// `audit.json` is not a declaration this runner knows (exit 2).
    pub fn declaration(reason: impl Into<String>) -> Self {
        Self {
            code: 2,
            reason: reason.into(),
        }
    }

    /// The graph or the weights cannot be loaded, or do not match (exit 3).
    pub fn model(reason: impl Into<String>) -> Self {
        Self {
            code: 3,
            reason: reason.into(),
        }
    }

    /// The record feed failed, or the graph gave a score that is not one (exit 4).
    pub fn scoring(reason: impl Into<String>) -> Self {
        Self {
            code: 4,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // One line: the node keeps the last line of stderr as the reason.
        f.write_str(&self.reason.replace(['\n', '\r'], " "))
    }
}

/// Reads at most `cap` bytes of `path`; a longer file is refused without reading the rest.
///
/// # Errors
/// The file cannot be read, or is longer than `cap`.
pub fn read_capped(path: &std::path::Path, cap: u64, what: &str) -> Result<Vec<u8>, Refusal> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| Refusal::model(format!("cannot open {what} {}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Refusal::model(format!("cannot read {what} {}: {e}", path.display())))?;
    if bytes.len() as u64 > cap {
        return Err(Refusal::model(format!(
            "{what} {} is over {cap} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}
