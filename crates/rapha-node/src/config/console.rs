//! `[console]`: the DPO console's listener (`rapha-node serve`), its TLS files, the WebAuthn
//! relying party and its sessions.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::invalid;

/// `[console]`: the web console for the DPO and the admin, on a listener of its own. Absent,
/// the node serves no console.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Address to listen on (default `127.0.0.1:8421`). Anything but a loopback address needs
    /// `tls_cert_file` and `tls_key_file`.
    #[serde(default = "default_console_listen")]
    pub listen: SocketAddr,
    /// PEM certificate chain the console serves (the hospital's CA or a public one).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of that certificate (mode 0600).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// The WebAuthn relying-party id passkeys are bound to: the console's host name as the
    /// DPO's browser sees it (default `localhost`).
    #[serde(default = "default_rp_id")]
    pub rp_id: String,
    /// Origins (`https://host:port`) a state-changing form may come from. Default: the
    /// listener's own address, and `localhost` on a loopback listener.
    #[serde(default)]
    pub origins: Vec<String>,
    /// Minutes a console session lasts from login (default 30, at most 720).
    #[serde(default = "default_session_minutes")]
    pub session_minutes: u64,
}

/// The console's default address: loopback only.
pub fn default_console_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8421))
}

fn default_rp_id() -> String {
    "localhost".to_owned()
}

const fn default_session_minutes() -> u64 {
    30
}

/// Longest console session, in minutes.
pub const MAX_SESSION_MINUTES: u64 = 720;

impl ConsoleConfig {
    /// Whether the console serves TLS (both files named).
    pub fn tls(&self) -> Option<(&PathBuf, &PathBuf)> {
        self.tls_cert_file.as_ref().zip(self.tls_key_file.as_ref())
    }

    /// The origins a form may be posted from: the configured ones, or the listener's own.
    pub fn allowed_origins(&self) -> Vec<String> {
        if !self.origins.is_empty() {
            return self.origins.clone();
        }
        let scheme = if self.tls().is_some() {
            "https"
        } else {
            "http"
        };
        let port = self.listen.port();
        let mut out = vec![format!("{scheme}://{}", self.listen)];
        if self.listen.ip().is_loopback() {
            out.push(format!("{scheme}://localhost:{port}"));
        }
        out
    }

    /// The shape of the section: TLS files named together, plain HTTP on loopback only, a
    /// session lifetime within range, origins written as origins.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => {
                return Err(invalid(
                    "console.tls_key_file",
                    "tls_cert_file is set but tls_key_file is not; name both or neither",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "console.tls_cert_file",
                    "tls_key_file is set but tls_cert_file is not; name both or neither",
                ))
            }
            _ => {}
        }
        if self.tls().is_none() && !self.listen.ip().is_loopback() {
            return Err(invalid(
                "console.listen",
                format!(
                    "{} is not a loopback address and the console has no TLS: a session cookie \
                     and the DPO's token would cross the network in clear. Set \
                     tls_cert_file and tls_key_file, or listen on 127.0.0.1",
                    self.listen
                ),
            ));
        }
        if !(1..=MAX_SESSION_MINUTES).contains(&self.session_minutes) {
            return Err(invalid(
                "console.session_minutes",
                format!(
                    "{} is outside 1 to {MAX_SESSION_MINUTES} minutes (default 30)",
                    self.session_minutes
                ),
            ));
        }
        if self.rp_id.is_empty()
            || !self
                .rp_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(invalid(
                "console.rp_id",
                "the relying-party id is a host name (letters, digits, '.', '-'), e.g. \
                 rapha.hospital.example",
            ));
        }
        for (i, o) in self.origins.iter().enumerate() {
            let host = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"));
            if host.is_none_or(|h| h.is_empty() || h.contains('/')) {
                return Err(invalid(
                    &format!("console.origins[{i}]"),
                    format!("{o:?} is not an origin (scheme://host[:port], no path)"),
                ));
            }
        }
        Ok(())
    }
}
