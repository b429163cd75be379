//! `rapha-node`: the hospital's edge appliance service.
//!
//! Thin glue: every check lives in a library crate (see ARCHITECTURE.md). This binary owns the
//! job state machine, the HTTP API, configuration, `doctor`, the trust store and the keys.
//! It must never link `rapha-demo` or `rapha-testkit` (**I8**).

use clap::{Parser, Subcommand};

/// Rapha hospital node: runs signed trainers on studies that never leave the hospital.
#[derive(Debug, Parser)]
#[command(name = "rapha-node", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per subcommand; each subcommand's code lives in its own module.
#[derive(Debug, Subcommand)]
enum Command {}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {}
}
