//! `rapha job deposit`: the AI company pays a job's fee into escrow.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use rapha_core::{JobId, Usdc};
use rapha_settle::{deposit_for_job, DepositOrder, TokenKind, WalletKey};

use crate::job::Printed;

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
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Reads a wallet key file (mode 0600 or stricter).
///
/// # Errors
/// A loose mode, an unreadable file, not a key.
pub fn load_wallet_key(path: &Path) -> anyhow::Result<WalletKey> {
    let text = rapha_core::fs::read_secret_text(path, 4096)
        .map_err(|e| anyhow::anyhow!("wallet key {}: {e}", path.display()))?;
    Ok(WalletKey::from_hex(&text)?)
}

/// Runs `rapha job deposit`.
pub fn deposit(args: &DepositArgs) -> anyhow::Result<Printed> {
    let key = load_wallet_key(&args.key)?;
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
    let text = format!(
        "deposited {} USDC for job {} (hospital {hospital}, refundable after unix time {}): tx {} in block {}\n",
        args.fee, args.job, done.deadline, done.deposit.tx, done.deposit.block
    );
    let json = serde_json::json!({
        "job_id": args.job.to_string(),
        "fee": args.fee.to_string(),
        "fee_base_units": args.fee.base_units().to_string(),
        "hospital": hospital.to_string(),
        "escrow": args.escrow,
        "chain_id": done.chain_id,
        "token": done.token.to_string(),
        "test_token": done.token_kind == TokenKind::Test,
        "refundable_after": done.deadline.to_string(),
        "tx": done.deposit.tx.to_string(),
        "block": done.deposit.block,
    });
    Ok(Printed::ok(json, text))
}
