//! What the feed serves: pseudonymous records and their decoded pixels.
//!
//! [`FeedRecord`] carries only hashed identifiers and allow-listed technical attributes
//! (**I1**); the record source decides how pixels are obtained (WADO-RS, a read-only PACS
//! mount, memory) and the feed never sees where they came from.

use std::collections::BTreeMap;

use rapha_core::HashedId;

use crate::error::Result;

/// Pixel sample type as fed to the trainer (little-endian): the protocol's.
pub use rapha_protocol::Dtype;

/// Decoded pixels of one record: `[frames, rows, columns, samples_per_pixel]`, row-major,
/// little-endian samples.
#[derive(Clone, PartialEq, Eq)]
pub struct Pixels {
    pub dtype: Dtype,
    pub shape: [u32; 4],
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Pixels {
    // Pixel bytes are PHI-adjacent: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pixels")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl Pixels {
    /// Builds pixels, checking that the byte length matches shape and dtype.
    pub fn new(dtype: Dtype, shape: [u32; 4], bytes: Vec<u8>) -> Option<Self> {
        let n = shape
            .iter()
            .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d as usize))?;
        (n == bytes.len()).then_some(Self {
            dtype,
            shape,
            bytes,
        })
    }
}

/// One record as the trainer may know it: hashed ids, technical attributes, the label held
/// by the hospital (sent for training records only), and the expected pixel layout.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedRecord {
    pub instance: HashedId,
    pub series: HashedId,
    pub study: HashedId,
    pub patient: HashedId,
    pub label: Option<u8>,
    pub modality: String,
    pub dtype: Dtype,
    pub shape: [u32; 4],
    /// Allow-listed technical attributes (keyword → number, short string or number array).
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// Where the feed gets records and pixels. Implemented over DICOMweb / a PACS mount by the
/// node, and over memory in tests and benchmarks.
pub trait RecordSource: Send + Sync {
    /// The cohort, in feed order (index = position).
    fn records(&self) -> &[FeedRecord];
    /// Fetches and decodes the pixels of record `index`, in memory.
    ///
    /// # Errors
    /// The record cannot be fetched or decoded; the feed answers `unavailable`.
    fn pixels(&self, index: usize) -> Result<Pixels>;
}

/// A record source over records whose pixels are already decoded in memory.
#[derive(Debug, Default)]
pub struct MemorySource {
    records: Vec<FeedRecord>,
    pixels: Vec<Pixels>,
}

impl MemorySource {
    /// Pairs records with pixels.
    pub fn new(entries: Vec<(FeedRecord, Pixels)>) -> Self {
        let (records, pixels) = entries.into_iter().unzip();
        Self { records, pixels }
    }
}

impl RecordSource for MemorySource {
    fn records(&self) -> &[FeedRecord] {
        &self.records
    }
    fn pixels(&self, index: usize) -> Result<Pixels> {
        self.pixels
            .get(index)
            .cloned()
            .ok_or(crate::EnclaveError::RecordUnavailable {
                index,
                reason: "no such record".into(),
            })
    }
}

/// The records of another source that a run may see, renumbered from 0 in their order there:
/// the trainer's view of a job with an audit split (the held-back records are not in it, so
/// their indices do not exist for the trainer), and the audit runner's view (the audit split
/// and a sample of the training records).
pub struct Subset<'a> {
    inner: &'a dyn RecordSource,
    /// `indices[i]` is the inner index of this source's record `i`.
    indices: Vec<usize>,
    records: Vec<FeedRecord>,
}

impl std::fmt::Debug for Subset<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subset")
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Subset<'a> {
    /// The records of `inner` at `indices` (indices out of its range are left out).
    pub fn new(inner: &'a dyn RecordSource, indices: Vec<usize>) -> Self {
        let all = inner.records();
        let indices: Vec<usize> = indices.into_iter().filter(|&i| i < all.len()).collect();
        let records = indices.iter().map(|&i| all[i].clone()).collect();
        Self {
            inner,
            indices,
            records,
        }
    }

    /// The inner index of this source's record `index`.
    pub fn inner_index(&self, index: usize) -> Option<usize> {
        self.indices.get(index).copied()
    }
}

impl RecordSource for Subset<'_> {
    fn records(&self) -> &[FeedRecord] {
        &self.records
    }
    fn pixels(&self, index: usize) -> Result<Pixels> {
        let inner = self
            .inner_index(index)
            .ok_or(crate::EnclaveError::RecordUnavailable {
                index,
                reason: "no such record".into(),
            })?;
        self.inner.pixels(inner)
    }
}
