//! The `rapha-demo` binary: command-line definition only; the demo itself is the library
//! (`src/lib.rs`). Demo only (**I8**): production binaries never link it.

use clap::{Parser, Subcommand};
use rapha_demo::{run, RunArgs};

/// Rapha demo: one job end to end on a synthetic cohort, with dev keys. Not for production.
#[derive(Debug, Parser)]
#[command(name = "rapha-demo", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one job end to end. Exit codes: 0 completed and the receipt verifies; 3 the job
    /// was refused (reason printed); 1 anything else, including steps that did not run.
    Run(RunArgs),
    /// Serve the local parts a demo node's configuration names (`rapha-node init --demo
    /// --dir DIR` wrote it): the demo PACS with a synthetic cohort, anvil with the demo escrow
    /// and mock USDC, their addresses written into the configuration; until Ctrl-C. Then
    /// `rapha-node serve --config DIR/node.toml` runs the node as configured.
    Up(rapha_demo::up::UpArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RAPHA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Run(args) => run::run(&args),
        Cmd::Up(args) => rapha_demo::up::up(&args),
    };
    std::process::exit(code);
}
