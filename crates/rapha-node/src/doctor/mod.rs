//! `rapha-node doctor`: the production preflight (**I8**).
//!
//! Checks every production requirement against the real thing (the PACS answers a scoped QIDO
//! over HTTPS, the TPM certifies an AK under an EK that chains to the vendor root, the chain
//! has the escrow deployed, …) and reports each as PASS or FAIL with how to fix it. Run it
//! before starting a production node ([`preflight`] for a supervisor that must refuse to start
//! on any FAIL). The node itself refuses to build without production attestation
//! ([`crate::node_build`]), and every job without verified TPM and SGX evidence is refused.
//!
//! [`run_doctor`] blocks (network and TPM I/O) on a thread of its own, so async code may call
//! it, though it should not hold up a runtime worker with it (use `spawn_blocking`).
//!
//! One module per group of checks (`run_checks` puts them in the report's order):
//!
//! ```text
//! mode         production mode, no demo component
//! pacs         DICOMweb endpoints, opt-out list, [dicom] scope limits
//! keys         HMAC key, node key, DPO keys, API tokens
//! admission    policy and its tests, trust store, depositor accounts
//! attestation  TPM (EK chain, PCRs), enrolled AK, SGX quote source and collateral
//! trainer      OCI runtime, resource bounds, GPUs
//! chain        chain RPC, USDC, escrow, settlement keys and accounts
//! host         data directories, swap
//! ```

use std::fmt;
use std::time::Duration;

use crate::config::Config;

mod admission;
mod attestation;
mod chain;
mod host;
mod keys;
mod mode;
mod pacs;
mod trainer;

pub use chain::OFFICIAL_USDC;
pub use host::{check_swap, node_cgroup_swap, CgroupSwap};
pub use trainer::check_gpus;

const NETWORK_TIMEOUT: Duration = Duration::from_secs(10);

/// PASS or FAIL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Short stable name, e.g. `HMAC key`.
    pub name: String,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// How to fix a failure.
    pub fix: Option<String>,
}

/// All checks, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// True when no check failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status == Status::Pass)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }

    fn pass(&mut self, name: &str, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.to_owned(),
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        });
    }

    fn fail(&mut self, name: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.checks.push(Check {
            name: name.to_owned(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        });
    }

    fn push(&mut self, name: &str, result: Result<String, (String, String)>) {
        match result {
            Ok(detail) => self.pass(name, detail),
            Err((detail, fix)) => self.fail(name, detail, fix),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            let tag = match c.status {
                Status::Pass => "PASS",
                Status::Fail => "FAIL",
            };
            writeln!(f, "{tag}  {}: {}", c.name, c.detail)?;
            if let Some(fix) = &c.fix {
                writeln!(f, "      fix: {fix}")?;
            }
        }
        let failed = self.failures().count();
        if failed == 0 {
            writeln!(f, "all {} checks passed", self.checks.len())
        } else {
            writeln!(f, "{failed} of {} checks FAILED", self.checks.len())
        }
    }
}

type Outcome = Result<String, (String, String)>;

fn fail<T>(detail: impl Into<String>, fix: impl Into<String>) -> Result<T, (String, String)> {
    Err((detail.into(), fix.into()))
}

/// Runs every production check.
///
/// The checks run on a thread of their own: the blocking HTTP client must not start inside
/// an async runtime, so this is safe to call from `rapha-node serve`'s async code too.
pub fn run_doctor(config: &Config) -> Report {
    std::thread::scope(|s| s.spawn(|| run_checks(config)).join()).unwrap_or_else(|_| {
        let mut r = Report::default();
        r.fail(
            "doctor",
            "a check crashed",
            "report this as a bug; the node must not start",
        );
        r
    })
}

/// The checks that read only the node's own host and files (keys, lists, trust store, limits,
/// token file, directories, swap), never the PACS, the TPM, the chain or another process: cheap
/// and safe to run on every load of the console's health page. `doctor` runs them all.
pub fn run_local_checks(config: &Config) -> Report {
    let mut r = Report::default();
    r.push("mode", mode::check_mode(config));
    key_and_list_checks(config, &mut r);
    trust_checks(config, &mut r);
    limit_checks(config, &mut r);
    host_checks(config, &mut r);
    r.push("no demo component", mode::check_no_demo(config));
    r
}

