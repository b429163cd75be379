//! The rate of a publisher's API calls. Every answer's latency tells the caller something
//! about the load on the node process (a running trainer can modulate it), so a publisher may
//! sample it only so often: a token bucket per publisher (across all its tokens), refilled at
//! [`RateLimit::per_sec`] up to [`RateLimit::burst`]. A call past it is 429 `rate-limited`
//! with `Retry-After`, answered before any other work. The hospital's roles are not limited.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::{ApiResult, HttpError, StatusCode};

/// A publisher's sustained call rate and burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Calls per second, sustained.
    pub per_sec: u32,
    /// Calls in a burst (the bucket's size).
    pub burst: u32,
}

/// Default sustained calls per second of one publisher (`rapha job status --watch` polls
/// every 2 s).
pub const DEFAULT_PUBLISHER_CALLS_PER_SEC: u32 = 2;
/// Default burst of one publisher's calls.
pub const DEFAULT_PUBLISHER_BURST: u32 = 30;

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_sec: DEFAULT_PUBLISHER_CALLS_PER_SEC,
            burst: DEFAULT_PUBLISHER_BURST,
        }
    }
}

/// Each publisher's bucket: calls left and when it was last refilled.
#[derive(Default)]
pub(super) struct Buckets {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Buckets {
    /// Takes one call from `publisher`'s bucket, or refuses it with the seconds to wait.
    pub(super) fn take(&self, publisher: &str, limit: RateLimit) -> ApiResult<()> {
        let now = Instant::now();
        let rate = f64::from(limit.per_sec.max(1));
        let burst = f64::from(limit.burst.max(1));
        let mut buckets = self
            .buckets
            .lock()
            .map_err(|_| HttpError::internal("rate buckets lock poisoned"))?;
        let (left, at) = buckets.entry(publisher.to_owned()).or_insert((burst, now));
        *left = (*left + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *left >= 1.0 {
            *left -= 1.0;
            return Ok(());
        }
        // Whole seconds until one call is back (at least 1).
        let wait = ((1.0 - *left) / rate).ceil().max(1.0);
        Err(HttpError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!(
                "this publisher's calls are limited to {} a second (bursts of {}); retry later",
                limit.per_sec, limit.burst
            ),
        )
        .retry_after(wait as u64))
    }
}
