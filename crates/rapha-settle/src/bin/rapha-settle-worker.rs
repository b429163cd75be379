//! `rapha-settle-worker`: submits one signed settlement through the node's ledger, reconciles
//! the ledger with the chain after a restart, or withdraws what the escrow owes an account. An
//! operator's tool (and the process the crash tests SIGKILL mid-settlement).
//!
//! ```text
//! rapha-settle-worker settle    --ledger DB --rpc URL --escrow ADDR --key-env VAR --settlement FILE [--confirmations N]
//! rapha-settle-worker reconcile --ledger DB --rpc URL --escrow ADDR --key-env VAR [--confirmations N]
//! rapha-settle-worker withdraw  --rpc URL --escrow ADDR --key-env VAR
//! ```
//! The wallet key is read from the environment variable named by `--key-env`, never from the
//! command line. Progress is printed one line per step: `recorded TX`, `broadcast TX`,
//! `confirmed TX N`, `failed REASON`, `open JOB STATE`, `withdrawn TX AMOUNT`, `owed nothing`.
//! `withdraw` is how the hospital's payout, the treasury or a refunded depositor takes its
//! money: settlements and expiry refunds only credit it in the escrow.
//!
//! Exit status: 0 done, 1 the work failed or a value was refused (an address, a number, the
//! key, the settlement file, the chain), 2 a usage error (unknown command or flag, a missing
//! flag).