/// Keys and the hospital's lists (local files).
fn key_and_list_checks(config: &Config, r: &mut Report) {
    r.push("HMAC key (keys.hmac_key_file)", keys::check_hmac(config));
    r.push(
        "node key (keys.node_key_file)",
        keys::check_node_key(config),
    );
    r.push(
        "DPO keys (keys.dpo_public_keys)",
        keys::check_dpo_keys(config),
    );
    r.push(
        "approval methods ([approval])",
        keys::check_approval_methods(config),
    );
    r.push(
        "opt-out list (cohort.opt_out_file)",
        pacs::check_optouts(config),
    );
    r.push("scope limits ([dicom.scope])", pacs::check_scope(config));
}

/// The trust store and the depositor accounts (local files and values).
fn trust_checks(config: &Config, r: &mut Report) {
    r.push("trust store (trust.store)", admission::check_trust(config));
    r.push(
        "depositor accounts ([depositors])",
        admission::check_depositors(config),
    );
}

fn limit_checks(config: &Config, r: &mut Report) {
    r.push(
        "trainer resource bounds ([trainer.limits])",
        trainer::check_trainer_limits(config, trainer::memory_total_mb()),
    );
}

/// The token file, the data directories and swap.
fn host_checks(config: &Config, r: &mut Report) {
    r.push("API tokens ([api])", keys::check_api(config));
    r.push("data directories ([paths])", host::check_paths(config));
    r.push("swap", host::check_host_swap());
}

fn run_checks(config: &Config) -> Report {
    let mut r = Report::default();
    r.push("mode", mode::check_mode(config));
    for (i, e) in config.dicomweb.endpoints.iter().enumerate() {
        r.push(
            &format!("DICOMweb endpoint (dicomweb.endpoints[{i}])"),
            pacs::check_dicomweb(config, e),
        );
    }
    if config.dicomweb.endpoints.is_empty() {
        r.fail(
            "DICOMweb endpoint",
            "no endpoint configured",
            "add a [[dicomweb.endpoints]] entry",
        );
    }
    key_and_list_checks(config, &mut r);
    r.push("policy (policy.path)", admission::check_policy(config));
    trust_checks(config, &mut r);
    r.push(
        "attestation: TPM ([attestation.tpm])",
        attestation::check_tpm(config),
    );
    r.push(
        "attestation: TPM attestation key (attestation.tpm.ak_file)",
        attestation::check_ak(config),
    );
    r.push(
        "attestation: SGX ([attestation.sgx])",
        attestation::check_sgx(config),
    );
    r.push(
        "trainer command (trainer.runtime)",
        trainer::check_trainer(config),
    );
    limit_checks(config, &mut r);
    r.push("GPUs (trainer.gpus)", trainer::check_gpus(&config.trainer));
    chain::check_chain(config, &mut r);
    r.push("settlement ([settlement])", chain::check_settlement(config));
    host_checks(config, &mut r);
    r.push("sandboxed decoder (rapha-decode)", host::check_decoder());
    r.push("no demo component", mode::check_no_demo(config));
    r
}

/// Arguments of `doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Node configuration file.
    #[arg(long, env = "RAPHA_NODE_CONFIG")]
    pub config: std::path::PathBuf,
}

/// Runs `doctor`: prints the report; returns whether every check passed.
///
/// # Errors
/// When the configuration cannot be read or parsed (the error names the key).
pub fn run(args: &DoctorArgs) -> anyhow::Result<bool> {
    let config = Config::load(&args.config)?;
    let report = run_doctor(&config);
    print!("{report}");
    Ok(report.passed())
}

/// For `rapha-node serve` in production mode: runs every check and refuses to start on any
/// FAIL, returning the report (print it: it says how to fix each failure).
///
/// # Errors
/// The full report when any check failed.
pub fn preflight(config: &Config) -> Result<Report, Report> {
    let report = run_doctor(config);
    if report.passed() {
        Ok(report)
    } else {
        Err(report)
    }
}
