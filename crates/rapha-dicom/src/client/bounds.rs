//! What a PACS conversation may spend: the cohort build's [`Budget`] (a deadline for all its
//! requests and an allowance of QIDO-RS pages), each request's [`Deadline`], and [`Bounded`],
//! the reader that ends an answer past its byte cap or its deadline.

use std::cell::Cell;
use std::io::Read;
use std::time::{Duration, Instant};

use crate::config::PacsLimits;
use crate::{DicomError, Result};

/// What one cohort build may still spend on the PACS: a deadline for all its requests and an
/// allowance of QIDO-RS pages. Every client method that takes one charges it.
#[derive(Debug)]
pub struct Budget {
    pub(super) deadline: Instant,
    pub(super) deadline_seconds: u64,
    pages_left: Cell<u64>,
    max_pages: u64,
}

impl Budget {
    /// A fresh budget from the limits, starting now.
    pub fn new(limits: &PacsLimits) -> Self {
        Self {
            deadline: Instant::now() + Duration::from_secs(limits.cohort_deadline_seconds),
            deadline_seconds: limits.cohort_deadline_seconds,
            pages_left: Cell::new(limits.max_pages),
            max_pages: limits.max_pages,
        }
    }

    pub(super) fn check_time(&self) -> Result<()> {
        if Instant::now() >= self.deadline {
            return Err(DicomError::CohortDeadline {
                seconds: self.deadline_seconds,
            });
        }
        Ok(())
    }

    pub(super) fn take_page(&self) -> Result<()> {
        let left = self.pages_left.get();
        if left == 0 {
            return Err(DicomError::TooManyPages {
                limit: self.max_pages,
            });
        }
        self.pages_left.set(left - 1);
        Ok(())
    }
}

/// When a request must be done, and which limit that is.
pub(super) struct Deadline {
    pub(super) at: Instant,
    pub(super) error: DeadlineError,
}

#[derive(Clone, Copy)]
pub(super) enum DeadlineError {
    Request(u64),
    Cohort(u64),
}

/// A reader that fails past a byte cap or a deadline (reqwest's own timeout ends a read
/// blocked on a silent server; this ends a trickle that never blocks long).
pub(super) struct Bounded<R> {
    inner: R,
    deadline: Instant,
    left: u64,
    pub(super) over_limit: bool,
}

impl<R> Bounded<R> {
    pub(super) fn new(inner: R, deadline: Instant, cap: u64) -> Self {
        Self {
            inner,
            deadline,
            left: cap,
            over_limit: false,
        }
    }

    pub(super) fn past_deadline(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.past_deadline() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the PACS did not finish the answer before its deadline",
            ));
        }
        // One byte past the cap tells "exactly at the cap" from "over it".
        let room = usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX);
        let want = buf.len().min(room);
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            self.over_limit = true;
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the PACS sent more bytes than the limit",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