#![allow(clippy::print_stderr)] // a binary reports to its operator

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};
use rapha_settle::network::connect_http;
use rapha_settle::{
    wallet_provider, Escrow, Ledger, LedgerState, SettleError, Settler, SettlerConfig,
    SignedSettlement, WalletKey,
};
use zeroize::Zeroizing;

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "rapha-settle-worker",
    version,
    about = "Settle a job on the Rapha escrow, reconcile the settlement ledger, or withdraw \
             what the escrow owes an account",
    long_about = "Settle a job on the Rapha escrow, reconcile the settlement ledger after a \
                  restart, or withdraw what the escrow owes an account.\n\n\
                  The node settles its jobs by itself; this tool does the same steps from a \
                  shell, through the same ledger (it never pays a job twice: a settlement \
                  already recorded is followed, not sent again). Settlements and expiry \
                  refunds only credit accounts in the escrow: the hospital's payout, the \
                  treasury and refunded depositors each take their money with `withdraw`.",
    after_help = "Progress is printed on stdout, one line per step: `recorded TX`, \
                  `broadcast TX`, `confirmed TX N`, `failed REASON`, `open JOB STATE`, \
                  `withdrawn TX AMOUNT`, `owed nothing`.\n\n\
                  Exit status: 0 done; 1 the work failed or a value was refused (an address, \
                  a number, the key, the settlement file, the chain), with the reason on \
                  stderr; 2 a usage error (unknown command or flag, a missing flag)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Submit one signed settlement (JSON: the settlement's fields and the node key's
    /// signature) and wait until it is confirmed
    Settle {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// The signed settlement to submit: JSON `{ "fields": …, "signature": "0x…" }`
        #[arg(long, value_name = "FILE")]
        settlement: PathBuf,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Bring the ledger up to date with the chain after a crash or restart, and list the
    /// settlements still open
    Reconcile {
        #[command(flatten)]
        ledger: LedgerArgs,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Take what the escrow owes the key's account (the hospital's payout, the treasury or a
    /// refunded depositor)
    Withdraw {
        #[command(flatten)]
        chain: ChainArgs,
    },
}

#[derive(Debug, Args)]
struct LedgerArgs {
    /// The settlement ledger (SQLite; created if missing). To act for a node, name the node's
    /// own (`settlement-ledger.sqlite` in its state directory), so nothing is paid twice
    #[arg(long, value_name = "DB")]
    ledger: PathBuf,
    /// Blocks a settlement must be buried under before it counts as confirmed
    #[arg(long, value_name = "N", default_value_t = SettlerConfig::default().confirmations)]
    confirmations: u64,
}

#[derive(Debug, Args)]
struct ChainArgs {
    /// JSON-RPC endpoint of the settlement chain (http:// or https://)
    #[arg(long, value_name = "URL")]
    rpc: String,
    /// The RaphaEscrow contract: 0x + 40 hex digits (EIP-55 checked when mixed case)
    #[arg(long, value_name = "ADDR", value_parser = parse_escrow)]
    escrow: alloy::primitives::Address,
    /// The environment variable holding the wallet key (64 hex digits): the node's settlement
    /// account (settle, reconcile) or the account whose money to take (withdraw). The key
    /// itself never goes on the command line
    #[arg(long, value_name = "VAR")]
    key_env: String,
}

fn parse_escrow(s: &str) -> Result<alloy::primitives::Address, String> {
    rapha_eth::parse_address(s).map_err(|e| format!("bad escrow address: {e}"))
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // The parent may already be gone; nothing useful to do about a closed pipe.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // A value that parsed as a flag but was refused (an address, a number) fails the
            // run like any other refused value; only the command line's shape is a usage error.
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                ErrorKind::ValueValidation | ErrorKind::InvalidValue => EXIT_FAILED,
                _ => EXIT_USAGE,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rapha-settle-worker: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn wallet_key(chain: &ChainArgs) -> Result<WalletKey, SettleError> {
    let key_hex = Zeroizing::new(std::env::var(&chain.key_env).map_err(|_| SettleError::BadKey)?);
    WalletKey::from_hex(&key_hex)
}

async fn settler(
    chain: &ChainArgs,
    key: &WalletKey,
    ledger: &LedgerArgs,
) -> Result<Settler, SettleError> {
    let cfg = SettlerConfig {
        confirmations: ledger.confirmations,
        poll_interval: std::time::Duration::from_millis(250),
        ..SettlerConfig::default()
    };
    Settler::new(
        Ledger::open(&ledger.ledger)?,
        connect_http(&chain.rpc)?,
        chain.escrow,
        key,
        cfg,
    )
    .await
}

async fn run(command: Command) -> Result<(), SettleError> {
    match command {
        Command::Withdraw { chain } => {
            let key = wallet_key(&chain)?;
            let escrow = Escrow::at(wallet_provider(&chain.rpc, &key)?, chain.escrow);
            let owed = escrow.owed(key.address()).await?;
            if owed.is_zero() {
                say("owed nothing");
                return Ok(());
            }
            let mined = escrow.withdraw().await?;
            say(&format!("withdrawn {} {owed}", mined.tx));
        }
        Command::Settle {
            ledger,
            settlement,
            chain,
        } => {
            let key = wallet_key(&chain)?;
            let mut settler = settler(&chain, &key, &ledger).await?;
            let bytes = std::fs::read(&settlement).map_err(|e| {
                SettleError::BadSettlement(format!("{}: {e}", settlement.display()))
            })?;
            let signed = SignedSettlement::from_json(&bytes)?;
            let job = signed.fields.job_id;
            let row = settler.ledger().enqueue(&job, &signed)?;
            if row.state == LedgerState::Pending {
                if let Some(a) = settler.prepare(&job).await? {
                    say(&format!("recorded {}", a.tx));
                    let tx = settler.broadcast(&job).await?;
                    say(&format!("broadcast {tx}"));
                }
            }
            report(settler.settle(&job, &signed).await?);
        }
        Command::Reconcile { ledger, chain } => {
            let key = wallet_key(&chain)?;
            let mut settler = settler(&chain, &key, &ledger).await?;
            for row in settler.reconcile().await? {
                say(&format!("open {} {:?}", row.job, row.state));
            }
        }
    }
    Ok(())
}

fn report(state: LedgerState) {
    match state {
        LedgerState::Confirmed {
            tx, confirmations, ..
        } => say(&format!("confirmed {tx} {confirmations}")),
        LedgerState::Failed { reason } => say(&format!("failed {reason}")),
        other => say(&format!("open {other:?}")),
    }
}
