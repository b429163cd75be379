//! Stopping a verification from another thread.
//!
//! A node verifies an uploaded bundle on a blocking thread; when the upload's time runs out (or
//! its client goes away) the request is dropped, but the thread would hash on to the end. A
//! [`Cancel`] shared with the verification stops it between two blocks of the blob it hashes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag a verification checks as it goes; once set it answers
/// [`crate::BundleError::Cancelled`].
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag not yet set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every verification holding this flag to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// A guard that cancels when it is dropped: held by the request a verification serves, so
    /// that dropping the request (a timeout, a client gone) stops the verification too.
    pub fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(self.clone())
    }
}

/// See [`Cancel::on_drop`].
#[derive(Debug)]
pub struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
