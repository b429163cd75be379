//! `rapha job deposit`: the AI company pays a job's fee into escrow.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use rapha_core::{JobId, Usdc};
use rapha_settle::{deposit_for_job, DepositOrder, TokenKind, WalletKey};
use zeroize::Zeroizing;

/// Job commands.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Approve and deposit a job's fee in USDC into the escrow, naming the hospital.
    Deposit(DepositArgs),
}

#[derive(Debug, Args)]
pub struct DepositArgs {
    /// The job id (32 hex digits).
    pub job: JobId,
    /// The fee in USDC, e.g. 120.00 (at most 6 decimals; parsed exactly, never as a float).
    #[arg(long)]
    pub fee: Usdc,
    /// The escrow contract's address.
    #[arg(long)]
    pub escrow: String,
    /// JSON-RPC endpoint of the chain.
    #[arg(long)]
    pub rpc: String,
    /// File holding the paying wallet's private key (64 hex digits; mode 0600 or stricter).
    #[arg(long = "key", value_name = "WALLET_KEY")]
    pub key: PathBuf,
    /// The hospital's registered account the job runs at.
    #[arg(long, env = "RAPHA_HOSPITAL")]
    pub hospital: String,
    /// Hours until the depositor may take an unsettled deposit back.
    #[arg(long, default_value_t = 168)]
    pub deadline_hours: u64,
    /// Refuse an RPC on another chain (137 Polygon PoS, 80002 Amoy).
    #[arg(long)]
    pub chain_id: Option<u64>,
    /// Accept an escrow whose token is not the official USDC (test chains only).
    #[arg(long)]
    pub test_token: bool,
}

pub fn run(cmd: JobCommand) -> anyhow::Result<()> {
    match cmd {
        JobCommand::Deposit(args) => deposit(args),
    }
}

fn deposit(args: DepositArgs) -> anyhow::Result<()> {
    rapha_core::check_private_mode(&args.key).map_err(|e| match e {
        rapha_core::ModeError::Loose(mode) => anyhow::anyhow!(
            "wallet key {} has mode {mode:o}; make it readable by its owner only (chmod 600)",
            args.key.display()
        ),
        rapha_core::ModeError::Io(err) => {
            anyhow::anyhow!("wallet key {}: {err}", args.key.display())
        }
    })?;
    let text = Zeroizing::new(
        std::fs::read_to_string(&args.key)
            .with_context(|| format!("reading {}", args.key.display()))?,
    );
    let key = WalletKey::from_hex(&text)?;
    let escrow = args
        .escrow
        .parse()
        .with_context(|| format!("--escrow {:?} is not an address", args.escrow))?;
    let hospital = args
        .hospital
        .parse()
        .with_context(|| format!("--hospital {:?} is not an address", args.hospital))?;
    let order = DepositOrder {
        job: args.job,
        fee: args.fee,
        hospital,
        deadline_after_secs: args.deadline_hours.saturating_mul(3600),
        expected_chain_id: args.chain_id,
        test_token: args.test_token,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let done = rt.block_on(deposit_for_job(&args.rpc, escrow, &key, &order))?;
    if done.token_kind == TokenKind::Test {
        eprintln!(
            "warning: token {} is not the official USDC for chain {} (test token, non-production)",
            done.token, done.chain_id
        );
    }
    println!(
        "deposited {} USDC for job {} (hospital {hospital}, refundable after unix time {}): tx {} in block {}",
        args.fee, args.job, done.deadline, done.deposit.tx, done.deposit.block
    );
    Ok(())
}
