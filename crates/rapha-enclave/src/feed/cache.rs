//! Decoded pixels of records a trainer fetches again (its later epochs), kept in this
//! process's locked memory for the job and never on disk (**I3**), within
//! [`PIXEL_CACHE_BYTES`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{Shared, PIXEL_CACHE_BYTES};

/// Decoded records of one job, within [`PIXEL_CACHE_BYTES`].
#[derive(Default)]
pub(super) struct PixelCache {
    records: Mutex<(BTreeMap<usize, Shared>, usize)>,
}

impl PixelCache {
    pub(super) fn get(&self, index: usize) -> Option<Shared> {
        let g = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.0.get(&index).cloned()
    }

    pub(super) fn keep(&self, index: usize, bytes: &Shared) {
        let mut g = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (map, total) = &mut *g;
        if *total + bytes.len() <= PIXEL_CACHE_BYTES && !map.contains_key(&index) {
            *total += bytes.len();
            map.insert(index, Arc::clone(bytes));
        }
    }
}
