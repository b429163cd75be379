//! `[api]`: where `rapha-node serve` listens, whom it lets in, and its limits per caller.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::invalid;

/// `[api]`: where `rapha-node serve` listens and whom it lets in.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: std::net::SocketAddr,
    /// Token file: one `<publisher|dpo|admin> <token>` per line (mode 0600).
    pub tokens_file: PathBuf,
    /// Largest bundle upload (`POST /v1/bundles`) in bytes, also the largest file and the
    /// largest unpacked total in it. Uploads are staged under `paths.data_dir/bundles`.
    #[serde(default = "default_max_bundle_bytes")]
    pub max_bundle_bytes: u64,
    /// Jobs one publisher may have not yet settled (default 4).
    #[serde(default = "default_max_jobs_in_flight")]
    pub max_jobs_in_flight: u64,
    /// Bytes of bundles one publisher may keep stored (default four of the largest uploads,
    /// [`ApiConfig::publisher_bundle_quota`]).
    #[serde(default)]
    pub max_publisher_bundle_bytes: Option<u64>,
    /// Downloads of released outputs one caller (a publisher, or a hospital role) may have
    /// under way at once; more are refused 429 `too-many-downloads` (default 2).
    #[serde(default = "default_downloads_per_caller")]
    pub max_downloads_per_caller: usize,
    /// Longest one download of a released output may take, in seconds (default 600).
    #[serde(default = "default_download_timeout_secs")]
    pub download_timeout_secs: u64,
    /// Longest any response may wait on a client that reads nothing, in seconds, before its
    /// connection is closed (default 60).
    #[serde(default = "default_download_stall_secs")]
    pub download_stall_secs: u64,
    /// A publisher's sustained API calls per second, across its tokens (default 2); calls past
    /// it and the burst are 429 `rate-limited`. The hospital's roles are not limited.
    #[serde(default = "default_publisher_calls_per_sec")]
    pub publisher_calls_per_sec: u32,
    /// A publisher's burst of API calls (default 30).
    #[serde(default = "default_publisher_call_burst")]
    pub publisher_call_burst: u32,
}

impl ApiConfig {
    /// Every limit is within its range, and a publisher can store one bundle of the largest size.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        if self.max_jobs_in_flight == 0 {
            return Err(invalid(
                "api.max_jobs_in_flight",
                "0 would refuse every job; use at least 1 (default 4)",
            ));
        }
        if !(MIN_BUNDLE_BYTES..=MAX_BUNDLE_BYTES).contains(&self.max_bundle_bytes) {
            return Err(invalid(
                "api.max_bundle_bytes",
                format!(
                    "{} is outside 1 MiB ({MIN_BUNDLE_BYTES}) to 64 GiB ({MAX_BUNDLE_BYTES}); \
                     the default is 2 GiB (2147483648)",
                    self.max_bundle_bytes
                ),
            ));
        }
        if !(1..=MAX_DOWNLOADS_PER_CALLER).contains(&self.max_downloads_per_caller) {
            return Err(invalid(
                "api.max_downloads_per_caller",
                format!(
                    "{} is outside 1 to {MAX_DOWNLOADS_PER_CALLER}; each download under \
                     way holds a connection and a file open (default 2)",
                    self.max_downloads_per_caller
                ),
            ));
        }
        if !(1..=86_400).contains(&self.download_timeout_secs) {
            return Err(invalid(
                "api.download_timeout_secs",
                format!(
                    "{} is outside 1 to 86400 s (default 600)",
                    self.download_timeout_secs
                ),
            ));
        }
        if !(1..=3600).contains(&self.download_stall_secs) {
            return Err(invalid(
                "api.download_stall_secs",
                format!(
                    "{} is outside 1 to 3600 s; a client that reads nothing for this long \
                     is disconnected (default 60)",
                    self.download_stall_secs
                ),
            ));
        }
        if !(1..=100).contains(&self.publisher_calls_per_sec) {
            return Err(invalid(
                "api.publisher_calls_per_sec",
                format!(
                    "{} is outside 1 to 100; each call lets the publisher sample the node's \
                     latency (default 2)",
                    self.publisher_calls_per_sec
                ),
            ));
        }
        if !(1..=1000).contains(&self.publisher_call_burst) {
            return Err(invalid(
                "api.publisher_call_burst",
                format!(
                    "{} is outside 1 to 1000 (default 30)",
                    self.publisher_call_burst
                ),
            ));
        }
        if self.publisher_bundle_quota() < self.max_bundle_bytes {
            return Err(invalid(
                "api.max_publisher_bundle_bytes",
                format!(
                    "{} is below api.max_bundle_bytes ({}): a publisher could not store \
                     one bundle of the largest size accepted",
                    self.publisher_bundle_quota(),
                    self.max_bundle_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The limit on a publisher's call rate in force.
    pub fn publisher_rate(&self) -> crate::api::RateLimit {
        crate::api::RateLimit {
            per_sec: self.publisher_calls_per_sec,
            burst: self.publisher_call_burst,
        }
    }

    /// The limits on downloads of released outputs in force.
    pub fn download_limits(&self) -> crate::api::DownloadLimits {
        crate::api::DownloadLimits {
            per_caller: self.max_downloads_per_caller,
            send_timeout: std::time::Duration::from_secs(self.download_timeout_secs),
            stall_timeout: std::time::Duration::from_secs(self.download_stall_secs),
        }
    }

    /// The per-publisher bundle storage quota in force: as configured, else four times
    /// `max_bundle_bytes` (8 GiB with the defaults).
    pub fn publisher_bundle_quota(&self) -> u64 {
        self.max_publisher_bundle_bytes
            .unwrap_or_else(|| self.max_bundle_bytes.saturating_mul(4))
    }
}

fn default_publisher_calls_per_sec() -> u32 {
    crate::api::DEFAULT_PUBLISHER_CALLS_PER_SEC
}

fn default_publisher_call_burst() -> u32 {
    crate::api::DEFAULT_PUBLISHER_BURST
}

fn default_downloads_per_caller() -> usize {
    crate::api::DEFAULT_DOWNLOADS_PER_CALLER
}

fn default_download_timeout_secs() -> u64 {
    crate::api::DEFAULT_DOWNLOAD_TIMEOUT.as_secs()
}

fn default_download_stall_secs() -> u64 {
    crate::api::DEFAULT_STALL_TIMEOUT.as_secs()
}

/// Most concurrent downloads per caller accepted in `[api] max_downloads_per_caller`.
pub const MAX_DOWNLOADS_PER_CALLER: usize = 16;

fn default_max_jobs_in_flight() -> u64 {
    crate::api::DEFAULT_MAX_JOBS_IN_FLIGHT
}

/// The default `[api] max_bundle_bytes`: 2 GiB.
pub fn default_max_bundle_bytes() -> u64 {
    crate::api::BUNDLE_BODY_LIMIT
}

/// Smallest `[api] max_bundle_bytes` accepted (no trainer image fits in less).
pub const MIN_BUNDLE_BYTES: u64 = 1 << 20;
/// Largest `[api] max_bundle_bytes` accepted (a larger figure is taken for a typo).
pub const MAX_BUNDLE_BYTES: u64 = 64 << 30;

/// The API's default listen address, 127.0.0.1:8420 (loopback: put a TLS proxy in front).
pub fn default_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 8420))
}
