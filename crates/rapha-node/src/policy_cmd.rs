//! `rapha-node policy test`: runs the policy's Rego unit tests (every `test_*` rule of the
//! `*_test.rego` files next to the policy) with the same engine the node uses.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};

use crate::config::Config;

/// Arguments of `policy`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Runs the Rego unit tests.
    Test {
        /// Directory with the policy and its `*_test.rego` files.
        #[arg(long, conflicts_with = "config")]
        dir: Option<PathBuf>,
        /// Node configuration: tests the configured policy.
        #[arg(long, env = "RAPHA_NODE_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Runs `policy test`; returns whether every test passed.
///
/// # Errors
/// When the directory cannot be read or a file does not compile.
pub fn run(args: &PolicyArgs) -> anyhow::Result<bool> {
    let PolicyCommand::Test { dir, config } = &args.command;
    let dir = match (dir, config) {
        (Some(d), _) => d.clone(),
        (None, Some(c)) => {
            let config = Config::load(c)?;
            rapha_policy::Policy::load(&config.policy.path)?;
            config.policy_tests_dir()
        }
        (None, None) => PathBuf::from("policy"),
    };
    let results = rapha_policy::run_rego_tests(&dir)?;
    if results.is_empty() {
        bail!(
            "no Rego tests (test_* rules in *_test.rego files) in {}",
            dir.display()
        );
    }
    for r in &results {
        match &r.detail {
            None => println!("PASS  {}", r.name),
            Some(d) => println!("FAIL  {}: {d}", r.name),
        }
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    println!("{} passed, {} failed", results.len() - failed, failed);
    Ok(failed == 0)
}
