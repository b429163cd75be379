//! Real services for tests: Orthanc + DICOMweb, swtpm and anvil, each on free loopback ports
//! with its own temporary directory, a readiness check, and teardown on drop.
//!
//! ```no_run
//! use rapha_testkit::services::Orthanc;
//! let Some(orthanc) = rapha_testkit::require!(Orthanc::start()) else { return };
//! ```
//!
//! Every child runs in its own process group under a small `sh` wrapper: dropping the handle
//! sends SIGTERM to the group and waits, and a watchdog in the wrapper kills the service if the
//! test process dies without running destructors. When a test panics, the service directory
//! (with its log) is kept and its path printed.
//!
//! HTTP calls run on a short-lived thread of their own, so the blocking client is safe to use
//! from `#[tokio::test]` functions too.

mod anvil;
mod orthanc;
mod process;
mod swtpm;

use std::path::PathBuf;
use std::time::Duration;

pub use anvil::{Anvil, AnvilOptions};
pub use orthanc::Orthanc;
pub use swtpm::Swtpm;

/// Harness failures. A missing service binary is only an error when
/// `RAPHA_REQUIRE_SERVICES=1`; otherwise start functions return `Ok(None)`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    #[error("{service} is not installed ({detail}); run ./scripts/test to install it")]
    Missing {
        service: &'static str,
        detail: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{service} exited during start-up ({status}); log {log}:\n{log_tail}", log = log.display())]
    Exited {
        service: &'static str,
        status: String,
        log: PathBuf,
        log_tail: String,
    },
    #[error("{service} not ready after {waited:?}; log {log}:\n{log_tail}", log = log.display())]
    NotReady {
        service: &'static str,
        waited: Duration,
        log: PathBuf,
        log_tail: String,
    },
    #[error("no free pair of loopback ports found")]
    NoFreePort,
    #[error("HTTP request {what} failed: {detail}")]
    Http { what: String, detail: String },
    #[error("Orthanc rejected {path} (HTTP {status}): {body}", path = path.display())]
    Rejected {
        path: PathBuf,
        status: u16,
        body: String,
    },
    #[error("{what} failed; log {log}:\n{log_tail}", log = log.display())]
    Setup {
        what: String,
        log: PathBuf,
        log_tail: String,
    },
    #[error("JSON-RPC {method} failed: {detail}")]
    Rpc { method: String, detail: String },
}

impl HarnessError {
    pub(crate) fn io(what: String, source: std::io::Error) -> HarnessError {
        HarnessError::Io { what, source }
    }

    pub(crate) fn http(what: impl Into<String>, detail: impl std::fmt::Display) -> HarnessError {
        HarnessError::Http {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

/// True when `RAPHA_REQUIRE_SERVICES=1`: a missing service fails the test instead of skipping.
pub fn services_required() -> bool {
    std::env::var("RAPHA_REQUIRE_SERVICES").is_ok_and(|v| v.trim() == "1")
}

/// Decides what a missing binary means: `Ok(None)` (skip, loudly) or an error when required.
pub(crate) fn missing<T>(service: &'static str, detail: String) -> Result<Option<T>, HarnessError> {
    if services_required() {
        return Err(HarnessError::Missing { service, detail });
    }
    eprintln!(
        "\n*** SKIPPED: {service} not installed ({detail}); run ./scripts/test to install it. \
         Set RAPHA_REQUIRE_SERVICES=1 to make this a failure. ***\n"
    );
    Ok(None)
}

/// How many times a start is retried with fresh ports when the service dies or never answers
/// (usually another process took the port between our probe and the service's bind).
pub(crate) const START_ATTEMPTS: usize = 3;

/// Runs `f` with a fresh blocking HTTP client on its own thread. reqwest's blocking client
/// owns a runtime that must not be created or dropped inside an async context; a separate
/// thread makes the harness usable from `#[tokio::test]`s.
pub(crate) fn with_http<T: Send>(
    accept_invalid_certs: bool,
    f: impl FnOnce(&reqwest::blocking::Client) -> Result<T, HarnessError> + Send,
) -> Result<T, HarnessError> {
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .connect_timeout(Duration::from_secs(2))
                .danger_accept_invalid_certs(accept_invalid_certs)
                .no_proxy()
                .build()
                .map_err(|e| HarnessError::http("client setup", e))?;
            f(&client)
        });
        handle
            .join()
            .unwrap_or_else(|_| Err(HarnessError::http("harness thread", "panicked")))
    })
}

/// Panics on a harness error, evaluates to `None` when the service is missing and not
/// required (the start function already printed a loud SKIPPED line), `Some(service)` else:
///
/// ```no_run
/// use rapha_testkit::services::Orthanc;
/// let Some(orthanc) = rapha_testkit::require!(Orthanc::start()) else { return };
/// ```
#[macro_export]
macro_rules! require {
    ($start:expr) => {
        match $start {
            ::std::result::Result::Ok(::std::option::Option::Some(service)) => {
                ::std::option::Option::Some(service)
            }
            ::std::result::Result::Ok(::std::option::Option::None) => ::std::option::Option::None,
            ::std::result::Result::Err(e) => {
                ::std::panic!("test service failed to start: {e}")
            }
        }
    };
}
